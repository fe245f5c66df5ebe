//! Events are one resource with two faces, as on a real API server: `events.k8s.io/v1` (what
//! certpilot writes) and `core/v1` (what `kubectl describe` and `kubectl get events` read). They
//! are stored once, in the `events.k8s.io` form, and converted when read or written as `core/v1`
//! (the field mapping of Kubernetes' `pkg/apis/events/v1` conversions). Both faces are
//! validated as the API server validates them ([`validate`]).

use crate::{
    error::{FieldError, FieldReason},
    meta,
};
use serde_json::{Map, Value, json};

/// `core/v1` names on the left, `events.k8s.io/v1` names on the right.
const RENAMED: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Whether a request path's resource is the `core/v1` face of Events.
pub fn is_core(group: &str, plural: &str) -> bool {
    group.is_empty() && plural == "events"
}

/// A stored (`events.k8s.io/v1`) Event as `core/v1` shows it.
pub fn to_core(stored: &Value) -> Value {
    let mut event = rename(stored, |(core, events)| (events, core));
    event["apiVersion"] = "v1".into();
    event
}

/// A `core/v1` Event in the stored (`events.k8s.io/v1`) form.
pub fn from_core(core: &Value) -> Value {
    let mut event = rename(core, |pair| pair);
    event["apiVersion"] = "events.k8s.io/v1".into();
    event
}

fn rename(event: &Value, direction: fn((&'static str, &'static str)) -> (&'static str, &'static str)) -> Value {
    let Some(fields) = event.as_object() else {
        return event.clone();
    };
    let mut out = Map::new();
    for (key, value) in fields {
        let renamed = RENAMED.iter().map(|pair| direction(*pair)).find(|(from, _)| from == key);
        out.insert(renamed.map_or(key.clone(), |(_, to)| to.to_string()), value.clone());
    }
    Value::Object(out)
}

/// Whose writes are checked: `core/v1` keeps the old, lenient rules for its clients;
/// `events.k8s.io/v1` adds strict ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Core,
    EventsV1,
}

/// What the API server refuses of an Event (its stored form), created (`old` is `None`) or
/// updated through `face` (Kubernetes' `ValidateEventCreate` and `ValidateEventUpdate`). Field
/// paths name `core/v1` fields, as the API server's do.
pub fn validate(event: &Value, old: Option<&Value>, face: Face) -> Vec<FieldError> {
    let mut errors = legacy_errors(event);
    match (face, old) {
        (Face::Core, _) => {}
        (Face::EventsV1, None) => errors.extend(strict_errors(event)),
        (Face::EventsV1, Some(old)) if old.get("series") != event.get("series") => errors.extend(series_errors(event)),
        (Face::EventsV1, Some(_)) => {}
    }
    errors
}

/// The rules every Event meets. An old-style one (no `eventTime`) is about an object of its own
/// namespace; a new-style one names its reporter and action, and may be about an object of
/// another namespace (a controller's Event about what it manages elsewhere), only not about an
/// object of none outside `default` and `kube-system`.
fn legacy_errors(event: &Value) -> Vec<FieldError> {
    let namespace = event["metadata"]["namespace"].as_str().unwrap_or_default();
    let involved = event["regarding"]["namespace"].as_str().unwrap_or_default();
    let mismatch =
        || FieldError::invalid("involvedObject.namespace", &json!(involved), "does not match event.namespace");
    if text(event, "eventTime").is_empty() {
        let matches = if involved.is_empty() { matches!(namespace, "" | "default") } else { involved == namespace };
        return if matches { Vec::new() } else { vec![mismatch()] };
    }
    let mut errors = Vec::new();
    if involved.is_empty() && !matches!(namespace, "default" | "kube-system") {
        errors.push(mismatch());
    }
    let controller = text(event, "reportingController");
    if controller.is_empty() {
        errors.push(FieldError::new("reportingController", FieldReason::Required, ""));
    }
    for message in meta::qualified_name_errors(controller) {
        errors.push(FieldError::invalid("reportingController", &json!(controller), message));
    }
    for (stored, field, limit) in
        [("reportingInstance", "reportingInstance", 128), ("action", "action", 128), ("reason", "reason", 128)]
    {
        let value = text(event, stored);
        if value.is_empty() {
            errors.push(FieldError::new(field, FieldReason::Required, ""));
        }
        errors.extend(too_long(field, value, limit));
    }
    errors.extend(too_long("message", text(event, "note"), 1024));
    errors
}

/// What an Event created through `events.k8s.io/v1` must also be: timed, typed, and free of
/// the deprecated fields.
fn strict_errors(event: &Value) -> Vec<FieldError> {
    let mut errors = series_errors(event);
    if text(event, "eventTime").is_empty() {
        errors.push(FieldError::new("eventTime", FieldReason::Required, ""));
    }
    let kind = text(event, "type");
    if !matches!(kind, "Normal" | "Warning") {
        errors.push(FieldError::invalid("type", &json!(""), format!("has invalid value: {kind}")));
    }
    let source = &event["deprecatedSource"];
    let deprecated = [
        ("firstTimestamp", !text(event, "deprecatedFirstTimestamp").is_empty()),
        ("lastTimestamp", !text(event, "deprecatedLastTimestamp").is_empty()),
        ("count", event["deprecatedCount"].as_i64().unwrap_or(0) != 0),
        ("source", !text(source, "component").is_empty() || !text(source, "host").is_empty()),
    ];
    for (field, set) in deprecated {
        if set {
            errors.push(FieldError::invalid(field, &json!(""), "needs to be unset"));
        }
    }
    errors
}

/// A series counts at least two occurrences, the last one timed.
fn series_errors(event: &Value) -> Vec<FieldError> {
    let Some(series) = event.get("series").filter(|s| s.is_object()) else { return Vec::new() };
    let mut errors = Vec::new();
    if series["count"].as_i64().unwrap_or(0) < 2 {
        errors.push(FieldError::invalid("series.count", &json!(""), "should be at least 2"));
    }
    if text(series, "lastObservedTime").is_empty() {
        errors.push(FieldError::new("series.lastObservedTime", FieldReason::Required, ""));
    }
    errors
}

fn too_long(field: &str, value: &str, limit: usize) -> Option<FieldError> {
    (value.len() > limit)
        .then(|| FieldError::invalid(field, &json!(""), format!("can have at most {limit} characters")))
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_two_faces_convert_both_ways() {
        let stored = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Certificate", "name": "web"}, "note": "issued",
            "reportingController": "certpilot", "reason": "Issued", "type": "Normal"
        });
        let core = to_core(&stored);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "issued");
        assert_eq!(core["reportingComponent"], "certpilot");
        assert_eq!(core["reason"], "Issued");
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        assert_eq!(from_core(&core), stored);
    }

    fn event(namespace: &str, extra: Value) -> Value {
        let mut event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": namespace},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "certpilot.dev/test",
            "reportingInstance": "test", "action": "Test", "reason": "Test", "type": "Normal", "note": "hello"
        });
        event.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        event
    }

    fn messages(event: &Value, face: Face) -> Vec<String> {
        validate(event, None, face).iter().map(ToString::to_string).collect()
    }

    /// As a real kube-apiserver v1.36.2 answers.
    #[test]
    fn new_style_events_may_be_about_objects_of_other_namespaces() {
        let elsewhere = json!({"regarding": {"kind": "Secret", "name": "x", "namespace": "other"}});
        assert!(messages(&event("mine", elsewhere.clone()), Face::EventsV1).is_empty());
        assert_eq!(
            messages(&event("mine", json!({})), Face::EventsV1),
            ["involvedObject.namespace: Invalid value: \"\": does not match event.namespace"]
        );
        // An old-style Event (no eventTime, through core/v1) must be about its own namespace.
        let mut old_style = event("mine", elsewhere);
        old_style.as_object_mut().unwrap().remove("eventTime");
        assert_eq!(
            messages(&old_style, Face::Core),
            ["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
        );
    }

    #[test]
    fn events_k8s_io_events_are_typed_timed_and_without_deprecated_fields() {
        let here = json!({"kind": "Secret", "name": "x", "namespace": "mine"});
        let refused = |extra: Value| {
            let mut event = event("mine", json!({"regarding": here}));
            event.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            messages(&event, Face::EventsV1)
        };
        assert_eq!(refused(json!({"type": "Loud"})), ["type: Invalid value: \"\": has invalid value: Loud"]);
        assert_eq!(refused(json!({"deprecatedCount": 3})), ["count: Invalid value: \"\": needs to be unset"]);
        assert_eq!(refused(json!({"action": ""})), ["action: Required value"]);
        assert_eq!(refused(json!({"series": {"count": 1}})).len(), 2);
        // core/v1 keeps no type rule.
        let loud = event("mine", json!({"regarding": here, "type": "Loud"}));
        assert!(messages(&loud, Face::Core).is_empty());
    }
}
