//! Steps 1 and 2 of the validation: unknown fields, `null`s and defaults.

use serde_json::Value;

use super::{FieldError, FieldErrorKind, field_schema, is_nullable, join};

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Step 1 and 2: reports and drops unknown fields, drops `null`s of non-nullable fields, and
/// applies defaults, recursively.
pub(super) fn normalize(
    schema: &Value,
    value: &mut Value,
    path: &str,
    root: bool,
    out: &mut Vec<FieldError>,
) {
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                match field_schema(schema, &key) {
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
