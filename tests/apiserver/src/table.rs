//! `Table` responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), as `kubectl get`
//! asks for them: a custom resource's printer columns rendered the way the API server's
//! table convertor renders them. A `date` column is an age (`3s`, `5d`), and a time to come is
//! `<invalid>`; a `string` column is the value as it is; a missing value is null.

use crate::resource::ResourceType;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Whether the client asked for a `Table`.
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|part| part.contains("as=Table"))
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// The `Table` of `objects` (a list's items, or the one object of a GET) for `rt`.
pub fn render(rt: &ResourceType, objects: &[Value], resource_version: Option<String>) -> Value {
    let columns = columns(rt);
    let mut definitions = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0}),
    ];
    definitions.extend(columns.iter().map(|c| {
        json!({
            "name": c["name"],
            "type": c["type"],
            "format": c["format"].as_str().unwrap_or(""),
            "description": c["description"].as_str().unwrap_or(""),
            "priority": c["priority"].as_i64().unwrap_or(0),
        })
    }));
    let now = Utc::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            cells.extend(columns.iter().map(|c| cell(c, object, now)));
            json!({"cells": cells, "object": crate::http::metadata_view(object)})
        })
        .collect();
    let mut metadata = json!({});
    if let Some(version) = resource_version {
        metadata["resourceVersion"] = json!(version);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

/// The printer columns; a custom resource that declares none shows its age.
fn columns(rt: &ResourceType) -> Vec<Value> {
    if rt.printer_columns.is_empty() {
        vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
    } else {
        rt.printer_columns.clone()
    }
}

fn cell(column: &Value, object: &Value, now: DateTime<Utc>) -> Value {
    let Some(value) = select(object, column["jsonPath"].as_str().unwrap_or_default()) else {
        return Value::Null;
    };
    match column["type"].as_str() {
        Some("date") => match value.as_str().map(DateTime::parse_from_rfc3339) {
            Some(Ok(at)) => json!(human_duration(now.signed_duration_since(at).num_seconds())),
            _ => json!("<invalid>"),
        },
        Some("string") => match value {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        },
        _ => value.clone(),
    }
}

/// The value at a simple JSONPath: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b` (what printer columns use).
fn select<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    let mut rest = path.strip_prefix('.').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(filter) = rest.strip_prefix("[?(@.") {
            let end = filter.find(")]")?;
            let (condition, after) = (&filter[..end], &filter[end + 2..]);
            let (key, wanted) = condition.split_once("==")?;
            let wanted = wanted.trim().trim_matches(|c| c == '"' || c == '\'');
            current = current.as_array()?.iter().find(|item| item[key.trim()].as_str() == Some(wanted))?;
            rest = after.strip_prefix('.').unwrap_or(after);
        } else if let Some(index) = rest.strip_prefix('[') {
            let end = index.find(']')?;
            current = current.as_array()?.get(index[..end].parse::<usize>().ok()?)?;
            let after = &index[end + 1..];
            rest = after.strip_prefix('.').unwrap_or(after);
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            current = current.get(&rest[..end])?;
            rest = rest[end..].strip_prefix('.').unwrap_or(&rest[end..]);
        }
    }
    (!current.is_null()).then_some(current)
}

/// An age as the API server words it (`k8s.io/apimachinery/pkg/util/duration.HumanDuration`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{days}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_worded_as_the_api_server_words_them() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
        ];
        for (seconds, words) in cases {
            assert_eq!(human_duration(seconds), words, "{seconds}s");
        }
    }

    #[test]
    fn printer_column_paths_select_what_kubectl_shows() {
        let object = json!({"status": {"conditions": [{"type": "Issuing", "status": "False"}, {"type": "Ready", "status": "True"}], "list": [1, 2]}});
        assert_eq!(select(&object, ".status.conditions[?(@.type==\"Ready\")].status"), Some(&json!("True")));
        assert_eq!(select(&object, ".status.list[1]"), Some(&json!(2)));
        assert_eq!(select(&object, ".status.missing"), None);
        assert_eq!(select(&object, ".status.conditions[?(@.type==\"Other\")].status"), None);
    }
}
