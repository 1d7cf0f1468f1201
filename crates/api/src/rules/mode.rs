//! Rules on `spec` that depend on `spec.mode`: what a template must have in each mode, and what
//! it may not set in Container mode, where it is not a Pod but what is added to each selected
//! Pod (its init containers, containers and volumes, its labels and annotations).

use kube_core::Reason;
use serde_json::Value;

use super::Def;
use super::json::{has, size, str_at};
use crate::constants::ANNOTATION_INJECTED;

/// CEL: the rule's `self` (a `spec`) is in Container mode. The API server defaults `mode` to
/// `Pod`; `has()` keeps the rule safe on a value without it.
pub(super) const IN_CONTAINER_MODE: &str = "(has(self.mode) && self.mode == 'Container')";

/// Mirror of [`IN_CONTAINER_MODE`].
pub(super) fn in_container_mode(spec: &Value) -> bool {
    str_at(spec, "mode") == "Container"
}

/// The `spec.template.spec` fields Container mode takes from the template.
#[cfg(test)]
const CONTAINER_MODE_POD_SPEC_FIELDS: [&str; 3] = ["initContainers", "containers", "volumes"];

/// Every other field of `spec.template.spec` (of the `PodSpec` schema of the CRD; a test keeps
/// the two lists equal to it, so a Kubernetes upgrade that adds a field fails until it is
/// sorted here).
pub const CONTAINER_MODE_REFUSED_POD_SPEC_FIELDS: [&str; 39] = [
    "activeDeadlineSeconds",
    "affinity",
    "automountServiceAccountToken",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "ephemeralContainers",
    "hostAliases",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "hostUsers",
    "hostname",
    "hostnameOverride",
    "imagePullSecrets",
    "nodeName",
    "nodeSelector",
    "os",
    "overhead",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "readinessGates",
    "resourceClaims",
    "resources",
    "restartPolicy",
    "runtimeClassName",
    "schedulerName",
    "schedulingGates",
    "schedulingGroup",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "subdomain",
    "terminationGracePeriodSeconds",
    "tolerations",
    "topologySpreadConstraints",
];

/// The `spec.template.metadata` fields Container mode takes from the template.
#[cfg(test)]
const CONTAINER_MODE_METADATA_FIELDS: [&str; 2] = ["labels", "annotations"];

/// Every other field of `spec.template.metadata` (of the `ObjectMeta` schema of the CRD).
pub const CONTAINER_MODE_REFUSED_METADATA_FIELDS: [&str; 13] = [
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// The rules of this module, in their order on `spec`.
pub const ON_SPEC: [&Def; 5] = [
    &POD_MODE_NEEDS_A_CONTAINER,
    &CONTAINER_MODE_NEEDS_A_CONTAINER,
    &CONTAINER_MODE_POD_SPEC,
    &CONTAINER_MODE_METADATA,
    &CONTAINER_MODE_NO_INJECTED_ANNOTATION,
];

/// CEL: none of `fields` is set on `object` (a path from `self`).
fn none_set(object: &str, fields: &[&str]) -> String {
    let absent: Vec<String> = fields
        .iter()
        .map(|f| format!("!has({object}.{f})"))
        .collect();
    absent.join(" && ")
}

/// Mirror of [`none_set`].
fn none_present(object: Option<&Value>, fields: &[&str]) -> bool {
    object.is_none_or(|o| fields.iter().all(|f| !has(o, f)))
}

/// On `spec`, Pod mode: the sidecar Pod has at least one container (the API server refuses a
/// Pod without). Replaces the schema's former `minItems: 1` on `containers`, which Container
/// mode does not want.
pub const POD_MODE_NEEDS_A_CONTAINER: Def = Def {
    cel: || {
        format!(
            "{IN_CONTAINER_MODE} || !has(self.template.spec) || \
             (has(self.template.spec.containers) && size(self.template.spec.containers) > 0)"
        )
    },
    message: |_| {
        "spec.template.spec.containers must list at least one container: the containers of \
         the sidecar Pod"
            .to_owned()
    },
    field_path: Some(".template.spec.containers"),
    reason: Some(Reason::FieldValueRequired),
    holds: |spec| {
        in_container_mode(spec)
            || spec.pointer("/template/spec").is_none()
            || size(spec.pointer("/template/spec/containers")) > 0
    },
};

/// On `spec`, Container mode: something to inject, a container or an init container (a native
/// sidecar is an init container with `restartPolicy: Always`).
pub const CONTAINER_MODE_NEEDS_A_CONTAINER: Def = Def {
    cel: || {
        format!(
            "!{IN_CONTAINER_MODE} || !has(self.template.spec) || \
             (has(self.template.spec.containers) && size(self.template.spec.containers) > 0) || \
             (has(self.template.spec.initContainers) && \
             size(self.template.spec.initContainers) > 0)"
        )
    },
    message: |_| {
        "spec.template.spec must list at least one container or init container in Container \
         mode: the sidecars injected into each selected Pod"
            .to_owned()
    },
    field_path: Some(".template.spec"),
    reason: Some(Reason::FieldValueRequired),
    holds: |spec| {
        !in_container_mode(spec)
            || spec.pointer("/template/spec").is_none()
            || size(spec.pointer("/template/spec/containers")) > 0
            || size(spec.pointer("/template/spec/initContainers")) > 0
    },
};

/// On `spec`, Container mode: the template's Pod spec sets only what is injected.
pub const CONTAINER_MODE_POD_SPEC: Def = Def {
    cel: || {
        let none = none_set(
            "self.template.spec",
            &CONTAINER_MODE_REFUSED_POD_SPEC_FIELDS,
        );
        format!("!{IN_CONTAINER_MODE} || !has(self.template.spec) || ({none})")
    },
    message: |_| {
        "spec.template.spec may only set initContainers, containers and volumes in Container \
         mode: they are added to each selected Pod, whose other fields are its own"
            .to_owned()
    },
    field_path: Some(".template.spec"),
    reason: Some(Reason::FieldValueForbidden),
    holds: |spec| {
        !in_container_mode(spec)
            || none_present(
                spec.pointer("/template/spec"),
                &CONTAINER_MODE_REFUSED_POD_SPEC_FIELDS,
            )
    },
};

/// On `spec`, Container mode: the template's metadata sets only labels and annotations.
pub const CONTAINER_MODE_METADATA: Def = Def {
    cel: || {
        let none = none_set(
            "self.template.metadata",
            &CONTAINER_MODE_REFUSED_METADATA_FIELDS,
        );
        format!("!{IN_CONTAINER_MODE} || !has(self.template.metadata) || ({none})")
    },
    message: |_| {
        "spec.template.metadata may only set labels and annotations in Container mode: they are \
         added to each selected Pod (never replacing the Pod's own)"
            .to_owned()
    },
    field_path: Some(".template.metadata"),
    reason: Some(Reason::FieldValueForbidden),
    holds: |spec| {
        !in_container_mode(spec)
            || none_present(
                spec.pointer("/template/metadata"),
                &CONTAINER_MODE_REFUSED_METADATA_FIELDS,
            )
    },
};

/// On `spec`, Container mode: the template does not set the annotation in which the operator
/// records its injections on each Pod.
pub const CONTAINER_MODE_NO_INJECTED_ANNOTATION: Def = Def {
    cel: || {
        format!(
            "!{IN_CONTAINER_MODE} || !has(self.template.metadata) || \
             !has(self.template.metadata.annotations) || \
             !('{ANNOTATION_INJECTED}' in self.template.metadata.annotations)"
        )
    },
    message: |_| {
        format!(
            "spec.template.metadata.annotations must not set {ANNOTATION_INJECTED} in Container \
             mode: the operator records its injections in that annotation of \
             each Pod"
        )
    },
    field_path: Some(".template.metadata.annotations"),
    reason: Some(Reason::FieldValueForbidden),
    holds: |spec| {
        !in_container_mode(spec)
            || spec
                .pointer("/template/metadata/annotations")
                .and_then(Value::as_object)
                .is_none_or(|a| !a.contains_key(ANNOTATION_INJECTED))
    },
};

#[cfg(test)]
#[path = "mode_tests.rs"]
mod tests;
