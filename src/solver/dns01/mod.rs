//! DNS-01: publishing `_acme-challenge` TXT records through a DNS provider, following a CNAME
//! delegation when asked, and checking that the record is served before the CA is told.
//!
//! # Adding a provider
//! A provider is one file: a type that implements [`Provider`] (add a TXT value, remove it),
//! a variant of [`Configured`] built from its part of the Issuer's `dns01` spec in
//! [`configured`], its fields in `api::issuer::Dns01Solver`, and the DNS server its spec
//! names (if any) in [`check_servers`]. Everything else (which name to write, checking,
//! cleanup, status) is shared.

pub mod powerdns;
pub mod rfc2136;
pub mod route53;
pub mod webhook;
pub mod wire;

use crate::{
    api::issuer::{CnameStrategy, Dns01Solver},
    issuance::{Failure, FailureCode as C, Outcome},
};
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::future::Future;

pub use wire::txt_values;

/// A DNS service certpilot may write challenge records to.
pub trait Provider {
    /// Adds `value` to the TXT values at `fqdn`; values already there stay (a wildcard and
    /// its base name share one record name).
    fn add_txt(&self, fqdn: &Name, value: &str) -> impl Future<Output = std::result::Result<(), Failure>> + Send;
    /// Removes `value` from the TXT values at `fqdn`; other values stay.
    fn remove_txt(&self, fqdn: &Name, value: &str) -> impl Future<Output = std::result::Result<(), Failure>> + Send;
}

/// The provider an Issuer's `dns01` solver names, ready to use.
pub enum Configured {
    Rfc2136(rfc2136::Rfc2136),
    PowerDns(Box<powerdns::PowerDns>),
    Webhook(Box<webhook::Webhook>),
    Route53(Box<route53::Route53>),
}

impl Provider for Configured {
    async fn add_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        match self {
            Self::Rfc2136(p) => p.add_txt(fqdn, value).await,
            Self::PowerDns(p) => p.add_txt(fqdn, value).await,
            Self::Webhook(p) => p.add_txt(fqdn, value).await,
            Self::Route53(p) => p.add_txt(fqdn, value).await,
        }
    }

    async fn remove_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        match self {
            Self::Rfc2136(p) => p.remove_txt(fqdn, value).await,
            Self::PowerDns(p) => p.remove_txt(fqdn, value).await,
            Self::Webhook(p) => p.remove_txt(fqdn, value).await,
            Self::Route53(p) => p.remove_txt(fqdn, value).await,
        }
    }
}

/// The provider `solver` names, its credentials read from `secrets` (or, where it names none and
/// `ambient_allowed`, certpilot's own: see [`route53`]).
pub async fn configured(secrets: &Api<Secret>, solver: &Dns01Solver, ambient_allowed: bool) -> Outcome<Configured> {
    if let Some(spec) = &solver.rfc2136 {
        return Ok(Configured::Rfc2136(rfc2136::Rfc2136::new(secrets, spec).await?));
    }
    if let Some(spec) = &solver.powerdns {
        return Ok(Configured::PowerDns(Box::new(powerdns::PowerDns::new(secrets, spec).await?)));
    }
    if let Some(spec) = &solver.webhook {
        return Ok(Configured::Webhook(Box::new(webhook::Webhook::new(secrets, spec).await?)));
    }
    if let Some(spec) = &solver.route53 {
        return Ok(Configured::Route53(Box::new(route53::Route53::new(secrets, spec, ambient_allowed).await?)));
    }
    Err(Failure::new(C::NoSolver, "the dns01 solver names no provider: set rfc2136, powerdns, webhook or route53")
        .into())
}

/// The record name a CA checks for `name`.
pub fn record_name(name: &str) -> String {
    format!("_acme-challenge.{}.", name.trim_start_matches("*.").trim_end_matches('.'))
}

fn fqdn(text: &str) -> std::result::Result<Name, Failure> {
    let mut name: Name = text.parse().map_err(|e| Failure::new(C::Dns, format!("{text}: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

/// The servers checks ask: `--dns-check-nameservers` when given, else the DNS server the
/// solver's provider names (none for a PowerDNS or webhook without `nameserver`, nor for
/// Route 53, whose INSYNC answers the question). Read from the spec, so that a check needs no
/// credentials (and no read of their Secret).
pub fn check_servers(overrides: &[String], solver: &Dns01Solver) -> Vec<String> {
    if !overrides.is_empty() {
        return overrides.to_vec();
    }
    let rfc2136 = solver.rfc2136.as_ref().map(|r| r.nameserver.clone());
    let powerdns = solver.powerdns.as_ref().and_then(|p| p.nameserver.clone());
    let webhook = solver.webhook.as_ref().and_then(|w| w.nameserver.clone());
    rfc2136.into_iter().chain(powerdns).chain(webhook).collect()
}

/// Where certpilot writes the record for `name`: `_acme-challenge.<name>`, or with
/// `cnameStrategy: Follow` the end of its CNAME chain as the first of `servers` that answers
/// sees it.
pub async fn write_name(solver: &Dns01Solver, servers: &[String], name: &str) -> std::result::Result<String, Failure> {
    let start = fqdn(&record_name(name))?;
    if solver.cname_strategy != Some(CnameStrategy::Follow) {
        return Ok(start.to_string());
    }
    let mut errors = Vec::new();
    for server in servers {
        match wire::cname_target(server, &start).await {
            Ok(target) => return Ok(target.to_string()),
            Err(e) => errors.push(e),
        }
    }
    let why = if servers.is_empty() {
        "no nameserver to ask: set --dns-check-nameservers (or the provider's nameserver)".to_string()
    } else {
        errors.join("; ")
    };
    Err(Failure::new(C::Dns, format!("could not follow the CNAME of {start} (cnameStrategy: Follow): {why}")))
}

/// Publishes TXT `value` at `record` (a name from [`write_name`]).
pub async fn present(provider: &Configured, record: &str, value: &str) -> std::result::Result<(), Failure> {
    provider.add_txt(&fqdn(record)?, value).await
}

/// Removes TXT `value` from `record` again.
pub async fn cleanup(provider: &Configured, record: &str, value: &str) -> std::result::Result<(), Failure> {
    provider.remove_txt(&fqdn(record)?, value).await
}

/// What asking the check servers for a record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// A server answers with the value.
    Yes,
    /// Servers answered, without the value (yet).
    NotYet { asked: Vec<String> },
    /// No server answered at all: the check cannot tell.
    NoAnswer { errors: Vec<String> },
    /// There is no server to ask.
    Unchecked,
    /// Not looked up: the provider waited until it had published the record on all its
    /// nameservers (Route 53's INSYNC).
    ConfirmedByProvider { provider: &'static str },
}

impl Served {
    /// What the attempt's validation record says while the record is not known to be served.
    pub fn describe(&self, record: &str) -> Option<String> {
        match self {
            Self::Yes => None,
            Self::NotYet { asked } => {
                Some(format!("{record} is not served with the value yet by {}", asked.join(", ")))
            }
            Self::NoAnswer { errors } => {
                Some(format!("no nameserver answered for {record} ({}); the CA is asked anyway", errors.join("; ")))
            }
            Self::Unchecked => Some(format!(
                "{record} was not looked up (no nameserver to ask: set the provider's nameserver or --dns-check-nameservers); the CA is asked at once"
            )),
            Self::ConfirmedByProvider { provider } => Some(format!(
                "{record} was not looked up: {provider} reported the change on all its nameservers (INSYNC), so the CA is asked now (--dns-check-nameservers would look it up first)"
            )),
        }
    }
}

/// Whether any of `servers` answers `record` with `value`; with no server to ask, what
/// `solver`'s provider confirmed itself.
pub async fn served(solver: &Dns01Solver, servers: &[String], record: &str, value: &str) -> Served {
    if servers.is_empty() && solver.route53.is_some() {
        return Served::ConfirmedByProvider { provider: "Route 53" };
    }
    if servers.is_empty() {
        return Served::Unchecked;
    }
    let mut asked = Vec::new();
    let mut errors = Vec::new();
    for server in servers {
        match txt_values(server, record).await {
            Ok(values) if values.iter().any(|v| v == value) => return Served::Yes,
            Ok(_) => asked.push(server.clone()),
            Err(e) => errors.push(e),
        }
    }
    if asked.is_empty() { Served::NoAnswer { errors } } else { Served::NotYet { asked } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_record_names() {
        assert_eq!(record_name("*.example.com"), "_acme-challenge.example.com.");
        assert_eq!(record_name("www.example.com."), "_acme-challenge.www.example.com.");
    }

    #[tokio::test]
    async fn without_a_server_to_ask_nothing_is_looked_up_and_the_status_says_so() {
        let record = "_acme-challenge.example.com.";
        assert_eq!(served(&Dns01Solver::default(), &[], record, "v").await, Served::Unchecked);
        assert!(Served::Unchecked.describe(record).unwrap().contains("--dns-check-nameservers"));
        assert_eq!(Served::Yes.describe(record), None);
        let solver = Dns01Solver { cname_strategy: Some(CnameStrategy::Follow), ..Default::default() };
        let failure = write_name(&solver, &[], "www.example.com").await.unwrap_err();
        assert!(failure.message.contains("no nameserver to ask"), "{}", failure.message);
        let plain = Dns01Solver::default();
        assert_eq!(write_name(&plain, &[], "*.example.com").await.unwrap(), record);
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_reported_not_waited_for() {
        // A port nothing listens on: connection refused at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let found =
            served(&Dns01Solver::default(), std::slice::from_ref(&closed), "_acme-challenge.example.com.", "v").await;
        let Served::NoAnswer { errors } = &found else { panic!("{found:?}") };
        assert!(errors[0].contains(&closed), "{errors:?}");
        assert!(found.describe("x").unwrap().contains("the CA is asked anyway"));
    }

    #[tokio::test]
    async fn route53_is_not_looked_up_its_insync_says_the_record_is_out() {
        let route53 = Dns01Solver { route53: Some(Default::default()), ..Default::default() };
        let record = "_acme-challenge.example.com.";
        let found = served(&route53, &[], record, "v").await;
        assert_eq!(found, Served::ConfirmedByProvider { provider: "Route 53" });
        assert!(found.describe(record).unwrap().contains("INSYNC"));
        assert!(check_servers(&[], &route53).is_empty());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let overridden = check_servers(std::slice::from_ref(&closed), &route53);
        assert!(matches!(served(&route53, &overridden, record, "v").await, Served::NoAnswer { .. }));
    }
}
