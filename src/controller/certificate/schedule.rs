//! When to look at a Certificate again: its next moment within the horizon, a sweep for those
//! beyond it, backoff while blocked, and how long an attempt under way goes unshown.

use crate::{
    api::{Certificate, certificate::CertificateStatus, conditions},
    controller::cache::AttemptRecord,
    policy::trigger::Decision,
};
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::runtime::{controller::Action, reflector::ObjectRef};
use std::{sync::Arc, time::Duration};

/// How often the Certificates are swept for moments coming within reach.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// How far ahead a reconcile schedules its next look itself. Further moments are left to the
/// sweep: every wake-up the controller holds costs memory, and at rest nearly every Certificate
/// would hold one for weeks. Twice the sweep's interval, so no moment falls between the two.
const WAKE_HORIZON: Duration = Duration::from_secs(2 * SWEEP_INTERVAL.as_secs());
const _: () = assert!(WAKE_HORIZON.as_secs() >= 2 * SWEEP_INTERVAL.as_secs(), "a moment could fall between sweeps");

/// The next moment after `now` at which the Certificate needs a look: renewal, the next
/// attempt, expiry or the next renewal-information check.
fn next_moment(status: &CertificateStatus, now: Timestamp) -> Option<Timestamp> {
    let ari_check = status.renewal_info.as_ref().map(|r| r.next_check.clone());
    let moments = [&status.renewal_time, &status.next_attempt_time, &status.not_after, &ari_check];
    moments.iter().filter_map(|t| t.as_ref().map(|t| t.0)).filter(|t| *t > now).min()
}

/// When to look again: the next moment, if within the horizon; soon when blocked.
pub(super) fn next_reconcile(status: &CertificateStatus, decision: &Decision, now: Timestamp) -> Action {
    if matches!(decision, Decision::Blocked { .. }) {
        let since =
            conditions::find(&status.conditions, "Ready").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0);
        return Action::requeue(blocked_retry(since.map(|t| now.duration_since(t)).unwrap_or_default()));
    }
    match next_moment(status, now) {
        Some(at) => {
            let wait = at.duration_since(now).unsigned_abs() + Duration::from_millis(500);
            if wait <= WAKE_HORIZON { Action::requeue(wait) } else { Action::await_change() }
        }
        None if status.last_attempt.as_ref().is_some_and(|a| !a.phase.is_terminal()) => {
            Action::requeue(Duration::from_secs(300))
        }
        None => Action::await_change(),
    }
}

/// Certificates whose next moment comes within the horizon before the following sweep: their
/// reconcile then schedules the exact moment.
fn due_within_horizon(certificates: &[Arc<Certificate>], now: Timestamp) -> Vec<ObjectRef<Certificate>> {
    let horizon = jiff::SignedDuration::try_from(WAKE_HORIZON).unwrap_or_default();
    certificates
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| next_moment(s, now)).is_some_and(|at| at <= now + horizon))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Every [`SWEEP_INTERVAL`], the Certificates due within the horizon.
pub(super) fn sweep(store: kube::runtime::reflector::Store<Certificate>) -> impl Stream<Item = ObjectRef<Certificate>> {
    let start = tokio::time::Instant::now() + SWEEP_INTERVAL;
    ticks(tokio::time::interval_at(start, SWEEP_INTERVAL))
        .flat_map(move |_| futures::stream::iter(due_within_horizon(&store.state(), Timestamp::now())))
}

fn ticks(mut interval: tokio::time::Interval) -> impl Stream<Item = ()> {
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(interval, |mut interval| async move {
        interval.tick().await;
        Some(((), interval))
    })
}

/// How soon to look again at a Certificate blocked by something the user must fix: half as
/// long as it has been blocked, from 5 seconds up to 10 minutes (issuer changes wake it at once;
/// a foreign Secret's changes do not, as only certpilot's Secrets are watched).
fn blocked_retry(blocked_for: jiff::SignedDuration) -> Duration {
    let half = blocked_for.unsigned_abs() / 2;
    half.clamp(Duration::from_secs(5), Duration::from_secs(600))
}

/// How long an attempt under way goes without being shown in the Certificate's status. Most
/// attempts end well within it, and the Certificate's status is written once, at that end:
/// the live phase is in the attempt's own status (and `certpilot status`). One still under way
/// after this long (a long queue, a slow CA, DNS-01 propagation, an API server refusing its
/// writes) is shown as under way, and from then on follows the phases its status records.
pub(super) const UNSHOWN_START: Duration = Duration::from_secs(60);

/// While the latest attempt is under way and was made less than [`UNSHOWN_START`] ago, the
/// Certificate's status waits for its end: the attempt's watch event brings the Certificate
/// back. How long to wait at most, then.
pub(super) fn unshown_start(decision: &Decision, latest: Option<&AttemptRecord>, now: Timestamp) -> Option<Duration> {
    let latest = latest.filter(|a| matches!(decision, Decision::InProgress) && !a.view.phase.is_terminal())?;
    let limit = jiff::SignedDuration::try_from(UNSHOWN_START).ok()?;
    let age = now.duration_since(latest.created?);
    (age < limit).then(|| (limit - age).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CertificateAttempt, attempt::AttemptPhase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn blocked_certificates_are_retried_with_backoff() {
        let s = jiff::SignedDuration::from_secs;
        assert_eq!(blocked_retry(s(0)), Duration::from_secs(5));
        assert_eq!(blocked_retry(s(60)), Duration::from_secs(30));
        assert_eq!(blocked_retry(s(600)), Duration::from_secs(300));
        assert_eq!(blocked_retry(s(86_400)), Duration::from_secs(600));
    }

    #[test]
    fn an_attempt_under_way_is_shown_after_a_minute_and_its_end_at_once() {
        let now = Timestamp::now();
        let record = |phase: AttemptPhase, age: i64| {
            let mut attempt = CertificateAttempt::new("app-1", Default::default());
            attempt.metadata.creation_timestamp = Some(Time(now - jiff::SignedDuration::from_secs(age)));
            attempt.status = Some(crate::api::attempt::CertificateAttemptStatus { phase, ..Default::default() });
            AttemptRecord::of(&attempt)
        };
        let waits = |phase, age| unshown_start(&Decision::InProgress, Some(&record(phase, age)), now);
        for phase in [AttemptPhase::Pending, AttemptPhase::Ordering, AttemptPhase::Validating] {
            assert_eq!(waits(phase, 20), Some(Duration::from_secs(40)), "{phase:?}");
            assert_eq!(waits(phase, 61), None, "{phase:?} after a minute");
        }
        assert_eq!(waits(AttemptPhase::Succeeded, 5), None);
        assert_eq!(waits(AttemptPhase::Failed, 5), None);
        let latest = record(AttemptPhase::Validating, 5);
        assert_eq!(unshown_start(&Decision::UpToDate, Some(&latest), now), None);
    }

    fn ready_until(renewal: Timestamp) -> CertificateStatus {
        CertificateStatus {
            renewal_time: Some(Time(renewal)),
            not_after: Some(Time(renewal + jiff::SignedDuration::from_hours(24 * 30))),
            ..Default::default()
        }
    }

    /// Far moments are left to the sweep, so that a quiet operator holds no wake-up per
    /// Certificate; near ones are scheduled exactly.
    #[test]
    fn only_moments_within_the_horizon_are_scheduled() {
        let now = Timestamp::now();
        let soon = ready_until(now + jiff::SignedDuration::from_mins(3));
        assert_eq!(next_reconcile(&soon, &Decision::InProgress, now), Action::requeue(Duration::from_millis(180_500)));
        let later = ready_until(now + jiff::SignedDuration::from_hours(24 * 20));
        assert_eq!(next_reconcile(&later, &Decision::InProgress, now), Action::await_change());
    }

    #[test]
    fn the_sweep_finds_what_comes_within_the_horizon_and_nothing_else() {
        let now = Timestamp::now();
        let with_status = |name: &str, status: Option<CertificateStatus>| {
            let mut cert = Certificate::new(name, Default::default());
            cert.metadata.namespace = Some("ns".into());
            cert.status = status;
            Arc::new(cert)
        };
        let horizon = jiff::SignedDuration::try_from(WAKE_HORIZON).unwrap();
        let certificates = [
            with_status("due", Some(ready_until(now + horizon - jiff::SignedDuration::from_secs(1)))),
            with_status("later", Some(ready_until(now + horizon + jiff::SignedDuration::from_secs(1)))),
            with_status("past", Some(ready_until(now - jiff::SignedDuration::from_hours(24 * 31)))),
            with_status("new", None),
        ];
        let due: Vec<String> = due_within_horizon(&certificates, now).into_iter().map(|r| r.name).collect();
        assert_eq!(due, ["due"]);
    }
}
