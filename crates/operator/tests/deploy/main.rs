//! The operator as users run it: the `sidecar-operator` binary (Cargo builds it for these
//! tests, [`process::BIN`]), authenticated as the ServiceAccount of `deploy/`
//! (least-privilege RBAC) or of the Helm chart it installed, and leader election between
//! processes. Against the real control plane, like `tests/e2e`, with the fixtures of
//! `sidecar-e2e`.

mod explain;
mod helm;
mod leadership;
mod process;
mod rbac;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use sidecar_api::SidecarPolicy;
use sidecar_e2e::wait_until;

pub fn refused_policy(name: &str, app: &str) -> SidecarPolicy {
    let spec = serde_json::from_value(serde_json::json!({
        "selector": {"matchLabels": {"app": app}},
        "template": {"spec": {"containers": [{
            "name": "agent", "image": "busybox:1.36",
            "securityContext": {"privileged": true},
        }]}},
    }))
    .expect("spec");
    SidecarPolicy::new(name, spec)
}

pub async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Flags of an operator that elects a leader on Lease `lease` in `ns`, with a 6 s lease
/// (renew deadline and retry period at their defaults).
pub fn lease_args<'a>(lease: &'a str, ns: &'a str) -> [&'a str; 7] {
    [
        "--leader-elect",
        "--lease-name",
        lease,
        "--lease-namespace",
        ns,
        "--lease-duration",
        "6",
    ]
}

/// Waits (60 s) until Lease `name` has a holder; returns its identity.
pub async fn wait_leader(leases: &Api<Lease>, name: &str) -> String {
    wait_until(Duration::from_secs(60), "a leader", || async move {
        holder(leases, name).await
    })
    .await
}
