//! What the API server checks of a CustomResourceDefinition before serving it: its name, its
//! versions, the CEL cost budget of its rules ([`crate::cel_cost`]) and, for the groups the
//! Kubernetes project owns, the approval annotation (Kubernetes' `validateAPIApproval`).

use crate::{
    cel_cost,
    error::{FieldError, FieldReason},
    resource::Registry,
};
use serde_json::Value;

/// The annotation a CRD of a protected group must carry: the URL of its API review, or a
/// reason starting with `unapproved`.
pub const APPROVAL_ANNOTATION: &str = "api-approved.kubernetes.io";

/// Every refusal of `crd` (replacing `old`, for an update), in the API server's order.
pub fn validate(crd: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = name_errors(crd);
    if let Err(e) = Registry::from_crd(crd) {
        errors.push(FieldError::new("spec.versions", FieldReason::Invalid, e.message));
    }
    errors.extend(
        cel_cost::crd_errors(crd, old).iter().map(|e| FieldError::new(e.field(), FieldReason::Forbidden, e.message())),
    );
    errors.extend(approval_errors(crd, old));
    errors
}

fn name_errors(crd: &Value) -> Vec<FieldError> {
    let spec = &crd["spec"];
    let expected =
        format!("{}.{}", spec["names"]["plural"].as_str().unwrap_or(""), spec["group"].as_str().unwrap_or(""));
    if crd["metadata"]["name"].as_str() == Some(expected.as_str()) {
        return Vec::new();
    }
    vec![FieldError::invalid(
        "metadata.name",
        &crd["metadata"]["name"],
        format!("must be spec.names.plural+\".\"+spec.group ({expected})"),
    )]
}

/// Groups under `k8s.io` and `kubernetes.io` are the Kubernetes project's.
fn is_protected(group: &str) -> bool {
    ["k8s.io", "kubernetes.io"].iter().any(|domain| group == *domain || group.ends_with(&format!(".{domain}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Approval {
    Missing,
    /// Neither a URL nor a reason starting with `unapproved`.
    Invalid,
    /// A URL (of the API review).
    Approved,
    /// `unapproved…`: allowed, though not approved.
    Bypassed,
}

fn approval(crd: &Value) -> Approval {
    let value = crd["metadata"]["annotations"][APPROVAL_ANNOTATION].as_str().unwrap_or_default();
    if value.is_empty() {
        Approval::Missing
    } else if value.starts_with("unapproved") {
        Approval::Bypassed
    } else if is_absolute_url(value) {
        Approval::Approved
    } else {
        Approval::Invalid
    }
}

/// A URL with a scheme and a host (what Go's `url.ParseRequestURI` accepts with both set).
fn is_absolute_url(value: &str) -> bool {
    value
        .parse::<axum::http::Uri>()
        .is_ok_and(|uri| uri.scheme().is_some() && uri.host().is_some_and(|h| !h.is_empty()))
}

/// A CRD of a protected group needs the approval annotation; an update that leaves its state
/// as it was is not refused (the API server's allowance for CRDs stored before the rule).
fn approval_errors(crd: &Value, old: Option<&Value>) -> Vec<FieldError> {
    if !is_protected(crd["spec"]["group"].as_str().unwrap_or_default()) {
        return Vec::new();
    }
    let state = approval(crd);
    if old.is_some_and(|old| approval(old) == state) {
        return Vec::new();
    }
    let field = format!("metadata.annotations[{APPROVAL_ANNOTATION}]");
    let see = "see https://github.com/kubernetes/enhancements/pull/1111";
    match state {
        Approval::Missing => vec![FieldError::new(
            field,
            FieldReason::Required,
            format!("protected groups must have approval annotation \"{APPROVAL_ANNOTATION}\", {see}"),
        )],
        Approval::Invalid => vec![FieldError::invalid(
            field,
            &crd["metadata"]["annotations"][APPROVAL_ANNOTATION],
            format!(
                "protected groups must have approval annotation \"{APPROVAL_ANNOTATION}\" with either a URL or a reason starting with \"unapproved\", {see}"
            ),
        )],
        Approval::Approved | Approval::Bypassed => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(group: &str, approval: Option<&str>) -> Value {
        let mut crd = json!({
            "metadata": {"name": format!("things.{group}")},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"plural": "things", "singular": "thing", "kind": "Thing", "listKind": "ThingList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}
        });
        if let Some(value) = approval {
            crd["metadata"]["annotations"] = json!({APPROVAL_ANNOTATION: value});
        }
        crd
    }

    fn messages(crd: &Value, old: Option<&Value>) -> Vec<String> {
        validate(crd, old).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn protected_groups_need_the_approval_annotation() {
        assert_eq!(
            messages(&crd("gateway.networking.k8s.io", None), None),
            [
                "metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111"
            ]
        );
        for group in ["k8s.io", "x.kubernetes.io", "kubernetes.io"] {
            assert_eq!(validate(&crd(group, None), None).len(), 1, "{group}");
        }
        for group in ["xk8s.io", "a.k8s.io.example.com", "certpilot.dev"] {
            assert_eq!(messages(&crd(group, None), None), Vec::<String>::new(), "{group}");
        }
    }

    /// The values a real kube-apiserver v1.36.2 takes and refuses.
    #[test]
    fn approval_is_a_url_or_a_reason_starting_with_unapproved() {
        let accepted = [
            "https://github.com/kubernetes-sigs/gateway-api/pull/3328",
            "http://x",
            "ftp://host/x",
            "https://host",
            "unapproved, testing only",
            "unapprovedx",
        ];
        for value in accepted {
            assert_eq!(messages(&crd("gateway.networking.k8s.io", Some(value)), None), Vec::<String>::new(), "{value}");
        }
        for value in ["bad value", "https://", "mailto:a@b", "/relative"] {
            let refused = messages(&crd("gateway.networking.k8s.io", Some(value)), None);
            assert_eq!(
                refused,
                [format!(
                    "metadata.annotations[api-approved.kubernetes.io]: Invalid value: {value:?}: protected groups must have approval annotation \"api-approved.kubernetes.io\" with either a URL or a reason starting with \"unapproved\", see https://github.com/kubernetes/enhancements/pull/1111"
                )]
            );
        }
    }

    #[test]
    fn updates_keeping_the_approval_state_are_not_refused() {
        let missing = crd("gateway.networking.k8s.io", None);
        assert!(validate(&missing, Some(&missing)).is_empty());
        let approved = crd("gateway.networking.k8s.io", Some("https://example.com/review"));
        assert_eq!(validate(&missing, Some(&approved)).len(), 1);
    }
}
