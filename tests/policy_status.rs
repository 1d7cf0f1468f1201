//! What a policy's status says (conditions, observed generation, convergence), and
//! [`Scene::wait_policy`]: waiting until it says something (dumps the policy and the
//! namespace on failure).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, ListParams, ResourceExt as _};
use serde_json::Value;
use sidecar_api::constants::{condition, condition_status, reason};
use sidecar_api::{SidecarPolicy, template_hash};

use crate::{Scene, TIMEOUT, poll};

/// The policy's condition of type `type_`.
pub fn cond<'a>(p: &'a SidecarPolicy, type_: &str) -> Option<&'a Condition> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// The policy has condition `type_` with `status` and `reason`.
pub fn cond_is(p: &SidecarPolicy, type_: &str, status: &str, reason: &str) -> bool {
    cond(p, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

/// The status was computed from the current spec: its generation (also on every condition)
/// and its template hash. Stricter than [`generation_observed`].
pub fn status_current(p: &SidecarPolicy) -> bool {
    let generation = p.metadata.generation;
    p.status.as_ref().is_some_and(|s| {
        s.observed_generation == generation
            && s.template_hash.as_deref() == Some(template_hash(&p.spec).as_str())
            && s.conditions
                .iter()
                .all(|c| c.observed_generation == generation)
    })
}

/// The status was written for the policy's current generation (nothing said about its
/// conditions or template hash, see [`status_current`]).
pub fn generation_observed(p: &SidecarPolicy) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.observed_generation.is_some() && s.observed_generation == p.metadata.generation
    })
}

/// Generation, spec flags and status of a policy, for failure messages.
pub fn describe_policy(p: &SidecarPolicy) -> String {
    format!(
        "policy {} generation={:?} hash={} paused={} status:\n{}",
        p.name_any(),
        p.metadata.generation,
        template_hash(&p.spec),
        p.spec.paused,
        serde_json::to_string_pretty(&p.status).unwrap_or_default()
    )
}

/// The status of a policy that selects `n` eligible Pods, all with a Ready sidecar at the
/// current template hash, nothing failing, not paused.
pub fn converged(p: &SidecarPolicy, n: i32) -> bool {
    let Some(s) = &p.status else { return false };
    let ready = if n == 0 {
        reason::NO_MATCHING_PODS
    } else {
        reason::ALL_SIDECARS_READY
    };
    status_current(p)
        && (s.matched_pods, s.sidecar_pods, s.updated_pods, s.ready_pods) == (n, n, n, n)
        && s.ready.as_deref() == Some(format!("{n}/{n}").as_str())
        && cond_is(p, condition::READY, condition_status::TRUE, ready)
        && cond_is(
            p,
            condition::PROGRESSING,
            condition_status::FALSE,
            reason::CONVERGED,
        )
        && cond_is(
            p,
            condition::DEGRADED,
            condition_status::FALSE,
            reason::AS_EXPECTED,
        )
        && cond_is(
            p,
            condition::PAUSED,
            condition_status::FALSE,
            reason::ACTIVE,
        )
}

/// Reads policy `name` every 200 ms until `probe` holds: `Ok` with that policy, or after
/// `timeout` `Err` with the last one read (if any).
async fn poll_policy(
    api: &Api<SidecarPolicy>,
    name: &str,
    timeout: Duration,
    mut probe: impl FnMut(&SidecarPolicy) -> bool,
) -> Result<SidecarPolicy, Option<SidecarPolicy>> {
    let mut last: Option<SidecarPolicy> = None;
    let found = poll(timeout, async || {
        let p = api.get(name).await.ok()?;
        let hit = probe(&p).then(|| p.clone());
        last = Some(p);
        hit
    })
    .await;
    found.ok_or(last)
}

impl Scene {
    /// Reads the scene's policy `name` every 200 ms until `probe` holds; after `timeout`
    /// panics naming `what`, with the last policy seen and the namespace's Pods.
    pub async fn wait_policy_within(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        probe: impl FnMut(&SidecarPolicy) -> bool,
    ) -> SidecarPolicy {
        match poll_policy(&self.policies, name, timeout, probe).await {
            Ok(p) => p,
            Err(last) => panic!(
                "timed out after {}s waiting for policy {name}: {what}\n{}\n{}",
                timeout.as_secs(),
                last.as_ref().map(describe_policy).unwrap_or_default(),
                self.dump().await
            ),
        }
    }

    /// [`Scene::wait_policy_within`] with the default [`TIMEOUT`].
    pub async fn wait_policy(
        &self,
        name: &str,
        what: &str,
        probe: impl FnMut(&SidecarPolicy) -> bool,
    ) -> SidecarPolicy {
        self.wait_policy_within(name, TIMEOUT, what, probe).await
    }

    /// Waits (up to `timeout`) until policy `name` reports `n` Pods [`converged`].
    pub async fn wait_converged_within(
        &self,
        name: &str,
        n: i32,
        timeout: Duration,
    ) -> SidecarPolicy {
        let what = format!("status: {n} matched Pods, all with a Ready, up-to-date sidecar");
        self.wait_policy_within(name, timeout, &what, |p| converged(p, n))
            .await
    }

    /// [`Scene::wait_converged_within`] with the default [`TIMEOUT`].
    pub async fn wait_converged(&self, name: &str, n: i32) -> SidecarPolicy {
        self.wait_converged_within(name, n, TIMEOUT).await
    }
}

/// The policies of namespace `ns` as `kubectl get sp` sees them: the Table the API server
/// renders from the CRD's printer columns.
pub async fn policy_table(client: &Client, ns: &str) -> Value {
    let path = format!("/apis/sidecars.dev/v1alpha1/namespaces/{ns}/sidecarpolicies");
    let mut request = kube::core::Request::new(path)
        .list(&ListParams::default())
        .expect("build list request");
    request.headers_mut().insert(
        "accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io"
            .parse()
            .expect("header value"),
    );
    let text = client.request_text(request).await.expect("GET Table");
    serde_json::from_str(&text).expect("Table JSON")
}

/// The column names of a [`policy_table`], upper-cased as `kubectl get` prints them.
pub fn table_columns(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .expect("columnDefinitions")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_uppercase())
        .collect()
}
