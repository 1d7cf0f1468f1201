//! `metadata` of the policy itself, which the API server checks before the schema.

use serde_json::{Map, Value};

use super::{FieldError, FieldErrorKind, quote, type_error};

/// `metadata` of the policy itself: the server requires a name (or generateName) that is a
/// DNS subdomain.
pub(super) fn validate_metadata(metadata: Option<&Value>, errors: &mut Vec<FieldError>) {
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
