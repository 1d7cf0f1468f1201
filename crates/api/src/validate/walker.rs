//! Steps 3 and 4 of the validation: the structural schema, then the CEL rules through their
//! mirrors in `crate::rules`.

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::{
    FieldError, FieldErrorKind, as_count, bound_text, field_schema, is_nullable, join, json_type,
    quote, render, type_error,
};
use crate::rules;

#[derive(Default)]
pub(super) struct Walker {
    pub(super) errors: Vec<FieldError>,
    patterns: HashMap<String, Option<Regex>>,
}

impl Walker {
    fn push(&mut self, kind: FieldErrorKind, path: &str, value: Option<String>, detail: String) {
        self.errors.push(FieldError::new(kind, path, value, detail));
    }

    /// Step 3: the structural schema.
    pub(super) fn structure(&mut self, schema: &Value, value: &Value, path: &str) {
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
            Value::Array(items) => self.array(schema, items, path),
            Value::Object(map) => self.object(schema, map, path),
            _ => {}
        }
    }

    /// `maxItems` or `maxProperties` (`keyword`) of a list or map of `len` entries.
    fn at_most(&mut self, schema: &Value, keyword: &str, len: usize, path: &str) {
        if let Some(max) = as_count(schema, keyword)
            && len > max
        {
            self.push(
                FieldErrorKind::TooMany,
                path,
                Some(len.to_string()),
                format!("must have at most {max} items"),
            );
        }
    }

    /// `maxItems`, `minItems`, and the items.
    fn array(&mut self, schema: &Value, items: &[Value], path: &str) {
        self.at_most(schema, "maxItems", items.len(), path);
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

    /// `maxProperties`, `required`, and the fields.
    fn object(&mut self, schema: &Value, map: &Map<String, Value>, path: &str) {
        self.at_most(schema, "maxProperties", map.len(), path);
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
        for (key, child) in map {
            if let Some(child_schema) = field_schema(schema, key) {
                self.structure(child_schema, child, &join(path, key));
            }
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
    pub(super) fn rules(&mut self, schema: &Value, value: &Value, path: &str) {
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
                for (key, child) in map {
                    if let Some(child_schema) = field_schema(schema, key) {
                        self.rules(child_schema, child, &join(path, key));
                    }
                }
            }
            _ => {}
        }
    }

    fn rule(&mut self, schema: &Value, rule: &Value, value: &Value, path: &str) {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        let Some(def) = rules::find(text) else {
            self.push(
                FieldErrorKind::Internal,
                path,
                None,
                format!("validation rule {text:?} has no offline mirror"),
            );
            return;
        };
        if (def.holds)(value) {
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
