//! What a request asks the authorizer for, derived from its method and path as the API
//! server's `RequestInfo` derives it, and the `403 Forbidden` a refusal becomes (worded as
//! `responsewriters.Forbidden` words it).

use crate::{
    error::ApiError,
    http::{Query, flag},
    meta,
};
use serde_json::{Map, Value, json};

/// A request on a resource: `list secrets in namespace a`, `create serviceaccounts/token b`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAction {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// Empty at the cluster scope; a Namespace's own name for requests on a Namespace.
    pub namespace: String,
    /// Empty for collections, unless a list or watch selects one name with a field selector.
    pub name: String,
}

/// What the authorizer is asked to allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Resource(ResourceAction),
    /// Any other path (`/api`, `/apis/<group>/<version>`, `/openapi/v3`, `/version`): only
    /// `nonResourceURLs` rules apply, with the HTTP method as the verb.
    NonResource {
        verb: String,
        path: String,
    },
}

/// Path segments after the version that name the verb, for clients of old (`/api/v1/watch/…`).
const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
/// Subresources of a Namespace, which `/namespaces/<name>/` may be followed by.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl Action {
    /// The action of a request, as `RequestInfoFactory.NewRequestInfo` derives it.
    pub fn of_request(method: &str, path: &str, query: &Query) -> Self {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", rest @ ..] if rest.len() >= 2 => ("", rest),
            ["apis", group, rest @ ..] if rest.len() >= 2 => (*group, rest),
            _ => return Self::NonResource { verb: method.to_ascii_lowercase(), path: path.to_string() },
        };
        // `rest` starts with the version, which RBAC does not look at.
        let mut rest = &rest[1..];
        let verb = match rest.first() {
            Some(special) if SPECIAL_VERBS.contains(special) => {
                rest = &rest[1..];
                special.to_string()
            }
            _ => verb_of_method(method).to_string(),
        };
        let mut namespace = "";
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            namespace = rest[1];
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        let segment = |i: usize| rest.get(i).copied().unwrap_or_default().to_string();
        // What follows a proxied name is the proxied path, not a subresource.
        let subresource = if verb == "proxy" { String::new() } else { segment(2) };
        let mut action = ResourceAction {
            verb,
            group: group.to_string(),
            resource: segment(0),
            subresource,
            namespace: namespace.to_string(),
            name: segment(1),
        };
        action.refine_collection_verb(query);
        Self::Resource(action)
    }

    pub fn verb(&self) -> &str {
        match self {
            Self::Resource(r) => &r.verb,
            Self::NonResource { verb, .. } => verb,
        }
    }

    /// The same request with another verb (constrained impersonation's `impersonate-on:…`).
    pub fn with_verb(&self, verb: String) -> Self {
        match self {
            Self::Resource(r) => Self::Resource(ResourceAction { verb, ..r.clone() }),
            Self::NonResource { path, .. } => Self::NonResource { verb, path: path.clone() },
        }
    }

    /// `User "u" cannot list resource "secrets" in API group "" in the namespace "a"`.
    fn refusal(&self, username: &str) -> String {
        let r = match self {
            Self::NonResource { verb, path } => return format!("User {username:?} cannot {verb} path {path:?}"),
            Self::Resource(r) => r,
        };
        let resource =
            if r.subresource.is_empty() { r.resource.clone() } else { format!("{}/{}", r.resource, r.subresource) };
        let scope = if r.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", r.namespace)
        };
        format!("User {username:?} cannot {} resource {resource:?} in API group {:?} {scope}", r.verb, r.group)
    }
}

fn verb_of_method(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

impl ResourceAction {
    /// A `get` without a name is a `list` or a `watch`, and a `delete` without one a
    /// `deletecollection`. A list or watch of one name (`fieldSelector=metadata.name=x`) is
    /// authorized for that name, so that `resourceNames` rules can allow it.
    fn refine_collection_verb(&mut self, query: &Query) {
        if !self.name.is_empty() {
            return;
        }
        match self.verb.as_str() {
            "get" => {
                self.verb = if flag(query, "watch") { "watch" } else { "list" }.to_string();
                if let Some(name) = selected_name(query).filter(|n| meta::path_segment_name_errors(n).is_empty()) {
                    self.name = name.to_string();
                }
            }
            "delete" => self.verb = "deletecollection".to_string(),
            _ => {}
        }
    }
}

/// The name a field selector requires exactly (`metadata.name=x` or `metadata.name==x`).
fn selected_name(query: &Query) -> Option<&str> {
    query.get("fieldSelector")?.split(',').find_map(|term| {
        let (field, value) = term.split_once('=')?;
        let value = value.strip_prefix('=').unwrap_or(value);
        (field.trim() == "metadata.name").then_some(value.trim())
    })
}

/// A refusal of `action` to `username`, with the authorizer's reason if it gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub username: String,
    /// Boxed: a refusal travels up through `Result`s, which should stay small.
    pub action: Box<Action>,
    pub reason: String,
}

impl From<Forbidden> for ApiError {
    /// `apierrors.NewForbidden` of the request's group, resource and name.
    fn from(forbidden: Forbidden) -> Self {
        let Forbidden { username, action, reason } = forbidden;
        let mut cause = action.refusal(&username);
        if !reason.is_empty() {
            cause = format!("{cause}: {reason}");
        }
        let Action::Resource(r) = action.as_ref() else {
            return ApiError::forbidden(format!("forbidden: {cause}")).with_details(json!({}));
        };
        let resource = if r.group.is_empty() { r.resource.clone() } else { format!("{}.{}", r.resource, r.group) };
        let message = match (resource.is_empty(), r.name.is_empty()) {
            (true, _) => format!("forbidden: {cause}"),
            (false, true) => format!("{resource} is forbidden: {cause}"),
            (false, false) => format!("{resource} {:?} is forbidden: {cause}", r.name),
        };
        let mut details = Map::new();
        for (field, value) in [("name", &r.name), ("group", &r.group), ("kind", &r.resource)] {
            if !value.is_empty() {
                details.insert(field.to_string(), json!(value));
            }
        }
        ApiError::forbidden(message).with_details(Value::Object(details))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn action(method: &str, path_and_query: &str) -> Action {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let query: Query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
            .collect();
        Action::of_request(method, path, &query)
    }

    /// An action on a resource, as the tests here and in `rbac.rs` write them.
    pub(crate) fn resource(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Action {
        Action::Resource(ResourceAction {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        })
    }

    #[test]
    fn paths_become_the_api_servers_request_attributes() {
        assert_eq!(action("GET", "/api/v1/namespaces/a/secrets"), resource("list", "", "secrets", "", "a", ""));
        assert_eq!(action("GET", "/api/v1/secrets?watch=true"), resource("watch", "", "secrets", "", "", ""));
        assert_eq!(
            action("GET", "/api/v1/namespaces/a/secrets?fieldSelector=metadata.name=x"),
            resource("list", "", "secrets", "", "a", "x")
        );
        assert_eq!(
            action("DELETE", "/api/v1/namespaces/a/secrets"),
            resource("deletecollection", "", "secrets", "", "a", "")
        );
        assert_eq!(
            action("PATCH", "/apis/certpilot.dev/v1alpha1/namespaces/a/certificates/c/status"),
            resource("patch", "certpilot.dev", "certificates", "status", "a", "c")
        );
        assert_eq!(
            action("POST", "/api/v1/namespaces/a/serviceaccounts/sa/token"),
            resource("create", "", "serviceaccounts", "token", "a", "sa")
        );
        // A Namespace is in its own namespace; its status is a subresource, not a kind.
        assert_eq!(action("GET", "/api/v1/namespaces/a"), resource("get", "", "namespaces", "", "a", "a"));
        assert_eq!(
            action("PUT", "/api/v1/namespaces/a/status"),
            resource("update", "", "namespaces", "status", "a", "a")
        );
        assert_eq!(action("GET", "/api/v1/namespaces"), resource("list", "", "namespaces", "", "", ""));
        assert_eq!(action("GET", "/api/v1/watch/namespaces/a/secrets"), resource("watch", "", "secrets", "", "a", ""));
        for discovery in ["/api", "/api/v1", "/apis", "/apis/events.k8s.io/v1", "/openapi/v3", "/version"] {
            assert_eq!(action("GET", discovery), Action::NonResource { verb: "get".into(), path: discovery.into() });
        }
    }

    #[test]
    fn refusals_are_worded_as_the_api_server_words_them() {
        let sa = "system:serviceaccount:x:y";
        let refuse = |action: Action, reason: &str| {
            ApiError::from(Forbidden { username: sa.into(), action: Box::new(action), reason: reason.into() })
        };
        let list = refuse(resource("list", "", "secrets", "", "z", ""), "");
        assert_eq!(
            list.message,
            r#"secrets is forbidden: User "system:serviceaccount:x:y" cannot list resource "secrets" in API group "" in the namespace "z""#
        );
        assert_eq!((list.code, list.reason, list.details), (403, "Forbidden", Some(json!({"kind": "secrets"}))));
        let crd =
            refuse(resource("get", "apiextensions.k8s.io", "customresourcedefinitions", "", "", "w.example.com"), "");
        assert_eq!(
            crd.message,
            r#"customresourcedefinitions.apiextensions.k8s.io "w.example.com" is forbidden: User "system:serviceaccount:x:y" cannot get resource "customresourcedefinitions" in API group "apiextensions.k8s.io" at the cluster scope"#
        );
        assert_eq!(
            crd.details,
            Some(
                json!({"name": "w.example.com", "group": "apiextensions.k8s.io", "kind": "customresourcedefinitions"})
            )
        );
        let status = refuse(
            resource("patch", "", "secrets", "status", "z", "s"),
            r#"RBAC: role.rbac.authorization.k8s.io "r" not found"#,
        );
        assert_eq!(
            status.message,
            r#"secrets "s" is forbidden: User "system:serviceaccount:x:y" cannot patch resource "secrets/status" in API group "" in the namespace "z": RBAC: role.rbac.authorization.k8s.io "r" not found"#
        );
        let path = refuse(Action::NonResource { verb: "get".into(), path: "/metrics".into() }, "");
        assert_eq!(path.message, r#"forbidden: User "system:serviceaccount:x:y" cannot get path "/metrics""#);
        assert_eq!(path.details, Some(json!({})));
    }
}
