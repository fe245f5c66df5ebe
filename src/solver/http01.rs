//! HTTP-01: every replica of the operator serves `/.well-known/acme-challenge/<token>` itself
//! (from `Answers`), and the CA is routed to them with an Ingress rule in the operator's
//! namespace, removed when the attempt ends.

use super::Answers;
use crate::{
    api::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, issuer::Http01Solver},
    error::Result,
    secret::label_value,
};
use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use k8s_openapi::api::networking::v1::Ingress;
use kube::{
    api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use std::sync::Arc;

/// Labels tying solver resources to the attempt that made them: its name and its namespace
/// (routes live in the operator's namespace, and two namespaces may each have an attempt
/// `web-1`).
pub const ATTEMPT_LABEL: &str = "certpilot.dev/attempt";
pub const ATTEMPT_NAMESPACE_LABEL: &str = "certpilot.dev/attempt-namespace";

/// The attempt a route is for.
#[derive(Clone, Copy, Debug)]
pub struct RouteOwner<'a> {
    pub namespace: &'a str,
    pub attempt: &'a str,
}

impl RouteOwner<'_> {
    fn labels(&self) -> serde_json::Value {
        serde_json::json!({
            MANAGED_BY_LABEL: MANAGED_BY_VALUE,
            ATTEMPT_LABEL: label_value(self.attempt),
            ATTEMPT_NAMESPACE_LABEL: label_value(self.namespace),
        })
    }

    /// Whether a route labelled `labels` (found by the attempt's name) is this attempt's. One
    /// without the namespace label was made before routes carried it: it is taken to be.
    fn owns(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        labels.get(ATTEMPT_NAMESPACE_LABEL).is_none_or(|namespace| *namespace == label_value(self.namespace))
    }
}

async fn challenge(State(answers): State<Arc<Answers>>, Path(token): Path<String>) -> (StatusCode, String) {
    match answers.http01(&token).await {
        Some(key_authorization) => (StatusCode::OK, key_authorization),
        None => (StatusCode::NOT_FOUND, "unknown token".into()),
    }
}

/// The challenge responder.
pub fn router(answers: Arc<Answers>) -> Router {
    Router::new().route("/.well-known/acme-challenge/{token}", get(challenge)).with_state(answers)
}

pub async fn serve(addr: std::net::SocketAddr, answers: Arc<Answers>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving HTTP-01 challenges");
    axum::serve(listener, router(answers)).await
}

fn ingress_name(host: &str, token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("{host}/{token}").as_bytes());
    let hash: String = digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("certpilot-http01-{hash}")
}

/// The Gateway API HTTPRoute kind (not part of k8s-openapi).
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// Where HTTP-01 routes go: the operator's namespace and the Service in front of its solver.
#[derive(Clone)]
pub struct RouteTarget {
    pub client: kube::Client,
    pub namespace: String,
    pub service: String,
    pub port: u16,
}

/// Routes the CA's request for `host` + `token` to the operator's solver Service: with an
/// HTTPRoute on the solver's Gateway when it names one, else with an Ingress rule.
pub async fn route(
    target: &RouteTarget,
    owner: RouteOwner<'_>,
    host: &str,
    token: &str,
    solver: &Http01Solver,
) -> Result<()> {
    let service = solver.service_name.clone().unwrap_or_else(|| target.service.clone());
    match &solver.gateway {
        Some(gateway) => http_route(target, owner, host, token, gateway, &service).await,
        None => ingress(target, owner, host, token, solver, &service).await,
    }
}

async fn http_route(
    target: &RouteTarget,
    owner: RouteOwner<'_>,
    host: &str,
    token: &str,
    gateway: &str,
    service: &str,
) -> Result<()> {
    let namespace = &target.namespace;
    let resource = http_route_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), namespace, &resource);
    let name = ingress_name(host, token);
    let (gateway_namespace, gateway_name) = gateway.split_once('/').unwrap_or((namespace.as_str(), gateway));
    let body = serde_json::json!({
        "apiVersion": resource.api_version, "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": owner.labels()},
        "spec": {
            "parentRefs": [{"name": gateway_name, "namespace": gateway_namespace}],
            "hostnames": [host],
            "rules": [{
                "matches": [{"path": {"type": "Exact", "value": format!("/.well-known/acme-challenge/{token}")}}],
                "backendRefs": [{"name": service, "port": target.port}],
            }],
        },
    });
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

async fn ingress(
    target: &RouteTarget,
    owner: RouteOwner<'_>,
    host: &str,
    token: &str,
    solver: &Http01Solver,
    service: &str,
) -> Result<()> {
    let namespace = &target.namespace;
    let api: Api<Ingress> = Api::namespaced(target.client.clone(), namespace);
    let name = ingress_name(host, token);
    let mut spec = serde_json::json!({
        "rules": [{"host": host, "http": {"paths": [{
            "path": format!("/.well-known/acme-challenge/{token}"),
            "pathType": "Exact",
            "backend": {"service": {"name": service, "port": {"number": target.port}}},
        }]}}],
    });
    if let Some(class) = &solver.ingress_class_name {
        spec["ingressClassName"] = serde_json::json!(class);
    }
    let body = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": owner.labels()},
        "spec": spec,
    });
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Removes every Ingress and HTTPRoute made for `attempt`.
pub async fn unroute(target: &RouteTarget, owner: RouteOwner<'_>) -> Result<()> {
    let namespace = &target.namespace;
    delete_labelled(&Api::<Ingress>::namespaced(target.client.clone(), namespace), owner).await?;
    let routes: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), namespace, &http_route_resource());
    match delete_labelled(&routes, owner).await {
        // Without the Gateway API installed there is nothing to remove.
        Err(crate::error::Error::Kube(e)) if crate::error::is_not_found(&e) => Ok(()),
        other => other,
    }
}

async fn delete_labelled<K>(api: &Api<K>, owner: RouteOwner<'_>) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let selector = format!("{ATTEMPT_LABEL}={}", label_value(owner.attempt));
    for object in api.list_metadata(&ListParams::default().labels(&selector)).await?.items {
        if !owner.owns(object.metadata.labels.as_ref().unwrap_or(&Default::default())) {
            continue;
        }
        let Some(name) = object.metadata.name else { continue };
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if crate::error::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_its_attempts_only_in_its_namespace() {
        let owner = RouteOwner { namespace: "shop", attempt: "web-1" };
        let labels = |value: serde_json::Value| serde_json::from_value(value).unwrap();
        assert!(owner.owns(&labels(owner.labels())));
        let other = RouteOwner { namespace: "blog", attempt: "web-1" };
        assert!(!owner.owns(&labels(other.labels())), "another namespace's attempt of the same name");
        let before_namespaces = serde_json::json!({MANAGED_BY_LABEL: MANAGED_BY_VALUE, ATTEMPT_LABEL: "web-1"});
        assert!(owner.owns(&labels(before_namespaces)), "made before routes named the namespace");
    }

    use crate::{
        api::attempt::AttemptPhase,
        solver::answers::tests::{attempt, http},
    };
    use kube::runtime::watcher::Event;

    #[tokio::test]
    async fn serves_the_tokens_of_attempts_in_progress_only() {
        let answers = Arc::new(Answers::waiting(std::time::Duration::from_millis(50)));
        let validating = attempt("web-1", AttemptPhase::Validating, vec![http("a.example.com", "tok")]);
        answers.apply(&Event::Apply(validating));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router(answers.clone())).into_future());
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let request = format!("GET {path} HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let found = get("/.well-known/acme-challenge/tok").await;
        assert!(found.starts_with("HTTP/1.1 200") && found.ends_with("tok.thumb"), "{found}");
        assert!(get("/.well-known/acme-challenge/other").await.starts_with("HTTP/1.1 404"));
        let done = attempt("web-1", AttemptPhase::Succeeded, vec![http("a.example.com", "tok")]);
        answers.apply(&Event::Apply(done));
        assert!(get("/.well-known/acme-challenge/tok").await.starts_with("HTTP/1.1 404"));
    }
}
