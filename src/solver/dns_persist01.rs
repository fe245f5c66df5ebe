//! DNS-PERSIST-01: certpilot writes nothing (it holds no DNS credentials for this). It says
//! what the domain's owner must publish (the issuer's status), and before the CA is asked it
//! looks the record up and judges it as the CA would (`policy::persist`), so that a missing or
//! wrong record fails the attempt at once, naming the problem and the exact record to publish,
//! without a failed validation counted against the account at the CA.

use crate::{
    api::issuer::{AcmeSolver, DnsPersist01Solver, PersistRecord},
    issuance::{Failure, FailureCode as C},
    policy::persist::{self, Expected},
    solver::dns01::txt_values,
};
use jiff::{SignedDuration, Timestamp};

/// A certificate's lifetime when the Certificate asks for none (ACME CAs' usual 90 days).
const DEFAULT_LIFETIME: SignedDuration = SignedDuration::from_hours(90 * 24);
/// certpilot warns at least this long before a record's `persistUntil`.
const MIN_WARNING: SignedDuration = SignedDuration::from_hours(14 * 24);

/// When a look-up happens, and until when the record must go on authorising the account:
/// past the expiry of the certificate being issued, since its renewal (before then) is
/// validated against the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    pub now: Timestamp,
    pub needed_until: Timestamp,
}

impl Horizon {
    /// For a certificate of the requested `duration` (a Go duration), issued `now`.
    pub fn for_certificate(now: Timestamp, duration: Option<&str>) -> Self {
        let lifetime = duration.and_then(crate::policy::parse_duration).unwrap_or(DEFAULT_LIFETIME).max(MIN_WARNING);
        Self { now, needed_until: now + lifetime }
    }
}

/// The `persistUntil` the solver puts in the records it suggests.
fn persist_until(solver: &DnsPersist01Solver) -> Option<Timestamp> {
    solver.persist_until.as_ref().map(|t| t.0)
}

/// The value to publish for `name` (a wildcard needs `policy=wildcard`); `None` when the CA
/// names no issuer domain name.
pub fn value(solver: &DnsPersist01Solver, name: &str, account_uri: &str, issuers: &[String]) -> Option<String> {
    let expected = Expected { issuer_domain_names: issuers, account_uri, wildcard: name.starts_with("*.") };
    persist::value(&expected, persist_until(solver))
}

/// The records the issuer's status lists: one per name or zone of each dnsPersist01 solver's
/// selector, or one named `*` (publish it at `_validation-persist.<each name>`) without one.
pub fn records(solvers: &[AcmeSolver], account_uri: &str, issuers: &[String]) -> Vec<PersistRecord> {
    let mut records = Vec::new();
    for solver in solvers {
        let Some(persist) = &solver.dns_persist01 else { continue };
        let selector = solver.selector.as_ref();
        let mut names: Vec<&str> =
            selector.and_then(|s| s.dns_names.as_deref()).unwrap_or_default().iter().map(String::as_str).collect();
        names.extend(selector.and_then(|s| s.dns_zones.as_deref()).unwrap_or_default().iter().map(String::as_str));
        if names.is_empty() {
            names.push("*");
        }
        for name in names {
            let base = name.trim_start_matches("*.");
            let (Some(plain), Some(wildcard)) = (
                value(persist, base, account_uri, issuers),
                value(persist, &format!("*.{base}"), account_uri, issuers),
            ) else {
                continue;
            };
            let record_name =
                if name == "*" { format!("{}.<name>", persist::LABEL) } else { persist::record_name(name) };
            if !records.iter().any(|r: &PersistRecord| r.name == name && r.value == plain) {
                records.push(PersistRecord { name: name.into(), record_name, value: plain, wildcard_value: wildcard });
            }
        }
    }
    records
}

/// The servers asked for the record: the solver's own, else `--dns-check-nameservers`, else
/// the RFC 2136 server it may publish through.
pub fn check_servers(solver: &DnsPersist01Solver, overrides: &[String]) -> Vec<String> {
    if !solver.nameservers.is_empty() {
        return solver.nameservers.clone();
    }
    if !overrides.is_empty() {
        return overrides.to_vec();
    }
    solver.rfc2136.iter().map(|r| r.nameserver.clone()).collect()
}

/// What the look-up before asking the CA concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A published record authorises the request; a warning when it lapses soon.
    Authorised { warning: Option<String> },
    /// The record could not be looked up: the CA is asked anyway (the note says why).
    Unchecked(String),
    /// The published records would not satisfy the CA: what is wrong, and the failure.
    Refused { problem: String, failure: Failure },
}

/// Looks `record_name` up at `servers` and judges what is published against `expected`;
/// `publish` is the value to tell the owner to publish when it falls short.
pub async fn precheck(
    servers: &[String],
    record_name: &str,
    expected: &Expected<'_>,
    publish: &str,
    horizon: Horizon,
) -> Verdict {
    if servers.is_empty() {
        return Verdict::Unchecked(format!(
            "{record_name} was not looked up (no nameserver to ask: set the solver's nameservers or --dns-check-nameservers); the CA is asked at once"
        ));
    }
    let mut errors = Vec::new();
    for server in servers {
        match txt_values(server, record_name).await {
            Ok(values) => return judge(&values, record_name, expected, publish, horizon),
            Err(e) => errors.push(e),
        }
    }
    Verdict::Unchecked(format!(
        "no nameserver answered for {record_name} ({}); the CA is asked anyway",
        errors.join("; ")
    ))
}

/// The verdict on the `values` published at `record_name`.
pub fn judge(
    values: &[String],
    record_name: &str,
    expected: &Expected<'_>,
    publish: &str,
    horizon: Horizon,
) -> Verdict {
    let Horizon { now, needed_until } = horizon;
    match persist::check(values, expected, now) {
        Ok(()) => {
            let warning = persist::expiring(values, expected, now, needed_until.duration_since(now)).map(|at| {
                format!(
                    "{record_name}: the record authorising this account lapses at {at} (persistUntil), before the certificate being issued expires (about {needed_until}), so renewing it would fail; publish a new one before then, e.g. TXT \"{publish}\""
                )
            });
            Verdict::Authorised { warning }
        }
        Err(problem) => {
            let problem = format!("{record_name}: {problem}");
            let failure = Failure::new(C::DnsPersistRecord, format!("{problem}; publish TXT \"{publish}\""));
            Verdict::Refused { problem, failure }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::issuer::SolverSelector;

    const ACCOUNT: &str = "https://ca.example/acme/acct/42";

    fn issuers() -> Vec<String> {
        vec!["ca.example".into()]
    }

    #[test]
    fn the_status_lists_a_record_per_selector_entry_or_one_for_any_name() {
        let persist = DnsPersist01Solver::default();
        let any = AcmeSolver { dns_persist01: Some(persist.clone()), ..Default::default() };
        let selector = SolverSelector {
            dns_names: Some(vec!["*.shop.example".into()]),
            dns_zones: Some(vec!["example.org".into()]),
        };
        let chosen = AcmeSolver { selector: Some(selector), dns_persist01: Some(persist), ..Default::default() };
        let other = AcmeSolver { dns01: Some(Default::default()), ..Default::default() };
        let listed = records(&[other, any, chosen], ACCOUNT, &issuers());
        let names: Vec<(&str, &str)> = listed.iter().map(|r| (r.name.as_str(), r.record_name.as_str())).collect();
        assert_eq!(
            names,
            [
                ("*", "_validation-persist.<name>"),
                ("*.shop.example", "_validation-persist.shop.example"),
                ("example.org", "_validation-persist.example.org")
            ]
        );
        assert_eq!(listed[0].value, format!("ca.example; accounturi={ACCOUNT}"));
        assert_eq!(listed[0].wildcard_value, format!("ca.example; accounturi={ACCOUNT}; policy=wildcard"));
        assert!(records(&listed_solvers(), ACCOUNT, &[]).is_empty(), "no issuer domain name, nothing to publish");
    }

    fn listed_solvers() -> Vec<AcmeSolver> {
        vec![AcmeSolver { dns_persist01: Some(Default::default()), ..Default::default() }]
    }

    #[test]
    fn a_wrong_record_fails_with_the_record_to_publish() {
        let names = issuers();
        let expected = Expected { issuer_domain_names: &names, account_uri: ACCOUNT, wildcard: false };
        let publish = format!("ca.example; accounturi={ACCOUNT}");
        let record = "_validation-persist.example.com";
        let published = vec!["ca.example; accounturi=https://ca.example/acme/acct/7".to_string()];
        let Verdict::Refused { problem, failure } =
            judge(&published, record, &expected, &publish, Horizon::for_certificate(Timestamp::now(), None))
        else {
            panic!("a record naming another account passes")
        };
        assert_eq!(failure.code, C::DnsPersistRecord);
        assert_eq!(
            failure.message,
            format!(
                "{record}: the record names account https://ca.example/acme/acct/7, not certpilot's account; publish TXT \"{publish}\""
            )
        );
        assert!(failure.message.starts_with(&problem));
    }

    #[test]
    fn a_record_lapsing_before_the_certificate_expires_is_warned_of() {
        let names = issuers();
        let expected = Expected { issuer_domain_names: &names, account_uri: ACCOUNT, wildcard: false };
        let now = Timestamp::now();
        let days = |n: i64| SignedDuration::from_hours(24 * n);
        let until = |at: Timestamp| vec![format!("ca.example; accounturi={ACCOUNT}; persistUntil={}", at.as_second())];
        let warned = |published: &[String], duration: Option<&str>| match judge(
            published,
            "r",
            &expected,
            "v",
            Horizon::for_certificate(now, duration),
        ) {
            Verdict::Authorised { warning } => warning,
            other => panic!("{other:?}"),
        };
        // 60 days left: enough for a 30-day certificate, not for a 90-day one (the default).
        let in_60_days = until(now + days(60));
        assert_eq!(warned(&in_60_days, Some("720h")), None);
        let warning = warned(&in_60_days, None).expect("a 90-day certificate outlives the record");
        assert!(warning.contains("persistUntil") && warning.contains("renewing it would fail"), "{warning}");
        // Whatever the lifetime, two weeks' notice at least.
        assert!(warned(&until(now + days(10)), Some("24h")).is_some());
        let lasting = vec![format!("ca.example; accounturi={ACCOUNT}")];
        assert_eq!(warned(&lasting, None), None);
    }

    #[tokio::test]
    async fn without_a_server_nothing_is_looked_up_and_that_is_said() {
        let names = issuers();
        let expected = Expected { issuer_domain_names: &names, account_uri: ACCOUNT, wildcard: false };
        let Verdict::Unchecked(note) =
            precheck(&[], "r", &expected, "v", Horizon::for_certificate(Timestamp::now(), None)).await
        else {
            panic!()
        };
        assert!(note.contains("--dns-check-nameservers"), "{note}");
    }
}
