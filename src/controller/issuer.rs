//! Issuer and ClusterIssuer controllers: check that the issuer can sign and say so in `Ready`.

use super::{apply_status, cache::Feeds, context::Context, error_policy, run_controller};
use crate::{
    api::{
        ClusterIssuer, Issuer, IssuerKind, IssuerRef, IssuerSpec, IssuerStatus, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
        conditions::{self, Condition},
        issuer::{AcmeIssuer, CaStatus},
    },
    error::Result,
    issuance::{
        Failure,
        acme::{account::AccountSource, directory},
        signer::{Signer, load_signer},
    },
    policy::{
        cluster_issuer::{Claim, writes_status},
        trigger::IssuerState,
    },
    solver::dns_persist01,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use std::{fmt::Debug, sync::Arc, time::Duration};

/// What Issuer and ClusterIssuer have in common.
pub trait IssuerObject:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    const KIND: IssuerKind;
    fn issuer_spec(&self) -> &IssuerSpec;
    fn issuer_status(&self) -> Option<&IssuerStatus>;
    /// The API to write this object's status through.
    fn api_for(&self, client: kube::Client) -> Api<Self>;
}

impl IssuerObject for Issuer {
    const KIND: IssuerKind = IssuerKind::Issuer;
    fn issuer_spec(&self) -> &IssuerSpec {
        &self.spec
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn api_for(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl IssuerObject for ClusterIssuer {
    const KIND: IssuerKind = IssuerKind::ClusterIssuer;
    fn issuer_spec(&self) -> &IssuerSpec {
        &self.spec.issuer
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn api_for(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

/// The Ready condition and what else the status says of an issuer: CA details, the ACME
/// account, and for dnsPersist01 solvers the records to publish. `known`: the CA's issuer
/// domain names read before for this generation (not fetched again).
async fn evaluate(
    ctx: &Context,
    name: &str,
    key: &str,
    spec: &IssuerSpec,
    namespace: &str,
    known: &[String],
) -> Result<(Condition, IssuerStatus)> {
    let secrets: Api<Secret> = ctx.namespaced(namespace);
    if let Some(acme) = &spec.acme {
        let source = AccountSource { key, issuer_name: name, spec: acme, secrets: &secrets };
        return Ok(match ctx.accounts.get(&source).await {
            Ok(account) => {
                let mut message = format!("ACME account {} registered at {}", account.uri(), acme.server);
                let mut reason = "AccountRegistered";
                if let Some(note) = ctx.accounts.note(key).await {
                    message = format!("{message} ({note})");
                    reason = "AccountReregistered";
                }
                let mut status = IssuerStatus { account_uri: Some(account.uri().to_string()), ..Default::default() };
                let ready = match persist_status(acme, account.uri(), known, &mut status).await {
                    Ok(()) => Condition::new("Ready", true, reason, message),
                    Err(failure) => Condition::new("Ready", false, failure.code.as_str(), failure.message),
                };
                (ready, status)
            }
            Err(stop) => {
                let failure = stop.failure()?;
                let message =
                    format!("could not register or load an ACME account at {}: {}", acme.server, failure.message);
                (Condition::new("Ready", false, failure.code.as_str(), message), IssuerStatus::default())
            }
        });
    }
    let (condition, ca) = match load_signer(&secrets, spec).await? {
        Ok(Signer::SelfSigned) => {
            (Condition::new("Ready", true, "SelfSigned", "every certificate is signed by its own private key"), None)
        }
        Ok(Signer::Ca(ca)) => {
            let message = format!("signing with CA {}, valid until {}", ca.info.subject, ca.info.not_after);
            let (permitted_names, excluded_names) = ca.constraints.describe();
            let status = CaStatus {
                subject: ca.info.subject.clone(),
                not_after: ca.info.not_after.to_string(),
                permitted_names,
                excluded_names,
            };
            (Condition::new("Ready", true, "CAReady", message), Some(status))
        }
        Ok(Signer::Acme(_)) => unreachable!("ACME issuers are evaluated above"),
        Err(not_ready) => (Condition::new("Ready", false, not_ready.reason, not_ready.message), None),
    };
    Ok((condition, IssuerStatus { ca, ..Default::default() }))
}

/// For an issuer with dnsPersist01 solvers: the CA's issuer domain names and the records the
/// domains' owners publish (from `known`, else read from the directory). A CA naming none
/// cannot be used with dns-persist-01: that is the failure.
async fn persist_status(
    acme: &AcmeIssuer,
    account_uri: &str,
    known: &[String],
    status: &mut IssuerStatus,
) -> std::result::Result<(), Failure> {
    if !acme.solvers.iter().any(|s| s.dns_persist01.is_some()) {
        return Ok(());
    }
    let issuers = directory::issuer_domain_names(acme, known.to_vec()).await?;
    status.persist_records = dns_persist01::records(&acme.solvers, account_uri, &issuers);
    status.issuer_domain_names = issuers;
    Ok(())
}

async fn reconcile<K: IssuerObject>(issuer: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(controller_name::<K>());
    let namespace = ctx.issuer_secret_namespace(K::KIND, issuer.namespace().as_deref());
    let issuer_ref = IssuerRef { kind: K::KIND, name: issuer.name_any() };
    let key = issuer_ref.key(&issuer.namespace().unwrap_or_default());
    let previous = issuer.issuer_status().cloned().unwrap_or_default();
    // The CA's directory is read once per generation of the spec, not on every look.
    let same_generation = previous.observed_generation == issuer.meta().generation;
    let known = if same_generation { previous.issuer_domain_names.clone() } else { Vec::new() };
    let (mut ready, found) = evaluate(&ctx, &issuer.name_any(), &key, issuer.issuer_spec(), &namespace, &known).await?;
    ready.observed_generation = issuer.meta().generation;
    let mut status = IssuerStatus { conditions: vec![ready], observed_generation: issuer.meta().generation, ..found };
    let writes = match K::KIND {
        IssuerKind::Issuer => {
            conditions::stamp(&mut status.conditions, &previous.conditions, jiff::Timestamp::now());
            true
        }
        IssuerKind::ClusterIssuer => cluster_issuer_view(&ctx, issuer.as_ref(), &previous, &mut status),
    };
    // The revoked serials and the CRL number are the Revoke attempts' (another field manager):
    // never written here, where a stale copy would undo a revocation.
    let comparable =
        IssuerStatus { revoked: previous.revoked.clone(), crl_number: previous.crl_number, ..status.clone() };
    if writes && comparable != previous {
        let written = apply_status(&ctx, &issuer.api_for(ctx.client.clone()), &issuer.name_any(), &status).await;
        match written {
            // A cluster-wide release's admission policy keeps a ClusterIssuer's status to its
            // own certpilot: this one, watching one namespace, goes by its own view.
            Err(error) if K::KIND == IssuerKind::ClusterIssuer && refused_to_another_install(&ctx, &error) => {
                tracing::debug!(clusterissuer = %issuer.name_any(), %error, "the status is another certpilot's to write");
            }
            written => {
                written?;
            }
        }
    }
    // CA Secrets are not watched (that would mean watching every Secret): look again periodically.
    let ready = status.conditions[0].is_true();
    Ok(match (issuer.issuer_spec().ca.is_some(), issuer.issuer_spec().acme.is_some(), ready) {
        (true, _, true) => Action::requeue(Duration::from_secs(300)),
        (true, _, false) => Action::requeue(Duration::from_secs(20)),
        (_, true, false) => Action::requeue(Duration::from_secs(60)),
        // An attempt may have had to register the account again: say so soon (no API request
        // is made while nothing changed: the account comes from memory).
        (_, true, true) => Action::requeue(Duration::from_secs(30)),
        _ => Action::await_change(),
    })
}

/// Whether an admission policy refused a write of this install, which watches one namespace:
/// a ClusterIssuer's status it tried to claim belongs to a cluster-wide release.
fn refused_to_another_install(ctx: &Context, error: &crate::error::Error) -> bool {
    ctx.settings.watch_namespace.is_some() && error.admission_policy().is_some()
}

/// Makes `status` this install's view of ClusterIssuer `issuer` (what its own Certificates go
/// by) and says whether this install writes it as the ClusterIssuer's status
/// (`policy::cluster_issuer`: one install does, whichever looks first).
fn cluster_issuer_view<K: IssuerObject>(
    ctx: &Context,
    issuer: &K,
    previous: &IssuerStatus,
    status: &mut IssuerStatus,
) -> bool {
    let name = issuer.meta().name.clone().unwrap_or_default();
    let mine = ctx.settings.cluster_resource_namespace.as_str();
    status.cluster_resource_namespace = Some(mine.to_string());
    let claimed_by = previous.cluster_resource_namespace.as_deref();
    // Transition times are this install's own, as its view is.
    let base = ctx.cluster_issuer_views.get(&name).or_else(|| (claimed_by == Some(mine)).then(|| previous.clone()));
    conditions::stamp(&mut status.conditions, &base.unwrap_or_default().conditions, jiff::Timestamp::now());
    ctx.cluster_issuer_views.set(&name, status.clone());
    let is_ready = |s: &IssuerStatus| conditions::find(&s.conditions, "Ready").is_some_and(Condition::is_true);
    let claim = Claim {
        claimed_by,
        observed_generation: previous.observed_generation,
        generation: issuer.meta().generation,
        status_ready: is_ready(previous),
        mine,
        my_view_ready: is_ready(status),
    };
    writes_status(&claim)
}

fn controller_name<K: IssuerObject>() -> &'static str {
    match K::KIND {
        IssuerKind::Issuer => "issuer",
        IssuerKind::ClusterIssuer => "clusterissuer",
    }
}

/// The issuer a Certificate names, as far as the Certificate controller needs to know, and its
/// spec when it exists (from the shared cache: issuer changes wake the Certificates naming them).
/// The issuer's readiness for a Certificate asking for `names`, and its spec.
pub fn issuer_state(
    ctx: &Context,
    namespace: &str,
    issuer_ref: &IssuerRef,
    names: &crate::pki::NameRequest,
) -> (IssuerState, Option<IssuerSpec>) {
    let (spec, status) = ctx.caches.issuer(issuer_ref, namespace).unzip();
    // A ClusterIssuer's status may be another certpilot's view (`policy::cluster_issuer`):
    // this install's Certificates go by its own, once it has one.
    let status = match issuer_ref.kind {
        IssuerKind::Issuer => status,
        IssuerKind::ClusterIssuer => spec.as_ref().map(|_| ctx.cluster_issuer_views.get(&issuer_ref.name)),
    };
    let ca = status.as_ref().and_then(|s| s.as_ref()).and_then(|s| s.ca.as_ref());
    if let Some(ca) = ca.filter(|_| spec.is_some()) {
        let constraints = crate::pki::cert::NameConstraints::from_described(&ca.permitted_names, &ca.excluded_names);
        if let Some(why) = constraints.violation(names) {
            let message = format!(
                "the CA of {:?} {} ({}) may not issue for these names: {why}; ask only for names it permits, or use another issuer",
                issuer_ref.kind, issuer_ref.name, ca.subject
            );
            return (IssuerState::CannotIssue(message), spec);
        }
    }
    if spec.is_none() {
        let other_kind = match issuer_ref.kind {
            IssuerKind::Issuer => IssuerKind::ClusterIssuer,
            IssuerKind::ClusterIssuer => IssuerKind::Issuer,
        };
        let other = IssuerRef { kind: other_kind, name: issuer_ref.name.clone() };
        let exists_as_other = ctx.caches.issuer(&other, namespace).is_some();
        return (IssuerState::NotFound(not_found(issuer_ref, namespace, exists_as_other)), None);
    }
    (readiness(issuer_ref, status.flatten()), spec)
}

/// Why the issuer a Certificate names is not there, and what to do; `exists_as_other`: there
/// is one of that name of the other kind (the commonest slip: `kind` left out or wrong).
fn not_found(issuer_ref: &IssuerRef, namespace: &str, exists_as_other: bool) -> String {
    let name = &issuer_ref.name;
    let missing = match issuer_ref.kind {
        IssuerKind::Issuer => format!("Issuer {name} in namespace {namespace} does not exist"),
        IssuerKind::ClusterIssuer => format!("ClusterIssuer {name} does not exist"),
    };
    if !exists_as_other {
        return format!("{missing}; create it, or point spec.issuerRef at an existing Issuer or ClusterIssuer");
    }
    let (other, fix) = match issuer_ref.kind {
        IssuerKind::Issuer => ("a ClusterIssuer".to_string(), "ClusterIssuer"),
        IssuerKind::ClusterIssuer => (format!("an Issuer in namespace {namespace}"), "Issuer"),
    };
    format!("{missing}, but {other} of that name does; set spec.issuerRef.kind to {fix}")
}

fn readiness(issuer_ref: &IssuerRef, status: Option<IssuerStatus>) -> IssuerState {
    let ready = status.as_ref().and_then(|s| conditions::find(&s.conditions, "Ready")).cloned();
    match ready {
        Some(c) if c.is_true() => IssuerState::Ready,
        Some(c) => IssuerState::NotReady(format!(
            "{:?} {} is not ready ({}): {}",
            issuer_ref.kind, issuer_ref.name, c.reason, c.message
        )),
        None => IssuerState::Unchecked(format!("{:?} {} has not been checked yet", issuer_ref.kind, issuer_ref.name)),
    }
}

/// Issuers whose CA Secret is `secret` (a Secret certpilot wrote, e.g. a bootstrapped CA).
fn issuers_using<K: IssuerObject>(
    store: &kube::runtime::reflector::Store<K>,
    secret_namespace_of: impl Fn(&K) -> String,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<K>> {
    let (Some(name), Some(namespace)) = (secret.metadata.name.as_deref(), secret.metadata.namespace.as_deref()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|i| {
            i.issuer_spec().ca.as_ref().is_some_and(|ca| ca.secret_name == name) && secret_namespace_of(i) == namespace
        })
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

/// The Issuer and ClusterIssuer controllers, subscribed to the shared watches now.
pub fn run(ctx: Arc<Context>, feeds: &Feeds) -> impl std::future::Future<Output = ()> + use<> {
    let concurrency = ctx.settings.concurrency;
    let config = || kube::runtime::controller::Config::default().concurrency(concurrency);
    // Only Secrets certpilot wrote are watched (metadata only): a CA it bootstrapped becomes
    // usable at once; other CA Secrets are looked at again periodically.
    let store = ctx.caches.issuers.clone();
    let using = move |secret: Arc<PartialObjectMeta<Secret>>| {
        issuers_using(&store, |i: &Issuer| i.namespace().unwrap_or_default(), &secret)
    };
    let deleted_ca = feeds.secrets.deletions().flat_map({
        let using = using.clone();
        move |secret| futures::stream::iter(using(secret))
    });
    let namespaced = Controller::for_shared_stream(feeds.issuers.subscribe(), ctx.caches.issuers.clone())
        .watches_shared_stream(feeds.secrets.subscribe(), using)
        .reconcile_on(deleted_ca)
        .with_config(config())
        .shutdown_on_signal()
        .run(reconcile::<Issuer>, error_policy("issuer"), ctx.clone());
    let store = ctx.caches.cluster_issuers.clone();
    let resource_namespace = ctx.settings.cluster_resource_namespace.clone();
    let using = move |secret: Arc<PartialObjectMeta<Secret>>| {
        issuers_using(&store, |_: &ClusterIssuer| resource_namespace.clone(), &secret)
    };
    let cluster = Controller::for_shared_stream(feeds.cluster_issuers.subscribe(), ctx.caches.cluster_issuers.clone());
    // The shared Secret watch covers the operator's namespace unless certpilot watches another.
    let cluster = match &ctx.settings.watch_namespace {
        Some(watched) if *watched != ctx.settings.cluster_resource_namespace => {
            let managed =
                watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")).any_semantic();
            let secrets: Api<PartialObjectMeta<Secret>> = ctx.namespaced(&ctx.settings.cluster_resource_namespace);
            cluster.watches(secrets, managed, move |secret| using(Arc::new(secret)))
        }
        _ => {
            let deleted_ca = feeds.secrets.deletions().flat_map({
                let using = using.clone();
                move |secret| futures::stream::iter(using(secret))
            });
            cluster.watches_shared_stream(feeds.secrets.subscribe(), using).reconcile_on(deleted_ca)
        }
    }
    .with_config(config())
    .shutdown_on_signal()
    .run(reconcile::<ClusterIssuer>, error_policy("clusterissuer"), ctx);
    async move {
        futures::join!(run_controller("issuer", namespaced.boxed()), run_controller("clusterissuer", cluster.boxed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(kind: IssuerKind) -> IssuerRef {
        IssuerRef { kind, name: "letsencrypt".into() }
    }

    #[test]
    fn a_missing_issuer_of_the_other_kind_is_named_with_the_fix() {
        let wrong_kind = not_found(&named(IssuerKind::Issuer), "shop", true);
        assert_eq!(
            wrong_kind,
            "Issuer letsencrypt in namespace shop does not exist, but a ClusterIssuer of that name does; set spec.issuerRef.kind to ClusterIssuer"
        );
        let other_way = not_found(&named(IssuerKind::ClusterIssuer), "shop", true);
        assert!(other_way.contains("an Issuer in namespace shop of that name does; set spec.issuerRef.kind to Issuer"));
        let absent = not_found(&named(IssuerKind::ClusterIssuer), "shop", false);
        assert!(absent.starts_with("ClusterIssuer letsencrypt does not exist; create it"), "{absent}");
    }
}
