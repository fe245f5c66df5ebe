//! The challenges of an order as a pass handles them: where each record goes, publishing it
//! (routes, DNS, nothing for DNS-PERSIST-01), noting the answers every replica's solver
//! servers give, and whether the CA can see a record yet.

use super::{Pass, Phase};
use crate::{
    api::{
        attempt::ValidationRecord,
        issuer::{AcmeIssuer, CnameStrategy, Rfc2136Solver},
    },
    issuance::{
        Failure, FailureCode as C,
        acme::{account::AcmeAccount, directory, order},
    },
    solver::{ChallengeKind, dns_persist01, dns01},
};
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

/// The challenges certpilot's own solver servers answer (from the attempt's status).
const SERVED_BY_CERTPILOT: [ChallengeKind; 2] = [ChallengeKind::Http01, ChallengeKind::TlsAlpn01];

/// How long to wait for a DNS-01 record to be served before asking the CA anyway.
const PROPAGATION_LIMIT: SignedDuration = SignedDuration::from_mins(2);

impl Pass<'_> {
    /// The challenge's record, with what an earlier pass noted of it (when it was published,
    /// where a CNAME led, what the DNS check found).
    pub(super) fn known_record(&self, challenge: &order::Challenge) -> ValidationRecord {
        let mut record = challenge.record.clone();
        if let Some(earlier) = self.status.challenges.iter().find(|r| r.dns_name == record.dns_name) {
            record.presented_at = earlier.presented_at.clone();
            record.delegated_to = earlier.delegated_to.clone();
            record.dns_check = earlier.dns_check.clone();
        }
        record
    }

    pub(super) fn upsert_record(&mut self, record: ValidationRecord) {
        match self.status.challenges.iter_mut().find(|r| r.dns_name == record.dns_name) {
            Some(existing) => *existing = record,
            None => self.status.challenges.push(record),
        }
    }

    /// Publishes a challenge's record where the CA will look (the host's route, DNS); once per
    /// attempt.
    pub(super) async fn present(&self, challenge: &order::Challenge, record: &ValidationRecord) -> Phase<()> {
        let name = &record.dns_name;
        match challenge.kind {
            ChallengeKind::Http01 => {
                let http = challenge.solver.http01.clone().unwrap_or_default();
                Ok(self.ctx.routes.ensure(name.trim_start_matches("*."), &http).await?)
            }
            ChallengeKind::TlsAlpn01 => Ok(()),
            // The domain's owner published the record; certpilot writes nothing, ever.
            ChallengeKind::DnsPersist01 => Ok(()),
            ChallengeKind::Dns01 => {
                let Some(written) = record.delegated_to.as_deref().or(record.record_name.as_deref()) else {
                    return Err(Failure::new(C::Internal, format!("no DNS-01 record name for {name}")).into());
                };
                let provider = self.dns_provider(challenge).await?;
                let value = record.record_value.clone().unwrap_or_default();
                Ok(dns01::present(&provider, written, &value).await?)
            }
        }
    }

    /// The DNS provider a DNS-01 challenge's solver names.
    async fn dns_provider(&self, challenge: &order::Challenge) -> Phase<dns01::Configured> {
        let Some(solver) = challenge.solver.dns01.as_ref() else {
            return Err(Failure::new(C::NoSolver, "the challenge's solver has no dns01").into());
        };
        let ambient = self.ctx.ambient_credentials_allowed(self.attempt.spec.issuer_ref.kind);
        Ok(dns01::configured(&self.issuer_secrets(), solver, ambient).await?)
    }

    /// Where the DNS-01 record for `challenge` goes (the end of a CNAME chain when the solver
    /// follows them), noted in the validation record before anything is published.
    pub(super) async fn delegate(
        &self,
        challenge: &order::Challenge,
        record: &mut ValidationRecord,
    ) -> Result<(), Failure> {
        let Some(solver) = challenge.solver.dns01.as_ref().filter(|d| d.cname_strategy == Some(CnameStrategy::Follow))
        else {
            return Ok(());
        };
        let servers = dns01::check_servers(&self.ctx.settings.dns_check_nameservers, solver);
        let target = dns01::write_name(solver, &servers, &record.dns_name).await?;
        let named = record.record_name.as_deref().map(|n| format!("{}.", n.trim_end_matches('.')));
        record.delegated_to = (named.as_deref() != Some(target.as_str())).then_some(target);
        Ok(())
    }

    /// The value each DNS-PERSIST-01 challenge's record must have (naming the account and the
    /// CA's first issuer domain name); returns the CA's issuer domain names (none when no
    /// challenge is DNS-PERSIST-01).
    pub(super) async fn persist_values(
        &self,
        issuer: &AcmeIssuer,
        account: &AcmeAccount,
        challenges: &mut [order::Challenge],
    ) -> Result<Vec<String>, Failure> {
        if !challenges.iter().any(|c| c.kind == ChallengeKind::DnsPersist01) {
            return Ok(Vec::new());
        }
        let issuers = self.issuer_domain_names(issuer).await?;
        for challenge in challenges.iter_mut().filter(|c| c.kind == ChallengeKind::DnsPersist01) {
            let solver = challenge.solver.dns_persist01.clone().unwrap_or_default();
            challenge.record.record_value =
                dns_persist01::value(&solver, &challenge.record.dns_name, account.uri(), &issuers);
        }
        Ok(issuers)
    }

    /// The CA's issuer domain names: from the issuer's status, else from the CA's directory.
    async fn issuer_domain_names(&self, issuer: &AcmeIssuer) -> Result<Vec<String>, Failure> {
        let cached = self.ctx.caches.issuer(&self.attempt.spec.issuer_ref, &self.namespace);
        let listed = cached.and_then(|(_, status)| status).map(|s| s.issuer_domain_names).unwrap_or_default();
        directory::issuer_domain_names(issuer, listed).await
    }

    /// Looks the DNS-PERSIST-01 record up and judges it as the CA would, before the CA is told:
    /// a record that would not do fails the attempt, saying what is wrong and what to publish
    /// (unless the solver may publish it itself through RFC 2136, which it then does, once).
    pub(super) async fn persist_check(
        &self,
        challenge: &order::Challenge,
        record: &mut ValidationRecord,
        issuers: &[String],
        account_uri: &str,
    ) -> Phase<()> {
        let solver = challenge.solver.dns_persist01.clone().unwrap_or_default();
        let servers = dns_persist01::check_servers(&solver, &self.ctx.settings.dns_check_nameservers);
        let name = record.record_name.clone().unwrap_or_default();
        let publish = record.record_value.clone().unwrap_or_default();
        let wildcard = record.dns_name.starts_with("*.");
        let expected = crate::policy::persist::Expected { issuer_domain_names: issuers, account_uri, wildcard };
        let duration = self.attempt.spec.duration.as_deref();
        let horizon = || dns_persist01::Horizon::for_certificate(Timestamp::now(), duration);
        let mut verdict = dns_persist01::precheck(&servers, &name, &expected, &publish, horizon()).await;
        let mut published = None;
        if let (dns_persist01::Verdict::Refused { .. }, Some(rfc2136)) = (&verdict, &solver.rfc2136) {
            self.publish_persist_record(rfc2136, &name, &publish).await?;
            published = Some(format!(
                "certpilot published {name} TXT \"{publish}\" (dnsPersist01.rfc2136); later issuances reuse it"
            ));
            verdict = dns_persist01::precheck(&servers, &name, &expected, &publish, horizon()).await;
        }
        match verdict {
            dns_persist01::Verdict::Authorised { warning } => {
                if let Some(warning) = &warning {
                    self.warn_persist_expiring(warning).await;
                }
                record.dns_check = warning.or(published);
                Ok(())
            }
            dns_persist01::Verdict::Unchecked(note) => {
                record.dns_check = Some(note);
                Ok(())
            }
            dns_persist01::Verdict::Refused { problem, failure } => {
                record.dns_check = Some(problem);
                Err(failure.into())
            }
        }
    }

    /// The record authorising the account lapses soon: the log and a Warning Event say so.
    async fn warn_persist_expiring(&self, warning: &str) {
        tracing::warn!(attempt = %self.attempt.name_any(), "{warning}");
        if let Some(certificate) = self.certificate_ref() {
            self.ctx.event(&certificate, true, "PersistRecordExpiring", "Validate", warning.to_string()).await;
        }
    }

    /// Publishes the DNS-PERSIST-01 record with the solver's RFC 2136 server.
    async fn publish_persist_record(&self, rfc2136: &Rfc2136Solver, name: &str, value: &str) -> Phase<()> {
        let provider = dns01::Configured::Rfc2136(dns01::rfc2136::Rfc2136::new(&self.issuer_secrets(), rfc2136).await?);
        tracing::info!(attempt = %self.attempt.name_any(), record = %name, "publishing the dns-persist-01 record");
        Ok(dns01::present(&provider, name, value).await?)
    }

    /// Notes what the solver servers answer (HTTP-01's and TLS-ALPN-01's key authorization)
    /// in the status: every replica answers from there, so it must be written before the CA
    /// is told to validate. The first time, every record is noted (write-ahead, see
    /// `presenting`); later, only answers an older certpilot kept in memory instead. Returns
    /// whether anything was noted.
    pub(super) fn note_answers(&mut self, challenges: &[order::Challenge]) -> bool {
        if self.status.challenges.is_empty() {
            self.status.challenges = challenges.iter().map(|c| c.record.clone()).collect();
            return !challenges.is_empty();
        }
        let mut noted = false;
        for challenge in challenges.iter().filter(|c| SERVED_BY_CERTPILOT.contains(&c.kind)) {
            let unanswered = self
                .status
                .challenges
                .iter_mut()
                .find(|r| r.dns_name == challenge.record.dns_name && r.record_value.is_none());
            if let Some(record) = unanswered {
                record.record_value = challenge.record.record_value.clone();
                noted = true;
            }
        }
        noted
    }

    /// Whether a record the solver servers answer lacks its answer (written by an older
    /// certpilot, which kept TLS-ALPN-01 answers in the leader's memory).
    pub(super) fn answers_missing(&self) -> bool {
        let served = SERVED_BY_CERTPILOT.map(ChallengeKind::name);
        self.status.challenges.iter().any(|r| served.contains(&r.type_.as_str()) && r.record_value.is_none())
    }

    /// Whether the CA can see the record yet: DNS-01 records are looked up (for a while; then
    /// the CA is asked anyway, and at once when no server can be asked or none answers); the
    /// others are served at once. What the look-up found goes into the validation record.
    pub(super) async fn visible(&self, challenge: &order::Challenge, record: &mut ValidationRecord) -> bool {
        let Some(solver) = challenge.solver.dns01.as_ref().filter(|_| challenge.kind == ChallengeKind::Dns01) else {
            return true;
        };
        let servers = dns01::check_servers(&self.ctx.settings.dns_check_nameservers, solver);
        let name = record.delegated_to.clone().or_else(|| record.record_name.clone()).unwrap_or_default();
        let found = dns01::served(solver, &servers, &name, record.record_value.as_deref().unwrap_or_default()).await;
        record.dns_check = found.describe(&name);
        let waited = record.presented_at.as_ref().map(|t| Timestamp::now().duration_since(t.0)).unwrap_or_default();
        match found {
            dns01::Served::Yes
            | dns01::Served::NoAnswer { .. }
            | dns01::Served::Unchecked
            | dns01::Served::ConfirmedByProvider { .. } => true,
            dns01::Served::NotYet { .. } if waited > PROPAGATION_LIMIT => {
                record.dns_check =
                    Some(format!("{name} was still not served after {PROPAGATION_LIMIT:#}; the CA is asked anyway"));
                true
            }
            dns01::Served::NotYet { .. } => false,
        }
    }
}
