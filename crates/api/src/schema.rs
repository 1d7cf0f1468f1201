//! Admission-time validation of `SidecarPolicy`: CEL rules (`x-kubernetes-validations`) and the
//! structural bounds (`maxItems`, `maxLength`, `maxProperties`, `enum`, `minItems`) that keep
//! the rules' estimated cost within the API server's budget.
//!
//! Rules on our own fields are attached in [`crate::types`] with `#[x_kube(validation = ..)]`;
//! rules and bounds inside the upstream `LabelSelector` and `PodTemplateSpec` schemas are added
//! by the `harden_*` schemars transforms below (we cannot annotate upstream types). Every rule
//! message names the field it is about, so `kubectl apply` tells the user what to fix.
//!
//! The API server evaluates these rules: the unit tests here only check that the rules and
//! bounds land at the right places in the generated CRD; the e2e test `tests/e2e/api.rs` proves
//! every `tests/bad-policies/*.yaml` is rejected with its message. For offline checks
//! (`sidecar-operator check`), [`mod@crate::validate`] mirrors each rule in Rust, looked up by its
//! exact CEL text: changing a rule here means changing its mirror there (a unit test fails
//! otherwise).

use kube::core::{Message, Reason, Rule};
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

/// Schemars transform for `spec.selector`: bounds, operator enum and label value syntax.
pub fn harden_selector(schema: &mut Schema) {
    let mut label_value = json!({ "type": "string" });
    set(&mut label_value, "maxLength", MAX_LABEL_VALUE_LENGTH.into());
    set(&mut label_value, "pattern", LABEL_VALUE_PATTERN.into());
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
    if let Some(pod_spec) = schema
        .pointer_mut("/properties/spec")
        .and_then(Value::as_object_mut)
    {
        push_required(pod_spec, "containers");
    }
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
