//! When a certificate is renewed.

use super::unit_jitter;
use crate::api::certificate::RenewalSource;
use jiff::{SignedDuration, Timestamp};

/// The user's renewal settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RenewalSettings {
    pub renew_before: Option<SignedDuration>,
    pub renew_before_percentage: Option<i32>,
}

/// A renewal window suggested by the CA (ACME Renewal Information, RFC 9773).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuggestedWindow {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// When to renew, where that came from, and a note when the settings could not be followed.
#[derive(Debug, Clone, PartialEq)]
pub struct RenewalTime {
    pub at: Timestamp,
    pub source: RenewalSource,
    pub note: Option<String>,
}

/// Certificates shorter than this renew at half their lifetime instead of two thirds.
const SHORT_LIVED: SignedDuration = SignedDuration::from_hours(240);
/// Jitter spreads renewals of equal certificates over at most this long (and 1% of the lifetime).
const MAX_JITTER: SignedDuration = SignedDuration::from_hours(1);

fn default_window(lifetime: SignedDuration) -> SignedDuration {
    if lifetime < SHORT_LIVED { lifetime / 2 } else { lifetime / 3 }
}

/// The renewal time of a certificate valid from `not_before` to `not_after`. `jitter_key`
/// (e.g. `namespace/name`) moves it a stable amount earlier so that certificates with equal
/// expiry do not all renew in the same second. An ARI window, when the CA gives one, wins.
pub fn renewal_time(
    not_before: Timestamp,
    not_after: Timestamp,
    settings: RenewalSettings,
    ari: Option<SuggestedWindow>,
    jitter_key: &str,
) -> RenewalTime {
    let lifetime = not_after.duration_since(not_before);
    if let Some(window) = ari.filter(|w| w.end > w.start) {
        let span = window.end.duration_since(window.start);
        let at = window.start + span.mul_f64(unit_jitter(jitter_key));
        // A window entirely before issuance would renew every new certificate at once, forever:
        // a certificate is kept for at least a tenth of its lifetime (at most an hour).
        let floor = not_before + std::cmp::min(lifetime / 10, SignedDuration::from_hours(1));
        return RenewalTime { at: std::cmp::max(at, floor), source: RenewalSource::Ari, note: None };
    }
    let (window, note) = policy_window(lifetime, settings);
    let spread = std::cmp::min(lifetime / 100, MAX_JITTER);
    let at = not_after - window - spread.mul_f64(unit_jitter(jitter_key));
    RenewalTime { at: std::cmp::max(at, not_before), source: RenewalSource::Policy, note }
}

fn policy_window(lifetime: SignedDuration, settings: RenewalSettings) -> (SignedDuration, Option<String>) {
    if let Some(before) = settings.renew_before {
        if before < lifetime {
            return (before, None);
        }
        // Renewing "before issuance" would loop: fall back to the default and say so.
        let note = format!(
            "renewBefore ({before:#}) is not shorter than the certificate's lifetime ({lifetime:#}); renewing at the default point instead"
        );
        return (default_window(lifetime), Some(note));
    }
    if let Some(pct) = settings.renew_before_percentage.filter(|p| (1..=99).contains(p)) {
        return (lifetime.mul_f64(f64::from(pct) / 100.0), None);
    }
    (default_window(lifetime), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    #[test]
    fn default_is_a_third_of_the_lifetime_left_minus_at_most_an_hour_of_jitter() {
        let nb = t("2026-01-01T00:00:00Z");
        let r = renewal_time(nb, nb + days(90), RenewalSettings::default(), None, "ns/a");
        let base = nb + days(60);
        assert_eq!(r.source, RenewalSource::Policy);
        assert!(r.at <= base && r.at >= base - SignedDuration::from_hours(1), "{}", r.at);
        assert!(r.note.is_none());
    }

    #[test]
    fn short_lived_certificates_renew_at_half_life() {
        let nb = t("2026-01-01T00:00:00Z");
        let r = renewal_time(nb, nb + days(6), RenewalSettings::default(), None, "ns/a");
        let base = nb + days(3);
        assert!(r.at <= base && r.at >= base - days(6) / 100);
    }

    #[test]
    fn renew_before_and_percentage() {
        let nb = t("2026-01-01T00:00:00Z");
        let na = nb + days(90);
        let before = RenewalSettings { renew_before: Some(days(10)), ..Default::default() };
        let r = renewal_time(nb, na, before, None, "k");
        assert!(r.at <= na - days(10) && r.at >= na - days(10) - SignedDuration::from_hours(1));
        let pct = RenewalSettings { renew_before_percentage: Some(50), ..Default::default() };
        let r = renewal_time(nb, na, pct, None, "k");
        assert!(r.at <= nb + days(45) && r.at >= nb + days(45) - SignedDuration::from_hours(1));
    }

    #[test]
    fn renew_before_longer_than_the_lifetime_falls_back_instead_of_looping() {
        let nb = t("2026-01-01T00:00:00Z");
        let settings = RenewalSettings { renew_before: Some(days(30)), ..Default::default() };
        let r = renewal_time(nb, nb + days(7), settings, None, "k");
        assert!(r.at > nb, "never renews at issuance");
        assert!(r.note.unwrap().contains("renewBefore"));
    }

    #[test]
    fn ari_window_wins_and_is_respected() {
        let nb = t("2026-01-01T00:00:00Z");
        let window = SuggestedWindow { start: nb + days(50), end: nb + days(52) };
        for key in ["a", "b", "c", "d"] {
            let r = renewal_time(nb, nb + days(90), RenewalSettings::default(), Some(window), key);
            assert_eq!(r.source, RenewalSource::Ari);
            assert!(r.at >= window.start && r.at < window.end);
        }
    }

    #[test]
    fn an_ari_window_in_the_past_does_not_renew_a_new_certificate_at_once() {
        let nb = t("2026-01-01T00:00:00Z");
        let window = SuggestedWindow { start: nb - days(300), end: nb + days(1) };
        let r = renewal_time(nb, nb + days(90), RenewalSettings::default(), Some(window), "k");
        assert!(r.at >= nb + SignedDuration::from_hours(1));
    }

    #[test]
    fn equal_certificates_renew_at_different_times() {
        let nb = t("2026-01-01T00:00:00Z");
        let times: std::collections::BTreeSet<Timestamp> = (0..50)
            .map(|i| renewal_time(nb, nb + days(90), RenewalSettings::default(), None, &format!("ns/c{i}")).at)
            .collect();
        assert!(times.len() > 45);
    }
}
