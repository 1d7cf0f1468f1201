//! Every CEL validation rule of the CRD (`x-kubernetes-validations`), each declared once as a
//! [`Def`]: its CEL expression, its message, its `fieldPath` and `reason`, and the Rust
//! predicate that mirrors it offline.
//!
//! [`crate::schema`] and [`crate::types`] place the rules in the generated schema with
//! [`Def::rule`]; [`mod@crate::validate`] evaluates a rule it meets in the installed schema with
//! the [`Def::holds`] of the definition with the same CEL text ([`find`]). A rule therefore
//! cannot change without its mirror: they are one value.
//!
//! - [`selector`]: rules on `spec`, `spec.selector` and `spec.updateStrategy`;
//! - [`mode`]: rules on `spec` that depend on `spec.mode` (what each mode's template must have,
//!   what Container mode refuses);
//! - [`template`]: rules on `spec.template` (its metadata, the Pod spec, containers, ports,
//!   environment variables and volumes);
//! - `json`: the CEL operations the mirrors use (`has`, `size`, `matches`…) on JSON values.

use std::collections::HashMap;
use std::sync::OnceLock;

use kube_core::{Message, Reason, Rule};
use serde_json::Value;

mod json;
pub mod mode;
pub mod selector;
pub mod template;

pub use selector::percent;

/// One CEL rule of the CRD with its offline mirror.
#[derive(Debug)]
pub struct Def {
    /// The CEL expression; `self` is the value the rule sits on.
    pub cel: fn() -> String,
    /// The message the API server returns when the rule fails. Its argument names the place of
    /// the rule, for rules that sit at several places (containers and init containers) and
    /// name it; the other rules ignore it.
    pub message: fn(&str) -> String,
    /// `fieldPath`: the field the error is reported on, relative to the value the rule sits on.
    pub field_path: Option<&'static str>,
    /// `reason`: the kind of error reported (the API server's default is `FieldValueInvalid`).
    pub reason: Option<Reason>,
    /// The mirror: `true` when the rule holds for `self`, a JSON value after the API server's
    /// null pruning and defaulting (so a present key is what CEL's `has()` sees).
    pub holds: fn(&Value) -> bool,
}

impl Def {
    /// The rule as placed in the schema, for a rule whose message names no place.
    pub fn rule(&self) -> Rule {
        self.rule_at("")
    }

    /// The rule as placed in the schema; `at` names its place in the message, for the rules
    /// whose message does (see [`Def::message`]).
    pub fn rule_at(&self, at: &str) -> Rule {
        let mut rule = Rule::new((self.cel)()).message(Message::Message((self.message)(at)));
        if let Some(path) = self.field_path {
            rule = rule.field_path(path);
        }
        if let Some(reason) = &self.reason {
            rule = rule.reason(reason.clone());
        }
        rule
    }
}

/// Every rule of the CRD.
pub fn all() -> impl Iterator<Item = &'static Def> {
    let selector: [&'static Def; 8] = [
        &selector::SELECTOR_EXCLUDES_OWN_SIDECARS,
        &selector::NAMESPACE_SELECTOR_NOT_EMPTY,
        &selector::NODE_NAME_NEEDS_ANY_PLACEMENT,
        &selector::SELECTOR_NOT_EMPTY,
        &selector::SELECTOR_NOT_MANAGED_BY_OPERATOR,
        &selector::SELECTOR_NO_RESERVED_KEYS,
        &selector::MATCH_EXPRESSION_VALUES,
        &selector::MAX_UNAVAILABLE,
    ];
    let containers: [&'static Def; 6] = [
        &template::IMAGE_REQUIRED,
        &template::PORT_NAMES_UNIQUE,
        &template::INIT_CONTAINER_PROBES_NEED_RESTART_ALWAYS,
        &template::DNS_LABEL,
        &template::PORT_NAME,
        &template::ENV_NAME,
    ];
    selector
        .into_iter()
        .chain(mode::ON_SPEC)
        .chain(template::ON_METADATA)
        .chain(template::ON_POD_SPEC)
        .chain(containers)
}

/// The definition whose CEL expression is `cel`, if any.
pub fn find(cel: &str) -> Option<&'static Def> {
    static BY_CEL: OnceLock<HashMap<String, &'static Def>> = OnceLock::new();
    BY_CEL
        .get_or_init(|| all().map(|def| ((def.cel)(), def)).collect())
        .get(cel)
        .copied()
}
