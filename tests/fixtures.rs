//! Builders of the objects the tests create: bare and gated Pods, Deployments, Jobs, and
//! `SidecarPolicy` fixtures (with a spec patch, Pod-Security-compliant or privileged
//! templates).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use sidecar_api::SidecarPolicy;

/// Label selecting the main Pods of most tests.
pub const WEB: (&str, &str) = ("app", "web");

/// A JSON object of string `labels` (also used for annotations).
pub fn string_map(entries: &[(&str, &str)]) -> Value {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A minimal bare Pod (one `busybox` container) with `labels`.
pub fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": string_map(labels)},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }))
    .expect("static Pod JSON")
}

/// [`pod`] held back from scheduling by the scheduling gate `example.com/wait`, so it stays
/// Pending and unbound until the gate is removed (see [`Scene::ungate_pod`]).
pub fn gated_pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    let mut p = pod(name, labels);
    if let Some(spec) = p.spec.as_mut() {
        spec.scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: "example.com/wait".into(),
        }]);
    }
    p
}

/// The Pod template shared by [`deployment`] and [`job`].
fn pod_template(labels: &[(&str, &str)], annotations: &[(&str, &str)], restart: &str) -> Value {
    json!({
        "metadata": {"labels": string_map(labels), "annotations": string_map(annotations)},
        "spec": {
            "restartPolicy": restart,
            "containers": [{"name": "main", "image": "busybox:1.36"}],
        },
    })
}

/// A Deployment of `replicas` minimal Pods labelled `labels` (which are also its selector).
pub fn deployment(name: &str, replicas: i32, labels: &[(&str, &str)]) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": string_map(labels)},
            "template": pod_template(labels, &[], "Always"),
        },
    }))
    .expect("static Deployment JSON")
}

/// A one-Pod Job (no retries) whose Pod is labelled `labels` and annotated `annotations`
/// (e.g. kwok's `pod-complete.stage.kwok.x-k8s.io/delay`).
pub fn job(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": pod_template(labels, annotations, "Never"),
        },
    }))
    .expect("static Job JSON")
}

/// A `SidecarPolicy` selecting `matchLabels: selector`, whose sidecars are labelled
/// `template_labels` and run one `busybox` container `agent` (with one env var of its own,
/// `LEVEL=info`, which must come after the injected `MAIN_POD_*`), placed `placement`
/// (`SameNode` or `Any`).
pub fn policy(
    name: &str,
    selector: &[(&str, &str)],
    template_labels: &[(&str, &str)],
    placement: &str,
) -> SidecarPolicy {
    let spec = serde_json::from_value(json!({
        "selector": {"matchLabels": string_map(selector)},
        "template": {
            "metadata": {"labels": string_map(template_labels)},
            "spec": {"containers": [{
                "name": "agent",
                "image": "busybox:1.36",
                "env": [{"name": "LEVEL", "value": "info"}],
            }]},
        },
        "placement": placement,
    }))
    .expect("static SidecarPolicy spec JSON");
    SidecarPolicy::new(name, spec)
}

/// JSON merge (RFC 7386 without deletes): objects merge recursively, anything else replaces.
fn merge_json(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge_json(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The fixture [`policy`] (`SameNode`, sidecars labelled `team=obs`, one `agent` container
/// with `LEVEL=info`) selecting `selector`, with `spec_patch` merged into its spec.
pub fn policy_with(name: &str, selector: (&str, &str), spec_patch: Value) -> SidecarPolicy {
    let base = policy(name, &[selector], &[("team", "obs")], "SameNode");
    let mut v = serde_json::to_value(base).expect("policy JSON");
    merge_json(&mut v["spec"], &spec_patch);
    serde_json::from_value(v).expect("patched policy")
}

/// The fixture's sidecar container, with `LEVEL=level`.
pub fn agent(level: &str) -> Value {
    json!({"name": "agent", "image": "busybox:1.36", "env": [{"name": "LEVEL", "value": level}]})
}

/// A merge patch of a policy that changes its template (the `agent` container's `LEVEL`).
pub fn new_template(level: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [agent(level)]}}}})
}

/// Pod-level security context accepted by Pod Security `restricted`.
fn restricted_pod_security() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}})
}

/// Container-level security context accepted by Pod Security `restricted`.
fn restricted_container_security() -> Value {
    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
}

/// A sidecar template spec that passes Pod Security `restricted`.
pub fn compliant_template_spec() -> Value {
    let mut c = agent("info");
    c["securityContext"] = restricted_container_security();
    json!({"securityContext": restricted_pod_security(), "containers": [c]})
}

/// A sidecar template spec that Pod Security `restricted` (and `baseline`) refuses.
pub fn privileged_template_spec() -> Value {
    let mut c = agent("info");
    c["securityContext"] = json!({"privileged": true});
    json!({"containers": [c]})
}

/// [`pod`] made compliant with Pod Security `restricted`.
pub fn restricted_pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    let mut v = serde_json::to_value(pod(name, labels)).expect("Pod JSON");
    v["spec"]["securityContext"] = restricted_pod_security();
    v["spec"]["containers"][0]["securityContext"] = restricted_container_security();
    serde_json::from_value(v).expect("restricted Pod")
}

/// `prefix-0`, `prefix-1`, … (zero-padded to 2 digits so names sort like numbers).
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:02}")).collect()
}

/// A Container-mode policy `name` over `app=<app>` that injects one native sidecar
/// `sidecar` (init container, restartPolicy Always) of `image`; every other field at its
/// default.
pub fn native_sidecar_policy(name: &str, app: &str, sidecar: &str, image: &str) -> SidecarPolicy {
    let spec = serde_json::from_value(json!({
        "mode": "Container",
        "selector": {"matchLabels": {"app": app}},
        "template": {"spec": {"initContainers": [
            {"name": sidecar, "image": image, "restartPolicy": "Always"}]}},
    }))
    .expect("static Container-mode spec");
    SidecarPolicy::new(name, spec)
}

/// The smallest policy: selects `app=<app>`, one `agent` container (`busybox`), every other
/// field at its default.
pub fn minimal_policy(name: &str, app: &str) -> SidecarPolicy {
    let spec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": app}},
        "template": {"spec": {"containers": [{"name": "agent", "image": "busybox:1.36"}]}},
    }))
    .expect("spec");
    SidecarPolicy::new(name, spec)
}
