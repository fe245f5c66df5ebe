//! Revocation requests: the `certpilot.dev/revoke` annotation, `<reason>[,no-reissue]@<time>`.
//! The time makes a second request distinct from the first; the same value twice is one
//! request. Which attempts a request leads to is decided in `policy::trigger`.

use crate::api::issuer::RevokedSerial;
use jiff::Timestamp;

/// Why a certificate is revoked (RFC 5280 §5.3.1 CRLReason), in the words ACME and CRLs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// Every reason a subscriber may give. `cACompromise`, `certificateHold`, `removeFromCRL`
    /// and `aACompromise` are the CA's to give, not a certificate holder's.
    pub const ALL: &[RevocationReason] = &[
        Self::Unspecified,
        Self::KeyCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::PrivilegeWithdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    /// The CRLReason code (RFC 5280 §5.3.1).
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::PrivilegeWithdrawn => 9,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a CA answered a revocation that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Now,
    /// It was revoked before: revoking twice does nothing more.
    Already,
}

/// One revocation request, as the annotation states it.
#[derive(Debug, Clone, PartialEq)]
pub struct RevokeRequest {
    pub reason: RevocationReason,
    /// Issue a new certificate (with a new key) once the current one is revoked.
    pub reissue: bool,
    pub requested_at: Timestamp,
}

const NO_REISSUE: &str = "no-reissue";

impl RevokeRequest {
    /// The annotation's value for this request.
    pub fn annotation(&self) -> String {
        let flag = if self.reissue { String::new() } else { format!(",{NO_REISSUE}") };
        format!("{}{flag}@{}", self.reason, self.requested_at)
    }

    /// Reads an annotation value, saying what is wrong with one that cannot be read.
    pub fn parse(value: &str) -> Result<Self, String> {
        let expected = "expected <reason>[,no-reissue]@<RFC 3339 time>, e.g. keyCompromise@2026-06-01T12:00:00Z";
        let (head, time) = value.rsplit_once('@').ok_or_else(|| format!("{value:?}: {expected}"))?;
        let requested_at = time
            .parse::<Timestamp>()
            .map_err(|_| format!("{value:?}: {time:?} is not an RFC 3339 time; {expected}"))?;
        let mut parts = head.split(',');
        let reason_text = parts.next().unwrap_or_default();
        let reason = RevocationReason::parse(reason_text).ok_or_else(|| {
            let known: Vec<&str> = RevocationReason::ALL.iter().map(|r| r.as_str()).collect();
            format!("{value:?}: {reason_text:?} is not a revocation reason; one of {}", known.join(", "))
        })?;
        let mut reissue = true;
        for flag in parts {
            match flag {
                NO_REISSUE => reissue = false,
                other => return Err(format!("{value:?}: unknown flag {other:?}; {expected}")),
            }
        }
        Ok(Self { reason, reissue, requested_at })
    }
}

/// A CA issuer's list of revoked certificates with `serial` added: `None` when it is listed
/// already (revoking twice does nothing more). Certificates expired by `now` leave the list;
/// if it is still full, the entry that expires first makes room (it leaves the CRL soonest
/// anyway), so the list never exceeds `max`.
pub fn record(list: &[RevokedSerial], entry: RevokedSerial, now: Timestamp, max: usize) -> Option<Vec<RevokedSerial>> {
    if list.iter().any(|r| r.serial_number.eq_ignore_ascii_case(&entry.serial_number)) {
        return None;
    }
    let mut kept: Vec<RevokedSerial> = list.iter().filter(|r| r.not_after.0 > now).cloned().collect();
    kept.push(entry);
    while kept.len() > max.max(1) {
        let soonest = kept.iter().enumerate().min_by_key(|(_, r)| r.not_after.0).map(|(i, _)| i).unwrap_or(0);
        kept.remove(soonest);
    }
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn entry(serial: &str, expires_in_days: i64) -> RevokedSerial {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        RevokedSerial {
            serial_number: serial.into(),
            reason: "keyCompromise".into(),
            revoked_at: Time(now),
            not_after: Time(now + SignedDuration::from_hours(24 * expires_in_days)),
        }
    }

    #[test]
    fn the_revoked_list_keeps_each_serial_once_and_stays_bounded() {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let list = record(&[], entry("0A", 30), now, 3).unwrap();
        assert_eq!(record(&list, entry("0a", 30), now, 3), None, "revoking twice does nothing more");
        let list = record(&list, entry("0B", -1), now, 3).unwrap();
        assert_eq!(list.len(), 2);
        let list = record(&list, entry("0C", 10), now, 3).unwrap();
        let serials: Vec<&str> = list.iter().map(|r| r.serial_number.as_str()).collect();
        assert_eq!(serials, ["0A", "0C"], "the expired one left");
        let list = record(&list, entry("0D", 20), now, 3).unwrap();
        let list = record(&list, entry("0E", 40), now, 3).unwrap();
        let serials: Vec<&str> = list.iter().map(|r| r.serial_number.as_str()).collect();
        assert_eq!(serials, ["0A", "0D", "0E"], "full: the one expiring first made room");
    }

    #[test]
    fn requests_read_back_as_written() {
        let at: Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
        for reissue in [true, false] {
            for &reason in RevocationReason::ALL {
                let request = RevokeRequest { reason, reissue, requested_at: at };
                assert_eq!(RevokeRequest::parse(&request.annotation()), Ok(request));
            }
        }
        let plain = RevokeRequest::parse("keyCompromise@2026-06-01T12:00:00Z").unwrap();
        assert!(plain.reissue);
        assert_eq!(plain.reason.code(), 1);
        assert!(!RevokeRequest::parse("superseded,no-reissue@2026-06-01T12:00:00.5Z").unwrap().reissue);
    }

    #[test]
    fn a_malformed_request_says_what_is_wrong() {
        let wrong = |value: &str, part: &str| {
            let message = RevokeRequest::parse(value).unwrap_err();
            assert!(message.contains(part), "{value}: {message}");
        };
        wrong("keyCompromise", "expected <reason>");
        wrong("keyCompromise@yesterday", "not an RFC 3339 time");
        wrong("leaked@2026-06-01T12:00:00Z", "one of unspecified, keyCompromise");
        wrong("cACompromise@2026-06-01T12:00:00Z", "not a revocation reason");
        wrong("superseded,later@2026-06-01T12:00:00Z", "unknown flag");
    }
}
