//! An in-process Kubernetes API server for certpilot's tests.
//!
//! The real `kube::Client` talks to it over HTTP. It implements the semantics the operator
//! relies on: CRUD, list and watch with resourceVersions, bookmarks and `410 Gone`,
//! metadata-only views, merge/JSON/apply patches with field managers, the status subresource,
//! generation, finalizers, owner-reference garbage collection, selectors, metadata and Event
//! validation, CRD admission (the CEL cost budget, API approval), CRD schema validation with
//! CEL, ServiceAccount tokens (TokenRequest) and bearer-token authentication, impersonation and
//! RBAC authorization, and ValidatingAdmissionPolicies enforced for the requesting user (the
//! cluster admin when a request has no credentials, a ServiceAccount for its token, or whoever
//! the request impersonates), plus fault injection. The conformance suite holds it to a real
//! cluster.
#![forbid(unsafe_code)]

mod access;
mod attributes;
mod crd;
mod discovery;
mod error;
mod events;
mod faults;
mod fields;
mod http;
mod impersonation;
mod managed;
mod meta;
mod openapi;
mod policy;
mod rbac;
mod resource;
mod schema;
mod selector;
mod store;
mod table;
mod tokens;
mod watch;

pub mod cel_cost;
pub mod cluster;

pub use faults::{Faults, RequestRecord};

use std::{net::SocketAddr, sync::Arc, time::Duration};
use store::Store;
use tokio::task::JoinHandle;

/// State shared by the HTTP handlers, the watch pumps and the garbage collector.
pub struct Shared {
    store: Store,
    faults: Faults,
    tokens: tokens::Tokens,
    bookmark_interval: Duration,
}

impl Shared {
    fn gc_wakeup(&self) {
        self.store.gc_wakeup.notify_one();
    }
}

/// Settings of a test API server.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many change events are kept for watches to resume from.
    pub history_limit: usize,
    /// How often an idle watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Where to listen: loopback on a free port unless told otherwise.
    pub address: SocketAddr,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            history_limit: 50_000,
            bookmark_interval: Duration::from_secs(5),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// A running server; it stops when dropped.
pub struct TestApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestApiServer {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            store: Store::new(options.history_limit),
            faults: Faults::default(),
            tokens: tokens::Tokens::default(),
            bookmark_interval: options.bookmark_interval,
        });
        let listener = tokio::net::TcpListener::bind(options.address).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(http::handle).with_state(shared.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let gc = tokio::spawn(garbage_collector(shared.clone()));
        Ok(Self { addr, shared, tasks: vec![serve, gc] })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Config` for this server: no credentials, so the cluster admin.
    pub fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().expect("server URL is valid"));
        config.default_namespace = "default".into();
        config
    }

    /// A client of this server.
    pub fn client(&self) -> kube::Client {
        cluster::install_crypto_provider();
        kube::Client::try_from(self.config()).expect("client for the test API server")
    }

    /// A kubeconfig document for processes (the operator binary) that should use this server.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\nusers:\n- name: test\n  user: {{}}\n",
            url = self.url()
        )
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Forgets the watch history: every resourceVersion seen so far becomes too old to watch from.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().resource_version()
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Deletes dependents whose owners are gone and empties terminating namespaces, in the
/// background like the real garbage collector: woken by deletions, and on a short period.
async fn garbage_collector(shared: Arc<Shared>) {
    // The store's resourceVersion when a collection last ended with nothing left to do.
    let mut collected_at = None;
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(200), shared.store.gc_wakeup.notified()).await;
        // Let the request that woke us finish, as the real collector lags behind writes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        {
            let mut state = shared.store.lock();
            // Collecting depends on the stored objects only: unchanged, there is nothing to do.
            if collected_at == Some(state.resource_version()) {
                continue;
            }
            let mut passes = 0;
            let mut changed = true;
            while changed && passes < 100 {
                changed = state.collect_garbage();
                passes += 1;
            }
            collected_at = (!changed).then(|| state.resource_version());
        }
        // A collection scans every object with the store locked: on a store of many objects
        // (the scale bench), leave the lock to requests at least four fifths of the time.
        tokio::time::sleep(started.elapsed() * 4).await;
    }
}
