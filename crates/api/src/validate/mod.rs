//! Offline validation of `SidecarPolicy` objects: what the API server checks at admission,
//! without a cluster (used by `sidecar-operator check`, and by the operator on every policy it
//! reads: a spec stored under an older, laxer CRD selects nothing).
//!
//! The API server validates a custom resource in this order, and so does this module:
//!
//! 1. fields the schema does not declare are unknown (an error under `kubectl`'s default
//!    strict field validation; otherwise they are dropped), and `null`s of non-nullable fields
//!    are dropped;
//! 2. schema defaults are applied;
//! 3. the structural schema of the generated CRD is checked: `type`, `required`, `enum`,
//!    `pattern`, `minLength`/`maxLength`, `minItems`/`maxItems`, `maxProperties`,
//!    `minimum`/`maximum`;
//! 4. unless step 3 found a *blocking* error (unsupported value, missing required field, too
//!    long, too many, wrong type), the CEL rules (`x-kubernetes-validations`) run.
//!
//! Steps 1–3 walk the very schema that [`crate::crd()`] installs, so the upstream
//! `PodTemplateSpec` schema is covered too. For step 4 no Rust CEL evaluator handles these rules
//! faithfully (kube's `cel` feature, backed by `kube-cel` 0.8, rejects `type(self) == int` and
//! does not see `self.namespace` on template metadata), so each rule of the installed schema is
//! evaluated by the Rust mirror declared with it in the crate's `rules` module, found by the rule's exact
//! CEL text, and the installed rule's own message, reason and fieldPath are reported. A rule
//! without a mirror fails the unit tests, and at run time yields an [`FieldErrorKind::Internal`]
//! error rather than a silent pass.
//!
//! The parts: `metadata` checks the policy's own `metadata`, `normalize` does steps 1 and 2,
//! `walker` steps 3 and 4.
//!
//! Messages follow the API server's format (`<field>: <type>: <value>: <detail>`), so the
//! fragments of `tests/bad-policies/*.yaml` (`# expect:` lines, the real server's words) are
//! found in them.
//!
//! Not mirrored: `metadata` beyond the presence and syntax of `metadata.name` (the server also
//! checks label and annotation syntax there), `format` keywords (the template's `date-time`
//! fields), the CEL cost budget, and anything admission webhooks or policies of a particular
//! cluster add.

use std::fmt;
use std::sync::OnceLock;

use serde_json::Value;

use crate::constants::{GROUP, VERSION};
use crate::types::SidecarPolicySpec;

mod metadata;
mod normalize;
mod walker;

use metadata::validate_metadata;
use normalize::normalize;
use walker::Walker;

/// What kind of problem a [`FieldError`] is (the API server's `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing (`Required value`).
    Required,
    /// The value is malformed or out of range (`Invalid value`).
    Invalid,
    /// The value has the wrong JSON type (`Invalid value`, blocking).
    TypeInvalid,
    /// The value is not one of the allowed ones (`Unsupported value`).
    NotSupported,
    /// The value is well-formed but not allowed here (`Forbidden`).
    Forbidden,
    /// A string is longer than allowed (`Too long`).
    TooLong,
    /// A list or map has more entries than allowed (`Too many`).
    TooMany,
    /// The field is not declared in the schema (`unknown field`).
    UnknownField,
    /// The check itself could not be performed (`Internal error`).
    Internal,
}

impl FieldErrorKind {
    /// The API server's words for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::UnknownField => "unknown field",
            FieldErrorKind::Internal => "Internal error",
        }
    }

    /// Errors after which the API server does not run the CEL rules.
    fn blocks_rules(self) -> bool {
        matches!(
            self,
            FieldErrorKind::NotSupported
                | FieldErrorKind::Required
                | FieldErrorKind::TooLong
                | FieldErrorKind::TooMany
                | FieldErrorKind::TypeInvalid
        )
    }
}

/// One validation failure, naming its field like the API server does
/// (`spec.selector.matchExpressions[0].operator`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// Path of the field, for example `spec.updateStrategy.maxUnavailable`; empty for the
    /// object as a whole.
    pub field: String,
    /// The offending value as the API server prints it (`"Anywhere"`, `33`), when it prints one.
    pub value: Option<String>,
    /// Explanation (for CEL rules: the rule's message).
    pub detail: String,
}

impl FieldError {
    fn new(kind: FieldErrorKind, field: &str, value: Option<String>, detail: String) -> Self {
        FieldError {
            kind,
            field: field.to_owned(),
            value,
            detail,
        }
    }
}

impl fmt::Display for FieldError {
    /// `<field>: <kind>[: <value>][: <detail>]`, as in the API server's responses, or
    /// `unknown field "<field>"` as in `kubectl`'s strict decoding errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == FieldErrorKind::UnknownField {
            return write!(f, "unknown field {}", quote(&self.field));
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(self.kind.as_str())?;
        if let Some(value) = &self.value {
            write!(f, ": {value}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

/// Detail of the error added when blocking errors keep the CEL rules from running (the API
/// server's wording).
pub const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object \
                                     was invalid; correct the existing errors to complete validation";

/// Validates a typed spec: the structural schema and the CEL rules of `spec`, after defaulting.
/// (Unknown fields and wrong types cannot occur in a typed value; use [`validate_object`] for
/// documents read from files.) Empty when the API server would accept the spec.
pub fn validate(spec: &SidecarPolicySpec) -> Vec<FieldError> {
    let Some(spec_schema) = spec_schema() else {
        return vec![schema_missing()];
    };
    match serde_json::to_value(spec) {
        Ok(value) => validate_at(spec_schema, value, "spec", false),
        Err(e) => vec![FieldError::new(
            FieldErrorKind::Internal,
            "spec",
            None,
            format!("cannot serialize the spec: {e}"),
        )],
    }
}

/// Validates a whole `SidecarPolicy` document (as parsed from YAML or JSON): `apiVersion`,
/// `kind`, `metadata.name`, unknown fields anywhere (strict), the structural schema and the CEL
/// rules. Empty when the API server would accept the object.
pub fn validate_object(object: &Value) -> Vec<FieldError> {
    let Some(root) = root_schema() else {
        return vec![schema_missing()];
    };
    let mut errors = Vec::new();
    let Some(map) = object.as_object() else {
        errors.push(type_error("", object, "object"));
        return errors;
    };
    let api_version = format!("{GROUP}/{VERSION}");
    match map.get("apiVersion") {
        Some(Value::String(v)) if *v == api_version => {}
        Some(v) => errors.push(FieldError::new(
            FieldErrorKind::NotSupported,
            "apiVersion",
            Some(render(v)),
            format!("supported values: {}", quote(&api_version)),
        )),
        None => errors.push(FieldError::new(
            FieldErrorKind::Required,
            "apiVersion",
            None,
            String::new(),
        )),
    }
    match map.get("kind") {
        Some(Value::String(k)) if k == crate::constants::KIND => {}
        Some(v) => errors.push(FieldError::new(
            FieldErrorKind::NotSupported,
            "kind",
            Some(render(v)),
            format!("supported values: {}", quote(crate::constants::KIND)),
        )),
        None => errors.push(FieldError::new(
            FieldErrorKind::Required,
            "kind",
            None,
            String::new(),
        )),
    }
    validate_metadata(map.get("metadata"), &mut errors);
    // The status subresource is enabled: the server drops `status` on create and update of
    // the main resource before validating.
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    errors.extend(validate_at(root, object, "", true));
    errors
}

fn schema_missing() -> FieldError {
    FieldError::new(
        FieldErrorKind::Internal,
        "",
        None,
        "the CRD has no openAPIV3Schema".to_owned(),
    )
}

/// The committed CRD, which a unit test keeps identical to [`crate::crd()`]'s output.
const CRD_YAML: &str = include_str!("../../../../crds/sidecarpolicies.sidecars.dev.yaml");

/// The `openAPIV3Schema` of the CRD, as JSON, parsed once.
///
/// Parsed from the committed YAML rather than built with [`crate::crd()`]: the operator
/// validates every policy it reads, and generating the schema (the whole upstream
/// `PodTemplateSpec`) left ≈ 9 MB in the process's heap for good, against ≈ 2.5 MB here.
fn root_schema() -> Option<&'static Value> {
    static ROOT: OnceLock<Option<Value>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut crd: Value = serde_yaml_ng::from_str(CRD_YAML).ok()?;
        crd.pointer_mut("/spec/versions/0/schema/openAPIV3Schema")
            .map(Value::take)
    })
    .as_ref()
}

fn spec_schema() -> Option<&'static Value> {
    root_schema()?.pointer("/properties/spec")
}

/// Steps 1–4 of the module documentation for `value` at `path` under `schema`.
fn validate_at(schema: &Value, mut value: Value, path: &str, root: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    normalize(schema, &mut value, path, root, &mut errors);
    let mut walker = Walker::default();
    walker.structure(schema, &value, path);
    errors.append(&mut walker.errors);
    if errors.iter().any(|e| e.kind.blocks_rules()) {
        errors.push(FieldError::new(
            FieldErrorKind::Invalid,
            "",
            None,
            RULES_NOT_CHECKED.to_owned(),
        ));
    } else {
        walker.rules(schema, &value, path);
        errors.append(&mut walker.errors);
    }
    errors
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The schema of field `key` of an object under `schema`: a declared property, or
/// `additionalProperties` when it is a schema.
fn field_schema<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema
        .get("properties")
        .and_then(|p| p.get(key))
        .or(schema.get("additionalProperties").filter(|a| a.is_object()))
}

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

/// A JSON value's type as the API server names it in type errors.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// A value as the API server prints it in an error: strings quoted, numbers and booleans as
/// they are, lists and objects by type.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        other => quote(json_type(other)),
    }
}

fn type_error(path: &str, value: &Value, expected: &str) -> FieldError {
    let actual = json_type(value);
    let subject = if path.is_empty() { "body" } else { path };
    FieldError::new(
        FieldErrorKind::TypeInvalid,
        path,
        Some(quote(actual)),
        format!(
            "{subject} in body must be of type {expected}: {}",
            quote(actual)
        ),
    )
}

/// A `minimum`/`maximum` as the server prints it for an integer value: without a fraction.
fn bound_text(bound: f64) -> String {
    if bound.fract() == 0.0 && bound.abs() < 9.0e15 {
        format!("{}", bound as i64)
    } else {
        bound.to_string()
    }
}

fn as_count(schema: &Value, key: &str) -> Option<usize> {
    schema
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

#[cfg(test)]
mod tests;
