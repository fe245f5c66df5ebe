//! Pure decisions: when to renew, how long to back off, whether an attempt is needed, what
//! the Certificate's status says, and which Certificates an annotated Ingress or Gateway asks
//! for. No I/O here, so every rule is unit-tested exhaustively.

pub mod adopt;
pub mod backoff;
pub mod cluster_issuer;
pub mod fallback;
pub mod history;
pub mod persist;
pub mod renewal;
pub mod revoke;
pub mod shim;
pub mod status;
pub mod trigger;
pub mod trust;

/// A stable number in [0, 1) derived from `key`: the same certificate always gets the same
/// jitter, different certificates get different ones.
pub fn unit_jitter(key: &str) -> f64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// A digest of `value` as JSON, the same for a typed value and its `serde_json::Value`
/// (objects' keys are sorted in a `Value`). Compared only within one process.
pub fn json_digest(value: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let canonical = serde_json::to_value(value).and_then(|v| serde_json::to_vec(&v));
    canonical.unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

/// A field kept as JSON text when its record is serialised in a compact binary form (the
/// caches keep records that way): the API's types skip their empty optional fields when
/// serialised, which only a self-describing form reads back.
pub mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::to_string(value).map_err(serde::ser::Error::custom)?.serialize(serializer)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
        serde_json::from_str(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Parses a duration as Go writes them (`2160h`, `1h30m`, `90s`, `1.5h`, `2160h0m0s`), the
/// format of the CRDs and of cert-manager, with jiff's parser (which reads those and its own
/// friendly and ISO 8601 forms). Negative durations are refused: nothing here counts backwards.
/// Go forms jiff refuses: units out of order (`30m1h`), a fraction before the last unit
/// (`1.5h30m`); the bare `0`, which Go allows, is read here.
pub fn parse_duration(text: &str) -> Option<jiff::SignedDuration> {
    let text = text.trim();
    if text == "0" {
        return Some(jiff::SignedDuration::ZERO);
    }
    text.parse::<jiff::SignedDuration>().ok().filter(|duration| !duration.is_negative())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("2160h"), Some(SignedDuration::from_hours(2160)));
        assert_eq!(parse_duration("1h30m"), Some(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("1.5h"), Some(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("90s"), Some(SignedDuration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(SignedDuration::from_millis(500)));
        assert_eq!(parse_duration("2160h0m0s"), Some(SignedDuration::from_hours(2160)));
        assert_eq!(parse_duration("1h1.5m"), Some(SignedDuration::from_secs(3690)));
        assert_eq!(parse_duration("100us"), Some(SignedDuration::from_micros(100)));
        assert_eq!(parse_duration("0"), Some(SignedDuration::ZERO));
        assert_eq!(parse_duration("10d"), None, "days are not a fixed length");
        assert_eq!(parse_duration("-1h"), None);
        assert_eq!(parse_duration("30m1h"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn jitter_is_stable_and_spread() {
        assert_eq!(unit_jitter("ns/a"), unit_jitter("ns/a"));
        assert_ne!(unit_jitter("ns/a"), unit_jitter("ns/b"));
        let values: Vec<f64> = (0..1000).map(|i| unit_jitter(&format!("ns/cert-{i}"))).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }
}
