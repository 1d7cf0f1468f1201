//! Offline validation of `SidecarPolicy` objects: what the API server checks at admission,
//! without a cluster (used by `sidecar-operator check`).
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
//! does not see `self.namespace` on template metadata), so each rule of [`crate::schema`] has a
//! hand-written mirror here. Mirrors are looked up by the rule's exact CEL text, and the rule's
//! own message, reason and fieldPath are reported: a rule whose text changes without its mirror
//! fails the unit tests, and at run time yields an [`FieldErrorKind::Internal`] error rather than
//! a silent pass.
//!
//! Messages follow the API server's format (`<field>: <type>: <value>: <detail>`), so the
//! fragments of `tests/bad-policies/*.yaml` (`# expect:` lines, the real server's words) are
//! found in them.
//!
//! Not mirrored: `metadata` beyond the presence and syntax of `metadata.name` (the server also
//! checks label and annotation syntax there), `format` keywords (the template's `date-time`
//! fields), the CEL cost budget, and anything admission webhooks or policies of a particular
//! cluster add.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use kube_core::Rule;
use regex::Regex;
use serde_json::{Map, Value};

use crate::constants::{GROUP, KEY_PREFIX, LABEL_MANAGED_BY, MANAGED_BY_VALUE, VERSION};
use crate::schema;
use crate::types::SidecarPolicySpec;

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
const CRD_YAML: &str = include_str!("../../../crds/sidecarpolicies.sidecars.dev.yaml");

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

/// `metadata` of the policy itself: the server requires a name (or generateName) that is a
/// DNS subdomain.
fn validate_metadata(metadata: Option<&Value>, errors: &mut Vec<FieldError>) {
    let meta = match metadata {
        None | Some(Value::Null) => &Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            errors.push(type_error("metadata", other, "object"));
            return;
        }
    };
    let has_generate_name = meta
        .get("generateName")
        .and_then(Value::as_str)
        .is_some_and(|g| !g.is_empty());
    match meta.get("name") {
        Some(Value::String(name)) if !name.is_empty() => {
            if let Some(problem) = dns_subdomain_problem(name) {
                errors.push(FieldError::new(
                    FieldErrorKind::Invalid,
                    "metadata.name",
                    Some(quote(name)),
                    problem,
                ));
            }
        }
        Some(Value::String(_)) | Some(Value::Null) | None if has_generate_name => {}
        Some(Value::String(_)) | Some(Value::Null) | None => errors.push(FieldError::new(
            FieldErrorKind::Required,
            "metadata.name",
            None,
            "name or generateName is required".to_owned(),
        )),
        Some(other) => errors.push(type_error("metadata.name", other, "string")),
    }
    if let Some(ns) = meta.get("namespace").filter(|v| !v.is_null()) {
        match ns.as_str() {
            Some(ns) if !ns.is_empty() && !is_dns_label(ns) => errors.push(FieldError::new(
                FieldErrorKind::Invalid,
                "metadata.namespace",
                Some(quote(ns)),
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
                 or '-', and must start and end with an alphanumeric character"
                    .to_owned(),
            )),
            Some(_) => {}
            None => errors.push(type_error("metadata.namespace", ns, "string")),
        }
    }
}

fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some("must be no more than 253 characters".to_owned());
    }
    if name.split('.').all(is_dns_label) {
        return None;
    }
    Some(
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
         or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
            .to_owned(),
    )
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
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

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Step 1 and 2: reports and drops unknown fields, drops `null`s of non-nullable fields, and
/// applies defaults, recursively.
fn normalize(schema: &Value, value: &mut Value, path: &str, root: bool, out: &mut Vec<FieldError>) {
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                let child_schema = properties
                    .and_then(|p| p.get(&key))
                    .or(additional.filter(|a| a.is_object()));
                match child_schema {
                    Some(child_schema) => {
                        if map.get(&key).is_some_and(Value::is_null) && !is_nullable(child_schema) {
                            map.remove(&key);
                        } else if let Some(child) = map.get_mut(&key) {
                            normalize(child_schema, child, &child_path, false, out);
                        }
                    }
                    None if root && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) => {}
                    None if preserves_unknown(schema)
                        || additional.and_then(Value::as_bool) == Some(true)
                        || (properties.is_none() && additional.is_none()) => {}
                    None => {
                        out.push(FieldError::new(
                            FieldErrorKind::UnknownField,
                            &child_path,
                            None,
                            String::new(),
                        ));
                        map.remove(&key);
                    }
                }
            }
            if let Some(properties) = properties {
                for (key, child_schema) in properties {
                    if map.contains_key(key) {
                        continue;
                    }
                    if let Some(default) = child_schema.get("default") {
                        let mut default = default.clone();
                        normalize(child_schema, &mut default, &join(path, key), false, out);
                        map.insert(key.clone(), default);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    normalize(item_schema, item, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
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

#[derive(Default)]
struct Walker {
    errors: Vec<FieldError>,
    patterns: HashMap<String, Option<Regex>>,
}

impl Walker {
    fn push(&mut self, kind: FieldErrorKind, path: &str, value: Option<String>, detail: String) {
        self.errors.push(FieldError::new(kind, path, value, detail));
    }

    /// Step 3: the structural schema.
    fn structure(&mut self, schema: &Value, value: &Value, path: &str) {
        if value.is_null() && is_nullable(schema) {
            return;
        }
        let int_or_string = schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true);
        let declared = schema.get("type").and_then(Value::as_str);
        let actual = json_type(value);
        let type_ok = if int_or_string {
            matches!(actual, "integer" | "string")
        } else {
            match declared {
                None => true,
                Some("number") => matches!(actual, "integer" | "number"),
                Some(t) => t == actual,
            }
        };
        if !type_ok {
            let expected = if int_or_string {
                "integer,string"
            } else {
                declared.unwrap_or_default()
            };
            self.errors.push(type_error(path, value, expected));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let supported: Vec<String> = allowed.iter().map(render).collect();
            self.push(
                FieldErrorKind::NotSupported,
                path,
                Some(render(value)),
                format!("supported values: {}", supported.join(", ")),
            );
        }
        match value {
            Value::String(s) => self.string(schema, s, path),
            Value::Number(n) => self.number(schema, n, path),
            Value::Array(items) => {
                if let Some(max) = as_count(schema, "maxItems")
                    && items.len() > max
                {
                    self.push(
                        FieldErrorKind::TooMany,
                        path,
                        Some(items.len().to_string()),
                        format!("must have at most {max} items"),
                    );
                }
                if let Some(min) = as_count(schema, "minItems")
                    && items.len() < min
                {
                    self.push(
                        FieldErrorKind::Invalid,
                        path,
                        Some(items.len().to_string()),
                        format!("{path} in body should have at least {min} items"),
                    );
                }
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.structure(item_schema, item, &format!("{path}[{i}]"));
                    }
                }
            }
            Value::Object(map) => {
                if let Some(max) = as_count(schema, "maxProperties")
                    && map.len() > max
                {
                    self.push(
                        FieldErrorKind::TooMany,
                        path,
                        Some(map.len().to_string()),
                        format!("must have at most {max} items"),
                    );
                }
                if let Some(required) = schema.get("required").and_then(Value::as_array) {
                    for field in required.iter().filter_map(Value::as_str) {
                        if !map.contains_key(field) {
                            self.push(
                                FieldErrorKind::Required,
                                &join(path, field),
                                None,
                                String::new(),
                            );
                        }
                    }
                }
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                for (key, child) in map {
                    if let Some(child_schema) = properties.and_then(|p| p.get(key)).or(additional) {
                        self.structure(child_schema, child, &join(path, key));
                    }
                }
            }
            _ => {}
        }
    }

    /// `minimum` and `maximum` (inclusive), checked on numbers whatever the declared type, as
    /// the server does (an int-or-string's number too).
    fn number(&mut self, schema: &Value, n: &serde_json::Number, path: &str) {
        let Some(x) = n.as_f64() else {
            return;
        };
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && x > max
        {
            self.push(
                FieldErrorKind::Invalid,
                path,
                Some(n.to_string()),
                format!(
                    "{path} in body should be less than or equal to {}",
                    bound_text(max)
                ),
            );
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && x < min
        {
            self.push(
                FieldErrorKind::Invalid,
                path,
                Some(n.to_string()),
                format!(
                    "{path} in body should be greater than or equal to {}",
                    bound_text(min)
                ),
            );
        }
    }

    fn string(&mut self, schema: &Value, s: &str, path: &str) {
        let chars = s.chars().count();
        if let Some(max) = as_count(schema, "maxLength")
            && chars > max
        {
            self.push(
                FieldErrorKind::TooLong,
                path,
                None,
                format!("may not be more than {max} bytes"),
            );
        }
        if let Some(min) = as_count(schema, "minLength")
            && chars < min
        {
            self.push(
                FieldErrorKind::Invalid,
                path,
                Some(quote(s)),
                format!("{path} in body should be at least {min} chars long"),
            );
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let regex = self
                .patterns
                .entry(pattern.to_owned())
                .or_insert_with(|| Regex::new(pattern).ok());
            match regex {
                Some(re) if re.is_match(s) => {}
                Some(_) => self.push(
                    FieldErrorKind::Invalid,
                    path,
                    Some(quote(s)),
                    format!("{path} in body should match '{pattern}'"),
                ),
                None => self.push(
                    FieldErrorKind::Internal,
                    path,
                    None,
                    format!("pattern '{pattern}' cannot be compiled offline"),
                ),
            }
        }
    }

    /// Step 4: the CEL rules, through their mirrors.
    fn rules(&mut self, schema: &Value, value: &Value, path: &str) {
        if let Some(rules) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for rule in rules {
                self.rule(schema, rule, value, path);
            }
        }
        match value {
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.rules(item_schema, item, &format!("{path}[{i}]"));
                    }
                }
            }
            Value::Object(map) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                for (key, child) in map {
                    if let Some(child_schema) = properties.and_then(|p| p.get(key)).or(additional) {
                        self.rules(child_schema, child, &join(path, key));
                    }
                }
            }
            _ => {}
        }
    }

    fn rule(&mut self, schema: &Value, rule: &Value, value: &Value, path: &str) {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        let Some(check) = mirrors().get(text) else {
            self.push(
                FieldErrorKind::Internal,
                path,
                None,
                format!("validation rule {text:?} has no offline mirror"),
            );
            return;
        };
        if check(value) {
            return;
        }
        let field = match rule.get("fieldPath").and_then(Value::as_str) {
            Some(rel) => format!("{path}{rel}"),
            None => path.to_owned(),
        };
        let message = rule
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("failed rule: {text}"), str::to_owned);
        let (kind, shown) = match rule.get("reason").and_then(Value::as_str) {
            Some("FieldValueRequired") => (FieldErrorKind::Required, None),
            Some("FieldValueForbidden") => (FieldErrorKind::Forbidden, None),
            Some("FieldValueDuplicate") => (FieldErrorKind::Invalid, None),
            // FieldValueInvalid (the default): the server shows the value the rule is on,
            // unless it is an object or a list.
            _ => match schema.get("type").and_then(Value::as_str) {
                Some("object" | "array") => (FieldErrorKind::Invalid, None),
                _ => (FieldErrorKind::Invalid, Some(render(value))),
            },
        };
        self.push(kind, &field, shown, message);
    }
}

/// A Rust mirror of one CEL rule: `true` when the rule holds for `self`.
type Mirror = fn(&Value) -> bool;

/// Every CEL rule of the CRD, by its exact text, with its mirror.
fn mirrors() -> &'static HashMap<String, Mirror> {
    static MIRRORS: OnceLock<HashMap<String, Mirror>> = OnceLock::new();
    MIRRORS.get_or_init(|| {
        mirrored_rules()
            .into_iter()
            .map(|(r, m)| (r.rule, m))
            .collect()
    })
}

/// The rules of [`crate::schema`] paired with their mirrors.
fn mirrored_rules() -> Vec<(Rule, Mirror)> {
    let mut pairs: Vec<(Rule, Mirror)> = vec![
        (schema::rule_selector_not_empty(), selector_not_empty),
        (
            schema::rule_selector_not_managed_by_operator(),
            selector_not_managed_by_operator,
        ),
        (
            schema::rule_selector_no_reserved_keys(),
            selector_no_reserved_keys,
        ),
        (
            schema::rule_selector_excludes_own_sidecars(),
            selector_excludes_own_sidecars,
        ),
        (
            schema::rule_node_name_needs_any_placement(),
            node_name_needs_any_placement,
        ),
        (schema::rule_max_unavailable(), max_unavailable),
        (schema::match_expression_rule(), match_expression_values),
        // Rules of the Pod template. Several sit at more than one place (containers and init
        // containers) with the same text and a message naming the place.
        (schema::rule_dns_label(""), dns_label),
        (schema::rule_image_required(""), image_set),
        (
            schema::rule_container_names_unique(),
            container_names_unique,
        ),
        (
            schema::rule_no_ephemeral_containers(),
            no_ephemeral_containers,
        ),
        (schema::rule_volume_names_unique(), volume_names_unique),
        (
            schema::rule_volume_mounts_declared(),
            volume_mounts_declared,
        ),
        (
            schema::rule_init_container_probes_need_restart_always(),
            init_container_probes_need_restart_always,
        ),
        (schema::rule_port_name(""), port_name),
        (schema::rule_port_names_unique(""), port_names_unique),
        (schema::rule_env_name(""), env_name),
    ];
    // In the order of `template_metadata_rules`: name, generateName, namespace,
    // ownerReferences, labels.
    let metadata: [Mirror; 5] = [
        |m| !has(m, "name"),
        |m| !has(m, "generateName"),
        |m| !has(m, "namespace"),
        |m| !has(m, "ownerReferences"),
        template_labels_not_reserved,
    ];
    pairs.extend(schema::template_metadata_rules().into_iter().zip(metadata));
    pairs
}

// --- CEL helpers on JSON values (after null pruning: a present key is `has()`) ---

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

fn size(v: Option<&Value>) -> usize {
    match v {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        Some(Value::String(s)) => s.chars().count(),
        _ => 0,
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn list_contains(v: &Value, key: &str, wanted: &str) -> bool {
    v.get(key)
        .and_then(Value::as_array)
        .is_some_and(|items| items.iter().any(|x| x.as_str() == Some(wanted)))
}

fn expressions(selector: &Value) -> impl Iterator<Item = &Value> {
    selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn match_labels(selector: &Value) -> impl Iterator<Item = (&String, &Value)> {
    selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

fn selector_is_empty(selector: &Value) -> bool {
    size(selector.get("matchLabels")) == 0 && size(selector.get("matchExpressions")) == 0
}

// --- the mirrors ---

/// [`schema::rule_selector_not_empty`] (on `spec.selector`).
fn selector_not_empty(selector: &Value) -> bool {
    !selector_is_empty(selector)
}

/// [`schema::rule_selector_not_managed_by_operator`] (on `spec.selector`).
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

/// [`schema::rule_selector_no_reserved_keys`] (on `spec.selector`).
fn selector_no_reserved_keys(selector: &Value) -> bool {
    let by_label = match_labels(selector).any(|(k, _)| k.starts_with(KEY_PREFIX));
    let by_expression = expressions(selector).any(|e| {
        str_at(e, "key").starts_with(KEY_PREFIX) && matches!(str_at(e, "operator"), "In" | "Exists")
    });
    !by_label && !by_expression
}

/// [`schema::rule_selector_excludes_own_sidecars`] (on `spec`): the selector must not match the
/// sidecars' labels (template labels plus the managed-by label); requirements on `sidecars.dev/`
/// keys never count as matching.
fn selector_excludes_own_sidecars(spec: &Value) -> bool {
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

/// [`schema::rule_node_name_needs_any_placement`] (on `spec`).
fn node_name_needs_any_placement(spec: &Value) -> bool {
    let node_name = spec
        .pointer("/template/spec/nodeName")
        .is_some_and(|n| !n.is_null());
    !node_name || str_at(spec, "placement") == "Any"
}

/// [`schema::rule_max_unavailable`] (on `spec.updateStrategy.maxUnavailable`).
fn max_unavailable(value: &Value) -> bool {
    static PERCENT: OnceLock<Option<Regex>> = OnceLock::new();
    match value {
        Value::Number(n) => n.as_i64().map_or(n.as_u64().is_some(), |n| n > 0),
        Value::String(s) => PERCENT
            .get_or_init(|| Regex::new(schema::PERCENT_PATTERN).ok())
            .as_ref()
            .is_some_and(|re| re.is_match(s)),
        _ => false,
    }
}

/// [`schema::match_expression_rule`] (on each `spec.selector.matchExpressions` entry).
fn match_expression_values(expression: &Value) -> bool {
    let values = size(expression.get("values"));
    match str_at(expression, "operator") {
        "In" | "NotIn" => has(expression, "values") && values > 0,
        _ => values == 0,
    }
}

/// The labels rule of [`schema::template_metadata_rules`] (on `spec.template.metadata`).
fn template_labels_not_reserved(metadata: &Value) -> bool {
    metadata
        .get("labels")
        .and_then(Value::as_object)
        .is_none_or(|labels| {
            !labels
                .keys()
                .any(|k| k == LABEL_MANAGED_BY || k.starts_with(KEY_PREFIX))
        })
}

/// `s` matches `pattern` (compiled once per pattern), as CEL's `matches` (unanchored search).
fn matches(pattern: &'static str, s: &str) -> bool {
    static REGEXES: OnceLock<std::sync::Mutex<HashMap<&'static str, Option<Regex>>>> =
        OnceLock::new();
    let mut regexes = REGEXES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    regexes
        .entry(pattern)
        .or_insert_with(|| Regex::new(pattern).ok())
        .as_ref()
        .is_some_and(|re| re.is_match(s))
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The `name`s of the entries of list `key` of `v` (entries without a string name are skipped:
/// the structural schema requires one).
fn names<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    items(v, key)
        .iter()
        .filter_map(|item| item.get("name").and_then(Value::as_str))
        .collect()
}

fn all_unique(names: &[&str]) -> bool {
    names
        .iter()
        .enumerate()
        .all(|(i, n)| !names[..i].contains(n))
}

/// [`schema::rule_dns_label`] (on a name string).
fn dns_label(name: &Value) -> bool {
    name.as_str()
        .is_some_and(|s| matches(schema::DNS_LABEL_PATTERN, s))
}

/// [`schema::rule_image_required`] (on each container).
fn image_set(container: &Value) -> bool {
    size(container.get("image")) > 0
}

/// [`schema::rule_container_names_unique`] (on the Pod spec).
fn container_names_unique(pod_spec: &Value) -> bool {
    let mut all = names(pod_spec, "containers");
    all.extend(names(pod_spec, "initContainers"));
    all_unique(&all)
}

/// [`schema::rule_no_ephemeral_containers`] (on the Pod spec).
fn no_ephemeral_containers(pod_spec: &Value) -> bool {
    size(pod_spec.get("ephemeralContainers")) == 0
}

/// [`schema::rule_volume_names_unique`] (on the Pod spec).
fn volume_names_unique(pod_spec: &Value) -> bool {
    all_unique(&names(pod_spec, "volumes"))
}

/// [`schema::rule_volume_mounts_declared`] (on the Pod spec).
fn volume_mounts_declared(pod_spec: &Value) -> bool {
    let volumes = names(pod_spec, "volumes");
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(|list| items(pod_spec, list))
        .flat_map(|c| names(c, "volumeMounts"))
        .all(|mount| volumes.contains(&mount))
}

/// [`schema::rule_init_container_probes_need_restart_always`] (on each init container).
fn init_container_probes_need_restart_always(container: &Value) -> bool {
    str_at(container, "restartPolicy") == "Always"
        || [
            "lifecycle",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
        ]
        .iter()
        .all(|field| !has(container, field))
}

/// [`schema::rule_port_name`] (on a port's name string).
fn port_name(name: &Value) -> bool {
    let s = name.as_str().unwrap_or_default();
    s.is_empty()
        || (matches(schema::DNS_LABEL_PATTERN, s) && matches("[a-z]", s) && !s.contains("--"))
}

/// [`schema::rule_port_names_unique`] (on each container).
fn port_names_unique(container: &Value) -> bool {
    let named: Vec<&str> = names(container, "ports")
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    all_unique(&named)
}

/// [`schema::rule_env_name`] (on a variable's name string).
fn env_name(name: &Value) -> bool {
    name.as_str()
        .is_some_and(|s| matches(schema::ENV_NAME_PATTERN, s))
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
