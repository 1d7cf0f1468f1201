//! Admission-time validation of `SidecarPolicy`: where the CEL rules of [`crate::rules`] sit
//! (`x-kubernetes-validations`), and the structural bounds (`maxItems`, `maxLength`,
//! `maxProperties`, `enum`, `minLength`) that keep the rules' estimated cost within the API
//! server's budget.
//!
//! Rules on our own fields are attached in [`crate::types`] with `#[x_kube(validation = ..)]`;
//! rules and bounds inside the upstream `LabelSelector` and `PodTemplateSpec` schemas are added
//! by the `harden_*` schemars transforms below (we cannot annotate upstream types). Every rule
//! message names the field it is about, so `kubectl apply` tells the user what to fix.
//!
//! Inside the template, the rules refuse what the API server's Pod validation would refuse in
//! every sidecar built from it and what is cheap to check; bounds on the lists they iterate keep
//! their cost low. [`bound_int32`] bounds every 32-bit integer of the CRD, so the server never
//! stores a number the Rust types cannot read back.
//!
//! The API server evaluates these rules: the unit tests here only check that the rules and
//! bounds land at the right places in the generated CRD; the e2e test `tests/e2e/api.rs` proves
//! every `tests/bad-policies/*.yaml` is rejected with its message. For offline checks
//! (`sidecar-operator check`), [`mod@crate::validate`] evaluates each rule with the Rust mirror
//! declared beside it in [`crate::rules`].

use kube_core::Rule;
use schemars::Schema;
use serde_json::{Map, Value, json};

use crate::rules::{self, template};

/// Most `matchExpressions` entries a policy selector may have.
pub const MAX_MATCH_EXPRESSIONS: i64 = 32;
/// Most `values` in one `matchExpressions` entry.
pub const MAX_EXPRESSION_VALUES: i64 = 64;
/// Most `matchLabels` entries in a policy selector.
pub const MAX_MATCH_LABELS: i64 = 64;
/// Most labels on the sidecar template.
pub const MAX_TEMPLATE_LABELS: i64 = 64;
/// Most containers in the sidecar template.
pub const MAX_CONTAINERS: i64 = 16;
/// Longest label key: 253-character DNS prefix, `/`, 63-character name.
pub const MAX_LABEL_KEY_LENGTH: i64 = 317;
/// Longest label value.
pub const MAX_LABEL_VALUE_LENGTH: i64 = 63;
/// Syntax of a label value (empty, or alphanumerics with `-`, `_`, `.` inside).
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

// Bounds inside `spec.template.spec`. Kubernetes sets no limit on these lists and strings; the
// bounds are far above what a sidecar needs and keep the estimated cost of the CEL rules that
// iterate them (uniqueness, references) within the API server's budget.

/// Most init containers in the sidecar template.
pub const MAX_INIT_CONTAINERS: i64 = 16;
/// Most ports of one container.
pub const MAX_PORTS: i64 = 32;
/// Most environment variables of one container.
pub const MAX_ENV: i64 = 256;
/// Longest environment variable name.
pub const MAX_ENV_NAME_LENGTH: i64 = 256;
/// Most volumes in the sidecar template.
pub const MAX_VOLUMES: i64 = 64;
/// Most volume mounts of one container.
pub const MAX_VOLUME_MOUNTS: i64 = 64;
/// Longest DNS-1123 label (container, volume and volume mount names), as Kubernetes checks it.
pub const MAX_DNS_LABEL_LENGTH: i64 = 63;
/// Longest port name (an IANA service name), as Kubernetes checks it.
pub const MAX_PORT_NAME_LENGTH: i64 = 15;
/// Longest value of the enumerated strings bounded here (`restartPolicy`, `imagePullPolicy`,
/// `protocol`): keeps comparisons with them cheap.
pub const MAX_ENUM_LENGTH: i64 = 32;
/// Smallest value of a 32-bit integer field (`format: int32`; the Rust types hold `i32`).
pub const INT32_MIN: i64 = i32::MIN as i64;
/// Largest value of a 32-bit integer field, and of an int-or-string that is not a quantity.
pub const INT32_MAX: i64 = i32::MAX as i64;

/// Schemars transform for `spec.selector`: bounds, operator enum and label value syntax.
pub fn harden_selector(schema: &mut Schema) {
    let label_value = label_value_schema();
    if let Some(labels) = schema.pointer_mut("/properties/matchLabels") {
        set(labels, "maxProperties", MAX_MATCH_LABELS.into());
        set(labels, "additionalProperties", label_value.clone());
    }
    if let Some(exprs) = schema.pointer_mut("/properties/matchExpressions") {
        set(exprs, "maxItems", MAX_MATCH_EXPRESSIONS.into());
    }
    if let Some(item) = schema.pointer_mut("/properties/matchExpressions/items") {
        add_rule(item, rules::selector::MATCH_EXPRESSION_VALUES.rule());
        if let Some(key) = at(item, &["properties", "key"]) {
            set(key, "minLength", 1.into());
            set(key, "maxLength", MAX_LABEL_KEY_LENGTH.into());
        }
        if let Some(op) = at(item, &["properties", "operator"]) {
            set(op, "enum", json!(["In", "NotIn", "Exists", "DoesNotExist"]));
        }
        if let Some(values) = at(item, &["properties", "values"]) {
            set(values, "maxItems", MAX_EXPRESSION_VALUES.into());
            set(values, "items", label_value);
        }
    }
}

/// Schemars transform for `spec.template`: `spec` required, bounds on containers and labels, and
/// rules forbidding metadata fields the operator sets itself. (That the template has a container
/// depends on `spec.mode`: rules on `spec`, [`rules::mode`].)
pub fn harden_template(schema: &mut Schema) {
    push_required(schema.ensure_object(), "spec");
    if let Some(meta) = schema.pointer_mut("/properties/metadata") {
        for def in template::ON_METADATA {
            add_rule(meta, def.rule());
        }
        if let Some(labels) = at(meta, &["properties", "labels"]) {
            set(labels, "maxProperties", MAX_TEMPLATE_LABELS.into());
        }
    }
    if let Some(containers) = schema.pointer_mut("/properties/spec/properties/containers") {
        set(containers, "maxItems", MAX_CONTAINERS.into());
    }
    if let Some(labels) = schema.pointer_mut("/properties/metadata/properties/labels") {
        set(labels, "additionalProperties", label_value_schema());
    }
    if let Some(pod_spec) = schema.pointer_mut("/properties/spec") {
        harden_pod_spec(pod_spec);
        bound_ports(pod_spec);
    }
}

fn label_value_schema() -> Value {
    let mut label_value = json!({ "type": "string" });
    set(&mut label_value, "maxLength", MAX_LABEL_VALUE_LENGTH.into());
    set(&mut label_value, "pattern", LABEL_VALUE_PATTERN.into());
    label_value
}

/// `spec.template.spec`: what the API server's Pod validation refuses and a CRD can check
/// cheaply. Rules that compare names across lists sit on the Pod spec; rules on one container,
/// port or variable sit on it, with messages naming the list they are in.
fn harden_pod_spec(pod_spec: &mut Value) {
    // Upstream requires containers; Container mode takes a template with init containers only.
    // Rules on spec require what each mode needs (`rules::mode`).
    if let Some(required) = pod_spec.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|f| f != "containers");
        if required.is_empty()
            && let Some(object) = pod_spec.as_object_mut()
        {
            object.remove("required");
        }
    }
    for def in template::ON_POD_SPEC {
        add_rule(pod_spec, def.rule());
    }
    if let Some(init) = at(pod_spec, &["properties", "initContainers"]) {
        set(init, "maxItems", MAX_INIT_CONTAINERS.into());
    }
    if let Some(policy) = at(pod_spec, &["properties", "restartPolicy"]) {
        set_enum(policy, &["Always", "OnFailure", "Never", ""]);
    }
    for list in ["containers", "initContainers"] {
        let path = format!("spec.template.spec.{list}");
        if let Some(container) = at(pod_spec, &["properties", list, "items"]) {
            harden_container(container, &path, list == "initContainers");
        }
    }
    if let Some(volumes) = at(pod_spec, &["properties", "volumes"]) {
        set(volumes, "maxItems", MAX_VOLUMES.into());
        if let Some(name) = at(volumes, &["items", "properties", "name"]) {
            set(name, "maxLength", MAX_DNS_LABEL_LENGTH.into());
            add_rule(
                name,
                template::DNS_LABEL.rule_at("spec.template.spec.volumes[].name"),
            );
        }
    }
}

fn harden_container(container: &mut Value, list: &str, init: bool) {
    add_rule(container, template::IMAGE_REQUIRED.rule_at(list));
    add_rule(container, template::PORT_NAMES_UNIQUE.rule_at(list));
    if init {
        add_rule(
            container,
            template::INIT_CONTAINER_PROBES_NEED_RESTART_ALWAYS.rule(),
        );
    }
    let Some(props) = container.get_mut("properties") else {
        return;
    };
    if let Some(name) = props.get_mut("name") {
        set(name, "maxLength", MAX_DNS_LABEL_LENGTH.into());
        add_rule(name, template::DNS_LABEL.rule_at(&format!("{list}[].name")));
    }
    if let Some(policy) = props.get_mut("imagePullPolicy") {
        set_enum(policy, &["Always", "IfNotPresent", "Never", ""]);
    }
    // Unlike the Pod's, a container's restartPolicy has no default: "" is refused too.
    if let Some(policy) = props.get_mut("restartPolicy") {
        set_enum(policy, &["Always", "OnFailure", "Never"]);
    }
    if let Some(ports) = props.get_mut("ports") {
        set(ports, "maxItems", MAX_PORTS.into());
        if let Some(port) = ports.get_mut("items").and_then(|i| i.get_mut("properties")) {
            if let Some(name) = port.get_mut("name") {
                set(name, "maxLength", MAX_PORT_NAME_LENGTH.into());
                add_rule(name, template::PORT_NAME.rule_at(list));
            }
            if let Some(protocol) = port.get_mut("protocol") {
                set_enum(protocol, &["TCP", "UDP", "SCTP", ""]);
            }
            if let Some(host_port) = port.get_mut("hostPort") {
                // 0 means no host port.
                set_range(host_port, 0, 65535);
            }
            if let Some(container_port) = port.get_mut("containerPort") {
                set_range(container_port, 1, 65535);
            }
        }
    }
    if let Some(env) = props.get_mut("env") {
        set(env, "maxItems", MAX_ENV.into());
        if let Some(name) = at(env, &["items", "properties", "name"]) {
            set(name, "maxLength", MAX_ENV_NAME_LENGTH.into());
            add_rule(name, template::ENV_NAME.rule_at(list));
        }
    }
    if let Some(mounts) = props.get_mut("volumeMounts") {
        set(mounts, "maxItems", MAX_VOLUME_MOUNTS.into());
        // A mount names a volume, whose name is a DNS-1123 label.
        if let Some(name) = at(mounts, &["items", "properties", "name"]) {
            set(name, "maxLength", MAX_DNS_LABEL_LENGTH.into());
        }
    }
}

/// Every `port` below `value` (probe and lifecycle handlers: `httpGet`, `tcpSocket`, `grpc`) is a
/// port number 1..65535 when it is a number (an int-or-string may also be a port name).
fn bound_ports(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    if let Some(port) = object.get_mut("properties").and_then(|p| p.get_mut("port")) {
        set_range(port, 1, 65535);
    }
    for_each_subschema(object, bound_ports);
}

/// Bounds every 32-bit integer below `value` (`format: int32`) to the 32-bit range, unless it has
/// bounds already, so that the API server refuses values the Rust types (`i32`) cannot read
/// back, naming the field. (Kubernetes 1.36 checks `format: int32` itself, but its message
/// names no field: `<nil>: Invalid value: "": Checked value must be of type integer with format
/// int32 in ...`; a validator that ignores the format would store the value.) The
/// int-or-strings that are `IntOrString` (holding an `i32`) are the ports, bounded by [`harden_template`], and `spec.updateStrategy.maxUnavailable`,
/// bounded by [`crate::crd()`]; the others are quantities, which hold any number.
pub fn bound_int32(value: &mut Value) {
    let Some(object) = value.as_object_mut() else {
        return;
    };
    let int32 = object.get("type").and_then(Value::as_str) == Some("integer")
        && object.get("format").and_then(Value::as_str) == Some("int32");
    if int32 {
        object.entry("minimum").or_insert(INT32_MIN.into());
        object.entry("maximum").or_insert(INT32_MAX.into());
    }
    for_each_subschema(object, bound_int32);
}

/// Calls `f` on every direct subschema of `object` (properties, items, additionalProperties).
fn for_each_subschema(object: &mut Map<String, Value>, f: fn(&mut Value)) {
    for (key, child) in object.iter_mut() {
        match key.as_str() {
            "properties" => child
                .as_object_mut()
                .into_iter()
                .flat_map(|p| p.values_mut())
                .for_each(f),
            "items" | "additionalProperties" => f(child),
            _ => {}
        }
    }
}

/// `minimum` and `maximum` (inclusive).
fn set_range(value: &mut Value, minimum: i64, maximum: i64) {
    set(value, "minimum", minimum.into());
    set(value, "maximum", maximum.into());
}

fn set_enum(value: &mut Value, allowed: &[&str]) {
    set(value, "enum", json!(allowed));
    set(value, "maxLength", MAX_ENUM_LENGTH.into());
}

fn at<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(*key))
}

fn set(value: &mut Value, key: &str, new: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.to_owned(), new);
    }
}

fn push_required(object: &mut Map<String, Value>, field: &str) {
    let required = object
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = required.as_array_mut()
        && !list.iter().any(|f| f == field)
    {
        list.push(field.into());
    }
}

fn add_rule(value: &mut Value, rule: Rule) {
    let (Some(object), Ok(rule)) = (value.as_object_mut(), serde_json::to_value(rule)) else {
        return;
    };
    let rules = object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = rules.as_array_mut() {
        list.push(rule);
    }
}
