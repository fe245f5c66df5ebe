//! What the solver servers answer: the HTTP-01 and TLS-ALPN-01 challenges of the attempts in
//! progress, as this replica's own watch of CertificateAttempts sees them. Every replica keeps
//! it, leader or standby: an attempt writes each challenge's key authorisation to its status
//! before it tells the CA to validate, so whichever replica the CA reaches can answer, and a
//! leader that dies mid-validation costs no failed validation.

use crate::api::{CertificateAttempt, attempt::AttemptPhase};
use crate::watched::WatchedMap;
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use std::{sync::Mutex, time::Duration};
use tokio::sync::watch;

/// How long a request for a challenge this replica does not know yet waits for its watch to
/// deliver it: the attempt tells the CA to validate right after its status write, and the CA
/// may reach a replica whose watch is a few milliseconds behind.
pub const UNKNOWN_CHALLENGE_WAIT: Duration = Duration::from_secs(3);

/// One challenge an attempt in progress answers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// `GET /.well-known/acme-challenge/<token>` answers the key authorisation.
    Http01 { token: String, key_authorization: String },
    /// A TLS handshake for `name` over `acme-tls/1` presents a certificate carrying the
    /// SHA-256 of the key authorisation.
    TlsAlpn01 { name: String, key_authorization: String },
}

/// An attempt's namespace and name.
type AttemptKey = (String, String);

#[derive(Default)]
struct Entries {
    /// The challenges of each attempt in progress; only those, so the cost at rest is nil.
    by_attempt: WatchedMap<AttemptKey, Vec<Answer>>,
}

impl Entries {
    fn find<T>(&self, pick: impl Fn(&Answer) -> Option<T>) -> Option<T> {
        self.by_attempt.values().flatten().find_map(pick)
    }
}

/// The challenges every replica answers, and whether its watch has listed the attempts yet.
pub struct Answers {
    entries: Mutex<Entries>,
    /// Bumped at every change: a request waiting for an unknown challenge looks again.
    changed: watch::Sender<u64>,
    synced: watch::Sender<bool>,
    wait: Duration,
}

impl Default for Answers {
    fn default() -> Self {
        Self::waiting(UNKNOWN_CHALLENGE_WAIT)
    }
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers").finish_non_exhaustive()
    }
}

impl Answers {
    /// Answers that wait at most `wait` for a challenge they do not know yet.
    pub fn waiting(wait: Duration) -> Self {
        Self { entries: Mutex::default(), changed: watch::Sender::new(0), synced: watch::Sender::new(false), wait }
    }

    /// The key authorisation for HTTP-01 `token`.
    pub async fn http01(&self, token: &str) -> Option<String> {
        self.wait_for(|answer| match answer {
            Answer::Http01 { token: t, key_authorization } if t == token => Some(key_authorization.clone()),
            _ => None,
        })
        .await
    }

    /// The key authorisation for a TLS-ALPN-01 handshake for `name`.
    pub async fn tls_alpn01(&self, name: &str) -> Option<String> {
        self.wait_for(|answer| match answer {
            Answer::TlsAlpn01 { name: n, key_authorization } if n.eq_ignore_ascii_case(name) => {
                Some(key_authorization.clone())
            }
            _ => None,
        })
        .await
    }

    /// Whether the watch has listed every attempt once (so what it answers is complete).
    pub fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The first answer `pick` finds, waiting (woken by the watch, at most `self.wait`) for
    /// one that is not there yet.
    async fn wait_for<T>(&self, pick: impl Fn(&Answer) -> Option<T>) -> Option<T> {
        // Subscribed before looking: a change between the look and the wait still wakes it.
        let mut changed = self.changed.subscribe();
        let asked = tokio::time::Instant::now();
        let deadline = asked + self.wait;
        loop {
            if let Some(found) = self.entries().find(&pick) {
                if asked.elapsed() > Duration::from_millis(1) {
                    tracing::debug!(waited = ?asked.elapsed(), "a challenge not known when asked arrived");
                }
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::debug!(waited = ?asked.elapsed(), "asked for a challenge this replica does not know");
                    return None;
                }
            }
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().expect("answers lock")
    }

    /// Takes in one event of the watch of attempts.
    pub fn apply(&self, event: &watcher::Event<CertificateAttempt>) {
        {
            let by_attempt = &mut self.entries().by_attempt;
            let update = |_, attempt: &CertificateAttempt| Some(answers_of(attempt)).filter(|a| !a.is_empty());
            by_attempt.apply(event, key_of, update, |_| false);
            if matches!(event, watcher::Event::InitDone) {
                by_attempt.shrink_to_fit();
            }
        }
        if matches!(event, watcher::Event::InitDone) {
            self.synced.send_replace(true);
        }
        self.changed.send_modify(|version| *version = version.wrapping_add(1));
    }
}

fn key_of(attempt: &CertificateAttempt) -> AttemptKey {
    (attempt.namespace().unwrap_or_default(), attempt.name_any())
}

/// The challenges `attempt` answers: those of its status while it presents them or the CA
/// validates them; none before or after.
fn answers_of(attempt: &CertificateAttempt) -> Vec<Answer> {
    let Some(status) = attempt.status.as_ref() else { return Vec::new() };
    if !matches!(status.phase, AttemptPhase::Presenting | AttemptPhase::Validating) {
        return Vec::new();
    }
    let answer = |record: &crate::api::attempt::ValidationRecord| {
        let key_authorization = record.record_value.clone()?;
        match record.type_.as_str() {
            "http-01" => {
                let token = record.http_url.as_deref()?.rsplit('/').next()?.to_string();
                Some(Answer::Http01 { token, key_authorization })
            }
            "tls-alpn-01" => Some(Answer::TlsAlpn01 { name: record.dns_name.clone(), key_authorization }),
            _ => None,
        }
    };
    status.challenges.iter().filter_map(answer).collect()
}

/// Keeps `answers` current from a watch of the attempts `api` reaches, until the process ends.
/// The watch retries by itself (with backoff) while the API server cannot be reached or the
/// CRD is not installed.
pub async fn watch(api: Api<CertificateAttempt>, answers: std::sync::Arc<Answers>) {
    let config = watcher::Config::default().any_semantic();
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => answers.apply(&event),
            Err(error) => tracing::warn!(%error, "the solvers' watch of CertificateAttempts failed; retrying"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::attempt::{CertificateAttemptStatus, ValidationRecord};
    use std::sync::Arc;

    pub(crate) fn attempt(name: &str, phase: AttemptPhase, records: Vec<ValidationRecord>) -> CertificateAttempt {
        let mut attempt = CertificateAttempt::new(name, Default::default());
        attempt.metadata.namespace = Some("ns".into());
        attempt.status = Some(CertificateAttemptStatus { phase, challenges: records, ..Default::default() });
        attempt
    }

    pub(crate) fn http(name: &str, token: &str) -> ValidationRecord {
        ValidationRecord {
            dns_name: name.into(),
            type_: "http-01".into(),
            record_value: Some(format!("{token}.thumb")),
            http_url: Some(format!("http://{name}/.well-known/acme-challenge/{token}")),
            status: "pending".into(),
            ..Default::default()
        }
    }

    pub(crate) fn tls(name: &str, key_authorization: &str) -> ValidationRecord {
        ValidationRecord {
            dns_name: name.into(),
            type_: "tls-alpn-01".into(),
            record_value: Some(key_authorization.into()),
            status: "pending".into(),
            ..Default::default()
        }
    }

    fn quick() -> Answers {
        Answers::waiting(Duration::from_millis(50))
    }

    #[tokio::test]
    async fn attempts_answer_while_they_present_or_validate() {
        let answers = quick();
        let records = vec![http("a.example.com", "tok"), tls("b.example.com", "tls.thumb")];
        answers.apply(&watcher::Event::Apply(attempt("web-1", AttemptPhase::Presenting, records.clone())));
        assert_eq!(answers.http01("tok").await.as_deref(), Some("tok.thumb"));
        assert_eq!(answers.tls_alpn01("B.example.com").await.as_deref(), Some("tls.thumb"), "names ignore case");
        assert_eq!(answers.http01("other").await, None);
        answers.apply(&watcher::Event::Apply(attempt("web-1", AttemptPhase::Validating, records.clone())));
        assert_eq!(answers.http01("tok").await.as_deref(), Some("tok.thumb"));
        answers.apply(&watcher::Event::Apply(attempt("web-1", AttemptPhase::Finalizing, records.clone())));
        assert_eq!(answers.http01("tok").await, None, "validated: nothing left to answer");
        assert_eq!(answers.tls_alpn01("b.example.com").await, None);
        answers.apply(&watcher::Event::Apply(attempt("web-2", AttemptPhase::Validating, records.clone())));
        answers.apply(&watcher::Event::Delete(attempt("web-2", AttemptPhase::Validating, records)));
        assert_eq!(answers.http01("tok").await, None, "deleted");
        assert!(answers.entries().by_attempt.is_empty(), "at rest, nothing is kept");
    }

    #[tokio::test]
    async fn a_relist_drops_what_it_no_longer_shows_and_marks_the_answers_synced() {
        let answers = quick();
        answers.apply(&watcher::Event::Apply(attempt("web-1", AttemptPhase::Validating, vec![http("a", "t1")])));
        assert!(!answers.synced());
        answers.apply(&watcher::Event::Init);
        answers.apply(&watcher::Event::InitApply(attempt("web-2", AttemptPhase::Validating, vec![http("b", "t2")])));
        assert!(answers.http01("t1").await.is_some(), "until the list is complete, nothing is dropped");
        answers.apply(&watcher::Event::InitDone);
        assert!(answers.synced());
        assert_eq!(answers.http01("t1").await, None);
        assert!(answers.http01("t2").await.is_some());
    }

    /// The CA may ask a replica whose watch has not delivered the attempt's status write yet.
    #[tokio::test]
    async fn a_challenge_not_known_yet_is_waited_for() {
        let answers = Arc::new(Answers::waiting(Duration::from_secs(30)));
        let asking = tokio::spawn({
            let answers = answers.clone();
            async move { answers.http01("late").await }
        });
        // Changes that do not bring it do not end the wait.
        answers.apply(&watcher::Event::Apply(attempt("web-1", AttemptPhase::Validating, vec![http("a", "t1")])));
        tokio::task::yield_now().await;
        assert!(!asking.is_finished());
        answers.apply(&watcher::Event::Apply(attempt("web-2", AttemptPhase::Presenting, vec![http("b", "late")])));
        let found = tokio::time::timeout(Duration::from_secs(5), asking).await.expect("woken by the watch");
        assert_eq!(found.unwrap().as_deref(), Some("late.thumb"));
    }
}
