//! One admission review, answered from the policy index: decode, [`inject`], encode what it
//! adds as a JSON patch. No I/O: the server calls [`review`] and sends its bytes.
//!
//! The patch adds each addition where it goes (`add /spec/initContainers/0`,
//! `/spec/containers/-`, `/metadata/labels/<key>`...), and nothing else. It is never a diff of
//! the Pod before and after as the operator's types see them: those types drop the fields a
//! newer API server sends that they do not know, so a diff could not see them, and inserting
//! a sidecar before the Pod's own init containers shifted such fields onto the wrong one.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Value, json};
use sidecar_planner::PolicyView;
use sidecar_planner::inject::{Additions, Skip, Untouched, inject_in};
use sidecar_planner::pod_security::Level;

/// What one review did, for metrics, logs and Events.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The policies' sidecars were injected: `(policy, template hash)`.
    Injected(Vec<(String, String)>),
    /// The Pod was let through unchanged: why (a metric label).
    Unchanged(&'static str),
    /// The request could not be answered as asked (undecodable body, a patch that did not
    /// encode); the Pod is let through unchanged when the request had a uid to answer.
    Error(String),
}

impl Outcome {
    /// The `result` label of the admissions metric.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Injected(_) => "injected",
            Outcome::Unchanged(_) => "skipped",
            Outcome::Error(_) => "error",
        }
    }

    /// The `reason` label of the admissions metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Injected(_) => "",
            Outcome::Unchanged(r) => r,
            Outcome::Error(_) => "error",
        }
    }
}

/// A policy that selected the Pod but was not injected for a reason worth telling its owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The policy's namespace and name.
    pub namespace: String,
    pub policy: String,
    /// The Pod's name, or its `generateName` prefix (a Pod of a ReplicaSet has no name yet).
    pub pod: String,
    pub skip: Skip,
}

/// The answer to one review.
#[derive(Debug)]
pub struct Answer {
    /// The AdmissionReview to send back (JSON); `None` when the body was not a review,
    /// answered with HTTP 400.
    pub body: Option<Vec<u8>>,
    pub outcome: Outcome,
    /// Policies skipped for this Pod because it already had what they would add.
    pub refusals: Vec<Refusal>,
}

/// What the webhook knows of a namespace when a Pod is created there.
#[derive(Debug, Clone, Default)]
pub struct InNamespace {
    /// The Container-mode policies that may apply there (in any order).
    pub policies: Vec<Arc<PolicyView>>,
    /// The Pod Security level the namespace enforces (`Privileged` when its labels are not
    /// known).
    pub level: Level,
}

/// Answers the AdmissionReview in `body` with what `namespace` gives of the Pod's namespace.
pub fn review(body: &[u8], namespace: impl Fn(&str) -> InNamespace) -> Answer {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("not an AdmissionReview of a Pod: {e}")),
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return bad_request(format!("an AdmissionReview without a request: {e}")),
    };
    let allowed = AdmissionResponse::from(&request);
    let (response, outcome, refusals) = decide(&request, allowed, namespace);
    let body = encode(&response);
    Answer {
        body,
        outcome,
        refusals,
    }
}

fn decide(
    request: &AdmissionRequest<Pod>,
    allowed: AdmissionResponse,
    in_namespace: impl Fn(&str) -> InNamespace,
) -> (AdmissionResponse, Outcome, Vec<Refusal>) {
    let unchanged = |why| (allowed.clone(), Outcome::Unchanged(why), Vec::new());
    let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else {
        return unchanged("not_a_pod_create");
    };
    if request.sub_resource.is_some() {
        return unchanged("not_a_pod_create");
    }
    // A Pod's namespace is the request's; the object itself may not say it yet.
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    let there = in_namespace(&namespace);
    if there.policies.is_empty() {
        return unchanged("no_policy");
    }
    let refs: Vec<&PolicyView> = there.policies.iter().map(Arc::as_ref).collect();
    let injection = inject_in(pod, &refs, there.level);
    let pod_name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    let refusals: Vec<Refusal> = injection
        .skipped
        .iter()
        .filter(|(_, s)| s.is_problem())
        .map(|(policy, skip)| Refusal {
            namespace: namespace.clone(),
            policy: policy.clone(),
            pod: pod_name.clone(),
            skip: skip.clone(),
        })
        .collect();
    let why = match (injection.untouched, &injection.pod) {
        (Some(Untouched::OptedOut), _) => "opted_out",
        (Some(Untouched::Operator), _) => "operator_pod",
        (Some(Untouched::Mirror), _) => "mirror_pod",
        (None, _)
            if injection.injected.is_empty()
                && refusals
                    .iter()
                    .all(|r| matches!(r.skip, Skip::RefusedByNamespace(_)))
                && !refusals.is_empty() =>
        {
            "refused_by_namespace"
        }
        (None, _) if !refusals.is_empty() && injection.injected.is_empty() => "name_taken",
        (None, None) if injection.skipped.is_empty() => "not_selected",
        (None, None) => "already_injected",
        (None, Some(_)) => "",
    };
    if injection.pod.is_none() {
        return (allowed, Outcome::Unchanged(why), refusals);
    }
    let mut response = allowed.clone();
    if !refusals.is_empty() {
        response.warnings = Some(
            refusals
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        sidecar_planner::cluster::describe(&r.policy),
                        r.skip.message()
                    )
                })
                .collect(),
        );
    }
    let patch = match patch_of(pod, &injection.added) {
        Ok(p) => p,
        Err(e) => {
            return (
                allowed,
                Outcome::Error(format!("encoding the patch: {e}")),
                refusals,
            );
        }
    };
    match response.with_patch(patch) {
        Ok(r) if injection.injected.is_empty() => (r, Outcome::Unchanged(why), refusals),
        Ok(r) => (r, Outcome::Injected(injection.injected), refusals),
        Err(e) => (
            allowed,
            Outcome::Error(format!("encoding the patch: {e}")),
            refusals,
        ),
    }
}

/// The JSON patch that adds `added` to `pod` (as the API server sent it; `pod` is its typed
/// reading, which tells which lists and maps it has). A list the Pod has entries in gets each
/// addition by position (init containers, before the Pod's own) or at its end (containers,
/// volumes); a map it has entries in gets each key; a list or map it lacks (or has empty, or
/// null) is set whole. Nothing else of the Pod is written.
fn patch_of(pod: &Pod, added: &Additions) -> Result<json_patch::Patch, serde_json::Error> {
    let mut ops: Vec<Value> = Vec::new();
    let mut add = |path: String, value: Value| {
        ops.push(json!({"op": "add", "path": path, "value": value}));
    };
    let spec = pod.spec.as_ref();
    let adds_to_spec = !(added.init_containers.is_empty()
        && added.containers.is_empty()
        && added.volumes.is_empty());
    if spec.is_none() && adds_to_spec {
        add("/spec".into(), json!({}));
    }
    if !added.init_containers.is_empty() {
        let own = spec.and_then(|s| s.init_containers.as_ref());
        if own.is_none_or(Vec::is_empty) {
            add(
                "/spec/initContainers".into(),
                serde_json::to_value(&added.init_containers)?,
            );
        } else {
            for (i, c) in added.init_containers.iter().enumerate() {
                add(
                    format!("/spec/initContainers/{i}"),
                    serde_json::to_value(c)?,
                );
            }
        }
    }
    let own = spec.map(|s| s.containers.len()).unwrap_or_default();
    append(&mut add, "/spec/containers", own, &added.containers)?;
    let own = spec.and_then(|s| s.volumes.as_ref()).map_or(0, Vec::len);
    append(&mut add, "/spec/volumes", own, &added.volumes)?;
    let meta = &pod.metadata;
    entries(
        &mut add,
        "/metadata/labels",
        meta.labels.as_ref(),
        &added.labels,
    );
    entries(
        &mut add,
        "/metadata/annotations",
        meta.annotations.as_ref(),
        &added.annotations,
    );
    serde_json::from_value(Value::Array(ops))
}

/// Adds `items` after the `own` entries of the list at `path`.
fn append<T: serde::Serialize>(
    add: &mut impl FnMut(String, Value),
    path: &str,
    own: usize,
    items: &[T],
) -> Result<(), serde_json::Error> {
    if items.is_empty() {
        return Ok(());
    }
    if own == 0 {
        add(path.into(), serde_json::to_value(items)?);
        return Ok(());
    }
    for item in items {
        add(format!("{path}/-"), serde_json::to_value(item)?);
    }
    Ok(())
}

/// Sets `items` in the map at `path` (`own`: what the Pod has there).
fn entries(
    add: &mut impl FnMut(String, Value),
    path: &str,
    own: Option<&BTreeMap<String, String>>,
    items: &BTreeMap<String, String>,
) {
    if items.is_empty() {
        return;
    }
    if own.is_none_or(BTreeMap::is_empty) {
        add(path.into(), json!(items));
        return;
    }
    for (k, v) in items {
        // A JSON pointer token: `~` and `/` escaped (RFC 6901).
        let token = k.replace('~', "~0").replace('/', "~1");
        add(format!("{path}/{token}"), json!(v));
    }
}

/// The review sent back, written here rather than by kube-core, which sends the patch as a
/// JSON array of numbers: four times the bytes of base64, for the API server to read per
/// admission.
#[derive(serde::Serialize)]
struct ReviewOut<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
}

fn encode(response: &AdmissionResponse) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let patch = response
        .patch
        .as_ref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let out = ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: &response.uid,
            allowed: response.allowed,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: response.warnings.as_deref(),
        },
    };
    serde_json::to_vec(&out).ok()
}

fn bad_request(message: String) -> Answer {
    Answer {
        body: None,
        outcome: Outcome::Error(message),
        refusals: Vec::new(),
    }
}

#[cfg(test)]
#[path = "review_tests.rs"]
pub(crate) mod tests;
