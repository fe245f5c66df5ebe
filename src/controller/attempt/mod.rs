//! The CertificateAttempt controller: the only writer of an attempt's status. It runs an
//! attempt only when it is certpilot's own (see `policy::trust`), drives it through its phases
//! (`phases.rs`, one function per phase), performs the cancellations the Certificate controller
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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action},
};
use std::sync::Arc;

pub use cleanup::key_secret_name;

const CLEANUP_STEP: &str = "Cleanup";

async fn reconcile(cached: Arc<CertificateAttempt>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("attempt");
    if is_settled(&cached) {
        return Ok(Action::await_change());
    }
    let namespace = cached.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<CertificateAttempt> = ctx.namespaced(&namespace);
    // The cache may lag behind our own last status write: read the attempt afresh, so that a
    // finished attempt is never run a second time.
    let Some(attempt) = api.get_opt(&cached.name_any()).await? else { return Ok(Action::await_change()) };
    if is_settled(&attempt) {
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
    let certificate = ctx.namespaced::<Certificate>(&namespace).get_opt(&attempt.spec.certificate_name).await?;
    let ending = match verdict(&attempt, certificate.as_ref()) {
        Verdict::Rejected(why) => Some((AttemptPhase::Rejected, Failure::new(FailureCode::InvalidSpec, why))),
        Verdict::Superseded(why) => Some((AttemptPhase::Cancelled, Failure::new(FailureCode::InvalidSpec, why))),
        Verdict::Trusted => cancellation(&attempt),
    };
    if let Some((phase, failure)) = ending {
        return end_without_running(&ctx, &api, &attempt, phase, failure).await;
    }
    phases::drive(&ctx, &api, &attempt).await
}

/// Nothing left to do: ended and cleaned up, or gone.
fn is_settled(attempt: &CertificateAttempt) -> bool {
    let ended = attempt.status.as_ref().is_some_and(|s| s.phase.is_terminal());
    ended && !attempt.finalizers().iter().any(|f| f == CLEANUP_FINALIZER)
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
    status.finished_at = Some(Time(jiff::Timestamp::now()));
    status.error_code = Some(word.into());
    status.error_message = Some(failure.message.clone());
    status.conditions = vec![stamped(Condition::new("Succeeded", false, word, failure.message))];
    if attempt.meta().deletion_timestamp.is_none() {
        apply_status(api, &attempt.name_any(), &status).await?;
    }
    release(api, attempt).await?;
    Ok(Action::await_change())
}

fn stamped(mut condition: Condition) -> Condition {
    condition.last_transition_time = Some(Time(jiff::Timestamp::now()));
    condition
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
    let stream = Controller::for_shared_stream(feeds.attempts.subscribe(), ctx.caches.attempts.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy("attempt"), ctx);
    run_controller("attempt", stream)
}
