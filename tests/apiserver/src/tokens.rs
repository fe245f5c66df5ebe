//! ServiceAccount tokens: `POST …/serviceaccounts/<name>/token` (TokenRequest,
//! `authentication.k8s.io/v1`, what `kubectl create token` sends) mints one, and a request
//! bearing it (`Authorization: Bearer …`) is that ServiceAccount's.
//!
//! A real API server signs a JWT; clients never look inside, so these tokens are opaque random
//! strings the server remembers. As on a real server, a token stops working when it expires,
//! when its audiences leave out the API server's, and when its ServiceAccount is deleted (a
//! new ServiceAccount of the same name is another one: its uid differs). Tokens bound to an
//! object (`boundObjectRef`) are not supported.

use crate::{
    error::{ApiError, ApiResult, FieldError},
    policy::UserInfo,
    store::{Key, State},
};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{collections::HashMap, sync::Mutex};

/// The audience of tokens for the API server itself: a real cluster's default issuer.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
const DEFAULT_EXPIRATION_SECONDS: i64 = 60 * 60;
const MIN_EXPIRATION_SECONDS: i64 = 10 * 60;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// One minted token: whose it is, for whom and until when.
#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    name: String,
    uid: String,
    audiences: Vec<String>,
    expires: DateTime<Utc>,
}

/// The tokens the server has minted.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: Mutex<HashMap<String, Issued>>,
}

/// What a `TokenRequest` asks for.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct TokenRequestSpec {
    audiences: Vec<String>,
    expiration_seconds: Option<i64>,
    bound_object_ref: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenRequest {
    spec: TokenRequestSpec,
}

impl Tokens {
    /// Serves a TokenRequest for the ServiceAccount `namespace/name`: `201` with the token.
    pub fn request(
        &self,
        state: &State,
        namespace: &str,
        name: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> ApiResult<Value> {
        let request: TokenRequest = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
        let mut spec = request.spec;
        let expiration = spec.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        validate_expiration(expiration)?;
        if spec.bound_object_ref.as_ref().is_some_and(|r| !r.is_null()) {
            return Err(ApiError::bad_request("the test API server does not bind tokens to objects (boundObjectRef)"));
        }
        let account = state
            .object(&service_account_key(namespace, name))
            .ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
        let uid = account["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        if spec.audiences.is_empty() {
            spec.audiences = vec![API_AUDIENCE.to_string()];
        }
        let expires = now + Duration::seconds(expiration);
        let token = random_token();
        let issued = Issued {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.clone(),
            audiences: spec.audiences.clone(),
            expires,
        };
        self.issued.lock().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), issued);
        Ok(json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "creationTimestamp": timestamp(now)},
            "spec": {"audiences": spec.audiences, "expirationSeconds": expiration, "boundObjectRef": null},
            "status": {"token": token, "expirationTimestamp": timestamp(expires)},
        }))
    }

    /// The ServiceAccount `token` stands for, unless it is unknown, expired, meant for another
    /// audience, or its ServiceAccount is gone.
    pub fn authenticate(&self, state: &State, token: &str, now: DateTime<Utc>) -> Option<UserInfo> {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let found = issued.get(token)?.clone();
        let account = state.object(&service_account_key(&found.namespace, &found.name));
        let same_account = account.is_some_and(|a| a["metadata"]["uid"].as_str() == Some(found.uid.as_str()));
        if now >= found.expires || !same_account {
            // It can never be valid again: forget it.
            issued.remove(token);
            return None;
        }
        if !found.audiences.iter().any(|a| a == API_AUDIENCE) {
            return None;
        }
        let mut user = UserInfo::service_account(&found.namespace, &found.name);
        user.uid = found.uid;
        Some(user)
    }
}

/// `ValidateTokenRequest`: between ten minutes and 2^32 seconds.
fn validate_expiration(seconds: i64) -> ApiResult<()> {
    let message = if seconds < MIN_EXPIRATION_SECONDS {
        "may not specify a duration less than 10 minutes"
    } else if seconds > MAX_EXPIRATION_SECONDS {
        "may not specify a duration larger than 2^32 seconds"
    } else {
        return Ok(());
    };
    let error = FieldError::invalid("spec.expirationSeconds", &json!(seconds), message);
    let mut invalid = ApiError::invalid("TokenRequest.authentication.k8s.io", "", std::slice::from_ref(&error));
    // The request names no object: the details carry the kind and group only.
    invalid.details = Some(json!({
        "group": "authentication.k8s.io", "kind": "TokenRequest",
        "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {seconds}: {message}"), "field": error.field}],
    }));
    Err(invalid)
}

fn service_account_key(namespace: &str, name: &str) -> Key {
    Key { group: String::new(), plural: "serviceaccounts".into(), namespace: namespace.into(), name: name.into() }
}

/// 244 random bits (two version-4 UUIDs, from the OS's generator): unguessable, which is all
/// a bearer token must be.
fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The token of an `Authorization: Bearer <token>` header, as the API server's bearer token
/// authenticator reads it; anything else is no token.
pub fn bearer(authorization: &str) -> Option<&str> {
    let mut parts = authorization.trim().splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl ApiError {
    /// `401 Unauthorized`, worded as the API server answers a credential it does not accept.
    pub fn unauthorized() -> Self {
        ApiError { code: 401, reason: "Unauthorized", message: "Unauthorized".into(), details: None, retry_after: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn with_account(store: &Store, namespace: &str, name: &str) -> String {
        let mut state = store.lock();
        let rt = state.registry.get("", "v1", "serviceaccounts").unwrap();
        let account = json!({"metadata": {"name": name}});
        let created = state.create(&rt, namespace, account, "test", &UserInfo::admin()).unwrap();
        created["metadata"]["uid"].as_str().unwrap().to_string()
    }

    fn mint(tokens: &Tokens, store: &Store, body: Value, now: DateTime<Utc>) -> ApiResult<Value> {
        tokens.request(&store.lock(), "default", "bot", body.to_string().as_bytes(), now)
    }

    #[test]
    fn a_token_is_its_service_account_until_it_expires() {
        let (store, tokens, now) = (Store::new(100), Tokens::default(), Utc::now());
        let uid = with_account(&store, "default", "bot");
        let minted = mint(&tokens, &store, json!({"spec": {"expirationSeconds": 600}}), now).unwrap();
        assert_eq!(minted["spec"]["audiences"], json!([API_AUDIENCE]));
        assert_eq!(minted["status"]["expirationTimestamp"], timestamp(now + Duration::seconds(600)));
        let token = minted["status"]["token"].as_str().unwrap();
        let user = tokens.authenticate(&store.lock(), token, now).unwrap();
        assert_eq!(user.username, "system:serviceaccount:default:bot");
        assert_eq!(user.groups, ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]);
        assert_eq!(user.uid, uid);
        assert!(tokens.authenticate(&store.lock(), token, now + Duration::seconds(600)).is_none());
        assert!(tokens.authenticate(&store.lock(), token, now).is_none(), "an expired token is forgotten");
        let default = mint(&tokens, &store, json!({}), now).unwrap();
        assert_eq!(default["spec"]["expirationSeconds"], 3600);
    }

    #[test]
    fn deleting_the_service_account_or_another_audience_invalidates_it() {
        let (store, tokens, now) = (Store::new(100), Tokens::default(), Utc::now());
        with_account(&store, "default", "bot");
        let other = mint(&tokens, &store, json!({"spec": {"audiences": ["vault"]}}), now).unwrap();
        assert!(tokens.authenticate(&store.lock(), other["status"]["token"].as_str().unwrap(), now).is_none());
        let minted = mint(&tokens, &store, json!({}), now).unwrap();
        let token = minted["status"]["token"].as_str().unwrap();
        {
            let mut state = store.lock();
            let rt = state.registry.get("", "v1", "serviceaccounts").unwrap();
            let key = Key::new(&rt, "default", "bot");
            state.delete(&rt, key, &Default::default(), &UserInfo::admin()).unwrap();
        }
        with_account(&store, "default", "bot");
        assert!(
            tokens.authenticate(&store.lock(), token, now).is_none(),
            "a new ServiceAccount of that name is another"
        );
    }

    #[test]
    fn requests_are_checked_as_the_api_server_checks_them() {
        let (store, tokens, now) = (Store::new(100), Tokens::default(), Utc::now());
        let missing = mint(&tokens, &store, json!({}), now).unwrap_err();
        assert_eq!((missing.code, missing.message.as_str()), (404, r#"serviceaccounts "bot" not found"#));
        with_account(&store, "default", "bot");
        let short = mint(&tokens, &store, json!({"spec": {"expirationSeconds": 100}}), now).unwrap_err();
        assert_eq!(short.code, 422);
        assert_eq!(
            short.message,
            r#"TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid value: 100: may not specify a duration less than 10 minutes"#
        );
        let long = mint(&tokens, &store, json!({"spec": {"expirationSeconds": 99_999_999_999_i64}}), now).unwrap_err();
        assert!(long.message.ends_with("may not specify a duration larger than 2^32 seconds"), "{}", long.message);
    }

    #[test]
    fn bearer_tokens_are_read_like_the_api_server_reads_them() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("  bearer abc extra"), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Basic dXNlcjpwdw=="), None);
    }
}
