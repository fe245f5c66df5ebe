//! When to try again after a failed attempt.

use super::unit_jitter;
use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay after the first failure.
    pub base: SignedDuration,
    /// Longest delay.
    pub cap: SignedDuration,
}

impl Default for BackoffPolicy {
    /// First retry after a minute, doubling up to six hours.
    fn default() -> Self {
        Self { base: SignedDuration::from_mins(1), cap: SignedDuration::from_hours(6) }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `failures` (1 after the first failure), with a stable
    /// ±10% jitter so that certificates failing together do not retry together.
    pub fn delay(&self, failures: u32, jitter_key: &str) -> SignedDuration {
        let exponent = failures.saturating_sub(1).min(30);
        let raw = self.base.as_secs_f64() * 2f64.powi(exponent as i32);
        let capped = raw.min(self.cap.as_secs_f64());
        let jittered = capped * (0.9 + 0.2 * unit_jitter(jitter_key));
        SignedDuration::from_secs_f64(jittered.min(self.cap.as_secs_f64()))
    }

    /// When the next attempt may start: exactly the CA's `Retry-After` when it gave one,
    /// otherwise `failed_at` plus the backoff delay.
    pub fn next_attempt(
        &self,
        failures: u32,
        failed_at: Timestamp,
        retry_after: Option<Timestamp>,
        jitter_key: &str,
    ) -> Timestamp {
        match retry_after {
            Some(at) => at,
            None => failed_at + self.delay(failures, jitter_key),
        }
    }
}

/// Parses an HTTP `Retry-After` value (delay-seconds or an HTTP date) received at `now`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Timestamp> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return now.checked_add(SignedDuration::from_secs(seconds.min(i64::MAX as u64) as i64)).ok();
    }
    jiff::fmt::rfc2822::parse(value).ok().map(|zoned| zoned.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(now + SignedDuration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 03:00:00 GMT", now),
            Some("2026-01-01T03:00:00Z".parse().unwrap())
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn doubles_from_a_minute_to_a_cap_of_six_hours() {
        let p = BackoffPolicy::default();
        let d1 = p.delay(1, "k").as_secs_f64();
        assert!((54.0..=66.0).contains(&d1), "{d1}");
        let d3 = p.delay(3, "k").as_secs_f64();
        assert!((216.0..=264.0).contains(&d3), "{d3}");
        assert!(p.delay(100, "k") <= SignedDuration::from_hours(6));
        assert!(p.delay(20, "k") >= SignedDuration::from_hours(5));
        for n in 1..12 {
            assert!(p.delay(n + 1, "k") >= p.delay(n, "k"), "monotonic at {n}");
        }
    }

    #[test]
    fn retry_after_is_honoured_exactly() {
        let p = BackoffPolicy::default();
        let failed: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let retry: Timestamp = "2026-01-01T03:00:00Z".parse().unwrap();
        assert_eq!(p.next_attempt(1, failed, Some(retry), "k"), retry);
        let next = p.next_attempt(2, failed, None, "k");
        assert!(next > failed + SignedDuration::from_secs(100) && next < failed + SignedDuration::from_secs(140));
    }
}
