//! One ACME order, in the steps the attempt's phases take: place it, learn its challenges,
//! tell the CA they are ready, finalize, download and verify. Each function does one step and
//! returns; the attempt records what it needs to resume (the order URL first) before the next.

use super::{account::AcmeAccount, client::Captured, problem};
use crate::{
    api::{
        CertificateAttemptSpec,
        attempt::{CertificateAttemptStatus, OrderStatus, ValidationRecord},
        issuer::{AcmeIssuer, AcmeSolver},
    },
    issuance::{Failure, FailureCode as C, Obtained, local::name_request},
    pki::{PrivateKey, cert::verify_issued},
    solver::{self, ChallengeKind},
};
use instant_acme::{AuthorizationStatus, ChallengeStatus, Identifier, NewOrder, Order};
use jiff::Timestamp;

/// A failure from instant-acme, with the CA's Retry-After when it sent one.
pub fn failed(account: &AcmeAccount, error: &instant_acme::Error) -> Failure {
    let mut failure = problem::failure(error);
    failure.retry_after = account.retry_after.take();
    failure
}

fn identifiers(spec: &CertificateAttemptSpec) -> Vec<Identifier> {
    let mut ids: Vec<Identifier> = spec.dns_names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    ids.extend(spec.ip_addresses.iter().filter_map(|ip| ip.parse().ok()).map(Identifier::Ip));
    ids
}

/// Places the order: the one request after which the attempt must remember the order URL.
pub async fn place(
    account: &AcmeAccount,
    spec: &CertificateAttemptSpec,
    issuer: &AcmeIssuer,
    send_replaces: bool,
) -> Result<OrderStatus, Failure> {
    if spec.is_ca {
        return Err(Failure::new(
            C::InvalidSpec,
            "ACME CAs do not issue CA certificates; remove isCA or use a selfSigned or ca issuer",
        ));
    }
    let ids = identifiers(spec);
    let profile = spec.profile.as_deref().or(issuer.profile.as_deref());
    let mut request = NewOrder::new(&ids);
    if let Some(profile) = profile {
        request = request.profile(profile);
    }
    let replaces = spec.replaces.as_deref().filter(|_| send_replaces);
    if let Some((aki, serial)) = replaces.and_then(|r| r.split_once('.')) {
        request = request.replaces(instant_acme::CertificateIdentifier {
            authority_key_identifier: aki.into(),
            serial: serial.into(),
        });
    }
    let mut order = account.account.new_order(&request).await.map_err(|e| failed(account, &e))?;
    Ok(order_status(&mut order))
}

/// The order at `url`, as the CA sees it now.
pub async fn load(account: &AcmeAccount, url: &str) -> Result<Order, Failure> {
    account.account.order(url.to_string()).await.map_err(|e| failed(account, &e))
}

pub fn order_status(order: &mut Order) -> OrderStatus {
    let url = order.url().to_string();
    let state = order.state();
    let profile = state.profile.clone();
    OrderStatus { url, status: format!("{:?}", state.status).to_lowercase(), expires: None, profile }
}

/// One challenge the CA asks for, and how it is answered.
pub struct Challenge {
    pub record: ValidationRecord,
    pub kind: ChallengeKind,
    pub solver: AcmeSolver,
    pub token: String,
    pub key_authorization: String,
    /// SHA-256 of the key authorization (TLS-ALPN-01's acmeIdentifier).
    pub digest: Vec<u8>,
    /// The CA still waits for it to be answered.
    pub pending: bool,
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
        // Every replica's TLS-ALPN-01 server builds its certificate from it (it is not secret:
        // the token and the account key's thumbprint, both public to whoever sees the order).
        ChallengeKind::TlsAlpn01 => (None, Some(key_authorization.to_string()), None),
        // The value names the account and the CA: the attempt fills it in (see `persist_value`).
        ChallengeKind::DnsPersist01 => (Some(crate::policy::persist::record_name(bare)), None, None),
    };
    ValidationRecord {
        dns_name: name.into(),
        type_: kind.name().into(),
        record_name,
        record_value,
        http_url,
        status: format!("{status:?}").to_lowercase(),
        presented_at: None,
        error: None,
        ..Default::default()
    }
}

/// The challenge of each authorization that the issuer's solvers answer.
pub async fn challenges(
    account: &AcmeAccount,
    order: &mut Order,
    solvers: &[AcmeSolver],
) -> Result<Vec<Challenge>, Failure> {
    let mut found = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| failed(account, &e))?;
        let name = authz.identifier().to_string();
        let (chosen, kind) = solver::select(solvers, &name).map_err(|why| Failure::new(C::NoSolver, why))?;
        let authz_pending = authz.status == AuthorizationStatus::Pending;
        let challenge = authz.challenge(kind.as_acme()).ok_or_else(|| {
            Failure::new(C::NoSolver, format!("the CA offers no {} challenge for {name}", kind.name()))
        })?;
        let key_authorization = challenge.key_authorization();
        let record = validation_record(
            &name,
            kind,
            &challenge.token,
            key_authorization.as_str(),
            &key_authorization.dns_value(),
            challenge.status,
        );
        found.push(Challenge {
            record,
            kind,
            solver: chosen.clone(),
            token: challenge.token.clone(),
            key_authorization: key_authorization.as_str().to_string(),
            digest: key_authorization.digest().as_ref().to_vec(),
            pending: authz_pending && challenge.status == ChallengeStatus::Pending,
        });
    }
    Ok(found)
}

/// Tells the CA that the challenges named (identifier and type) can be checked now.
pub async fn tell_ready(
    account: &AcmeAccount,
    order: &mut Order,
    ready: &[(String, ChallengeKind)],
) -> Result<(), Failure> {
    let mut refused = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| failed(account, &e))?;
        let name = authz.identifier().to_string();
        let Some((_, kind)) = ready.iter().find(|(n, _)| *n == name) else { continue };
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let Some(mut challenge) = authz.challenge(kind.as_acme()) else { continue };
        if challenge.status == ChallengeStatus::Pending
            && let Err(error) = challenge.set_ready().await
        {
            refused.push((name, *kind, error));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    // A challenge this attempt told before (a pass that stopped before recording it) may have
    // moved on since the order's authorizations were read (instant-acme keeps them for the
    // order's life); some CAs then refuse the request (Pebble: "only status pending"). It is
    // under way, not a failure: only one the CA still shows pending, asked afresh, is.
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| failed(account, &e))?;
        let name = authz.identifier().to_string();
        let Some(at) = refused.iter().position(|(n, _, _)| *n == name) else { continue };
        let (_, kind, error) = refused.swap_remove(at);
        let now = authz.refresh().await.map_err(|e| failed(account, &e))?;
        let still_pending = now.status == AuthorizationStatus::Pending
            && now.challenges.iter().any(|c| c.r#type == kind.as_acme() && c.status == ChallengeStatus::Pending);
        if still_pending {
            return Err(failed(account, &error));
        }
    }
    Ok(())
}

/// The CA's view of each challenge (status and error), after it checked them.
pub async fn challenge_states(
    account: &AcmeAccount,
    order: &mut Order,
    records: &mut [ValidationRecord],
) -> Result<(), Failure> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let authz = authz.map_err(|e| failed(account, &e))?;
        let name = authz.identifier().to_string();
        for record in records.iter_mut().filter(|r| r.dns_name == name) {
            if let Some(challenge) = authz.challenges.iter().find(|c| kind_name(&c.r#type) == record.type_) {
                record.status = format!("{:?}", challenge.status).to_lowercase();
                record.error = challenge.error.as_ref().map(problem::describe);
            }
        }
    }
    Ok(())
}

fn kind_name(challenge: &instant_acme::ChallengeType) -> &'static str {
    match challenge {
        instant_acme::ChallengeType::Http01 => "http-01",
        instant_acme::ChallengeType::Dns01 => "dns-01",
        instant_acme::ChallengeType::TlsAlpn01 => "tls-alpn-01",
        instant_acme::ChallengeType::Unknown(other) if other == ChallengeKind::DnsPersist01.name() => {
            ChallengeKind::DnsPersist01.name()
        }
        _ => "other",
    }
}

/// Waits a little, asking the CA again, while the order is processing after the CSR: about
/// 4 s in all, at most.
pub async fn await_issued(account: &AcmeAccount, order: &mut Order) -> Result<(), Failure> {
    let mut delay = std::time::Duration::from_millis(250);
    while order.state().status == instant_acme::OrderStatus::Processing && delay <= std::time::Duration::from_secs(2) {
        tokio::time::sleep(delay).await;
        order.refresh().await.map_err(|e| failed(account, &e))?;
        delay *= 2;
    }
    Ok(())
}

/// Sends the CSR for the attempt's names, signed with its key.
pub async fn finalize(
    account: &AcmeAccount,
    order: &mut Order,
    spec: &CertificateAttemptSpec,
    key: &PrivateKey,
) -> Result<(), Failure> {
    let names = name_request(spec)?;
    let csr = csr(&names, key).map_err(|e| Failure::new(C::BadCsr, e))?;
    order.finalize_csr(&csr).await.map_err(|e| failed(account, &e))
}

/// What the download step tells the attempt's step log.
pub struct Downloaded {
    pub obtained: Obtained,
    pub chain_note: String,
}

/// Downloads the chain (the preferred one when the CA offers it) and verifies it against the
/// key and the names before anything is stored. `None` while the CA has not issued yet.
pub async fn download(
    account: &AcmeAccount,
    order: &mut Order,
    issuer: &AcmeIssuer,
    spec: &CertificateAttemptSpec,
    key: &PrivateKey,
) -> Result<Option<Downloaded>, Failure> {
    let Some(default_chain) = order.certificate().await.map_err(|e| failed(account, &e))? else { return Ok(None) };
    let (chain, chain_note) = match &issuer.preferred_chain {
        Some(preferred) if !leads_to(default_chain.as_bytes(), preferred) => {
            match alternate_chain(account, preferred).await {
                Some(chain) => {
                    (chain, format!("downloaded the alternate chain leading to {preferred:?} (preferredChain)"))
                }
                None => (
                    default_chain,
                    format!(
                        "downloaded the default chain: the CA offers none leading to {preferred:?} (preferredChain)"
                    ),
                ),
            }
        }
        _ => (default_chain, "downloaded the certificate chain".to_string()),
    };
    let names = name_request(spec)?;
    // The CA decides the common name; what must hold is the names, the key and the chain.
    let check = crate::pki::NameRequest { common_name: None, ..names };
    let info = verify_issued(chain.as_bytes(), key, &check, Timestamp::now())
        .map_err(|e| Failure::new(C::VerificationFailed, format!("the CA's certificate was not written: {e}")))?;
    let ca_pem = crate::pki::cert::pem_certificates(chain.as_bytes())
        .ok()
        .and_then(|ders| ders.last().cloned())
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der)))
        .unwrap_or_default();
    let key = key.clone_pem().map_err(|e| Failure::new(C::Internal, e.to_string()))?;
    Ok(Some(Downloaded { obtained: Obtained { chain_pem: chain, ca_pem, key, info }, chain_note }))
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

/// Whether a chain's topmost issuer is named `preferred` (a common name or part of the DN).
fn leads_to(chain: &[u8], preferred: &str) -> bool {
    top_issuer(chain).is_some_and(|top| top.contains(preferred))
}

/// The alternate chain (RFC 8555 §7.4.2, `Link: rel="alternate"`) leading to `preferred`, if the
/// CA offered one. instant-acme signs the POST-as-GET; the HTTP client keeps the PEM body,
/// which instant-acme itself would try to read as an order and reject.
async fn alternate_chain(account: &AcmeAccount, preferred: &str) -> Option<String> {
    for url in account.observer.alternates() {
        let Some(chain) = post_as_get(account, &url).await else { continue };
        if leads_to(&chain.body, preferred) {
            return String::from_utf8(chain.body.to_vec()).ok();
        }
    }
    None
}

/// The response to a POST-as-GET of `url` (RFC 8555 §6.3), whatever it holds. instant-acme
/// signs the request; the HTTP client keeps the body, which instant-acme itself reads as an order.
async fn post_as_get(account: &AcmeAccount, url: &str) -> Option<Captured> {
    // Attempts share the account: one raw request at a time, so each gets its own body.
    let _one_at_a_time = account.raw_requests.lock().await;
    account.observer.capture(url);
    let _ = account.account.order(url.to_string()).await;
    account.observer.captured(url)
}

/// At most this many pages of an account's orders are read when looking for a lost order.
const ORDER_LIST_PAGES: usize = 50;

/// The URLs in the account's list of orders (RFC 8555 §7.1.2.1), oldest first, following
/// `Link: rel="next"` pages. Empty when the CA keeps no such list (Let's Encrypt).
async fn listed_orders(account: &AcmeAccount) -> Vec<String> {
    let Some(object) = post_as_get(account, account.uri()).await else { return Vec::new() };
    let orders_url = serde_json::from_slice::<serde_json::Value>(&object.body)
        .ok()
        .and_then(|account| account.get("orders")?.as_str().map(str::to_string));
    let mut urls = Vec::new();
    let mut page = orders_url;
    for _ in 0..ORDER_LIST_PAGES {
        let Some(url) = page.take() else { break };
        let Some(listed) = post_as_get(account, &url).await else { break };
        let Ok(list) = serde_json::from_slice::<serde_json::Value>(&listed.body) else { break };
        let entries = list.get("orders").and_then(|o| o.as_array()).into_iter().flatten();
        urls.extend(entries.filter_map(|u| u.as_str().map(str::to_string)));
        page = listed.next;
    }
    urls
}

/// The order this account placed for exactly these identifiers and has not finished with,
/// found in the account's list of orders: an order placed by a pass that stopped before it
/// could record the URL. Orders other attempts recorded as theirs (`taken`) are passed over:
/// two Certificates may name the same hosts.
pub async fn find_placed(
    account: &AcmeAccount,
    spec: &CertificateAttemptSpec,
    taken: impl Fn(&str) -> bool,
) -> Option<OrderStatus> {
    let mut wanted: Vec<&str> = spec.dns_names.iter().chain(&spec.ip_addresses).map(String::as_str).collect();
    wanted.sort_unstable();
    for url in listed_orders(account).await.into_iter().rev().filter(|url| !taken(url)) {
        let Some(listed) = post_as_get(account, &url).await else { continue };
        let Ok(object) = serde_json::from_slice::<ListedOrder>(&listed.body) else { continue };
        if object.is_open() && object.names() == wanted {
            let mut order = account.account.order(url).await.ok()?;
            return Some(order_status(&mut order));
        }
    }
    None
}

/// What `find_placed` reads of an order object (RFC 8555 §7.1.3).
#[derive(serde::Deserialize)]
struct ListedOrder {
    status: String,
    identifiers: Vec<ListedIdentifier>,
}

#[derive(serde::Deserialize)]
struct ListedIdentifier {
    value: String,
}

impl ListedOrder {
    fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "ready" | "processing")
    }
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.identifiers.iter().map(|i| i.value.as_str()).collect();
        names.sort_unstable();
        names
    }
}

/// Why the order became invalid: the failed challenges' errors, recorded per name.
pub async fn invalid_order(order: &mut Order, status: &mut CertificateAttemptStatus) -> Failure {
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
                f.code == C::AcmeError || f.code == C::Unauthorized && problem::code(error) != C::Unauthorized
            }) {
                first = Some(Failure::new(problem::code(error), format!("{name}: {text}")));
            }
        }
    }
    first.unwrap_or_else(|| Failure::new(C::OrderInvalid, "the CA marked the order invalid without saying why"))
}
