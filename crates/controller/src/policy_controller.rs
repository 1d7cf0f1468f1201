//! The policy controller: status from the caches, written only when it changes, the
//! rolling replacement of stale sidecars within `maxUnavailable`, and (Container mode)
//! the repair of drifted Pods by eviction.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use sidecar_api::SidecarPolicy;
use sidecar_api::constants::FIELD_MANAGER;
use sidecar_planner::{
    Observed, PolicyView, Problems, Repair, RepairLimits, RepairSeen, Replace, compute_status,
    failing, observe, plan_repair, plan_rollout, status_write_settled,
};

use crate::Error;
use crate::context::Context;
use crate::decode::Lenient;
use crate::keys::PolicyKey;

/// Reconciles the status (and rollout) of policy `key`.
pub(crate) async fn reconcile_policy(ctx: &Arc<Context>, key: &PolicyKey) -> Result<(), Error> {
    let Some(policy) = ctx.caches.policies().get(key).cloned() else {
        return Ok(());
    };
    if policy.deleting {
        return Ok(());
    }
    crate::template_check::check_template(ctx, key, &policy).await?;
    let Some(Seen {
        observed,
        failing,
        steps,
        repair,
        blocked,
    }) = see(ctx, key, &policy)
    else {
        return Ok(());
    };
    ctx.policy_state.prune_reported(key, &observed.collisions);
    let c = observed.counts;
    // A refusal concerned a sidecar still to create; with none missing (its Pod went, the
    // sidecar was created after all) it no longer holds.
    if c.missing == 0 {
        ctx.policy_state.set_refused(key, None);
    }
    // Built here, whole, for this one status: only the refusal is remembered between runs.
    let problems = Problems {
        refused: ctx.policy_state.refused(key),
        collisions: observed.collisions,
        invalid_template: ctx.policy_state.templates().problem(key, &policy.hash),
        failing,
        drifted: observed.drifted,
        repair: RepairSeen::of(&repair, blocked),
    };
    // Forgotten while this run observed (deleted, out of scope): record nothing for it.
    if ctx
        .caches
        .policies()
        .get(key)
        .is_none_or(|p| p.uid != policy.uid)
    {
        return Ok(());
    }
    ctx.set_not_converged(key, i64::from(c.matched - c.converged));
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let old = policy.policy.status.as_ref();
    let status = compute_status(&policy, c, &problems, old, now);
    // The gauge is the status's drift (none in Pod mode: a policy switched from Container
    // mode loses its series).
    let drift = status.drift.as_ref();
    ctx.metrics.set_drift(
        &key.0,
        &key.1,
        drift.map_or(0, |d| i64::from(d.missing_pods)),
        drift.map_or(0, |d| i64::from(d.outdated_pods)),
    );
    if old != Some(&status) {
        // The answer is decoded leniently: a policy whose stored spec does not fit the
        // types still gets its status (which says so).
        let api: Api<Lenient<SidecarPolicy>> = Api::namespaced(ctx.client.clone(), &key.0);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({ "status": status });
        match api.patch_status(&key.1, &pp, &Patch::Merge(&patch)).await {
            Ok(_) => ctx.metrics.status_writes.inc(),
            Err(kube::Error::Api(s)) if status_write_settled(s.code) => return Ok(()),
            Err(e) => {
                return Err(Error::PatchStatus {
                    name: key.1.clone(),
                    source: e,
                });
            }
        };
    }
    crate::rollout::apply(ctx, key, steps).await?;
    crate::repair::apply(ctx, key, repair).await;
    Ok(())
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
    let observed = observe(policy, mains(), by_name);
    let failing = failing(replaced, by_name);
    let exp = ctx.expectations();
    let steps = plan_rollout(policy, mains(), by_name, |uid| exp.delete_pending(uid));
    let now = Instant::now();
    let served = !ctx.unserved_namespaces.contains(&key.0);
    let (sent, blocked, limits) = ctx
        .policy_state
        .peek_repair(key, |m| {
            (m.sent(now), m.blocked(now), m.limits(served, now))
        })
        .unwrap_or_else(|| {
            let limits = RepairLimits {
                served,
                ..RepairLimits::default()
            };
            (Vec::new(), None, limits)
        });
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
