//! Impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`), authorized for
//! the authenticated user as kube-apiserver 1.36 authorizes it.
//!
//! It tries its modes in order, and the first that allows the request decides who makes it:
//! - constrained impersonation (KEP 5284): a mode applies to some users (`arbitrary-node` to
//!   `system:node:<name>`, `serviceaccount` to `system:serviceaccount:<ns>:<name>`, both with
//!   nothing but the user name; `user-info` to anyone else). It needs `impersonate-on:<mode>:<verb>`
//!   on what the request does, then `impersonate:<mode>` (group `authentication.k8s.io`) on each
//!   part of the identity: `users`, `serviceaccounts`, `nodes`, `uids`, `groups`;
//! - legacy impersonation: the `impersonate` verb on `users`, `serviceaccounts` and `groups`
//!   (core group) and `uids` (`authentication.k8s.io`).
//!
//! When none allows it, the refusal is the first mode's that applied. (The API server tries the
//! mode that last worked for a requester first, so one who impersonated before may see another
//! mode's refusal; this server keeps no such memory.) `Impersonate-Extra-*` headers are ignored:
//! the server's users have no extra fields. The admin (a cluster admin through RBAC) may
//! impersonate anyone, as on a real cluster.

use crate::{
    attributes::{Action, Forbidden, ResourceAction},
    error::{ApiError, ApiResult},
    policy::UserInfo,
    rbac,
    store::State,
};
use axum::http::HeaderMap;

const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";
/// From this many groups on, constrained impersonation first asks whether all groups may be.
const MANY_GROUPS: usize = 4;

/// The identity the headers ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    name: String,
    uid: String,
    groups: Vec<String>,
}

impl Wanted {
    fn only_username(&self) -> bool {
        self.uid.is_empty() && self.groups.is_empty()
    }
}

/// Who makes the request: `requestor`, or the user it impersonates if it may.
pub fn impersonate(state: &State, requestor: UserInfo, headers: &HeaderMap, action: &Action) -> ApiResult<UserInfo> {
    let Some(wanted) = wanted(headers)? else {
        return Ok(requestor);
    };
    let mut first_refusal = None;
    for mode in Mode::ALL {
        match mode.check(state, &requestor, &wanted, action) {
            Ok(Some(user)) => return Ok(user),
            Ok(None) => {}
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    Err(first_refusal.expect("legacy impersonation applies to every user").into())
}

/// The impersonation headers, if any; groups or a uid without a user are a bad request.
fn wanted(headers: &HeaderMap) -> ApiResult<Option<Wanted>> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let groups: Vec<String> =
        headers.get_all("impersonate-group").iter().filter_map(|v| v.to_str().ok().map(String::from)).collect();
    let wanted = Wanted { name: text("impersonate-user"), uid: text("impersonate-uid"), groups };
    match (wanted.name.is_empty(), wanted.only_username()) {
        (false, _) => Ok(Some(wanted)),
        (true, true) => Ok(None),
        (true, false) => Err(ApiError::bad_request(format!(
            "requested &user.DefaultInfo{{Name:\"\", UID:{:?}, Groups:{}, Extra:map[string][]string(nil)}} without impersonating a user name",
            wanted.uid,
            go_string_slice(&wanted.groups)
        ))),
    }
}

/// A `[]string` as Go's `%#v` prints it.
fn go_string_slice(values: &[String]) -> String {
    if values.is_empty() {
        return "[]string(nil)".to_string();
    }
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ArbitraryNode,
    ServiceAccount,
    UserInfo,
    Legacy,
}

impl Mode {
    /// The API server's order. (`associated-node`, first there, needs a token bound to a
    /// node, which this server never issues.)
    const ALL: [Mode; 4] = [Mode::ArbitraryNode, Mode::ServiceAccount, Mode::UserInfo, Mode::Legacy];

    fn name(self) -> &'static str {
        match self {
            Self::ArbitraryNode => "arbitrary-node",
            Self::ServiceAccount => "serviceaccount",
            Self::UserInfo => "user-info",
            Self::Legacy => "legacy",
        }
    }

    fn constrained(self) -> bool {
        self != Self::Legacy
    }

    fn applies_to(self, wanted: &Wanted) -> bool {
        let node = node_name(&wanted.name).is_some();
        let service_account = service_account(&wanted.name).is_some();
        match self {
            Self::ArbitraryNode => wanted.only_username() && node,
            Self::ServiceAccount => wanted.only_username() && service_account,
            Self::UserInfo => !node && !service_account,
            Self::Legacy => true,
        }
    }

    /// The verb and group of the identity checks.
    fn identity_verb(self) -> String {
        if self.constrained() { format!("impersonate:{}", self.name()) } else { "impersonate".to_string() }
    }

    fn identity_group(self) -> &'static str {
        if self.constrained() { AUTHENTICATION_GROUP } else { "" }
    }

    /// The impersonated user if this mode allows it; `None` if it does not apply.
    fn check(
        self,
        state: &State,
        requestor: &UserInfo,
        wanted: &Wanted,
        action: &Action,
    ) -> Result<Option<UserInfo>, Forbidden> {
        if !self.applies_to(wanted) {
            return Ok(None);
        }
        if self.constrained() {
            let on = action.with_verb(format!("impersonate-on:{}:{}", self.name(), action.verb()));
            rbac::require(state, requestor, &on)?;
        }
        let checks = IdentityChecks { mode: self, state, requestor };
        let mut user =
            UserInfo { username: wanted.name.clone(), uid: wanted.uid.clone(), groups: wanted.groups.clone() };
        checks.username(&wanted.name, &mut user)?;
        if !wanted.uid.is_empty() {
            checks.require(checks.action("uids", "", &wanted.uid).in_group(AUTHENTICATION_GROUP))?;
        }
        checks.groups(&wanted.groups)?;
        if user.username == "system:anonymous" {
            ensure_group(&mut user, UNAUTHENTICATED);
        } else if !user.groups.iter().any(|g| g == UNAUTHENTICATED) {
            ensure_group(&mut user, AUTHENTICATED);
        }
        Ok(Some(user))
    }
}

/// The checks of one mode on the parts of the wanted identity.
struct IdentityChecks<'a> {
    mode: Mode,
    state: &'a State,
    requestor: &'a UserInfo,
}

impl IdentityChecks<'_> {
    fn action(&self, resource: &str, namespace: &str, name: &str) -> ResourceAction {
        ResourceAction {
            verb: self.mode.identity_verb(),
            group: self.mode.identity_group().to_string(),
            resource: resource.to_string(),
            subresource: String::new(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn require(&self, action: ResourceAction) -> Result<(), Forbidden> {
        rbac::require(self.state, self.requestor, &Action::Resource(action))
    }

    fn refuse(&self, action: ResourceAction, reason: &str) -> Forbidden {
        Forbidden {
            username: self.requestor.username.clone(),
            action: Box::new(Action::Resource(action)),
            reason: reason.into(),
        }
    }

    /// A node (constrained modes only) or a ServiceAccount gets its fixed groups.
    fn username(&self, username: &str, user: &mut UserInfo) -> Result<(), Forbidden> {
        if let Some(node) = node_name(username).filter(|_| self.mode.constrained()) {
            user.groups = vec!["system:nodes".to_string()];
            return self.require(self.action("nodes", "", node));
        }
        if let Some((namespace, name)) = service_account(username) {
            if user.groups.is_empty() {
                user.groups = vec!["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{namespace}")];
            }
            return self.require(self.action("serviceaccounts", namespace, name));
        }
        self.require(self.action("users", "", username))
    }

    fn groups(&self, groups: &[String]) -> Result<(), Forbidden> {
        if groups.is_empty() {
            return Ok(());
        }
        if self.mode.constrained() {
            if groups.iter().any(String::is_empty) {
                return Err(
                    self.refuse(self.action("groups", "", ""), "impersonating the empty string group is not allowed")
                );
            }
            if groups.iter().any(|g| g == "system:masters") {
                let action = self.action("groups", "", "system:masters");
                return Err(self.refuse(action, "impersonating the system:masters group is not allowed"));
            }
            if groups.len() >= MANY_GROUPS && self.require(self.action("groups", "", "*")).is_ok() {
                return Ok(());
            }
        }
        groups.iter().try_for_each(|group| self.require(self.action("groups", "", group)))
    }
}

impl ResourceAction {
    fn in_group(mut self, group: &str) -> Self {
        self.group = group.to_string();
        self
    }
}

fn ensure_group(user: &mut UserInfo, group: &str) {
    if !user.groups.iter().any(|g| g == group) {
        user.groups.push(group.to_string());
    }
}

/// `system:serviceaccount:<namespace>:<name>` → (namespace, name).
fn service_account(username: &str) -> Option<(&str, &str)> {
    let (namespace, name) = username.strip_prefix("system:serviceaccount:")?.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// `system:node:<name>` with a DNS subdomain for a name → the name.
fn node_name(username: &str) -> Option<&str> {
    username.strip_prefix("system:node:").filter(|name| crate::meta::dns1123_subdomain_errors(name).is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn list_secrets() -> Action {
        Action::Resource(ResourceAction {
            verb: "list".into(),
            resource: "secrets".into(),
            namespace: "a".into(),
            ..Default::default()
        })
    }

    fn bot() -> UserInfo {
        UserInfo::service_account("a", "bot")
    }

    fn grant(state: &mut State, rules: serde_json::Value) {
        let role = state.registry.get(rbac::GROUP, "v1", "clusterroles").unwrap();
        let binding = state.registry.get(rbac::GROUP, "v1", "clusterrolebindings").unwrap();
        let name = uuid::Uuid::new_v4().to_string();
        state.create(&role, "", json!({"metadata": {"name": name}, "rules": rules}), "t", &UserInfo::admin()).unwrap();
        let bind = json!({"metadata": {"name": name}, "roleRef": {"apiGroup": rbac::GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "a"}]});
        state.create(&binding, "", bind, "t", &UserInfo::admin()).unwrap();
    }

    fn refusal(result: ApiResult<UserInfo>) -> String {
        result.unwrap_err().message
    }

    #[test]
    fn the_admin_impersonates_anyone_and_service_accounts_get_their_groups() {
        let store = Store::new(100);
        let state = store.lock();
        let as_sa = headers(&[("impersonate-user", "system:serviceaccount:certpilot:certpilot")]);
        let user = impersonate(&state, UserInfo::admin(), &as_sa, &list_secrets()).unwrap();
        assert_eq!(user.username, "system:serviceaccount:certpilot:certpilot");
        assert_eq!(user.groups, ["system:serviceaccounts", "system:serviceaccounts:certpilot", AUTHENTICATED]);
        let as_root = headers(&[("impersonate-user", "root"), ("impersonate-group", "system:masters")]);
        let root = impersonate(&state, UserInfo::admin(), &as_root, &list_secrets()).unwrap();
        assert_eq!(root.groups, ["system:masters", AUTHENTICATED], "legacy impersonation allows system:masters");
        assert_eq!(impersonate(&state, bot(), &HeaderMap::new(), &list_secrets()).unwrap(), bot());
    }

    #[test]
    fn others_need_rbac_and_are_refused_in_the_api_servers_words() {
        let store = Store::new(100);
        let mut state = store.lock();
        let as_bob = headers(&[("impersonate-user", "bob")]);
        assert_eq!(
            refusal(impersonate(&state, bot(), &as_bob, &list_secrets())),
            r#"secrets is forbidden: User "system:serviceaccount:a:bot" cannot impersonate-on:user-info:list resource "secrets" in API group "" in the namespace "a""#
        );
        let as_sa = headers(&[("impersonate-user", "system:serviceaccount:a:zzz")]);
        assert_eq!(
            refusal(impersonate(&state, bot(), &as_sa, &list_secrets())),
            r#"secrets is forbidden: User "system:serviceaccount:a:bot" cannot impersonate-on:serviceaccount:list resource "secrets" in API group "" in the namespace "a""#
        );
        // Constrained: allowed to list as bob, but not allowed to be bob.
        grant(
            &mut state,
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["impersonate-on:user-info:list"]}]),
        );
        assert_eq!(
            refusal(impersonate(&state, bot(), &as_bob, &list_secrets())),
            r#"users.authentication.k8s.io "bob" is forbidden: User "system:serviceaccount:a:bot" cannot impersonate:user-info resource "users" in API group "authentication.k8s.io" at the cluster scope"#
        );
        grant(
            &mut state,
            json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["users"], "resourceNames": ["bob"], "verbs": ["impersonate:user-info"]}]),
        );
        let bob = impersonate(&state, bot(), &as_bob, &list_secrets()).unwrap();
        assert_eq!((bob.username.as_str(), bob.groups.as_slice()), ("bob", [AUTHENTICATED.to_string()].as_slice()));
        let with_group = headers(&[("impersonate-user", "bob"), ("impersonate-group", "devs")]);
        assert_eq!(
            refusal(impersonate(&state, bot(), &with_group, &list_secrets())),
            r#"groups.authentication.k8s.io "devs" is forbidden: User "system:serviceaccount:a:bot" cannot impersonate:user-info resource "groups" in API group "authentication.k8s.io" at the cluster scope"#
        );
        // Legacy: `impersonate` on ServiceAccounts of a namespace.
        grant(&mut state, json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]}]));
        let other = impersonate(&state, bot(), &as_sa, &list_secrets()).unwrap();
        assert_eq!(other.username, "system:serviceaccount:a:zzz");
    }

    #[test]
    fn groups_without_a_user_are_a_bad_request() {
        let store = Store::new(100);
        let err =
            impersonate(&store.lock(), bot(), &headers(&[("impersonate-group", "devs")]), &list_secrets()).unwrap_err();
        assert_eq!((err.code, err.reason), (400, "BadRequest"));
        assert_eq!(
            err.message,
            r#"requested &user.DefaultInfo{Name:"", UID:"", Groups:[]string{"devs"}, Extra:map[string][]string(nil)} without impersonating a user name"#
        );
    }
}
