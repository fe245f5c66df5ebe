//! The CEL cost budget of a CustomResourceDefinition's `x-kubernetes-validations`, enforced as
//! a real API server does when the CRD is created or updated (Kubernetes'
//! `apiextensions/validation/validation.go` and `cel_validation.go`).
//!
//! Each rule's estimated cost (cel-go's, see `estimate.rs`) is multiplied by how many times it
//! can run in one object: the product of the `maxItems`/`maxProperties` of the lists and maps
//! above it, or, under an unbounded one, as many of its values as fit in a request. A rule may
//! cost [`RULE_COST_LIMIT`], all of a schema's rules together [`SCHEMA_COST_LIMIT`].

mod decl;
mod estimate;

use decl::{DeclType, MAX_REQUEST_SIZE, decl_type};
use serde_json::Value;

/// The most one rule (times how often it can run) may cost.
pub const RULE_COST_LIMIT: u64 = 10_000_000;
/// The most the rules of one schema may cost together.
pub const SCHEMA_COST_LIMIT: u64 = 100_000_000;
/// Rules costing at least this much are named when the total is over its limit.
const NOTABLE_RULE_COST: u64 = SCHEMA_COST_LIMIT / 100;
/// How many of the costliest rules the API server names.
const NAMED_RULES: usize = 4;

/// Why a CRD's rules do not fit the budget: each is a `Forbidden` error at `field`, worded as
/// the API server words it ([`CostError::message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostError {
    /// A rule costs more than [`RULE_COST_LIMIT`].
    Rule { field: String, cost: u64 },
    /// A rule's `messageExpression` costs more than [`RULE_COST_LIMIT`].
    MessageExpression { field: String, cost: u64 },
    /// One of the costliest rules of a schema over [`SCHEMA_COST_LIMIT`].
    PartOfTotal { field: String },
    /// The rules of a schema cost more than [`SCHEMA_COST_LIMIT`] together.
    Total { field: String, cost: u64 },
}

impl CostError {
    pub fn field(&self) -> &str {
        match self {
            Self::Rule { field, .. }
            | Self::MessageExpression { field, .. }
            | Self::PartOfTotal { field }
            | Self::Total { field, .. } => field,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Rule { cost, .. } => over_budget("estimated rule cost", *cost, RULE_COST_LIMIT),
            Self::MessageExpression { cost, .. } => {
                over_budget("estimated messageExpression cost", *cost, RULE_COST_LIMIT)
            }
            Self::PartOfTotal { .. } => {
                "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".into()
            }
            Self::Total { cost, .. } => over_budget(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                *cost,
                SCHEMA_COST_LIMIT,
            ),
        }
    }
}

impl std::fmt::Display for CostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: Forbidden: {}", self.field(), self.message())
    }
}

impl std::error::Error for CostError {}

/// The API server's wording: how many times over budget, precisely when it is close.
fn over_budget(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

/// One rule (or `messageExpression`) and what it costs, times how often it can run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleCost {
    /// `spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule`
    field: String,
    cost: u64,
}

/// The rules of a schema and their costs, and what the API server refuses, in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SchemaCost {
    rules: Vec<RuleCost>,
    errors: Vec<CostError>,
}

impl SchemaCost {
    fn total(&self) -> u64 {
        self.rules.iter().fold(0, |total, rule| total.saturating_add(rule.cost))
    }
}

/// The budget errors of a CRD (`old` is the stored one, for an update), in the API server's
/// order. As the API server does, a version whose schema an update leaves as it was is not
/// refused for a single rule (a server upgrade must not break stored CRDs), only for the total.
pub fn crd_errors(crd: &Value, old: Option<&Value>) -> Vec<CostError> {
    let versions = crd["spec"]["versions"].as_array().map(Vec::as_slice).unwrap_or_default();
    let unchanged = |version: &Value| {
        let old_versions = old.and_then(|o| o["spec"]["versions"].as_array()).map(Vec::as_slice).unwrap_or_default();
        old_versions.iter().any(|o| o["name"] == version["name"] && o.get("schema") == version.get("schema"))
    };
    // The API server checks a schema all versions share once, as the CRD's (`spec.validation`).
    let shared = versions.windows(2).all(|pair| pair[0].get("schema") == pair[1].get("schema"));
    match versions.first() {
        Some(first) if shared => schema_of(first)
            .map(|schema| schema_cost(schema, "spec.validation.openAPIV3Schema", !unchanged(first)).errors)
            .unwrap_or_default(),
        _ => versions
            .iter()
            .enumerate()
            .filter_map(|(i, version)| {
                let field = format!("spec.versions[{i}].schema.openAPIV3Schema");
                schema_of(version).map(|schema| schema_cost(schema, &field, !unchanged(version)).errors)
            })
            .flatten()
            .collect(),
    }
}

fn schema_of(version: &Value) -> Option<&Value> {
    version.get("schema").and_then(|s| s.get("openAPIV3Schema"))
}

fn schema_cost(schema: &Value, field: &str, check_each_rule: bool) -> SchemaCost {
    let mut walk = Walk { check_each_rule, cost: SchemaCost::default() };
    walk.node(schema, field, Some(1), true);
    let mut cost = walk.cost;
    let total = cost.total();
    if total > SCHEMA_COST_LIMIT {
        let mut notable: Vec<&RuleCost> = cost.rules.iter().filter(|r| r.cost >= NOTABLE_RULE_COST).collect();
        notable.sort_by_key(|rule| std::cmp::Reverse(rule.cost));
        let named = notable.iter().take(NAMED_RULES).map(|r| CostError::PartOfTotal { field: r.field.clone() });
        cost.errors.extend(named);
        cost.errors.push(CostError::Total { field: field.to_string(), cost: total });
    }
    cost
}

/// A depth-first walk of a schema, children before the node's own rules (the API server's
/// order of errors).
struct Walk {
    check_each_rule: bool,
    cost: SchemaCost,
}

impl Walk {
    /// `cardinality`: how many times the node can occur in one object, `None` when unbounded.
    fn node(&mut self, schema: &Value, field: &str, cardinality: Option<u64>, root: bool) {
        let children = cardinality.zip(children_per_node(schema)).map(|(n, m)| multiply(n, m));
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            self.node(values, &format!("{field}.additionalProperties"), children, false);
        }
        for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            self.node(property, &format!("{field}.properties[{name}]"), children, false);
        }
        if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
            self.node(items, &format!("{field}.items"), children, false);
        }
        self.rules(schema, field, cardinality, root);
    }

    fn rules(&mut self, schema: &Value, field: &str, cardinality: Option<u64>, root: bool) {
        let Some(rules) = schema.get("x-kubernetes-validations").and_then(Value::as_array) else { return };
        let embedded = schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);
        let Some(decl) = decl_type(schema, root || embedded) else { return };
        // Under an unbounded list or map, as many values as fit in a request.
        let cardinality = cardinality.unwrap_or(MAX_REQUEST_SIZE / (decl.min_serialized_size + 1));
        for (i, validation) in rules.iter().enumerate() {
            let rule_field = format!("{field}.x-kubernetes-validations[{i}]");
            let Some(rule) = validation.get("rule").and_then(Value::as_str).filter(|r| !r.trim().is_empty()) else {
                continue;
            };
            let Some(raw) = expression_cost(rule, &decl) else { continue };
            let cost = multiply(raw, cardinality);
            let field = format!("{rule_field}.rule");
            if self.check_each_rule && cost > RULE_COST_LIMIT {
                self.cost.errors.push(CostError::Rule { field: field.clone(), cost });
            }
            self.cost.rules.push(RuleCost { field, cost });
            let message = validation.get("messageExpression").and_then(Value::as_str);
            if let Some(cost) = message.and_then(|m| expression_cost(m, &decl)) {
                let field = format!("{rule_field}.messageExpression");
                if self.check_each_rule && cost > RULE_COST_LIMIT {
                    self.cost.errors.push(CostError::MessageExpression { field: field.clone(), cost });
                }
                self.cost.rules.push(RuleCost { field, cost });
            }
        }
    }
}

/// The estimated cost of one evaluation of `expression` on a value of type `decl`; `None` when
/// it does not parse (a compilation error, not a cost).
fn expression_cost(expression: &str, decl: &DeclType) -> Option<u64> {
    let parsed = cel::parser::Parser::new().enable_optional_syntax(true).parse(expression).ok()?;
    Some(estimate::cost(&parsed, decl).max)
}

/// How many values of a node's children each of its values holds: one for an object's fields,
/// `maxItems` or `maxProperties` for a list or map, `None` when unbounded.
fn children_per_node(schema: &Value) -> Option<u64> {
    let limit = |name: &str| schema.get(name).map(|n| n.as_u64().unwrap_or(0));
    match schema.get("type").and_then(Value::as_str) {
        Some("object") if schema.get("additionalProperties").is_some() => limit("maxProperties"),
        Some("array") => limit("maxItems"),
        _ => Some(1),
    }
}

/// `cost × times`, saturating (the API server's `multiplyWithOverflowGuard`).
fn multiply(cost: u64, times: u64) -> u64 {
    cost.saturating_mul(times)
}

#[cfg(test)]
mod tests;
