//! The Certificate controller: dereference (issuer, Secret, attempts: `observe`) → decide
//! (pure: `policy::trigger`) → create or cancel an attempt (`attempts`) → summarise status
//! (pure: `policy::status`) → requeue at the next moment that matters (`schedule`). Here: the
//! reconcile that runs those stages, the status write, and what wakes a Certificate.

mod attempts;
mod observe;
mod schedule;

use super::{apply_status, apply_status_at, cache::Feeds, context::Context, error_policy, run_controller};
use crate::{
    api::{
        CERTIFICATE_NAME_LABEL, Certificate, CertificateAttempt, ClusterIssuer, Issuer, IssuerKind,
        attempt::AttemptType,
        certificate::CertificateStatus,
        conditions::{self, Condition},
    },
    error::{Error, Result},
    policy::{status::summarise, trigger::Decision, trust::attempt_index},
};
use attempts::{Created, create_attempt, new_attempt, prune, replaces_for, request_cancel};
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use observe::{Observation, desired, observe};
use schedule::{UNSHOWN_START, next_reconcile, sweep, unshown_start};
use std::{sync::Arc, time::Duration};

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
