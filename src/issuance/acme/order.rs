//! Driving one ACME order, one step per call, so every step is recorded before the next side
//! effect: the order URL is saved before any challenge is answered, and a restarted operator
//! reloads the order by URL instead of placing another.

use super::{account::AcmeAccount, problem};
use crate::{
    api::{
        CertificateAttempt,
        attempt::{AttemptPhase, CertificateAttemptStatus, OrderStatus, ValidationRecord},
        issuer::AcmeIssuer,
    },
    controller::context::Context,
    error::Result,
    issuance::{Failure, Obtained, local::name_request, steps::StepLog},
    pki::{PrivateKey, cert::verify_issued},
    solver::{self, ChallengeKind, http01},
};
use instant_acme::{AuthorizationStatus, ChallengeStatus, Identifier, NewOrder, Order};
use jiff::Timestamp;
use std::time::Duration;

/// What the caller does next.
pub enum Next {
    /// Save the status, then call again after this long.
    Requeue(Duration),
    /// The attempt ended.
    Finished(Box<std::result::Result<Obtained, Failure>>),
}

fn failed(account: &AcmeAccount, error: &instant_acme::Error) -> Next {
    let mut failure = problem::failure(error);
    failure.retry_after = account.retry_after.take();
    // A rejected nonce is the CA asking for a retry with a fresh one, not a failure.
    if failure.code == "BadNonce" {
        return Next::Requeue(Duration::from_millis(500));
    }
    Next::fail(failure)
}

impl Next {
    pub fn fail(failure: Failure) -> Self {
        Self::Finished(Box::new(Err(failure)))
    }
    fn done(obtained: Obtained) -> Self {
        Self::Finished(Box::new(Ok(obtained)))
    }
}

/// One step of the order for `attempt`.
pub async fn advance(
    ctx: &Context,
    attempt: &CertificateAttempt,
    issuer: &AcmeIssuer,
    account: &AcmeAccount,
    key: &PrivateKey,
    status: &mut CertificateAttemptStatus,
    log: &mut StepLog,
) -> Result<Next> {
    let Some(order_url) = status.order.as_ref().map(|o| o.url.clone()) else {
        let next = place_order(ctx, attempt, issuer, account, status, log).await;
        if let Next::Finished(outcome) = &next
            && let Err(failure) = outcome.as_ref()
            && failure.code == "ReplacesNotReflected"
        {
            ctx.forget_replaces(&issuer_key(attempt));
        }
        return Ok(next);
    };
    let mut order = match account.account.order(order_url).await {
        Ok(order) => order,
        Err(e @ instant_acme::Error::Api(_)) => return Ok(failed(account, &e)),
        // The CA is unreachable for now: the order is still there, try again shortly.
        Err(e) => {
            tracing::warn!(attempt = %attempt.metadata.name.as_deref().unwrap_or_default(), error = %e, "ACME server unreachable");
            return Ok(Next::Requeue(Duration::from_secs(10)));
        }
    };
    record_order(status, &mut order);
    let state = order.state().status;
    use instant_acme::OrderStatus as S;
    Ok(match state {
        S::Pending => answer_challenges(ctx, attempt, issuer, account, &mut order, status, log).await?,
        S::Ready => finalize(attempt, account, key, &mut order, status, log).await,
        S::Processing => Next::Requeue(Duration::from_secs(1)),
        S::Valid => download(issuer, attempt, account, key, &mut order, log).await,
        S::Invalid => Next::fail(invalid_order(&mut order, status).await),
    })
}

fn identifiers(attempt: &CertificateAttempt) -> Vec<Identifier> {
    let spec = &attempt.spec;
    let mut ids: Vec<Identifier> = spec.dns_names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    ids.extend(spec.ip_addresses.iter().filter_map(|ip| ip.parse().ok()).map(Identifier::Ip));
    ids
}

/// Identifies an issuer across attempts (its kind, namespace and name).
pub fn issuer_key(attempt: &CertificateAttempt) -> String {
    let r = &attempt.spec.issuer_ref;
    let namespace = match r.kind {
        crate::api::IssuerKind::Issuer => attempt.metadata.namespace.as_deref().unwrap_or_default(),
        crate::api::IssuerKind::ClusterIssuer => "",
    };
    format!("{:?}/{namespace}/{}", r.kind, r.name)
}

async fn place_order(
    ctx: &Context,
    attempt: &CertificateAttempt,
    issuer: &AcmeIssuer,
    account: &AcmeAccount,
    status: &mut CertificateAttemptStatus,
    log: &mut StepLog,
) -> Next {
    if attempt.spec.is_ca {
        return Next::fail(Failure::new(
            "InvalidSpec",
            "ACME CAs do not issue CA certificates; remove isCA or use a selfSigned or ca issuer",
        ));
    }
    log.begin("PlaceOrder");
    let ids = identifiers(attempt);
    let profile = attempt.spec.profile.as_deref().or(issuer.profile.as_deref());
    let mut request = NewOrder::new(&ids);
    if let Some(profile) = profile {
        request = request.profile(profile);
    }
    let replaces = attempt.spec.replaces.as_deref().filter(|_| ctx.sends_replaces(&issuer_key(attempt)));
    if let Some((aki, serial)) = replaces.and_then(|r| r.split_once('.')) {
        request = request.replaces(instant_acme::CertificateIdentifier {
            authority_key_identifier: aki.into(),
            serial: serial.into(),
        });
    }
    match account.account.new_order(&request).await {
        Ok(mut order) => {
            record_order(status, &mut order);
            status.phase = AttemptPhase::Validating;
            log.succeed(format!("placed order {}", order.url()));
            Next::Requeue(Duration::ZERO)
        }
        Err(e) => {
            let next = failed(account, &e);
            if let Next::Finished(outcome) = &next
                && let Err(f) = outcome.as_ref()
            {
                log.fail(f.message.clone());
            }
            next
        }
    }
}

fn record_order(status: &mut CertificateAttemptStatus, order: &mut Order) {
    let url = order.url().to_string();
    let state = order.state();
    let profile = state.profile.clone();
    status.order =
        Some(OrderStatus { url, status: format!("{:?}", state.status).to_lowercase(), expires: None, profile });
}

fn validation_record(
    name: &str,
    kind: ChallengeKind,
    token: &str,
    key_authorization: &str,
    dns_value: &str,
    status: ChallengeStatus,
) -> ValidationRecord {
    let bare = name.trim_start_matches("*.");
    let (record_name, record_value, http_url) = match kind {
        ChallengeKind::Http01 => (
            None,
            Some(key_authorization.to_string()),
            Some(format!("http://{bare}/.well-known/acme-challenge/{token}")),
        ),
        ChallengeKind::Dns01 => (Some(format!("_acme-challenge.{bare}")), Some(dns_value.to_string()), None),
        ChallengeKind::TlsAlpn01 => (None, None, None),
    };
    ValidationRecord {
        dns_name: name.into(),
        type_: kind.name().into(),
        record_name,
        record_value,
        http_url,
        status: format!("{status:?}").to_lowercase(),
        error: None,
    }
}

/// Presents every pending challenge with its solver and tells the CA it is ready.
async fn answer_challenges(
    ctx: &Context,
    attempt: &CertificateAttempt,
    issuer: &AcmeIssuer,
    account: &AcmeAccount,
    order: &mut Order,
    status: &mut CertificateAttemptStatus,
    log: &mut StepLog,
) -> Result<Next> {
    if !log.steps.iter().any(|s| s.name == "Validate") {
        log.begin("Validate");
    }
    status.phase = AttemptPhase::Validating;
    let attempt_name = attempt.metadata.name.clone().unwrap_or_default();
    let mut records = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = match authz {
            Ok(a) => a,
            Err(e) => return Ok(failed(account, &e)),
        };
        let name = authz.identifier().to_string();
        let (chosen, kind) = match solver::select(&issuer.solvers, &name) {
            Ok(choice) => choice,
            Err(why) => return Ok(Next::fail(Failure::new("NoSolver", why))),
        };
        let authz_status = authz.status;
        let Some(mut challenge) = authz.challenge(kind.as_acme()) else {
            return Ok(Next::fail(Failure::new(
                "NoSolver",
                format!("the CA offers no {} challenge for {name}", kind.name()),
            )));
        };
        let key_authorization = challenge.key_authorization();
        let record = validation_record(
            &name,
            kind,
            &challenge.token,
            key_authorization.as_str(),
            &key_authorization.dns_value(),
            challenge.status,
        );
        records.push(record);
        if authz_status != AuthorizationStatus::Pending || challenge.status != ChallengeStatus::Pending {
            continue;
        }
        match kind {
            ChallengeKind::Http01 => {
                ctx.solvers.add_http01(&challenge.token, key_authorization.as_str());
                let http = chosen.http01.clone().unwrap_or_default();
                http01::route(ctx, &attempt_name, name.trim_start_matches("*."), &challenge.token, &http).await?;
            }
            ChallengeKind::TlsAlpn01 => {
                let certificate = match solver::tls_alpn01::certificate(&name, key_authorization.digest().as_ref()) {
                    Ok(c) => c,
                    Err(e) => return Ok(Next::fail(Failure::new("SolverFailed", e.to_string()))),
                };
                ctx.solvers.add_tls_alpn01(&name, certificate);
            }
            ChallengeKind::Dns01 => {
                let rfc2136 = chosen.dns01.as_ref().and_then(|d| d.rfc2136.clone());
                let Some(rfc2136) = rfc2136 else {
                    return Ok(Next::fail(Failure::new("NoSolver", "the dns01 solver names no provider (rfc2136)")));
                };
                if let Err(failure) =
                    solver::dns01::present(ctx, attempt, &rfc2136, &name, &key_authorization.dns_value()).await?
                {
                    return Ok(Next::fail(failure));
                }
            }
        }
        if let Err(e) = challenge.set_ready().await {
            return Ok(failed(account, &e));
        }
    }
    status.challenges = records;
    Ok(Next::Requeue(Duration::from_secs(1)))
}

async fn finalize(
    attempt: &CertificateAttempt,
    account: &AcmeAccount,
    key: &PrivateKey,
    order: &mut Order,
    status: &mut CertificateAttemptStatus,
    log: &mut StepLog,
) -> Next {
    if let Some(step) = log.steps.iter().find(|s| s.name == "Validate" && s.finished_at.is_none()) {
        let _ = step;
        log.succeed("every name was validated");
    }
    for record in &mut status.challenges {
        record.status = "valid".into();
    }
    status.phase = AttemptPhase::Finalizing;
    log.begin("Finalize");
    let names = match name_request(&attempt.spec) {
        Ok(n) => n,
        Err(f) => return Next::fail(f),
    };
    let csr = match csr(&names, key) {
        Ok(csr) => csr,
        Err(e) => return Next::fail(Failure::new("BadCSR", e)),
    };
    match order.finalize_csr(&csr).await {
        Ok(()) => {
            log.succeed("sent the CSR");
            Next::Requeue(Duration::from_secs(1))
        }
        Err(e) => failed(account, &e),
    }
}

/// A CSR for the requested names, signed with the attempt's key.
fn csr(names: &crate::pki::NameRequest, key: &PrivateKey) -> std::result::Result<Vec<u8>, String> {
    let mut params = rcgen::CertificateParams::new(names.dns_names.clone()).map_err(|e| e.to_string())?;
    params.subject_alt_names.extend(names.ip_addresses.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = &names.common_name {
        params.distinguished_name.push(rcgen::DnType::CommonName, cn.clone());
    }
    Ok(params.serialize_request(key.key_pair()).map_err(|e| e.to_string())?.der().to_vec())
}

/// The issuer of the last certificate of a chain (the root the chain leads to).
fn top_issuer(chain: &[u8]) -> Option<String> {
    let ders = crate::pki::cert::pem_certificates(chain).ok()?;
    crate::pki::cert::info(ders.last()?).ok().map(|i| i.issuer)
}

async fn download(
    issuer: &AcmeIssuer,
    attempt: &CertificateAttempt,
    account: &AcmeAccount,
    key: &PrivateKey,
    order: &mut Order,
    log: &mut StepLog,
) -> Next {
    log.begin("Download");
    let default_chain = match order.certificate().await {
        Ok(Some(chain)) => chain,
        Ok(None) => return Next::Requeue(Duration::from_secs(1)),
        Err(e) => return failed(account, &e),
    };
    let chain = match &issuer.preferred_chain {
        Some(preferred) if !leads_to(default_chain.as_bytes(), preferred) => {
            match alternate_chain(account, preferred).await {
                Some(chain) => {
                    log.succeed(format!("downloaded the alternate chain leading to {preferred:?} (preferredChain)"));
                    chain
                }
                None => {
                    log.succeed(format!(
                        "downloaded the default chain: the CA offers none leading to {preferred:?} (preferredChain)"
                    ));
                    default_chain
                }
            }
        }
        _ => {
            log.succeed("downloaded the certificate chain");
            default_chain
        }
    };
    log.begin("Verify");
    let names = match name_request(&attempt.spec) {
        Ok(n) => n,
        Err(f) => return Next::fail(f),
    };
    // The CA decides the common name; what must hold is the names, the key and the chain.
    let check = crate::pki::NameRequest { common_name: None, ..names };
    let info = match verify_issued(chain.as_bytes(), key, &check, Timestamp::now()) {
        Ok(info) => info,
        Err(e) => {
            let failure = Failure::new("VerificationFailed", format!("the CA's certificate was not written: {e}"));
            log.fail(failure.message.clone());
            return Next::fail(failure);
        }
    };
    log.succeed(format!("the certificate matches the key and names; valid until {}", info.not_after));
    let ca_pem = crate::pki::cert::pem_certificates(chain.as_bytes())
        .ok()
        .and_then(|ders| ders.last().cloned())
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der)))
        .unwrap_or_default();
    match key.clone_pem() {
        Ok(key) => Next::done(Obtained { chain_pem: chain, ca_pem, key, info }),
        Err(e) => Next::fail(Failure::new("Internal", e.to_string())),
    }
}

/// Whether a chain's topmost issuer is named `preferred` (a common name or part of the DN).
fn leads_to(chain: &[u8], preferred: &str) -> bool {
    top_issuer(chain).is_some_and(|top| top.contains(preferred))
}

/// The alternate chain (RFC 8555 §7.4.2, `Link: rel="alternate"`) leading to `preferred`, if the
/// CA offered one. instant-acme signs the POST-as-GET; the HTTP client keeps the PEM body,
/// which instant-acme itself would try to read as an order and reject.
async fn alternate_chain(account: &AcmeAccount, preferred: &str) -> Option<String> {
    for url in account.observer.alternates() {
        account.observer.capture(&url);
        let _ = account.account.order(url.clone()).await;
        let Some(body) = account.observer.captured() else { continue };
        if leads_to(&body, preferred) {
            return String::from_utf8(body.to_vec()).ok();
        }
    }
    None
}

/// Why the order became invalid: the failed challenges' errors, recorded per name.
async fn invalid_order(order: &mut Order, status: &mut CertificateAttemptStatus) -> Failure {
    let mut first: Option<Failure> =
        order.state().error.as_ref().map(|p| Failure::new(problem::code(p), problem::describe(p)));
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        for challenge in authz.challenges.iter().filter(|c| c.status == ChallengeStatus::Invalid) {
            let Some(error) = &challenge.error else { continue };
            let text = problem::describe(error);
            if let Some(record) = status.challenges.iter_mut().find(|r| r.dns_name == name) {
                record.status = "invalid".into();
                record.error = Some(text.clone());
            }
            if first.as_ref().is_none_or(|f| {
                f.code == "ACMEError" || f.code == "Unauthorized" && problem::code(error) != "Unauthorized"
            }) {
                first = Some(Failure::new(problem::code(error), format!("{name}: {text}")));
            }
        }
    }
    first.unwrap_or_else(|| Failure::new("OrderInvalid", "the CA marked the order invalid without saying why"))
}
