//! `ValidatingAdmissionPolicy` and `ValidatingAdmissionPolicyBinding`
//! (`admissionregistration.k8s.io/v1`): validated and defaulted when written, and enforced on
//! every create, update and delete like the API server's validating admission plugin.
//!
//! Supported: `matchConstraints` (resourceRules and excludeResourceRules with apiGroups,
//! apiVersions, operations, resources with subresources, scope; namespaceSelector;
//! objectSelector), `matchConditions`, `validations` (expression, message, messageExpression,
//! reason), `failurePolicy`; bindings with `policyName`, `validationActions` and
//! `matchResources`. CEL sees `object`, `oldObject`, `request` and `namespaceObject`.
//! Not supported: `paramKind`/`paramRef` (policies with params never match), `variables`,
//! `auditAnnotations` (accepted, not evaluated), the `authorizer` variable and type checking.

use crate::{
    error::{ApiError, FieldError, FieldReason},
    meta,
    resource::ResourceType,
    selector::LabelSelector,
};
use kube::core::cel::{
    KubeCelExt,
    cel::{
        Context, Program, Value as Cel,
        objects::{Key as CelKey, Map as CelMap},
    },
};
use serde_json::{Value, json};
use std::{collections::HashMap, sync::Arc};

pub const GROUP: &str = "admissionregistration.k8s.io";
pub const POLICIES: &str = "validatingadmissionpolicies";
pub const BINDINGS: &str = "validatingadmissionpolicybindings";

/// Who makes a request: the cluster admin when it has no credentials, the ServiceAccount of its
/// bearer token, or whoever it impersonates (see `crate::access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    fn new(username: &str, groups: &[&str]) -> Self {
        Self { username: username.into(), uid: String::new(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    /// The admin of a kind or kubeadm cluster (its `admin.conf` user).
    pub fn admin() -> Self {
        Self::new("kubernetes-admin", &["kubeadm:cluster-admins", "system:authenticated"])
    }

    /// The API server itself (loopback writes such as CRD status).
    pub fn apiserver() -> Self {
        Self::new("system:apiserver", &["system:authenticated", "system:masters"])
    }

    pub fn garbage_collector() -> Self {
        Self::service_account("kube-system", "generic-garbage-collector")
    }

    pub fn namespace_controller() -> Self {
        Self::service_account("kube-system", "namespace-controller")
    }

    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self::impersonated(&format!("system:serviceaccount:{namespace}:{name}"), &[], "")
    }

    /// The user an impersonating request acts as: a service account's name brings its groups
    /// when none are given, and every user but `system:anonymous` is `system:authenticated`.
    pub fn impersonated(username: &str, groups: &[String], uid: &str) -> Self {
        let mut groups = groups.to_vec();
        if groups.is_empty()
            && let Some(namespace) = username.strip_prefix("system:serviceaccount:").and_then(|r| r.split(':').next())
        {
            groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")];
        }
        let authenticated = groups.iter().any(|g| g == "system:authenticated" || g == "system:unauthenticated");
        if username != "system:anonymous" && !authenticated {
            groups.push("system:authenticated".into());
        }
        Self { username: username.into(), uid: uid.into(), groups }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// What admission sees of one request.
pub struct Attributes<'a> {
    pub rt: &'a ResourceType,
    pub subresource: &'a str,
    pub operation: Operation,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old_object: Option<&'a Value>,
    pub user: &'a UserInfo,
}

impl Attributes<'_> {
    fn version(&self) -> String {
        fn from(o: Option<&Value>) -> Option<&str> {
            o.and_then(|o| o["apiVersion"].as_str()).and_then(|av| av.rsplit('/').next())
        }
        from(self.object).or_else(|| from(self.old_object)).unwrap_or(&self.rt.versions[0]).to_string()
    }

    fn is_namespace(&self) -> bool {
        self.rt.group.is_empty() && self.rt.plural == "namespaces"
    }

    /// The namespace as admission sees it: a Namespace's own name for Namespaces.
    fn request_namespace(&self) -> &str {
        if self.is_namespace() { self.name } else { self.namespace }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing policies and bindings: defaults and validation.

fn default_match_resources(mr: &mut Value) {
    if !mr.is_object() {
        return;
    }
    for (field, default) in
        [("matchPolicy", json!("Equivalent")), ("namespaceSelector", json!({})), ("objectSelector", json!({}))]
    {
        if mr[field].is_null() {
            mr[field] = default;
        }
    }
    for rules in ["resourceRules", "excludeResourceRules"] {
        for rule in mr[rules].as_array_mut().into_iter().flatten() {
            if rule["scope"].is_null() {
                rule["scope"] = json!("*");
            }
        }
    }
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
}

fn not_supported(path: &str, value: &Value, supported: &[&str]) -> FieldError {
    let list = supported.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let mut e = FieldError::new(path, FieldReason::Unsupported, format!("supported values: {list}"));
    e.value = Some(match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    });
    e
}

fn required(path: impl Into<String>, detail: &str) -> FieldError {
    FieldError::new(path, FieldReason::Required, detail)
}

fn validate_rule(rule: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let operations = strings(&rule["operations"]);
    if operations.is_empty() {
        errors.push(required(format!("{path}.operations"), ""));
    }
    if operations.len() > 1 && operations.iter().any(|o| o == "*") {
        errors.push(FieldError::invalid(
            format!("{path}.operations"),
            &rule["operations"],
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, op) in operations.iter().enumerate() {
        if !["*", "CREATE", "UPDATE", "DELETE", "CONNECT"].contains(&op.as_str()) {
            errors.push(not_supported(
                &format!("{path}.operations[{i}]"),
                &json!(op),
                &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
            ));
        }
    }
    for (field, what) in [("apiGroups", "API groups"), ("apiVersions", "API versions")] {
        let values = strings(&rule[field]);
        if rule[field].as_array().is_none_or(|a| a.is_empty()) {
            errors.push(required(format!("{path}.{field}"), ""));
        }
        if values.len() > 1 && values.iter().any(|v| v == "*") {
            errors.push(FieldError::invalid(
                format!("{path}.{field}"),
                &rule[field],
                format!("if '*' is present, must not specify other {what}"),
            ));
        }
    }
    let resources = strings(&rule["resources"]);
    if resources.is_empty() {
        errors.push(required(format!("{path}.resources"), ""));
    }
    for (i, r) in resources.iter().enumerate() {
        if r.is_empty() {
            errors.push(required(format!("{path}.resources[{i}]"), ""));
        }
    }
    if resources.len() > 1 && resources.iter().any(|r| r == "*/*") {
        errors.push(FieldError::invalid(
            format!("{path}.resources"),
            &rule["resources"],
            "if '*/*' is present, must not specify other resources",
        ));
    }
    if resources.iter().any(|r| r == "*") && resources.iter().any(|r| r != "*" && !r.contains('/')) {
        errors.push(FieldError::invalid(
            format!("{path}.resources"),
            &rule["resources"],
            "if '*' is present, must not specify other resources without subresources",
        ));
    }
    if let Some(scope) = rule.get("scope").filter(|s| !s.is_null())
        && !matches!(scope.as_str(), Some("Cluster" | "Namespaced" | "*"))
    {
        errors.push(not_supported(&format!("{path}.scope"), scope, &["*", "Cluster", "Namespaced"]));
    }
}

fn validate_selector(selector: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Err(e) = LabelSelector::from_json(selector) {
        errors.push(FieldError::new(path, FieldReason::Invalid, e.message));
    }
}

fn validate_match_resources(mr: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match mr["matchPolicy"].as_str() {
        Some("Exact" | "Equivalent") => {}
        Some(_) => {
            errors.push(not_supported(&format!("{path}.matchPolicy"), &mr["matchPolicy"], &["Equivalent", "Exact"]))
        }
        None => errors.push(required(format!("{path}.matchPolicy"), "")),
    }
    for selector in ["namespaceSelector", "objectSelector"] {
        validate_selector(&mr[selector], &format!("{path}.{selector}"), errors);
    }
    for rules in ["resourceRules", "excludeResourceRules"] {
        for (i, rule) in mr[rules].as_array().into_iter().flatten().enumerate() {
            validate_rule(rule, &format!("{path}.{rules}[{i}]"), errors);
        }
    }
}

/// A CEL expression that does not compile is a 422, as on the API server.
fn validate_expression(expression: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let text = expression.as_str().unwrap_or_default();
    if text.trim().is_empty() {
        errors.push(required(path, ""));
    } else if let Err(e) = Program::compile(text) {
        errors.push(FieldError::invalid(path, expression, format!("compilation failed: {e}")));
    }
}

/// Defaults and validates a `ValidatingAdmissionPolicy` (`ValidateValidatingAdmissionPolicy`).
pub fn admit_policy(policy: &mut Value) -> Vec<FieldError> {
    let spec = &mut policy["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if spec["failurePolicy"].is_null() {
        spec["failurePolicy"] = json!("Fail");
    }
    default_match_resources(&mut spec["matchConstraints"]);
    let spec = &policy["spec"];
    let mut errors = Vec::new();
    if !matches!(spec["failurePolicy"].as_str(), Some("Fail" | "Ignore")) {
        errors.push(not_supported("spec.failurePolicy", &spec["failurePolicy"], &["Fail", "Ignore"]));
    }
    if spec["matchConstraints"].is_object() {
        validate_match_resources(&spec["matchConstraints"], "spec.matchConstraints", &mut errors);
        if spec["matchConstraints"]["resourceRules"].as_array().is_none_or(|r| r.is_empty()) {
            errors.push(required("spec.matchConstraints.resourceRules", ""));
        }
    } else {
        errors.push(required("spec.matchConstraints", ""));
    }
    let mut names = Vec::new();
    for (i, condition) in spec["matchConditions"].as_array().into_iter().flatten().enumerate() {
        let path = format!("spec.matchConditions[{i}]");
        validate_expression(&condition["expression"], &format!("{path}.expression"), &mut errors);
        match condition["name"].as_str().filter(|n| !n.is_empty()) {
            None => errors.push(required(format!("{path}.name"), "")),
            Some(name) => {
                for message in meta::qualified_name_errors(name) {
                    errors.push(FieldError::invalid(format!("{path}.name"), &condition["name"], message));
                }
                if names.contains(&name) {
                    let mut e = FieldError::new(format!("{path}.name"), FieldReason::Duplicate, "");
                    e.value = Some(format!("{name:?}"));
                    errors.push(e);
                }
                names.push(name);
            }
        }
    }
    let validations = spec["validations"].as_array().filter(|v| !v.is_empty());
    let audits = spec["auditAnnotations"].as_array().filter(|a| !a.is_empty());
    if validations.is_none() && audits.is_none() {
        let why = "validations or auditAnnotations must contain at least one item";
        errors.push(required("spec.validations", why));
        errors.push(required("spec.auditAnnotations", why));
    }
    for (i, validation) in validations.into_iter().flatten().enumerate() {
        let path = format!("spec.validations[{i}]");
        if validation["expression"].as_str().is_none_or(|e| e.trim().is_empty()) {
            errors.push(required(format!("{path}.expression"), "expression is not specified"));
        } else {
            validate_expression(&validation["expression"], &format!("{path}.expression"), &mut errors);
        }
        if let Some(me) = validation["messageExpression"].as_str().filter(|m| !m.is_empty()) {
            if me.trim().is_empty() {
                errors.push(FieldError::invalid(
                    format!("{path}.messageExpression"),
                    &validation["messageExpression"],
                    "must be non-empty if specified",
                ));
            } else {
                validate_expression(
                    &validation["messageExpression"],
                    &format!("{path}.messageExpression"),
                    &mut errors,
                );
            }
        }
        if let Some(message) = validation["message"].as_str().filter(|m| !m.is_empty()) {
            if message.trim().is_empty() {
                errors.push(FieldError::invalid(
                    format!("{path}.message"),
                    &validation["message"],
                    "message must be non-empty if specified",
                ));
            } else if message.trim().contains(['\n', '\r']) {
                errors.push(FieldError::invalid(
                    format!("{path}.message"),
                    &validation["message"],
                    "message must not contain line breaks",
                ));
            }
        }
        if let Some(reason) = validation.get("reason").filter(|r| !r.is_null())
            && !matches!(reason.as_str(), Some("Forbidden" | "Invalid" | "RequestEntityTooLarge"))
        {
            errors.push(not_supported(
                &format!("{path}.reason"),
                reason,
                &["Forbidden", "Invalid", "RequestEntityTooLarge"],
            ));
        }
    }
    errors
}

/// Defaults and validates a `ValidatingAdmissionPolicyBinding`.
pub fn admit_binding(binding: &mut Value) -> Vec<FieldError> {
    if !binding["spec"].is_object() {
        binding["spec"] = json!({});
    }
    default_match_resources(&mut binding["spec"]["matchResources"]);
    let spec = &binding["spec"];
    let mut errors = Vec::new();
    match spec["policyName"].as_str().filter(|n| !n.is_empty()) {
        None => errors.push(required("spec.policyName", "")),
        Some(name) => {
            for message in meta::dns1123_subdomain_errors(name) {
                errors.push(FieldError::invalid("spec.policyName", &spec["policyName"], message));
            }
        }
    }
    if spec["matchResources"].is_object() {
        // The API server names this path with its historical typo.
        validate_match_resources(&spec["matchResources"], "spec.matchResouces", &mut errors);
    }
    let actions = strings(&spec["validationActions"]);
    for (i, action) in actions.iter().enumerate() {
        if !["Deny", "Warn", "Audit"].contains(&action.as_str()) {
            errors.push(not_supported(
                &format!("spec.validationActions[{i}]"),
                &json!(action),
                &["Audit", "Deny", "Warn"],
            ));
        }
        if actions[..i].contains(action) {
            let mut e = FieldError::new(format!("spec.validationActions[{i}]"), FieldReason::Duplicate, "");
            e.value = Some(format!("{action:?}"));
            errors.push(e);
        }
    }
    if actions.iter().any(|a| a == "Deny") && actions.iter().any(|a| a == "Warn") {
        errors.push(FieldError::invalid(
            "spec.validationActions",
            &spec["validationActions"],
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if actions.is_empty() {
        errors.push(required("spec.validationActions", "at least one validation action is required"));
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// Matching.

fn matches_rule(rule: &Value, attrs: &Attributes, equivalent: bool) -> bool {
    let any = |field: &str, want: &dyn Fn(&str) -> bool| strings(&rule[field]).iter().any(|v| v == "*" || want(v));
    let scope_ok = match rule["scope"].as_str().unwrap_or("*") {
        "Namespaced" => !attrs.is_namespace() && !attrs.namespace.is_empty(),
        "Cluster" => attrs.is_namespace() || attrs.namespace.is_empty(),
        _ => true,
    };
    let version = attrs.version();
    let version_ok = |v: &str| v == version || (equivalent && attrs.rt.versions.iter().any(|served| served == v));
    let resource_ok = |r: &str| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == attrs.rt.plural) && (sub == "*" || sub == attrs.subresource)
    };
    scope_ok
        && any("operations", &|op| op == attrs.operation.as_str())
        && any("apiGroups", &|g| g == attrs.rt.group)
        && any("apiVersions", &version_ok)
        && any("resources", &resource_ok)
}

fn selector_matches(selector: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    LabelSelector::from_json(selector).is_ok_and(|s| s.matches(labels))
}

/// `MatchResources` of a policy or binding against a request.
fn matches_resources(mr: &Value, attrs: &Attributes, namespace: Option<&Value>, require_rules: bool) -> bool {
    let namespace_ok = if attrs.request_namespace().is_empty() && !attrs.is_namespace() {
        // Cluster-scoped objects other than namespaces are never exempted by a namespace selector.
        true
    } else {
        let labels = if attrs.is_namespace() && attrs.subresource.is_empty() && attrs.operation != Operation::Delete {
            attrs.object.map(meta::labels).unwrap_or_default()
        } else if attrs.is_namespace() {
            attrs.old_object.or(attrs.object).map(meta::labels).unwrap_or_default()
        } else {
            namespace.map(meta::labels).unwrap_or_default()
        };
        selector_matches(&mr["namespaceSelector"], &labels)
    };
    let object_ok = [attrs.object, attrs.old_object]
        .into_iter()
        .flatten()
        .any(|o| selector_matches(&mr["objectSelector"], &meta::labels(o)))
        || (attrs.object.is_none() && attrs.old_object.is_none());
    let equivalent = mr["matchPolicy"].as_str() != Some("Exact");
    let rules = |field: &str| mr[field].as_array().cloned().unwrap_or_default();
    let excluded = rules("excludeResourceRules").iter().any(|r| matches_rule(r, attrs, equivalent));
    let included = rules("resourceRules");
    let included_ok =
        if included.is_empty() { !require_rules } else { included.iter().any(|r| matches_rule(r, attrs, equivalent)) };
    namespace_ok && object_ok && !excluded && included_ok
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let entries: HashMap<CelKey, Cel> =
                map.iter().map(|(k, v)| (CelKey::String(Arc::new(k.clone())), to_cel(v))).collect();
            Cel::Map(CelMap { map: Arc::new(entries) })
        }
    }
}

fn request_value(attrs: &Attributes) -> Value {
    let rt = attrs.rt;
    let version = attrs.version();
    let kind = json!({"group": rt.group, "version": version, "kind": rt.kind});
    let resource = json!({"group": rt.group, "version": version, "resource": rt.plural});
    json!({
        "uid": uuid::Uuid::new_v4().to_string(),
        "kind": kind, "resource": resource, "subResource": attrs.subresource,
        "requestKind": kind, "requestResource": resource, "requestSubResource": attrs.subresource,
        "name": attrs.name, "namespace": attrs.request_namespace(),
        "operation": attrs.operation.as_str(),
        "userInfo": {"username": attrs.user.username, "uid": attrs.user.uid, "groups": attrs.user.groups},
        "dryRun": false,
    })
}

fn context(attrs: &Attributes, namespace: Option<&Value>) -> Context<'static> {
    let mut ctx = Context::default();
    ctx.register_all();
    ctx.add_variable_from_value("object", attrs.object.map(to_cel).unwrap_or(Cel::Null));
    ctx.add_variable_from_value("oldObject", attrs.old_object.map(to_cel).unwrap_or(Cel::Null));
    ctx.add_variable_from_value("request", to_cel(&request_value(attrs)));
    ctx.add_variable_from_value("namespaceObject", namespace.map(to_cel).unwrap_or(Cel::Null));
    ctx.add_variable_from_value("params", Cel::Null);
    ctx
}

/// Runs one expression: its value, or the API server's evaluation error message.
fn run(expression: &str, ctx: &Context) -> Result<Cel, String> {
    let program = Program::compile(expression).map_err(|e| format!("compilation failed: {e}"))?;
    program.execute(ctx).map_err(|e| format!("expression '{expression}' resulted in error: {e}"))
}

/// Why a policy refused a request.
struct Decision {
    message: String,
    reason: Option<String>,
}

/// Evaluates matchConditions and validations of one policy; `None` admits.
fn validate_request(spec: &Value, ctx: &Context) -> Option<Decision> {
    let fail = spec["failurePolicy"].as_str() != Some("Ignore");
    let on_error = |message: String| fail.then_some(Decision { message, reason: None });
    let mut errors = Vec::new();
    for condition in spec["matchConditions"].as_array().into_iter().flatten() {
        match run(condition["expression"].as_str().unwrap_or_default(), ctx) {
            Ok(Cel::Bool(false)) => return None,
            Ok(Cel::Bool(true)) => {}
            Ok(other) => errors.push(format!("expression returned non-boolean: {other:?}")),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return on_error(if errors.len() == 1 { errors.remove(0) } else { format!("[{}]", errors.join(", ")) });
    }
    for validation in spec["validations"].as_array().into_iter().flatten() {
        let expression = validation["expression"].as_str().unwrap_or_default();
        match run(expression, ctx) {
            Ok(Cel::Bool(true)) => continue,
            Err(e) => return on_error(e),
            Ok(_) => {}
        }
        let from_expression = validation["messageExpression"]
            .as_str()
            .and_then(|me| match run(me, ctx) {
                Ok(Cel::String(s)) => Some(s.trim().to_string()),
                _ => None,
            })
            .filter(|m| !m.is_empty() && !m.contains('\n') && m.len() <= 5 * 1024);
        let message = from_expression
            .or_else(|| validation["message"].as_str().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()))
            .unwrap_or_else(|| format!("failed expression: {}", expression.trim()));
        return Some(Decision { message, reason: validation["reason"].as_str().map(String::from) });
    }
    None
}

fn name_of(attrs: &Attributes) -> String {
    if !attrs.name.is_empty() {
        return attrs.name.to_string();
    }
    let meta = attrs.object.map(|o| &o["metadata"]);
    meta.and_then(|m| m["name"].as_str().filter(|n| !n.is_empty()))
        .or_else(|| meta.and_then(|m| m["generateName"].as_str().filter(|n| !n.is_empty())))
        .unwrap_or("Unknown")
        .to_string()
}

fn denial(attrs: &Attributes, policy: &str, binding: &str, decision: Decision) -> ApiError {
    let cause =
        format!("ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {}", decision.message);
    let name = name_of(attrs);
    let (code, reason) = match decision.reason.as_deref() {
        Some("Forbidden") => (403, "Forbidden"),
        Some("Unauthorized") => (401, "Unauthorized"),
        Some("RequestEntityTooLarge") => (413, "RequestEntityTooLarge"),
        _ => (422, "Invalid"),
    };
    let mut error = ApiError::forbidden(format!("{} {name:?} is forbidden: {cause}", attrs.rt.qualified_name()))
        .with_details(
            json!({"name": name, "group": attrs.rt.group, "kind": attrs.rt.plural, "causes": [{"message": cause}]}),
        );
    error.code = code;
    error.reason = reason;
    error
}

/// Runs every policy that matches the request with each of its bindings that match too,
/// in name order; the first denial of a binding with the `Deny` action refuses the request.
pub fn admit(
    attrs: &Attributes,
    policies: &[&Value],
    bindings: &[&Value],
    namespace: Option<&Value>,
) -> Result<(), ApiError> {
    // Admission configuration itself is exempt, as on the API server.
    if attrs.rt.group == GROUP || policies.is_empty() {
        return Ok(());
    }
    let mut ctx = None;
    for policy in policies {
        let spec = &policy["spec"];
        let policy_name = policy["metadata"]["name"].as_str().unwrap_or_default();
        if !spec["paramKind"].is_null() || !matches_resources(&spec["matchConstraints"], attrs, namespace, true) {
            continue;
        }
        for binding in bindings.iter().filter(|b| b["spec"]["policyName"].as_str() == Some(policy_name)) {
            let bspec = &binding["spec"];
            if bspec["matchResources"].is_object()
                && !matches_resources(&bspec["matchResources"], attrs, namespace, false)
            {
                continue;
            }
            let ctx = ctx.get_or_insert_with(|| context(attrs, namespace));
            if let Some(decision) = validate_request(spec, ctx)
                && strings(&bspec["validationActions"]).iter().any(|a| a == "Deny")
            {
                let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default();
                return Err(denial(attrs, policy_name, binding_name, decision));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Registry;

    fn policy(validations: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]},
            "validations": validations,
        }});
        assert!(admit_policy(&mut p).is_empty());
        p
    }

    fn binding(extra: Value) -> Value {
        let mut b = json!({"metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"]}});
        b["spec"].as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        assert!(admit_binding(&mut b).is_empty());
        b
    }

    fn check(policy: &Value, binding: &Value, object: &Value, user: &UserInfo) -> Result<(), ApiError> {
        let rt = Registry::with_builtins().get("", "v1", "configmaps").unwrap();
        let attrs = Attributes {
            rt: &rt,
            subresource: "",
            operation: Operation::Create,
            namespace: "ns",
            name: object["metadata"]["name"].as_str().unwrap(),
            object: Some(object),
            old_object: None,
            user,
        };
        let ns = json!({"metadata": {"name": "ns", "labels": {"team": "a"}}});
        admit(&attrs, &[policy], &[binding], Some(&ns))
    }

    #[test]
    fn defaults_and_required_fields() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {}});
        let fields: Vec<String> = admit_policy(&mut p).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.matchConstraints", "spec.validations", "spec.auditAnnotations"]);
        assert_eq!(p["spec"]["failurePolicy"], "Fail");
        let mut bad = json!({"spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["x"]}]},
            "validations": [{"expression": "object.metadata.name =="}]}});
        let errors = admit_policy(&mut bad);
        assert_eq!(errors[0].field, "spec.validations[0].expression");
        assert!(errors[0].message.starts_with("compilation failed"), "{}", errors[0].message);
        assert_eq!(bad["spec"]["matchConstraints"]["resourceRules"][0]["scope"], "*");
        let mut b = json!({"spec": {"policyName": "p"}});
        assert_eq!(admit_binding(&mut b)[0].field, "spec.validationActions");
    }

    #[test]
    fn denials_carry_the_policy_binding_and_message() {
        let p = policy(
            json!([{"expression": "request.userInfo.username == 'alice'", "messageExpression": "'only alice, not ' + request.userInfo.username", "reason": "Forbidden"}]),
        );
        let b = binding(json!({}));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
        assert!(check(&p, &b, &cm, &UserInfo::impersonated("alice", &[], "")).is_ok());
        let err = check(&p, &b, &cm, &UserInfo::admin()).unwrap_err();
        assert_eq!((err.code, err.reason), (403, "Forbidden"));
        assert_eq!(
            err.message,
            "configmaps \"cm\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: only alice, not kubernetes-admin"
        );
        let p = policy(json!([{"expression": "false"}]));
        let err = check(&p, &b, &cm, &UserInfo::admin()).unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        assert!(err.message.ends_with("denied request: failed expression: false"), "{}", err.message);
    }

    #[test]
    fn bindings_narrow_by_namespace_and_conditions_skip() {
        let p = policy(json!([{"expression": "false", "message": "no"}]));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
        let other_team = binding(json!({"matchResources": {"namespaceSelector": {"matchLabels": {"team": "b"}}}}));
        assert!(check(&p, &other_team, &cm, &UserInfo::admin()).is_ok());
        let expr = binding(
            json!({"matchResources": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}}}),
        );
        assert!(check(&p, &expr, &cm, &UserInfo::admin()).is_err());
        let mut skipped = p.clone();
        skipped["spec"]["matchConditions"] =
            json!([{"name": "not-admin", "expression": "request.userInfo.username != 'kubernetes-admin'"}]);
        assert!(check(&skipped, &expr, &cm, &UserInfo::admin()).is_ok());
        let warn_only = binding(json!({"validationActions": ["Warn"]}));
        assert!(check(&p, &warn_only, &cm, &UserInfo::admin()).is_ok());
    }

    #[test]
    fn evaluation_errors_follow_the_failure_policy() {
        let mut p = policy(json!([{"expression": "object.spec.missing == 1"}]));
        let b = binding(json!({}));
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
        let err = check(&p, &b, &cm, &UserInfo::admin()).unwrap_err();
        assert!(err.message.contains("expression 'object.spec.missing == 1' resulted in error"), "{}", err.message);
        p["spec"]["failurePolicy"] = json!("Ignore");
        assert!(check(&p, &b, &cm, &UserInfo::admin()).is_ok());
    }

    #[test]
    fn impersonated_service_accounts_get_their_groups() {
        let sa = UserInfo::impersonated("system:serviceaccount:certpilot:certpilot", &[], "");
        assert_eq!(sa.groups, ["system:serviceaccounts", "system:serviceaccounts:certpilot", "system:authenticated"]);
        let user = UserInfo::impersonated("bob", &["devs".to_string()], "");
        assert_eq!(user.groups, ["devs", "system:authenticated"]);
    }
}
