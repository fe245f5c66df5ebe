//! Removing what an attempt set up: DNS-01 records, its order slot, and what an older certpilot
//! set up per attempt (HTTP-01 routes, a key Secret). The solver servers stop answering its
//! challenges when it ends (`solver::answers`); the host's HTTP-01 route stays for the next
//! attempt (`controller::routes`). Idempotent: run again after a crash, it finds nothing left
//! to remove.

use super::{super::context::Context, phases::GENERATE_KEY_STEP};
use crate::{
    api::{
        CertificateAttempt, IssuerSpec,
        attempt::{CertificateAttemptStatus, Step},
    },
    error::{Result, is_not_found},
    secret::shorten,
    solver::{self, dns01},
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Preconditions},
};

/// The temporary Secret in which a certpilot before sealed keys (`pki::seal`) kept an attempt's
/// new private key until the target Secret had it.
pub fn key_secret_name(attempt: &str) -> String {
    format!("{}-key", shorten(attempt, 249))
}

pub async fn run(ctx: &Context, attempt: &CertificateAttempt) -> Result<()> {
    let name = attempt.name_any();
    let status = attempt.status.clone().unwrap_or_default();
    let namespace = attempt.namespace().unwrap_or_default();
    remove_dns_records(ctx, attempt, &status.challenges).await?;
    ctx.routes.remove_older(&namespace, &name).await?;
    if status.challenges.iter().any(|r| r.type_ == "http-01") {
        // The Certificate may have stopped naming a host it routed, or be gone.
        ctx.routes.sweep_soon();
    }
    if kept_key_in_secret(&status) {
        delete_key_secret(ctx, attempt).await?;
    }
    ctx.release_order_slot(&namespace, &name);
    if let Some(uid) = attempt.uid() {
        ctx.unordered.take(&uid);
    }
    Ok(())
}

/// Whether the attempt was begun by a certpilot that saved an ACME attempt's new key in a
/// Secret of its own (its key step does not say the key was sealed); local attempts never did.
fn kept_key_in_secret(status: &CertificateAttemptStatus) -> bool {
    let signed_locally = status.steps.iter().any(|s| s.name == crate::issuance::local::SIGN_STEP);
    let made_or_reused = |s: &Step| s.message.starts_with("generated") || s.message.starts_with("reused");
    let unsealed =
        status.steps.iter().any(|s| s.name == GENERATE_KEY_STEP && made_or_reused(s) && !s.message.contains("sealed"));
    !signed_locally && unsealed
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

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, message: &str) -> Step {
        Step { name: name.into(), message: message.into(), ..Default::default() }
    }

    fn with_steps(steps: Vec<Step>) -> CertificateAttemptStatus {
        CertificateAttemptStatus { steps, ..Default::default() }
    }

    #[test]
    fn only_attempts_begun_before_keys_were_sealed_have_a_key_secret() {
        let generated = |message: &str| with_steps(vec![step(GENERATE_KEY_STEP, message)]);
        assert!(kept_key_in_secret(&generated("generated a new ECDSA-256 key")));
        assert!(kept_key_in_secret(&generated("reused the key saved earlier by this attempt")));
        assert!(!kept_key_in_secret(&generated("generated a new ECDSA-256 key and sealed it into this status")));
        assert!(!kept_key_in_secret(&generated("reused the key sealed into this status by an earlier pass")));
        assert!(!kept_key_in_secret(&generated(
            "kept the ECDSA-256 key already in the Secret (rotationPolicy: Never)"
        )));
        let local = with_steps(vec![
            step(GENERATE_KEY_STEP, "generated a new ECDSA-256 key"),
            step(crate::issuance::local::SIGN_STEP, "signed"),
        ]);
        assert!(!kept_key_in_secret(&local), "a locally signed attempt never saved its key");
    }
}
