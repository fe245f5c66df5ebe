//! Removing what an attempt set up: its key Secret, HTTP-01 routes, DNS-01 records and its
//! order slot (the solver servers stop answering its challenges when it ends, see
//! `solver::answers`). Idempotent: run again after a crash, it finds nothing left to remove.

use super::super::context::Context;
use crate::{
    api::{CertificateAttempt, IssuerSpec},
    error::{Result, is_not_found},
    secret::shorten,
    solver::{self, dns01, http01},
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Preconditions},
};

/// The temporary Secret holding an attempt's new private key until the target Secret has it.
pub fn key_secret_name(attempt: &str) -> String {
    format!("{}-key", shorten(attempt, 249))
}

pub async fn run(ctx: &Context, attempt: &CertificateAttempt) -> Result<()> {
    let name = attempt.name_any();
    let status = attempt.status.clone().unwrap_or_default();
    remove_dns_records(ctx, attempt, &status.challenges).await?;
    // Published or perhaps published (a pass may have stopped between publishing and
    // recording it): removing what is not there is harmless.
    if status.challenges.iter().any(|r| r.type_ == "http-01") {
        http01::unroute(&ctx.routes, &name).await?;
    }
    // Only ACME attempts save their key; a locally signed one never did.
    if !status.steps.iter().any(|s| s.name == crate::issuance::local::SIGN_STEP) {
        delete_key_secret(ctx, attempt).await?;
    }
    ctx.order_slots.release(&name);
    Ok(())
}

/// Deletes the key Secret, only if it is this attempt's (owned by its uid).
async fn delete_key_secret(ctx: &Context, attempt: &CertificateAttempt) -> Result<()> {
    let namespace = attempt.namespace().unwrap_or_default();
    let secrets: Api<Secret> = ctx.namespaced(&namespace);
    let name = key_secret_name(&attempt.name_any());
    let Some(existing) = secrets.get_opt(&name).await? else { return Ok(()) };
    let ours = existing.owner_references().iter().any(|o| Some(&o.uid) == attempt.uid().as_ref());
    if !ours {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: existing.uid(), resource_version: None }),
        ..DeleteParams::background()
    };
    match secrets.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The issuer's spec, for the solvers that published records (from the shared cache).
pub fn issuer_spec(ctx: &Context, attempt: &CertificateAttempt) -> Option<IssuerSpec> {
    let namespace = attempt.namespace().unwrap_or_default();
    ctx.caches.issuer(&attempt.spec.issuer_ref, &namespace).map(|(spec, _)| spec)
}

/// Deletes the DNS-01 TXT records the attempt published; a failure is logged, not fatal (the
/// records are harmless and the CA has already checked them).
async fn remove_dns_records(
    ctx: &Context,
    attempt: &CertificateAttempt,
    challenges: &[crate::api::attempt::ValidationRecord],
) -> Result<()> {
    let published: Vec<_> = challenges.iter().filter(|r| r.type_ == "dns-01").collect();
    if published.is_empty() {
        return Ok(());
    }
    let Some(acme) = issuer_spec(ctx, attempt).and_then(|s| s.acme) else { return Ok(()) };
    let secrets: Api<Secret> =
        ctx.namespaced(&ctx.issuer_secret_namespace(attempt.spec.issuer_ref.kind, attempt.namespace().as_deref()));
    for record in published {
        let solver = solver::select(&acme.solvers, &record.dns_name).ok().and_then(|(s, _)| s.dns01.clone());
        let written = record.delegated_to.as_deref().or(record.record_name.as_deref());
        let (Some(solver), Some(written), Some(value)) = (solver, written, record.record_value.as_deref()) else {
            continue;
        };
        let ambient = ctx.ambient_credentials_allowed(attempt.spec.issuer_ref.kind);
        let removed = match dns01::configured(&secrets, &solver, ambient).await {
            Ok(provider) => dns01::cleanup(&provider, written, value).await,
            Err(stop) => Err(stop.failure()?),
        };
        if let Err(failure) = removed {
            tracing::warn!(attempt = %attempt.name_any(), name = %record.dns_name, error = %failure.message, "could not remove the DNS-01 record");
        }
    }
    Ok(())
}
