//! What the API server checks of a CustomResourceDefinition before serving it: its name, its
//! versions and the CEL cost budget of its rules ([`crate::cel_cost`]).

use crate::{
    cel_cost,
    error::{FieldError, FieldReason},
    resource::Registry,
};
use serde_json::Value;

/// Every refusal of `crd` (replacing `old`, for an update), in the API server's order.
pub fn validate(crd: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = name_errors(crd);
    if let Err(e) = Registry::from_crd(crd) {
        errors.push(FieldError::new("spec.versions", FieldReason::Invalid, e.message));
    }
    errors.extend(
        cel_cost::crd_errors(crd, old).iter().map(|e| FieldError::new(e.field(), FieldReason::Forbidden, e.message())),
    );
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
