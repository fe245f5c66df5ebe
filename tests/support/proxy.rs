//! A proxy in front of the test's cluster, real or not, that can make chosen requests fail:
//! answered `404` as for a kind the API server does not serve (a CRD not installed), or never
//! answered (a request that hangs). Everything else goes through unchanged, watches streamed.
//! The operator reaches it over plain HTTP on loopback; the proxy reaches the cluster with the
//! test's own client (its TLS and credentials). It keeps the method and path of every request,
//! for tests about what the operator asks for.

use axum::{
    body::Body,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use certpilot_test_apiserver::cluster::TestCluster;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// What the proxy does with requests whose path contains a fragment.
#[derive(Clone, Debug)]
enum Rule {
    /// `404 page not found`, as for a resource the API server does not serve: requests under
    /// `/apis/<group>/` for `/<plural>`.
    NotServed { group: String, plural: String },
    /// No answer, ever (for requests of this method, and whose body contains `body`).
    Hang { method: http::Method, fragment: String, body: String },
}

#[derive(Clone)]
struct Shared {
    client: kube::Client,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A request the proxy was sent.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    /// The path and query.
    pub uri: String,
    /// Whether it asked for metadata only (`PartialObjectMetadata`), not whole objects.
    pub metadata_only: bool,
}

pub struct ApiProxy {
    addr: SocketAddr,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ApiProxy {
    pub async fn start(cluster: &TestCluster) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy listens");
        let addr = listener.local_addr().unwrap();
        let rules = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { client: cluster.client(), rules: rules.clone(), seen: seen.clone() };
        let app = axum::Router::new().fallback(forward).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = std::env::temp_dir().join(format!("certpilot-proxy-{}.kubeconfig", addr.port()));
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: proxy\ncurrent-context: proxy\nusers:\n- name: proxy\n  user: {{}}\n"
        );
        std::fs::write(&kubeconfig, yaml).expect("proxy kubeconfig written");
        Self { addr, rules, seen, kubeconfig, task }
    }

    /// A kubeconfig for processes (the operator) that should go through the proxy.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests for `<plural>.<group>` (e.g. `issuers.certpilot.dev`) are answered as when its
    /// CRD is not installed.
    pub fn not_served(&self, crd: &str) {
        let (plural, group) = crd.split_once('.').expect("<plural>.<group>");
        let rule = Rule::NotServed { group: format!("/apis/{group}/"), plural: format!("/{plural}") };
        self.rules.lock().unwrap().push(rule);
    }

    /// Requests of `method` whose path contains `fragment` are never answered.
    pub fn hang(&self, method: http::Method, fragment: &str) {
        self.hang_with_body(method, fragment, "");
    }

    /// Requests of `method` whose path contains `fragment` and whose body contains `body` are
    /// never answered (and never reach the cluster).
    pub fn hang_with_body(&self, method: http::Method, fragment: &str, body: &str) {
        let rule = Rule::Hang { method, fragment: fragment.to_string(), body: body.to_string() };
        self.rules.lock().unwrap().push(rule);
    }

    /// The requests sent since the last call, oldest first.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Every request goes through again.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// What the proxy does instead of forwarding a request, if anything.
#[derive(Debug, PartialEq)]
enum Verdict {
    Hang,
    NotFound,
}

/// What applies to a request: hanging wins over refusing.
fn verdict(rules: &[Rule], method: &http::Method, path: &str, body: &str) -> Option<Verdict> {
    let applies = |rule: &Rule| match rule {
        Rule::Hang { method: m, fragment, body: within } => {
            m == method && path.contains(fragment.as_str()) && body.contains(within.as_str())
        }
        Rule::NotServed { group, plural } => path.contains(group.as_str()) && path.contains(plural.as_str()),
    };
    let matching: Vec<&Rule> = rules.iter().filter(|r| applies(r)).collect();
    if matching.iter().any(|r| matches!(r, Rule::Hang { .. })) {
        Some(Verdict::Hang)
    } else if !matching.is_empty() {
        Some(Verdict::NotFound)
    } else {
        None
    }
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let accept = parts.headers.get(http::header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or_default();
    let metadata_only = accept.contains("PartialObjectMetadata");
    shared.seen.lock().unwrap().push(Seen { method: parts.method.clone(), uri, metadata_only });
    let rules = shared.rules.lock().unwrap().clone();
    match verdict(&rules, &parts.method, parts.uri.path(), &String::from_utf8_lossy(&bytes)) {
        Some(Verdict::Hang) => return std::future::pending().await,
        Some(Verdict::NotFound) => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
        None => {}
    }
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let mut upstream = http::Request::builder().method(parts.method).uri(path_and_query);
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream.body(kube::client::Body::from(bytes.to_vec())).expect("a request to forward");
    match shared.client.send(upstream).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}
