//! Values cert-manager accepts written the way certpilot's CRD rules accept them.

use super::report::DurationProblem;
use crate::{api::certificate::is_dns_name, policy::parse_duration};
use jiff::SignedDuration;

/// The longest duration certpilot's rules accept: five digits of hours.
const MAX_HOURS: i64 = 99_999;

/// A Go duration as cert-manager writes it (`2160h0m0s`, `1.5h`, `90m`), in the canonical
/// hours-minutes-seconds form certpilot's rules accept (`2160h`, `1h30m`).
pub fn duration(text: &str) -> Result<(SignedDuration, String), DurationProblem> {
    let parsed = parse_duration(text).filter(|d| !d.is_negative()).ok_or(DurationProblem::NotAGoDuration)?;
    if parsed.as_secs() / 3600 > MAX_HOURS {
        return Err(DurationProblem::TooLong);
    }
    Ok((parsed, canonical(parsed)))
}

fn canonical(d: SignedDuration) -> String {
    let secs = d.as_secs();
    let (hours, minutes, seconds, nanos) = (secs / 3600, secs % 3600 / 60, secs % 60, d.subsec_nanos());
    let mut out = String::new();
    if hours > 0 {
        out += &format!("{hours}h");
    }
    if minutes > 0 {
        out += &format!("{minutes}m");
    }
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out += &format!("{seconds}.{}s", fraction.trim_end_matches('0'));
    } else if seconds > 0 || out.is_empty() {
        out += &format!("{seconds}s");
    }
    out
}

/// A DNS name or zone as certpilot accepts it (lowercase, no trailing dot), and whether that
/// changed it; `None` when it is not a DNS name even so.
pub fn dns_name(name: &str) -> Option<(String, bool)> {
    let normal = name.trim_end_matches('.').to_ascii_lowercase();
    is_dns_name(&normal).then(|| {
        let changed = normal != name;
        (normal, changed)
    })
}

/// A TSIG algorithm name as cert-manager spells it (`HMACSHA256`, case-insensitive), as
/// certpilot spells it; `None` for the ones certpilot does not sign with.
pub fn tsig_algorithm(name: &str) -> Option<&'static str> {
    match name.to_ascii_uppercase().replace('-', "").as_str() {
        "HMACSHA256" => Some("hmac-sha256"),
        "HMACSHA384" => Some("hmac-sha384"),
        "HMACSHA512" => Some("hmac-sha512"),
        _ => None,
    }
}

/// Whether certpilot's email rule accepts an address.
pub fn is_email(text: &str) -> bool {
    let forbidden = |c: char| c == '@' || c == ':' || c == '/' || c.is_whitespace();
    let Some((local, domain)) = text.split_once('@') else { return false };
    let Some((host, tld)) = domain.rsplit_once('.') else { return false };
    [local, host, tld].iter().all(|part| !part.is_empty() && !part.contains(forbidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_manager_durations_become_canonical() {
        for (input, output) in [
            ("2160h0m0s", "2160h"),
            ("720h", "720h"),
            ("1h30m", "1h30m"),
            ("1.5h", "1h30m"),
            ("90m", "1h30m"),
            ("45s", "45s"),
            ("1m30.5s", "1m30.5s"),
            ("99999h", "99999h"),
        ] {
            assert_eq!(duration(input).map(|(_, text)| text), Ok(output.to_string()), "{input}");
        }
        assert_eq!(duration("90d"), Err(DurationProblem::NotAGoDuration));
        assert_eq!(duration("-1h"), Err(DurationProblem::NotAGoDuration));
        assert_eq!(duration("100000h"), Err(DurationProblem::TooLong));
    }

    #[test]
    fn names_are_lowercased_and_lose_the_trailing_dot() {
        assert_eq!(dns_name("example.com"), Some(("example.com".into(), false)));
        assert_eq!(dns_name("WWW.Example.com."), Some(("www.example.com".into(), true)));
        assert_eq!(dns_name("*.example.com"), Some(("*.example.com".into(), false)));
        assert_eq!(dns_name("under_score.example.com"), None);
        assert_eq!(dns_name("10.0.0.1"), None);
    }

    #[test]
    fn tsig_algorithms_certpilot_signs_with() {
        assert_eq!(tsig_algorithm("HMACSHA256"), Some("hmac-sha256"));
        assert_eq!(tsig_algorithm("hmacsha512"), Some("hmac-sha512"));
        assert_eq!(tsig_algorithm("hmac-sha384"), Some("hmac-sha384"));
        assert_eq!(tsig_algorithm("HMACMD5"), None);
        assert_eq!(tsig_algorithm("HMACSHA1"), None);
    }

    #[test]
    fn emails_as_certpilot_accepts_them() {
        assert!(is_email("ops@example.com"));
        for bad in ["mailto:ops@example.com", "ops", "ops@localhost", "a b@example.com", "@example.com"] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
