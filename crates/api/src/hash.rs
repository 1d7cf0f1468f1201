//! The template hash: a short, stable fingerprint of everything in a policy that shapes its
//! sidecars. The operator stamps it on every sidecar (label `sidecars.dev/template-hash`) and in
//! `status.templateHash`; a sidecar whose label differs from the policy's current hash is stale
//! and gets replaced according to `spec.updateStrategy`.
//!
//! Definition (stable across operator versions; changing it would roll every sidecar):
//!
//! 1. Take the JSON object `{"placement": spec.placement, "template": spec.template}`, serialized
//!    with the API's field names (camelCase). In Container mode it is
//!    `{"mode": "Container", "template": spec.template}` instead: the mode is part of the hash
//!    only when it is `Container`, so every Pod-mode hash stays what it was before modes
//!    existed (a changed hash would replace every sidecar Pod), and a policy switched to
//!    Container mode never matches its old sidecars' hash. `placement` means nothing in
//!    Container mode and is left out there.
//! 2. Normalize it: drop object fields whose value is `null`, an empty array or an empty object,
//!    recursively (so `args: []` and no `args` hash the same; array items keep their positions,
//!    an item that normalizes to nothing becomes `null`), and sort object keys (byte order).
//! 3. Serialize that compactly (no whitespace) and take SHA-256 of the UTF-8 bytes.
//! 4. The hash is the first [`TEMPLATE_HASH_LEN`] lowercase hex digits: a valid label value.
//!
//! `selector`, `updateStrategy` and `paused` (and `mode` when it is `Pod`) are not part of the hash: changing them never
//! replaces a sidecar.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::types::{Mode, SidecarPolicySpec};

/// Number of hex digits in a template hash (40 bits).
pub const TEMPLATE_HASH_LEN: usize = 10;

/// The template hash of a policy spec (see the module documentation for the definition).
pub fn template_hash(spec: &SidecarPolicySpec) -> String {
    let canonical = match serde_json::to_value(&spec.template) {
        Ok(template) => {
            let mut input = Map::new();
            match spec.mode {
                Mode::Pod => input.insert("placement".to_owned(), spec.placement.as_str().into()),
                Mode::Container => input.insert("mode".to_owned(), spec.mode.as_str().into()),
            };
            input.insert("template".to_owned(), template);
            canonical_json(&Value::Object(input))
        }
        // Unreachable: k8s-openapi types always serialize to JSON (string map keys only).
        // Still deterministic, so the hash stays stable even here.
        Err(_) => format!("{spec:?}"),
    };
    let digest = Sha256::digest(canonical.as_bytes());
    let mut hex = String::with_capacity(TEMPLATE_HASH_LEN);
    for byte in digest.iter().take(TEMPLATE_HASH_LEN.div_ceil(2)) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(TEMPLATE_HASH_LEN);
    hex
}

/// Compact JSON of `value` after normalization: nulls, empty arrays and empty objects removed
/// (recursively), object keys sorted. Independent of serde_json's `preserve_order` feature.
pub fn canonical_json(value: &Value) -> String {
    normalize(value).unwrap_or(Value::Null).to_string()
}

/// Returns `None` when the value normalizes to nothing (null, `[]`, `{}`).
fn normalize(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Array(items) => {
            // Items keep their positions: an item that normalizes to nothing becomes null.
            let items: Vec<Value> = items
                .iter()
                .map(|item| normalize(item).unwrap_or(Value::Null))
                .collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(fields) => {
            let mut sorted: Vec<(&String, Value)> = fields
                .iter()
                .filter_map(|(k, v)| normalize(v).map(|v| (k, v)))
                .collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            let object: Map<String, Value> =
                sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect();
            (!object.is_empty()).then_some(Value::Object(object))
        }
        scalar => Some(scalar.clone()),
    }
}

#[cfg(test)]
#[path = "hash_tests.rs"]
mod tests;
