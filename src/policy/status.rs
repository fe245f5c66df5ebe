//! The Certificate's status, summarised from what was observed and decided: one object that
//! tells the user what is happening and what to do.

use super::trigger::{Decision, Observed, SecretState};
use crate::api::{
    attempt::AttemptPhase,
    certificate::{AttemptHistoryEntry, AttemptSummary, CertificatePhase, CertificateStatus, IssuedBy},
    conditions::Condition,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const READY: &str = "Ready";
pub const ISSUING: &str = "Issuing";

/// The status for `observed` after `decision` (conditions without transition times: the
/// controller stamps those against the previous status), its history merged into
/// `previous_history`.
pub fn summarise(o: &Observed, decision: &Decision, previous_history: &[AttemptHistoryEntry]) -> CertificateStatus {
    let assessment = o.assess();
    let stored = o.stored();
    let latest = o.latest();
    let failed = latest.filter(|a| a.phase == AttemptPhase::Failed);
    let next_attempt = match decision {
        Decision::BackingOff { until } | Decision::Held { until, .. } => Some(*until),
        _ => None,
    };
    let mut status = CertificateStatus {
        phase: phase(o, assessment.usable, assessment.expired),
        not_before: stored.map(|s| Time(s.info.not_before)),
        not_after: stored.map(|s| Time(s.info.not_after)),
        renewal_time: assessment.renewal.as_ref().map(|r| Time(r.at)),
        renewal_source: assessment.renewal.as_ref().map(|r| r.source),
        serial_number: stored.map(|s| s.info.serial_hex.clone()),
        fingerprint_sha256: stored.map(|s| s.info.fingerprint_sha256.clone()),
        issuer: stored.map(|s| s.info.issuer.clone()),
        last_attempt: latest.map(|a| AttemptSummary { name: a.name.clone(), type_: a.type_, phase: a.phase }),
        attempts_count: o.consecutive_failures() as i32,
        next_attempt_time: next_attempt.map(Time),
        retry_after: failed.and_then(|a| a.retry_after).map(Time),
        validation_records: Vec::new(),
        validation_errors: Vec::new(),
        observed_generation: Some(o.desired.generation),
        conditions: Vec::new(),
        renewal_info: None,
        attempt_index: None,
        renewal_held: match decision {
            Decision::Held { message, .. } => Some(message.clone()),
            _ => None,
        },
        history: super::history::merge(previous_history, &o.attempts),
        issued_by: issued_by(o),
    };
    if let Some(a) = latest.filter(|a| a.phase != AttemptPhase::Succeeded) {
        status.validation_records = a.challenges.clone();
        status.validation_errors =
            a.challenges.iter().filter_map(|c| c.error.as_ref().map(|e| format!("{}: {e}", c.dns_name))).collect();
    }
    status.conditions = vec![ready_condition(o, decision, &assessment), issuing_condition(o, decision)];
    for condition in &mut status.conditions {
        condition.observed_generation = Some(o.desired.generation);
    }
    status
}

/// The issuer of the stored certificate, and why a fallback issued it: in the words of the
/// attempt that did (or, when that attempt was pruned, saying only that it was a fallback).
fn issued_by(o: &Observed) -> Option<IssuedBy> {
    let issuer = o.stored()?.issuer.as_ref()?;
    let fallback_reason = (issuer != &o.desired.issuer).then(|| {
        let issuing = o.attempts.iter().rev().find(|a| a.phase == AttemptPhase::Succeeded && &a.issuer == issuer);
        issuing.and_then(|a| a.fallback_reason.clone()).unwrap_or_else(|| {
            format!("issued by fallback issuer {issuer}; the attempt that says why is no longer kept")
        })
    });
    Some(IssuedBy { kind: issuer.kind, name: issuer.name.clone(), fallback_reason })
}

fn phase(o: &Observed, usable: bool, expired: bool) -> CertificatePhase {
    if let Some(current) = o.in_progress() {
        return if usable {
            CertificatePhase::Renewing
        } else if current.phase == AttemptPhase::Validating {
            CertificatePhase::PendingValidation
        } else {
            CertificatePhase::Issuing
        };
    }
    if usable {
        CertificatePhase::Ready
    } else if expired {
        CertificatePhase::Expired
    } else if o.latest().is_some_and(|a| a.phase == AttemptPhase::Failed) {
        CertificatePhase::Failed
    } else {
        CertificatePhase::Pending
    }
}

fn at(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn ready_condition(o: &Observed, decision: &Decision, assessment: &super::trigger::Assessment) -> Condition {
    if assessment.usable {
        return usable_condition(o, decision, assessment);
    }
    let need = assessment.need.as_ref().map(|(_, why)| why.clone()).unwrap_or_default();
    match decision {
        Decision::Blocked { reason, message } => Condition::new(READY, false, reason, message.clone()),
        Decision::InProgress | Decision::Start { .. } | Decision::Supersede { .. } => {
            let attempt =
                o.in_progress().map(|a| format!(" (attempt {} is {:?})", a.name, a.phase)).unwrap_or_default();
            let reason = if assessment.expired { "Expired" } else { "Issuing" };
            Condition::new(READY, false, reason, format!("{need}; a new certificate is being issued{attempt}"))
        }
        Decision::BackingOff { until } => {
            let failure = o.latest().map(failure_text).unwrap_or_default();
            let reason = if assessment.expired { "Expired" } else { "AttemptFailed" };
            Condition::new(READY, false, reason, format!("{need}; {failure}; the next attempt is at {}", at(*until)))
        }
        Decision::Held { message, .. } => {
            let reason = if assessment.expired { "Expired" } else { "RenewalHeld" };
            Condition::new(READY, false, reason, message.clone())
        }
        Decision::UpToDate => Condition::new(READY, false, "NotReady", need),
    }
}

/// Ready=True: until when the stored certificate is valid, and when it renews.
fn usable_condition(o: &Observed, decision: &Decision, assessment: &super::trigger::Assessment) -> Condition {
    let adopted = matches!(o.secret, SecretState::Adopted(_));
    let stored = o.stored().expect("usable implies a stored certificate");
    let name = &o.desired.secret_name;
    let valid_until = at(stored.info.not_after);
    let mut message = if adopted {
        format!(
            "the certificate in Secret {name} was issued by cert-manager and is valid until {valid_until}; certpilot adopted it"
        )
    } else {
        format!("the certificate in Secret {name} is valid until {valid_until}")
    };
    let renews = if adopted { " and will renew it at" } else { "; it renews at" };
    match (decision, &assessment.renewal) {
        (Decision::Held { until, .. }, _) => message.push_str(&format!(
            "; its renewal is held until {} by the minimum renewal interval (--min-renewal-interval)",
            at(*until)
        )),
        (_, Some(renewal)) => {
            message.push_str(&format!("{renews} {}", at(renewal.at)));
            if let Some(note) = &renewal.note {
                message.push_str(&format!(" ({note})"));
            }
        }
        _ => {}
    }
    Condition::new(READY, true, if adopted { "Adopted" } else { "Ready" }, message)
}

fn failure_text(a: &super::trigger::AttemptView) -> String {
    let code = a.error_code.as_deref().unwrap_or("Failed");
    let message = a.error_message.as_deref().unwrap_or("no error message");
    format!("attempt {} failed ({code}): {message}", a.name)
}

fn issuing_condition(o: &Observed, decision: &Decision) -> Condition {
    if let Some(current) = o.in_progress() {
        let message =
            format!("attempt {} ({:?}) is {:?}: {}", current.name, current.type_, current.phase, current.reason);
        return Condition::new(ISSUING, true, &format!("{:?}", current.type_), message);
    }
    match decision {
        Decision::Blocked { reason, message } => Condition::new(ISSUING, false, reason, message.clone()),
        Decision::BackingOff { until } => {
            let latest = o.latest().expect("backing off implies a failed attempt");
            let reason = latest.error_code.clone().unwrap_or_else(|| "Failed".into());
            Condition::new(
                ISSUING,
                false,
                &reason,
                format!("{}; the next attempt is at {}", failure_text(latest), at(*until)),
            )
        }
        Decision::Start { type_, reason } => Condition::new(ISSUING, true, &format!("{type_:?}"), reason.clone()),
        Decision::Held { message, .. } => Condition::new(ISSUING, false, "RenewalHeld", message.clone()),
        _ => Condition::new(ISSUING, false, "Idle", "no attempt is under way"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{IssuerKind, IssuerRef};
    use crate::policy::trigger::{
        IssuerState,
        tests::{attempt, issuer, now, observed, stored},
    };
    use jiff::SignedDuration;

    fn condition<'a>(s: &'a CertificateStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_certificate() {
        let o = observed(
            SecretState::Present(Box::new(stored(now() - SignedDuration::from_hours(24), 90))),
            vec![attempt(1, AttemptPhase::Succeeded)],
        );
        let s = summarise(&o, &o.decide(), &[]);
        assert_eq!(s.phase, CertificatePhase::Ready);
        assert!(condition(&s, READY).is_true());
        assert!(condition(&s, READY).message.contains("renews at"));
        assert_eq!(condition(&s, ISSUING).reason, "Idle");
        assert!(s.renewal_time.is_some() && s.not_after.is_some() && s.serial_number.is_some());
        assert_eq!(s.attempts_count, 0);
        assert_eq!(s.last_attempt.unwrap().name, "app-1");
    }

    #[test]
    fn the_history_keeps_pruned_attempts_and_adds_the_ones_seen() {
        let fresh = || SecretState::Present(Box::new(stored(now() - SignedDuration::from_hours(24), 90)));
        let first = observed(fresh(), vec![attempt(1, AttemptPhase::Succeeded), attempt(2, AttemptPhase::Failed)]);
        let before = summarise(&first, &first.decide(), &[]).history;
        // app-1 was pruned since.
        let later = observed(fresh(), vec![attempt(2, AttemptPhase::Failed), attempt(3, AttemptPhase::Succeeded)]);
        let s = summarise(&later, &later.decide(), &before);
        let names: Vec<&str> = s.history.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["app-3", "app-2", "app-1"]);
        assert_eq!(s.history[2], before[1]);
    }

    #[test]
    fn the_issuer_of_the_certificate_and_why_a_fallback_issued_it() {
        let secret = |issuer: IssuerRef| {
            let mut stored = stored(now() - SignedDuration::from_hours(24), 90);
            stored.issuer = Some(issuer);
            SecretState::Present(Box::new(stored))
        };
        let o = observed(secret(issuer()), vec![attempt(1, AttemptPhase::Succeeded)]);
        let by = summarise(&o, &o.decide(), &[]).issued_by.unwrap();
        assert_eq!((by.kind, by.name.as_str(), by.fallback_reason), (issuer().kind, "local", None));
        let backup = IssuerRef { kind: IssuerKind::Issuer, name: "backup".into() };
        let mut succeeded = attempt(2, AttemptPhase::Succeeded);
        succeeded.issuer = backup.clone();
        succeeded.fallback_reason = Some("ClusterIssuer/local failed on the CA's side (CAUnreachable)".into());
        let mut o = observed(secret(backup.clone()), vec![attempt(1, AttemptPhase::Failed), succeeded]);
        o.fallbacks = vec![(backup.clone(), IssuerState::Ready)];
        let by = summarise(&o, &o.decide(), &[]).issued_by.unwrap();
        assert_eq!(by.name, "backup");
        assert!(by.fallback_reason.unwrap().contains("CAUnreachable"));
        o.attempts.clear();
        let pruned = summarise(&o, &o.decide(), &[]).issued_by.unwrap().fallback_reason.unwrap();
        assert!(pruned.contains("fallback issuer Issuer/backup"), "{pruned}");
    }

    #[test]
    fn issuing_and_pending_validation() {
        let o = observed(SecretState::Missing, vec![attempt(1, AttemptPhase::Ordering)]);
        let s = summarise(&o, &o.decide(), &[]);
        assert_eq!(s.phase, CertificatePhase::Issuing);
        assert!(condition(&s, ISSUING).is_true());
        assert!(!condition(&s, READY).is_true());
        let o = observed(SecretState::Missing, vec![attempt(1, AttemptPhase::Validating)]);
        assert_eq!(summarise(&o, &o.decide(), &[]).phase, CertificatePhase::PendingValidation);
    }

    #[test]
    fn renewing_keeps_ready_true() {
        let o = observed(
            SecretState::Present(Box::new(stored(now() - SignedDuration::from_hours(24 * 70), 90))),
            vec![attempt(2, AttemptPhase::Finalizing)],
        );
        let s = summarise(&o, &o.decide(), &[]);
        assert_eq!(s.phase, CertificatePhase::Renewing);
        assert!(condition(&s, READY).is_true());
    }

    #[test]
    fn failure_says_why_and_when_next() {
        let mut f = attempt(1, AttemptPhase::Failed);
        f.error_code = Some("RateLimited".into());
        f.error_message = Some("too many certificates".into());
        f.retry_after = Some(now() + SignedDuration::from_hours(1));
        let o = observed(SecretState::Missing, vec![f]);
        let d = o.decide();
        let s = summarise(&o, &d, &[]);
        assert_eq!(s.phase, CertificatePhase::Failed);
        assert_eq!(s.attempts_count, 1);
        assert_eq!(s.next_attempt_time, Some(Time(now() + SignedDuration::from_hours(1))));
        assert_eq!(s.retry_after, s.next_attempt_time);
        let issuing = condition(&s, ISSUING);
        assert_eq!(issuing.reason, "RateLimited");
        assert!(issuing.message.contains("too many certificates") && issuing.message.contains("next attempt"));
        assert_eq!(condition(&s, READY).reason, "AttemptFailed");
    }

    #[test]
    fn blocked_by_the_issuer() {
        let mut o = observed(SecretState::Missing, vec![]);
        o.issuer = crate::policy::trigger::IssuerState::NotFound("ClusterIssuer local not found".into());
        let s = summarise(&o, &o.decide(), &[]);
        assert_eq!(s.phase, CertificatePhase::Pending);
        assert_eq!(condition(&s, READY).reason, "IssuerNotFound");
        assert!(condition(&s, READY).message.contains("not found"));
    }

    #[test]
    fn an_adopted_certificate_is_ready_and_says_so() {
        let mut stored = stored(now() - SignedDuration::from_hours(24), 90);
        stored.issuer = None;
        let o = observed(SecretState::Adopted(Box::new(stored.clone())), vec![]);
        let s = summarise(&o, &o.decide(), &[]);
        assert_eq!(s.phase, CertificatePhase::Ready);
        let ready = condition(&s, READY);
        assert!(ready.is_true());
        assert_eq!(ready.reason, "Adopted");
        let renewal = s.renewal_time.clone().unwrap().0;
        for part in [
            "Secret app-tls",
            "issued by cert-manager",
            &format!("certpilot adopted it and will renew it at {}", at(renewal)),
        ] {
            assert!(ready.message.contains(part), "{part}: {}", ready.message);
        }
        assert_eq!(s.not_after, Some(Time(stored.info.not_after)));
        assert_eq!(s.serial_number.as_deref(), Some("01"));
        assert_eq!(condition(&s, ISSUING).reason, "Idle");
    }

    #[test]
    fn a_secret_that_cannot_be_adopted_is_not_ready() {
        let reason = crate::policy::adopt::NotAdoptable::KeyMismatch;
        let o = observed(SecretState::NotAdoptable { reason }, vec![]);
        let s = summarise(&o, &o.decide(), &[]);
        assert_eq!(s.phase, CertificatePhase::Pending);
        let ready = condition(&s, READY);
        assert!(!ready.is_true());
        assert_eq!(ready.reason, "SecretNotAdoptable");
        assert!(ready.message.contains("tls.key does not match tls.crt"), "{}", ready.message);
        assert!(s.not_after.is_none() && s.renewal_time.is_none());
    }

    #[test]
    fn expired_certificate() {
        let mut f = attempt(1, AttemptPhase::Failed);
        f.finished_at = Some(now());
        let o =
            observed(SecretState::Present(Box::new(stored(now() - SignedDuration::from_hours(24 * 100), 90))), vec![f]);
        let s = summarise(&o, &o.decide(), &[]);
        assert_eq!(s.phase, CertificatePhase::Expired);
        assert_eq!(condition(&s, READY).reason, "Expired");
    }
}
