//! Admission-time validation of `SidecarPolicy`: CEL rules (`x-kubernetes-validations`) and the
//! structural bounds (`maxItems`, `maxLength`, `maxProperties`, `enum`, `minItems`) that keep
//! the rules' estimated cost within the API server's budget.
//!
//! Rules on our own fields are attached in [`crate::types`] with `#[x_kube(validation = ..)]`;
//! rules and bounds inside the upstream `LabelSelector` and `PodTemplateSpec` schemas are added
//! by the `harden_*` schemars transforms below (we cannot annotate upstream types). Every rule
//! message names the field it is about, so `kubectl apply` tells the user what to fix.
//!
//! Inside the template, the rules refuse what the API server's Pod validation would refuse in
//! every sidecar built from it and what is cheap to check (names, images, ports, volumes and
//! their mounts, environment variable names, init container probes); bounds on the lists they
//! iterate keep their cost low. [`bound_int32`] bounds every 32-bit integer of the CRD, so the
//! server never stores a number the Rust types cannot read back.
//!
//! The API server evaluates these rules: the unit tests here only check that the rules and
//! bounds land at the right places in the generated CRD; the e2e test `tests/e2e/api.rs` proves
//! every `tests/bad-policies/*.yaml` is rejected with its message. For offline checks
//! (`sidecar-operator check`), [`mod@crate::validate`] mirrors each rule in Rust, looked up by its
//! exact CEL text: changing a rule here means changing its mirror there (a unit test fails
//! otherwise).

use kube_core::{Message, Reason, Rule};
use schemars::Schema;
use serde_json::{Map, Value, json};

use crate::constants::{KEY_PREFIX, LABEL_MANAGED_BY, MANAGED_BY_VALUE};

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
/// Syntax of `spec.updateStrategy.maxUnavailable` when it is a string: a percentage 1%..100%.
pub const PERCENT_PATTERN: &str = r"^(100|[1-9][0-9]?)%$";

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
/// Syntax of a DNS-1123 label: lower case alphanumerics and `-`, alphanumeric at both ends.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Syntax of an environment variable name: printable ASCII other than `=` (Kubernetes ≥ 1.34;
/// older versions refuse more).
pub const ENV_NAME_PATTERN: &str = r"^[ -<>-~]+$";
/// Smallest value of a 32-bit integer field (`format: int32`; the Rust types hold `i32`).
pub const INT32_MIN: i64 = i32::MIN as i64;
/// Largest value of a 32-bit integer field, and of an int-or-string that is not a quantity.
pub const INT32_MAX: i64 = i32::MAX as i64;

/// `spec.selector` must have at least one requirement (an empty selector selects every Pod).
pub fn rule_selector_not_empty() -> Rule {
    Rule::new(
        "(has(self.matchLabels) && size(self.matchLabels) > 0) || \
         (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
    )
    .message(
        "spec.selector must not be empty: set at least one matchLabels or matchExpressions entry \
         (an empty selector would select every Pod in the namespace)",
    )
    .reason(Reason::FieldValueRequired)
}

/// `spec.selector` must not require `app.kubernetes.io/managed-by=sidecar-operator`, the label
/// of the operator's own sidecars.
pub fn rule_selector_not_managed_by_operator() -> Rule {
    let (mb, mbv) = (LABEL_MANAGED_BY, MANAGED_BY_VALUE);
    Rule::new(format!(
        "!(has(self.matchLabels) && '{mb}' in self.matchLabels && self.matchLabels['{mb}'] == '{mbv}') && \
         !(has(self.matchExpressions) && self.matchExpressions.exists(e, e.key == '{mb}' && \
         e.operator == 'In' && has(e.values) && '{mbv}' in e.values))"
    ))
    .message(Message::Message(format!(
        "spec.selector must not select sidecar Pods: remove the requirement {mb}={mbv}, \
         the label of the Pods this operator creates"
    )))
    .reason(Reason::FieldValueForbidden)
}

/// `spec.selector` must not require `sidecars.dev/` labels, which only sidecars carry
/// (`NotIn` and `DoesNotExist` on them are fine).
pub fn rule_selector_no_reserved_keys() -> Rule {
    let p = KEY_PREFIX;
    Rule::new(format!(
        "!(has(self.matchLabels) && self.matchLabels.exists(k, k.startsWith('{p}'))) && \
         !(has(self.matchExpressions) && self.matchExpressions.exists(e, e.key.startsWith('{p}') && \
         (e.operator == 'In' || e.operator == 'Exists')))"
    ))
    .message(Message::Message(format!(
        "spec.selector must not require {p} labels: only sidecar Pods carry them \
         (NotIn and DoesNotExist on them are allowed)"
    )))
    .reason(Reason::FieldValueForbidden)
}

/// The selector must not match the labels the sidecars themselves get: the template's labels
/// plus `app.kubernetes.io/managed-by=sidecar-operator`. Only provable matches are refused:
/// requirements on `sidecars.dev/` keys (whose sidecar values are unknown here) never count as
/// matching. Empty selectors are left to [`rule_selector_not_empty`].
pub fn rule_selector_excludes_own_sidecars() -> Rule {
    let (mb, mbv, p) = (LABEL_MANAGED_BY, MANAGED_BY_VALUE, KEY_PREFIX);
    let hl = "(has(self.template.metadata) && has(self.template.metadata.labels))";
    let l = "self.template.metadata.labels";
    let sel = "self.selector";
    // `e` is a matchExpressions entry; does the sidecar's label set satisfy it?
    let in_l = format!("({hl} && e.key in {l} && has(e.values) && {l}[e.key] in e.values)");
    let expr_matches = format!(
        "(e.operator == 'In' ? ((e.key == '{mb}' && has(e.values) && '{mbv}' in e.values) || {in_l}) : \
         e.operator == 'NotIn' ? (e.key == '{mb}' ? !(has(e.values) && '{mbv}' in e.values) : \
         (!e.key.startsWith('{p}') && !{in_l})) : \
         e.operator == 'Exists' ? (e.key == '{mb}' || ({hl} && e.key in {l})) : \
         (e.key != '{mb}' && !e.key.startsWith('{p}') && !({hl} && e.key in {l})))"
    );
    let labels_match = format!(
        "(!has({sel}.matchLabels) || {sel}.matchLabels.all(k, (k == '{mb}' && {sel}.matchLabels[k] == '{mbv}') || \
         ({hl} && k in {l} && {l}[k] == {sel}.matchLabels[k])))"
    );
    let exprs_match =
        format!("(!has({sel}.matchExpressions) || {sel}.matchExpressions.all(e, {expr_matches}))");
    let empty = format!(
        "!((has({sel}.matchLabels) && size({sel}.matchLabels) > 0) || \
         (has({sel}.matchExpressions) && size({sel}.matchExpressions) > 0))"
    );
    Rule::new(format!("{empty} || !({labels_match} && {exprs_match})"))
        .message(Message::Message(format!(
            "spec.selector also matches the sidecar Pods of this policy (their labels are \
             spec.template.metadata.labels plus {mb}={mbv}): make the selector require a label \
             the template does not set, or change the template's labels"
        )))
        .field_path(".selector")
        .reason(Reason::FieldValueForbidden)
}

/// `spec.template.spec.nodeName` pins a Pod to a node, which contradicts placement `SameNode`.
pub fn rule_node_name_needs_any_placement() -> Rule {
    Rule::new(
        "!(has(self.template.spec) && has(self.template.spec.nodeName)) || \
         (has(self.placement) && self.placement == 'Any')",
    )
    .message(
        "spec.template.spec.nodeName can only be set with spec.placement Any: with SameNode the \
         operator places each sidecar on its main Pod's node",
    )
    .field_path(".template.spec.nodeName")
    .reason(Reason::FieldValueForbidden)
}

/// `spec.updateStrategy.maxUnavailable`: a positive integer or a percentage 1%..100%.
pub fn rule_max_unavailable() -> Rule {
    Rule::new(format!(
        "type(self) == int ? self > 0 : self.matches('{PERCENT_PATTERN}')"
    ))
    .message(
        "spec.updateStrategy.maxUnavailable must be a positive integer or a percentage between \
         1% and 100%, for example 1 or \"25%\"",
    )
}

/// Rules on `spec.template.metadata`: fields the operator sets itself must stay unset.
pub(crate) fn template_metadata_rules() -> Vec<Rule> {
    let forbid = |field: &str, why: &str| {
        Rule::new(format!("!has(self.{field})"))
            .message(Message::Message(format!(
                "spec.template.metadata.{field} must not be set: {why}"
            )))
            .field_path(format!(".{field}"))
            .reason(Reason::FieldValueForbidden)
    };
    let (mb, p) = (LABEL_MANAGED_BY, KEY_PREFIX);
    vec![
        forbid(
            "name",
            "the operator names each sidecar <main-pod>-<policy>",
        ),
        forbid(
            "generateName",
            "the operator names each sidecar <main-pod>-<policy>",
        ),
        forbid(
            "namespace",
            "sidecars are created in their main Pod's namespace",
        ),
        forbid(
            "ownerReferences",
            "the operator makes the main Pod the sidecar's only owner",
        ),
        Rule::new(format!(
            "!has(self.labels) || !self.labels.exists(k, k == '{mb}' || k.startsWith('{p}'))"
        ))
        .message(Message::Message(format!(
            "spec.template.metadata.labels must not set {mb} or {p} labels: the operator sets them \
             on every sidecar"
        )))
        .field_path(".labels")
        .reason(Reason::FieldValueForbidden),
    ]
}

/// Rule on each `spec.selector.matchExpressions` entry: `values` matches the operator.
pub(crate) fn match_expression_rule() -> Rule {
    Rule::new(
        "(self.operator == 'In' || self.operator == 'NotIn') ? (has(self.values) && size(self.values) > 0) \
         : (!has(self.values) || size(self.values) == 0)",
    )
    .message(
        "spec.selector.matchExpressions[].values must be non-empty when operator is In or NotIn, \
         and empty when operator is Exists or DoesNotExist",
    )
    .field_path(".values")
}

/// A name that must be a DNS-1123 label (`field` names it in the message, for example
/// `spec.template.spec.containers[].name`); placed on the string itself.
pub fn rule_dns_label(field: &str) -> Rule {
    Rule::new(format!("self.matches('{DNS_LABEL_PATTERN}')")).message(Message::Message(format!(
        "{field} must be a DNS-1123 label: lower case letters, digits and '-', starting and \
         ending with a letter or digit, at most {MAX_DNS_LABEL_LENGTH} characters (for example \
         \"log-shipper\")"
    )))
}

/// A container of `list` (`spec.template.spec.containers`) must name its image.
pub fn rule_image_required(list: &str) -> Rule {
    Rule::new("has(self.image) && size(self.image) > 0")
        .message(Message::Message(format!(
            "{list}[].image must be set: the container image to run, for example \
             \"busybox:1.36\""
        )))
        .field_path(".image")
        .reason(Reason::FieldValueRequired)
}

/// Container names are unique across `containers` and `initContainers` (on the Pod spec).
pub fn rule_container_names_unique() -> Rule {
    Rule::new(
        "self.containers.all(c, self.containers.exists_one(d, d.name == c.name)) && \
         (!has(self.initContainers) || self.initContainers.all(c, \
         self.initContainers.exists_one(d, d.name == c.name) && \
         !self.containers.exists(d, d.name == c.name)))",
    )
    .message(
        "spec.template.spec.containers[].name and spec.template.spec.initContainers[].name must \
         be unique: two containers of the Pod have the same name",
    )
}

/// Ephemeral containers cannot be part of a Pod when it is created (on the Pod spec).
pub fn rule_no_ephemeral_containers() -> Rule {
    Rule::new("!has(self.ephemeralContainers) || size(self.ephemeralContainers) == 0")
        .message(
            "spec.template.spec.ephemeralContainers must not be set: the API server refuses a Pod \
             created with ephemeral containers (add them to a running Pod with kubectl debug)",
        )
        .field_path(".ephemeralContainers")
        .reason(Reason::FieldValueForbidden)
}

/// Volume names are unique (on the Pod spec).
pub fn rule_volume_names_unique() -> Rule {
    Rule::new(
        "!has(self.volumes) || self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))",
    )
    .message("spec.template.spec.volumes[].name must be unique: two volumes have the same name")
    .field_path(".volumes")
}

/// Every volume mount of every container names a volume of the Pod (on the Pod spec).
pub fn rule_volume_mounts_declared() -> Rule {
    let mounts_ok = "!has(c.volumeMounts) || c.volumeMounts.all(m, has(self.volumes) && \
                     self.volumes.exists(v, v.name == m.name))";
    Rule::new(format!(
        "self.containers.all(c, {mounts_ok}) && \
         (!has(self.initContainers) || self.initContainers.all(c, {mounts_ok}))"
    ))
    .message(
        "spec.template.spec.containers[].volumeMounts[].name and \
         spec.template.spec.initContainers[].volumeMounts[].name must be the name of a volume in \
         spec.template.spec.volumes",
    )
}

/// An init container without `restartPolicy: Always` (a native sidecar) runs to completion
/// and may have no lifecycle hooks or probes (on each init container).
pub fn rule_init_container_probes_need_restart_always() -> Rule {
    Rule::new(
        "(has(self.restartPolicy) && self.restartPolicy == 'Always') || \
         (!has(self.lifecycle) && !has(self.livenessProbe) && !has(self.readinessProbe) && \
         !has(self.startupProbe))",
    )
    .message(
        "spec.template.spec.initContainers[]: lifecycle, livenessProbe, readinessProbe and \
         startupProbe may only be set with restartPolicy Always (a native sidecar container)",
    )
    .reason(Reason::FieldValueForbidden)
}

/// A port name is an IANA service name (on the name string of each port of `list`).
pub fn rule_port_name(list: &str) -> Rule {
    Rule::new(format!(
        "size(self) == 0 || (self.matches('{DNS_LABEL_PATTERN}') && self.matches('[a-z]') && \
         !self.contains('--'))"
    ))
    .message(Message::Message(format!(
        "{list}[].ports[].name must be an IANA service name: at most {MAX_PORT_NAME_LENGTH} lower \
         case letters, digits and '-', with at least one letter, no '--', starting and ending \
         with a letter or digit (for example \"http\")"
    )))
}

/// Port names are unique within a container (on each container of `list`).
pub fn rule_port_names_unique(list: &str) -> Rule {
    Rule::new(
        "!has(self.ports) || self.ports.all(p, !has(p.name) || size(p.name) == 0 || \
         self.ports.exists_one(q, has(q.name) && q.name == p.name))",
    )
    .message(Message::Message(format!(
        "{list}[].ports[].name must be unique within a container"
    )))
    .field_path(".ports")
}

/// An environment variable name (on the name string of each variable of `list`).
pub fn rule_env_name(list: &str) -> Rule {
    Rule::new(format!("self.matches('{ENV_NAME_PATTERN}')")).message(Message::Message(format!(
        "{list}[].env[].name must be an environment variable name: printable ASCII characters \
         other than '=' (for example \"LOG_LEVEL\")"
    )))
}

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
        add_rule(item, match_expression_rule());
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

/// Schemars transform for `spec.template`: `spec` and at least one container required, bounds on
/// containers and labels, and rules forbidding metadata fields the operator sets itself.
pub fn harden_template(schema: &mut Schema) {
    push_required(schema.ensure_object(), "spec");
    if let Some(meta) = schema.pointer_mut("/properties/metadata") {
        for rule in template_metadata_rules() {
            add_rule(meta, rule);
        }
        if let Some(labels) = at(meta, &["properties", "labels"]) {
            set(labels, "maxProperties", MAX_TEMPLATE_LABELS.into());
        }
    }
    if let Some(containers) = schema.pointer_mut("/properties/spec/properties/containers") {
        set(containers, "minItems", 1.into());
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
    if let Some(object) = pod_spec.as_object_mut() {
        push_required(object, "containers");
    }
    for rule in [
        rule_container_names_unique(),
        rule_no_ephemeral_containers(),
        rule_volume_names_unique(),
        rule_volume_mounts_declared(),
    ] {
        add_rule(pod_spec, rule);
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
            add_rule(name, rule_dns_label("spec.template.spec.volumes[].name"));
        }
    }
}

fn harden_container(container: &mut Value, list: &str, init: bool) {
    add_rule(container, rule_image_required(list));
    add_rule(container, rule_port_names_unique(list));
    if init {
        add_rule(container, rule_init_container_probes_need_restart_always());
    }
    let Some(props) = container.get_mut("properties") else {
        return;
    };
    if let Some(name) = props.get_mut("name") {
        set(name, "maxLength", MAX_DNS_LABEL_LENGTH.into());
        add_rule(name, rule_dns_label(&format!("{list}[].name")));
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
                add_rule(name, rule_port_name(list));
            }
            if let Some(protocol) = port.get_mut("protocol") {
                set_enum(protocol, &["TCP", "UDP", "SCTP", ""]);
            }
            if let Some(host_port) = port.get_mut("hostPort") {
                // 0 means no host port.
                set(host_port, "minimum", 0.into());
                set(host_port, "maximum", 65535.into());
            }
            if let Some(container_port) = port.get_mut("containerPort") {
                set(container_port, "minimum", 1.into());
                set(container_port, "maximum", 65535.into());
            }
        }
    }
    if let Some(env) = props.get_mut("env") {
        set(env, "maxItems", MAX_ENV.into());
        if let Some(name) = at(env, &["items", "properties", "name"]) {
            set(name, "maxLength", MAX_ENV_NAME_LENGTH.into());
            add_rule(name, rule_env_name(list));
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
        set(port, "minimum", 1.into());
        set(port, "maximum", 65535.into());
    }
    for (key, child) in object.iter_mut() {
        match key.as_str() {
            "properties" => child
                .as_object_mut()
                .into_iter()
                .flat_map(|p| p.values_mut())
                .for_each(bound_ports),
            "items" | "additionalProperties" => bound_ports(child),
            _ => {}
        }
    }
}

/// Bounds every 32-bit integer below `value` (`format: int32`) to the 32-bit range, unless it has
/// bounds already, so that the API server refuses values the Rust types (`i32`) cannot read
/// back, naming the field. (Kubernetes 1.36 checks `format: int32` itself, but its message
/// names no field: `<nil>: Invalid value: "": Checked value must be of type integer with format
/// int32 in ...`; a validator that ignores the format would store the value.) The int-or-strings that are `IntOrString` (holding an `i32`)
/// are the ports, bounded by [`harden_template`], and `spec.updateStrategy.maxUnavailable`,
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
    for (key, child) in object.iter_mut() {
        match key.as_str() {
            "properties" => child
                .as_object_mut()
                .into_iter()
                .flat_map(|p| p.values_mut())
                .for_each(bound_int32),
            "items" | "additionalProperties" => bound_int32(child),
            _ => {}
        }
    }
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
