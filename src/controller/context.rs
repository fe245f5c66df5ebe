//! What every reconcile needs: the client, the operator's settings and its metrics.

use crate::{metrics::Metrics, policy::backoff::BackoffPolicy};
use kube::{Api, Client, Resource};
use std::sync::Arc;

/// Field manager of every write the operator makes (server-side apply).
pub const FIELD_MANAGER: &str = "certpilot";

/// Operator settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only this namespace (Certificates, Issuers, attempts, Secrets); all when `None`.
    pub watch_namespace: Option<String>,
    /// Where Secrets named by ClusterIssuers live (the operator's own namespace).
    pub cluster_resource_namespace: String,
    pub backoff: BackoffPolicy,
    /// How many objects each controller reconciles at once.
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            watch_namespace: None,
            cluster_resource_namespace: "certpilot".into(),
            backoff: BackoffPolicy::default(),
            concurrency: 8,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { client, settings, metrics })
    }

    /// An API for namespaced `K` in `namespace`.
    pub fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// An API for namespaced `K` across the watched namespaces.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match &self.settings.watch_namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}
