//! Apply: the attempt a decision starts (built pure, then created), cancelling one, and
//! pruning the finished ones beyond the history limit.

use crate::{
    api::{
        CANCEL_ANNOTATION, CERTIFICATE_NAME_LABEL, CLEANUP_FINALIZER, Certificate, CertificateAttempt, FIELD_MANAGER,
        MANAGED_BY_LABEL, MANAGED_BY_VALUE,
        attempt::{AttemptPhase, AttemptType},
        certificate::RenewalInfoStatus,
    },
    controller::cache::AttemptRecord,
    error::{Error, Result, is_already_exists},
    policy::{
        trigger::{Observed, SecretState},
        trust::{Verdict, attempt_index, attempt_name, snapshot, verdict},
    },
    secret::label_value,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use std::sync::Arc;

/// The ARI identifier a renewal order names in `replaces`: the stored certificate's, when the
/// CA offers renewal information for it.
pub(super) fn replaces_for(
    observed: &Observed,
    renewal_info: &Option<RenewalInfoStatus>,
    type_: AttemptType,
) -> Option<String> {
    let SecretState::Present(stored) = &observed.secret else { return None };
    let offered = renewal_info
        .as_ref()
        .is_some_and(|r| r.window_start.is_some() && Some(&r.certificate_id) == stored.ari_id.as_ref());
    (offered && matches!(type_, AttemptType::Renew | AttemptType::Manual)).then(|| stored.ari_id.clone()).flatten()
}

pub(super) fn new_attempt(
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
pub(super) enum Created {
    /// Made now, with this uid.
    Now(String),
    /// It exists already, and is this decision's (a retry of a create that was not answered).
    Before,
    /// Someone else's attempt has that name: take the next index.
    NameTaken,
}

/// Creates the attempt; AlreadyExists is success when the existing attempt is this one.
pub(super) async fn create_attempt(
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
pub(super) async fn request_cancel(api: &Api<CertificateAttempt>, attempt: &str, reason: &str) -> Result<()> {
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
pub(super) async fn prune(
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
