//! The rollout's writes: one step of [`sidecar_planner::plan_rollout`] (stale sidecars
//! already within the `maxUnavailable` budget) is deleted, each with a Normal Event on
//! its main Pod; the pod controller recreates them from the current template.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use sidecar_planner::Replace;

use crate::Error;
use crate::context::Context;
use crate::keys::PolicyKey;
use crate::pod_controller::delete_sidecar;

/// Deletes the step's sidecars concurrently.
pub(crate) async fn apply(
    ctx: &Context,
    key: &PolicyKey,
    steps: Vec<Replace>,
) -> Result<(), Error> {
    if steps.is_empty() {
        return Ok(());
    }
    // The steps are already within the maxUnavailable budget: delete them concurrently
    // (one at a time, 1,000 deletes took 10-20 s under load).
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);
    let deletes = futures::stream::iter(steps)
        .map(|step| replace_stale(ctx, &api, key, step))
        .buffer_unordered(ROLLOUT_DELETES_IN_FLIGHT);
    let results: Vec<Result<(), Error>> = deletes.collect().await;
    results.into_iter().collect()
}

/// Concurrent deletes of one policy's rollout step.
const ROLLOUT_DELETES_IN_FLIGHT: usize = 16;

/// Deletes one stale sidecar (uid precondition); the pod controller recreates it.
async fn replace_stale(
    ctx: &Context,
    api: &Api<Pod>,
    key: &PolicyKey,
    step: Replace,
) -> Result<(), Error> {
    delete_sidecar(ctx, api, &step.delete).await?;
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: step.main_name,
        uid: step.main_uid,
        ..OwnerReference::default()
    };
    ctx.events.on_main(
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
