//! The controllers, all in one process: Certificate, CertificateAttempt, Issuer/ClusterIssuer.

pub mod attempt;
pub mod cache;
pub mod certificate;
pub mod context;
pub mod issuer;

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

/// Writes `status` with server-side apply under certpilot's field manager.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch_status(name, &params, &Patch::Apply(&body)).await?)
}

/// After a failed reconcile: log, count, and retry in a little while.
pub fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource,
{
    move |object, error, ctx| {
        tracing::warn!(controller, name = %object.meta().name.as_deref().unwrap_or_default(), %error, "reconcile failed");
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
    let controllers = futures::future::join3(
        certificate::run(ctx.clone(), &feeds),
        attempt::run(ctx.clone(), &feeds),
        issuer::run(ctx, &feeds),
    );
    futures::pin_mut!(controllers);
    let watches = feeds.run();
    futures::pin_mut!(watches);
    futures::future::select(controllers, watches).await;
}
