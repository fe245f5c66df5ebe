//! HTTP-01: every replica of the operator serves `/.well-known/acme-challenge/<token>` itself
//! (from `Answers`), and the CA is routed to them by one route per host: an Ingress rule (or a
//! Gateway API HTTPRoute) in the operator's namespace for the host's whole challenge path. It
//! serves every token of every attempt for that host, so it is made once and outlives attempts:
//! renewals write no route. `controller::routes` removes a route once no Certificate needs it.

use super::Answers;
use crate::{
    api::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, issuer::Http01Solver},
    error::{Error, Result, is_not_found},
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
use std::{collections::BTreeMap, sync::Arc};

/// The label on every host route; its value is the digest of where the route leads (class or
/// Gateway, Service, port), so that a changed solver is told from an unchanged one by labels.
pub const ROUTE_LABEL: &str = "certpilot.dev/http01-route";
/// The annotation naming the host a route is for (labels cannot hold every host name).
pub const HOST_ANNOTATION: &str = "certpilot.dev/host";
/// The prefix every challenge path starts with.
const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// Labels of the per-attempt routes (one per token) an older certpilot made: the attempt's
/// name and namespace.
pub const ATTEMPT_LABEL: &str = "certpilot.dev/attempt";
pub const ATTEMPT_NAMESPACE_LABEL: &str = "certpilot.dev/attempt-namespace";

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

/// Serves challenges on `listener` (bound by the caller, which stops at once if it cannot be).
pub async fn serve(listener: tokio::net::TcpListener, answers: Arc<Answers>) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving HTTP-01 challenges");
    axum::serve(listener, router(answers)).await
}

/// The two kinds of route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    Ingress,
    HttpRoute,
}

/// The route that sends the CA's requests for one host's challenges to the operator.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRoute {
    pub kind: RouteKind,
    pub name: String,
    /// The digest of where it leads (the value of `ROUTE_LABEL`).
    pub config: String,
    body: serde_json::Value,
}

/// Where HTTP-01 routes go: the operator's namespace and the Service in front of its solver.
#[derive(Clone)]
pub struct RouteTarget {
    pub client: kube::Client,
    pub namespace: String,
    pub service: String,
    pub port: u16,
}

/// The Gateway API HTTPRoute kind (not part of k8s-openapi).
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// The name of `host`'s route (the same for both kinds).
pub fn route_name(host: &str) -> String {
    format!("certpilot-http01-{}", short_digest(host))
}

fn short_digest(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The kind of route `solver` asks for.
pub fn route_kind(solver: &Http01Solver) -> RouteKind {
    if solver.gateway.is_some() { RouteKind::HttpRoute } else { RouteKind::Ingress }
}

/// `host`'s route as `solver` wants it: an HTTPRoute on the solver's Gateway when it names
/// one, else an Ingress rule; either sends the host's whole challenge path to the solver
/// Service.
pub fn host_route(target: &RouteTarget, host: &str, solver: &Http01Solver) -> HostRoute {
    let service = solver.service_name.clone().unwrap_or_else(|| target.service.clone());
    let kind = route_kind(solver);
    let spec = match (kind, &solver.gateway) {
        (RouteKind::HttpRoute, Some(gateway)) => {
            let (gateway_namespace, gateway_name) =
                gateway.split_once('/').unwrap_or((target.namespace.as_str(), gateway));
            serde_json::json!({
                "parentRefs": [{"name": gateway_name, "namespace": gateway_namespace}],
                "hostnames": [host],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": CHALLENGE_PATH}}],
                    "backendRefs": [{"name": service, "port": target.port}],
                }],
            })
        }
        _ => {
            let mut spec = serde_json::json!({
                "rules": [{"host": host, "http": {"paths": [{
                    "path": CHALLENGE_PATH,
                    "pathType": "Prefix",
                    "backend": {"service": {"name": service, "port": {"number": target.port}}},
                }]}}],
            });
            if let Some(class) = &solver.ingress_class_name {
                spec["ingressClassName"] = serde_json::json!(class);
            }
            spec
        }
    };
    let config = short_digest(&spec.to_string());
    let name = route_name(host);
    let (api_version, kind_name) = match kind {
        RouteKind::Ingress => ("networking.k8s.io/v1".to_string(), "Ingress".to_string()),
        RouteKind::HttpRoute => {
            let resource = http_route_resource();
            (resource.api_version, resource.kind)
        }
    };
    let body = serde_json::json!({
        "apiVersion": api_version, "kind": kind_name,
        "metadata": {
            "name": name, "namespace": target.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, ROUTE_LABEL: config},
            "annotations": {HOST_ANNOTATION: host},
        },
        "spec": spec,
    });
    HostRoute { kind, name, config, body }
}

fn dynamic_api(target: &RouteTarget, kind: RouteKind) -> Api<DynamicObject> {
    let resource = match kind {
        RouteKind::Ingress => ApiResource::erase::<Ingress>(&()),
        RouteKind::HttpRoute => http_route_resource(),
    };
    Api::namespaced_with(target.client.clone(), &target.namespace, &resource)
}

/// Writes the route (server-side apply: a route someone changed is put back).
pub async fn apply(target: &RouteTarget, route: &HostRoute) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    dynamic_api(target, route.kind).patch(&route.name, &params, &Patch::Apply(&route.body)).await?;
    Ok(())
}

/// Whether `route` is in place as certpilot wrote it: there, leading where it leads (by its
/// label). One read of its metadata, made before a route certpilot knows of is counted on
/// again: a route deleted or relabelled by hand would fail the CA's validation.
pub async fn in_place(target: &RouteTarget, route: &HostRoute) -> Result<bool> {
    let found = dynamic_api(target, route.kind).get_metadata_opt(&route.name).await?;
    let config = found.as_ref().and_then(|meta| meta.metadata.labels.as_ref()?.get(ROUTE_LABEL));
    Ok(config == Some(&route.config))
}

/// A route certpilot made, as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub kind: RouteKind,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Listed {
    /// The digest of where a host route leads; `None` for another certpilot route.
    pub fn config(&self) -> Option<&str> {
        self.labels.get(ROUTE_LABEL).map(String::as_str)
    }

    /// The attempt a route made by an older certpilot is for: namespace (unknown on the oldest)
    /// and name.
    pub fn attempt(&self) -> Option<(Option<&str>, &str)> {
        let name = self.labels.get(ATTEMPT_LABEL)?;
        Some((self.labels.get(ATTEMPT_NAMESPACE_LABEL).map(String::as_str), name))
    }
}

/// Every route certpilot made in the operator's namespace, of both kinds (HTTPRoutes only
/// where the Gateway API is installed): their metadata.
pub async fn list(target: &RouteTarget) -> Result<Vec<Listed>> {
    let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let mut listed = Vec::new();
    for kind in [RouteKind::Ingress, RouteKind::HttpRoute] {
        let items = match dynamic_api(target, kind).list_metadata(&selector).await {
            Ok(list) => list.items,
            Err(e) if kind == RouteKind::HttpRoute && is_not_found(&e) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        listed.extend(items.into_iter().filter_map(|object| {
            let name = object.metadata.name?;
            Some(Listed { kind, name, labels: object.metadata.labels.unwrap_or_default() })
        }));
    }
    Ok(listed)
}

/// Deletes one route; one already gone is fine.
pub async fn delete(target: &RouteTarget, kind: RouteKind, name: &str) -> Result<()> {
    match dynamic_api(target, kind).delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> RouteTarget {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        RouteTarget {
            client: kube::Client::try_from(config).unwrap(),
            namespace: "certpilot".into(),
            service: "certpilot-solver".into(),
            port: 8089,
        }
    }

    #[tokio::test]
    async fn a_host_route_sends_the_whole_challenge_path_of_its_host_to_the_solver() {
        let target = target();
        let route = host_route(&target, "a.example.com", &Http01Solver::default());
        assert_eq!((route.kind, route.name.as_str()), (RouteKind::Ingress, route_name("a.example.com").as_str()));
        let rule = &route.body["spec"]["rules"][0];
        assert_eq!(rule["host"], "a.example.com");
        assert_eq!(rule["http"]["paths"][0]["path"], CHALLENGE_PATH);
        assert_eq!(rule["http"]["paths"][0]["pathType"], "Prefix");
        assert_eq!(rule["http"]["paths"][0]["backend"]["service"]["name"], "certpilot-solver");
        assert_eq!(route.body["metadata"]["annotations"][HOST_ANNOTATION], "a.example.com");
        assert_eq!(route.body["metadata"]["labels"][ROUTE_LABEL], route.config.as_str());
        let gateway = Http01Solver { gateway: Some("edge/public".into()), ..Default::default() };
        let http_route = host_route(&target, "a.example.com", &gateway);
        assert_eq!((http_route.kind, &http_route.name), (RouteKind::HttpRoute, &route.name));
        assert_eq!(http_route.body["spec"]["parentRefs"][0]["namespace"], "edge");
        assert_eq!(http_route.body["spec"]["rules"][0]["matches"][0]["path"]["type"], "PathPrefix");
    }

    #[tokio::test]
    async fn the_config_digest_changes_with_where_the_route_leads_and_only_then() {
        let target = target();
        let plain = host_route(&target, "a.example.com", &Http01Solver::default());
        assert_eq!(plain.config, host_route(&target, "a.example.com", &Http01Solver::default()).config);
        let classed = Http01Solver { ingress_class_name: Some("nginx".into()), ..Default::default() };
        assert_ne!(plain.config, host_route(&target, "a.example.com", &classed).config);
        let other_service = Http01Solver { service_name: Some("elsewhere".into()), ..Default::default() };
        assert_ne!(plain.config, host_route(&target, "a.example.com", &other_service).config);
        assert_ne!(plain.name, host_route(&target, "b.example.com", &Http01Solver::default()).name);
    }

    #[test]
    fn listed_routes_say_whether_they_are_host_routes_or_an_older_attempts() {
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let host = Listed { kind: RouteKind::Ingress, name: "h".into(), labels: labels(&[(ROUTE_LABEL, "abc")]) };
        assert_eq!((host.config(), host.attempt()), (Some("abc"), None));
        let old = Listed { kind: RouteKind::Ingress, name: "o".into(), labels: labels(&[(ATTEMPT_LABEL, "web-1")]) };
        assert_eq!((old.config(), old.attempt()), (None, Some((None, "web-1"))));
        let namespaced = Listed {
            kind: RouteKind::HttpRoute,
            name: "n".into(),
            labels: labels(&[(ATTEMPT_LABEL, "web-1"), (ATTEMPT_NAMESPACE_LABEL, "shop")]),
        };
        assert_eq!(namespaced.attempt(), Some((Some("shop"), "web-1")));
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
