//! The policy controller: status from the caches, written only when it changes, the
//! rolling replacement of stale sidecars within `maxUnavailable`, and (Container mode)
//! the repair of drifted Pods by eviction.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use sidecar_api::constants::{FIELD_MANAGER, condition, condition_status, reason};
use sidecar_api::{ClusterSidecarPolicy, ClusterSidecarPolicyStatus, SidecarPolicy};
use sidecar_planner::{
    Counts, Observed, PolicyView, Problems, Repair, RepairLimits, RepairSeen, Replace,
    compute_status, failing, observe_among, plan_repair, plan_rollout, status_write_settled,
};

use crate::Error;
use crate::context::Context;
use crate::decode::Lenient;
use crate::keys::PolicyKey;

/// Reconciles the status (and rollout) of policy `key`; for a ClusterSidecarPolicy, of
/// every namespace it applies in.
pub(crate) async fn reconcile_policy(ctx: &Arc<Context>, key: &PolicyKey) -> Result<(), Error> {
    if key.is_cluster() {
        return reconcile_cluster(ctx, key).await;
    }
    let Some(policy) = ctx.caches.policies().get(key).cloned() else {
        return Ok(());
    };
    if policy.deleting {
        return Ok(());
    }
    crate::template_check::check_template(ctx, key, &policy).await?;
    let Some(seen) = see(ctx, key, &policy) else {
        return Ok(());
    };
    let part = part(ctx, key, &policy, seen);
    // Forgotten while this run observed (deleted, out of scope): record nothing for it.
    if forgotten(ctx, key, &policy) {
        return Ok(());
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let old = policy.policy.status.as_ref();
    let status = compute_status(&policy, part.counts, &part.problems, old, now);
    record(ctx, key, part.counts, &status);
    announce_conflict(ctx, key, old, &status);
    if old != Some(&status) {
        // The answer is decoded leniently: a policy whose stored spec does not fit the
        // types still gets its status (which says so).
        let api: Api<Lenient<SidecarPolicy>> = Api::namespaced(ctx.client.clone(), &key.0);
        write_status(ctx, &api, &key.1, serde_json::json!({ "status": status })).await?;
    }
    crate::rollout::apply(ctx, key, part.steps).await?;
    crate::repair::apply(ctx, key, part.repair).await;
    Ok(())
}

/// A ClusterSidecarPolicy's run: each instance (namespace) is observed, checked and rolled
/// like a SidecarPolicy; the status is their sum, written once. A namespace whose template
/// check fails keeps the others going (the run is retried with the first error).
async fn reconcile_cluster(ctx: &Arc<Context>, key: &PolicyKey) -> Result<(), Error> {
    let Some(base) = ctx.caches.policies().get(key).cloned() else {
        return Ok(());
    };
    let Some(scope) = base.cluster.clone() else {
        return Ok(());
    };
    if base.deleting {
        return Ok(());
    }
    let all = ctx.caches.policies().instances_of(&key.1);
    // Shards (`--namespace-selector`): only the one that manages the first of the policy's
    // namespaces writes its status (its own namespaces' sum), so two shards never take turns
    // rewriting it; the others still act in theirs.
    let writes_status = all
        .first()
        .is_none_or(|i| ctx.caches.in_scope(&i.namespace));
    let instances: Vec<Arc<PolicyView>> = all
        .into_iter()
        .filter(|i| ctx.caches.in_scope(&i.namespace))
        .collect();
    // A shard (`--namespace-selector`) with none of the policy's namespaces leaves its status
    // to the shard that has them.
    if instances.is_empty() && ctx.caches.scope.is_some() {
        return Ok(());
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut counts = Counts::default();
    let mut problems = Problems::default();
    let mut first_err = None;
    let mut steps = Vec::new();
    for inst in &instances {
        let ikey = PolicyKey(inst.namespace.clone(), key.1.clone());
        if let Err(e) = crate::template_check::check_template(ctx, &ikey, inst).await {
            first_err.get_or_insert(e);
            continue;
        }
        let Some(seen) = see(ctx, &ikey, inst) else {
            continue;
        };
        let part = part(ctx, &ikey, inst, seen);
        if forgotten(ctx, &ikey, inst) {
            continue;
        }
        let own = compute_status(inst, part.counts, &part.problems, None, now.clone());
        record(ctx, &ikey, part.counts, &own);
        counts += part.counts;
        problems.absorb(&inst.namespace, part.problems);
        steps.push((ikey, part.steps, part.repair));
    }
    if forgotten(ctx, key, &base) {
        return Ok(());
    }
    let old = scope.object.status.as_ref();
    let status = ClusterSidecarPolicyStatus {
        namespaces: i32::try_from(instances.len()).unwrap_or(i32::MAX),
        policy: compute_status(&base, counts, &problems, old.map(|s| &s.policy), now),
    };
    if writes_status {
        announce_conflict(ctx, key, old.map(|s| &s.policy), &status.policy);
    }
    if writes_status && old != Some(&status) {
        let api: Api<Lenient<ClusterSidecarPolicy>> = Api::all(ctx.client.clone());
        write_status(
            ctx,
            &api,
            base.object_name(),
            serde_json::json!({ "status": status }),
        )
        .await?;
    }
    for (ikey, rollout, repair) in steps {
        if let Err(e) = crate::rollout::apply(ctx, &ikey, rollout).await {
            first_err.get_or_insert(e);
        }
        crate::repair::apply(ctx, &ikey, repair).await;
    }
    first_err.map_or(Ok(()), Err)
}

/// A Warning Event on policy `key` when it starts losing Pods to a policy that outranks it
/// (its Conflicted condition turns True).
fn announce_conflict(
    ctx: &Context,
    key: &PolicyKey,
    old: Option<&sidecar_api::SidecarPolicyStatus>,
    new: &sidecar_api::SidecarPolicyStatus,
) {
    let conflicted = |s: &sidecar_api::SidecarPolicyStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::CONFLICTED && c.status == condition_status::TRUE)
            .map(|c| c.message.clone())
    };
    if let (None, Some(message)) = (old.and_then(conflicted), conflicted(new)) {
        ctx.warn_policy(key, reason::CONFLICT, "Reconcile", &message);
    }
}

/// Policy `key` was forgotten (deleted, out of scope) or replaced by another of its name
/// while the run observed.
fn forgotten(ctx: &Context, key: &PolicyKey, policy: &PolicyView) -> bool {
    ctx.caches
        .policies()
        .get(key)
        .is_none_or(|p| p.uid != policy.uid)
}

/// Records what the metrics say of policy `key` (a namespace's policy or instance).
fn record(ctx: &Context, key: &PolicyKey, c: Counts, status: &sidecar_api::SidecarPolicyStatus) {
    ctx.set_not_converged(key, i64::from(c.matched - c.converged));
    // The gauge is the status's drift (none in Pod mode: a policy switched from Container
    // mode loses its series).
    ctx.metrics.set_drift(&key.0, &key.1, status.drift.as_ref());
}

/// Writes a status (merge patch); a policy gone meanwhile is settled.
async fn write_status<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api.patch_status(name, &pp, &Patch::Merge(&patch)).await {
        Ok(_) => {
            ctx.metrics.status_writes.inc();
            Ok(())
        }
        Err(kube::Error::Api(s)) if status_write_settled(s.code) => Ok(()),
        Err(e) => Err(Error::PatchStatus {
            name: name.to_string(),
            source: e,
        }),
    }
}

/// One namespace's share of a status run: counts, problems, and the next rollout and repair
/// steps.
struct Part {
    counts: Counts,
    problems: Problems,
    steps: Vec<Replace>,
    repair: Repair,
}

/// Turns what a run saw of policy `key` into its [`Part`].
fn part(ctx: &Context, key: &PolicyKey, policy: &PolicyView, seen: Seen) -> Part {
    let Seen {
        observed,
        failing,
        steps,
        repair,
        blocked,
    } = seen;
    ctx.policy_state.prune_reported(key, &observed.collisions);
    let c = observed.counts;
    // A refusal concerned a sidecar still to create; with none missing (its Pod went, the
    // sidecar was created after all) it no longer holds.
    if c.missing == 0 {
        ctx.policy_state.set_refused(key, None);
    }
    // Built here, whole, for this one status: only the refusal is remembered between runs.
    let templates = ctx.policy_state.templates();
    // Container mode: a refused check means Pods without the sidecars, not a refused
    // template.
    let (invalid_template, injection_refused) = match policy.mode() {
        sidecar_api::Mode::Pod => (templates.problem(key, &policy.hash), Vec::new()),
        sidecar_api::Mode::Container => {
            let refused = templates.injection_refused(key, &policy.hash);
            (
                None,
                refused.map(|m| (key.0.clone(), m)).into_iter().collect(),
            )
        }
    };
    drop(templates);
    let problems = Problems {
        refused: ctx.policy_state.refused(key),
        collisions: observed.collisions,
        invalid_template,
        injection_refused,
        failing,
        drifted: observed.drifted,
        repair: RepairSeen::of(&repair, blocked),
        conflicts: observed.conflicts,
        refused_by_namespace: observed.refused,
    };
    Part {
        counts: c,
        problems,
        steps,
        repair,
    }
}

/// What one status run sees in the caches.
struct Seen {
    observed: Observed,
    failing: Vec<String>,
    steps: Vec<Replace>,
    /// Container mode's repair step (no evictions while a refusal backs off).
    repair: Repair,
    /// That refusal, while it backs off.
    blocked: Option<String>,
}

/// Observes policy `key`'s Pods: counts, collisions, failing sidecars and the next
/// rollout step. `None` for a namespace on its way out of the scope (checked after
/// observing, see `reconcile_pod`): no status or rollout from it.
fn see(ctx: &Context, key: &PolicyKey, policy: &PolicyView) -> Option<Seen> {
    let replaced = ctx.policy_state.replaced_of(key, Instant::now());
    let pods = ctx.caches.pods();
    let mains = || {
        pods.in_namespace(&key.0)
            .filter(|p| !p.is_sidecar())
            .map(|p| p.as_ref())
    };
    let by_name = |n: &str| pods.get(&key.0, n).map(|p| p.as_ref());
    let rivals = ctx.caches.policies().in_namespace(&key.0);
    let rivals: Vec<&PolicyView> = rivals.iter().map(|p| p.as_ref()).collect();
    let observed = observe_among(policy, &rivals, mains(), by_name);
    let failing = failing(replaced, by_name);
    let exp = ctx.expectations();
    let steps = plan_rollout(policy, mains(), by_name, |uid| exp.delete_pending(uid));
    let now = Instant::now();
    let served = ctx.webhook_serves(&key.0);
    let refused = ctx
        .policy_state
        .templates()
        .injection_refused(key, &policy.hash)
        .is_some();
    let deadline = ctx.repair.replacement_deadline;
    let (sent, blocked, mut limits) = ctx
        .policy_state
        .peek_repair(key, |m| {
            (m.sent(now, deadline), m.blocked(now), m.limits(served, now))
        })
        .unwrap_or_else(|| {
            let limits = RepairLimits {
                served,
                ..RepairLimits::default()
            };
            (Vec::new(), None, limits)
        });
    // Never evict for a template the namespace refuses: the replacement would lack it.
    limits.refused = refused;
    let repair = plan_repair(policy, mains(), &sent, limits);
    drop((exp, pods));
    ctx.caches.in_scope(&key.0).then_some(Seen {
        observed,
        failing,
        steps,
        repair,
        blocked,
    })
}
