//! `metadata.managedFields`: who owns which fields, server-side apply with conflicts and
//! `force`, removal of fields an applier stopped applying, and ownership taken by updates.

use crate::{
    error::{ApiError, ApiResult},
    fields::{self, FieldPath, FieldSet, Scope},
    resource::ResourceType,
};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == subresource
    }
}

fn parse(object: &Value) -> Vec<Entry> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: text(e, "manager"),
            operation: text(e, "operation"),
            api_version: text(e, "apiVersion"),
            time: text(e, "time"),
            subresource: e.get("subresource").and_then(Value::as_str).map(String::from),
            fields: fields::from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

fn write(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    let encoded: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fields::to_fields_v1(&e.fields),
            });
            if let Some(sub) = &e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if encoded.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(encoded));
        }
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The writer of one request.
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub scope: Scope,
}

impl Writer<'_> {
    fn upsert(&self, entries: &mut Vec<Entry>, operation: &str, fields: FieldSet) {
        let sub = self.scope.subresource();
        match entries.iter_mut().find(|e| e.is(self.manager, operation, sub)) {
            Some(entry) => {
                if entry.fields != fields {
                    entry.time = now();
                }
                entry.fields = fields;
                entry.api_version = self.api_version.to_string();
            }
            None => entries.push(Entry {
                manager: self.manager.to_string(),
                operation: operation.to_string(),
                api_version: self.api_version.to_string(),
                time: now(),
                subresource: sub.map(String::from),
                fields,
            }),
        }
    }
}

/// Server-side apply of `applied` onto `live` (the current object, or a skeleton when creating).
/// Returns the merged object with updated `managedFields`; conflicts fail unless `force`.
pub fn apply(rt: &ResourceType, live: &Value, applied: &Value, writer: &Writer, force: bool) -> ApiResult<Value> {
    let mut entries = parse(live);
    let applied_set = fields::field_set(rt, applied, writer.scope);
    let conflicts = find_conflicts(&entries, live, applied, &applied_set, writer.manager);
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for (path, manager) in &conflicts {
        for entry in entries.iter_mut().filter(|e| &e.manager == manager) {
            entry.fields.remove(path);
        }
    }
    let mut merged = fields::merge(rt, live, &strip_nulls(applied), &[]);
    let sub = writer.scope.subresource();
    let previous =
        entries.iter().find(|e| e.is(writer.manager, "Apply", sub)).map(|e| e.fields.clone()).unwrap_or_default();
    let others: FieldSet =
        entries.iter().filter(|e| !e.is(writer.manager, "Apply", sub)).flat_map(|e| e.fields.iter().cloned()).collect();
    for path in previous.difference(&applied_set) {
        if !fields::covers(&others, path) {
            fields::remove(&mut merged, path);
        }
    }
    writer.upsert(&mut entries, "Apply", applied_set);
    write(&mut merged, entries);
    Ok(merged)
}

fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
        }
        other => other.clone(),
    }
}

/// Fields the applier states with a different value than the live one, owned by someone else.
fn find_conflicts(
    entries: &[Entry],
    live: &Value,
    applied: &Value,
    applied_set: &FieldSet,
    manager: &str,
) -> Vec<(FieldPath, String)> {
    let mut conflicts = Vec::new();
    for path in fields::terminals(applied_set) {
        if fields::find(live, path) == fields::find(applied, path) {
            continue;
        }
        for entry in entries.iter().filter(|e| e.manager != manager && e.fields.contains(path)) {
            if !conflicts.iter().any(|(p, m)| p == path && m == &entry.manager) {
                conflicts.push((path.clone(), entry.manager.clone()));
            }
        }
    }
    conflicts
}

fn conflict_error(conflicts: &[(FieldPath, String)]) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(path, manager)| format!("conflict with \"{manager}\": {}", fields::display(path)))
        .collect();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let causes = conflicts
        .iter()
        .map(|(path, manager)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": fields::display(path)})
        })
        .collect();
    ApiError::apply_conflict(message, causes)
}

/// Records a non-apply write (create, update, patch): the writer takes ownership of every
/// field it changed, and other managers lose the fields that changed or vanished.
pub fn record_update(rt: &ResourceType, old: Option<&Value>, new: &mut Value, writer: &Writer) {
    let mut entries = old.map(parse).unwrap_or_default();
    let old_set = old.map(|o| fields::field_set(rt, o, writer.scope)).unwrap_or_default();
    let new_set = fields::field_set(rt, new, writer.scope);
    let terminal: FieldSet = fields::terminals(&new_set).cloned().collect();
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| {
            !old_set.contains(*p)
                || (terminal.contains(*p) && old.and_then(|o| fields::find(o, p)) != fields::find(new, p))
        })
        .cloned()
        .collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    for entry in entries.iter_mut() {
        entry.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    let sub = writer.scope.subresource();
    let mut owned =
        entries.iter().find(|e| e.is(writer.manager, "Update", sub)).map(|e| e.fields.clone()).unwrap_or_default();
    owned.extend(changed);
    if !owned.is_empty() {
        writer.upsert(&mut entries, "Update", owned);
    }
    write(new, entries);
}

/// Drops owned paths that no longer exist in `object` (pruned or defaulted away).
pub fn retain_existing(object: &mut Value) {
    let mut entries = parse(object);
    for entry in entries.iter_mut() {
        entry.fields.retain(|p| fields::find(object, p).is_some());
    }
    write(object, entries);
}
