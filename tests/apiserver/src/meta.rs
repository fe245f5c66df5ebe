//! Object metadata rules: names, labels, annotations, system fields the client cannot set.
//!
//! The checks and their messages follow the API server's `ValidateObjectMeta` (apimachinery):
//! label keys and annotation keys are qualified names, label values at most 63 bytes of the
//! same characters, annotations at most 256 KiB in total, and names a DNS subdomain (or label)
//! depending on the kind.

use crate::error::{FieldError, FieldReason};
use regex::Regex;
use serde_json::Value;
use std::{collections::BTreeMap, sync::LazyLock};

/// How a kind's `metadata.name` is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds, custom resources included).
    DnsSubdomain,
    /// RFC 1123 label (namespaces).
    DnsLabel,
    /// RFC 1035 label (services).
    Dns1035Label,
    /// Any path segment (RBAC kinds: `system:discovery` is a valid ClusterRole name).
    PathSegment,
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_ERR: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";

/// The most bytes all annotations (keys and values) may take together (`TotalAnnotationSizeLimitB`).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

fn dns1123_subdomain_fmt() -> String {
    format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*")
}

fn anchored(fmt: &str) -> Regex {
    Regex::new(&format!("^{fmt}$")).expect("static pattern")
}

static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1123_LABEL_FMT));
static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| anchored(&dns1123_subdomain_fmt()));
static DNS1035_LABEL: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1035_LABEL_FMT));
static LABEL_KEY: LazyLock<Regex> = LazyLock::new(|| anchored(LABEL_KEY_FMT));
static LABEL_VALUE: LazyLock<Regex> = LazyLock::new(|| anchored(&format!("({LABEL_KEY_FMT})?")));

/// `msg (e.g. 'a' or 'b', regex used for validation is 're')`, as apimachinery's `RegexError`.
fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    let shown: String = examples.iter().map(|e| format!("'{e}', ")).collect::<Vec<_>>().join(" or ");
    format!("{msg} (e.g. {shown}regex used for validation is '{re}')")
}

fn max_len_error(limit: usize, unit: &str) -> String {
    format!("must be no more than {limit} {unit}")
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push(max_len_error(253, "characters"));
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        errors.push(regex_error(DNS1123_SUBDOMAIN_ERR, &dns1123_subdomain_fmt(), &["example.com"]));
    }
    errors
}

/// `IsDNS1123Label`.
fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push(max_len_error(63, "characters"));
    }
    if !DNS1123_LABEL.is_match(value) {
        if DNS1123_SUBDOMAIN.is_match(value) {
            errors.push("must not contain dots".to_string());
        } else {
            errors.push(regex_error(DNS1123_LABEL_ERR, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    errors
}

/// `IsDNS1035Label`.
fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push(max_len_error(63, "characters"));
    }
    if !DNS1035_LABEL.is_match(value) {
        errors.push(regex_error(DNS1035_LABEL_ERR, DNS1035_LABEL_FMT, &["my-name", "abc-123"]));
    }
    errors
}

/// `IsValidPathSegmentName`: anything a URL path segment can carry.
pub fn path_segment_name_errors(name: &str) -> Vec<String> {
    if let Some(illegal) = [".", ".."].into_iter().find(|illegal| name == *illegal) {
        return vec![format!("may not be '{illegal}'")];
    }
    ["/", "%"].into_iter().filter(|illegal| name.contains(illegal)).map(|c| format!("may not contain '{c}'")).collect()
}

/// `IsQualifiedName` (a label key): an optional DNS-subdomain prefix and '/', then a name.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let examples = ["MyName", "my.name", "123-abc"];
    let parts: Vec<&str> = value.split('/').collect();
    let mut errors = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(dns1123_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, &examples)
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errors.push(format!("name part {}", max_len_error(63, "bytes")));
    }
    if !LABEL_KEY.is_match(name) {
        errors.push(format!("name part {}", regex_error(LABEL_KEY_ERR, LABEL_KEY_FMT, &examples)));
    }
    errors
}

/// `IsValidLabelValue`: empty, or at most 63 bytes of a qualified name's characters.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push(max_len_error(63, "bytes"));
    }
    if !LABEL_VALUE.is_match(value) {
        errors.push(regex_error(LABEL_VALUE_ERR, &format!("({LABEL_KEY_FMT})?"), &["MyValue", "my_value", "12345"]));
    }
    errors
}

fn name_errors(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::DnsSubdomain => dns1123_subdomain_errors(name),
        NameRule::DnsLabel => dns1123_label_errors(name),
        NameRule::Dns1035Label => dns1035_label_errors(name),
        NameRule::PathSegment => path_segment_name_errors(name),
    }
}

/// Validates `metadata`: name and generateName by `rule`, labels, annotations.
pub fn validate(object: &Value, rule: NameRule) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        errors.push(FieldError::new("metadata.name", FieldReason::Required, "name or generateName is required"));
    } else {
        for message in name_errors(rule, name) {
            errors.push(FieldError::invalid("metadata.name", &meta["name"], message));
        }
    }
    if let Some(prefix) = meta["generateName"].as_str().filter(|p| !p.is_empty()) {
        // A prefix may end in '-', which a name may not.
        let masked = prefix.strip_suffix('-').map(|p| format!("{p}a")).unwrap_or_else(|| prefix.to_string());
        for message in name_errors(rule, &masked) {
            errors.push(FieldError::invalid("metadata.generateName", &meta["generateName"], message));
        }
    }
    errors.extend(validate_labels(&labels(object)));
    errors.extend(validate_annotations(&annotations(object)));
    errors
}

/// `ValidateLabels`: every error names the field `metadata.labels` and shows the bad key or value.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in labels {
        for message in qualified_name_errors(key) {
            errors.push(FieldError::invalid("metadata.labels", &Value::String(key.clone()), message));
        }
        for message in label_value_errors(value) {
            errors.push(FieldError::invalid("metadata.labels", &Value::String(value.clone()), message));
        }
    }
    errors
}

/// `ValidateAnnotations`: keys are qualified names (in any case), and all keys and values
/// together take at most [`TOTAL_ANNOTATION_SIZE_LIMIT`] bytes.
pub fn validate_annotations(annotations: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for key in annotations.keys() {
        for message in qualified_name_errors(&key.to_lowercase()) {
            errors.push(FieldError::invalid("metadata.annotations", &Value::String(key.clone()), message));
        }
    }
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errors.push(FieldError::new(
            "metadata.annotations",
            FieldReason::TooLong,
            format!("may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
        ));
    }
    errors
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

pub fn labels(object: &Value) -> BTreeMap<String, String> {
    string_map(&object["metadata"]["labels"])
}

pub fn annotations(object: &Value) -> BTreeMap<String, String> {
    string_map(&object["metadata"]["annotations"])
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
    use serde_json::json;

    #[test]
    fn names_and_labels() {
        assert!(dns1123_subdomain_errors("web.example-1").is_empty());
        assert!(!dns1123_subdomain_errors("Web").is_empty());
        assert_eq!(dns1123_label_errors("a.b"), ["must not contain dots"]);
        assert!(qualified_name_errors("certpilot.dev/renew").is_empty());
        assert!(!qualified_name_errors("-bad").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(!label_value_errors("a b").is_empty());
        assert!(!dns1035_label_errors("1abc").is_empty());
        assert!(path_segment_name_errors("system:discovery").is_empty());
        assert_eq!(path_segment_name_errors(".."), ["may not be '..'"]);
        assert_eq!(path_segment_name_errors("a/b%"), ["may not contain '/'", "may not contain '%'"]);
    }

    #[test]
    fn messages_are_the_api_servers() {
        assert_eq!(
            qualified_name_errors("a/b/c"),
            [
                "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ]
        );
        assert_eq!(qualified_name_errors(&"k".repeat(64)), ["name part must be no more than 63 bytes"]);
        assert_eq!(qualified_name_errors("/x"), ["prefix part must be non-empty"]);
        assert_eq!(label_value_errors(&"v".repeat(64)), ["must be no more than 63 bytes"]);
        let bad = FieldError::invalid("metadata.labels", &json!("a b"), label_value_errors("a b").remove(0));
        assert_eq!(
            bad.to_string(),
            "metadata.labels: Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
    }

    #[test]
    fn annotation_keys_ignore_case_and_sizes_add_up() {
        let upper = BTreeMap::from([("Example.COM/Key".to_string(), "v".to_string())]);
        assert!(validate_annotations(&upper).is_empty());
        let half = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT / 2);
        let big = BTreeMap::from([("a".to_string(), half.clone()), ("b".to_string(), half)]);
        let errors = validate_annotations(&big);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].to_string(), "metadata.annotations: Too long: may not be more than 262144 bytes");
        let exact = BTreeMap::from([("a".to_string(), "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 1))]);
        assert!(validate_annotations(&exact).is_empty());
    }

    #[test]
    fn generate_name_prefixes_may_end_in_a_dash() {
        let ok = json!({"metadata": {"name": "gen-abcde", "generateName": "gen-"}});
        assert!(validate(&ok, NameRule::DnsSubdomain).is_empty());
        let bad = json!({"metadata": {"name": "x", "generateName": "Gen-"}});
        assert_eq!(validate(&bad, NameRule::DnsSubdomain)[0].field, "metadata.generateName");
    }
}
