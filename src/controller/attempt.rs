//! The CertificateAttempt controller: drives one attempt from Pending to Succeeded or Failed,
//! recording every step, and writes the target Secret only with a verified key and chain.

use super::{
    apply_status,
    context::{Context, FIELD_MANAGER},
    error_policy,
    issuer::{Signer, load_signer, secret_namespace},
    run_controller,
};
use crate::{
    api::{
        CertificateAttempt, ClusterIssuer, Issuer, IssuerKind, IssuerSpec, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
        attempt::{AttemptPhase, CertificateAttemptStatus, IssuedCertificate},
        certificate::{KeyEncoding, OutputFormatType, RotationPolicy},
        conditions::Condition,
        issuer::AcmeIssuer,
    },
    error::{Result, is_not_found},
    issuance::acme::{self, account::load_or_register, order::Next},
    issuance::{Failure, Obtained, local, steps::StepLog},
    pki::PrivateKey,
    secret::{self, SecretContents, shorten},
    solver::http01,
};
use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use std::{collections::BTreeMap, sync::Arc};

/// The temporary Secret holding an attempt's new private key until the target Secret has it.
pub fn key_secret_name(attempt: &str) -> String {
    format!("{}-key", shorten(attempt, 249))
}

async fn reconcile(cached: Arc<CertificateAttempt>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("attempt");
    if is_finished(&cached) {
        return Ok(Action::await_change());
    }
    let namespace = cached.namespace().ok_or(crate::error::Error::MissingField("metadata.namespace"))?;
    let api: Api<CertificateAttempt> = ctx.namespaced(&namespace);
    let name = cached.name_any();
    // The cache may lag behind our own last status write: read the attempt afresh, so that a
    // finished attempt is never run a second time.
    let Some(attempt) = api.get_opt(&name).await? else { return Ok(Action::await_change()) };
    if needs_cleanup_after_cancel(&attempt) {
        let mut status = attempt.status.clone().unwrap_or_default();
        cleanup(&ctx, &attempt, &namespace, &status).await?;
        let mut log = StepLog::from(std::mem::take(&mut status.steps));
        log.begin(CLEANUP_STEP);
        log.succeed("removed the key, solver routes and records of the cancelled attempt");
        status.steps = log.steps;
        apply_status(&api, &name, &status).await?;
        return Ok(Action::await_change());
    }
    if is_finished(&attempt) {
        return Ok(Action::await_change());
    }
    let status = attempt.status.clone().unwrap_or_default();
    let mut status = start(&api, &name, status).await?;
    let before = status.clone();
    let mut log = StepLog::from(std::mem::take(&mut status.steps));
    let outcome = match prepare(&ctx, &attempt, &namespace, &mut log).await? {
        Err(failure) => Err(failure),
        Ok(Prepared { signer: Signer::Acme(issuer), key }) => {
            match acme_step(&ctx, &attempt, &namespace, &issuer, &key, &mut status, &mut log).await? {
                Next::Requeue(after) => {
                    status.steps = log.steps;
                    if status != before {
                        apply_status(&api, &name, &status).await?;
                    }
                    return Ok(Action::requeue(after));
                }
                Next::Finished(outcome) => store(&ctx, &attempt, &namespace, *outcome, &mut log).await?,
            }
        }
        Ok(Prepared { signer, key }) => {
            let signed = local::sign(&attempt.spec, &signer, key, &mut log);
            store(&ctx, &attempt, &namespace, signed, &mut log).await?
        }
    };
    cleanup(&ctx, &attempt, &namespace, &status).await?;
    announce(&ctx, &attempt, &outcome).await;
    finish(&mut status, log, outcome, &ctx, attempt.spec.issuer_ref.kind);
    apply_status(&api, &name, &status).await?;
    Ok(Action::await_change())
}

/// Writes a verified certificate to the target Secret; a failure passes through.
async fn store(
    ctx: &Context,
    attempt: &CertificateAttempt,
    namespace: &str,
    outcome: Result<Obtained, Failure>,
    log: &mut StepLog,
) -> Result<Result<Obtained, Failure>> {
    let obtained = match outcome {
        Ok(obtained) => obtained,
        Err(failure) => return Ok(Err(failure)),
    };
    log.begin("WriteSecret");
    match write_target(ctx, attempt, namespace, &obtained).await? {
        Ok(()) => {
            log.succeed(format!("wrote Secret {}", attempt.spec.secret_name));
            Ok(Ok(obtained))
        }
        Err(failure) => {
            log.fail(failure.message.clone());
            Ok(Err(failure))
        }
    }
}

/// Removes what the attempt set up: its key Secret, HTTP-01 routes and tokens, TLS-ALPN-01
/// certificates and DNS-01 records.
async fn cleanup(
    ctx: &Context,
    attempt_object: &CertificateAttempt,
    namespace: &str,
    status: &CertificateAttemptStatus,
) -> Result<()> {
    let attempt = &attempt_object.name_any();
    remove_dns_records(ctx, attempt_object, namespace, status).await?;
    let keys: Api<Secret> = ctx.namespaced(namespace);
    if let Err(e) = keys.delete(&key_secret_name(attempt), &DeleteParams::default()).await
        && !is_not_found(&e)
    {
        return Err(e.into());
    }
    for record in &status.challenges {
        if let Some(token) = record.http_url.as_deref().and_then(|u| u.rsplit('/').next()) {
            ctx.solvers.remove_http01(token);
        }
        if record.type_ == "tls-alpn-01" {
            ctx.solvers.remove_tls_alpn01(&record.dns_name);
        }
    }
    if status.challenges.iter().any(|r| r.type_ == "http-01") {
        http01::unroute(ctx, attempt).await?;
    }
    ctx.release_order_slot(attempt);
    Ok(())
}

/// Deletes the DNS-01 TXT records the attempt published; a failure is logged, not fatal (the
/// records are harmless and the CA has already checked them).
async fn remove_dns_records(
    ctx: &Context,
    attempt: &CertificateAttempt,
    namespace: &str,
    status: &CertificateAttemptStatus,
) -> Result<()> {
    let records: Vec<_> = status.challenges.iter().filter(|r| r.type_ == "dns-01").collect();
    if records.is_empty() {
        return Ok(());
    }
    let Some((spec, _)) = issuer_spec(ctx, attempt, namespace).await? else { return Ok(()) };
    let Some(acme) = spec.acme else { return Ok(()) };
    for record in records {
        let solver = crate::solver::select(&acme.solvers, &record.dns_name)
            .ok()
            .and_then(|(s, _)| s.dns01.as_ref())
            .and_then(|d| d.rfc2136.clone());
        let (Some(solver), Some(value)) = (solver, record.record_value.as_deref()) else { continue };
        if let Err(failure) = crate::solver::dns01::cleanup(ctx, attempt, &solver, &record.dns_name, value).await? {
            tracing::warn!(attempt = %attempt.name_any(), name = %record.dns_name, error = %failure.message, "could not remove the DNS-01 record");
        }
    }
    Ok(())
}

/// One step of an ACME attempt, within the issuer's limit of orders in flight.
async fn acme_step(
    ctx: &Context,
    attempt: &CertificateAttempt,
    namespace: &str,
    issuer: &AcmeIssuer,
    key: &PrivateKey,
    status: &mut CertificateAttemptStatus,
    log: &mut StepLog,
) -> Result<Next> {
    let issuer_ref = &attempt.spec.issuer_ref;
    if !ctx.take_order_slot(&acme::order::issuer_key(attempt), &attempt.name_any()) {
        return Ok(Next::Requeue(std::time::Duration::from_secs(5)));
    }
    let running = status.started_at.as_ref().map(|t| jiff::Timestamp::now().duration_since(t.0)).unwrap_or_default();
    if running > ACME_ATTEMPT_TIMEOUT {
        let message = format!(
            "the order did not complete within {ACME_ATTEMPT_TIMEOUT:#}; see the challenges for what the CA is still waiting on"
        );
        return Ok(Next::fail(Failure::new("Timeout", message)));
    }
    let account_namespace = secret_namespace(ctx, issuer_ref.kind, Some(namespace));
    let account = match load_or_register(ctx, &issuer_ref.name, &account_namespace, issuer).await? {
        Ok(account) => account,
        Err(failure) => return Ok(Next::fail(failure)),
    };
    Ok(match acme::order::advance(ctx, attempt, issuer, &account, key, status, log).await? {
        Next::Requeue(after) => Next::Requeue(after.max(poll_interval(running))),
        finished => finished,
    })
}

/// How long an ACME attempt may run before it is given up.
const ACME_ATTEMPT_TIMEOUT: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// Polls the CA often at first, then less: a slow validation does not cost a request a second.
fn poll_interval(running: jiff::SignedDuration) -> std::time::Duration {
    match running.as_secs() {
        0..30 => std::time::Duration::ZERO,
        30..300 => std::time::Duration::from_secs(5),
        _ => std::time::Duration::from_secs(15),
    }
}

const CLEANUP_STEP: &str = "Cleanup";

/// A cancelled attempt (its Certificate changed under it) still has its key Secret, solver
/// routes and DNS records until cleaned up, once.
fn needs_cleanup_after_cancel(attempt: &CertificateAttempt) -> bool {
    attempt
        .status
        .as_ref()
        .is_some_and(|s| s.phase == AttemptPhase::Cancelled && !s.steps.iter().any(|step| step.name == CLEANUP_STEP))
}

/// An Event on the Certificate for the attempt's outcome.
async fn announce(ctx: &Context, attempt: &CertificateAttempt, outcome: &Result<Obtained, Failure>) {
    let Some(owner) = attempt.owner_references().iter().find(|o| o.kind == "Certificate") else { return };
    let certificate = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: attempt.namespace(),
        uid: Some(owner.uid.clone()),
        ..Default::default()
    };
    let name = attempt.name_any();
    match outcome {
        Ok(obtained) => {
            let note = format!(
                "attempt {name} wrote Secret {}: serial {}, valid until {}",
                attempt.spec.secret_name, obtained.info.serial_hex, obtained.info.not_after
            );
            ctx.event(&certificate, false, "Issued", "Issue", note).await;
        }
        Err(failure) => {
            let note = format!("attempt {name} failed ({}): {}", failure.code, failure.message);
            ctx.event(&certificate, true, "AttemptFailed", "Issue", note).await;
        }
    }
}

fn is_finished(attempt: &CertificateAttempt) -> bool {
    let done = attempt.status.as_ref().is_some_and(|s| s.phase.is_terminal()) && !needs_cleanup_after_cancel(attempt);
    done || attempt.meta().deletion_timestamp.is_some()
}

/// Marks the attempt started (once; a restarted operator keeps the first start time).
async fn start(
    api: &Api<CertificateAttempt>,
    name: &str,
    mut status: CertificateAttemptStatus,
) -> Result<CertificateAttemptStatus> {
    if status.started_at.is_none() {
        status.phase = AttemptPhase::Ordering;
        status.started_at = Some(Time(jiff::Timestamp::now()));
        apply_status(api, name, &status).await?;
    }
    Ok(status)
}

fn finish(
    status: &mut CertificateAttemptStatus,
    log: StepLog,
    outcome: Result<Obtained, Failure>,
    ctx: &Context,
    kind: IssuerKind,
) {
    status.steps = log.steps;
    status.finished_at = Some(Time(jiff::Timestamp::now()));
    let kind_label = match kind {
        IssuerKind::Issuer => "Issuer",
        IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    match outcome {
        Ok(obtained) => {
            status.phase = AttemptPhase::Succeeded;
            status.issued = Some(IssuedCertificate {
                serial_number: obtained.info.serial_hex.clone(),
                not_before: Time(obtained.info.not_before),
                not_after: Time(obtained.info.not_after),
                fingerprint_sha256: obtained.info.fingerprint_sha256.clone(),
            });
            status.error_code = None;
            status.error_message = None;
            status.conditions =
                vec![Condition::new("Succeeded", true, "Issued", "the certificate was written to the Secret")];
            ctx.metrics.attempt_finished(kind_label, "succeeded");
        }
        Err(failure) => {
            status.phase = AttemptPhase::Failed;
            status.error_code = Some(failure.code.into());
            status.error_message = Some(failure.message.clone());
            status.retry_after = failure.retry_after.map(Time);
            status.conditions = vec![Condition::new("Succeeded", false, failure.code, failure.message)];
            ctx.metrics.attempt_finished(kind_label, "failed");
        }
    }
    let now = Time(jiff::Timestamp::now());
    for c in &mut status.conditions {
        c.last_transition_time = Some(now.clone());
    }
}

/// What an attempt signs with and the key it certifies.
struct Prepared {
    signer: Signer,
    key: PrivateKey,
}

/// Resolves the issuer, checks the target Secret may be written, and gets the key (saved
/// before any CA sees a CSR). The outer error is the API's (retried); the inner one ends the attempt.
async fn prepare(
    ctx: &Context,
    attempt: &CertificateAttempt,
    namespace: &str,
    log: &mut StepLog,
) -> Result<Result<Prepared, Failure>> {
    let spec = &attempt.spec;
    let Some((issuer_spec, issuer_namespace)) = issuer_spec(ctx, attempt, namespace).await? else {
        return Ok(Err(Failure::new("IssuerNotFound", format!("{} does not exist", spec.issuer_ref))));
    };
    let signer = match load_signer(ctx, &issuer_spec, &issuer_namespace).await? {
        Ok(signer) => signer,
        Err(not_ready) => return Ok(Err(Failure::new("IssuerNotReady", not_ready.message))),
    };
    let secrets: Api<Secret> = ctx.namespaced(namespace);
    let target = secrets.get_opt(&spec.secret_name).await?;
    if let Some(existing) = &target
        && !secret::may_write(existing, &spec.certificate_name)
    {
        return Ok(Err(not_owned(&spec.secret_name)));
    }
    let first_time = !log.steps.iter().any(|s| s.name == "GenerateKey");
    if first_time {
        log.begin("GenerateKey");
    }
    match key_for(ctx, attempt, namespace, target.as_ref()).await? {
        Ok((key, how)) => {
            if first_time {
                log.succeed(how);
            }
            Ok(Ok(Prepared { signer, key }))
        }
        Err(failure) => {
            log.fail(failure.message.clone());
            Ok(Err(failure))
        }
    }
}

fn not_owned(secret: &str) -> Failure {
    Failure::new(
        "SecretNotOwned",
        format!("Secret {secret} exists and was not created by certpilot for this Certificate; it was left untouched"),
    )
}

async fn issuer_spec(
    ctx: &Context,
    attempt: &CertificateAttempt,
    namespace: &str,
) -> Result<Option<(IssuerSpec, String)>> {
    let r = &attempt.spec.issuer_ref;
    let spec = match r.kind {
        IssuerKind::Issuer => ctx.namespaced::<Issuer>(namespace).get_opt(&r.name).await?.map(|i| i.spec),
        IssuerKind::ClusterIssuer => {
            Api::<ClusterIssuer>::all(ctx.client.clone()).get_opt(&r.name).await?.map(|i| i.spec.issuer)
        }
    };
    Ok(spec.map(|s| (s, secret_namespace(ctx, r.kind, Some(namespace)))))
}

/// The key for this attempt: the Secret's own key when rotation is off and it still fits,
/// else the key saved by an earlier run of this attempt, else a new one, saved before use.
async fn key_for(
    ctx: &Context,
    attempt: &CertificateAttempt,
    namespace: &str,
    target: Option<&Secret>,
) -> Result<Result<(PrivateKey, String), Failure>> {
    let spec = &attempt.spec.private_key;
    if spec.rotation_policy == RotationPolicy::Never
        && let Some(key) = target.and_then(|t| secret::stored_key(t).ok()).filter(|k| k.matches(spec))
    {
        let how = format!("kept the {} key already in the Secret (rotationPolicy: Never)", key.describe());
        return Ok(Ok((key, how)));
    }
    let secrets: Api<Secret> = ctx.namespaced(namespace);
    let name = key_secret_name(&attempt.name_any());
    if let Some(saved) = secrets.get_opt(&name).await?
        && let Ok(key) = secret::stored_key(&saved)
    {
        let how = format!("reused the {} key saved earlier by this attempt", key.describe());
        return Ok(Ok((key, how)));
    }
    let key = match PrivateKey::generate(spec) {
        Ok(key) => key,
        Err(e) => return Ok(Err(Failure::new("KeyGenerationFailed", e.to_string()))),
    };
    let pem = match key.to_pem(KeyEncoding::Pkcs8) {
        Ok(pem) => pem,
        Err(e) => return Ok(Err(Failure::new("KeyGenerationFailed", e.to_string()))),
    };
    let saved = key_secret(attempt, &name, namespace, pem)?;
    match secrets.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &saved).await
    {
        Ok(_) => {}
        // Another run of this attempt saved a key first: use that one.
        Err(e) if crate::error::is_already_exists(&e) => {
            let existing = secrets.get(&name).await?;
            if let Ok(key) = secret::stored_key(&existing) {
                return Ok(Ok((key, "reused the key saved by a concurrent run of this attempt".into())));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let how = format!("generated a new {} key", key.describe());
    Ok(Ok((key, how)))
}

fn key_secret(attempt: &CertificateAttempt, name: &str, namespace: &str, pem: String) -> Result<Secret> {
    let mut saved = Secret {
        data: Some(BTreeMap::from([(secret::TLS_KEY.to_string(), ByteString(pem.into_bytes()))])),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    saved.metadata.name = Some(name.into());
    saved.metadata.namespace = Some(namespace.into());
    saved.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]));
    saved.metadata.owner_references =
        Some(vec![attempt.controller_owner_ref(&()).ok_or(crate::error::Error::MissingField("metadata.uid"))?]);
    Ok(saved)
}

/// Writes the target Secret in one server-side apply, after checking again that it may.
async fn write_target(
    ctx: &Context,
    attempt: &CertificateAttempt,
    namespace: &str,
    obtained: &Obtained,
) -> Result<Result<(), Failure>> {
    let spec = &attempt.spec;
    let secrets: Api<Secret> = ctx.namespaced(namespace);
    if let Some(existing) = secrets.get_opt(&spec.secret_name).await? {
        if !secret::may_write(&existing, &spec.certificate_name) {
            return Ok(Err(not_owned(&spec.secret_name)));
        }
        if existing.type_.as_deref().is_some_and(|t| t != "kubernetes.io/tls") {
            return Ok(Err(Failure::new(
                "SecretTypeMismatch",
                format!(
                    "Secret {} has type {:?}, but certpilot writes kubernetes.io/tls and the type of a Secret cannot change; delete the Secret so certpilot can recreate it",
                    spec.secret_name,
                    existing.type_.as_deref().unwrap_or_default()
                ),
            )));
        }
    }
    let key_pem = match obtained.key.to_pem(spec.private_key.encoding) {
        Ok(pem) => pem,
        Err(e) => return Ok(Err(Failure::new("KeyEncodingFailed", e.to_string()))),
    };
    let certificate = ctx.namespaced::<crate::api::Certificate>(namespace).get_opt(&spec.certificate_name).await?;
    let template = certificate.as_ref().and_then(|c| c.spec.secret_template.clone());
    let formats: Vec<OutputFormatType> = certificate
        .as_ref()
        .and_then(|c| c.spec.additional_output_formats.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.type_)
        .collect();
    let built = secret::build(&SecretContents {
        name: &spec.secret_name,
        namespace,
        certificate: &spec.certificate_name,
        attempt: &attempt.name_any(),
        issuer: &spec.issuer_ref,
        chain_pem: &obtained.chain_pem,
        key_pem: &key_pem,
        key_der: &obtained.key.pkcs8_der(),
        ca_pem: &obtained.ca_pem,
        template: template.as_ref(),
        output_formats: &formats,
        info: &obtained.info,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    secrets.patch(&spec.secret_name, &params, &Patch::Apply(&built)).await?;
    Ok(Ok(()))
}

pub async fn run(ctx: Arc<Context>) {
    let attempts: Api<CertificateAttempt> = ctx.watched();
    let stream = Controller::new(attempts, watcher::Config::default().any_semantic())
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy("attempt"), ctx);
    run_controller("attempt", stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_slows_down_as_an_attempt_runs() {
        assert_eq!(poll_interval(jiff::SignedDuration::from_secs(5)), std::time::Duration::ZERO);
        assert_eq!(poll_interval(jiff::SignedDuration::from_secs(60)), std::time::Duration::from_secs(5));
        assert_eq!(poll_interval(jiff::SignedDuration::from_secs(600)), std::time::Duration::from_secs(15));
    }
}
