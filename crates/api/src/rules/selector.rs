//! Rules on `spec` as a whole, on `spec.selector` and on `spec.updateStrategy`.

use kube_core::Reason;
use serde_json::Value;

use super::Def;
use super::json::{has, list_contains, matches, size, str_at};
use super::mode::{IN_CONTAINER_MODE, in_container_mode};
use crate::constants::{KEY_PREFIX, LABEL_MANAGED_BY, MANAGED_BY_VALUE};

/// Syntax of `spec.updateStrategy.maxUnavailable` when it is a string: a percentage 1%..100%.
const PERCENT_PATTERN: &str = r"^(100|[1-9][0-9]?)%$";

/// On `spec.selector`: at least one requirement (an empty selector selects every Pod).
pub const SELECTOR_NOT_EMPTY: Def = Def {
    cel: || {
        "(has(self.matchLabels) && size(self.matchLabels) > 0) || \
         (has(self.matchExpressions) && size(self.matchExpressions) > 0)"
            .to_owned()
    },
    message: |_| {
        "spec.selector must not be empty: set at least one matchLabels or matchExpressions entry \
         (an empty selector would select every Pod in the namespace)"
            .to_owned()
    },
    field_path: None,
    reason: Some(Reason::FieldValueRequired),
    holds: |selector| !selector_is_empty(selector),
};

/// On a ClusterSidecarPolicy's `spec.namespaceSelector`: at least one requirement (an empty
/// selector matches every namespace).
pub const NAMESPACE_SELECTOR_NOT_EMPTY: Def = Def {
    // The same test as SELECTOR_NOT_EMPTY's, written the other way round: each rule's CEL is
    // its identity (`rules::find`).
    cel: || {
        "(has(self.matchExpressions) && size(self.matchExpressions) > 0) || \
         (has(self.matchLabels) && size(self.matchLabels) > 0)"
            .to_owned()
    },
    message: |_| {
        "spec.namespaceSelector must not be empty: set at least one matchLabels or \
         matchExpressions entry, for example matchLabels {team: payments} (an empty selector \
         would apply the policy in every namespace)"
            .to_owned()
    },
    field_path: None,
    reason: Some(Reason::FieldValueRequired),
    holds: |selector| !selector_is_empty(selector),
};

/// On `spec.selector`: no requirement `app.kubernetes.io/managed-by=sidecar-operator`, the
/// label of the operator's own sidecars.
pub const SELECTOR_NOT_MANAGED_BY_OPERATOR: Def = Def {
    cel: || {
        let (mb, mbv) = (LABEL_MANAGED_BY, MANAGED_BY_VALUE);
        format!(
            "!(has(self.matchLabels) && '{mb}' in self.matchLabels && self.matchLabels['{mb}'] == '{mbv}') && \
             !(has(self.matchExpressions) && self.matchExpressions.exists(e, e.key == '{mb}' && \
             e.operator == 'In' && has(e.values) && '{mbv}' in e.values))"
        )
    },
    message: |_| {
        format!(
            "spec.selector must not select sidecar Pods: remove the requirement \
             {LABEL_MANAGED_BY}={MANAGED_BY_VALUE}, the label of the Pods this operator creates"
        )
    },
    field_path: None,
    reason: Some(Reason::FieldValueForbidden),
    holds: selector_not_managed_by_operator,
};

fn selector_not_managed_by_operator(selector: &Value) -> bool {
    let by_label = match_labels(selector)
        .any(|(k, v)| k == LABEL_MANAGED_BY && v.as_str() == Some(MANAGED_BY_VALUE));
    let by_expression = expressions(selector).any(|e| {
        str_at(e, "key") == LABEL_MANAGED_BY
            && str_at(e, "operator") == "In"
            && list_contains(e, "values", MANAGED_BY_VALUE)
    });
    !by_label && !by_expression
}

/// On `spec.selector`: no requirement on `sidecars.dev/` labels, which only sidecars carry
/// (`NotIn` and `DoesNotExist` on them are fine).
pub const SELECTOR_NO_RESERVED_KEYS: Def = Def {
    cel: || {
        let p = KEY_PREFIX;
        format!(
            "!(has(self.matchLabels) && self.matchLabels.exists(k, k.startsWith('{p}'))) && \
             !(has(self.matchExpressions) && self.matchExpressions.exists(e, e.key.startsWith('{p}') && \
             (e.operator == 'In' || e.operator == 'Exists')))"
        )
    },
    message: |_| {
        format!(
            "spec.selector must not require {KEY_PREFIX} labels: only sidecar Pods carry them \
             (NotIn and DoesNotExist on them are allowed)"
        )
    },
    field_path: None,
    reason: Some(Reason::FieldValueForbidden),
    holds: |selector| {
        let by_label = match_labels(selector).any(|(k, _)| k.starts_with(KEY_PREFIX));
        let by_expression = expressions(selector).any(|e| {
            str_at(e, "key").starts_with(KEY_PREFIX)
                && matches!(str_at(e, "operator"), "In" | "Exists")
        });
        !by_label && !by_expression
    },
};

/// On `spec`: the selector must not match the labels the sidecars themselves get: the
/// template's labels plus `app.kubernetes.io/managed-by=sidecar-operator`. Only provable matches
/// are refused: requirements on `sidecars.dev/` keys (whose sidecar values are unknown here)
/// never count as matching. Empty selectors are left to [`SELECTOR_NOT_EMPTY`]. Pod mode only:
/// in Container mode there are no sidecar Pods, and the template's labels go on the selected
/// Pods themselves.
pub const SELECTOR_EXCLUDES_OWN_SIDECARS: Def = Def {
    cel: excludes_own_sidecars_cel,
    message: |_| {
        format!(
            "spec.selector also matches the sidecar Pods of this policy (their labels are \
             spec.template.metadata.labels plus {LABEL_MANAGED_BY}={MANAGED_BY_VALUE}): make the \
             selector require a label the template does not set, or change the template's labels"
        )
    },
    field_path: Some(".selector"),
    reason: Some(Reason::FieldValueForbidden),
    holds: selector_excludes_own_sidecars,
};

fn excludes_own_sidecars_cel() -> String {
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
    format!("{IN_CONTAINER_MODE} || {empty} || !({labels_match} && {exprs_match})")
}

fn selector_excludes_own_sidecars(spec: &Value) -> bool {
    if in_container_mode(spec) {
        return true;
    }
    let Some(selector) = spec.get("selector") else {
        return true;
    };
    if selector_is_empty(selector) {
        return true;
    }
    let labels = spec
        .pointer("/template/metadata/labels")
        .and_then(Value::as_object);
    let label = |k: &str| labels.and_then(|l| l.get(k));
    let labels_match = match_labels(selector).all(|(k, v)| {
        (k == LABEL_MANAGED_BY && v.as_str() == Some(MANAGED_BY_VALUE))
            || label(k).is_some_and(|lv| lv == v)
    });
    let expression_matches = |e: &Value| {
        let key = str_at(e, "key");
        let in_labels = label(key)
            .and_then(Value::as_str)
            .is_some_and(|lv| list_contains(e, "values", lv));
        match str_at(e, "operator") {
            "In" => {
                (key == LABEL_MANAGED_BY && list_contains(e, "values", MANAGED_BY_VALUE))
                    || in_labels
            }
            "NotIn" if key == LABEL_MANAGED_BY => !list_contains(e, "values", MANAGED_BY_VALUE),
            "NotIn" => !key.starts_with(KEY_PREFIX) && !in_labels,
            "Exists" => key == LABEL_MANAGED_BY || label(key).is_some(),
            // DoesNotExist (and, as in the CEL rule, anything else).
            _ => key != LABEL_MANAGED_BY && !key.starts_with(KEY_PREFIX) && label(key).is_none(),
        }
    };
    let expressions_match = expressions(selector).all(expression_matches);
    !(labels_match && expressions_match)
}

/// On `spec`, Pod mode: `spec.template.spec.nodeName` pins a Pod to a node, which contradicts
/// placement `SameNode`. (Container mode refuses `nodeName` whatever the placement.)
pub const NODE_NAME_NEEDS_ANY_PLACEMENT: Def = Def {
    cel: || {
        format!(
            "{IN_CONTAINER_MODE} || !(has(self.template.spec) && has(self.template.spec.nodeName)) || \
             (has(self.placement) && self.placement == 'Any')"
        )
    },
    message: |_| {
        "spec.template.spec.nodeName can only be set with spec.placement Any: with SameNode the \
         operator places each sidecar on its main Pod's node"
            .to_owned()
    },
    field_path: Some(".template.spec.nodeName"),
    reason: Some(Reason::FieldValueForbidden),
    holds: |spec| {
        let node_name = spec
            .pointer("/template/spec/nodeName")
            .is_some_and(|n| !n.is_null());
        in_container_mode(spec) || !node_name || str_at(spec, "placement") == "Any"
    },
};

/// On each `spec.selector.matchExpressions` entry: `values` matches the operator.
pub const MATCH_EXPRESSION_VALUES: Def = Def {
    cel: || {
        "(self.operator == 'In' || self.operator == 'NotIn') ? (has(self.values) && size(self.values) > 0) \
         : (!has(self.values) || size(self.values) == 0)"
            .to_owned()
    },
    message: |_| {
        "spec.selector.matchExpressions[].values must be non-empty when operator is In or NotIn, \
         and empty when operator is Exists or DoesNotExist"
            .to_owned()
    },
    field_path: Some(".values"),
    reason: None,
    holds: |expression| {
        let values = size(expression.get("values"));
        match str_at(expression, "operator") {
            "In" | "NotIn" => has(expression, "values") && values > 0,
            _ => values == 0,
        }
    },
};

/// On `spec.updateStrategy.maxUnavailable`: a positive integer or a percentage 1%..100%.
pub const MAX_UNAVAILABLE: Def = Def {
    cel: || format!("type(self) == int ? self > 0 : self.matches('{PERCENT_PATTERN}')"),
    message: |_| {
        "spec.updateStrategy.maxUnavailable must be a positive integer or a percentage between \
         1% and 100%, for example 1 or \"25%\""
            .to_owned()
    },
    field_path: None,
    reason: None,
    holds: |value| match value {
        Value::Number(n) => n.as_i64().map_or(n.as_u64().is_some(), |n| n > 0),
        Value::String(s) => percent(s).is_some(),
        _ => false,
    },
};

/// The percentage a `maxUnavailable` string stands for, when [`MAX_UNAVAILABLE`] accepts it:
/// `"1%"`..=`"100%"`, without sign, spaces, fraction or leading zero.
pub fn percent(s: &str) -> Option<u32> {
    if !matches(PERCENT_PATTERN, s) {
        return None;
    }
    s.strip_suffix('%')?.parse().ok()
}

fn match_labels(selector: &Value) -> impl Iterator<Item = (&String, &Value)> {
    selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

fn expressions(selector: &Value) -> impl Iterator<Item = &Value> {
    super::json::items(selector, "matchExpressions").iter()
}

fn selector_is_empty(selector: &Value) -> bool {
    size(selector.get("matchLabels")) == 0 && size(selector.get("matchExpressions")) == 0
}
