//! Who makes a request, and whether they may: authentication, impersonation and authorization,
//! in the API server's filter order, before the request reaches any handler (discovery and
//! "not found" included).
//!
//! Every request is the cluster admin's (`UserInfo::admin`): the server has no TLS client
//! certificates, so that is how the admin's kubeconfig, the tests' and the operator's reach it.

use crate::{
    Shared,
    attributes::{Action, ResourceAction},
    error::ApiResult,
    http::Query,
    impersonation,
    policy::UserInfo,
    rbac,
    resource::ResourceType,
    store::State,
};
use axum::http::{HeaderMap, Method};

/// The user a request acts as, once authenticated and authorized for what it asks.
pub fn requester(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
) -> ApiResult<UserInfo> {
    let action = Action::of_request(method.as_str(), path, query);
    let state = shared.store.lock();
    let authenticated = UserInfo::admin();
    let user = impersonation::impersonate(&state, authenticated, headers, &action)?;
    rbac::require(&state, &user, &action)?;
    Ok(user)
}

/// A server-side apply that creates its object needs `create` as well as the `patch` the
/// request was authorized for, as on the API server.
pub fn require_create(state: &State, user: &UserInfo, rt: &ResourceType, namespace: &str, name: &str) -> ApiResult<()> {
    let create = ResourceAction {
        verb: "create".into(),
        group: rt.group.clone(),
        resource: rt.plural.clone(),
        subresource: String::new(),
        namespace: namespace.into(),
        name: name.into(),
    };
    Ok(rbac::require(state, user, &Action::Resource(create))?)
}
