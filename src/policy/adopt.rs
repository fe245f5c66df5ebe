//! Whether certpilot adopts a Secret that cert-manager issued for a Certificate of the same
//! name. Users migrating from cert-manager apply certpilot Certificates over Secrets that still
//! hold good certificates: those are used as they are until their renewal time, instead of
//! being reissued at once (a burst of orders at the CA, and a key change nobody asked for).
//! Only a Secret that certpilot could have written itself is adopted; any other is left alone.

use super::trigger::StoredCertificate;
use crate::pki::{
    NameRequest,
    cert::{check_names, name_difference},
};
use jiff::Timestamp;

/// Why the certificate in a Secret cannot be used, as it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// `tls.crt` or `tls.key` is missing or cannot be parsed (what is wrong, in words).
    Unreadable(String),
    /// `tls.key` is not the private key of the certificate in `tls.crt`.
    KeyMismatch,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(why) => f.write_str(why),
            Self::KeyMismatch => f.write_str("tls.key is not the private key of the certificate in tls.crt"),
        }
    }
}

/// A Secret cert-manager wrote, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The Secret's type.
    pub type_: Option<String>,
    /// The Certificate cert-manager wrote it for (its `cert-manager.io/certificate-name`).
    pub written_for: String,
    /// Its certificate and key, read as certpilot reads its own.
    pub contents: Result<StoredCertificate, Unusable>,
}

/// Why a Secret cert-manager wrote is not adopted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NotAdoptable {
    /// cert-manager wrote it for another Certificate.
    OtherCertificate(String),
    /// Not a `kubernetes.io/tls` Secret (its type, if it has one).
    WrongType(Option<String>),
    Unreadable(String),
    KeyMismatch,
    /// Its certificate is not valid before this time.
    NotYetValid(Timestamp),
    /// Its certificate expired at this time.
    Expired(Timestamp),
    /// Its certificate does not cover exactly the names the Certificate asks for.
    NamesDiffer {
        missing: Vec<String>,
        extra: Vec<String>,
    },
}

impl std::fmt::Display for NotAdoptable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |t: &Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        match self {
            Self::OtherCertificate(name) => write!(f, "cert-manager issued it for Certificate {name}, not this one"),
            Self::WrongType(type_) => {
                write!(f, "its type is {}, not kubernetes.io/tls", type_.as_deref().unwrap_or("Opaque"))
            }
            Self::Unreadable(why) => f.write_str(why),
            Self::KeyMismatch => f.write_str("tls.key does not match tls.crt"),
            Self::NotYetValid(not_before) => write!(f, "its certificate is not valid before {}", at(not_before)),
            Self::Expired(not_after) => write!(f, "its certificate expired on {}", at(not_after)),
            Self::NamesDiffer { missing, extra } => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!("missing {}", missing.join(", ")));
                }
                if !extra.is_empty() {
                    parts.push(format!("extra {}", extra.join(", ")));
                }
                // Only duplicates in the request differ: nothing to list.
                if parts.is_empty() {
                    parts.push("not exactly the names the Certificate asks for".into());
                }
                write!(f, "names differ: {}", parts.join("; "))
            }
        }
    }
}

/// What becomes of a Secret cert-manager wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum Adoption {
    /// Used as it is until its renewal time, then renewed (and taken over) by certpilot.
    Adoptable(Box<StoredCertificate>),
    NotAdoptable(NotAdoptable),
}

/// Whether `candidate` is adopted for Certificate `certificate`, which asks for `wanted`, at
/// `now`: written for it, a TLS Secret, readable, its key matching, valid now, and covering
/// exactly the names asked for (compared as certpilot compares its own certificates).
pub fn adoption(candidate: Candidate, certificate: &str, wanted: &NameRequest, now: Timestamp) -> Adoption {
    match check(candidate, certificate, wanted, now) {
        Ok(stored) => Adoption::Adoptable(Box::new(stored)),
        Err(reason) => Adoption::NotAdoptable(reason),
    }
}

fn check(
    candidate: Candidate,
    certificate: &str,
    wanted: &NameRequest,
    now: Timestamp,
) -> Result<StoredCertificate, NotAdoptable> {
    if candidate.written_for != certificate {
        return Err(NotAdoptable::OtherCertificate(candidate.written_for));
    }
    if candidate.type_.as_deref() != Some("kubernetes.io/tls") {
        return Err(NotAdoptable::WrongType(candidate.type_));
    }
    let stored = candidate.contents.map_err(|unusable| match unusable {
        Unusable::Unreadable(why) => NotAdoptable::Unreadable(why),
        Unusable::KeyMismatch => NotAdoptable::KeyMismatch,
    })?;
    if now < stored.info.not_before {
        return Err(NotAdoptable::NotYetValid(stored.info.not_before));
    }
    if now >= stored.info.not_after {
        return Err(NotAdoptable::Expired(stored.info.not_after));
    }
    if check_names(&stored.info, wanted).is_err() {
        let difference = name_difference(&stored.info, wanted);
        return Err(NotAdoptable::NamesDiffer { missing: difference.missing, extra: difference.extra });
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{PrivateKey, parse_chain};
    use jiff::SignedDuration;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    fn to_offset(t: Timestamp) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap()
    }

    /// A self-signed certificate for `names` (DNS names, or IPs when they parse as such), valid
    /// from `not_before` to `not_after`, as cert-manager's selfSigned issuer makes them.
    fn issued(names: &[&str], not_before: Timestamp, not_after: Timestamp) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        (params.self_signed(&key).unwrap().pem(), key)
    }

    /// What certpilot reads from a Secret holding `pem` and the key `key_pem`.
    fn read(pem: &str, key_pem: &str) -> Result<StoredCertificate, Unusable> {
        let info = parse_chain(pem.as_bytes()).map_err(|e| Unusable::Unreadable(format!("tls.crt: {e}")))?;
        let key = PrivateKey::from_pem(key_pem).map_err(|e| Unusable::Unreadable(format!("tls.key: {e}")))?;
        if key.public_key_info() != info.public_key_info {
            return Err(Unusable::KeyMismatch);
        }
        Ok(StoredCertificate { info, issuer: None, key: key.describe(), ari_id: None, outputs: Vec::new() })
    }

    fn candidate(names: &[&str], not_before: Timestamp, not_after: Timestamp) -> Candidate {
        let (pem, key) = issued(names, not_before, not_after);
        Candidate {
            type_: Some("kubernetes.io/tls".into()),
            written_for: "web".into(),
            contents: read(&pem, &key.serialize_pem()),
        }
    }

    fn valid() -> Candidate {
        candidate(&["web.example.com", "www.example.com"], now() - days(30), now() + days(60))
    }

    fn wanted() -> NameRequest {
        NameRequest { dns_names: vec!["www.example.com".into(), "Web.Example.com".into()], ..Default::default() }
    }

    fn reason(candidate: Candidate, wanted: &NameRequest) -> NotAdoptable {
        match adoption(candidate, "web", wanted, now()) {
            Adoption::NotAdoptable(reason) => reason,
            Adoption::Adoptable(stored) => panic!("adopted {stored:?}"),
        }
    }

    #[test]
    fn a_valid_secret_for_the_same_names_is_adopted() {
        let Adoption::Adoptable(stored) = adoption(valid(), "web", &wanted(), now()) else { panic!("not adopted") };
        assert_eq!(stored.info.dns_names.len(), 2);
        assert_eq!(stored.info.not_after, now() + days(60));
        assert_eq!(stored.issuer, None, "cert-manager's issuer is not certpilot's");
    }

    #[test]
    fn a_secret_for_another_certificate_is_not_adopted() {
        let mut other = valid();
        other.written_for = "api".into();
        let why = reason(other, &wanted());
        assert_eq!(why, NotAdoptable::OtherCertificate("api".into()));
        assert!(why.to_string().contains("Certificate api"), "{why}");
    }

    #[test]
    fn only_tls_secrets_are_adopted() {
        let mut opaque = valid();
        opaque.type_ = Some("Opaque".into());
        assert_eq!(reason(opaque, &wanted()), NotAdoptable::WrongType(Some("Opaque".into())));
        let mut untyped = valid();
        untyped.type_ = None;
        let why = reason(untyped, &wanted());
        assert_eq!(why.to_string(), "its type is Opaque, not kubernetes.io/tls");
    }

    #[test]
    fn unreadable_contents_are_not_adopted() {
        let mut broken = valid();
        broken.contents = read("not a certificate", "");
        let why = reason(broken, &wanted());
        assert!(matches!(&why, NotAdoptable::Unreadable(text) if text.starts_with("tls.crt")), "{why:?}");
        assert!(why.to_string().starts_with("tls.crt: "), "{why}");
    }

    #[test]
    fn a_key_that_does_not_match_is_not_adopted() {
        let (pem, _) = issued(&["web.example.com", "www.example.com"], now() - days(1), now() + days(1));
        let mut mismatched = valid();
        mismatched.contents = read(&pem, &KeyPair::generate().unwrap().serialize_pem());
        let why = reason(mismatched, &wanted());
        assert_eq!(why, NotAdoptable::KeyMismatch);
        assert_eq!(why.to_string(), "tls.key does not match tls.crt");
    }

    #[test]
    fn expired_or_future_certificates_are_not_adopted() {
        let names = ["web.example.com", "www.example.com"];
        let expired = candidate(&names, now() - days(90), now() - days(1));
        let why = reason(expired, &wanted());
        assert_eq!(why, NotAdoptable::Expired(now() - days(1)));
        assert_eq!(why.to_string(), "its certificate expired on 2026-05-31T00:00:00Z");
        // Expiring this very second counts as expired, as for certpilot's own certificates.
        assert!(matches!(reason(candidate(&names, now() - days(90), now()), &wanted()), NotAdoptable::Expired(_)));
        let future = candidate(&names, now() + days(1), now() + days(90));
        let why = reason(future, &wanted());
        assert_eq!(why, NotAdoptable::NotYetValid(now() + days(1)));
        assert!(why.to_string().contains("not valid before 2026-06-02T00:00:00Z"), "{why}");
    }

    #[test]
    fn names_must_match_exactly() {
        let fewer = candidate(&["web.example.com"], now() - days(1), now() + days(60));
        let why = reason(fewer, &wanted());
        assert_eq!(why, NotAdoptable::NamesDiffer { missing: vec!["www.example.com".into()], extra: vec![] });
        assert_eq!(why.to_string(), "names differ: missing www.example.com");
        let other = candidate(&["web.example.com", "old.example.com", "10.0.0.1"], now() - days(1), now() + days(60));
        let why = reason(other, &wanted());
        assert_eq!(
            why,
            NotAdoptable::NamesDiffer {
                missing: vec!["www.example.com".into()],
                extra: vec!["old.example.com".into(), "10.0.0.1".into()]
            }
        );
        assert_eq!(why.to_string(), "names differ: missing www.example.com; extra old.example.com, 10.0.0.1");
        let mut with_ip = wanted();
        with_ip.ip_addresses.push("10.0.0.2".parse().unwrap());
        let why = reason(valid(), &with_ip);
        assert_eq!(why.to_string(), "names differ: missing 10.0.0.2");
    }

    #[test]
    fn a_common_name_asked_for_must_be_there() {
        let mut with_cn = wanted();
        with_cn.common_name = Some("web.example.com".into());
        let why = reason(valid(), &with_cn);
        assert_eq!(
            why.to_string(),
            "names differ: missing common name web.example.com; extra common name rcgen self signed cert"
        );
    }

    #[test]
    fn the_first_problem_found_is_reported() {
        let mut everything_wrong = candidate(&["old.example.com"], now() - days(90), now() - days(1));
        everything_wrong.type_ = Some("Opaque".into());
        assert!(matches!(reason(everything_wrong.clone(), &wanted()), NotAdoptable::WrongType(_)));
        everything_wrong.type_ = Some("kubernetes.io/tls".into());
        assert!(matches!(reason(everything_wrong, &wanted()), NotAdoptable::Expired(_)));
    }
}
