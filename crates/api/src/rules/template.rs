//! Rules on `spec.template`: metadata fields the operator sets itself stay unset, and what the
//! API server's Pod validation would refuse in every sidecar and is cheap to check (names,
//! images, ports, volumes and their mounts, environment variable names, init container probes).

use kube_core::Reason;
use serde_json::Value;

use super::Def;
use super::json::{all_unique, has, items, matches, names, size, str_at};
use crate::constants::{KEY_PREFIX, LABEL_MANAGED_BY};
use crate::schema::{MAX_DNS_LABEL_LENGTH, MAX_PORT_NAME_LENGTH};

/// Syntax of a DNS-1123 label: lower case alphanumerics and `-`, alphanumeric at both ends.
const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Syntax of an environment variable name: printable ASCII other than `=` (Kubernetes ≥ 1.34;
/// older versions refuse more).
const ENV_NAME_PATTERN: &str = r"^[ -<>-~]+$";

/// The rules on `spec.template.metadata`, in their order in the schema.
pub const ON_METADATA: [&Def; 5] = [
    &NO_NAME,
    &NO_GENERATE_NAME,
    &NO_NAMESPACE,
    &NO_OWNER_REFERENCES,
    &LABELS_NOT_RESERVED,
];

/// The rules on the Pod spec (`spec.template.spec`), in their order in the schema.
pub const ON_POD_SPEC: [&Def; 4] = [
    &CONTAINER_NAMES_UNIQUE,
    &NO_EPHEMERAL_CONTAINERS,
    &VOLUME_NAMES_UNIQUE,
    &VOLUME_MOUNTS_DECLARED,
];

/// A rule on `spec.template.metadata` forbidding `field`, which the operator sets itself, and
/// saying why.
macro_rules! forbidden_metadata_field {
    ($(#[$doc:meta])* $name:ident, $field:literal, $why:literal) => {
        $(#[$doc])*
        pub const $name: Def = Def {
            cel: || concat!("!has(self.", $field, ")").to_owned(),
            message: |_| {
                concat!("spec.template.metadata.", $field, " must not be set: ", $why).to_owned()
            },
            field_path: Some(concat!(".", $field)),
            reason: Some(Reason::FieldValueForbidden),
            holds: |metadata| !has(metadata, $field),
        };
    };
}

forbidden_metadata_field!(
    /// On `spec.template.metadata`: no `name`.
    NO_NAME,
    "name",
    "the operator names each sidecar <main-pod>-<policy>"
);
forbidden_metadata_field!(
    /// On `spec.template.metadata`: no `generateName`.
    NO_GENERATE_NAME,
    "generateName",
    "the operator names each sidecar <main-pod>-<policy>"
);
forbidden_metadata_field!(
    /// On `spec.template.metadata`: no `namespace`.
    NO_NAMESPACE,
    "namespace",
    "sidecars are created in their main Pod's namespace"
);
forbidden_metadata_field!(
    /// On `spec.template.metadata`: no `ownerReferences`.
    NO_OWNER_REFERENCES,
    "ownerReferences",
    "the operator makes the main Pod the sidecar's only owner"
);

/// On `spec.template.metadata`: no label the operator sets itself.
pub const LABELS_NOT_RESERVED: Def = Def {
    cel: || {
        format!(
            "!has(self.labels) || !self.labels.exists(k, k == '{LABEL_MANAGED_BY}' || \
             k.startsWith('{KEY_PREFIX}'))"
        )
    },
    message: |_| {
        format!(
            "spec.template.metadata.labels must not set {LABEL_MANAGED_BY} or {KEY_PREFIX} \
             labels: the operator sets them on every sidecar"
        )
    },
    field_path: Some(".labels"),
    reason: Some(Reason::FieldValueForbidden),
    holds: |metadata| {
        metadata
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|labels| {
                !labels
                    .keys()
                    .any(|k| k == LABEL_MANAGED_BY || k.starts_with(KEY_PREFIX))
            })
    },
};

/// On the Pod spec: container names are unique across `containers` and `initContainers`.
pub const CONTAINER_NAMES_UNIQUE: Def = Def {
    cel: || {
        "(!has(self.containers) || self.containers.all(c, \
         self.containers.exists_one(d, d.name == c.name))) && \
         (!has(self.initContainers) || self.initContainers.all(c, \
         self.initContainers.exists_one(d, d.name == c.name) && \
         !(has(self.containers) && self.containers.exists(d, d.name == c.name))))"
            .to_owned()
    },
    message: |_| {
        "spec.template.spec.containers[].name and spec.template.spec.initContainers[].name must \
         be unique: two containers of the Pod have the same name"
            .to_owned()
    },
    field_path: None,
    reason: None,
    holds: |pod_spec| {
        let mut all = names(pod_spec, "containers");
        all.extend(names(pod_spec, "initContainers"));
        all_unique(&all)
    },
};

/// On the Pod spec: ephemeral containers cannot be part of a Pod when it is created.
pub const NO_EPHEMERAL_CONTAINERS: Def = Def {
    cel: || "!has(self.ephemeralContainers) || size(self.ephemeralContainers) == 0".to_owned(),
    message: |_| {
        "spec.template.spec.ephemeralContainers must not be set: the API server refuses a Pod \
         created with ephemeral containers (add them to a running Pod with kubectl debug)"
            .to_owned()
    },
    field_path: Some(".ephemeralContainers"),
    reason: Some(Reason::FieldValueForbidden),
    holds: |pod_spec| size(pod_spec.get("ephemeralContainers")) == 0,
};

/// On the Pod spec: volume names are unique.
pub const VOLUME_NAMES_UNIQUE: Def = Def {
    cel: || {
        "!has(self.volumes) || self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))"
            .to_owned()
    },
    message: |_| {
        "spec.template.spec.volumes[].name must be unique: two volumes have the same name"
            .to_owned()
    },
    field_path: Some(".volumes"),
    reason: None,
    holds: |pod_spec| all_unique(&names(pod_spec, "volumes")),
};

/// On the Pod spec: every volume mount of every container names a volume of the Pod.
pub const VOLUME_MOUNTS_DECLARED: Def = Def {
    cel: || {
        let mounts_ok = "!has(c.volumeMounts) || c.volumeMounts.all(m, has(self.volumes) && \
                         self.volumes.exists(v, v.name == m.name))";
        format!(
            "(!has(self.containers) || self.containers.all(c, {mounts_ok})) && \
             (!has(self.initContainers) || self.initContainers.all(c, {mounts_ok}))"
        )
    },
    message: |_| {
        "spec.template.spec.containers[].volumeMounts[].name and \
         spec.template.spec.initContainers[].volumeMounts[].name must be the name of a volume in \
         spec.template.spec.volumes"
            .to_owned()
    },
    field_path: None,
    reason: None,
    holds: |pod_spec| {
        let volumes = names(pod_spec, "volumes");
        ["containers", "initContainers"]
            .into_iter()
            .flat_map(|list| items(pod_spec, list))
            .flat_map(|c| names(c, "volumeMounts"))
            .all(|mount| volumes.contains(&mount))
    },
};

/// On each container of a list (`at`: `spec.template.spec.containers`): the image is set.
pub const IMAGE_REQUIRED: Def = Def {
    cel: || "has(self.image) && size(self.image) > 0".to_owned(),
    message: |list| {
        format!(
            "{list}[].image must be set: the container image to run, for example \
             \"busybox:1.36\""
        )
    },
    field_path: Some(".image"),
    reason: Some(Reason::FieldValueRequired),
    holds: |container| size(container.get("image")) > 0,
};

/// On each container of a list (`at`: the list): port names are unique within the container.
pub const PORT_NAMES_UNIQUE: Def = Def {
    cel: || {
        "!has(self.ports) || self.ports.all(p, !has(p.name) || size(p.name) == 0 || \
         self.ports.exists_one(q, has(q.name) && q.name == p.name))"
            .to_owned()
    },
    message: |list| format!("{list}[].ports[].name must be unique within a container"),
    field_path: Some(".ports"),
    reason: None,
    holds: |container| {
        let named: Vec<&str> = names(container, "ports")
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        all_unique(&named)
    },
};

/// On each init container: without `restartPolicy: Always` (a native sidecar) it runs to
/// completion and may have no lifecycle hooks or probes.
pub const INIT_CONTAINER_PROBES_NEED_RESTART_ALWAYS: Def = Def {
    cel: || {
        "(has(self.restartPolicy) && self.restartPolicy == 'Always') || \
         (!has(self.lifecycle) && !has(self.livenessProbe) && !has(self.readinessProbe) && \
         !has(self.startupProbe))"
            .to_owned()
    },
    message: |_| {
        "spec.template.spec.initContainers[]: lifecycle, livenessProbe, readinessProbe and \
         startupProbe may only be set with restartPolicy Always (a native sidecar container)"
            .to_owned()
    },
    field_path: None,
    reason: Some(Reason::FieldValueForbidden),
    holds: |container| {
        let hooks = [
            "lifecycle",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
        ];
        str_at(container, "restartPolicy") == "Always"
            || hooks.iter().all(|field| !has(container, field))
    },
};

/// On a name that must be a DNS-1123 label (`at`: the field, for example
/// `spec.template.spec.containers[].name`).
pub const DNS_LABEL: Def = Def {
    cel: || format!("self.matches('{DNS_LABEL_PATTERN}')"),
    message: |field| {
        format!(
            "{field} must be a DNS-1123 label: lower case letters, digits and '-', starting and \
             ending with a letter or digit, at most {MAX_DNS_LABEL_LENGTH} characters (for \
             example \"log-shipper\")"
        )
    },
    field_path: None,
    reason: None,
    holds: |name| name.as_str().is_some_and(|s| matches(DNS_LABEL_PATTERN, s)),
};

/// On the name of each port of a container list (`at`: the list): an IANA service name.
pub const PORT_NAME: Def = Def {
    cel: || {
        format!(
            "size(self) == 0 || (self.matches('{DNS_LABEL_PATTERN}') && self.matches('[a-z]') && \
             !self.contains('--'))"
        )
    },
    message: |list| {
        format!(
            "{list}[].ports[].name must be an IANA service name: at most {MAX_PORT_NAME_LENGTH} \
             lower case letters, digits and '-', with at least one letter, no '--', starting and \
             ending with a letter or digit (for example \"http\")"
        )
    },
    field_path: None,
    reason: None,
    holds: |name| {
        let s = name.as_str().unwrap_or_default();
        s.is_empty() || (matches(DNS_LABEL_PATTERN, s) && matches("[a-z]", s) && !s.contains("--"))
    },
};

/// On the name of each environment variable of a container list (`at`: the list).
pub const ENV_NAME: Def = Def {
    cel: || format!("self.matches('{ENV_NAME_PATTERN}')"),
    message: |list| {
        format!(
            "{list}[].env[].name must be an environment variable name: printable ASCII \
             characters other than '=' (for example \"LOG_LEVEL\")"
        )
    },
    field_path: None,
    reason: None,
    holds: |name| name.as_str().is_some_and(|s| matches(ENV_NAME_PATTERN, s)),
};
