//! The CertificateAttempt controller: the only writer of an attempt's status. It runs an
//! attempt only when it is certpilot's own (see `policy::trust`), drives it through its phases
//! (`phases/`, one function per phase), performs the cancellations the Certificate controller
//! asks for, and cleans up behind every attempt that ends or is deleted (`cleanup.rs`).

mod cleanup;
mod phases;

use super::{apply_status, cache::Feeds, context::Context, error_policy, run_controller};
use crate::{
    api::{
        CANCEL_ANNOTATION, CLEANUP_FINALIZER, Certificate, CertificateAttempt,
        attempt::{AttemptPhase, CertificateAttemptStatus},
        conditions::Condition,
    },
    error::{Error, Result, is_not_found},
    issuance::{Failure, FailureCode, steps::StepLog},
    policy::trust::{Verdict, verdict},
};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use std::sync::Arc;

pub use cleanup::key_secret_name;

const CLEANUP_STEP: &str = "Cleanup";

async fn reconcile(cached: Arc<CertificateAttempt>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("attempt");
    if cached.is_settled() {
        return Ok(Action::await_change());
    }
    ctx.caches.wait_until_ready().await;
    let namespace = cached.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<CertificateAttempt> = ctx.namespaced(&namespace);
    // The cache may lag behind certpilot's own last status write: then read the attempt afresh,
    // so that a finished attempt is never run a second time.
    let attempt = if super::lags(&ctx, cached.as_ref()) {
        let Some(fresh) = api.get_opt(&cached.name_any()).await? else { return Ok(Action::await_change()) };
        fresh
    } else {
        cached.as_ref().clone()
    };
    if attempt.is_settled() {
        return Ok(Action::await_change());
    }
    let phase = attempt.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase.is_terminal() {
        // Ended, but not yet cleaned up (or deleted while ending): finish that now.
        if phase != AttemptPhase::Rejected {
            cleanup::run(&ctx, &attempt).await?;
        }
        release(&api, &attempt).await?;
        return Ok(Action::await_change());
    }
    let ending = match owner_verdict(&ctx, &attempt, &namespace).await? {
        Verdict::Rejected(why) => Some((AttemptPhase::Rejected, Failure::new(FailureCode::InvalidSpec, why))),
        Verdict::Superseded(why) => Some((AttemptPhase::Cancelled, Failure::new(FailureCode::InvalidSpec, why))),
        Verdict::Trusted => cancellation(&attempt),
    };
    if let Some((phase, failure)) = ending {
        return end_without_running(&ctx, &api, &attempt, phase, failure).await;
    }
    phases::drive(&ctx, &api, &attempt).await
}

/// Whether the attempt is its Certificate's own. The cached Certificate decides when it trusts
/// the attempt; anything else is checked against the Certificate as it is now (the cache may
/// not show a new Certificate, or a spec change the attempt was made for, yet).
async fn owner_verdict(ctx: &Context, attempt: &CertificateAttempt, namespace: &str) -> Result<Verdict> {
    let name = &attempt.spec.certificate_name;
    let cached = ctx.caches.certificates.get(&ObjectRef::new(name).within(namespace));
    if cached.is_some_and(|certificate| verdict(attempt, Some(&certificate)) == Verdict::Trusted) {
        return Ok(Verdict::Trusted);
    }
    let certificate = ctx.namespaced::<Certificate>(namespace).get_opt(name).await?;
    Ok(verdict(attempt, certificate.as_ref()))
}

/// The cancellation the Certificate controller asked for, or deletion (which cancels too).
fn cancellation(attempt: &CertificateAttempt) -> Option<(AttemptPhase, Failure)> {
    if attempt.meta().deletion_timestamp.is_some() {
        return Some((AttemptPhase::Cancelled, Failure::new(FailureCode::InvalidSpec, "the attempt was deleted")));
    }
    let reason = attempt.annotations().get(CANCEL_ANNOTATION)?;
    Some((AttemptPhase::Cancelled, Failure::new(FailureCode::InvalidSpec, reason.clone())))
}

/// Ends an attempt that is not (or no longer) to run: Rejected touches nothing; Cancelled
/// removes whatever it had set up.
async fn end_without_running(
    ctx: &Context,
    api: &Api<CertificateAttempt>,
    attempt: &CertificateAttempt,
    phase: AttemptPhase,
    failure: Failure,
) -> Result<Action> {
    let mut status = attempt.status.clone().unwrap_or_default();
    if phase == AttemptPhase::Cancelled {
        cleanup::run(ctx, attempt).await?;
        let mut log = StepLog::from(std::mem::take(&mut status.steps));
        log.begin(CLEANUP_STEP);
        log.succeed("removed the key, solver routes and records of the cancelled attempt");
        status.steps = log.steps;
    }
    let word = if phase == AttemptPhase::Rejected { "Rejected" } else { "Cancelled" };
    tracing::info!(attempt = %attempt.name_any(), phase = word, reason = %failure.message, "attempt ended without running");
    status.phase = phase;
    status.sealed_key = None;
    status.finished_at = Some(Time(jiff::Timestamp::now()));
    status.error_code = Some(word.into());
    status.error_message = Some(failure.message.clone());
    status.conditions = vec![stamped(Condition::new("Succeeded", false, word, failure.message))];
    if attempt.meta().deletion_timestamp.is_none() {
        apply_status(ctx, api, &attempt.name_any(), &status).await?;
    }
    release(api, attempt).await?;
    Ok(Action::await_change())
}

fn stamped(mut condition: Condition) -> Condition {
    condition.last_transition_time = Some(Time(jiff::Timestamp::now()));
    condition
}

/// Adds certpilot's finalizer when the attempt does not hold it yet, on the condition that the
/// attempt is still the version read (never dropping a finalizer someone added meanwhile).
async fn hold(api: &Api<CertificateAttempt>, attempt: &CertificateAttempt) -> Result<()> {
    if attempt.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(());
    }
    let mut held: Vec<&str> = attempt.finalizers().iter().map(String::as_str).collect();
    held.push(CLEANUP_FINALIZER);
    let patch = serde_json::json!({"metadata": {"resourceVersion": attempt.resource_version(), "finalizers": held}});
    api.patch(&attempt.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Removes certpilot's finalizer once nothing is left to clean up.
async fn release(api: &Api<CertificateAttempt>, attempt: &CertificateAttempt) -> Result<()> {
    if !attempt.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(());
    }
    let remaining: Vec<&String> = attempt.finalizers().iter().filter(|f| *f != CLEANUP_FINALIZER).collect();
    // Only if the finalizers are still what was read: never drop one someone added meanwhile.
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/finalizers", "value": attempt.finalizers()},
        {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
    ]))?;
    match api.patch(&attempt.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Ends an attempt's status with `outcome`'s failure, or as a success.
pub(crate) fn finish_status(status: &mut CertificateAttemptStatus, failure: Option<&Failure>) {
    status.finished_at = Some(Time(jiff::Timestamp::now()));
    // The sealed key is in the Secret now, or of no more use.
    status.sealed_key = None;
    match failure {
        None => {
            status.phase = AttemptPhase::Succeeded;
            status.error_code = None;
            status.error_message = None;
            status.conditions =
                vec![stamped(Condition::new("Succeeded", true, "Issued", "the certificate was written to the Secret"))];
        }
        Some(failure) => {
            status.phase = AttemptPhase::Failed;
            status.error_code = Some(failure.code.as_str().into());
            status.error_message = Some(failure.message.clone());
            status.retry_after = failure.retry_after.map(Time);
            status.conditions =
                vec![stamped(Condition::new("Succeeded", false, failure.code.as_str(), failure.message.clone()))];
        }
    }
}

/// The attempt controller, subscribed to the shared watch now, running when awaited.
pub fn run(ctx: Arc<Context>, feeds: &Feeds) -> impl std::future::Future<Output = ()> + use<> {
    let forget = forget_deleted(ctx.clone(), feeds);
    let stream = Controller::for_shared_stream(feeds.attempts.subscribe_working(), ctx.caches.working_attempts.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency))
        .reconcile_on(ctx.slot_wakes.take())
        .shutdown_on_signal()
        .run(reconcile, error_policy("attempt"), ctx);
    async move {
        futures::pin_mut!(forget);
        let controller = run_controller("attempt", stream);
        futures::pin_mut!(controller);
        futures::future::select(controller, forget).await;
    }
}

/// An attempt deleted without certpilot's finalizer (one that publishes no DNS-01 records)
/// gives its order slot (or its place in the queue for one) back at once, not when the
/// lease runs out.
fn forget_deleted(ctx: Arc<Context>, feeds: &Feeds) -> impl std::future::Future<Output = ()> + use<> {
    feeds.attempts.deletions().for_each(move |attempt| {
        ctx.release_order_slot(&attempt.namespace().unwrap_or_default(), &attempt.name_any());
        if let Some(uid) = attempt.uid() {
            ctx.unordered.take(&uid);
        }
        futures::future::ready(())
    })
}
