//! Status conditions, kept as a `list-type: map` keyed by `type` so server-side apply merges them.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One aspect of an object's state, in the Kubernetes condition convention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready` or `Issuing`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word saying why, for machines (e.g. `IssuerNotReady`).
    pub reason: String,
    /// What is happening and, when something is wrong, what to do about it.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: None,
            observed_generation: None,
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Stamps transition times: kept from `previous` when the status did not change, `now` otherwise.
pub fn stamp(conditions: &mut [Condition], previous: &[Condition], now: Timestamp) {
    for condition in conditions {
        let before = previous.iter().find(|p| p.type_ == condition.type_);
        condition.last_transition_time = match before {
            Some(p) if p.status == condition.status => p.last_transition_time.clone().or(Some(Time(now))),
            _ => Some(Time(now)),
        };
    }
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Schema hints that make `conditions` a map keyed by `type`.
pub fn list_map_by_type(schema: &mut schemars::Schema) {
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let mut first = vec![Condition::new("Ready", true, "Issued", "ok")];
        stamp(&mut first, &[], t0);
        let mut same = vec![Condition::new("Ready", true, "Issued", "still ok")];
        stamp(&mut same, &first, t1);
        assert_eq!(same[0].last_transition_time, Some(Time(t0)));
        let mut flipped = vec![Condition::new("Ready", false, "Expired", "expired")];
        stamp(&mut flipped, &same, t1);
        assert_eq!(flipped[0].last_transition_time, Some(Time(t1)));
    }
}
