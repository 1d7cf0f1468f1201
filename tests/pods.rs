//! Questions about Pods read from the server (Ready? bound where? a sidecar? whose?), and
//! the one-line-per-Pod dump printed when a test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ResourceExt as _};
use sidecar_api::constants::{
    LABEL_MANAGED_BY, LABEL_POLICY, LABEL_TEMPLATE_HASH, MANAGED_BY_VALUE,
};

use crate::wait_until;

/// True when the Pod's `Ready` condition is `True`.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node a Pod is bound to, if any.
pub fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// The Pod's phase (`Pending`, `Running`, `Succeeded`, ...), if reported.
pub fn phase_of(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The Pod's uid (every Pod read from the server has one).
pub fn uid_of(p: &Pod) -> String {
    p.uid().unwrap_or_default()
}

/// True for a Pod the operator made (label `app.kubernetes.io/managed-by=sidecar-operator`).
pub fn is_sidecar(p: &Pod) -> bool {
    p.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// The sidecars among `pods`, by name.
pub fn sidecars(pods: &[Pod]) -> BTreeMap<String, &Pod> {
    pods.iter()
        .filter(|p| is_sidecar(p))
        .map(|p| (p.name_any(), p))
        .collect()
}

/// The names of the sidecars among `pods`.
pub fn sidecar_names(pods: &[Pod]) -> BTreeSet<String> {
    sidecars(pods).into_keys().collect()
}

/// The Pod named `name` among `pods`.
pub fn find<'a>(pods: &'a [Pod], name: &str) -> Option<&'a Pod> {
    pods.iter().find(|p| p.name_any() == name)
}

/// One line per Pod: name, phase, readiness, node, controlling owner, uid, deletion, labels
/// and annotations. Printed when a test fails.
pub fn describe_pods(pods: &[Pod]) -> String {
    let mut out = format!("{} Pods:\n", pods.len());
    for p in pods {
        let owner = p
            .owner_references()
            .iter()
            .map(|o| format!("{}/{}({})", o.kind, o.name, o.uid))
            .collect::<Vec<_>>()
            .join(",");
        let deleting = if p.metadata.deletion_timestamp.is_some() {
            " DELETING"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} phase={} ready={} node={} owner=[{owner}] uid={}{deleting} labels={:?} annotations={:?}",
            p.name_any(),
            phase_of(p).unwrap_or("-"),
            pod_ready(p),
            node_of(p).unwrap_or("-"),
            uid_of(p),
            p.labels(),
            p.annotations(),
        );
    }
    out
}

/// The sidecars of policy `policy` among `pods`, by name.
pub fn sidecars_of<'a>(pods: &'a [Pod], policy: &str) -> BTreeMap<String, &'a Pod> {
    pods.iter()
        .filter(|p| {
            is_sidecar(p) && p.labels().get(LABEL_POLICY).map(String::as_str) == Some(policy)
        })
        .map(|p| (p.name_any(), p))
        .collect()
}

/// name → uid of the sidecars of `policy` among `pods`.
pub fn sidecar_uids(pods: &[Pod], policy: &str) -> BTreeMap<String, String> {
    sidecars_of(pods, policy)
        .into_iter()
        .map(|(n, p)| (n, uid_of(p)))
        .collect()
}

/// The template hash a sidecar was built from.
pub fn hash_of(p: &Pod) -> Option<&str> {
    p.labels().get(LABEL_TEMPLATE_HASH).map(String::as_str)
}

/// Waits (60 s) until Pod `name` exists and is not terminating (`present`), or is gone
/// (`!present`); returns it when present. Panics naming `what` on timeout.
pub async fn wait_pod(pods: &Api<Pod>, name: &str, present: bool, what: &str) -> Option<Pod> {
    wait_until(Duration::from_secs(60), what, || {
        let pods = pods.clone();
        let name = name.to_string();
        async move {
            match pods.get_opt(&name).await {
                Ok(Some(p)) if present && p.metadata.deletion_timestamp.is_none() => Some(Some(p)),
                Ok(None) if !present => Some(None),
                _ => None,
            }
        }
    })
    .await
}
