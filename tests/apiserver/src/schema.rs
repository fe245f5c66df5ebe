//! Custom resource admission: pruning, null handling, defaulting, structural validation and
//! the CEL `x-kubernetes-validations` rules (evaluated with `kube::core::cel`).

use crate::error::{FieldError, FieldReason};
use kube::core::cel::{Validator, apply_defaults};
use serde_json::{Map, Value};

thread_local! {
    // Building a validator registers every Kubernetes CEL function; do it once per thread.
    static VALIDATOR: Validator = Validator::new();
}

/// Prunes, defaults and validates `object` (a whole custom resource) against `schema`.
/// Returns the admitted object or every field error, like the API server's 422.
pub fn admit(schema: &Value, object: Value, old: Option<&Value>) -> Result<Value, Vec<FieldError>> {
    let mut object = object;
    prune_root(schema, &mut object);
    let object = apply_defaults(schema, &object);
    let mut errors = Vec::new();
    validate_root(schema, &object, &mut errors);
    if errors.is_empty() {
        errors.extend(cel_errors(schema, &object, old));
    }
    if errors.is_empty() { Ok(object) } else { Err(errors) }
}

/// Top-level `apiVersion`, `kind` and `metadata` are governed by the API server, not the schema.
const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn prune_root(schema: &Value, object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    map.retain(|key, _| ROOT_FIELDS.contains(&key.as_str()) || props.is_some_and(|p| p.contains_key(key)));
    for (key, value) in map.iter_mut() {
        if let Some(child) = props.and_then(|p| p.get(key)).filter(|_| !ROOT_FIELDS.contains(&key.as_str())) {
            prune(child, value);
        }
    }
    map.retain(|key, value| !value.is_null() || ROOT_FIELDS.contains(&key.as_str()));
}

/// The fields of `object` that `schema` does not declare (which pruning would drop), as the
/// paths a strict decoder names: `spec.foo`, `spec.items[0].bar`.
pub fn unknown_fields(schema: &Value, object: &Value) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(map) = object.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for (key, value) in map.iter().filter(|(k, _)| !ROOT_FIELDS.contains(&k.as_str())) {
            match props.and_then(|p| p.get(key)) {
                Some(child) => collect_unknown(child, value, key, &mut found),
                None => found.push(key.clone()),
            }
        }
    }
    found
}

fn collect_unknown(schema: &Value, value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keeps_unknown = preserves_unknown(schema) && props.is_none() && additional.is_none();
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                match props.and_then(|p| p.get(key)).or(additional) {
                    Some(s) => collect_unknown(s, child, &child_path, found),
                    None if keeps_unknown || preserves_unknown(schema) => {}
                    None => found.push(child_path),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    collect_unknown(item_schema, item, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
        || schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true)
}

fn nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

/// Drops fields the schema does not know and nulls of non-nullable fields (as the API server
/// does before defaulting).
fn prune(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_some() || additional.is_some() || !preserves_unknown(schema) {
                let keep_unknown = preserves_unknown(schema) || additional.is_some();
                map.retain(|key, _| keep_unknown || props.is_some_and(|p| p.contains_key(key)));
            }
            let mut null_keys = Vec::new();
            for (key, child) in map.iter_mut() {
                let child_schema = props.and_then(|p| p.get(key)).or(additional);
                match child_schema {
                    Some(s) if child.is_null() && !nullable(s) => null_keys.push(key.clone()),
                    Some(s) => prune(s, child),
                    None => {}
                }
            }
            for key in null_keys {
                map.remove(&key);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                items.iter_mut().for_each(|item| prune(item_schema, item));
            }
        }
        _ => {}
    }
}

fn validate_root(schema: &Value, object: &Value, errors: &mut Vec<FieldError>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, child) in props.iter().filter(|(k, _)| !ROOT_FIELDS.contains(&k.as_str())) {
        if let Some(value) = object.get(key) {
            validate(child, value, key, errors);
        }
    }
    check_required(schema, object.as_object(), "", errors);
}

fn check_required(schema: &Value, map: Option<&Map<String, Value>>, path: &str, errors: &mut Vec<FieldError>) {
    let required = schema.get("required").and_then(Value::as_array).into_iter().flatten();
    for key in required.filter_map(Value::as_str) {
        if map.is_none_or(|m| !m.contains_key(key)) {
            errors.push(FieldError::new(join(path, key), FieldReason::Required, ""));
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(schema: &Value, value: &Value) -> bool {
    if value.is_null() {
        return nullable(schema);
    }
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return matches!(type_name(value), "integer" | "string");
    }
    match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("number") => value.is_number(),
        Some(expected) => expected == type_name(value),
    }
}

fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if !type_matches(schema, value) {
        let expected = schema.get("type").and_then(Value::as_str).unwrap_or("int-or-string");
        let msg = format!("{path} in body must be of type {expected}: \"{}\"", type_name(value));
        errors.push(FieldError::invalid(path, &Value::String(type_name(value).into()), msg));
        return;
    }
    check_enum(schema, value, path, errors);
    match value {
        Value::String(s) => check_string(schema, s, path, errors),
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or_default(), value, path, errors),
        Value::Array(items) => check_array(schema, items, path, errors),
        Value::Object(map) => check_object(schema, map, path, errors),
        _ => {}
    }
}

fn check_enum(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if !allowed.contains(value) {
        let list = allowed.iter().map(Value::to_string).collect::<Vec<_>>().join(", ");
        let mut e = FieldError::new(path, FieldReason::Unsupported, format!("supported values: {list}"));
        e.value = Some(value.to_string());
        errors.push(e);
    }
}

fn check_string(schema: &Value, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64).filter(|max| len > *max) {
        errors.push(FieldError::new(path, FieldReason::TooLong, format!("may not be more than {max} bytes")));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64).filter(|min| len < *min) {
        let msg = format!("{path} in body should be at least {min} chars long");
        errors.push(FieldError::invalid(path, &Value::String(s.into()), msg));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => {
                let msg = format!("{path} in body should match '{pattern}'");
                errors.push(FieldError::invalid(path, &Value::String(s.into()), msg));
            }
            Err(e) => errors.push(FieldError::new(path, FieldReason::Invalid, format!("bad pattern: {e}"))),
        }
    }
}

fn check_number(schema: &Value, n: f64, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        if n < min || (exclusive && n == min) {
            let msg = format!("{path} in body should be greater than or equal to {min}");
            errors.push(FieldError::invalid(path, value, msg));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
        if n > max || (exclusive && n == max) {
            let msg = format!("{path} in body should be less than or equal to {max}");
            errors.push(FieldError::invalid(path, value, msg));
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let count = items.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64).filter(|max| count > *max) {
        errors.push(FieldError::new(path, FieldReason::TooMany, format!("{count}: must have at most {max} items")));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64).filter(|min| count < *min) {
        let msg = format!("{path} in body should have at least {min} items");
        errors.push(FieldError::invalid(path, &Value::Array(items.to_vec()), msg));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            validate(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
    check_list_uniqueness(schema, items, path, errors);
}

/// `set` lists need unique items and `map` lists unique keys, as the API server enforces.
fn check_list_uniqueness(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let identity = |item: &Value| -> Option<Value> {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str)? {
            "set" => Some(item.clone()),
            "map" => {
                let keys = schema.get("x-kubernetes-list-map-keys")?.as_array()?;
                Some(Value::Array(
                    keys.iter().map(|k| item.get(k.as_str().unwrap_or("")).cloned().unwrap_or(Value::Null)).collect(),
                ))
            }
            _ => None,
        }
    };
    let mut seen = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(id) = identity(item) else { return };
        if seen.contains(&id) {
            let mut e = FieldError::new(format!("{path}[{i}]"), FieldReason::Invalid, "Duplicate value");
            e.value = Some(id.to_string());
            errors.push(e);
        }
        seen.push(id);
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<FieldError>) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, child) in map {
        if let Some(child_schema) = props.and_then(|p| p.get(key)).or(additional) {
            validate(child_schema, child, &join(path, key), errors);
        }
    }
    check_required(schema, Some(map), path, errors);
    let count = map.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64).filter(|max| count > *max) {
        errors.push(FieldError::new(path, FieldReason::TooMany, format!("{count}: must have at most {max} items")));
    }
}

fn cel_errors(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let result = VALIDATOR.with(|v| v.validate(schema, object, old));
    let Err(errors) = result else {
        return Vec::new();
    };
    errors
        .into_vec()
        .into_iter()
        .map(|e| {
            let value = value_at(object, &e.field_path).cloned().unwrap_or(Value::Null);
            let mut fe = FieldError::invalid(e.field_path.clone(), &value, e.message.clone());
            if e.reason.as_deref() == Some("FieldValueForbidden") {
                fe.reason = FieldReason::Forbidden;
                fe.value = None;
            } else if e.reason.as_deref() == Some("FieldValueRequired") {
                fe.reason = FieldReason::Required;
                fe.value = None;
            }
            if fe.field.is_empty() {
                fe.field = "<nil>".into();
            }
            fe
        })
        .collect()
}

/// Resolves a path such as `spec.items[0].name` in `object`.
fn value_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = object;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = part.split_once('[').map_or((part, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            node = node.get(name)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            node = node.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "x-kubernetes-validations": [{"rule": "self.size <= 10", "message": "size must be at most 10"}],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}
                    }
                }
            }
        })
    }

    #[test]
    fn names_the_fields_a_schema_does_not_declare() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }}
        }});
        let object = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
            "spec": {"items": [{"a": "1", "b": 2}], "free": {"anything": 1}, "labels": {"k": "v"}, "typo": 1},
            "extra": true
        });
        assert_eq!(unknown_fields(&schema, &object), ["extra", "spec.items[0].b", "spec.typo"]);
    }

    #[test]
    fn prunes_defaults_and_accepts_valid_objects() {
        let obj = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"}, "spec": {"size": 2, "junk": 1}, "other": 1});
        let admitted = admit(&schema(), obj, None).unwrap();
        assert_eq!(admitted["spec"], json!({"size": 2, "mode": "a"}));
        assert!(admitted.get("other").is_none());
        assert_eq!(admitted["metadata"]["name"], "a");
    }

    #[test]
    fn reports_type_required_enum_duplicate_and_cel_errors() {
        let bad = |spec: Value| admit(&schema(), json!({"spec": spec}), None).unwrap_err();
        assert_eq!(bad(json!({"size": "x"}))[0].field, "spec.size");
        assert_eq!(bad(json!({}))[0].reason, FieldReason::Required);
        assert_eq!(bad(json!({"size": 1, "mode": "c"}))[0].reason, FieldReason::Unsupported);
        assert_eq!(bad(json!({"size": 1, "tags": ["a", "a"]}))[0].field, "spec.tags[1]");
        let cel = bad(json!({"size": 11}));
        assert_eq!(cel[0].message, "size must be at most 10");
        assert_eq!(cel[0].field, "spec");
    }
}
