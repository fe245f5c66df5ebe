//! Whether a Certificate needs a new attempt, of which type, and if not, why not.

use super::{
    adopt::NotAdoptable,
    backoff::BackoffPolicy,
    fallback::{Choice, cycle, next_issuer},
    renewal::{RenewalSettings, RenewalTime, SuggestedWindow, renewal_time},
    revoke::RevokeRequest,
};
use crate::{
    api::{
        IssuerRef,
        attempt::{AttemptPhase, AttemptType, ValidationRecord},
        certificate::OutputFormatType,
    },
    issuance::FailureCode,
    keystore::PasswordProblem,
    pki::{CertInfo, NameRequest, cert::check_names},
};
use jiff::Timestamp;

/// The issuer, as the Certificate controller found it.
#[derive(Debug, Clone, PartialEq)]
pub enum IssuerState {
    Ready,
    NotFound(String),
    NotReady(String),
    /// Not looked at yet (just created, or certpilot just started): waited for like one not
    /// ready, but never passed over for a fallback, which would win every race at creation.
    Unchecked(String),
    /// Ready, but it may not issue for the names asked for (a CA's name constraints).
    CannotIssue(String),
}

/// The certificate currently stored in the target Secret.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredCertificate {
    pub info: CertInfo,
    /// The issuer that produced it (from the Secret's annotations).
    pub issuer: Option<IssuerRef>,
    /// The key algorithm, e.g. `ECDSA-256`.
    pub key: String,
    /// Its ACME Renewal Information identifier (`<aki>.<serial>`), when it has an AKI.
    pub ari_id: Option<String>,
    /// The additional output formats the Secret holds.
    pub outputs: Vec<OutputFormatType>,
}

/// The target Secret.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SecretState {
    Missing,
    /// It exists, certpilot did not create it for this Certificate, and it was not annotated
    /// for adoption. `holder`: the Certificate certpilot wrote it for, if it did.
    NotOwned {
        holder: Option<String>,
    },
    /// certpilot's, but unusable (no certificate, unreadable, key does not match).
    Invalid(String),
    Present(Box<StoredCertificate>),
    /// cert-manager issued it for this Certificate and it is good as it is (`policy::adopt`):
    /// used until its renewal time, when certpilot renews it and takes the Secret over.
    Adopted(Box<StoredCertificate>),
    /// cert-manager issued it for this Certificate, but certpilot cannot adopt it: left untouched.
    NotAdoptable {
        reason: NotAdoptable,
    },
}

/// What a CertificateAttempt says, reduced to what decisions need.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct AttemptView {
    pub name: String,
    pub index: u32,
    pub type_: AttemptType,
    pub reason: String,
    pub phase: AttemptPhase,
    pub generation: i64,
    pub renew_request: Option<String>,
    /// The `certpilot.dev/revoke` value it was made under (see `CertificateAttemptSpec`).
    pub revoke_request: Option<String>,
    pub names: NameRequest,
    pub issuer: IssuerRef,
    pub key: String,
    /// When work on it began (not when it was created: a Pending attempt has not begun).
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub retry_after: Option<Timestamp>,
    /// The serial number (hex) of the certificate it produced.
    pub serial: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    #[serde(with = "super::json_text")]
    pub challenges: Vec<ValidationRecord>,
    /// Why it went to a fallback issuer instead of `issuerRef`.
    pub fallback_reason: Option<String>,
    /// The attempt's snapshot still asks for what the Certificate asks for (`policy::trust`).
    pub matches_spec: bool,
}

/// What the user asks for, from the Certificate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub secret_name: String,
    pub names: NameRequest,
    pub issuer: IssuerRef,
    pub key: String,
    pub renewal: RenewalSettings,
    pub is_ca: bool,
    pub generation: i64,
    /// The current value of the `certpilot.dev/renew` annotation.
    pub renew_request: Option<String>,
    /// The current value of the `certpilot.dev/revoke` annotation.
    pub revoke_request: Option<String>,
    /// The additional output formats the Secret must hold.
    pub outputs: Vec<OutputFormatType>,
}

/// Everything the decision looks at.
#[derive(Debug, Clone)]
pub struct Observed {
    pub now: Timestamp,
    pub desired: Desired,
    /// The state of `desired.issuer` (the Certificate's `issuerRef`).
    pub issuer: IssuerState,
    /// The Certificate's `fallbackIssuerRefs`, in order, with their states.
    pub fallbacks: Vec<(IssuerRef, IssuerState)>,
    pub secret: SecretState,
    /// Attempts of this Certificate, oldest first.
    pub attempts: Vec<AttemptView>,
    /// `namespace/name`, for stable jitter.
    pub jitter_key: String,
    pub ari_window: Option<SuggestedWindow>,
    pub backoff: BackoffPolicy,
    /// A Certificate is not renewed more often than this, whatever its spec says.
    pub min_renewal_interval: jiff::SignedDuration,
    /// Why a keystore's password cannot be had, when an attempt is needed (only then is it read).
    pub keystore_password: Option<PasswordProblem>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Create an attempt.
    Start { type_: AttemptType, reason: String },
    /// An attempt for what is wanted is under way.
    InProgress,
    /// An attempt is under way for something no longer wanted (the spec changed): cancel it.
    Supersede { attempt: String, reason: String },
    /// An attempt is needed, but something the user must fix is in the way.
    Blocked { reason: &'static str, message: String },
    /// An attempt is needed, but the last one failed and the backoff (or Retry-After) runs until `until`.
    BackingOff { until: Timestamp },
    /// An attempt is due, but the last certificate was issued less than the minimum renewal
    /// interval ago: the next one waits until `until`.
    Held { until: Timestamp, message: String },
    /// Nothing to do; the next renewal is at `renew_at`.
    UpToDate,
}

/// The state of the stored certificate against the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Present, matching the spec, and not expired.
    pub usable: bool,
    /// Why an attempt is needed now, if it is.
    pub need: Option<(AttemptType, String)>,
    /// When the stored certificate is due for renewal.
    pub renewal: Option<RenewalTime>,
    /// The stored certificate exists but has expired.
    pub expired: bool,
}

impl Observed {
    /// The issuer the next attempt goes to (`policy::fallback`).
    pub fn next_issuer(&self) -> Choice {
        let listed: Vec<(IssuerRef, IssuerState)> =
            std::iter::once((self.desired.issuer.clone(), self.issuer.clone())).chain(self.fallbacks.clone()).collect();
        let needed_by = self.stored().map(|stored| stored.info.not_after);
        next_issuer(&listed, &cycle(&self.attempts, self.desired.generation), needed_by)
    }

    fn lists_issuer(&self, issuer: &IssuerRef) -> bool {
        issuer == &self.desired.issuer || self.fallbacks.iter().any(|(fallback, _)| fallback == issuer)
    }

    pub fn latest(&self) -> Option<&AttemptView> {
        self.attempts.last()
    }

    pub fn in_progress(&self) -> Option<&AttemptView> {
        self.latest().filter(|a| !a.phase.is_terminal())
    }

    /// The latest attempt that stored a certificate (a Revoke attempt stores none).
    fn latest_success(&self) -> Option<&AttemptView> {
        self.attempts.iter().rev().find(|a| a.phase == AttemptPhase::Succeeded && a.type_ != AttemptType::Revoke)
    }

    /// Failed attempts since the last success (cancelled ones do not count, nor do Revoke
    /// attempts: they obtain nothing, and a failed one is answered, never retried).
    pub fn consecutive_failures(&self) -> u32 {
        let mut count = 0;
        for attempt in self.attempts.iter().rev().filter(|a| a.type_ != AttemptType::Revoke) {
            match attempt.phase {
                AttemptPhase::Failed => count += 1,
                AttemptPhase::Cancelled => {}
                _ => break,
            }
        }
        count
    }

    /// The revocation request the annotation holds, with its value, when it can be read.
    fn revoke_request(&self) -> Option<(&str, RevokeRequest)> {
        let value = self.desired.revoke_request.as_deref().filter(|v| !v.is_empty())?;
        Some((value, RevokeRequest::parse(value).ok()?))
    }

    /// Why a Revoke attempt is needed: a revocation was requested and no attempt was made
    /// under that request yet (the Revoke attempt and every attempt after it carry it, so a
    /// request is answered once even when its Revoke attempt has been pruned).
    pub fn revocation_pending(&self) -> Option<String> {
        let (value, request) = self.revoke_request()?;
        let answered = self.attempts.iter().any(|a| a.revoke_request.as_deref() == Some(value));
        (!answered).then(|| {
            format!(
                "revocation ({}) was requested with the {} annotation",
                request.reason,
                crate::api::REVOKE_ANNOTATION
            )
        })
    }

    /// Why the certificate must be replaced after a revocation: its Revoke attempt succeeded
    /// (or the issuer cannot revoke: a self-signed certificate is still replaced), the request
    /// did not say `no-reissue`, and no certificate was stored since.
    pub fn revoked_not_replaced(&self) -> Option<String> {
        let (value, request) = self.revoke_request()?;
        let made_under = |a: &AttemptView| a.revoke_request.as_deref() == Some(value);
        let revoke = self.attempts.iter().rposition(|a| a.type_ == AttemptType::Revoke && made_under(a))?;
        let (revoked, after) = (&self.attempts[revoke], &self.attempts[revoke + 1..]);
        let replaced = after.iter().any(|a| a.phase == AttemptPhase::Succeeded && made_under(a));
        let not_possible = revoked.error_code.as_deref() == Some(FailureCode::RevocationNotPossible.as_str());
        let done = revoked.phase == AttemptPhase::Succeeded || (revoked.phase == AttemptPhase::Failed && not_possible);
        (request.reissue && done && !replaced).then(|| {
            format!(
                "the certificate was revoked ({}) by attempt {}: a new one with a new key replaces it",
                request.reason, revoked.name
            )
        })
    }

    /// The issuer a Revoke attempt goes to: the one that issued the stored certificate, when
    /// the Certificate still lists it.
    pub fn revocation_issuer(&self) -> IssuerRef {
        let issued_by = self.stored().and_then(|s| s.issuer.clone());
        issued_by.filter(|issuer| self.lists_issuer(issuer)).unwrap_or_else(|| self.desired.issuer.clone())
    }

    /// A renewal was requested with the annotation and no successful attempt answered it yet.
    fn manual_request_pending(&self) -> bool {
        let Some(request) = self.desired.renew_request.as_deref().filter(|r| !r.is_empty()) else { return false };
        self.latest_success().is_none_or(|a| a.renew_request.as_deref() != Some(request))
    }

    pub fn assess(&self) -> Assessment {
        let secret_name = &self.desired.secret_name;
        let stored = match &self.secret {
            SecretState::Missing => {
                let need = match self.latest_success() {
                    Some(_) => (AttemptType::Repair, format!("Secret {secret_name} was deleted")),
                    None => (AttemptType::Issue, format!("Secret {secret_name} does not exist")),
                };
                return Assessment { usable: false, need: Some(need), renewal: None, expired: false };
            }
            SecretState::NotOwned { holder } => {
                let why = match holder {
                    Some(holder) => format!("Secret {secret_name} exists and belongs to Certificate {holder}"),
                    None => format!("Secret {secret_name} exists but was not created by certpilot"),
                };
                let need = (AttemptType::Issue, why);
                return Assessment { usable: false, need: Some(need), renewal: None, expired: false };
            }
            SecretState::Invalid(why) => {
                let type_ = if self.latest_success().is_some() { AttemptType::Repair } else { AttemptType::Reissue };
                let need = (type_, format!("Secret {secret_name} is not usable: {why}"));
                return Assessment { usable: false, need: Some(need), renewal: None, expired: false };
            }
            SecretState::NotAdoptable { reason } => {
                let why =
                    format!("Secret {secret_name} was issued by cert-manager, but certpilot cannot adopt it: {reason}");
                return Assessment {
                    usable: false,
                    need: Some((AttemptType::Issue, why)),
                    renewal: None,
                    expired: false,
                };
            }
            // Adopted for its names and validity only: the issuer, key and output formats the
            // spec asks for come with the renewal, not with a reissue now.
            SecretState::Adopted(stored) => stored,
            SecretState::Present(stored) => {
                if let Some(mismatch) = self.mismatch(stored) {
                    return Assessment {
                        usable: false,
                        need: Some((AttemptType::Reissue, mismatch)),
                        renewal: None,
                        expired: false,
                    };
                }
                stored
            }
        };
        let renewal = renewal_time(
            stored.info.not_before,
            stored.info.not_after,
            self.desired.renewal,
            self.ari_window,
            &self.jitter_key,
        );
        let expired = self.now >= stored.info.not_after;
        let need = if let Some(why) = self.revoked_not_replaced() {
            Some((AttemptType::Reissue, why))
        } else if expired {
            Some((AttemptType::Renew, format!("the certificate expired at {}", stored.info.not_after)))
        } else if self.manual_request_pending() {
            Some((AttemptType::Manual, "a renewal was requested with the certpilot.dev/renew annotation".to_string()))
        } else if self.now >= renewal.at {
            Some((AttemptType::Renew, format!("renewal time {} reached", renewal.at)))
        } else {
            None
        };
        Assessment { usable: !expired, need, renewal: Some(renewal), expired }
    }

    /// Why the stored certificate no longer fits the spec, if it does not.
    fn mismatch(&self, stored: &StoredCertificate) -> Option<String> {
        if let Err(e) = check_names(&stored.info, &self.desired.names) {
            return Some(format!("the spec changed: {e}"));
        }
        match &stored.issuer {
            Some(issuer) if !self.lists_issuer(issuer) => {
                return Some(format!("the issuer changed from {issuer} to {}", self.desired.issuer));
            }
            None => {
                return Some(format!("the Secret does not record its issuer; reissuing from {}", self.desired.issuer));
            }
            _ => {}
        }
        if stored.info.is_ca != self.desired.is_ca {
            return Some(format!("isCA changed to {}", self.desired.is_ca));
        }
        if let Some(missing) = self.desired.outputs.iter().find(|format| !stored.outputs.contains(format)) {
            return Some(format!(
                "additionalOutputFormats asks for {missing:?}, but the Secret has no {}",
                missing.data_key()
            ));
        }
        (stored.key != self.desired.key)
            .then(|| format!("the private key changed from {} to {}", stored.key, self.desired.key))
    }

    /// Whether an attempt under way still asks for what the spec wants.
    fn still_wanted(&self, attempt: &AttemptView) -> bool {
        attempt.matches_spec
    }

    /// When the minimum renewal interval lets the next attempt start, if that is still ahead.
    /// It counts from the latest success; what the user asked for since (a spec change, a new
    /// renewal request) is not held back. The floor stops loops, not a first repair: a Secret
    /// deleted or damaged is repaired at once, unless a repair already succeeded within the
    /// interval (then the next one waits for the interval to pass since that repair).
    fn held_until(&self, type_: AttemptType) -> Option<Timestamp> {
        if type_ == AttemptType::Repair {
            return self.repair_held_until();
        }
        let last = self.latest_success()?;
        let user_acted = last.generation < self.desired.generation
            || (type_ == AttemptType::Manual && last.renew_request != self.desired.renew_request)
            || self.revoked_not_replaced().is_some();
        if user_acted {
            return None;
        }
        let until = last.finished_at? + self.min_renewal_interval;
        (self.now < until).then_some(until)
    }

    /// A repair waits only for the interval since the latest repair at this generation.
    fn repair_held_until(&self) -> Option<Timestamp> {
        let generation = self.desired.generation;
        let repaired = |a: &&AttemptView| {
            a.type_ == AttemptType::Repair && a.phase == AttemptPhase::Succeeded && a.generation == generation
        };
        let until = self.attempts.iter().rev().find(repaired)?.finished_at? + self.min_renewal_interval;
        (self.now < until).then_some(until)
    }

    pub fn decide(&self) -> Decision {
        if let Some(current) = self.in_progress() {
            if self.still_wanted(current) {
                return Decision::InProgress;
            }
            let reason = format!("superseded: the Certificate changed (generation {})", self.desired.generation);
            return Decision::Supersede { attempt: current.name.clone(), reason };
        }
        // What the user asked for at once, whatever else is due: the CA is asked even when the
        // issuer is not ready or the last attempt failed (the attempt says what stands in the way).
        if let Some(reason) = self.revocation_pending() {
            return Decision::Start { type_: AttemptType::Revoke, reason };
        }
        let Some((type_, reason)) = self.assess().need else { return Decision::UpToDate };
        if let Some(blocked) = self.blocker() {
            return blocked;
        }
        if let Some(until) = self.backing_off_until(type_) {
            return Decision::BackingOff { until };
        }
        if let Some(until) = self.held_until(type_) {
            let floor = self.min_renewal_interval;
            let message = match type_ {
                AttemptType::Repair => format!(
                    "{reason}, but certpilot repaired it less than {floor:#} ago: a Secret is repaired at once the first time, then at most once per {floor:#} (--min-renewal-interval), so the next attempt is at {until}; find what deletes or changes it"
                ),
                _ => format!(
                    "{reason}, but the last certificate was issued less than {floor:#} ago: certpilot renews a Certificate at most once per {floor:#} (--min-renewal-interval), so the next attempt is at {until}"
                ),
            };
            return Decision::Held { until, message };
        }
        Decision::Start { type_, reason }
    }

    fn blocker(&self) -> Option<Decision> {
        // Whatever else is wrong, nothing is issued while cert-manager's Secret is in the way:
        // this is what a user migrating needs to act on.
        if let SecretState::NotAdoptable { reason } = &self.secret {
            return Some(not_adoptable(&self.desired.secret_name, reason));
        }
        match &self.next_issuer().state {
            IssuerState::NotFound(message) => {
                return Some(Decision::Blocked { reason: "IssuerNotFound", message: message.clone() });
            }
            IssuerState::NotReady(message) | IssuerState::Unchecked(message) => {
                return Some(Decision::Blocked { reason: "IssuerNotReady", message: message.clone() });
            }
            IssuerState::CannotIssue(message) => {
                return Some(Decision::Blocked { reason: "NamesNotPermitted", message: message.clone() });
            }
            IssuerState::Ready => {}
        }
        if let Some(problem) = &self.keystore_password {
            // Issuing would end in a Secret without its keystore: wait for the user instead.
            let reason = FailureCode::KeystorePasswordMissing.as_str();
            return Some(Decision::Blocked { reason, message: problem.to_string() });
        }
        let SecretState::NotOwned { holder } = &self.secret else { return None };
        let name = &self.desired.secret_name;
        let message = match holder {
            Some(holder) => format!(
                "Secret {name} belongs to Certificate {holder} (certpilot writes it for that Certificate), so it is left untouched. Give this Certificate another spec.secretName, or delete Certificate {holder} and the Secret"
            ),
            None => format!(
                "Secret {name} already exists and was not created by certpilot, so it is left untouched. Delete it, or annotate it with {annotation}=true to let certpilot replace its contents",
                annotation = crate::api::ADOPT_ANNOTATION,
            ),
        };
        Some(Decision::Blocked { reason: "SecretNotOwned", message })
    }

    /// The stored certificate, certpilot's own or adopted.
    pub fn stored(&self) -> Option<&StoredCertificate> {
        match &self.secret {
            SecretState::Present(stored) | SecretState::Adopted(stored) => Some(stored),
            _ => None,
        }
    }

    /// After a failure, the next attempt waits for the backoff, or exactly for the CA's
    /// Retry-After. A changed spec or a new renewal request skips the backoff, never Retry-After.
    fn backing_off_until(&self, type_: AttemptType) -> Option<Timestamp> {
        let latest = self.attempts.iter().rev().find(|a| a.type_ != AttemptType::Revoke);
        let failed = latest.filter(|a| a.phase == AttemptPhase::Failed)?;
        if self.next_issuer().switched {
            // The next issuer has not failed yet: neither the backoff nor the last CA's
            // Retry-After applies to it.
            return None;
        }
        let failed_at = failed.finished_at.unwrap_or(self.now);
        let until =
            self.backoff.next_attempt(self.consecutive_failures(), failed_at, failed.retry_after, &self.jitter_key);
        if self.now >= until {
            return None;
        }
        let user_acted = failed.generation < self.desired.generation
            || (type_ == AttemptType::Manual && failed.renew_request != self.desired.renew_request);
        let retry_after_passed = failed.retry_after.is_none_or(|at| self.now >= at);
        if user_acted && retry_after_passed { None } else { Some(until) }
    }
}

/// A cert-manager Secret certpilot cannot adopt: nothing is written; the user decides.
fn not_adoptable(name: &str, reason: &NotAdoptable) -> Decision {
    let message = format!(
        "Secret {name} was issued by cert-manager, but certpilot cannot adopt it: {reason}. It is left untouched: delete it so certpilot issues a new certificate, or annotate it with {annotation}=true to let certpilot replace its contents",
        annotation = crate::api::ADOPT_ANNOTATION,
    );
    Decision::Blocked { reason: "SecretNotAdoptable", message }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::IssuerKind;
    use jiff::SignedDuration;

    pub fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    pub fn names() -> NameRequest {
        NameRequest { dns_names: vec!["app.example.com".into()], ..Default::default() }
    }

    pub fn issuer() -> IssuerRef {
        IssuerRef { kind: IssuerKind::ClusterIssuer, name: "local".into() }
    }

    pub fn stored(not_before: Timestamp, days: i64) -> StoredCertificate {
        StoredCertificate {
            info: CertInfo {
                serial_hex: "01".into(),
                fingerprint_sha256: "AA".into(),
                not_before,
                not_after: not_before + SignedDuration::from_hours(24 * days),
                subject: "CN=app.example.com".into(),
                issuer: "CN=app.example.com".into(),
                common_name: Some("app.example.com".into()),
                dns_names: vec!["app.example.com".into()],
                ip_addresses: vec![],
                public_key_info: vec![],
                is_ca: false,
            },
            issuer: Some(issuer()),
            key: "ECDSA-256".into(),
            ari_id: None,
            outputs: Vec::new(),
        }
    }

    pub fn observed(secret: SecretState, attempts: Vec<AttemptView>) -> Observed {
        Observed {
            now: now(),
            desired: Desired {
                secret_name: "app-tls".into(),
                names: names(),
                issuer: issuer(),
                key: "ECDSA-256".into(),
                renewal: RenewalSettings::default(),
                is_ca: false,
                generation: 1,
                renew_request: None,
                revoke_request: None,
                outputs: Vec::new(),
            },
            issuer: IssuerState::Ready,
            fallbacks: Vec::new(),
            secret,
            attempts,
            jitter_key: "ns/app".into(),
            ari_window: None,
            backoff: BackoffPolicy::default(),
            min_renewal_interval: SignedDuration::from_mins(5),
            keystore_password: None,
        }
    }

    pub fn attempt(index: u32, phase: AttemptPhase) -> AttemptView {
        AttemptView {
            name: format!("app-{index}"),
            index,
            type_: AttemptType::Issue,
            phase,
            generation: 1,
            names: names(),
            issuer: issuer(),
            key: "ECDSA-256".into(),
            finished_at: phase.is_terminal().then(|| now() - SignedDuration::from_hours(1)),
            matches_spec: true,
            ..Default::default()
        }
    }

    fn fresh() -> SecretState {
        SecretState::Present(Box::new(stored(now() - SignedDuration::from_hours(24), 90)))
    }

    fn start_type(d: Decision) -> AttemptType {
        match d {
            Decision::Start { type_, .. } => type_,
            other => panic!("expected a new attempt, got {other:?}"),
        }
    }

    #[test]
    fn missing_secret_issues() {
        assert_eq!(start_type(observed(SecretState::Missing, vec![]).decide()), AttemptType::Issue);
    }

    #[test]
    fn a_fresh_matching_certificate_needs_nothing() {
        let o = observed(fresh(), vec![attempt(1, AttemptPhase::Succeeded)]);
        assert_eq!(o.decide(), Decision::UpToDate);
        let a = o.assess();
        assert!(a.usable && a.renewal.is_some());
    }

    #[test]
    fn renewal_time_reached_renews() {
        let o =
            observed(SecretState::Present(Box::new(stored(now() - SignedDuration::from_hours(24 * 70), 90))), vec![]);
        assert_eq!(start_type(o.decide()), AttemptType::Renew);
    }

    #[test]
    fn expired_certificates_renew_and_are_not_usable() {
        let o =
            observed(SecretState::Present(Box::new(stored(now() - SignedDuration::from_hours(24 * 100), 90))), vec![]);
        let a = o.assess();
        assert!(a.expired && !a.usable);
        assert_eq!(start_type(o.decide()), AttemptType::Renew);
    }

    #[test]
    fn changed_names_issuer_or_key_reissue() {
        let mut o = observed(fresh(), vec![]);
        o.desired.names.dns_names.push("www.example.com".into());
        assert_eq!(start_type(o.decide()), AttemptType::Reissue);
        let mut o = observed(fresh(), vec![]);
        o.desired.issuer.name = "other".into();
        assert_eq!(start_type(o.decide()), AttemptType::Reissue);
        let mut o = observed(fresh(), vec![]);
        o.desired.key = "RSA-2048".into();
        assert_eq!(start_type(o.decide()), AttemptType::Reissue);
        let o = observed(SecretState::Invalid("no tls.crt".into()), vec![]);
        assert_eq!(start_type(o.decide()), AttemptType::Reissue);
    }

    /// An output format added later appears by a reissue; one the Secret holds (its bytes are
    /// never compared: keystores are encrypted anew on every write) needs nothing.
    #[test]
    fn an_output_format_the_secret_lacks_reissues() {
        let mut o = observed(fresh(), vec![attempt(1, AttemptPhase::Succeeded)]);
        o.desired.outputs = vec![OutputFormatType::PKCS12];
        let Decision::Start { type_, reason } = o.decide() else { panic!("a missing keystore must be written") };
        assert_eq!(type_, AttemptType::Reissue);
        assert!(reason.contains("keystore.p12"), "{reason}");
        let SecretState::Present(stored) = &mut o.secret else { unreachable!() };
        stored.outputs = vec![OutputFormatType::DER, OutputFormatType::PKCS12];
        assert_eq!(o.decide(), Decision::UpToDate, "extra keys do no harm; present ones are not rewritten");
    }

    #[test]
    fn manual_requests_renew_once() {
        let mut o = observed(fresh(), vec![attempt(1, AttemptPhase::Succeeded)]);
        o.desired.renew_request = Some("2026-06-01".into());
        assert_eq!(start_type(o.decide()), AttemptType::Manual);
        let mut answered = attempt(2, AttemptPhase::Succeeded);
        answered.renew_request = Some("2026-06-01".into());
        o.attempts.push(answered);
        assert_eq!(o.decide(), Decision::UpToDate);
    }

    /// A certificate whose spec asks for renewal at once after issuance (1m lifetime, 99%).
    fn hot(issued_ago: SignedDuration) -> Observed {
        let mut stored = stored(now() - issued_ago, 1);
        stored.info.not_after = stored.info.not_before + SignedDuration::from_mins(1);
        let mut last = attempt(1, AttemptPhase::Succeeded);
        last.finished_at = Some(now() - issued_ago);
        let mut o = observed(SecretState::Present(Box::new(stored)), vec![last]);
        o.desired.renewal.renew_before_percentage = Some(99);
        o
    }

    #[test]
    fn renewals_wait_for_the_minimum_interval() {
        let held = hot(SignedDuration::from_secs(30)).decide();
        let Decision::Held { until, message } = held else { panic!("expected the floor to hold, got {held:?}") };
        assert_eq!(until, now() - SignedDuration::from_secs(30) + SignedDuration::from_mins(5));
        assert!(message.contains("--min-renewal-interval") && message.contains("5m"), "{message}");
        // Even when the certificate has expired meanwhile.
        assert!(matches!(hot(SignedDuration::from_mins(2)).decide(), Decision::Held { .. }));
        // Once the interval has passed, the renewal starts.
        assert_eq!(start_type(hot(SignedDuration::from_mins(6)).decide()), AttemptType::Renew);
    }

    /// Certificate `app` issued `issued_ago`, its Secret now in `secret`, with `repairs`
    /// (how long ago each repair finished) since.
    fn repaired(secret: SecretState, issued_ago: SignedDuration, repairs: &[SignedDuration]) -> Observed {
        let mut first = attempt(1, AttemptPhase::Succeeded);
        first.finished_at = Some(now() - issued_ago);
        let mut attempts = vec![first];
        for (i, ago) in repairs.iter().enumerate() {
            let mut repair = attempt(i as u32 + 2, AttemptPhase::Succeeded);
            repair.type_ = AttemptType::Repair;
            repair.finished_at = Some(now() - *ago);
            attempts.push(repair);
        }
        observed(secret, attempts)
    }

    #[test]
    fn a_first_repair_is_not_held_back_but_a_second_one_is() {
        let seconds = SignedDuration::from_secs;
        let deleted = || SecretState::Missing;
        // Deleted 5 s after it was issued: repaired at once.
        let first = repaired(deleted(), seconds(5), &[]).decide();
        assert!(
            matches!(&first, Decision::Start { type_: AttemptType::Repair, reason } if reason.contains("was deleted")),
            "{first:?}"
        );
        // Emptied or unreadable: the same.
        let damaged = SecretState::Invalid("no tls.crt".into());
        assert_eq!(start_type(repaired(damaged.clone(), seconds(5), &[]).decide()), AttemptType::Repair);
        // Deleted again right after the repair: held until the floor since that repair, and said so.
        let again = repaired(deleted(), seconds(20), &[seconds(3)]).decide();
        let Decision::Held { until, message } = again else { panic!("a second repair waits: {again:?}") };
        assert_eq!(until, now() - seconds(3) + SignedDuration::from_mins(5));
        assert!(message.contains("repaired it less than 5m ago") && message.contains(&until.to_string()), "{message}");
        assert!(matches!(repaired(damaged, seconds(20), &[seconds(3)]).decide(), Decision::Held { .. }));
        // A repair longer ago than the floor holds nothing back.
        assert_eq!(start_type(repaired(deleted(), seconds(900), &[seconds(400)]).decide()), AttemptType::Repair);
        // Nor does a repair of an earlier generation: the user changed the spec since.
        let mut changed = repaired(deleted(), seconds(20), &[seconds(3)]);
        changed.desired.generation = 2;
        assert_eq!(start_type(changed.decide()), AttemptType::Repair);
        // Before any success it is a first issuance, never held.
        assert_eq!(start_type(observed(deleted(), vec![]).decide()), AttemptType::Issue);
        let failed = attempt(1, AttemptPhase::Failed);
        let mut o = observed(SecretState::Invalid("empty".into()), vec![failed]);
        o.now = now() + SignedDuration::from_hours(7);
        assert_eq!(start_type(o.decide()), AttemptType::Reissue);
    }

    #[test]
    fn what_the_user_asks_for_is_not_held_back() {
        let mut changed = hot(SignedDuration::from_secs(30));
        changed.desired.generation = 2;
        assert!(matches!(changed.decide(), Decision::Start { .. }));
        let mut requested = hot(SignedDuration::from_secs(30));
        requested.desired.renew_request = Some("now".into());
        assert_eq!(start_type(requested.decide()), AttemptType::Manual);
    }

    #[test]
    fn attempts_under_way_are_waited_for_or_superseded() {
        let o = observed(SecretState::Missing, vec![attempt(1, AttemptPhase::Validating)]);
        assert_eq!(o.decide(), Decision::InProgress);
        let mut superseded = attempt(1, AttemptPhase::Validating);
        superseded.matches_spec = false;
        let mut o = observed(SecretState::Missing, vec![superseded]);
        o.desired.generation = 2;
        assert!(matches!(o.decide(), Decision::Supersede { attempt, .. } if attempt == "app-1"));
        // A generation bump that leaves what the attempt asks for alone does not cancel anything.
        let mut o = observed(SecretState::Missing, vec![attempt(1, AttemptPhase::Validating)]);
        o.desired.generation = 2;
        assert_eq!(o.decide(), Decision::InProgress);
    }

    #[test]
    fn blockers_are_reported_only_when_an_attempt_is_needed() {
        let mut o = observed(SecretState::Missing, vec![]);
        o.issuer = IssuerState::NotReady("CA secret missing".into());
        assert!(matches!(o.decide(), Decision::Blocked { reason: "IssuerNotReady", .. }));
        let mut o = observed(fresh(), vec![]);
        o.issuer = IssuerState::NotFound("no issuer".into());
        assert_eq!(o.decide(), Decision::UpToDate);
        let o = observed(SecretState::NotOwned { holder: None }, vec![]);
        match o.decide() {
            Decision::Blocked { reason, message } => {
                assert_eq!(reason, "SecretNotOwned");
                assert!(message.contains("certpilot.dev/adopt"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// What cert-manager left: no issuer recorded, its own key algorithm, no keystores.
    fn adopted(issued_ago_days: i64) -> SecretState {
        let mut stored = stored(now() - SignedDuration::from_hours(24 * issued_ago_days), 90);
        stored.issuer = None;
        stored.key = "RSA-2048".into();
        SecretState::Adopted(Box::new(stored))
    }

    #[test]
    fn an_adopted_certificate_is_kept_until_its_renewal_time() {
        let mut o = observed(adopted(1), vec![]);
        o.desired.outputs = vec![OutputFormatType::PKCS12];
        assert_eq!(o.decide(), Decision::UpToDate, "the issuer, key and outputs wait for the renewal");
        let a = o.assess();
        assert!(a.usable && !a.expired);
        // Two thirds into its 90 days, give or take the jitter, as for certpilot's own.
        let two_thirds = o.stored().unwrap().info.not_before + SignedDuration::from_hours(24 * 60);
        assert!(a.renewal.unwrap().at.duration_since(two_thirds).abs() < SignedDuration::from_hours(24));
        let o = observed(adopted(70), vec![]);
        let Decision::Start { type_, reason } = o.decide() else { panic!("due for renewal") };
        assert_eq!(type_, AttemptType::Renew);
        assert!(reason.contains("renewal time"), "{reason}");
        let mut o = observed(adopted(1), vec![]);
        o.desired.renew_request = Some("now".into());
        assert_eq!(start_type(o.decide()), AttemptType::Manual);
    }

    #[test]
    fn a_secret_that_cannot_be_adopted_blocks_and_says_why() {
        let reason = NotAdoptable::Expired(now() - SignedDuration::from_hours(24));
        let mut o = observed(SecretState::NotAdoptable { reason }, vec![]);
        assert!(!o.assess().usable && o.stored().is_none());
        // Before anything else that is wrong: the Secret is what stands in the way.
        o.issuer = IssuerState::NotReady("registering".into());
        let Decision::Blocked { reason, message } = o.decide() else { panic!("must block") };
        assert_eq!(reason, "SecretNotAdoptable");
        for part in [
            "Secret app-tls",
            "cert-manager",
            "expired on 2026-05-31T00:00:00Z",
            "delete it",
            "certpilot.dev/adopt=true",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }

    #[test]
    fn a_missing_keystore_password_blocks_instead_of_failing_attempts() {
        let problem = PasswordProblem::SecretMissing {
            format: OutputFormatType::PKCS12,
            secret: "store-pass".into(),
            key: "password".into(),
        };
        let mut o = observed(SecretState::Missing, vec![]);
        o.keystore_password = Some(problem.clone());
        let Decision::Blocked { reason, message } = o.decide() else { panic!("must block") };
        assert_eq!(reason, "KeystorePasswordMissing");
        assert!(message.contains("Secret store-pass") && message.contains("password"), "{message}");
        let mut failed = attempt(1, AttemptPhase::Failed);
        failed.finished_at = Some(now() - SignedDuration::from_secs(1));
        o.attempts.push(failed);
        assert!(matches!(o.decide(), Decision::Blocked { .. }), "blocked, not backing off into another attempt");
    }

    #[test]
    fn failures_back_off_exponentially() {
        let failed = |i| {
            let mut a = attempt(i, AttemptPhase::Failed);
            a.finished_at = Some(now() - SignedDuration::from_secs(30));
            a
        };
        let o = observed(SecretState::Missing, vec![failed(1)]);
        assert!(matches!(o.decide(), Decision::BackingOff { until } if until > now()));
        assert_eq!(o.consecutive_failures(), 1);
        let o =
            observed(SecretState::Missing, vec![attempt(1, AttemptPhase::Succeeded), failed(2), failed(3), failed(4)]);
        assert_eq!(o.consecutive_failures(), 3);
        let mut long_ago = failed(1);
        long_ago.finished_at = Some(now() - SignedDuration::from_hours(1));
        assert_eq!(start_type(observed(SecretState::Missing, vec![long_ago]).decide()), AttemptType::Issue);
    }

    #[test]
    fn retry_after_holds_even_when_the_user_acts() {
        let mut f = attempt(1, AttemptPhase::Failed);
        f.retry_after = Some(now() + SignedDuration::from_hours(2));
        let mut o = observed(SecretState::Missing, vec![f.clone()]);
        o.desired.generation = 2;
        assert_eq!(o.decide(), Decision::BackingOff { until: now() + SignedDuration::from_hours(2) });
        // Without Retry-After, a spec change retries at once.
        f.retry_after = None;
        let mut o = observed(SecretState::Missing, vec![f]);
        o.desired.generation = 2;
        assert!(matches!(o.decide(), Decision::Start { .. }));
    }

    fn fallback() -> IssuerRef {
        IssuerRef { kind: IssuerKind::Issuer, name: "backup".into() }
    }

    fn failed_just_now(code: FailureCode) -> AttemptView {
        let mut a = attempt(1, AttemptPhase::Failed);
        a.finished_at = Some(now() - SignedDuration::from_secs(5));
        a.error_code = Some(code.as_str().into());
        a.retry_after = Some(now() + SignedDuration::from_hours(2));
        a
    }

    #[test]
    fn a_failure_on_the_cas_side_goes_to_the_fallback_without_backoff_or_retry_after() {
        let mut o = observed(SecretState::Missing, vec![failed_just_now(FailureCode::RateLimited)]);
        assert!(matches!(o.decide(), Decision::BackingOff { .. }), "no fallback: the backoff applies");
        o.fallbacks = vec![(fallback(), IssuerState::Ready)];
        assert_eq!(start_type(o.decide()), AttemptType::Issue);
        assert_eq!(o.next_issuer().issuer, fallback());
        let o = observed(SecretState::Missing, vec![failed_just_now(FailureCode::Dns)]);
        let mut user = o.clone();
        user.fallbacks = vec![(fallback(), IssuerState::Ready)];
        assert!(matches!(user.decide(), Decision::BackingOff { .. }), "a failure on the user's side waits");
        assert_eq!(user.next_issuer().issuer, issuer());
    }

    #[test]
    fn a_certificate_from_a_fallback_is_kept_until_its_renewal() {
        let mut from_fallback = stored(now() - SignedDuration::from_hours(24), 90);
        from_fallback.issuer = Some(fallback());
        let mut o = observed(SecretState::Present(Box::new(from_fallback)), vec![attempt(1, AttemptPhase::Succeeded)]);
        assert!(matches!(o.decide(), Decision::Start { type_: AttemptType::Reissue, .. }), "not listed: reissued");
        o.fallbacks = vec![(fallback(), IssuerState::Ready)];
        assert_eq!(o.decide(), Decision::UpToDate);
    }

    #[test]
    fn an_issuer_ref_that_is_not_ready_hands_over_to_a_ready_fallback() {
        let mut o = observed(SecretState::Missing, vec![]);
        o.issuer = IssuerState::NotReady("the CA Secret is missing".into());
        o.fallbacks = vec![(fallback(), IssuerState::Ready)];
        assert_eq!(start_type(o.decide()), AttemptType::Issue);
        o.fallbacks[0].1 = IssuerState::NotReady("its CA Secret is missing too".into());
        let blocked = o.decide();
        assert!(matches!(&blocked, Decision::Blocked { reason: "IssuerNotReady", message } if message.contains("too")));
        o.issuer = IssuerState::Unchecked("not checked yet".into());
        o.fallbacks[0].1 = IssuerState::Ready;
        let waits = o.decide();
        assert!(
            matches!(&waits, Decision::Blocked { reason: "IssuerNotReady", message } if message.contains("not checked"))
        );
    }

    fn revoke(index: u32, phase: AttemptPhase, request: &str) -> AttemptView {
        let mut a = attempt(index, phase);
        a.type_ = AttemptType::Revoke;
        a.revoke_request = Some(request.into());
        a
    }

    const REVOKE: &str = "keyCompromise@2026-06-01T00:00:00Z";

    #[test]
    fn a_revocation_request_makes_one_revoke_attempt_then_a_reissue() {
        let mut o = observed(fresh(), vec![attempt(1, AttemptPhase::Succeeded)]);
        o.desired.revoke_request = Some(REVOKE.into());
        let Decision::Start { type_, reason } = o.decide() else { panic!("revocation must start") };
        assert_eq!(type_, AttemptType::Revoke);
        assert!(reason.contains("keyCompromise"), "{reason}");
        o.attempts.push(revoke(2, AttemptPhase::Revoking, REVOKE));
        assert_eq!(o.decide(), Decision::InProgress);
        o.attempts[1] = revoke(2, AttemptPhase::Succeeded, REVOKE);
        let Decision::Start { type_, reason } = o.decide() else { panic!("a reissue must follow") };
        assert_eq!(type_, AttemptType::Reissue);
        assert!(reason.contains("revoked (keyCompromise)") && reason.contains("new key"), "{reason}");
        assert!(!o.assess().usable || o.assess().need.is_some());
        let mut reissued = attempt(3, AttemptPhase::Succeeded);
        reissued.type_ = AttemptType::Reissue;
        reissued.revoke_request = Some(REVOKE.into());
        o.attempts.push(reissued);
        assert_eq!(o.decide(), Decision::UpToDate, "the same value twice is one request");
        // Once the Revoke attempt is pruned, the reissue still answers the request.
        o.attempts.remove(1);
        assert_eq!(o.decide(), Decision::UpToDate);
        // A new value is a new request.
        o.desired.revoke_request = Some("superseded@2026-06-02T00:00:00Z".into());
        assert_eq!(start_type(o.decide()), AttemptType::Revoke);
    }

    #[test]
    fn a_revocation_is_not_held_back_by_the_floor_or_a_backoff() {
        let mut o = hot(SignedDuration::from_secs(30));
        o.desired.revoke_request = Some(REVOKE.into());
        assert_eq!(start_type(o.decide()), AttemptType::Revoke);
        o.attempts.push(revoke(2, AttemptPhase::Succeeded, REVOKE));
        assert_eq!(start_type(o.decide()), AttemptType::Reissue, "the reissue is not held by the floor");
        let mut failed = attempt(1, AttemptPhase::Failed);
        failed.finished_at = Some(now() - SignedDuration::from_secs(5));
        let mut o = observed(fresh(), vec![failed]);
        o.desired.revoke_request = Some(REVOKE.into());
        assert_eq!(start_type(o.decide()), AttemptType::Revoke);
    }

    #[test]
    fn no_reissue_or_a_failed_revocation_leaves_the_certificate() {
        let no_reissue = "cessationOfOperation,no-reissue@2026-06-01T00:00:00Z";
        let mut o = observed(
            fresh(),
            vec![attempt(1, AttemptPhase::Succeeded), revoke(2, AttemptPhase::Succeeded, no_reissue)],
        );
        o.desired.revoke_request = Some(no_reissue.into());
        assert_eq!(o.decide(), Decision::UpToDate);
        let mut o =
            observed(fresh(), vec![attempt(1, AttemptPhase::Succeeded), revoke(2, AttemptPhase::Failed, REVOKE)]);
        o.desired.revoke_request = Some(REVOKE.into());
        assert_eq!(o.decide(), Decision::UpToDate, "a failed revocation is answered, not retried");
        // A self-signed certificate cannot be revoked, but is still replaced when asked.
        let mut self_signed = o.clone();
        self_signed.attempts[1].error_code = Some(FailureCode::RevocationNotPossible.as_str().into());
        assert_eq!(start_type(self_signed.decide()), AttemptType::Reissue);
        assert_eq!(o.consecutive_failures(), 0, "and it does not count as a failed issuance");
        // A value that cannot be read asks for nothing.
        o.desired.revoke_request = Some("leaked".into());
        assert_eq!(o.decide(), Decision::UpToDate);
    }

    #[test]
    fn a_revocation_goes_to_the_issuer_that_issued_the_certificate() {
        let mut from_fallback = stored(now() - SignedDuration::from_hours(24), 90);
        from_fallback.issuer = Some(fallback());
        let mut o = observed(SecretState::Present(Box::new(from_fallback)), vec![attempt(1, AttemptPhase::Succeeded)]);
        o.fallbacks = vec![(fallback(), IssuerState::Ready)];
        assert_eq!(o.revocation_issuer(), fallback());
        o.fallbacks.clear();
        assert_eq!(o.revocation_issuer(), issuer(), "an issuer no longer listed is not asked");
    }
}
