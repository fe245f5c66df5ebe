//! One watch per kind, shared by every controller that needs it.
//!
//! Certificates, CertificateAttempts, Issuers, ClusterIssuers and the metadata of certpilot's
//! Secrets are each watched once. Certificates and issuers are kept whole in reflector stores,
//! stripped of what no decision reads (`trim_*`: managed fields, `kubectl`'s last-applied copy).
//! Attempts and Secrets are kept as small records (`attempts.rs`, `secrets.rs`): whole attempts
//! only while they have work left. Controllers subscribe to the same feeds: an object lives once
//! in memory.

mod attempts;
mod secrets;

pub use attempts::{AttemptFeed, AttemptIndex, AttemptRecord};
pub use secrets::{SecretFeed, SecretIndex, Verified, WatchedSecret};

use crate::api::{
    Certificate, CertificateAttempt, ClusterIssuer, Issuer, IssuerKind, IssuerRef, IssuerSpec, IssuerStatus,
    MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use crate::{
    health::{CrdState, Crds},
    policy::json_digest,
};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use futures::{Stream, channel::mpsc};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Client, Resource,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, ReflectHandle, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// How many events a subscriber may fall behind before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A value kept serialised (postcard, a compact binary form): one allocation of a few hundred
/// bytes instead of a struct of hundreds and a dozen small strings. At 100,000 Certificates the
/// attempt records and what was verified of Secrets are most of what certpilot holds; one is
/// read back per lookup, in microseconds.
pub(crate) struct Packed<T>(Box<[u8]>, std::marker::PhantomData<T>);

impl<T: serde::Serialize + DeserializeOwned> Packed<T> {
    pub(crate) fn of(value: &T) -> Self {
        let bytes = postcard::to_allocvec(value).expect("a cached value serialises");
        Self(bytes.into_boxed_slice(), std::marker::PhantomData)
    }

    pub(crate) fn unpack(&self) -> T {
        postcard::from_bytes(&self.0).expect("what was serialised reads back")
    }
}

/// The read side: what reconcilers look things up in.
#[derive(Clone)]
pub struct Caches {
    pub certificates: Store<Certificate>,
    /// Every attempt, as a record of what decisions read.
    pub attempts: Arc<AttemptIndex>,
    /// The attempts with work left, whole (the attempt controller's store).
    pub working_attempts: Store<CertificateAttempt>,
    pub issuers: Store<Issuer>,
    pub cluster_issuers: Store<ClusterIssuer>,
    /// certpilot's Secrets (labelled `app.kubernetes.io/managed-by=certpilot`): what the watch
    /// of their metadata says, and what certpilot learnt of their data.
    pub secrets: Arc<SecretIndex>,
    /// Which of certpilot's CRDs the watches found installed or missing.
    pub crds: Arc<Crds>,
    /// Per kind, whether its store holds its first full list. Not `Store::wait_until_ready`:
    /// that wakes only the last of several tasks waiting at once (a oneshot receiver keeps one
    /// waker), and each controller's runner already waits on its own store that way.
    filled: [watch::Receiver<bool>; 5],
}

impl Caches {
    /// The issuer `issuer_ref` names (from a Certificate or attempt in `namespace`): its spec and status.
    pub fn issuer(&self, issuer_ref: &IssuerRef, namespace: &str) -> Option<(IssuerSpec, Option<IssuerStatus>)> {
        match issuer_ref.kind {
            IssuerKind::Issuer => {
                let issuer = self.issuers.get(&ObjectRef::new(&issuer_ref.name).within(namespace))?;
                Some((issuer.spec.clone(), issuer.status.clone()))
            }
            IssuerKind::ClusterIssuer => {
                let issuer = self.cluster_issuers.get(&ObjectRef::new(&issuer_ref.name))?;
                Some((issuer.spec.issuer.clone(), issuer.status.clone()))
            }
        }
    }

    /// Until every store holds its first full list, decisions from them would be wrong.
    pub async fn wait_until_ready(&self) {
        for filled in &self.filled {
            // An error means the feed is gone (shutdown): nothing left to wait for.
            let _ = filled.clone().wait_for(|filled| *filled).await;
        }
    }
}

/// The write side of one kind: the watch that fills its store and feeds its subscribers.
pub struct Feed<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    trim: fn(&mut K),
    /// Where deleted objects go: subscribers of the store only see objects that exist.
    deletions: Deletions<K>,
    /// Set once the store has applied its first full list.
    filled: Fill,
}

/// The controllers subscribed to one kind's deletions.
pub(crate) struct Deletions<K>(Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>);

impl<K> Default for Deletions<K> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Send + Sync + 'static> Deletions<K> {
    /// A stream of the objects as they are deleted, for one controller.
    fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + use<K> {
        let (sender, receiver) = mpsc::unbounded();
        self.0.lock().expect("deletions lock").push(sender);
        receiver
    }

    fn send(&self, object: Arc<K>) {
        for subscriber in self.0.lock().expect("deletions lock").iter() {
            let _ = subscriber.unbounded_send(object.clone());
        }
    }
}

/// Changes of one kind, broadcast to the controllers subscribed to them. The watch waits for
/// the slowest subscriber once it is [`SUBSCRIBER_BUFFER`] behind.
pub(crate) struct Changes<K> {
    sender: async_broadcast::Sender<Arc<K>>,
    /// Keeps the channel open until every controller has subscribed.
    _open: async_broadcast::InactiveReceiver<Arc<K>>,
}

impl<K: Send + Sync + 'static> Changes<K> {
    fn new() -> Self {
        let (mut sender, receiver) = async_broadcast::broadcast(SUBSCRIBER_BUFFER);
        sender.set_await_active(false);
        Self { sender, _open: receiver.deactivate() }
    }

    fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.sender.new_receiver()
    }

    async fn send(&self, object: Arc<K>) {
        // An error means nobody listens (shutdown).
        let _ = self.sender.broadcast_direct(object).await;
    }
}

/// A kind's watch as the rest of certpilot sees it: whether its cache holds its first full
/// list yet (for whoever waits on it), and whether its CRD is installed. A kind whose CRD is
/// missing counts as listed, with nothing in it: the controllers of the other kinds go on.
pub(crate) struct Fill {
    filled: watch::Sender<bool>,
    kind: String,
    /// `<plural>.<group>` of a custom kind; `None` for built-in kinds, which are always served.
    crd: Option<String>,
    crds: Arc<Crds>,
}

impl Fill {
    pub(crate) fn new<K: Resource<DynamicType = ()>>(crds: Arc<Crds>) -> Self {
        let group = K::group(&());
        let crd = (!group.is_empty()).then(|| format!("{}.{group}", K::plural(&())));
        Self { filled: watch::Sender::new(false), kind: K::kind(&()).into_owned(), crd, crds }
    }

    /// The watch listed every object of the kind.
    fn listed(&self) {
        if let Some(crd) = &self.crd {
            self.crds.set(crd, CrdState::Installed);
        }
        self.filled.send_replace(true);
    }

    /// The watch failed (it tries again by itself): a kind the API server does not serve is
    /// named once as not installed, anything else is logged as it comes.
    fn failed(&self, error: &watcher::Error) {
        match &self.crd {
            Some(crd) if not_served(error) => {
                self.crds.set(crd, CrdState::Missing);
                self.filled.send_replace(true);
            }
            _ => tracing::warn!(%error, kind = %self.kind, "watch failed; retrying"),
        }
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.filled.subscribe()
    }
}

/// Whether a watch failed because the API server does not serve its kind at all (404 on the
/// collection: the CRD is not installed).
fn not_served(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            crate::error::is_not_found(e)
        }
        watcher::Error::WatchError(status) => status.code == 404,
        watcher::Error::NoResourceVersion => false,
    }
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn new(api: Api<K>, config: watcher::Config, trim: fn(&mut K), crds: &Arc<Crds>) -> (Store<K>, Self) {
        let (store, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
        let filled = Fill::new::<K>(crds.clone());
        (store, Self { api, config, writer, trim, deletions: Deletions::default(), filled })
    }

    /// A stream of the objects as they change, for one controller.
    pub fn subscribe(&self) -> ReflectHandle<K> {
        self.writer.subscribe().expect("shared stores can be subscribed to")
    }

    /// A stream of the objects as they are deleted, for one controller.
    pub fn deletions(&self) -> impl Stream<Item = Arc<K>> + Send + use<K> {
        self.deletions.subscribe()
    }

    fn run(self) -> BoxFuture<'static, ()> {
        let trim = self.trim;
        let deletions = self.deletions;
        let filled = self.filled;
        watcher(self.api, self.config)
            .default_backoff()
            .modify(trim)
            .inspect(move |event| {
                if let Ok(watcher::Event::Delete(object)) = event {
                    deletions.send(Arc::new(object.clone()));
                }
            })
            .reflect_shared(self.writer)
            .for_each(move |event| {
                // After the store applied it: the list is in the store.
                match event {
                    Ok(watcher::Event::InitDone) => filled.listed(),
                    Err(error) => filled.failed(&error),
                    Ok(_) => {}
                }
                futures::future::ready(())
            })
            .boxed()
    }
}

/// The watches behind the caches; subscribe the controllers, then `run` them all.
pub struct Feeds {
    pub certificates: Feed<Certificate>,
    pub attempts: AttemptFeed,
    pub issuers: Feed<Issuer>,
    pub cluster_issuers: Feed<ClusterIssuer>,
    pub secrets: SecretFeed,
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
        let crds = Arc::new(Crds::default());
        let (certificates, certificates_feed) = Feed::new(api(client, namespace), any(), trim_certificate, &crds);
        // Every attempt, labelled or not: one certpilot did not make must still be seen (and rejected).
        let attempts_fill = Fill::new::<CertificateAttempt>(crds.clone());
        let (attempts, working_attempts, attempts_feed) =
            AttemptFeed::new(api(client, namespace), any(), attempts_fill);
        let (issuers, issuers_feed) = Feed::new(api(client, namespace), any(), trim_issuer, &crds);
        let (cluster_issuers, cluster_issuers_feed) =
            Feed::new(Api::all(client.clone()), any(), trim_cluster_issuer, &crds);
        let secrets_fill = Fill::new::<Secret>(crds.clone());
        let (secrets, secrets_feed) =
            SecretFeed::new((api(client, namespace), api(client, namespace)), managed(), secrets_fill);
        let filled = [
            certificates_feed.filled.subscribe(),
            attempts_feed.filled().subscribe(),
            issuers_feed.filled.subscribe(),
            cluster_issuers_feed.filled.subscribe(),
            secrets_feed.filled().subscribe(),
        ];
        let caches =
            Caches { certificates, attempts, working_attempts, issuers, cluster_issuers, secrets, crds, filled };
        let feeds = Feeds {
            certificates: certificates_feed,
            attempts: attempts_feed,
            issuers: issuers_feed,
            cluster_issuers: cluster_issuers_feed,
            secrets: secrets_feed,
        };
        (caches, feeds)
    }

    /// Runs every watch until shutdown, each on a task of its own: a restart's first lists
    /// (every Certificate, attempt and Secret) are parsed in parallel, not in turn on the task
    /// that runs the controllers. Dropped, it stops them. Subscribe before: later subscribers
    /// miss events.
    pub async fn run(self) {
        let mut watches = tokio::task::JoinSet::new();
        for watch in [
            self.certificates.run(),
            self.attempts.run(),
            self.issuers.run(),
            self.cluster_issuers.run(),
            self.secrets.run(),
        ] {
            watches.spawn(watch);
        }
        while let Some(ended) = watches.join_next().await {
            if let Err(error) = ended
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    }
}

/// Entries that count for a while after they were noted: what this process did moments ago.
/// Expired entries are dropped once the map has doubled since it was last pruned, not on every
/// insert (every status write notes one).
struct Recent<V> {
    ttl: Duration,
    entries: Mutex<Entries<V>>,
}

struct Entries<V> {
    /// Each value with when it was noted.
    map: HashMap<String, (V, Instant)>,
    /// How many entries were left the last time expired ones were dropped.
    pruned_at: usize,
}

impl<V: Clone> Recent<V> {
    fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(Entries { map: HashMap::new(), pruned_at: 0 }) }
    }

    fn note(&self, key: String, value: V) {
        let mut entries = self.entries.lock().expect("recent lock");
        if entries.map.len() >= (entries.pruned_at * 2).max(64) {
            entries.map.retain(|_, (_, at)| at.elapsed() < self.ttl);
            entries.pruned_at = entries.map.len();
        }
        entries.map.insert(key, (value, Instant::now()));
    }

    /// Drops what expired: a quiet operator must not keep what a burst of work noted.
    fn prune(&self) {
        let mut entries = self.entries.lock().expect("recent lock");
        entries.map.retain(|_, (_, at)| at.elapsed() < self.ttl);
        entries.map.shrink_to_fit();
        entries.pruned_at = entries.map.len();
    }

    /// The value noted under `key`, if that was less than the time to live ago.
    fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().expect("recent lock");
        entries.map.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(value, _)| value.clone())
    }
}

/// How long a cached status may differ from certpilot's last write before it is believed
/// (someone else wrote it since, e.g. a second replica during a leader change).
const LAG_TOLERANCE: Duration = Duration::from_secs(10);

/// The status certpilot last wrote per object (uid), as a digest. A cached object whose status
/// differs from it is one whose watch event has not arrived yet: deciding from it would repeat
/// work already done, and writing the same status again would be a wasted request.
pub struct LastWrites(Recent<u64>);

impl Default for LastWrites {
    fn default() -> Self {
        Self(Recent::new(LAG_TOLERANCE))
    }
}

impl LastWrites {
    pub fn record(&self, uid: &str, status: &impl serde::Serialize) {
        self.0.note(uid.to_string(), json_digest(status));
    }

    pub fn prune(&self) {
        self.0.prune();
    }

    /// Whether `status` (cached) is older than what certpilot wrote last, moments ago.
    pub fn lags(&self, uid: &str, status: &impl serde::Serialize) -> bool {
        self.0.get(uid).is_some_and(|wrote| wrote != json_digest(status))
    }

    /// Whether certpilot wrote exactly `status` moments ago.
    pub fn wrote(&self, uid: &str, status: &impl serde::Serialize) -> bool {
        self.0.get(uid) == Some(json_digest(status))
    }
}

/// How long an object this process created may be missing from its cache before it is read.
const CREATE_LAG: Duration = Duration::from_secs(10);

/// Objects this process created moments ago (`namespace/name`): their watch events are on the
/// way (and bring their owners back to the reconciler), so not finding them in the cache yet is
/// no reason to ask the API server.
pub struct RecentCreates(Recent<()>);

impl Default for RecentCreates {
    fn default() -> Self {
        Self(Recent::new(CREATE_LAG))
    }
}

impl RecentCreates {
    pub fn note(&self, namespace: &str, name: &str) {
        self.0.note(format!("{namespace}/{name}"), ());
    }

    pub fn prune(&self) {
        self.0.prune();
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.0.get(&format!("{namespace}/{name}")).is_some()
    }
}

/// Strips what no decision reads from an object's metadata. certpilot's own managed-fields
/// entries stay, without their field sets: they prove that certpilot wrote the object.
pub fn trim_meta(meta: &mut ObjectMeta) {
    if let Some(managed) = meta.managed_fields.as_mut() {
        managed.retain(|entry| entry.manager.as_deref().is_some_and(crate::secret::is_certpilot_manager));
        for entry in managed.iter_mut() {
            entry.fields_v1 = None;
        }
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

pub fn trim_secret(secret: &mut PartialObjectMeta<Secret>) {
    trim_meta(&mut secret.metadata);
}

/// No decision asks who wrote a Certificate or an attempt (attempts are judged by their
/// owner and spec, see `policy::trust`): their managed fields go entirely.
pub fn trim_certificate(certificate: &mut Certificate) {
    trim_meta(&mut certificate.metadata);
    certificate.metadata.managed_fields = None;
}

fn trim_issuer(issuer: &mut Issuer) {
    trim_meta(&mut issuer.metadata);
}

fn trim_cluster_issuer(issuer: &mut ClusterIssuer) {
    trim_meta(&mut issuer.metadata);
}

/// A finished attempt keeps what the Certificate's status summarises (phase, times, error,
/// validation records, the issued certificate); its step log and conditions are dropped.
pub fn trim_attempt(attempt: &mut CertificateAttempt) {
    trim_meta(&mut attempt.metadata);
    attempt.metadata.managed_fields = None;
    if let Some(status) = attempt.status.as_mut().filter(|s| s.phase.is_terminal()) {
        status.steps = Vec::new();
        status.conditions = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FIELD_MANAGER;
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
            managed_fields: Some(vec![entry("kubectl"), entry(FIELD_MANAGER), entry("certpilot/web")]),
            annotations: Some([(LAST_APPLIED.to_string(), "{}".to_string()), ("keep".into(), "me".into())].into()),
            ..Default::default()
        };
        trim_meta(&mut meta);
        let managed = meta.managed_fields.as_ref().unwrap();
        let managers: Vec<_> = managed.iter().map(|m| m.manager.as_deref().unwrap()).collect();
        assert_eq!(managers, [FIELD_MANAGER, "certpilot/web"]);
        assert!(managed.iter().all(|m| m.fields_v1.is_none()));
        assert!(crate::secret::written_by_certpilot(&meta));
        assert_eq!(meta.annotations.unwrap().keys().collect::<Vec<_>>(), ["keep"]);
    }

    /// Reconciles wait for the caches concurrently, and each controller's runner waits on its
    /// own store meanwhile: every one of them must be woken.
    #[tokio::test]
    async fn every_waiter_learns_that_the_caches_are_ready() {
        let (certificates, mut writer) = reflector::store_shared::<Certificate>(1);
        let senders: Vec<watch::Sender<bool>> = (0..5).map(|_| watch::Sender::new(false)).collect();
        let caches = Caches {
            attempts: Default::default(),
            working_attempts: reflector::store_shared(1).0,
            issuers: reflector::store_shared(1).0,
            cluster_issuers: reflector::store_shared(1).0,
            secrets: Default::default(),
            crds: Default::default(),
            filled: std::array::from_fn(|i| senders[i].subscribe()),
            certificates: certificates.clone(),
        };
        let runner = tokio::spawn(async move { certificates.wait_until_ready().await });
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let caches = caches.clone();
                tokio::spawn(async move { caches.wait_until_ready().await })
            })
            .collect();
        // Every waiter is parked before the caches fill.
        tokio::task::yield_now().await;
        assert!(!runner.is_finished() && waiters.iter().all(|w| !w.is_finished()));
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for sender in &senders {
            sender.send_replace(true);
        }
        async fn woken<T>(task: tokio::task::JoinHandle<T>) -> Result<Result<T, tokio::task::JoinError>, ()> {
            tokio::time::timeout(std::time::Duration::from_secs(5), task).await.map_err(|_| ())
        }
        woken(runner).await.expect("the runner's wait is woken").unwrap().unwrap();
        for waiter in waiters {
            woken(waiter).await.expect("every reconcile's wait is woken").unwrap();
        }
    }

    #[test]
    fn a_status_that_differs_from_the_last_write_lags() {
        let writes = LastWrites::default();
        assert!(!writes.lags("u", &"old"), "nothing written yet: the cache is all there is");
        assert!(!writes.wrote("u", &"old"));
        writes.record("u", &"new");
        assert!(writes.lags("u", &"old"));
        assert!(!writes.lags("u", &"new"));
        assert!(writes.wrote("u", &"new"));
        assert!(!writes.wrote("other", &"new"));
    }

    #[test]
    fn recent_entries_expire_and_are_pruned() {
        let lasting = Recent::new(Duration::from_secs(3600));
        lasting.note("k".into(), 1);
        assert_eq!(lasting.get("k"), Some(1));
        // Nothing lives with no time to live: every entry is expired as soon as it is noted.
        let fleeting = Recent::new(Duration::ZERO);
        fleeting.note("old".into(), 1);
        assert_eq!(fleeting.get("old"), None, "expired");
        for i in 0..64 {
            fleeting.note(format!("k{i}"), i);
        }
        let entries = fleeting.entries.lock().unwrap();
        assert!(!entries.map.contains_key("old"), "pruned once the map grew");
        assert_eq!(entries.map.len(), 1, "only the entry noted after pruning is left");
    }

    #[test]
    fn recent_creates_are_known_by_namespace_and_name() {
        let created = RecentCreates::default();
        assert!(!created.contains("ns", "a-1"));
        created.note("ns", "a-1");
        assert!(created.contains("ns", "a-1"));
        assert!(!created.contains("other", "a-1"));
        assert!(!created.contains("ns", "a-2"));
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
