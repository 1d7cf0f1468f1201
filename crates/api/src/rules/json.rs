//! CEL's operations on JSON values, as the mirrors use them. Values are seen after null pruning:
//! a present key is what `has()` sees.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use regex::Regex;
use serde_json::Value;

/// `has(v.key)`.
pub(super) fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// `size(v)` of a map, list or string; 0 for anything else, or nothing.
pub(super) fn size(v: Option<&Value>) -> usize {
    match v {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        Some(Value::String(s)) => s.chars().count(),
        _ => 0,
    }
}

/// The string at `key`, or `""`.
pub(super) fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// `wanted in v.key`, for a list of strings.
pub(super) fn list_contains(v: &Value, key: &str, wanted: &str) -> bool {
    items(v, key).iter().any(|x| x.as_str() == Some(wanted))
}

/// The entries of list `key` of `v` (none when absent).
pub(super) fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The `name`s of the entries of list `key` of `v` (entries without a string name are skipped:
/// the structural schema requires one).
pub(super) fn names<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    items(v, key)
        .iter()
        .filter_map(|item| item.get("name").and_then(Value::as_str))
        .collect()
}

/// No name appears twice (CEL: `all(n, exists_one(m, m == n))`).
pub(super) fn all_unique(names: &[&str]) -> bool {
    names
        .iter()
        .enumerate()
        .all(|(i, n)| !names[..i].contains(n))
}

/// `s.matches(pattern)`: an unanchored search, as CEL's `matches`; compiled once per pattern.
pub(super) fn matches(pattern: &'static str, s: &str) -> bool {
    static REGEXES: OnceLock<Mutex<HashMap<&'static str, Option<Regex>>>> = OnceLock::new();
    let mut regexes = REGEXES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    regexes
        .entry(pattern)
        .or_insert_with(|| Regex::new(pattern).ok())
        .as_ref()
        .is_some_and(|re| re.is_match(s))
}
