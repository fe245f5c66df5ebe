//! Label selectors (equality- and set-based) and the field selectors the server supports.

use crate::error::{ApiError, ApiResult};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector` query parameter; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(input: &str) -> ApiResult<Self> {
        split_top_level(input)
            .into_iter()
            .filter(|term| !term.trim().is_empty())
            .map(|term| parse_requirement(term.trim()))
            .collect::<ApiResult<Vec<_>>>()
            .map(Self)
    }

    /// A `metav1.LabelSelector` object (`matchLabels` and `matchExpressions`); `{}` matches everything.
    pub fn from_json(selector: &Value) -> ApiResult<Self> {
        let invalid = |why: String| ApiError::bad_request(format!("invalid label selector: {why}"));
        let mut requirements = Vec::new();
        for (key, value) in selector["matchLabels"].as_object().into_iter().flatten() {
            let value = value.as_str().ok_or_else(|| invalid(format!("matchLabels[{key}] must be a string")))?;
            requirements.push(Requirement::Equals(key.clone(), value.to_string()));
        }
        for expression in selector["matchExpressions"].as_array().into_iter().flatten() {
            let key = expression["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let operator = expression["operator"].as_str().unwrap_or_default();
            let needs_values = matches!(operator, "In" | "NotIn");
            if needs_values == values.is_empty() {
                return Err(invalid(format!("operator {operator:?} with {} values", values.len())));
            }
            requirements.push(match operator {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(invalid(format!("{other:?} is not a valid label selector operator"))),
            });
        }
        Ok(Self(requirements))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.satisfied_by(|key| labels.get(key).map(String::as_str))
    }

    /// Whether an object's labels satisfy it, read where they are: a list or a watch asks
    /// this of every object it passes, and copying each object's labels out cost more than
    /// the rest of a page.
    pub fn selects(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.satisfied_by(|key| labels.get(key).and_then(Value::as_str))
    }

    /// Whether the labels `label` looks up one key at a time satisfy every requirement.
    fn satisfied_by<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|req| match req {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|v| vs.iter().any(|w| w == v)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|v| !vs.iter().any(|w| w == v)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside a `(...)` value set.
fn split_top_level(input: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0usize, 0usize, Vec::new());
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn parse_requirement(term: &str) -> ApiResult<Requirement> {
    let invalid = || ApiError::bad_request(format!("unable to parse requirement: invalid label selector: {term:?}"));
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(valid_key(key.trim()).ok_or_else(invalid)?));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some(pos) = term.find(op) {
            let key = valid_key(term[..pos].trim()).ok_or_else(invalid)?;
            let set = term[pos + op.len()..].trim();
            let inner = set.strip_prefix('(').and_then(|s| s.strip_suffix(')')).ok_or_else(invalid)?;
            let values = inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
            return Ok(if negate { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
        }
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some(pos) = term.find(op) {
            let key = valid_key(term[..pos].trim()).ok_or_else(invalid)?;
            let value = term[pos + op.len()..].trim().to_string();
            return Ok(if negate { Requirement::NotEquals(key, value) } else { Requirement::Equals(key, value) });
        }
    }
    Ok(Requirement::Exists(valid_key(term).ok_or_else(invalid)?))
}

fn valid_key(key: &str) -> Option<String> {
    let ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| key.to_string())
}

/// A parsed `fieldSelector` over the labels a resource supports (`metadata.name`,
/// `metadata.namespace`, a kind's own, a custom resource's `selectableFields`).
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(input: &str, supported: &[&str]) -> ApiResult<Self> {
        let mut terms = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, negate, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{input}'; can't understand '{term}'")));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), negate, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, negate, value)| {
            let actual = match field.split('.').try_fold(object, |v, part| v.get(part)) {
                Some(Value::String(text)) => text.clone(),
                Some(scalar @ (Value::Bool(_) | Value::Number(_))) => scalar.to_string(),
                _ => String::new(),
            };
            (actual == *value) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equality_and_set_based_requirements() {
        let sel = LabelSelector::parse("app=web,tier in (front, back),!legacy,env!=prod").unwrap();
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "front"), ("legacy", "1")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "back"), ("env", "prod")])));
        let sel = LabelSelector::parse("certpilot.dev/managed,zone notin (a)").unwrap();
        assert!(sel.matches(&labels(&[("certpilot.dev/managed", "")])));
        assert!(!sel.matches(&labels(&[("certpilot.dev/managed", ""), ("zone", "a")])));
        assert!(LabelSelector::parse("a b c").is_err());
    }

    #[test]
    fn an_object_is_selected_by_the_labels_in_its_metadata() {
        let sel = LabelSelector::parse("app=web,tier in (front),!legacy").unwrap();
        let object = |labels: Value| serde_json::json!({"metadata": {"name": "x", "labels": labels}});
        assert!(sel.selects(&object(serde_json::json!({"app": "web", "tier": "front"}))));
        assert!(!sel.selects(&object(serde_json::json!({"app": "web", "tier": "front", "legacy": "1"}))));
        assert!(!sel.selects(&serde_json::json!({"metadata": {"name": "x"}})), "no labels: app=web is not met");
        assert!(LabelSelector::parse("!app").unwrap().selects(&serde_json::json!({"metadata": {"name": "x"}})));
        assert!(LabelSelector::default().selects(&serde_json::json!({})));
    }

    #[test]
    fn field_selectors() {
        let obj = serde_json::json!({"metadata": {"name": "x", "namespace": "n"}, "type": "kubernetes.io/tls"});
        let supported = ["metadata.name", "metadata.namespace", "type"];
        assert!(FieldSelector::parse("metadata.name=x,type==kubernetes.io/tls", &supported).unwrap().matches(&obj));
        assert!(!FieldSelector::parse("metadata.namespace!=n", &supported).unwrap().matches(&obj));
        assert!(FieldSelector::parse("spec.foo=bar", &supported).is_err());
    }
}
