//! dns-persist-01 (draft-ietf-acme-dns-persist): one TXT record at
//! `_validation-persist.<domain>`, published once by the domain's owner, authorises one ACME
//! account of one CA for every later issuance. Its value is an RFC 8659 issue-value:
//! `issuer-domain-name; accounturi=<account URL>[; policy=wildcard][; persistUntil=<unix time>]`.
//!
//! What to publish, and whether what is published would satisfy the CA, decided here without
//! I/O, so that before asking the CA certpilot can say exactly what is missing or wrong.

use jiff::{SignedDuration, Timestamp};
use std::{collections::BTreeMap, fmt};

/// The label in front of the domain.
pub const LABEL: &str = "_validation-persist";

/// The record name for `name` (a wildcard is validated at its base domain).
pub fn record_name(name: &str) -> String {
    format!("{LABEL}.{}", name.trim_start_matches("*.").trim_end_matches('.'))
}

/// What the CA checks a record against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    /// The CA's issuer domain names (its `caaIdentities`); any one may be named.
    pub issuer_domain_names: &'a [String],
    /// The ACME account's URL.
    pub account_uri: &'a str,
    /// A wildcard name needs `policy=wildcard`.
    pub wildcard: bool,
}

/// The TXT value to publish for `expected` (naming the first issuer domain name), valid
/// until `persist_until` if given.
pub fn value(expected: &Expected, persist_until: Option<Timestamp>) -> Option<String> {
    let issuer = expected.issuer_domain_names.first()?;
    let mut value = format!("{issuer}; accounturi={}", expected.account_uri);
    if expected.wildcard {
        value.push_str("; policy=wildcard");
    }
    if let Some(until) = persist_until {
        value.push_str(&format!("; persistUntil={}", until.as_second()));
    }
    Some(value)
}

/// One published value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueValue {
    pub issuer_domain_name: String,
    /// Parameters by lowercased tag.
    pub parameters: BTreeMap<String, String>,
}

/// The parameters the draft defines. CAs refuse a record that gives one twice (Pebble and
/// Let's Encrypt's Boulder do), and ignore the others.
const DEFINED_TAGS: [&str; 3] = ["accounturi", "policy", "persistuntil"];

/// Parses an issue-value; `None` when it is not one, or when it repeats a defined parameter.
pub fn parse(text: &str) -> Option<IssueValue> {
    let mut parts = text.trim().trim_matches('"').split(';').map(str::trim);
    let issuer = parts.next().filter(|i| !i.is_empty() && !i.contains('='))?;
    let mut parameters = BTreeMap::new();
    for part in parts.filter(|p| !p.is_empty()) {
        let (tag, value) = part.split_once('=')?;
        let tag = tag.trim().to_ascii_lowercase();
        let repeated = parameters.insert(tag.clone(), value.trim().to_string()).is_some();
        if repeated && DEFINED_TAGS.contains(&tag.as_str()) {
            return None;
        }
    }
    Some(IssueValue { issuer_domain_name: normalized_issuer(issuer), parameters })
}

/// An issuer domain name as CAs compare it (draft-ietf-acme-dns-persist, "normalization"):
/// lowercase, without a trailing dot.
fn normalized_issuer(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Why the published records would not satisfy the CA, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Nothing is published at the name.
    Absent,
    /// Values are there, none an issue-value.
    Malformed { values: Vec<String> },
    /// Records name other CAs only.
    OtherIssuer { found: Vec<String> },
    /// A record for this CA names another account (or none).
    WrongAccount { found: Option<String> },
    /// A record for this account lacks `policy=wildcard`, needed for a wildcard name.
    WildcardPolicyMissing,
    /// A record for this account has passed its `persistUntil`.
    Expired { at: Timestamp },
    /// `persistUntil` is not a number of seconds.
    BadPersistUntil { value: String },
}

impl Problem {
    /// How far a record got: the problem of the record that came closest wins.
    fn rank(&self) -> u8 {
        match self {
            Self::Absent => 0,
            Self::Malformed { .. } => 1,
            Self::OtherIssuer { .. } => 2,
            Self::WrongAccount { .. } => 3,
            Self::BadPersistUntil { .. } => 4,
            Self::Expired { .. } => 5,
            Self::WildcardPolicyMissing => 6,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("no TXT record is published there"),
            Self::Malformed { values } => write!(
                f,
                "the TXT value(s) {values:?} are not of the form \"<issuer domain name>; accounturi=<account URL>\""
            ),
            Self::OtherIssuer { found } => {
                write!(f, "the record names {} and not this CA", found.join(", "))
            }
            Self::WrongAccount { found: Some(found) } => {
                write!(f, "the record names account {found}, not certpilot's account")
            }
            Self::WrongAccount { found: None } => f.write_str("the record names no accounturi"),
            Self::WildcardPolicyMissing => {
                f.write_str("the record lacks \"policy=wildcard\", which a wildcard name needs")
            }
            Self::Expired { at } => write!(f, "the record's persistUntil passed at {at}"),
            Self::BadPersistUntil { value } => {
                write!(f, "persistUntil={value:?} is not a time in seconds since 1970")
            }
        }
    }
}

/// Whether one of the published `values` authorises the request; else the problem of the
/// value that came closest.
pub fn check(values: &[String], expected: &Expected, now: Timestamp) -> Result<(), Problem> {
    let mut best = Problem::Absent;
    let mut malformed = Vec::new();
    for value in values {
        let verdict = match parse(value) {
            Some(parsed) => check_one(&parsed, expected, now),
            None => {
                malformed.push(value.clone());
                continue;
            }
        };
        match verdict {
            Ok(()) => return Ok(()),
            Err(problem) => best = closer(best, problem),
        }
    }
    if best == Problem::Absent && !malformed.is_empty() {
        return Err(Problem::Malformed { values: malformed });
    }
    Err(best)
}

fn closer(a: Problem, b: Problem) -> Problem {
    match (a, b) {
        (Problem::OtherIssuer { found: mut x }, Problem::OtherIssuer { found: y }) => {
            x.extend(y);
            Problem::OtherIssuer { found: x }
        }
        (a, b) if b.rank() > a.rank() => b,
        (a, _) => a,
    }
}

fn check_one(value: &IssueValue, expected: &Expected, now: Timestamp) -> Result<(), Problem> {
    let ours = expected.issuer_domain_names.iter().any(|n| normalized_issuer(n) == value.issuer_domain_name);
    if !ours {
        return Err(Problem::OtherIssuer { found: vec![value.issuer_domain_name.clone()] });
    }
    let account = value.parameters.get("accounturi");
    if account.map(String::as_str) != Some(expected.account_uri) {
        return Err(Problem::WrongAccount { found: account.cloned() });
    }
    if let Some(until) = value.parameters.get("persistuntil") {
        let at = persist_until(until)?;
        if at < now {
            return Err(Problem::Expired { at });
        }
    }
    let wildcard_policy = value.parameters.get("policy").is_some_and(|p| p.eq_ignore_ascii_case("wildcard"));
    if expected.wildcard && !wildcard_policy {
        return Err(Problem::WildcardPolicyMissing);
    }
    Ok(())
}

fn persist_until(text: &str) -> Result<Timestamp, Problem> {
    text.parse::<i64>()
        .ok()
        .and_then(|seconds| Timestamp::from_second(seconds).ok())
        .ok_or_else(|| Problem::BadPersistUntil { value: text.to_string() })
}

/// When the record that authorises the request stops doing so, if it has a `persistUntil`
/// within `warn_within` of `now` (and no other record authorises it for longer).
pub fn expiring(
    values: &[String],
    expected: &Expected,
    now: Timestamp,
    warn_within: SignedDuration,
) -> Option<Timestamp> {
    let lasting = |value: &IssueValue| -> Option<Option<Timestamp>> {
        check_one(value, expected, now).ok()?;
        Some(value.parameters.get("persistuntil").and_then(|u| persist_until(u).ok()))
    };
    let ends: Vec<Option<Timestamp>> = values.iter().filter_map(|v| parse(v)).filter_map(|v| lasting(&v)).collect();
    if ends.iter().any(Option::is_none) {
        return None;
    }
    let last = ends.into_iter().flatten().max()?;
    (last - warn_within <= now).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "https://ca.example/acme/acct/42";

    fn expected<'a>(issuers: &'a [String], wildcard: bool) -> Expected<'a> {
        Expected { issuer_domain_names: issuers, account_uri: ACCOUNT, wildcard }
    }

    fn issuers() -> Vec<String> {
        vec!["ca.example".into(), "other-name.example".into()]
    }

    fn now() -> Timestamp {
        "2026-11-29T12:00:00Z".parse().unwrap()
    }

    fn values(list: &[&str]) -> Vec<String> {
        list.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn the_record_to_publish_names_the_ca_the_account_and_what_was_asked() {
        let names = issuers();
        assert_eq!(record_name("*.shop.example.com"), "_validation-persist.shop.example.com");
        assert_eq!(value(&expected(&names, false), None).unwrap(), format!("ca.example; accounturi={ACCOUNT}"));
        let until = now() + SignedDuration::from_hours(24 * 365);
        assert_eq!(
            value(&expected(&names, true), Some(until)).unwrap(),
            format!("ca.example; accounturi={ACCOUNT}; policy=wildcard; persistUntil={}", until.as_second())
        );
        assert_eq!(value(&expected(&[], false), None), None, "a CA without caaIdentities names nothing to publish");
    }

    #[test]
    fn parsing_follows_the_issue_value_syntax() {
        let parsed = parse(&format!("\" CA.example ; AccountURI={ACCOUNT}; policy=Wildcard \"")).unwrap();
        assert_eq!(parsed.issuer_domain_name, "ca.example");
        assert_eq!(parsed.parameters["accounturi"], ACCOUNT);
        assert_eq!(parsed.parameters["policy"], "Wildcard");
        assert_eq!(parse(""), None);
        assert_eq!(parse("accounturi=x"), None, "the issuer comes first");
        assert_eq!(parse("ca.example; accounturi"), None, "a parameter without '='");
    }

    #[test]
    fn the_issuer_and_repeated_parameters_are_read_as_cas_read_them() {
        let names = issuers();
        let plain = expected(&names, false);
        // Pebble and Boulder lowercase the issuer domain name and drop a trailing dot.
        assert_eq!(check(&[format!("CA.Example.; accounturi={ACCOUNT}")], &plain, now()), Ok(()));
        // They refuse a record that repeats a defined parameter, even when one of them is right.
        let repeated = format!("ca.example; accounturi=https://ca.example/acme/acct/7; AccountURI={ACCOUNT}");
        assert_eq!(parse(&repeated), None);
        assert_eq!(
            check(std::slice::from_ref(&repeated), &plain, now()),
            Err(Problem::Malformed { values: vec![repeated] })
        );
        let twice = format!("ca.example; accounturi={ACCOUNT}; policy=wildcard; policy=wildcard");
        assert_eq!(parse(&twice), None);
        // Parameters the draft does not define are ignored, repeated or not.
        let unknown = format!("ca.example; accounturi={ACCOUNT}; note=a; note=b");
        assert_eq!(check(&[unknown], &plain, now()), Ok(()));
    }

    #[test]
    fn a_matching_record_authorises_whatever_else_is_published() {
        let names = issuers();
        let good = format!("other-name.example; accounturi={ACCOUNT}");
        let list = values(&["garbage", "letsencrypt.org; accounturi=https://le/acct/1", &good]);
        assert_eq!(check(&list, &expected(&names, false), now()), Ok(()));
    }

    #[test]
    fn each_problem_is_named_precisely() {
        let names = issuers();
        let plain = expected(&names, false);
        let cases: Vec<(Vec<String>, Expected, Problem)> = vec![
            (vec![], plain.clone(), Problem::Absent),
            (values(&["v=spf1 -all"]), plain.clone(), Problem::Malformed { values: values(&["v=spf1 -all"]) }),
            (
                values(&["letsencrypt.org; accounturi=x", "pki.goog; accounturi=y"]),
                plain.clone(),
                Problem::OtherIssuer { found: values(&["letsencrypt.org", "pki.goog"]) },
            ),
            (
                values(&["ca.example; accounturi=https://ca.example/acme/acct/7"]),
                plain.clone(),
                Problem::WrongAccount { found: Some("https://ca.example/acme/acct/7".into()) },
            ),
            (values(&["ca.example; policy=wildcard"]), plain.clone(), Problem::WrongAccount { found: None }),
            (vec![format!("ca.example; accounturi={ACCOUNT}")], expected(&names, true), Problem::WildcardPolicyMissing),
            (
                vec![format!("ca.example; accounturi={ACCOUNT}; persistUntil=1700000000")],
                plain.clone(),
                Problem::Expired { at: Timestamp::from_second(1_700_000_000).unwrap() },
            ),
            (
                vec![format!("ca.example; accounturi={ACCOUNT}; persistUntil=tomorrow")],
                plain.clone(),
                Problem::BadPersistUntil { value: "tomorrow".into() },
            ),
        ];
        for (published, expected, problem) in cases {
            assert_eq!(check(&published, &expected, now()), Err(problem.clone()), "{published:?}");
            assert!(!problem.to_string().is_empty());
        }
    }

    #[test]
    fn the_closest_record_explains_the_failure() {
        let names = issuers();
        let list = values(&["letsencrypt.org; accounturi=x", "ca.example; accounturi=https://ca.example/acme/acct/7"]);
        let found = check(&list, &expected(&names, false), now()).unwrap_err();
        assert!(matches!(found, Problem::WrongAccount { .. }), "ours, wrong account beats another CA: {found:?}");
        assert!(found.to_string().contains("acct/7"));
    }

    #[test]
    fn a_wildcard_policy_and_a_future_persist_until_pass() {
        let names = issuers();
        let later = (now() + SignedDuration::from_hours(1)).as_second();
        let list = vec![format!("ca.example; accounturi={ACCOUNT}; policy=wildcard; persistUntil={later}")];
        assert_eq!(check(&list, &expected(&names, true), now()), Ok(()));
        assert_eq!(check(&list, &expected(&names, false), now()), Ok(()), "policy=wildcard also covers the base name");
    }

    #[test]
    fn expiry_is_warned_of_only_when_nothing_lasts_longer() {
        let names = issuers();
        let plain = expected(&names, false);
        let week = SignedDuration::from_hours(24 * 7);
        let soon = now() + SignedDuration::from_hours(48);
        let far = now() + SignedDuration::from_hours(24 * 60);
        let with_until = |at: Timestamp| format!("ca.example; accounturi={ACCOUNT}; persistUntil={}", at.as_second());
        assert_eq!(
            expiring(&[with_until(soon)], &plain, now(), week),
            Some(Timestamp::from_second(soon.as_second()).unwrap())
        );
        assert_eq!(expiring(&[with_until(far)], &plain, now(), week), None);
        assert_eq!(expiring(&[with_until(soon), with_until(far)], &plain, now(), week), None);
        let forever = format!("ca.example; accounturi={ACCOUNT}");
        assert_eq!(expiring(&[with_until(soon), forever], &plain, now(), week), None);
        assert_eq!(expiring(&[], &plain, now(), week), None);
    }
}
