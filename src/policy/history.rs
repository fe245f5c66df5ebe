//! The attempt history on the Certificate (`status.history`): the latest attempts in brief,
//! kept when their objects are pruned. Merged from the previous history and the attempts seen
//! now, so an attempt pruned since the last look stays as it was last seen.

use super::trigger::AttemptView;
use crate::api::certificate::{AttemptHistoryEntry, HISTORY_ERROR_CODE_MAX, HISTORY_LENGTH, HISTORY_SERIAL_MAX};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::{cmp::Reverse, collections::HashMap};

/// The history after looking at `attempts` (this Certificate's, as observed now): each
/// attempt seen replaces its entry (its phase, times or serial may have changed), an entry
/// whose attempt is no longer seen (pruned) is kept, and only the newest
/// [`HISTORY_LENGTH`] remain, newest first.
pub fn merge(previous: &[AttemptHistoryEntry], attempts: &[AttemptView]) -> Vec<AttemptHistoryEntry> {
    let mut by_name: HashMap<&str, (u32, AttemptHistoryEntry)> =
        previous.iter().map(|e| (e.name.as_str(), (index_of(&e.name), e.clone()))).collect();
    for attempt in attempts {
        by_name.insert(attempt.name.as_str(), (attempt.index, entry(attempt)));
    }
    let mut merged: Vec<(u32, AttemptHistoryEntry)> = by_name.into_values().collect();
    // Newest first: by index, then (for names whose index cannot be read) by start and name.
    merged.sort_by(|(a_index, a), (b_index, b)| {
        let key = |index: &u32, e: &AttemptHistoryEntry| (*index, e.started_at.as_ref().map(|t| t.0), e.name.clone());
        Reverse(key(a_index, a)).cmp(&Reverse(key(b_index, b)))
    });
    merged.into_iter().take(HISTORY_LENGTH).map(|(_, e)| e).collect()
}

/// One attempt in brief. A serial or error code too long for the CRD's limits is left out
/// rather than have the API server refuse the whole status.
pub fn entry(attempt: &AttemptView) -> AttemptHistoryEntry {
    let within = |value: &Option<String>, max: usize| value.clone().filter(|v| v.len() <= max);
    AttemptHistoryEntry {
        name: attempt.name.clone(),
        type_: attempt.type_,
        phase: attempt.phase,
        issuer: attempt.issuer.to_string(),
        started_at: attempt.started_at.map(Time),
        finished_at: attempt.finished_at.map(Time),
        serial: within(&attempt.serial, HISTORY_SERIAL_MAX),
        error_code: within(&attempt.error_code, HISTORY_ERROR_CODE_MAX),
    }
}

/// `web-12` → 12 (attempts are named `<certificate>-<index>`); 0 for a name without one.
fn index_of(name: &str) -> u32 {
    name.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        IssuerKind, IssuerRef,
        attempt::{AttemptPhase, AttemptType},
    };
    use jiff::{SignedDuration, Timestamp};

    fn start() -> Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    fn attempt(index: u32, phase: AttemptPhase) -> AttemptView {
        let started = start() + SignedDuration::from_mins(i64::from(index));
        let ended = phase.is_terminal();
        AttemptView {
            name: format!("web-{index}"),
            index,
            type_: if index == 1 { AttemptType::Issue } else { AttemptType::Manual },
            phase,
            issuer: IssuerRef { kind: IssuerKind::ClusterIssuer, name: "letsencrypt".into() },
            started_at: (phase != AttemptPhase::Pending).then_some(started),
            finished_at: ended.then(|| started + SignedDuration::from_secs(3)),
            serial: (phase == AttemptPhase::Succeeded).then(|| format!("0A{index:02}")),
            error_code: (phase == AttemptPhase::Failed).then(|| "RateLimited".into()),
            ..Default::default()
        }
    }

    fn names(history: &[AttemptHistoryEntry]) -> Vec<&str> {
        history.iter().map(|e| e.name.as_str()).collect()
    }

    fn succeeded(range: std::ops::RangeInclusive<u32>) -> Vec<AttemptView> {
        range.map(|i| attempt(i, AttemptPhase::Succeeded)).collect()
    }

    #[test]
    fn an_entry_holds_the_attempt_in_brief() {
        let history = merge(&[], &[attempt(3, AttemptPhase::Succeeded), attempt(4, AttemptPhase::Failed)]);
        assert_eq!(history.len(), 2);
        let (failed, ok) = (&history[0], &history[1]);
        assert_eq!(ok.name, "web-3");
        assert_eq!((ok.type_, ok.phase), (AttemptType::Manual, AttemptPhase::Succeeded));
        assert_eq!(ok.issuer, "ClusterIssuer/letsencrypt");
        assert_eq!(ok.started_at, Some(Time(start() + SignedDuration::from_mins(3))));
        assert_eq!(ok.finished_at, Some(Time(start() + SignedDuration::from_mins(3) + SignedDuration::from_secs(3))));
        assert_eq!((ok.serial.as_deref(), ok.error_code.as_deref()), (Some("0A03"), None));
        assert_eq!((failed.serial.as_deref(), failed.error_code.as_deref()), (None, Some("RateLimited")));
    }

    #[test]
    fn nothing_seen_and_nothing_before_is_an_empty_history() {
        assert!(merge(&[], &[]).is_empty());
    }

    #[test]
    fn newest_first_by_index_not_by_name() {
        let history = merge(&[], &succeeded(8..=11));
        assert_eq!(names(&history), ["web-11", "web-10", "web-9", "web-8"]);
    }

    #[test]
    fn only_the_latest_ten_are_kept() {
        let history = merge(&[], &succeeded(1..=15));
        assert_eq!(history.len(), HISTORY_LENGTH);
        assert_eq!(history.first().unwrap().name, "web-15");
        assert_eq!(history.last().unwrap().name, "web-6");
    }

    #[test]
    fn pruned_attempts_stay_as_last_seen() {
        let before = merge(&[], &succeeded(1..=3));
        // web-1 and web-2 were pruned; web-4 is new.
        let after = merge(&before, &succeeded(3..=4));
        assert_eq!(names(&after), ["web-4", "web-3", "web-2", "web-1"]);
        assert_eq!(after[2], before[1], "a pruned attempt's entry is unchanged");
    }

    #[test]
    fn fifteen_renewals_with_two_objects_kept_leave_the_latest_ten() {
        let mut history = Vec::new();
        for latest in 1..=15u32 {
            // What the cache holds after each renewal: the history limit of two keeps the last two.
            let seen = succeeded(latest.saturating_sub(1).max(1)..=latest);
            history = merge(&history, &seen);
        }
        let expected: Vec<String> = (6..=15).rev().map(|i| format!("web-{i}")).collect();
        assert_eq!(names(&history), expected);
        assert!(history.iter().all(|e| e.phase == AttemptPhase::Succeeded && e.serial.is_some()));
    }

    #[test]
    fn an_attempt_that_moves_on_updates_its_entry_in_place() {
        let pending = merge(&[], &[attempt(1, AttemptPhase::Succeeded), attempt(2, AttemptPhase::Pending)]);
        assert_eq!(pending[0].phase, AttemptPhase::Pending);
        assert_eq!(pending[0].started_at, None);
        let done = merge(&pending, &[attempt(1, AttemptPhase::Succeeded), attempt(2, AttemptPhase::Succeeded)]);
        assert_eq!(names(&done), ["web-2", "web-1"], "updated, not duplicated");
        assert_eq!(done[0].phase, AttemptPhase::Succeeded);
        assert!(done[0].started_at.is_some() && done[0].finished_at.is_some() && done[0].serial.is_some());
    }

    #[test]
    fn merging_what_is_already_recorded_changes_nothing() {
        let seen = [attempt(1, AttemptPhase::Failed), attempt(2, AttemptPhase::Succeeded)];
        let once = merge(&[], &seen);
        assert_eq!(merge(&once, &seen), once, "no write when nothing changed");
        assert_eq!(merge(&once, &[]), once, "every object pruned: the history stays");
    }

    #[test]
    fn a_full_history_drops_the_oldest_for_a_new_attempt() {
        let full = merge(&[], &succeeded(1..=10));
        let next = merge(&full, &[attempt(11, AttemptPhase::Pending)]);
        assert_eq!(next.len(), HISTORY_LENGTH);
        assert_eq!((next[0].name.as_str(), next[0].phase), ("web-11", AttemptPhase::Pending));
        assert_eq!(next.last().unwrap().name, "web-2");
    }

    #[test]
    fn an_older_attempt_seen_again_does_not_push_out_newer_ones() {
        let full = merge(&[], &succeeded(5..=14));
        let again = merge(&full, &[attempt(2, AttemptPhase::Succeeded)]);
        assert_eq!(again, full, "web-2 is older than all ten kept");
    }

    #[test]
    fn values_beyond_the_crds_limits_are_left_out() {
        let mut odd = attempt(1, AttemptPhase::Failed);
        odd.serial = Some("F".repeat(HISTORY_SERIAL_MAX + 1));
        odd.error_code = Some("X".repeat(HISTORY_ERROR_CODE_MAX + 1));
        let kept = entry(&odd);
        assert_eq!((kept.serial, kept.error_code), (None, None));
        let mut fits = attempt(1, AttemptPhase::Failed);
        fits.serial = Some("F".repeat(HISTORY_SERIAL_MAX));
        assert_eq!(entry(&fits).serial.map(|s| s.len()), Some(HISTORY_SERIAL_MAX));
    }

    #[test]
    fn indexes_come_from_the_names_suffix() {
        assert_eq!(index_of("web-12"), 12);
        assert_eq!(index_of("web-tls-3"), 3);
        assert_eq!(index_of("web"), 0);
        assert_eq!(index_of("web-x"), 0);
    }
}
