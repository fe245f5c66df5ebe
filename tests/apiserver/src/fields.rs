//! Field ownership for server-side apply: field sets in the `FieldsV1` encoding
//! (`f:name`, `k:{"type":"Ready"}`, `v:"value"`), and navigation of objects by them.

use crate::resource::{ListType, ResourceType};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// One path in an object, each element in its `FieldsV1` spelling.
pub type FieldPath = Vec<String>;
/// Every node (not only leaves) of an object that a manager owns.
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole object (kinds without a status subresource).
    Whole,
    /// Everything but `status` (writes to the main resource of a kind with a status subresource).
    MainResource,
    /// Only `status` (writes to the `/status` subresource).
    Status,
}

impl Scope {
    pub fn subresource(self) -> Option<&'static str> {
        (self == Scope::Status).then_some("status")
    }
}

const OWNABLE_METADATA: [&str; 4] = ["labels", "annotations", "ownerReferences", "finalizers"];

/// The field set of `object`, restricted to what `scope` lets a writer own.
pub fn field_set(rt: &ResourceType, object: &Value, scope: Scope) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(map) = object.as_object() else {
        return set;
    };
    for (key, value) in map {
        let in_scope = match (key.as_str(), scope) {
            ("apiVersion" | "kind", _) => false,
            ("status", Scope::Status) => true,
            (_, Scope::Status) => false,
            ("status", Scope::MainResource) => false,
            _ => true,
        };
        if !in_scope || value.is_null() {
            continue;
        }
        let path = vec![format!("f:{key}")];
        if key == "metadata" {
            let Some(meta) = value.as_object() else {
                continue;
            };
            for (mkey, mvalue) in meta.iter().filter(|(k, v)| OWNABLE_METADATA.contains(&k.as_str()) && !v.is_null()) {
                set.insert(path.clone());
                walk(rt, mvalue, &["metadata", mkey], path_with(&path, format!("f:{mkey}")), &mut set);
            }
        } else {
            walk(rt, value, &[key.as_str()], path, &mut set);
        }
    }
    set
}

fn path_with(path: &FieldPath, element: String) -> FieldPath {
    let mut p = path.clone();
    p.push(element);
    p
}

fn walk(rt: &ResourceType, value: &Value, schema_path: &[&str], path: FieldPath, set: &mut FieldSet) {
    set.insert(path.clone());
    match value {
        Value::Object(map) if !rt.map_is_atomic(schema_path) => {
            for (key, child) in map.iter().filter(|(_, v)| !v.is_null()) {
                let child_schema: Vec<&str> = schema_path.iter().copied().chain([key.as_str()]).collect();
                walk(rt, child, &child_schema, path_with(&path, format!("f:{key}")), set);
            }
        }
        Value::Array(items) => match rt.list_type(schema_path) {
            ListType::Atomic => {}
            ListType::Set => {
                for item in items {
                    set.insert(path_with(&path, format!("v:{}", canonical(item))));
                }
            }
            ListType::Map(keys) => {
                let item_schema: Vec<&str> = schema_path.iter().copied().chain(["[]"]).collect();
                for item in items {
                    walk(rt, item, &item_schema, path_with(&path, key_element(item, &keys)), set);
                }
            }
        },
        _ => {}
    }
}

/// `k:{"port":443,"protocol":"TCP"}`: the identity of a `list-type: map` element.
fn key_element(item: &Value, keys: &[String]) -> String {
    let key: Map<String, Value> = keys.iter().filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone()))).collect();
    format!("k:{}", canonical(&Value::Object(key)))
}

/// JSON with object keys sorted, so equal values always spell the same.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            let body: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&map[*k]))).collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

fn element_matches(item: &Value, element: &str) -> bool {
    if let Some(key) = element.strip_prefix("k:") {
        let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
            return false;
        };
        key.iter().all(|(k, v)| item.get(k) == Some(v))
    } else if let Some(v) = element.strip_prefix("v:") {
        canonical(item) == v
    } else {
        false
    }
}

/// The node of `object` at `path`.
pub fn find<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |node, element| match element.strip_prefix("f:") {
        Some(field) => node.get(field),
        None => node.as_array()?.iter().find(|item| element_matches(item, element)),
    })
}

/// Removes the node at `path` from `object` (a no-op when it is not there).
pub fn remove(object: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut node = object;
    for element in parent_path {
        let next = match element.strip_prefix("f:") {
            Some(field) => node.get_mut(field),
            None => node.as_array_mut().and_then(|items| items.iter_mut().find(|item| element_matches(item, element))),
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    match last.strip_prefix("f:") {
        Some(field) => {
            if let Some(map) = node.as_object_mut() {
                map.remove(field);
            }
        }
        None => {
            if let Some(items) = node.as_array_mut() {
                items.retain(|item| !element_matches(item, last));
            }
        }
    }
}

/// Paths of `set` that no other path in `set` extends: the values a writer actually states.
pub fn terminals(set: &FieldSet) -> impl Iterator<Item = &FieldPath> {
    set.iter().filter(move |p| {
        set.range::<FieldPath, _>((std::ops::Bound::Excluded(*p), std::ops::Bound::Unbounded))
            .next()
            .is_none_or(|next| !next.starts_with(p))
    })
}

/// Whether `set` holds `path` or anything below it.
pub fn covers(set: &FieldSet, path: &FieldPath) -> bool {
    set.range::<FieldPath, _>(path..).next().is_some_and(|p| p.starts_with(path))
}

/// Encodes a field set as `FieldsV1` JSON (`"."` marks a node owned in its own right).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node
                .entry(element.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("field tree nodes are objects");
        }
        if set.iter().any(|other| other.len() > path.len() && other.starts_with(path)) {
            node.insert(".".into(), Value::Object(Map::new()));
        }
    }
    Value::Object(root)
}

/// Decodes `FieldsV1` JSON into a field set.
pub fn from_fields_v1(value: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    decode(value, &mut Vec::new(), &mut set);
    set
}

fn decode(value: &Value, path: &mut FieldPath, set: &mut FieldSet) {
    let Some(map) = value.as_object() else { return };
    for (element, child) in map.iter().filter(|(k, _)| k.as_str() != ".") {
        path.push(element.clone());
        set.insert(path.clone());
        decode(child, path, set);
        path.pop();
    }
}

/// Merges an applied configuration into the live object: maps field by field, `map` lists
/// element by key, `set` lists by value; everything else is replaced.
pub fn merge(rt: &ResourceType, live: &Value, applied: &Value, schema_path: &[&str]) -> Value {
    match (live, applied) {
        (Value::Object(live_map), Value::Object(applied_map)) if !rt.map_is_atomic(schema_path) => {
            let mut out = live_map.clone();
            for (key, value) in applied_map.iter().filter(|(_, v)| !v.is_null()) {
                let child_schema: Vec<&str> = schema_path.iter().copied().chain([key.as_str()]).collect();
                let merged = merge(rt, live_map.get(key).unwrap_or(&Value::Null), value, &child_schema);
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(live_items), Value::Array(applied_items)) => match rt.list_type(schema_path) {
            ListType::Atomic => applied.clone(),
            ListType::Set => {
                let mut out = live_items.clone();
                out.extend(applied_items.iter().filter(|item| !live_items.contains(item)).cloned());
                Value::Array(out)
            }
            ListType::Map(keys) => {
                let item_schema: Vec<&str> = schema_path.iter().copied().chain(["[]"]).collect();
                let mut out = live_items.clone();
                for item in applied_items {
                    let element = key_element(item, &keys);
                    match out.iter_mut().find(|existing| element_matches(existing, &element)) {
                        Some(existing) => *existing = merge(rt, existing, item, &item_schema),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
        },
        _ => applied.clone(),
    }
}

/// Renders a path for a conflict message: `.spec.conditions[type="Ready"].status`.
pub fn display(path: &FieldPath) -> String {
    path.iter()
        .map(|element| {
            if let Some(field) = element.strip_prefix("f:") {
                format!(".{field}")
            } else if let Some(key) = element.strip_prefix("k:") {
                let parts = serde_json::from_str::<Map<String, Value>>(key)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
                    .unwrap_or_default();
                format!("[{parts}]")
            } else {
                format!("[={}]", element.trim_start_matches("v:"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Registry;
    use serde_json::json;

    fn widget_type() -> ResourceType {
        let crd = json!({"spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}},
                    "status": {"type": "object", "properties": {"conditions": {
                        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                        "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}}}}}}}}]
        }});
        Registry::from_crd(&crd).unwrap()
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let rt = widget_type();
        let obj = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "labels": {"a": "1"}},
            "spec": {"tags": ["x"]}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let set = field_set(&rt, &obj, Scope::Whole);
        assert!(set.contains(&vec![
            "f:status".into(),
            "f:conditions".into(),
            "k:{\"type\":\"Ready\"}".into(),
            "f:status".into()
        ]));
        assert!(set.contains(&vec!["f:spec".into(), "f:tags".into(), "v:\"x\"".into()]));
        assert!(!set.iter().any(|p| p.contains(&"f:name".to_string())));
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
        assert!(field_set(&rt, &obj, Scope::Status).iter().all(|p| p[0] == "f:status"));
    }

    #[test]
    fn merge_and_remove_follow_list_types() {
        let rt = widget_type();
        let live = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Issuing", "status": "True"}]}, "spec": {"tags": ["a"]}});
        let applied = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"tags": ["b"]}});
        let mut merged = merge(&rt, &live, &applied, &[]);
        assert_eq!(
            merged["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Issuing", "status": "True"}])
        );
        assert_eq!(merged["spec"]["tags"], json!(["a", "b"]));
        let issuing: FieldPath = vec!["f:status".into(), "f:conditions".into(), "k:{\"type\":\"Issuing\"}".into()];
        assert_eq!(find(&merged, &issuing).unwrap()["status"], "True");
        remove(&mut merged, &issuing);
        assert_eq!(merged["status"]["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(display(&issuing), ".status.conditions[type=\"Issuing\"]");
    }

    #[test]
    fn terminals_and_covers() {
        let set: FieldSet = [vec!["f:a".to_string()], vec!["f:a".into(), "f:b".into()], vec!["f:c".into()]].into();
        let t: Vec<_> = terminals(&set).cloned().collect();
        assert_eq!(t, vec![vec!["f:a".to_string(), "f:b".to_string()], vec!["f:c".to_string()]]);
        assert!(covers(&set, &vec!["f:a".into()]));
        assert!(!covers(&set, &vec!["f:d".into()]));
    }
}
