//! The Certificate controller: dereference (issuer, Secret, attempts) → decide (pure) → create
//! or cancel an attempt → summarise status (pure) → requeue at the next moment that matters.

use super::{
    apply_status, apply_status_at,
    cache::{AttemptRecord, Feeds, Verified, WatchedSecret},
    context::Context,
    error_policy,
    issuer::issuer_state,
    run_controller,
};
use crate::{
    api::{
        CANCEL_ANNOTATION, CERTIFICATE_NAME_LABEL, CLEANUP_FINALIZER, Certificate, CertificateAttempt, ClusterIssuer,
        FIELD_MANAGER, Issuer, IssuerKind, IssuerRef, MANAGED_BY_LABEL, MANAGED_BY_VALUE, RENEW_ANNOTATION,
        REVOKE_ANNOTATION,
        attempt::{AttemptPhase, AttemptType},
        certificate::{CertificateStatus, RenewalInfoStatus},
        conditions::{self, Condition},
        issuer::AcmeIssuer,
    },
    error::{Error, Result, is_already_exists},
    issuance::acme::account::AccountSource,
    pki::{NameRequest, keys::describe_spec},
    policy::{
        parse_duration,
        renewal::{RenewalSettings, SuggestedWindow},
        status::summarise,
        trigger::{AttemptView, Decision, Desired, IssuerState, Observed, SecretState},
        trust::{Verdict, attempt_index, attempt_name, snapshot, trusts, verdict},
    },
    secret::{classify_adopting, label_value},
};
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    core::PartialObjectMeta,
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use std::{sync::Arc, time::Duration};

/// What the Certificate asks for, or why it cannot be understood (for what CEL cannot check).
fn desired(cert: &Certificate) -> std::result::Result<Desired, String> {
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

struct Observation {
    observed: Observed,
    attempts: Vec<Arc<AttemptRecord>>,
    renewal_info: Option<RenewalInfoStatus>,
    /// The next attempt may publish DNS-01 records (its issuer is an ACME one with a dns01
    /// solver for one of the names, or unknown: then it is taken to), which certpilot's
    /// finalizer on the attempt keeps until they are removed.
    publishes_dns01: bool,
    /// The next attempt's issuer is an ACME one (or unknown: then it is taken to be).
    acme_issuer: bool,
    /// The index the next attempt takes.
    next_index: u32,
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
async fn observe(cert: &Certificate, ctx: &Context, namespace: &str, desired: Desired) -> Result<Option<Observation>> {
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

/// The ARI identifier a renewal order names in `replaces`: the stored certificate's, when the
/// CA offers renewal information for it.
fn replaces_for(observed: &Observed, renewal_info: &Option<RenewalInfoStatus>, type_: AttemptType) -> Option<String> {
    let SecretState::Present(stored) = &observed.secret else { return None };
    let offered = renewal_info
        .as_ref()
        .is_some_and(|r| r.window_start.is_some() && Some(&r.certificate_id) == stored.ari_id.as_ref());
    (offered && matches!(type_, AttemptType::Renew | AttemptType::Manual)).then(|| stored.ari_id.clone()).flatten()
}

fn new_attempt(
    cert: &Certificate,
    observed: &Observed,
    index: u32,
    replaces: Option<String>,
    type_: AttemptType,
    reason: &str,
    cleanup: bool,
) -> Result<CertificateAttempt> {
    let name = cert.name_any();
    let mut issuer = observed.next_issuer();
    if type_ == AttemptType::Revoke {
        // Revoked where it was issued, not where the next certificate would come from.
        issuer.issuer = observed.revocation_issuer();
        issuer.fallback_reason = None;
    }
    let mut spec = snapshot(cert, type_, reason, &issuer.issuer);
    spec.fallback_reason = issuer.fallback_reason;
    spec.revoke_request = observed.desired.revoke_request.clone();
    if type_ == AttemptType::Revoke {
        spec.revoke_serial = observed.stored().map(|stored| stored.info.serial_hex.clone());
    }
    spec.new_key = observed.revoked_not_replaced().is_some();
    // The certificate a renewal order replaces is known only to the CA that issued it.
    let same_ca = observed.stored().is_some_and(|stored| stored.issuer.as_ref() == Some(&issuer.issuer));
    spec.replaces = replaces.filter(|_| same_ca);
    spec.renew_request = observed.desired.renew_request.clone();
    let mut attempt = CertificateAttempt::new(&attempt_name(&name, index), spec);
    attempt.metadata.namespace = cert.namespace();
    attempt.metadata.labels = Some(
        [
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
            (CERTIFICATE_NAME_LABEL.to_string(), label_value(&name)),
        ]
        .into(),
    );
    // Only DNS-01 records at a provider must be removed before the attempt goes: HTTP-01
    // routes outlive attempts (`controller::routes`), and nothing else is kept outside it.
    if cleanup {
        attempt.metadata.finalizers = Some(vec![CLEANUP_FINALIZER.to_string()]);
    }
    attempt.metadata.owner_references =
        Some(vec![cert.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?]);
    Ok(attempt)
}

/// What creating an attempt came to.
enum Created {
    /// Made now, with this uid.
    Now(String),
    /// It exists already, and is this decision's (a retry of a create that was not answered).
    Before,
    /// Someone else's attempt has that name: take the next index.
    NameTaken,
}

/// Creates the attempt; AlreadyExists is success when the existing attempt is this one.
async fn create_attempt(
    api: &Api<CertificateAttempt>,
    cert: &Certificate,
    attempt: &CertificateAttempt,
) -> Result<Created> {
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match api.create(&params, attempt).await {
        Ok(created) => Ok(Created::Now(created.uid().unwrap_or_default())),
        Err(e) if is_already_exists(&e) => {
            let existing = api.get_opt(&attempt.name_any()).await?;
            let ours = existing.is_some_and(|a| verdict(&a, Some(cert)) == Verdict::Trusted);
            Ok(if ours { Created::Before } else { Created::NameTaken })
        }
        Err(e) => Err(e.into()),
    }
}

/// Asks the attempt controller (the only writer of an attempt's status) to cancel `attempt`.
async fn request_cancel(api: &Api<CertificateAttempt>, attempt: &str, reason: &str) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {CANCEL_ANNOTATION: reason}}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match api.patch(attempt, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if crate::error::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the oldest finished attempts beyond the history limit, keeping the latest success,
/// and only those at or below index `recorded` (see `cached_attempts`).
async fn prune(
    api: &Api<CertificateAttempt>,
    certificate: &str,
    attempts: &[Arc<AttemptRecord>],
    limit: usize,
    recorded: u32,
) -> Result<()> {
    let finished: Vec<&AttemptRecord> =
        attempts.iter().map(Arc::as_ref).filter(|a| a.view.phase.is_terminal()).collect();
    let latest_success = finished.iter().rev().find(|a| a.view.phase == AttemptPhase::Succeeded).map(|a| a.name());
    let latest = attempts.last().map(|a| a.name());
    let excess = finished.len().saturating_sub(limit);
    let recorded_below = |a: &&&AttemptRecord| attempt_index(certificate, a.name()).is_some_and(|i| i <= recorded);
    let prunable =
        finished.iter().filter(|a| Some(a.name()) != latest_success && Some(a.name()) != latest).filter(recorded_below);
    for attempt in prunable.take(excess) {
        match api.delete(attempt.name(), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if crate::error::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// How often the Certificates are swept for moments coming within reach.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// How far ahead a reconcile schedules its next look itself. Further moments are left to the
/// sweep: every wake-up the controller holds costs memory, and at rest nearly every Certificate
/// would hold one for weeks. Twice the sweep's interval, so no moment falls between the two.
const WAKE_HORIZON: Duration = Duration::from_secs(2 * SWEEP_INTERVAL.as_secs());
const _: () = assert!(WAKE_HORIZON.as_secs() >= 2 * SWEEP_INTERVAL.as_secs(), "a moment could fall between sweeps");

/// The next moment after `now` at which the Certificate needs a look: renewal, the next
/// attempt, expiry or the next renewal-information check.
fn next_moment(status: &CertificateStatus, now: Timestamp) -> Option<Timestamp> {
    let ari_check = status.renewal_info.as_ref().map(|r| r.next_check.clone());
    let moments = [&status.renewal_time, &status.next_attempt_time, &status.not_after, &ari_check];
    moments.iter().filter_map(|t| t.as_ref().map(|t| t.0)).filter(|t| *t > now).min()
}

/// When to look again: the next moment, if within the horizon; soon when blocked.
fn next_reconcile(status: &CertificateStatus, decision: &Decision, now: Timestamp) -> Action {
    if matches!(decision, Decision::Blocked { .. }) {
        let since =
            conditions::find(&status.conditions, "Ready").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0);
        return Action::requeue(blocked_retry(since.map(|t| now.duration_since(t)).unwrap_or_default()));
    }
    match next_moment(status, now) {
        Some(at) => {
            let wait = at.duration_since(now).unsigned_abs() + Duration::from_millis(500);
            if wait <= WAKE_HORIZON { Action::requeue(wait) } else { Action::await_change() }
        }
        None if status.last_attempt.as_ref().is_some_and(|a| !a.phase.is_terminal()) => {
            Action::requeue(Duration::from_secs(300))
        }
        None => Action::await_change(),
    }
}

/// Certificates whose next moment comes within the horizon before the following sweep: their
/// reconcile then schedules the exact moment.
fn due_within_horizon(certificates: &[Arc<Certificate>], now: Timestamp) -> Vec<ObjectRef<Certificate>> {
    let horizon = jiff::SignedDuration::try_from(WAKE_HORIZON).unwrap_or_default();
    certificates
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| next_moment(s, now)).is_some_and(|at| at <= now + horizon))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Every [`SWEEP_INTERVAL`], the Certificates due within the horizon.
fn sweep(store: kube::runtime::reflector::Store<Certificate>) -> impl Stream<Item = ObjectRef<Certificate>> {
    let start = tokio::time::Instant::now() + SWEEP_INTERVAL;
    ticks(tokio::time::interval_at(start, SWEEP_INTERVAL))
        .flat_map(move |_| futures::stream::iter(due_within_horizon(&store.state(), Timestamp::now())))
}

fn ticks(mut interval: tokio::time::Interval) -> impl Stream<Item = ()> {
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(interval, |mut interval| async move {
        interval.tick().await;
        Some(((), interval))
    })
}

/// How soon to look again at a Certificate blocked by something the user must fix: half as
/// long as it has been blocked, from 5 seconds up to 10 minutes (issuer changes wake it at once;
/// a foreign Secret's changes do not, as only certpilot's Secrets are watched).
fn blocked_retry(blocked_for: jiff::SignedDuration) -> Duration {
    let half = blocked_for.unsigned_abs() / 2;
    half.clamp(Duration::from_secs(5), Duration::from_secs(600))
}

fn invalid_spec_status(cert: &Certificate, message: String) -> CertificateStatus {
    let generation = cert.metadata.generation;
    let mut ready = Condition::new("Ready", false, "InvalidSpec", message);
    ready.observed_generation = generation;
    CertificateStatus {
        conditions: vec![ready],
        observed_generation: generation,
        ..cert.status.clone().unwrap_or_default()
    }
}

/// How soon to look again when the cache does not show certpilot's own last write yet (its
/// watch event normally brings the Certificate back sooner).
const CACHE_LAG_RETRY: Duration = Duration::from_secs(2);

async fn reconcile(cert: Arc<Certificate>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("certificate");
    if cert.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Decisions read every store: none may be half-filled (as at start-up).
    ctx.caches.wait_until_ready().await;
    if super::lags(&ctx, cert.as_ref()) {
        return Ok(Action::requeue(CACHE_LAG_RETRY));
    }
    let namespace = cert.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Certificate> = ctx.namespaced(&namespace);
    let attempts_api: Api<CertificateAttempt> = ctx.namespaced(&namespace);
    let previous = cert.status.clone().unwrap_or_default();
    let desired = match desired(&cert) {
        Ok(desired) => desired,
        Err(message) => {
            let mut status = invalid_spec_status(&cert, message);
            conditions::stamp(&mut status.conditions, &previous.conditions, Timestamp::now());
            write_status(&ctx, &api, &cert, &previous, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let Some(observation) = observe(&cert, &ctx, &namespace, desired).await? else {
        return Ok(Action::requeue(CACHE_LAG_RETRY));
    };
    let Observation { observed, attempts, renewal_info, publishes_dns01, acme_issuer, next_index } = observation;
    let decision = observed.decide();
    match &decision {
        Decision::Start { type_, reason } => {
            let replaces = replaces_for(&observed, &renewal_info, *type_);
            // A Revoke attempt publishes nothing.
            let cleanup = publishes_dns01 && *type_ != AttemptType::Revoke;
            let attempt = new_attempt(&cert, &observed, next_index, replaces, *type_, reason, cleanup)?;
            let orders = acme_issuer && *type_ != AttemptType::Revoke;
            return start(&ctx, &api, &attempts_api, &cert, &previous, (&attempt, orders), (*type_, reason)).await;
        }
        Decision::Supersede { attempt, reason } => {
            request_cancel(&attempts_api, attempt, reason).await?;
            let note = format!("attempt {attempt}: {reason}");
            ctx.event(&cert.object_ref(&()), false, "AttemptCancelled", "Cancel", note).await;
        }
        _ => {}
    }
    let mut status = summarise(&observed, &decision, &previous.history);
    status.renewal_info = renewal_info;
    status.attempt_index = (next_index > 1).then_some(next_index - 1);
    conditions::stamp(&mut status.conditions, &previous.conditions, observed.now);
    if let Some(wait) = unshown_start(&decision, attempts.last().map(Arc::as_ref), observed.now) {
        return Ok(Action::requeue(wait));
    }
    write_status(&ctx, &api, &cert, &previous, &status).await?;
    // Only below the index the status now records: the attempts above it are found by name
    // from that index up, and a gap would hide them.
    let recorded = status.attempt_index.unwrap_or(0);
    prune(&attempts_api, &cert.name_any(), &attempts, cert.spec.history_limit(), recorded).await?;
    Ok(next_reconcile(&status, &decision, observed.now))
}

/// How long an attempt under way goes without being shown in the Certificate's status. Most
/// attempts end well within it, and the Certificate's status is written once, at that end:
/// the live phase is in the attempt's own status (and `certpilot status`). One still under way
/// after this long (a long queue, a slow CA, DNS-01 propagation, an API server refusing its
/// writes) is shown as under way, and from then on follows the phases its status records.
const UNSHOWN_START: Duration = Duration::from_secs(60);

/// While the latest attempt is under way and was made less than [`UNSHOWN_START`] ago, the
/// Certificate's status waits for its end: the attempt's watch event brings the Certificate
/// back. How long to wait at most, then.
fn unshown_start(decision: &Decision, latest: Option<&AttemptRecord>, now: Timestamp) -> Option<Duration> {
    let latest = latest.filter(|a| matches!(decision, Decision::InProgress) && !a.view.phase.is_terminal())?;
    let limit = jiff::SignedDuration::try_from(UNSHOWN_START).ok()?;
    let age = now.duration_since(latest.created?);
    (age < limit).then(|| (limit - age).unsigned_abs())
}

/// Starts an attempt: creates it, and nothing else. Its deterministic name fences a second
/// one (a stale cache, a retry or a second replica deciding the same start gets AlreadyExists
/// and takes the attempt there for its own); the Certificate's status is written once the
/// attempt has started or ended. An attempt of that name that is not this decision's (not
/// certpilot's, or made for another spec) has its index recorded, so that the next decision
/// takes the one after it.
async fn start(
    ctx: &Context,
    api: &Api<Certificate>,
    attempts_api: &Api<CertificateAttempt>,
    cert: &Certificate,
    previous: &CertificateStatus,
    (attempt, orders): (&CertificateAttempt, bool),
    (type_, reason): (AttemptType, &str),
) -> Result<Action> {
    let index = attempt_index(&cert.name_any(), &attempt.name_any());
    let created = create_attempt(attempts_api, cert, attempt).await?;
    if let Created::Now(uid) = &created
        && orders
    {
        // Its first pass places the order without looking for one placed before.
        ctx.unordered.note(uid);
    }
    if matches!(created, Created::NameTaken) {
        tracing::warn!(certificate = %cert.name_any(), attempt = %attempt.name_any(), "an attempt of that name exists and is not this decision's; taking the next index");
        // At the version decided from: a stale cache gets a 409 here and decides again.
        let recorded = CertificateStatus { attempt_index: index, ..previous.clone() };
        match apply_status_at(ctx, api, &cert.name_any(), &recorded, cert.resource_version().as_deref()).await {
            Ok(_) => {}
            Err(Error::Kube(kube::Error::Api(refused))) if refused.code == 409 => {}
            Err(e) => return Err(e),
        }
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    ctx.recent_creates.note(&cert.namespace().unwrap_or_default(), &attempt.name_any());
    tracing::info!(certificate = %cert.name_any(), attempt = %attempt.name_any(), ?type_, %reason, "started attempt");
    Ok(Action::requeue(UNSHOWN_START))
}

/// Writes `status` when it says something new: not what the cached Certificate shows, nor
/// what certpilot wrote moments ago (the cache has not caught up with it yet).
async fn write_status(
    ctx: &Context,
    api: &Api<Certificate>,
    cert: &Certificate,
    previous: &CertificateStatus,
    status: &CertificateStatus,
) -> Result<()> {
    // Compared as written: times are kept to the second, and a computed renewal time need not be.
    let as_written = |s: &CertificateStatus| serde_json::to_value(s).ok();
    let known =
        as_written(status) == as_written(previous) || cert.uid().is_some_and(|uid| ctx.last_writes.wrote(&uid, status));
    if !known {
        apply_status(ctx, api, &cert.name_any(), status).await?;
    }
    Ok(())
}

fn certificates_for_issuer(
    store: &kube::runtime::reflector::Store<Certificate>,
    kind: IssuerKind,
    namespace: Option<String>,
    name: String,
) -> Vec<ObjectRef<Certificate>> {
    store
        .state()
        .iter()
        .filter(|c| c.spec.issuers().iter().any(|issuer| issuer.kind == kind && issuer.name == name))
        .filter(|c| kind == IssuerKind::ClusterIssuer || c.namespace() == namespace)
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// The Certificates to look at again when something they depend on is deleted (their
/// attempts, their Secrets, their issuers) or when this install's view of their ClusterIssuer
/// changes.
fn deleted_dependencies(ctx: &Arc<Context>, feeds: &Feeds) -> impl Stream<Item = ObjectRef<Certificate>> + use<> {
    let owner = |attempt: Arc<CertificateAttempt>| {
        let namespace = attempt.namespace();
        futures::stream::iter(namespace.map(|ns| ObjectRef::new(&attempt.spec.certificate_name).within(&ns)))
    };
    let verified = ctx.clone();
    let secret_owner = move |secret: Arc<PartialObjectMeta<Secret>>| {
        // What was known of it is void: it does not exist any more.
        verified.caches.secrets.forget_verified(&secret.namespace().unwrap_or_default(), &secret.name_any());
        let cert = secret.labels().get(CERTIFICATE_NAME_LABEL).cloned();
        futures::stream::iter(cert.zip(secret.namespace()).map(|(name, ns)| ObjectRef::new(&name).within(&ns)))
    };
    let store = ctx.caches.certificates.clone();
    let issuer_users = move |issuer: Arc<Issuer>| {
        let users = certificates_for_issuer(&store, IssuerKind::Issuer, issuer.namespace(), issuer.name_any());
        futures::stream::iter(users)
    };
    let store = ctx.caches.certificates.clone();
    let cluster_issuer_users = move |issuer: Arc<ClusterIssuer>| {
        futures::stream::iter(certificates_for_issuer(&store, IssuerKind::ClusterIssuer, None, issuer.name_any()))
    };
    // This install's view of a ClusterIssuer changes without a status write when another
    // certpilot writes its status (`policy::cluster_issuer`).
    let store = ctx.caches.certificates.clone();
    let view_users = move |name: String| {
        futures::stream::iter(certificates_for_issuer(&store, IssuerKind::ClusterIssuer, None, name))
    };
    futures::stream::select_all([
        feeds.attempts.deletions().flat_map(owner).boxed(),
        feeds.secrets.deletions().flat_map(secret_owner).boxed(),
        feeds.issuers.deletions().flat_map(issuer_users).boxed(),
        feeds.cluster_issuers.deletions().flat_map(cluster_issuer_users).boxed(),
        ctx.cluster_issuer_views.changes().flat_map(view_users).boxed(),
    ])
}

/// The Certificate controller, subscribed to the shared watches now, running when awaited.
pub fn run(ctx: Arc<Context>, feeds: &Feeds) -> impl std::future::Future<Output = ()> + use<> {
    let store = ctx.caches.certificates.clone();
    let (issuer_store, cluster_issuer_store) = (store.clone(), store.clone());
    let stream = Controller::for_shared_stream(feeds.certificates.subscribe(), store)
        .owns_shared_stream(feeds.attempts.subscribe())
        // Secrets are watched as metadata only, and only those certpilot wrote.
        .watches_shared_stream(feeds.secrets.subscribe(), |secret| {
            let cert = secret.labels().get(CERTIFICATE_NAME_LABEL).cloned();
            let namespace = secret.namespace();
            cert.into_iter().filter_map(move |name| namespace.as_ref().map(|ns| ObjectRef::new(&name).within(ns)))
        })
        .watches_shared_stream(feeds.issuers.subscribe(), move |issuer| {
            certificates_for_issuer(&issuer_store, IssuerKind::Issuer, issuer.namespace(), issuer.name_any())
        })
        .watches_shared_stream(feeds.cluster_issuers.subscribe(), move |issuer| {
            certificates_for_issuer(&cluster_issuer_store, IssuerKind::ClusterIssuer, None, issuer.name_any())
        })
        .reconcile_on(futures::stream::select(
            deleted_dependencies(&ctx, feeds),
            sweep(ctx.caches.certificates.clone()),
        ))
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy("certificate"), ctx);
    run_controller("certificate", stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_certificates_are_retried_with_backoff() {
        let s = jiff::SignedDuration::from_secs;
        assert_eq!(blocked_retry(s(0)), Duration::from_secs(5));
        assert_eq!(blocked_retry(s(60)), Duration::from_secs(30));
        assert_eq!(blocked_retry(s(600)), Duration::from_secs(300));
        assert_eq!(blocked_retry(s(86_400)), Duration::from_secs(600));
    }

    #[test]
    fn an_attempt_under_way_is_shown_after_a_minute_and_its_end_at_once() {
        let now = Timestamp::now();
        let record = |phase: AttemptPhase, age: i64| {
            let mut attempt = CertificateAttempt::new("app-1", Default::default());
            attempt.metadata.creation_timestamp = Some(Time(now - jiff::SignedDuration::from_secs(age)));
            attempt.status = Some(crate::api::attempt::CertificateAttemptStatus { phase, ..Default::default() });
            AttemptRecord::of(&attempt)
        };
        let waits = |phase, age| unshown_start(&Decision::InProgress, Some(&record(phase, age)), now);
        for phase in [AttemptPhase::Pending, AttemptPhase::Ordering, AttemptPhase::Validating] {
            assert_eq!(waits(phase, 20), Some(Duration::from_secs(40)), "{phase:?}");
            assert_eq!(waits(phase, 61), None, "{phase:?} after a minute");
        }
        assert_eq!(waits(AttemptPhase::Succeeded, 5), None);
        assert_eq!(waits(AttemptPhase::Failed, 5), None);
        let latest = record(AttemptPhase::Validating, 5);
        assert_eq!(unshown_start(&Decision::UpToDate, Some(&latest), now), None);
    }

    fn ready_until(renewal: Timestamp) -> CertificateStatus {
        CertificateStatus {
            renewal_time: Some(Time(renewal)),
            not_after: Some(Time(renewal + jiff::SignedDuration::from_hours(24 * 30))),
            ..Default::default()
        }
    }

    /// Far moments are left to the sweep, so that a quiet operator holds no wake-up per
    /// Certificate; near ones are scheduled exactly.
    #[test]
    fn only_moments_within_the_horizon_are_scheduled() {
        let now = Timestamp::now();
        let soon = ready_until(now + jiff::SignedDuration::from_mins(3));
        assert_eq!(next_reconcile(&soon, &Decision::InProgress, now), Action::requeue(Duration::from_millis(180_500)));
        let later = ready_until(now + jiff::SignedDuration::from_hours(24 * 20));
        assert_eq!(next_reconcile(&later, &Decision::InProgress, now), Action::await_change());
    }

    #[test]
    fn the_sweep_finds_what_comes_within_the_horizon_and_nothing_else() {
        let now = Timestamp::now();
        let with_status = |name: &str, status: Option<CertificateStatus>| {
            let mut cert = Certificate::new(name, Default::default());
            cert.metadata.namespace = Some("ns".into());
            cert.status = status;
            Arc::new(cert)
        };
        let horizon = jiff::SignedDuration::try_from(WAKE_HORIZON).unwrap();
        let certificates = [
            with_status("due", Some(ready_until(now + horizon - jiff::SignedDuration::from_secs(1)))),
            with_status("later", Some(ready_until(now + horizon + jiff::SignedDuration::from_secs(1)))),
            with_status("past", Some(ready_until(now - jiff::SignedDuration::from_hours(24 * 31)))),
            with_status("new", None),
        ];
        let due: Vec<String> = due_within_horizon(&certificates, now).into_iter().map(|r| r.name).collect();
        assert_eq!(due, ["due"]);
    }

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
