//! One watch and one store per kind, shared by every controller that needs it.
//!
//! Certificates, CertificateAttempts, Issuers, ClusterIssuers and the metadata of certpilot's
//! Secrets are each watched once. What the decisions never read is stripped before an object
//! is stored (`trim_*`): managed fields (except the note that certpilot is a manager, which is
//! what proves a Secret is certpilot's), `kubectl`'s last-applied copy, and the step logs of
//! finished attempts. Controllers subscribe to the same stores: an object lives once in memory.

use crate::api::{
    Certificate, CertificateAttempt, ClusterIssuer, FIELD_MANAGER, Issuer, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use futures::{Stream, channel::mpsc};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ReflectHandle, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use std::{
    fmt::Debug,
    sync::{Arc, Mutex},
};

/// How many events a subscriber may fall behind before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The read side: what reconcilers look things up in.
#[derive(Clone)]
pub struct Caches {
    pub certificates: Store<Certificate>,
    pub attempts: Store<CertificateAttempt>,
    pub issuers: Store<Issuer>,
    pub cluster_issuers: Store<ClusterIssuer>,
    /// certpilot's Secrets (labelled `app.kubernetes.io/managed-by=certpilot`), metadata only.
    pub secrets: Store<PartialObjectMeta<Secret>>,
}

impl Caches {
    /// Until every store holds its first full list, decisions from them would be wrong.
    pub async fn wait_until_ready(&self) {
        // A store only fails to become ready when its writer is gone (shutdown).
        let _ = futures::join!(
            self.certificates.wait_until_ready(),
            self.attempts.wait_until_ready(),
            self.issuers.wait_until_ready(),
            self.cluster_issuers.wait_until_ready(),
            self.secrets.wait_until_ready(),
        );
    }
}

/// The write side of one kind: the watch that fills its store and feeds its subscribers.
pub struct Feed<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    trim: fn(&mut K),
    /// Where deleted objects go: subscribers of the store only see objects that exist.
    deletions: Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>,
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn new(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> (Store<K>, Self) {
        let (store, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        (store, Self { api, config, writer, trim, deletions: Mutex::default() })
    }

    /// A stream of the objects as they change, for one controller.
    pub fn subscribe(&self) -> ReflectHandle<K> {
        self.writer.subscribe().expect("shared stores can be subscribed to")
    }

    /// A stream of the objects as they are deleted, for one controller.
    pub fn deletions(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded();
        self.deletions.lock().expect("deletions lock").push(sender);
        receiver
    }

    fn run(self) -> BoxFuture<'static, ()> {
        let trim = self.trim;
        let deletions = self.deletions.into_inner().expect("deletions lock");
        watcher(self.api, self.config)
            .default_backoff()
            .modify(trim)
            .inspect(move |event| {
                if let Ok(watcher::Event::Delete(object)) = event {
                    let object = Arc::new(object.clone());
                    for subscriber in &deletions {
                        let _ = subscriber.unbounded_send(object.clone());
                    }
                }
            })
            .reflect_shared(self.writer)
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, kind = %K::kind(&()), "watch failed; retrying");
                }
            })
            .boxed()
    }
}

/// The watches behind the caches; subscribe the controllers, then `run` them all.
pub struct Feeds {
    pub certificates: Feed<Certificate>,
    pub attempts: Feed<CertificateAttempt>,
    pub issuers: Feed<Issuer>,
    pub cluster_issuers: Feed<ClusterIssuer>,
    pub secrets: Feed<PartialObjectMeta<Secret>>,
}

impl Feeds {
    /// Watches of every kind in `namespace` (all namespaces when `None`).
    pub fn new(client: &Client, namespace: Option<&str>) -> (Caches, Feeds) {
        fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
        where
            K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
        {
            match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        let any = || watcher::Config::default().any_semantic();
        let managed = || any().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let (certificates, certificates_feed) = Feed::new(api(client, namespace), any(), trim_certificate);
        // Every attempt, labelled or not: one certpilot did not make must still be seen (and rejected).
        let (attempts, attempts_feed) = Feed::new(api(client, namespace), any(), trim_attempt);
        let (issuers, issuers_feed) = Feed::new(api(client, namespace), any(), trim_issuer);
        let (cluster_issuers, cluster_issuers_feed) = Feed::new(Api::all(client.clone()), any(), trim_cluster_issuer);
        let (secrets, secrets_feed) = Feed::new(api(client, namespace), managed(), trim_secret);
        let caches = Caches { certificates, attempts, issuers, cluster_issuers, secrets };
        let feeds = Feeds {
            certificates: certificates_feed,
            attempts: attempts_feed,
            issuers: issuers_feed,
            cluster_issuers: cluster_issuers_feed,
            secrets: secrets_feed,
        };
        (caches, feeds)
    }

    /// Runs every watch until shutdown. Subscribe before: later subscribers miss events.
    pub async fn run(self) {
        futures::future::join_all([
            self.certificates.run(),
            self.attempts.run(),
            self.issuers.run(),
            self.cluster_issuers.run(),
            self.secrets.run(),
        ])
        .await;
    }
}

/// Strips what no decision reads from an object's metadata. certpilot's own managed-fields
/// entries stay, without their field sets: they prove that certpilot wrote the object.
pub fn trim_meta(meta: &mut ObjectMeta) {
    if let Some(managed) = meta.managed_fields.as_mut() {
        managed.retain(|entry| entry.manager.as_deref() == Some(FIELD_MANAGER));
        for entry in managed.iter_mut() {
            entry.fields_v1 = None;
        }
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

fn trim_secret(secret: &mut PartialObjectMeta<Secret>) {
    trim_meta(&mut secret.metadata);
}

fn trim_certificate(certificate: &mut Certificate) {
    trim_meta(&mut certificate.metadata);
}

fn trim_issuer(issuer: &mut Issuer) {
    trim_meta(&mut issuer.metadata);
}

fn trim_cluster_issuer(issuer: &mut ClusterIssuer) {
    trim_meta(&mut issuer.metadata);
}

/// A finished attempt keeps what the Certificate's status summarises (phase, times, error,
/// validation records, the issued certificate); its step log and conditions are dropped.
fn trim_attempt(attempt: &mut CertificateAttempt) {
    trim_meta(&mut attempt.metadata);
    if let Some(status) = attempt.status.as_mut().filter(|s| s.phase.is_terminal()) {
        status.steps = Vec::new();
        status.conditions = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    fn entry(manager: &str) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:data": {}}))),
            ..Default::default()
        }
    }

    #[test]
    fn metadata_keeps_only_the_proof_that_certpilot_wrote_it() {
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![entry("kubectl"), entry(FIELD_MANAGER)]),
            annotations: Some([(LAST_APPLIED.to_string(), "{}".to_string()), ("keep".into(), "me".into())].into()),
            ..Default::default()
        };
        trim_meta(&mut meta);
        let managed = meta.managed_fields.as_ref().unwrap();
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0].manager.as_deref(), Some(FIELD_MANAGER));
        assert!(managed[0].fields_v1.is_none());
        assert!(crate::secret::written_by_certpilot(&meta));
        assert_eq!(meta.annotations.unwrap().keys().collect::<Vec<_>>(), ["keep"]);
    }

    #[test]
    fn finished_attempts_drop_their_step_logs() {
        use crate::api::attempt::{AttemptPhase, CertificateAttemptStatus, Step};
        let mut attempt = CertificateAttempt::new("c-1", Default::default());
        let status = CertificateAttemptStatus {
            phase: AttemptPhase::Validating,
            steps: vec![Step { name: "PlaceOrder".into(), ..Default::default() }],
            ..Default::default()
        };
        attempt.status = Some(status.clone());
        trim_attempt(&mut attempt);
        assert_eq!(attempt.status.as_ref().unwrap().steps.len(), 1, "an attempt under way keeps its steps");
        attempt.status = Some(CertificateAttemptStatus { phase: AttemptPhase::Succeeded, ..status });
        trim_attempt(&mut attempt);
        assert!(attempt.status.unwrap().steps.is_empty());
    }
}
