//! Object metadata rules: names, labels, system fields the client cannot set.

use crate::error::{FieldError, FieldReason};
use serde_json::Value;
use std::collections::BTreeMap;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(key),
    }
}

fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_qualified_name_part(value)
}

/// Validates `metadata.name` (a DNS label for namespaces, a DNS subdomain otherwise) and labels.
pub fn validate(object: &Value, name_is_label: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        errors.push(FieldError::new("metadata.name", FieldReason::Required, "name or generateName is required"));
    } else if !(if name_is_label { is_dns_label(name) } else { is_dns_subdomain(name) }) {
        let what = if name_is_label { "RFC 1123 label" } else { "RFC 1123 subdomain" };
        errors.push(FieldError::invalid(
            "metadata.name",
            &meta["name"],
            format!("a lowercase {what} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    for (key, value) in labels(object) {
        if !is_label_key(&key) {
            errors.push(FieldError::invalid(
                "metadata.labels",
                &Value::String(key.clone()),
                "name part must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
        if !is_label_value(&value) {
            errors.push(FieldError::invalid("metadata.labels", &Value::String(value), "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
    }
    errors
}

pub fn labels(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

pub fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|f| f.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

pub fn is_deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

/// Fields the server owns: carried over from the stored object whatever the client sends.
pub const SYSTEM_FIELDS: [&str; 7] =
    ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "name", "namespace"];

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(is_dns_subdomain("web.example-1"));
        assert!(!is_dns_subdomain("Web"));
        assert!(!is_dns_label("a.b"));
        assert!(is_label_key("certpilot.dev/renew"));
        assert!(!is_label_key("-bad"));
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }
}
