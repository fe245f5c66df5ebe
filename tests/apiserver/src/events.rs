//! Events are one resource with two faces, as on a real API server: `events.k8s.io/v1` (what
//! certpilot writes) and `core/v1` (what `kubectl describe` and `kubectl get events` read). They
//! are stored once, in the `events.k8s.io` form, and converted when read or written as `core/v1`
//! (the field mapping of Kubernetes' `pkg/apis/events/v1` conversions).

use serde_json::{Map, Value};

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
}
