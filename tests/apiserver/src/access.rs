//! Who makes a request, and whether they may: authentication, impersonation and authorization,
//! in the API server's filter order, before the request reaches any handler (discovery and
//! "not found" included).
//!
//! A request with `Authorization: Bearer <token>` is the ServiceAccount the token was minted
//! for (see `crate::tokens`), or `401 Unauthorized`. A request without credentials is the
//! cluster admin's (`UserInfo::admin`): the server has no TLS client certificates, so that is
//! how the admin's kubeconfig, the tests' and the operator's reach it.

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
use axum::http::{HeaderMap, Method, header};
use serde_json::{Value, json};

/// Where `kubectl auth whoami` asks who it is.
pub const SELF_SUBJECT_REVIEWS: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

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
    let authenticated = authenticate(shared, &state, headers)?;
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

fn authenticate(shared: &Shared, state: &State, headers: &HeaderMap) -> ApiResult<UserInfo> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    match crate::tokens::bearer(authorization) {
        None => Ok(UserInfo::admin()),
        Some(token) => shared
            .tokens
            .authenticate(state, token, chrono::Utc::now())
            .ok_or_else(crate::error::ApiError::unauthorized),
    }
}

/// The `SelfSubjectReview` (`authentication.k8s.io/v1`) of `user`: who the server takes it for.
/// (A ServiceAccount token's `extra` credential id is left out: these tokens have no JWT id.)
pub fn self_subject_review(user: &UserInfo) -> Value {
    let mut user_info = json!({"username": user.username, "groups": user.groups});
    if !user.uid.is_empty() {
        user_info["uid"] = json!(user.uid);
    }
    json!({
        "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": crate::meta::now()},
        "status": {"userInfo": user_info},
    })
}
