//! The pod controller: for one main Pod, observe (caches) → plan (pure) → apply.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference as OwnerRef;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Api, Resource as _};
use sidecar_api::constants::{FIELD_MANAGER, reason};
use sidecar_planner::{PodPlan, plan_pod, sidecar_name};

use crate::cache::Key;
use crate::events::Outgoing;
use crate::{Error, Shared};

/// Reconciles main Pod `key`.
pub(crate) async fn reconcile_pod(shared: &Arc<Shared>, key: &Key) -> Result<(), Error> {
    let (ns, name) = key;
    let Some(plan) = observe_and_plan(shared, ns, name) else {
        return Ok(());
    };
    if plan.is_empty() {
        return Ok(());
    }
    // Checked after observing: a namespace leaving the scope is out of it before its
    // caches are emptied, so a plan made from a half-forgotten namespace is never applied.
    if !shared.in_scope(ns) {
        return Ok(());
    }
    apply(shared, ns, plan).await
}

fn observe_and_plan(shared: &Shared, ns: &str, name: &str) -> Option<PodPlan> {
    let pods = shared.pods();
    let main = pods.get(ns, name)?.clone();
    if main.is_sidecar() {
        return None;
    }
    let policies = shared.policies().in_namespace(ns);
    let sidecars = pods.sidecars_of(&main.uid);
    let pol_refs: Vec<_> = policies.iter().map(|p| p.as_ref()).collect();
    let sc_refs: Vec<_> = sidecars.iter().map(|s| s.as_ref()).collect();
    let plan = plan_pod(&main, &pol_refs, &sc_refs, |n| {
        pods.get(ns, n).map(|p| p.as_ref())
    });
    // Collisions are level-triggered: forget this Pod's names, then record today's.
    for p in &policies {
        let wanted = sidecar_name(&main.name, &p.name);
        let collides = plan.collisions.iter().any(|c| c.name == wanted);
        shared.set_collision(&(ns.to_string(), p.name.clone()), &wanted, collides);
    }
    Some(plan)
}

async fn apply(shared: &Arc<Shared>, ns: &str, mut plan: PodPlan) -> Result<(), Error> {
    {
        let exp = shared.expectations();
        plan.creates.retain(|p| {
            !exp.create_pending(&(ns.to_string(), p.metadata.name.clone().unwrap_or_default()))
        });
        plan.deletes.retain(|d| !exp.delete_pending(&d.uid));
    }
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
    let mut first_err = None;
    for c in &plan.collisions {
        report_collision(shared, ns, c).await;
    }
    for d in &plan.deletes {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(d.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&d.name, &dp).await {
            Ok(_) => {
                shared.expectations().expect_delete(d.uid.clone());
                shared.metrics.deleted(d.reason.as_str());
                tracing::info!(namespace = ns, sidecar = %d.name, policy = %d.policy, reason = d.reason.as_str(), "deleted sidecar");
            }
            // Already gone, or replaced by another Pod of that name: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                first_err.get_or_insert(Error::DeleteSidecar {
                    name: d.name.clone(),
                    source: e,
                });
            }
        }
    }
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    for pod in &plan.creates {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let policy = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(sidecar_api::constants::LABEL_POLICY))
            .cloned()
            .unwrap_or_default();
        let pkey = (ns.to_string(), policy.clone());
        match api.create(&pp, pod).await {
            Ok(_) => {
                publish_on_main(
                    shared,
                    pod.metadata
                        .owner_references
                        .as_ref()
                        .and_then(|o| o.first()),
                    ns,
                    reason::SIDECAR_CREATED,
                    "CreateSidecar",
                    format!("Created sidecar Pod {name} for SidecarPolicy {policy}"),
                );
                shared
                    .expectations()
                    .expect_create((ns.to_string(), name.clone()));
                shared.metrics.sidecars_created.inc();
                shared.set_refused(&pkey, None);
                tracing::info!(namespace = ns, sidecar = %name, policy = %policy, "created sidecar");
            }
            // Our cache lags the server: the next event brings the Pod in.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            // The namespace is being deleted.
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("being terminated") => {
            }
            Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => {
                // The server names the Pod; one name stands for all, so that refusals of
                // many Pods for one reason are one status change and one event.
                let message = s.message.replace(&format!("\"{name}\""), "\"<sidecar>\"");
                tracing::warn!(namespace = ns, sidecar = %name, policy = %policy, %message, "the API server refused a sidecar");
                if shared.set_refused(&pkey, Some(message.clone())) {
                    publish_on_policy(
                        shared,
                        &pkey,
                        reason::CREATE_REFUSED,
                        "CreateSidecar",
                        &message,
                    )
                    .await;
                }
                first_err.get_or_insert(Error::CreateRefused { name, message });
            }
            Err(e) => {
                first_err.get_or_insert(Error::CreateSidecar { name, source: e });
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn report_collision(shared: &Arc<Shared>, ns: &str, c: &sidecar_planner::Collision) {
    if !shared.first_report(ns, &c.name, &c.holder_uid) {
        return;
    }
    let note = format!(
        "Pod {} exists and is not the sidecar this policy manages; it is left alone. Rename or delete it so the sidecar can be created.",
        c.name
    );
    tracing::warn!(namespace = ns, sidecar = %c.name, policy = %c.policy, "name collision: {note}");
    publish_on_policy(
        shared,
        &(ns.to_string(), c.policy.clone()),
        reason::NAME_COLLISION,
        "CreateSidecar",
        &note,
    )
    .await;
}

/// Publishes a Warning event on a policy (aggregated by the events API).
pub(crate) async fn publish_on_policy(
    shared: &Shared,
    key: &Key,
    reason: &str,
    action: &str,
    note: &str,
) {
    let Some(policy) = shared.policies().get(key).cloned() else {
        return;
    };
    let reference = policy.policy.object_ref(&());
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    shared.publish(Outgoing::Policy(Box::new((ev, reference))));
}

/// Publishes a Normal event on a main Pod (when `pod_events` is on).
pub(crate) fn publish_on_main(
    shared: &Shared,
    owner: Option<&OwnerRef>,
    ns: &str,
    reason: &str,
    action: &str,
    note: String,
) {
    let Some(o) = owner else { return };
    if !shared.pod_events {
        return;
    }
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(o.name.clone()),
        namespace: Some(ns.to_string()),
        uid: Some(o.uid.clone()),
        ..ObjectReference::default()
    };
    let ev = crate::events::pod_event(&shared.reporter, reference, reason, action, note);
    shared.publish(Outgoing::Pod(Box::new(ev)));
}
