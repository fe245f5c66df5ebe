//! certpilot's Secrets as decisions see them: one small entry per Secret, by namespace and
//! name, holding what the watch of their metadata says (version, which attempt wrote them,
//! whether certpilot wrote them and for which Certificate) and what certpilot learnt the last
//! time it read or wrote their data. Not a store of objects: at 10,000 Certificates a cached
//! `ObjectMeta` per Secret (maps of labels and annotations, managed fields) cost more than
//! everything else certpilot keeps about them.

use super::{Changes, Deletions, Fill, Packed};
use crate::watched::WatchedMap;
use crate::{
    policy::trigger::SecretState,
    secret::{ATTEMPT_ANNOTATION, classify, holder},
};
use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::ListParams,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use std::sync::{Arc, Mutex};

/// A Secret's namespace and name.
type SecretKey = (String, String);

/// What the watch of certpilot's Secrets says of one.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchedSecret {
    pub version: String,
    /// The attempt its `certpilot.dev/attempt` annotation names.
    pub attempt: Option<String>,
    /// The Certificate label's value, when certpilot wrote the Secret (its field manager is in
    /// `managedFields`) and labelled it as its own: labels alone prove nothing.
    pub written_for: Option<String>,
}

impl WatchedSecret {
    fn of(meta: &PartialObjectMeta<Secret>) -> Self {
        Self {
            version: meta.resource_version().unwrap_or_default(),
            attempt: meta.annotations().get(ATTEMPT_ANNOTATION).cloned(),
            written_for: holder(&meta.metadata),
        }
    }

    /// Whether attempt `attempt` wrote this version.
    pub fn names_attempt(&self, attempt: &str) -> bool {
        self.attempt.as_deref() == Some(attempt)
    }
}

/// What one Secret held when certpilot last read or wrote it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verified {
    /// Its resourceVersion then (`None`: it did not exist).
    pub version: Option<String>,
    /// The attempt whose write this was, if it was one.
    pub written_by: Option<String>,
    /// The Certificate `state` was judged for: the same Secret is another Certificate's to one
    /// of two Certificates naming it, and usable to the other.
    pub certificate: String,
    pub state: SecretState,
}

#[derive(Default)]
struct Entry {
    watched: Option<WatchedSecret>,
    /// Packed: the entry is a hundred bytes smaller too.
    verified: Option<Packed<Verified>>,
}

#[derive(Default)]
struct Entries {
    map: WatchedMap<SecretKey, Entry>,
}

/// The read side, shared by every controller.
#[derive(Default)]
pub struct SecretIndex(Mutex<Entries>);

fn key(namespace: &str, name: &str) -> SecretKey {
    (namespace.to_string(), name.to_string())
}

impl SecretIndex {
    /// What the watch last said of Secret `namespace/name` (`None`: not one of certpilot's).
    pub fn watched(&self, namespace: &str, name: &str) -> Option<WatchedSecret> {
        self.entries().map.get(&key(namespace, name)).and_then(|e| e.watched.clone())
    }

    /// What certpilot last knew of the Secret's data, at whatever version, as judged for
    /// Certificate `certificate`.
    pub fn verified(&self, namespace: &str, name: &str, certificate: &str) -> Option<Verified> {
        let entries = self.entries();
        let verified = entries.map.get(&key(namespace, name)).and_then(|e| e.verified.as_ref()).map(Packed::unpack);
        verified.filter(|v| v.certificate == certificate)
    }

    /// Remembers what the Secret's data was found (or written) to be. Only what decisions read
    /// of the certificate is kept: not its public key or subject.
    pub fn put_verified(&self, namespace: &str, name: &str, mut verified: Verified) {
        if let SecretState::Present(stored) | SecretState::Adopted(stored) = &mut verified.state {
            stored.info.public_key_info = Vec::new();
            stored.info.subject = String::new();
        }
        self.entries().map.entry(key(namespace, name)).or_default().verified = Some(Packed::of(&verified));
    }

    /// Forgets what was known of the Secret's data (it was deleted).
    pub fn forget_verified(&self, namespace: &str, name: &str) {
        let mut entries = self.entries();
        let key = key(namespace, name);
        if let Some(entry) = entries.map.get_mut(&key) {
            entry.verified = None;
            if entry.watched.is_none() {
                entries.map.remove(&key);
            }
        }
    }

    /// Notes what a Secret read whole holds for the Certificate certpilot wrote it for (none:
    /// not one of certpilot's, nothing to note). A Certificate whose name is longer than a
    /// label finds only a digest of it there, no note of its own: it reads the Secret itself.
    fn note_read(&self, secret: &Secret) {
        let Some(certificate) = holder(&secret.metadata) else { return };
        let state = classify(Some(secret), &certificate);
        let version = secret.resource_version();
        let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        self.put_verified(&namespace, &name, Verified { version, written_by: None, certificate, state });
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.0.lock().expect("secret index lock")
    }

    fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let key_of = |meta: &PartialObjectMeta<Secret>| key(&meta.namespace().unwrap_or_default(), &meta.name_any());
        let update = |held: Option<Entry>, meta: &PartialObjectMeta<Secret>| {
            Some(Entry { watched: Some(WatchedSecret::of(meta)), ..held.unwrap_or_default() })
        };
        // What certpilot verified of a deleted Secret is kept until it forgets it itself.
        let gone = |entry: &mut Entry| {
            entry.watched = None;
            entry.verified.is_some()
        };
        self.entries().map.apply(event, key_of, update, gone);
    }
}

/// How many Secrets one request reads when every Secret's data is verified at start.
const VERIFY_PAGE: u32 = 250;

/// Reads every one of certpilot's Secrets whole, a page at a time, and notes what each holds:
/// after a restart the Certificates find their Secrets verified, instead of reading them one
/// request each (at 100,000 Certificates, 100,000 GETs: six minutes before the operator is
/// quiet). Nothing of a page is kept but those notes. How many were read, or why it stopped
/// (the Secrets not yet noted are read one by one when needed).
async fn verify_all(api: Api<Secret>, config: watcher::Config, index: Arc<SecretIndex>) -> Result<usize, kube::Error> {
    let mut params = ListParams::default().limit(VERIFY_PAGE);
    params.label_selector = config.label_selector;
    let mut read = 0;
    let mut noting = None;
    loop {
        let page = api.list(&params).await?;
        read += page.items.len();
        // A page is noted (certificates parsed, keys checked) while the next one is read: the
        // two took about as long, one after the other.
        if let Some(previous) = noting.take() {
            noted(previous).await;
        }
        let index = index.clone();
        let items = page.items;
        noting = Some(tokio::task::spawn_blocking(move || items.iter().for_each(|secret| index.note_read(secret))));
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    if let Some(last) = noting {
        noted(last).await;
    }
    Ok(read)
}

/// Waits for a page to be noted; a panic while noting is the operator's own and carries on here.
async fn noted(noting: tokio::task::JoinHandle<()>) {
    if let Err(error) = noting.await
        && error.is_panic()
    {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// The watch of certpilot's Secrets (metadata only): it keeps the index and hands each change to
/// the controllers subscribed to it, keeping no object once they have seen it. Beside its first
/// list, the Secrets' data is read once, in pages (`verify_all`); the Secrets count as listed
/// once both are done.
pub struct SecretFeed {
    api: Api<PartialObjectMeta<Secret>>,
    whole: Api<Secret>,
    config: watcher::Config,
    index: Arc<SecretIndex>,
    changes: Changes<PartialObjectMeta<Secret>>,
    deletions: Deletions<PartialObjectMeta<Secret>>,
    filled: Fill,
}

impl SecretFeed {
    pub(super) fn new(
        (api, whole): (Api<PartialObjectMeta<Secret>>, Api<Secret>),
        config: watcher::Config,
        filled: Fill,
    ) -> (Arc<SecretIndex>, Self) {
        let index = Arc::new(SecretIndex::default());
        let feed = Self {
            api,
            whole,
            config,
            index: index.clone(),
            changes: Changes::new(),
            deletions: Deletions::default(),
            filled,
        };
        (index, feed)
    }

    pub(super) fn filled(&self) -> &Fill {
        &self.filled
    }

    /// A stream of the Secrets as they change, for one controller.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<PartialObjectMeta<Secret>>> + Send + 'static {
        self.changes.subscribe()
    }

    /// A stream of the Secrets as they are deleted, for one controller.
    pub fn deletions(&self) -> impl Stream<Item = Arc<PartialObjectMeta<Secret>>> + Send + 'static {
        self.deletions.subscribe()
    }

    pub(super) fn run(self) -> BoxFuture<'static, ()> {
        let Self { api, whole, config, index, changes, deletions, filled } = self;
        async move {
            // A task of its own: the pages are read (and parsed) beside the watch's list, not
            // one after the other. Dropped with the feed, it stops.
            let mut verifying = tokio::task::JoinSet::new();
            verifying.spawn(verify_all(whole, config.clone(), index.clone()));
            let started = std::time::Instant::now();
            let mut fill = ListedOnceVerified { filled, listed: false, verified: false };
            let mut events = watcher(api, config).default_backoff().modify(super::trim_secret).boxed();
            loop {
                tokio::select! {
                    Some(result) = verifying.join_next(), if !fill.verified => {
                        log_verified(result, started.elapsed());
                        fill.verified();
                    }
                    event = events.next() => match event {
                        Some(event) => take_in(event, &index, (&changes, &deletions), &mut fill).await,
                        None => return,
                    },
                }
            }
        }
        .boxed()
    }
}

/// Notes one event of the watch in the index and hands it to the controllers.
async fn take_in(
    event: Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>,
    index: &SecretIndex,
    (changes, deletions): (&Changes<PartialObjectMeta<Secret>>, &Deletions<PartialObjectMeta<Secret>>),
    fill: &mut ListedOnceVerified,
) {
    if let Ok(event) = &event {
        index.apply(event);
    }
    match event {
        Ok(watcher::Event::InitApply(meta) | watcher::Event::Apply(meta)) => changes.send(Arc::new(meta)).await,
        Ok(watcher::Event::Delete(meta)) => deletions.send(Arc::new(meta)),
        Ok(watcher::Event::InitDone) => fill.listed(),
        Ok(watcher::Event::Init) => {}
        Err(error) => fill.filled.failed(&error),
    }
}

/// The Secrets count as listed once the watch has listed them and their data is verified:
/// until then the Certificates would read their Secrets one by one.
struct ListedOnceVerified {
    filled: Fill,
    listed: bool,
    verified: bool,
}

impl ListedOnceVerified {
    fn listed(&mut self) {
        self.listed = true;
        self.tell();
    }

    fn verified(&mut self) {
        self.verified = true;
        self.tell();
    }

    fn tell(&self) {
        if self.listed && self.verified {
            self.filled.listed();
        }
    }
}

/// How the reading of the Secrets in pages ended.
fn log_verified(result: Result<Result<usize, kube::Error>, tokio::task::JoinError>, took: std::time::Duration) {
    match result {
        Ok(Ok(read)) => tracing::info!(read, seconds = took.as_secs_f64(), "verified certpilot's Secrets"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not read certpilot's Secrets in pages; each is read when needed")
        }
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => tracing::warn!(%error, "the reading of certpilot's Secrets in pages stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CERTIFICATE_NAME_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
    use crate::secret::label_value;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    fn secret(name: &str, version: &str, certpilot_wrote_it: bool) -> PartialObjectMeta<Secret> {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            resource_version: Some(version.into()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                    (CERTIFICATE_NAME_LABEL.to_string(), "web".to_string()),
                ]
                .into(),
            ),
            annotations: Some([(ATTEMPT_ANNOTATION.to_string(), "web-3".to_string())].into()),
            managed_fields: certpilot_wrote_it
                .then(|| vec![ManagedFieldsEntry { manager: Some(FIELD_MANAGER.into()), ..Default::default() }]),
            ..Default::default()
        };
        PartialObjectMeta { metadata, ..Default::default() }
    }

    #[test]
    fn a_watched_secret_is_reduced_to_what_decisions_read() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("web-tls", "7", true)));
        let watched = index.watched("ns", "web-tls").expect("indexed");
        assert_eq!(watched.version, "7");
        assert!(watched.names_attempt("web-3") && !watched.names_attempt("web-2"));
        assert_eq!(watched.written_for.as_deref(), Some("web"));
        assert_eq!(index.watched("other", "web-tls"), None);
    }

    #[test]
    fn labels_without_certpilots_field_manager_prove_nothing() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("forged", "1", false)));
        assert_eq!(index.watched("ns", "forged").unwrap().written_for, None);
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_shows_but_keeps_what_was_verified() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("kept", "1", true)));
        index.apply(&watcher::Event::Apply(secret("gone", "1", true)));
        let missing =
            Verified { version: None, written_by: None, certificate: "web".into(), state: SecretState::Missing };
        index.put_verified("ns", "gone", missing.clone());
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("kept", "2", true)));
        assert!(index.watched("ns", "gone").is_some(), "until the list is complete, nothing is dropped");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.watched("ns", "kept").unwrap().version, "2");
        assert_eq!(index.watched("ns", "gone"), None);
        assert_eq!(index.verified("ns", "gone", "web"), Some(missing));
        index.forget_verified("ns", "gone");
        assert_eq!(index.verified("ns", "gone", "web"), None);
        assert!(index.entries().map.len() == 1, "an entry with nothing left in it is removed");
    }

    #[test]
    fn a_secret_read_whole_is_noted_for_the_certificate_certpilot_wrote_it_for() {
        let index = SecretIndex::default();
        let whole = |meta: PartialObjectMeta<Secret>| Secret { metadata: meta.metadata, ..Default::default() };
        index.note_read(&whole(secret("web-tls", "7", true)));
        let noted = index.verified("ns", "web-tls", "web").expect("noted for web");
        assert_eq!(noted.version.as_deref(), Some("7"));
        assert!(matches!(noted.state, SecretState::Invalid(ref why) if why.contains("tls.crt")), "{:?}", noted.state);
        index.note_read(&whole(secret("forged", "1", false)));
        assert_eq!(index.verified("ns", "forged", "web"), None, "labels alone make no Secret certpilot's");
        let mut long = secret("long-tls", "1", true);
        let name = "l".repeat(100);
        long.metadata.labels.as_mut().unwrap().insert(crate::api::CERTIFICATE_NAME_LABEL.into(), label_value(&name));
        index.note_read(&whole(long));
        assert_eq!(index.verified("ns", "long-tls", &name), None, "the label holds a digest of the name");
    }

    /// What a self-signed certificate for `web.example.com` and 192.0.2.1 reads as.
    fn stored_certificate() -> crate::policy::trigger::StoredCertificate {
        use crate::pki::{NameRequest, PrivateKey, sign};
        let key = PrivateKey::generate(&Default::default()).unwrap();
        let names = NameRequest {
            dns_names: vec!["web.example.com".into()],
            ip_addresses: vec!["192.0.2.1".parse().unwrap()],
            common_name: Some("web.example.com".into()),
        };
        let now = jiff::Timestamp::now();
        let hour = jiff::SignedDuration::from_hours(1);
        let request =
            sign::SignRequest { names: &names, key: &key, not_before: now, not_after: now + hour, is_ca: false };
        let pem = sign::self_signed(&request).unwrap();
        crate::policy::trigger::StoredCertificate {
            info: crate::pki::cert::parse_chain(pem.as_bytes()).unwrap(),
            issuer: Some(crate::api::IssuerRef { kind: crate::api::IssuerKind::ClusterIssuer, name: "ca".into() }),
            key: "ECDSA-256".into(),
            ari_id: Some("aki.serial".into()),
            outputs: vec![crate::api::request::OutputFormatType::CombinedPEM],
        }
    }

    #[test]
    fn what_was_verified_reads_back_as_it_was_noted() {
        use crate::policy::adopt::NotAdoptable;
        let index = SecretIndex::default();
        let mut present = stored_certificate();
        present.info.subject = String::new();
        present.info.public_key_info = Vec::new();
        let states = [
            SecretState::Missing,
            SecretState::NotOwned { holder: Some("api".into()) },
            SecretState::Invalid("it has no tls.crt".into()),
            SecretState::Present(Box::new(present.clone())),
            SecretState::Adopted(Box::new(present)),
            SecretState::NotAdoptable {
                reason: NotAdoptable::NamesDiffer { missing: vec!["a".into()], extra: vec![] },
            },
        ];
        for state in states {
            let verified = Verified {
                version: Some("9".into()),
                written_by: Some("web-2".into()),
                certificate: "web".into(),
                state,
            };
            index.put_verified("ns", "web-tls", verified.clone());
            assert_eq!(index.verified("ns", "web-tls", "web"), Some(verified));
        }
    }

    #[test]
    fn a_deleted_secret_leaves_the_index() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("web-tls", "7", true)));
        index.apply(&watcher::Event::Delete(secret("web-tls", "7", true)));
        assert_eq!(index.watched("ns", "web-tls"), None);
    }

    #[test]
    fn the_latest_verification_replaces_the_one_before() {
        let index = SecretIndex::default();
        let read = |version: &str| Verified {
            version: Some(version.into()),
            written_by: None,
            certificate: "web".into(),
            state: SecretState::Missing,
        };
        index.put_verified("ns", "s", read("7"));
        index.put_verified("ns", "s", read("8"));
        assert_eq!(index.verified("ns", "s", "web"), Some(read("8")));
        assert_eq!(index.verified("other", "s", "web"), None);
        assert_eq!(index.verified("ns", "s", "api"), None, "judged for Certificate web, not for api");
    }
}
