//! The RBAC authorizer (`rbac.authorization.k8s.io/v1`), deciding as kube-apiserver's does:
//! members of `system:masters` may do anything; anyone else needs a rule of a ClusterRole bound
//! by a ClusterRoleBinding, or of a Role or ClusterRole bound by a RoleBinding in the request's
//! namespace. Rules match verbs, API groups, resources with their subresources, resource names
//! and non-resource URLs, each with `*`. `aggregationRule` is not evaluated (certpilot's
//! manifests do not use it), and neither is the escalation check on writing roles and bindings.
//!
//! The server starts with the default policy every user relies on, as a real cluster's
//! bootstrap writes it: discovery, `/version` and the health paths for every authenticated user,
//! `cluster-admin` for `system:masters`, and kubeadm's `kubeadm:cluster-admins` binding, which
//! makes the server's admin (`UserInfo::admin`) a cluster admin.

use crate::{
    attributes::{Action, Forbidden, ResourceAction},
    policy::UserInfo,
    store::{Key, State},
};
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
use serde::Deserialize;
use serde_json::{Value, json};

pub const GROUP: &str = "rbac.authorization.k8s.io";
/// The group the API server allows everything without asking RBAC.
const PRIVILEGED_GROUP: &str = "system:masters";
const ALL: &str = "*";

/// A binding whose role RBAC could not read: the API server names these in its refusals
/// (`RBAC: [role.rbac.authorization.k8s.io "x" not found, …]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnresolvedRole {
    #[error("role.rbac.authorization.k8s.io {0:?} not found")]
    Role(String),
    #[error("clusterrole.rbac.authorization.k8s.io {0:?} not found")]
    ClusterRole(String),
    #[error("unsupported role reference kind: {0:?}")]
    Kind(String),
}

/// RBAC's "no", with the roles it could not read on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denied {
    pub unresolved: Vec<UnresolvedRole>,
}

impl Denied {
    /// The reason the API server appends to the refusal: empty when every role was found.
    pub fn reason(&self) -> String {
        let mut messages: Vec<String> = Vec::new();
        for message in self.unresolved.iter().map(ToString::to_string) {
            if !messages.contains(&message) {
                messages.push(message);
            }
        }
        match messages.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        }
    }
}

/// The parts of a RoleBinding or ClusterRoleBinding the authorizer reads.
#[derive(Deserialize)]
struct Binding {
    #[serde(rename = "roleRef")]
    role_ref: RoleRef,
    #[serde(default)]
    subjects: Vec<Subject>,
}

/// Whether RBAC allows `user` to do `action`.
pub fn authorize(state: &State, user: &UserInfo, action: &Action) -> Result<(), Denied> {
    if user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
        return Ok(());
    }
    let namespace = match action {
        Action::Resource(r) => r.namespace.as_str(),
        Action::NonResource { .. } => "",
    };
    let mut denied = Denied::default();
    for (binding, binding_namespace) in bindings_for(state, namespace) {
        let Ok(binding) = Binding::deserialize(binding) else {
            continue;
        };
        if !binding.subjects.iter().any(|s| applies_to(user, s, binding_namespace)) {
            continue;
        }
        match bound_rules(state, &binding.role_ref, binding_namespace) {
            Ok(rules) if rules.iter().any(|rule| rule_allows(rule, action)) => return Ok(()),
            Ok(_) => {}
            Err(unresolved) => denied.unresolved.push(unresolved),
        }
    }
    Err(denied)
}

/// [`authorize`], with a denial worded for the client.
pub fn require(state: &State, user: &UserInfo, action: &Action) -> Result<(), Forbidden> {
    authorize(state, user, action).map_err(|denied| Forbidden {
        username: user.username.clone(),
        action: Box::new(action.clone()),
        reason: denied.reason(),
    })
}

/// Every ClusterRoleBinding, then the RoleBindings of `namespace`, each with the namespace its
/// subjects and role reference are read in ("" for cluster bindings).
fn bindings_for<'a>(state: &'a State, namespace: &'a str) -> impl Iterator<Item = (&'a Value, &'a str)> {
    let cluster = state.objects_of(GROUP, "clusterrolebindings").into_iter().map(|b| (b, ""));
    let local = state
        .objects_of(GROUP, "rolebindings")
        .into_iter()
        .filter(move |b| !namespace.is_empty() && b["metadata"]["namespace"].as_str() == Some(namespace))
        .map(move |b| (b, namespace));
    cluster.chain(local)
}

/// `appliesToUser`: a ServiceAccount subject without a namespace is one of the binding's.
fn applies_to(user: &UserInfo, subject: &Subject, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.username == subject.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = subject.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or(binding_namespace);
            !namespace.is_empty() && user.username == format!("system:serviceaccount:{namespace}:{}", subject.name)
        }
        _ => false,
    }
}

/// The rules of the role a binding references: a Role of the binding's namespace or a ClusterRole.
fn bound_rules(state: &State, role_ref: &RoleRef, binding_namespace: &str) -> Result<Vec<PolicyRule>, UnresolvedRole> {
    let (plural, namespace, missing): (_, _, fn(String) -> UnresolvedRole) = match role_ref.kind.as_str() {
        "Role" => ("roles", binding_namespace, UnresolvedRole::Role),
        "ClusterRole" => ("clusterroles", "", UnresolvedRole::ClusterRole),
        other => return Err(UnresolvedRole::Kind(other.to_string())),
    };
    let key =
        Key { group: GROUP.into(), plural: plural.into(), namespace: namespace.into(), name: role_ref.name.clone() };
    let role = state.object(&key).ok_or_else(|| missing(role_ref.name.clone()))?;
    Ok(Option::<Vec<PolicyRule>>::deserialize(&role["rules"]).ok().flatten().unwrap_or_default())
}

/// `RuleAllows`.
fn rule_allows(rule: &PolicyRule, action: &Action) -> bool {
    if !listed(&rule.verbs, action.verb()) {
        return false;
    }
    match action {
        Action::Resource(r) => {
            listed(rule.api_groups.as_deref().unwrap_or_default(), &r.group)
                && resource_matches(rule, r)
                && resource_name_matches(rule, &r.name)
        }
        Action::NonResource { path, .. } => rule.non_resource_urls.iter().flatten().any(|url| {
            url == ALL || url == path || url.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
        }),
    }
}

/// Whether `values` holds `wanted` or `*`.
fn listed(values: &[String], wanted: &str) -> bool {
    values.iter().any(|v| v == ALL || v == wanted)
}

/// `ResourceMatches`: `secrets`, `certificates/status`, `*`, or `*/status` for any status.
fn resource_matches(rule: &PolicyRule, action: &ResourceAction) -> bool {
    let combined = if action.subresource.is_empty() {
        action.resource.clone()
    } else {
        format!("{}/{}", action.resource, action.subresource)
    };
    rule.resources.iter().flatten().any(|resource| {
        resource == ALL
            || *resource == combined
            || (!action.subresource.is_empty() && resource.strip_prefix("*/") == Some(action.subresource.as_str()))
    })
}

/// `ResourceNameMatches`: a rule naming resources allows only requests naming one of them,
/// so never a plain list, watch, create or deletecollection.
fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    match &rule.resource_names {
        Some(names) if !names.is_empty() => names.iter().any(|n| n == name),
        _ => true,
    }
}

/// Writes the default roles and bindings, as the API server's bootstrap (and kubeadm) do.
pub fn bootstrap(state: &mut State) {
    for (plural, object) in default_policy() {
        let rt = state.registry.get(GROUP, "v1", plural).expect("RBAC kinds are built in");
        state.create(&rt, "", object, "kube-apiserver", &UserInfo::apiserver()).expect("the default policy is valid");
    }
}

fn default_policy() -> Vec<(&'static str, Value)> {
    let discovery_urls = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let public_urls = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let issuer_urls = [
        "/.well-known/openid-configuration",
        "/.well-known/openid-configuration/",
        "/openid/v1/jwks",
        "/openid/v1/jwks/",
    ];
    let basic_user = json!([
        {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
    ]);
    let everything = json!([
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {"nonResourceURLs": ["*"], "verbs": ["*"]},
    ]);
    let read_urls = |urls: &[&str]| json!([{"nonResourceURLs": urls, "verbs": ["get"]}]);
    let roles = [
        ("cluster-admin", everything, vec!["system:masters"]),
        ("system:discovery", read_urls(&discovery_urls), vec!["system:authenticated"]),
        ("system:basic-user", basic_user, vec!["system:authenticated"]),
        ("system:public-info-viewer", read_urls(&public_urls), vec!["system:authenticated", "system:unauthenticated"]),
        ("system:service-account-issuer-discovery", read_urls(&issuer_urls), vec!["system:serviceaccounts"]),
    ];
    let mut objects = Vec::new();
    for (name, rules, groups) in roles {
        objects.push(("clusterroles", bootstrap_object("ClusterRole", name, json!({"rules": rules}))));
        objects.push(("clusterrolebindings", cluster_role_binding(name, name, &groups)));
    }
    // kubeadm binds its admin group (the admin.conf user's) to cluster-admin.
    let mut kubeadm = cluster_role_binding("kubeadm:cluster-admins", "cluster-admin", &["kubeadm:cluster-admins"]);
    kubeadm["metadata"] = json!({"name": "kubeadm:cluster-admins"});
    objects.push(("clusterrolebindings", kubeadm));
    objects
}

fn bootstrap_object(kind: &str, name: &str, body: Value) -> Value {
    let mut object = json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": kind,
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
    });
    object.as_object_mut().expect("an object").extend(body.as_object().cloned().unwrap_or_default());
    object
}

fn cluster_role_binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups.iter().map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g})).collect();
    bootstrap_object(
        "ClusterRoleBinding",
        name,
        json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{attributes::tests::resource, store::Store};

    fn sa(namespace: &str, name: &str) -> UserInfo {
        UserInfo::impersonated(&format!("system:serviceaccount:{namespace}:{name}"), &[], "")
    }

    fn put(state: &mut State, plural: &str, namespace: &str, object: Value) {
        let rt = state.registry.get(GROUP, "v1", plural).unwrap();
        state.create(&rt, namespace, object, "test", &UserInfo::admin()).unwrap();
    }

    fn role(state: &mut State, kind: &str, namespace: &str, name: &str, rules: Value) {
        let plural = if kind == "Role" { "roles" } else { "clusterroles" };
        put(state, plural, namespace, json!({"metadata": {"name": name, "namespace": namespace}, "rules": rules}));
    }

    fn bind(state: &mut State, namespace: &str, name: &str, role_kind: &str, role: &str, subjects: Value) {
        let (plural, meta) = if namespace.is_empty() {
            ("clusterrolebindings", json!({"name": name}))
        } else {
            ("rolebindings", json!({"name": name, "namespace": namespace}))
        };
        let binding = json!({"metadata": meta, "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": role}, "subjects": subjects});
        put(state, plural, namespace, binding);
    }

    fn state_with_namespaces(store: &Store) -> std::sync::MutexGuard<'_, State> {
        let mut state = store.lock();
        for ns in ["a", "b"] {
            let rt = state.registry.get("", "v1", "namespaces").unwrap();
            state.create(&rt, "", json!({"metadata": {"name": ns}}), "test", &UserInfo::admin()).unwrap();
        }
        state
    }

    #[test]
    fn the_admin_and_system_masters_may_do_anything_others_nothing_but_discovery() {
        let store = Store::new(100);
        let state = store.lock();
        let delete_crds = resource("deletecollection", "apiextensions.k8s.io", "customresourcedefinitions", "", "", "");
        assert_eq!(authorize(&state, &UserInfo::admin(), &delete_crds), Ok(()));
        let masters = UserInfo::impersonated("root", &["system:masters".to_string()], "");
        assert_eq!(
            authorize(&state, &masters, &Action::NonResource { verb: "get".into(), path: "/metrics".into() }),
            Ok(())
        );
        let bot = sa("a", "bot");
        assert_eq!(authorize(&state, &bot, &resource("list", "", "secrets", "", "a", "")), Err(Denied::default()));
        for path in ["/api", "/api/v1", "/apis/certpilot.dev/v1alpha1", "/openapi/v3/apis/apps/v1", "/version"] {
            assert_eq!(
                authorize(&state, &bot, &Action::NonResource { verb: "get".into(), path: path.into() }),
                Ok(()),
                "{path}"
            );
        }
        let post = Action::NonResource { verb: "post".into(), path: "/api".into() };
        assert!(authorize(&state, &bot, &post).is_err());
        assert!(authorize(&state, &bot, &Action::NonResource { verb: "get".into(), path: "/metrics".into() }).is_err());
    }

    #[test]
    fn roles_bind_in_their_namespace_cluster_roles_everywhere() {
        let store = Store::new(100);
        let mut state = state_with_namespaces(&store);
        let bot = sa("a", "bot");
        let list_in = |ns: &str| resource("list", "", "secrets", "", ns, "");
        role(
            &mut state,
            "Role",
            "a",
            "reader",
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]),
        );
        // A ServiceAccount subject without a namespace is one of the binding's namespace.
        bind(&mut state, "a", "reader", "Role", "reader", json!([{"kind": "ServiceAccount", "name": "bot"}]));
        assert_eq!(authorize(&state, &bot, &list_in("a")), Ok(()));
        assert!(authorize(&state, &bot, &list_in("b")).is_err());
        assert!(authorize(&state, &bot, &resource("list", "", "secrets", "", "", "")).is_err());
        role(
            &mut state,
            "ClusterRole",
            "",
            "lease-writer",
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["*"], "verbs": ["*"]}]),
        );
        bind(
            &mut state,
            "b",
            "leases",
            "ClusterRole",
            "lease-writer",
            json!([{"kind": "Group", "name": "system:serviceaccounts:a"}]),
        );
        let update_lease = |ns: &str| resource("update", "coordination.k8s.io", "leases", "", ns, "l");
        assert_eq!(authorize(&state, &bot, &update_lease("b")), Ok(()));
        assert!(authorize(&state, &bot, &update_lease("a")).is_err(), "a RoleBinding grants in its namespace only");
        bind(
            &mut state,
            "",
            "leases",
            "ClusterRole",
            "lease-writer",
            json!([{"kind": "User", "name": "system:serviceaccount:a:bot"}]),
        );
        assert_eq!(authorize(&state, &bot, &update_lease("a")), Ok(()));
        assert!(authorize(&state, &sa("a", "other"), &update_lease("a")).is_err());
    }

    #[test]
    fn subresources_and_resource_names_need_their_own_grants() {
        let store = Store::new(100);
        let mut state = state_with_namespaces(&store);
        let bot = sa("a", "bot");
        role(
            &mut state,
            "Role",
            "a",
            "r",
            json!([
                {"apiGroups": ["certpilot.dev"], "resources": ["certificates"], "verbs": ["*"]},
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mine"], "verbs": ["get", "list", "watch", "create"]},
                {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["get"]},
            ]),
        );
        bind(&mut state, "a", "r", "Role", "r", json!([{"kind": "ServiceAccount", "name": "bot", "namespace": "a"}]));
        let allowed = |action: Action| authorize(&state, &bot, &action).is_ok();
        assert!(allowed(resource("patch", "certpilot.dev", "certificates", "", "a", "c")));
        assert!(!allowed(resource("patch", "certpilot.dev", "certificates", "status", "a", "c")));
        assert!(allowed(resource("get", "apps", "deployments", "scale", "a", "d")));
        assert!(allowed(resource("get", "", "secrets", "", "a", "mine")));
        assert!(!allowed(resource("get", "", "secrets", "", "a", "other")));
        assert!(!allowed(resource("list", "", "secrets", "", "a", "")));
        assert!(allowed(resource("watch", "", "secrets", "", "a", "mine")), "a watch of one name");
        assert!(!allowed(resource("create", "", "secrets", "", "a", "")));
    }

    #[test]
    fn missing_roles_are_named_in_the_reason() {
        let store = Store::new(100);
        let mut state = state_with_namespaces(&store);
        let subject = json!([{"kind": "ServiceAccount", "name": "bot", "namespace": "a"}]);
        bind(&mut state, "a", "x", "Role", "gone", subject.clone());
        let denied = authorize(&state, &sa("a", "bot"), &resource("get", "", "secrets", "", "a", "s")).unwrap_err();
        assert_eq!(denied.reason(), r#"RBAC: role.rbac.authorization.k8s.io "gone" not found"#);
        bind(&mut state, "a", "y", "ClusterRole", "gone-too", subject);
        let denied = authorize(&state, &sa("a", "bot"), &resource("get", "", "secrets", "", "a", "s")).unwrap_err();
        assert_eq!(
            denied.reason(),
            r#"RBAC: [role.rbac.authorization.k8s.io "gone" not found, clusterrole.rbac.authorization.k8s.io "gone-too" not found]"#
        );
    }
}
