//! The policy controller: status from the caches, written only when it changes, and
//! the rolling replacement of stale sidecars within `maxUnavailable`.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};
use sidecar_api::SidecarPolicy;
use sidecar_api::constants::FIELD_MANAGER;
use sidecar_planner::{Replace, compute_status, failing, observe, plan_rollout};

use crate::cache::Key;
use crate::decode::Lenient;
use crate::reconcile::delete_sidecar;
use crate::{Error, Shared};

/// Reconciles the status (and rollout) of policy `key`.
pub(crate) async fn reconcile_policy(shared: &Arc<Shared>, key: &Key) -> Result<(), Error> {
    let Some(policy) = shared.policies().get(key).cloned() else {
        return Ok(());
    };
    if policy.deleting {
        return Ok(());
    }
    crate::template_check::check_template(shared, key, &policy).await?;
    let mut problems = shared.problems_of(key);
    problems.invalid_template = shared.templates().problem(key, &policy.hash);
    let replaced = shared.replaced_of(key, Instant::now());
    let (observed, steps) = {
        let pods = shared.pods();
        let mains = || {
            pods.in_namespace(&key.0)
                .filter(|p| !p.is_sidecar())
                .map(|p| p.as_ref())
        };
        let by_name = |n: &str| pods.get(&key.0, n).map(|p| p.as_ref());
        let observed = observe(&policy, mains(), by_name);
        problems.failing = failing(replaced, by_name);
        let exp = shared.expectations();
        let steps = plan_rollout(&policy, mains(), by_name, |uid| exp.delete_pending(uid));
        (observed, steps)
    };
    // Checked after observing (see `reconcile_pod`): no status or rollout from a
    // namespace on its way out of the scope.
    if !shared.in_scope(&key.0) {
        return Ok(());
    }
    problems.collisions = observed.collisions;
    shared.prune_reported(key, &problems.collisions);
    let c = observed.counts;
    shared.set_not_converged(key, i64::from(c.matched - c.converged));
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let old = policy.policy.status.as_ref();
    let status = compute_status(&policy, c, &problems, old, now);
    if old != Some(&status) {
        // The answer is decoded leniently: a policy whose stored spec does not fit the
        // types still gets its status (which says so).
        let api: Api<Lenient<SidecarPolicy>> = Api::namespaced(shared.client.clone(), &key.0);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({ "status": status });
        match api.patch_status(&key.1, &pp, &Patch::Merge(&patch)).await {
            Ok(_) => shared.metrics.status_writes.inc(),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => {
                return Err(Error::PatchStatus {
                    name: key.1.clone(),
                    source: e,
                });
            }
        };
    }
    if steps.is_empty() {
        return Ok(());
    }
    // The steps are already within the maxUnavailable budget: delete them concurrently
    // (one at a time, 1,000 deletes took 10-20 s under load).
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &key.0);
    let deletes = futures::stream::iter(steps)
        .map(|step| replace_stale(shared, &api, key, step))
        .buffer_unordered(ROLLOUT_DELETES_IN_FLIGHT);
    let results: Vec<Result<(), Error>> = deletes.collect().await;
    results.into_iter().collect()
}

/// Concurrent deletes of one policy's rollout step.
const ROLLOUT_DELETES_IN_FLIGHT: usize = 16;

/// Deletes one stale sidecar (uid precondition); the pod controller recreates it.
async fn replace_stale(
    shared: &Shared,
    api: &Api<Pod>,
    key: &Key,
    step: Replace,
) -> Result<(), Error> {
    delete_sidecar(shared, api, &step.delete).await?;
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: step.main_name,
        uid: step.main_uid,
        ..OwnerReference::default()
    };
    crate::reconcile::publish_on_main(
        shared,
        Some(&owner),
        &key.0,
        sidecar_api::constants::reason::SIDECAR_REPLACED,
        "ReplaceSidecar",
        format!(
            "Replacing sidecar Pod {}: SidecarPolicy {} changed its template",
            step.delete.name, key.1
        ),
    );
    Ok(())
}
