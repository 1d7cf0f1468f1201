//! The pod controller: for one main Pod, observe (caches) → plan (pure) → apply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use sidecar_api::constants::{FIELD_MANAGER, reason};
use sidecar_planner::{
    CreateFailure, DeleteReason, DeleteSidecar, PodPlan, create_failure, delete_settled, judgeable,
    plan_orphan, plan_pod,
};

use crate::Error;
use crate::context::Context;
use crate::keys::{PodKey, PolicyKey};
use crate::template_check::Gate;

/// Reconciles main Pod `key` (or, for a sidecar that lost its owner, that sidecar).
pub(crate) async fn reconcile_pod(ctx: &Arc<Context>, key: &PodKey) -> Result<(), Error> {
    let PodKey(ns, name) = key;
    let Some(plan) = observe_and_plan(ctx, ns, name) else {
        return Ok(());
    };
    if plan.is_empty() {
        return Ok(());
    }
    // Checked after observing: a namespace leaving the scope is out of it before its
    // caches are emptied, so a plan made from a half-forgotten namespace is never applied.
    if !ctx.caches.in_scope(ns) {
        return Ok(());
    }
    apply(ctx, key, plan).await
}

fn observe_and_plan(ctx: &Context, ns: &str, name: &str) -> Option<PodPlan> {
    let pods = ctx.caches.pods();
    let main = pods.get(ns, name)?.clone();
    // Until the cluster policies are listed, their sidecars are left as they are.
    let clusters_known = ctx.caches.policies().clusters_known();
    if main.is_sidecar() {
        if !judgeable(&main, clusters_known) {
            return None;
        }
        let policy = main
            .sidecar_key()
            .and_then(|(_, p)| ctx.caches.policies().get(&PolicyKey::new(ns, p)).cloned());
        let delete = plan_orphan(&main, policy.as_deref())?;
        return Some(PodPlan {
            deletes: vec![delete],
            ..PodPlan::default()
        });
    }
    ctx.expectations().replanning(&PodKey::new(ns, name));
    let policies = ctx.caches.policies().in_namespace(ns);
    let sidecars = pods.sidecars_of(ns, &main.uid);
    let pol_refs: Vec<_> = policies.iter().map(|p| p.as_ref()).collect();
    let sc_refs: Vec<_> = sidecars
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| judgeable(s, clusters_known))
        .collect();
    let plan = plan_pod(&main, &pol_refs, &sc_refs, |n| {
        pods.get(ns, n).map(|p| p.as_ref())
    });
    for n in plan.blocked_names() {
        ctx.waiters().wait(PodKey::new(ns, n), name.to_string());
    }
    Some(plan)
}

/// Keeps only the creates whose policy's current template the API server accepted (a
/// dry run per template, see `template_check`); for a template not checked yet, asks for
/// the check at once (its acceptance reconciles this Pod again).
fn gate_creates(ctx: &Context, ns: &str, plan: &mut PodPlan) {
    plan.creates.retain(|pod| {
        let labels = pod.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
        let id = sidecar_planner::policy_id(|k| labels.and_then(|l| l.get(k)).map(String::as_str));
        let pkey = PolicyKey(ns.to_string(), id.unwrap_or_default().into_owned());
        let gate = ctx
            .policy_state
            .templates()
            .gate(&pkey, &label(sidecar_api::constants::LABEL_TEMPLATE_HASH));
        match gate {
            Gate::Open => true,
            Gate::Closed => false,
            Gate::Unknown => {
                ctx.queues.policies.add(pkey);
                false
            }
        }
    });
}

/// Keeps the replacements of failed sidecars that their per-pair backoff allows now
/// (recording them, with a Warning event on the policy); the others are retried when
/// their delay is over.
fn pace_failed_replacements(ctx: &Context, key: &PodKey, plan: &mut PodPlan) {
    let PodKey(ns, main) = key;
    let now = Instant::now();
    let mut retry: Option<Duration> = None;
    plan.deletes.retain(|d| {
        if d.reason != DeleteReason::Failed {
            return true;
        }
        match ctx
            .policy_state
            .replace_failed(PodKey::new(ns.clone(), d.name.clone()), &d.policy, now)
        {
            Ok(attempt) => {
                let pkey = PolicyKey(ns.clone(), d.policy.clone());
                let note = format!(
                    "Sidecar Pod {} of Pod {main} ended Failed or Succeeded; replacing it (replacement {attempt} in a row)",
                    d.name
                );
                tracing::warn!(namespace = %ns, sidecar = %d.name, policy = %d.policy, attempt, "replacing a failed sidecar");
                ctx.warn_policy(&pkey, reason::SIDECAR_FAILED, "ReplaceSidecar", &note);
                ctx.queues.status_soon(pkey);
                true
            }
            Err(wait) => {
                retry = Some(retry.map_or(wait, |r| r.min(wait)));
                false
            }
        }
    });
    if let Some(wait) = retry {
        ctx.queues.pods.add_after(key.clone(), wait);
    }
}

async fn apply(ctx: &Arc<Context>, key: &PodKey, mut plan: PodPlan) -> Result<(), Error> {
    let ns = key.0.as_str();
    {
        let exp = ctx.expectations();
        plan.creates.retain(|p| {
            !exp.create_pending(&PodKey(
                ns.to_string(),
                p.metadata.name.clone().unwrap_or_default(),
            ))
        });
        plan.deletes.retain(|d| !exp.delete_pending(&d.uid));
    }
    pace_failed_replacements(ctx, key, &mut plan);
    gate_creates(ctx, ns, &mut plan);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut first_err = None;
    for c in &plan.collisions {
        report_collision(ctx, ns, c).await;
    }
    for d in &plan.deletes {
        if let Err(e) = delete_sidecar(ctx, &api, d).await {
            first_err.get_or_insert(e);
        }
    }
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    for pod in &plan.creates {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let labels = pod.metadata.labels.as_ref();
        let policy =
            sidecar_planner::policy_id(|k| labels.and_then(|l| l.get(k)).map(String::as_str))
                .unwrap_or_default()
                .into_owned();
        let pkey = PolicyKey(ns.to_string(), policy.clone());
        match api.create(&pp, pod).await {
            Ok(_) => {
                ctx.events.on_main(
                    pod.metadata
                        .owner_references
                        .as_ref()
                        .and_then(|o| o.first()),
                    ns,
                    reason::SIDECAR_CREATED,
                    "CreateSidecar",
                    format!(
                        "Created sidecar Pod {name} for {}",
                        sidecar_planner::cluster::describe(&policy)
                    ),
                );
                ctx.expectations()
                    .expect_create(PodKey(ns.to_string(), name.clone()), &key.1);
                ctx.metrics.sidecars_created.inc();
                ctx.set_refused(&pkey, None);
                tracing::info!(namespace = ns, sidecar = %name, policy = %policy, "created sidecar");
            }
            Err(kube::Error::Api(s)) => match create_failure(s.code, &s.message, &name) {
                CreateFailure::AlreadyExists | CreateFailure::NamespaceTerminating => {}
                CreateFailure::Refused { message } => {
                    tracing::warn!(namespace = ns, sidecar = %name, policy = %policy, %message, "the API server refused a sidecar");
                    if ctx.set_refused(&pkey, Some(message.clone())) {
                        ctx.warn_policy(&pkey, reason::CREATE_REFUSED, "CreateSidecar", &message);
                    }
                    first_err.get_or_insert(Error::CreateRefused { name, message });
                }
                CreateFailure::Retry => {
                    let source = kube::Error::Api(s);
                    first_err.get_or_insert(Error::CreateSidecar { name, source });
                }
            },
            Err(e) => {
                first_err.get_or_insert(Error::CreateSidecar { name, source: e });
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Deletes one sidecar with its uid as precondition (a Pod recreated under the name is
/// never deleted by mistake), for the pod controller and the rollout alike. Already gone,
/// or replaced by another Pod of the name: nothing to do.
pub(crate) async fn delete_sidecar(
    ctx: &Context,
    api: &Api<Pod>,
    d: &DeleteSidecar,
) -> Result<(), Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(d.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&d.name, &dp).await {
        Ok(_) => {
            ctx.expectations().expect_delete(d.uid.clone());
            ctx.metrics.deleted(d.reason.as_str());
            tracing::info!(namespace = ?api.namespace(), sidecar = %d.name, policy = %d.policy, reason = d.reason.as_str(), "deleted sidecar");
            Ok(())
        }
        Err(kube::Error::Api(s)) if delete_settled(s.code) => Ok(()),
        Err(e) => Err(Error::DeleteSidecar {
            name: d.name.clone(),
            source: e,
        }),
    }
}

async fn report_collision(ctx: &Arc<Context>, ns: &str, c: &sidecar_planner::Collision) {
    let pkey = PolicyKey(ns.to_string(), c.policy.clone());
    if !ctx.policy_state.first_report(&pkey, &c.name, &c.holder_uid) {
        return;
    }
    ctx.queues.status_soon(pkey);
    let note = format!(
        "Pod {} exists and is not the sidecar this policy manages; it is left alone. Rename or delete it so the sidecar can be created.",
        c.name
    );
    tracing::warn!(namespace = ns, sidecar = %c.name, policy = %c.policy, "name collision: {note}");
    ctx.warn_policy(
        &PolicyKey(ns.to_string(), c.policy.clone()),
        reason::NAME_COLLISION,
        "CreateSidecar",
        &note,
    );
}
