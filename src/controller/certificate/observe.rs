//! Dereference: what the Certificate asks for, and what the caches (and, where they may be
//! behind, the API server) say of its attempts, its Secret and its issuers' renewal windows.

use crate::{
    api::{
        Certificate, CertificateAttempt, IssuerRef, RENEW_ANNOTATION, REVOKE_ANNOTATION,
        attempt::{AttemptPhase, AttemptType},
        certificate::RenewalInfoStatus,
        issuer::AcmeIssuer,
    },
    controller::{
        cache::{AttemptRecord, Verified, WatchedSecret},
        context::Context,
        issuer::issuer_state,
    },
    error::Result,
    issuance::acme::account::AccountSource,
    pki::{NameRequest, keys::describe_spec},
    policy::{
        parse_duration,
        renewal::{RenewalSettings, SuggestedWindow},
        trigger::{AttemptView, Desired, IssuerState, Observed, SecretState},
        trust::{attempt_index, attempt_name, trusts},
    },
    secret::{classify_adopting, label_value},
};
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{Api, ResourceExt};
use std::{sync::Arc, time::Duration};

/// What the Certificate asks for, or why it cannot be understood (for what CEL cannot check).
pub(super) fn desired(cert: &Certificate) -> std::result::Result<Desired, String> {
    let spec = &cert.spec;
    let ip_addresses = spec
        .covered_ip_addresses()
        .iter()
        .map(|ip| ip.parse().map_err(|_| format!("spec.ipAddresses: {ip:?} is not an IP address")))
        .collect::<std::result::Result<_, _>>()?;
    let renew_before = match &spec.renew_before {
        Some(text) => Some(
            parse_duration(text).ok_or_else(|| format!("spec.renewBefore: {text:?} is not a duration such as 720h"))?,
        ),
        None => None,
    };
    if let Some(text) = &spec.duration {
        parse_duration(text).ok_or_else(|| format!("spec.duration: {text:?} is not a duration such as 2160h"))?;
    }
    let key_spec = spec.private_key();
    Ok(Desired {
        secret_name: spec.secret_name.clone(),
        names: NameRequest { dns_names: spec.covered_dns_names(), ip_addresses, common_name: spec.common_name.clone() },
        issuer: spec.issuer_ref.clone(),
        key: describe_spec(&key_spec),
        renewal: RenewalSettings { renew_before, renew_before_percentage: spec.renew_before_percentage },
        is_ca: spec.is_ca(),
        generation: cert.metadata.generation.unwrap_or(1),
        renew_request: cert.annotations().get(RENEW_ANNOTATION).cloned(),
        revoke_request: cert.annotations().get(REVOKE_ANNOTATION).cloned(),
        outputs: spec.additional_output_formats.iter().flatten().map(|f| f.type_).collect(),
    })
}

/// The attempt's summary, for `cert` (`None` when its name is not one of `cert`'s).
fn view(cert: &Certificate, attempt: &AttemptRecord) -> Option<AttemptView> {
    let index = attempt_index(&cert.name_any(), attempt.name())?;
    Some(AttemptView { index, matches_spec: trusts(&attempt.claim, cert), ..attempt.view.clone() })
}

/// How many attempts below the recorded index are looked up at most (pruning keeps a handful,
/// but the latest success may lie far below a run of failures).
const HISTORY_LOOKUPS: u32 = 10_000;

/// This Certificate's attempts in the cache, oldest first, and the highest index any attempt
/// of its name holds (a deleted Certificate's leftovers included: their names are taken).
/// Attempts are named `<certificate>-<index>`, so they are looked up by name around the index
/// recorded in status instead of scanning every attempt.
fn cached_attempts(ctx: &Context, cert: &Certificate, namespace: &str) -> (Vec<Arc<AttemptRecord>>, u32) {
    let name = cert.name_any();
    let uid = cert.uid().unwrap_or_default();
    let lookup = |index: u32| ctx.caches.attempts.get(namespace, &attempt_name(&name, index));
    let recorded = cert.status.as_ref().and_then(|s| s.attempt_index).unwrap_or(0);
    let mut found: Vec<Arc<AttemptRecord>> = Vec::new();
    // Newer than recorded: the cache may be ahead of the status.
    let mut index = recorded + 1;
    while let Some(attempt) = lookup(index) {
        found.push(attempt);
        index += 1;
    }
    found.extend((recorded.saturating_sub(HISTORY_LOOKUPS).max(1)..=recorded).filter_map(lookup));
    if recorded == 0 && cert.status.as_ref().is_some_and(|s| s.last_attempt.is_some()) {
        // Made before attempt indexes were recorded: look through every attempt.
        found = ctx.caches.attempts.matching(namespace, |attempt| attempt_index(&name, attempt).is_some());
    }
    let taken = found.iter().filter_map(|a| attempt_index(&name, a.name())).max().unwrap_or(0);
    found.retain(|a| a.owners.contains(&uid));
    found.sort_by_key(|a| attempt_index(&name, a.name()));
    (found, taken)
}

pub(super) struct Observation {
    pub(super) observed: Observed,
    pub(super) attempts: Vec<Arc<AttemptRecord>>,
    pub(super) renewal_info: Option<RenewalInfoStatus>,
    /// The next attempt may publish DNS-01 records (its issuer is an ACME one with a dns01
    /// solver for one of the names, or unknown: then it is taken to), which certpilot's
    /// finalizer on the attempt keeps until they are removed.
    pub(super) publishes_dns01: bool,
    /// The next attempt's issuer is an ACME one (or unknown: then it is taken to be).
    pub(super) acme_issuer: bool,
    /// The index the next attempt takes.
    pub(super) next_index: u32,
}

/// The attempts of `cert` and the index of the next one; `None` while the latest attempt,
/// created by this process moments ago, is not in the cache yet (its watch event brings the
/// Certificate back). No index is ever taken twice: beside the attempts in the cache, the index
/// recorded in status and the attempt the target Secret names are claimed too (the Secret may
/// be seen before the attempt that wrote it). A claimed attempt the cache does not show is
/// looked up; one recorded but never created (an older certpilot recorded the index before
/// creating the attempt, and stopped in between) keeps its index.
async fn attempts_and_next_index(
    ctx: &Context,
    cert: &Certificate,
    namespace: &str,
) -> Result<Option<(Vec<Arc<AttemptRecord>>, u32)>> {
    let (mut attempts, taken) = cached_attempts(ctx, cert, namespace);
    let name = cert.name_any();
    if ctx.recent_creates.contains(namespace, &attempt_name(&name, taken + 1)) {
        return Ok(None);
    }
    let recorded = cert.status.as_ref().and_then(|s| s.attempt_index).unwrap_or(0);
    let named = secret_named_index(ctx, cert, namespace);
    let claimed = recorded.max(named);
    if claimed <= taken {
        return Ok(Some((attempts, taken + 1)));
    }
    let latest = attempt_name(&name, claimed);
    if ctx.recent_creates.contains(namespace, &latest) {
        return Ok(None);
    }
    let api: Api<CertificateAttempt> = ctx.namespaced(namespace);
    match api.get_opt(&latest).await? {
        Some(attempt) => {
            if attempt.owner_references().iter().any(|o| Some(&o.uid) == cert.uid().as_ref()) {
                attempts.push(Arc::new(AttemptRecord::of(&attempt)));
            }
            Ok(Some((attempts, claimed + 1)))
        }
        None if named < claimed => Ok(Some((attempts, claimed))),
        // It wrote the Secret, so it existed: deleted since, its name is not used again.
        None => Ok(Some((attempts, claimed + 1))),
    }
}

/// The index of the attempt that wrote the target Secret, when certpilot wrote it for `cert`.
fn secret_named_index(ctx: &Context, cert: &Certificate, namespace: &str) -> u32 {
    let name = cert.name_any();
    let Some(secret) = ctx.caches.secrets.watched(namespace, &cert.spec.secret_name) else { return 0 };
    if secret.written_for.as_deref() != Some(label_value(&name).as_str()) {
        return 0;
    }
    secret.attempt.as_deref().and_then(|attempt| attempt_index(&name, attempt)).unwrap_or(0)
}

/// How long after an attempt was made a Secret naming it may run ahead of its status.
const STORED_AHEAD_LIMIT: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// The attempt under way has written the Secret, but the attempts' cache does not show it
/// ending yet: its success is on the way (the Secret is written before the attempt records
/// it), and a status written now would say the attempt is still under way. Only for a recent
/// attempt: one that cannot record its end must not silence the Certificate's status.
fn stored_ahead_of_attempt(
    ctx: &Context,
    namespace: &str,
    (secret, certificate): (&str, &str),
    latest: Option<&AttemptRecord>,
) -> bool {
    let recent =
        |a: &&AttemptRecord| a.created.is_some_and(|t| Timestamp::now().duration_since(t) < STORED_AHEAD_LIMIT);
    let under_way = |a: &&AttemptRecord| !a.view.phase.is_terminal();
    let Some(latest) = latest.filter(under_way).filter(recent) else {
        return false;
    };
    let named = ctx.caches.secrets.watched(namespace, secret).is_some_and(|s| s.names_attempt(latest.name()));
    let written = ctx.caches.secrets.verified(namespace, secret, certificate).and_then(|v| v.written_by).as_deref()
        == Some(latest.name());
    named || written
}

/// What the target Secret holds. Its metadata comes from the cache of certpilot's Secrets; its
/// data is read (and verified) only when certpilot has neither read nor written that version,
/// and when the cache may be behind: the latest attempt succeeded but the Secret does not name
/// it (it is written before the attempt records success, but watched separately), or it failed
/// because the Secret turned out to be someone else's (those are not in the cache). What the
/// latest attempt wrote is known without reading it while the cache does not show the Secret.
/// A Secret that is not certpilot's is never in that cache: it is read every time, so whether
/// cert-manager's is adopted is decided anew, for the names asked for now.
async fn target_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    certificate: &str,
    wanted: &NameRequest,
    latest: Option<&AttemptRecord>,
) -> Result<SecretState> {
    let cached = ctx.caches.secrets.watched(namespace, name);
    let version = cached.as_ref().map(|s| s.version.clone());
    if let Some(known) = ctx.caches.secrets.verified(namespace, name, certificate) {
        let current = known.version == version;
        let latest_wrote_it = known.written_by.is_some() && known.written_by.as_deref() == latest.map(|a| a.name());
        if (latest_wrote_it && (cached.is_none() || current)) || (current && !cache_behind(cached.as_ref(), latest)) {
            return Ok(known.state);
        }
    }
    let secret = ctx.namespaced::<Secret>(namespace).get_opt(name).await?;
    let state = classify_adopting(secret.as_ref(), certificate, wanted, Timestamp::now());
    let version = secret.as_ref().and_then(|s| s.metadata.resource_version.clone());
    let verified = Verified { version, written_by: None, certificate: certificate.to_string(), state: state.clone() };
    ctx.caches.secrets.put_verified(namespace, name, verified);
    Ok(state)
}

/// Whether the cached Secret may be older than what the latest attempt says: it succeeded,
/// but the Secret does not name it; or it failed because the Secret is someone else's.
fn cache_behind(cached: Option<&WatchedSecret>, latest: Option<&AttemptRecord>) -> bool {
    let Some(latest) = latest else { return false };
    match latest.view.phase {
        // A Revoke attempt writes no Secret.
        AttemptPhase::Succeeded if latest.view.type_ == AttemptType::Revoke => false,
        AttemptPhase::Succeeded => cached.is_none_or(|secret| !secret.names_attempt(latest.name())),
        AttemptPhase::Failed => {
            latest.view.error_code.as_deref() == Some(crate::issuance::FailureCode::SecretNotOwned.as_str())
        }
        _ => false,
    }
}

/// What the caches (and, where they may be behind, the API server) say about `cert`; `None`
/// while they are catching up with what this process just did.
pub(super) async fn observe(
    cert: &Certificate,
    ctx: &Context,
    namespace: &str,
    desired: Desired,
) -> Result<Option<Observation>> {
    let (issuer, _) = issuer_state(ctx, namespace, &desired.issuer, &desired.names);
    let fallbacks: Vec<(IssuerRef, IssuerState)> = cert
        .spec
        .fallback_issuer_refs
        .iter()
        .flatten()
        .map(|fallback| (fallback.clone(), issuer_state(ctx, namespace, fallback, &desired.names).0))
        .collect();
    let Some((attempts, next_index)) = attempts_and_next_index(ctx, cert, namespace).await? else {
        return Ok(None);
    };
    let name = cert.name_any();
    let target = (desired.secret_name.as_str(), name.as_str());
    if stored_ahead_of_attempt(ctx, namespace, target, attempts.last().map(Arc::as_ref)) {
        return Ok(None);
    }
    let latest = attempts.last().map(Arc::as_ref);
    let secret = target_secret(ctx, namespace, &desired.secret_name, &name, &desired.names, latest).await?;
    let previous = cert.status.as_ref().and_then(|s| s.renewal_info.clone());
    // Renewal information comes from the CA that issued the certificate, a fallback's included.
    let stored_issuer = match &secret {
        SecretState::Present(stored) => stored.issuer.clone().filter(|i| cert.spec.issuers().contains(i)),
        _ => None,
    };
    let ari_issuer = stored_issuer.unwrap_or_else(|| desired.issuer.clone());
    let (ari_issuer_state, ari_issuer_spec) = issuer_state(ctx, namespace, &ari_issuer, &desired.names);
    let renewal_info = match (&secret, ari_issuer_spec.and_then(|s| s.acme)) {
        (SecretState::Present(stored), Some(acme)) if ari_issuer_state == IssuerState::Ready => match &stored.ari_id {
            Some(id) => Some(renewal_info(ctx, namespace, &ari_issuer, &acme, id, previous).await?),
            None => None,
        },
        _ => None,
    };
    let ari_window = renewal_info.as_ref().and_then(|r| match (&r.window_start, &r.window_end) {
        (Some(start), Some(end)) => Some(SuggestedWindow { start: start.0, end: end.0 }),
        _ => None,
    });
    let mut observed = Observed {
        now: Timestamp::now(),
        issuer,
        fallbacks,
        secret,
        attempts: attempts
            .iter()
            .filter(|a| a.view.phase != AttemptPhase::Rejected)
            .filter_map(|a| view(cert, a))
            .collect(),
        jitter_key: format!("{namespace}/{name}"),
        ari_window,
        backoff: ctx.settings.backoff,
        min_renewal_interval: ctx.settings.min_renewal_interval,
        desired,
        keystore_password: None,
    };
    if observed.in_progress().is_none() && observed.assess().need.is_some() {
        observed.keystore_password = keystore_password_problem(ctx, namespace, cert).await?;
    }
    let (_, next_issuer_spec) = issuer_state(ctx, namespace, &observed.next_issuer().issuer, &observed.desired.names);
    let names = observed.desired.names.dns_names.iter().map(String::as_str);
    let acme = next_issuer_spec.as_ref().map(|s| s.acme.as_ref());
    let acme_issuer = acme.is_none_or(|acme| acme.is_some());
    let publishes_dns01 = match acme {
        None => true,
        Some(None) => false,
        Some(Some(acme)) => crate::solver::publishes_dns01(&acme.solvers, names),
    };
    Ok(Some(Observation { observed, attempts, renewal_info, publishes_dns01, acme_issuer, next_index }))
}

/// Why a keystore the Certificate asks for cannot get its password, if one cannot. Read only
/// when an attempt is needed: password Secrets are the user's, not watched, and not read at rest.
async fn keystore_password_problem(
    ctx: &Context,
    namespace: &str,
    cert: &Certificate,
) -> Result<Option<crate::keystore::PasswordProblem>> {
    let secrets: Api<Secret> = ctx.namespaced(namespace);
    for format in cert.spec.additional_output_formats.iter().flatten().filter(|f| f.type_.is_keystore()) {
        let secret = match &format.password_secret_ref {
            Some(reference) => secrets.get_opt(&reference.name).await?,
            None => None,
        };
        if let Some(Err(problem)) = crate::keystore::keystore(format, secret.as_ref()) {
            return Ok(Some(problem));
        }
    }
    Ok(None)
}

/// The CA's renewal window for the stored certificate: the one in status while it is fresh,
/// else asked anew (RFC 9773), at most as often as the CA's Retry-After allows.
async fn renewal_info(
    ctx: &Context,
    namespace: &str,
    issuer_ref: &IssuerRef,
    acme: &AcmeIssuer,
    certificate_id: &str,
    previous: Option<RenewalInfoStatus>,
) -> Result<RenewalInfoStatus> {
    let now = Timestamp::now();
    if let Some(previous) = previous.filter(|p| p.certificate_id == certificate_id && p.next_check.0 > now) {
        return Ok(previous);
    }
    let unsupported = |hours: i64| RenewalInfoStatus {
        certificate_id: certificate_id.to_string(),
        window_start: None,
        window_end: None,
        explanation_url: None,
        next_check: Time(now + jiff::SignedDuration::from_hours(hours)),
    };
    let secrets: Api<Secret> = ctx.namespaced(&ctx.issuer_secret_namespace(issuer_ref.kind, Some(namespace)));
    let key = issuer_ref.key(namespace);
    let source = AccountSource { key: &key, issuer_name: &issuer_ref.name, spec: acme, secrets: &secrets };
    let account = match ctx.accounts.get(&source).await {
        Ok(account) => account,
        Err(stop) => {
            stop.failure()?;
            return Ok(unsupported(1));
        }
    };
    let Some((aki, serial)) = certificate_id.split_once('.') else { return Ok(unsupported(24)) };
    let id = instant_acme::CertificateIdentifier { authority_key_identifier: aki.into(), serial: serial.into() };
    Ok(match account.account.renewal_info(&id).await {
        Ok((info, retry)) => {
            let at = |t: time::OffsetDateTime| Timestamp::from_second(t.unix_timestamp()).ok().map(Time);
            // At least a minute between checks, whatever the CA says.
            let wait = jiff::SignedDuration::try_from(retry.max(Duration::from_secs(60)))
                .unwrap_or(jiff::SignedDuration::from_hours(6));
            RenewalInfoStatus {
                certificate_id: certificate_id.to_string(),
                window_start: at(info.suggested_window.start),
                window_end: at(info.suggested_window.end),
                explanation_url: info.explanation_url,
                next_check: Time(now + wait),
            }
        }
        Err(instant_acme::Error::Unsupported(_)) => unsupported(24),
        Err(e) => {
            tracing::warn!(certificate_id, error = %e, "could not fetch ACME renewal information");
            unsupported(1)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_durations_are_reported() {
        let mut cert = Certificate::new("c", Default::default());
        cert.spec.renew_before = Some("ten days".into());
        assert!(desired(&cert).unwrap_err().contains("renewBefore"));
        cert.spec.renew_before = None;
        cert.spec.ip_addresses = Some(vec!["300.1.1.1".into()]);
        assert!(desired(&cert).unwrap_err().contains("ipAddresses"));
    }
}
