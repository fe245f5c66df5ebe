//! CertificateAttempts, cached in two forms. Every attempt is kept as a small record of what the
//! Certificate controller decides from (its summary and its trust claim). Only attempts with
//! work left (under way, or ended but not yet cleaned up) are kept whole, in the store the
//! attempt controller runs from: at rest that store is empty, however long the history.

use super::{Changes, Deletions, Fill, Packed};
use crate::watched::WatchedMap;
use crate::{
    api::{CertificateAttempt, attempt::CertificateAttemptStatus},
    pki::NameRequest,
    policy::{
        trigger::AttemptView,
        trust::{Claim, claim},
    },
};
use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{Store, store::Writer},
        watcher,
    },
};
use std::sync::{Arc, Mutex};

/// What the Certificate controller needs of one attempt.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    /// Its summary; `index` and `matches_spec` depend on the Certificate it is looked at for.
    pub view: AttemptView,
    pub created: Option<Timestamp>,
    /// The uids of its owners.
    pub owners: Vec<String>,
    /// What decides whether it is trusted (see `policy::trust`).
    pub claim: Claim,
}

impl AttemptRecord {
    pub fn of(attempt: &CertificateAttempt) -> Self {
        let status: CertificateAttemptStatus = attempt.status.clone().unwrap_or_default();
        let spec = &attempt.spec;
        let view = AttemptView {
            name: attempt.name_any(),
            index: 0,
            type_: spec.type_,
            reason: spec.reason.clone(),
            phase: status.phase,
            generation: spec.certificate_generation,
            renew_request: spec.renew_request.clone(),
            revoke_request: spec.revoke_request.clone(),
            names: NameRequest {
                dns_names: spec.dns_names.clone(),
                ip_addresses: spec.ip_addresses.iter().filter_map(|ip| ip.parse().ok()).collect(),
                common_name: spec.common_name.clone(),
            },
            issuer: spec.issuer_ref.clone(),
            key: spec.key_algorithm.clone(),
            started_at: status.started_at.map(|t| t.0),
            finished_at: status.finished_at.map(|t| t.0),
            retry_after: status.retry_after.map(|t| t.0),
            error_code: status.error_code,
            error_message: status.error_message,
            challenges: status.challenges,
            serial: status.issued.map(|i| i.serial_number),
            fallback_reason: spec.fallback_reason.clone(),
            matches_spec: false,
        };
        Self {
            view,
            created: attempt.creation_timestamp().map(|t| t.0),
            owners: attempt.owner_references().iter().map(|o| o.uid.clone()).collect(),
            claim: claim(attempt),
        }
    }

    pub fn name(&self) -> &str {
        &self.view.name
    }
}

/// An attempt's namespace and name.
type AttemptKey = (String, String);

#[derive(Default)]
struct Entries {
    map: WatchedMap<AttemptKey, Packed<AttemptRecord>>,
}

/// Every attempt's record, by namespace and name.
#[derive(Default)]
pub struct AttemptIndex(Mutex<Entries>);

fn key_of(attempt: &CertificateAttempt) -> AttemptKey {
    (attempt.namespace().unwrap_or_default(), attempt.name_any())
}

impl AttemptIndex {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<AttemptRecord>> {
        self.entries().map.get(&(namespace.to_string(), name.to_string())).map(|packed| Arc::new(packed.unpack()))
    }

    /// The attempts in `namespace` whose names `named` accepts.
    pub fn matching(&self, namespace: &str, named: impl Fn(&str) -> bool) -> Vec<Arc<AttemptRecord>> {
        let entries = self.entries();
        let wanted = entries.map.iter().filter(|((ns, name), _)| ns == namespace && named(name));
        wanted.map(|(_, packed)| Arc::new(packed.unpack())).collect()
    }

    /// Notes what `attempt` now says, as its watch event would (the footprint bench fills an
    /// index this way).
    pub fn note(&self, attempt: &CertificateAttempt) {
        self.entries().map.insert(key_of(attempt), Packed::of(&AttemptRecord::of(attempt)));
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.0.lock().expect("attempt index lock")
    }

    fn apply(&self, event: &watcher::Event<CertificateAttempt>) {
        let update = |_, attempt: &CertificateAttempt| Some(Packed::of(&AttemptRecord::of(attempt)));
        self.entries().map.apply(event, key_of, update, |_| false);
    }
}

/// The watch of attempts: it keeps the records and the store of attempts with work left, and
/// hands each change to the controllers subscribed to it.
pub struct AttemptFeed {
    api: Api<CertificateAttempt>,
    config: watcher::Config,
    index: Arc<AttemptIndex>,
    writer: Writer<CertificateAttempt>,
    /// Every change, for the Certificate controller.
    all: Changes<CertificateAttempt>,
    /// Changes of attempts with work left, for the attempt controller.
    working: Changes<CertificateAttempt>,
    deletions: Deletions<CertificateAttempt>,
    filled: Fill,
}

impl AttemptFeed {
    pub(super) fn new(
        api: Api<CertificateAttempt>,
        config: watcher::Config,
        filled: Fill,
    ) -> (Arc<AttemptIndex>, Store<CertificateAttempt>, Self) {
        let index = Arc::new(AttemptIndex::default());
        let writer = Writer::default();
        let store = writer.as_reader();
        let feed = Self {
            api,
            config,
            index: index.clone(),
            writer,
            all: Changes::new(),
            working: Changes::new(),
            deletions: Deletions::default(),
            filled,
        };
        (index, store, feed)
    }

    pub(super) fn filled(&self) -> &Fill {
        &self.filled
    }

    /// Every attempt as it changes (the Certificate controller's trigger).
    pub fn subscribe(&self) -> impl Stream<Item = Arc<CertificateAttempt>> + Send + 'static {
        self.all.subscribe()
    }

    /// The attempts with work left, as they change (the attempt controller's trigger).
    pub fn subscribe_working(&self) -> impl Stream<Item = Arc<CertificateAttempt>> + Send + 'static {
        self.working.subscribe()
    }

    /// A stream of the attempts as they are deleted, for one controller.
    pub fn deletions(&self) -> impl Stream<Item = Arc<CertificateAttempt>> + Send + use<> {
        self.deletions.subscribe()
    }

    pub(super) fn run(self) -> BoxFuture<'static, ()> {
        let Self { api, config, index, mut writer, all, working, deletions, filled } = self;
        let mut events = watcher(api, config).default_backoff().modify(super::trim_attempt).boxed();
        async move {
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        filled.failed(&error);
                        continue;
                    }
                };
                index.apply(&event);
                match event {
                    watcher::Event::Apply(attempt) => {
                        let working_on = !attempt.is_settled();
                        let attempt = Arc::new(attempt);
                        // A settled attempt leaves the store of attempts with work left.
                        let change = if working_on { watcher::Event::Apply } else { watcher::Event::Delete };
                        writer.apply_watcher_event(&change(attempt.as_ref().clone()));
                        dispatch(&all, &working, attempt, working_on).await;
                    }
                    watcher::Event::InitApply(attempt) => {
                        let working_on = !attempt.is_settled();
                        let attempt = Arc::new(attempt);
                        if working_on {
                            writer.apply_watcher_event(&watcher::Event::InitApply(attempt.as_ref().clone()));
                        }
                        dispatch(&all, &working, attempt, working_on).await;
                    }
                    watcher::Event::Delete(attempt) => {
                        writer.apply_watcher_event(&watcher::Event::Delete(attempt.clone()));
                        deletions.send(Arc::new(attempt));
                    }
                    event @ watcher::Event::Init => writer.apply_watcher_event(&event),
                    event @ watcher::Event::InitDone => {
                        writer.apply_watcher_event(&event);
                        filled.listed();
                    }
                }
            }
        }
        .boxed()
    }
}

async fn dispatch(
    all: &Changes<CertificateAttempt>,
    working: &Changes<CertificateAttempt>,
    attempt: Arc<CertificateAttempt>,
    working_on: bool,
) {
    if working_on {
        working.send(attempt.clone()).await;
    }
    all.send(attempt).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        CLEANUP_FINALIZER,
        attempt::{AttemptPhase, CertificateAttemptSpec},
    };

    fn attempt(name: &str, phase: AttemptPhase) -> CertificateAttempt {
        let mut attempt = CertificateAttempt::new(
            name,
            CertificateAttemptSpec { certificate_name: "web".into(), reason: "new".into(), ..Default::default() },
        );
        attempt.metadata.namespace = Some("ns".into());
        attempt.status = Some(CertificateAttemptStatus { phase, ..Default::default() });
        attempt
    }

    #[test]
    fn every_attempt_is_recorded_by_namespace_and_name() {
        let index = AttemptIndex::default();
        index.apply(&watcher::Event::Apply(attempt("web-1", AttemptPhase::Succeeded)));
        let record = index.get("ns", "web-1").expect("recorded");
        assert_eq!(record.view.phase, AttemptPhase::Succeeded);
        assert_eq!(record.view.reason, "new");
        assert_eq!(index.get("other", "web-1"), None);
        assert_eq!(index.matching("ns", |name| name.starts_with("web-")).len(), 1);
        assert_eq!(index.matching("ns", |name| name.starts_with("api-")).len(), 0);
        index.apply(&watcher::Event::Delete(attempt("web-1", AttemptPhase::Succeeded)));
        assert_eq!(index.get("ns", "web-1"), None);
    }

    #[test]
    fn a_record_reads_back_as_it_was_made_from_a_full_attempt() {
        use crate::api::attempt::{IssuedCertificate, ValidationRecord};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
        let mut full = attempt("web-3", AttemptPhase::Failed);
        full.metadata.owner_references = Some(vec![OwnerReference {
            uid: "8a4c".into(),
            controller: Some(true),
            kind: "Certificate".into(),
            name: "web".into(),
            ..Default::default()
        }]);
        full.metadata.creation_timestamp = Some(Time(jiff::Timestamp::now()));
        full.spec.dns_names = vec!["web.example.com".into()];
        full.spec.ip_addresses = vec!["192.0.2.1".into()];
        full.spec.renew_request = Some("2026-12-07T10:00:00Z".into());
        let status = full.status.as_mut().unwrap();
        status.started_at = Some(Time(jiff::Timestamp::now()));
        status.error_code = Some("RateLimited".into());
        status.error_message = Some("too many certificates".into());
        let now = Time(jiff::Timestamp::now());
        let fingerprint_sha256 = "0E:E5".into();
        status.issued = Some(IssuedCertificate {
            serial_number: "0A1B".into(),
            not_before: now.clone(),
            not_after: now,
            fingerprint_sha256,
        });
        // An API type whose empty optional fields are skipped when serialised.
        let pending =
            ValidationRecord { dns_name: "web.example.com".into(), status: "pending".into(), ..Default::default() };
        status.challenges = vec![pending];
        let index = AttemptIndex::default();
        index.note(&full);
        assert_eq!(*index.get("ns", "web-3").expect("noted"), AttemptRecord::of(&full));
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_shows() {
        let index = AttemptIndex::default();
        index.apply(&watcher::Event::Apply(attempt("web-1", AttemptPhase::Succeeded)));
        index.apply(&watcher::Event::Apply(attempt("web-2", AttemptPhase::Failed)));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(attempt("web-2", AttemptPhase::Failed)));
        assert!(index.get("ns", "web-1").is_some(), "until the list is complete, nothing is dropped");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.get("ns", "web-1"), None);
        assert!(index.get("ns", "web-2").is_some());
    }

    #[test]
    fn only_attempts_with_work_left_are_unsettled() {
        assert!(!attempt("web-1", AttemptPhase::Validating).is_settled());
        assert!(attempt("web-1", AttemptPhase::Succeeded).is_settled());
        let mut held = attempt("web-1", AttemptPhase::Failed);
        held.metadata.finalizers = Some(vec![CLEANUP_FINALIZER.into()]);
        assert!(!held.is_settled(), "ended, but not cleaned up yet");
    }
}
