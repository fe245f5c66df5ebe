//! The controllers, all in one process: Certificate, CertificateAttempt, Issuer/ClusterIssuer,
//! and the Ingress/Gateway shim.

pub mod attempt;
pub mod cache;
pub mod certificate;
pub mod context;
pub mod events;
pub mod issuer;
pub mod routes;
pub mod sealing;
pub mod shim;

use crate::error::{Error, Result};
use context::{Context, FIELD_MANAGER};
use futures::{Stream, StreamExt};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde::{Serialize, de::DeserializeOwned};
use std::{fmt::Debug, sync::Arc, time::Duration};

/// Writes `status` with server-side apply under certpilot's field manager, and notes what
/// was written (see `cache::LastWrites`).
pub async fn apply_status<K>(ctx: &Context, api: &Api<K>, name: &str, status: &impl Serialize) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    apply_status_at(ctx, api, name, status, None).await
}

/// `apply_status`, on the condition that the object is still at `resource_version` (else a 409).
pub async fn apply_status_at<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    status: &impl Serialize,
    resource_version: Option<&str>,
) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "status": status,
    });
    if let Some(version) = resource_version {
        body["metadata"]["resourceVersion"] = version.into();
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api.patch_status(name, &params, &Patch::Apply(&body)).await?;
    if let Some(uid) = written.meta().uid.as_deref() {
        ctx.last_writes.record(uid, &status_of(&written));
    }
    Ok(written)
}

/// An object's status as JSON (what `LastWrites` compares).
pub fn status_of<K: Serialize>(object: &K) -> serde_json::Value {
    serde_json::to_value(object).map(|mut v| v["status"].take()).unwrap_or_default()
}

/// Whether the cached `object` does not show certpilot's last status write yet.
pub fn lags<K: Resource + Serialize>(ctx: &Context, object: &K) -> bool {
    object.meta().uid.as_deref().is_some_and(|uid| ctx.last_writes.lags(uid, &status_of(object)))
}

/// After a failed reconcile: log, count, and retry in a little while.
pub fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource,
{
    move |object, error, ctx| {
        let name = object.meta().name.as_deref().unwrap_or_default();
        match error.admission_policy() {
            Some(refusal) => ctx.admission_refused(&refusal, controller, name),
            None => tracing::warn!(controller, name, %error, "reconcile failed"),
        }
        ctx.metrics.error(controller, error);
        let jitter = crate::policy::unit_jitter(object.meta().name.as_deref().unwrap_or_default());
        Action::requeue(Duration::from_secs_f64(10.0 + 10.0 * jitter))
    }
}

/// Drives a controller's stream to its end (shutdown), logging what it reports.
pub async fn run_controller<T: Debug, E: std::fmt::Display>(
    controller: &'static str,
    stream: impl Stream<Item = std::result::Result<T, E>>,
) {
    stream
        .for_each(|result| async move {
            match result {
                Ok(object) => tracing::trace!(controller, ?object, "reconciled"),
                Err(error) => tracing::debug!(controller, %error, "controller event"),
            }
        })
        .await;
}

/// Runs every controller until a shutdown signal; the shared watches run as long as they do.
pub async fn run_all(ctx: Arc<Context>, feeds: cache::Feeds) {
    let ctx_for_housekeeping = ctx.clone();
    // Before anything subscribes to the shared watches (which then wait for their subscribers).
    let gateways = shim::gateway_api_installed(&ctx.client).await;
    let controllers = futures::future::join5(
        certificate::run(ctx.clone(), &feeds),
        attempt::run(ctx.clone(), &feeds),
        issuer::run(ctx.clone(), &feeds),
        shim::run(ctx.clone(), &feeds, gateways),
        routes::run(ctx, &feeds),
    );
    futures::pin_mut!(controllers);
    let watches = futures::future::join(feeds.run(), housekeeping(ctx_for_housekeeping));
    futures::pin_mut!(watches);
    futures::future::select(controllers, watches).await;
}

/// How often what expired is dropped from the notes of recent work.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);

/// Forgets what a burst of work noted once it no longer counts, so that a quiet operator holds
/// its caches and little else.
async fn housekeeping(ctx: Arc<Context>) {
    let mut interval = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        ctx.last_writes.prune();
        ctx.recent_creates.prune();
    }
}
