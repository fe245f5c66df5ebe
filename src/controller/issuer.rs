//! Issuer and ClusterIssuer controllers: check that the issuer can sign and say so in `Ready`.

use super::{apply_status, context::Context, error_policy, run_controller};
use crate::{
    api::{
        ClusterIssuer, Issuer, IssuerKind, IssuerRef, IssuerSpec, IssuerStatus, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
        conditions::{self, Condition},
        issuer::CaStatus,
    },
    error::Result,
    issuance::{
        acme::account::AccountSource,
        signer::{Signer, load_signer},
    },
    policy::trigger::IssuerState,
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

/// The Ready condition, CA details and ACME account of an issuer.
async fn evaluate(
    ctx: &Context,
    name: &str,
    key: &str,
    spec: &IssuerSpec,
    namespace: &str,
) -> Result<(Condition, Option<CaStatus>, Option<String>)> {
    let secrets: Api<Secret> = ctx.namespaced(namespace);
    if let Some(acme) = &spec.acme {
        let source = AccountSource { key, issuer_name: name, spec: acme, secrets: &secrets };
        return Ok(match ctx.accounts.get(&source).await? {
            Ok(account) => {
                let mut message = format!("ACME account {} registered at {}", account.uri(), acme.server);
                let mut reason = "AccountRegistered";
                if let Some(note) = ctx.accounts.note(key).await {
                    message = format!("{message} ({note})");
                    reason = "AccountReregistered";
                }
                (Condition::new("Ready", true, reason, message), None, Some(account.uri().to_string()))
            }
            Err(failure) => {
                let message =
                    format!("could not register or load an ACME account at {}: {}", acme.server, failure.message);
                (Condition::new("Ready", false, failure.code.as_str(), message), None, None)
            }
        });
    }
    let (condition, ca) = match load_signer(&secrets, spec).await? {
        Ok(Signer::SelfSigned) => {
            (Condition::new("Ready", true, "SelfSigned", "every certificate is signed by its own private key"), None)
        }
        Ok(Signer::Ca(ca)) => {
            let message = format!("signing with CA {}, valid until {}", ca.info.subject, ca.info.not_after);
            let status = CaStatus { subject: ca.info.subject.clone(), not_after: ca.info.not_after.to_string() };
            (Condition::new("Ready", true, "CAReady", message), Some(status))
        }
        Ok(Signer::Acme(_)) => unreachable!("ACME issuers are evaluated above"),
        Err(not_ready) => (Condition::new("Ready", false, not_ready.reason, not_ready.message), None),
    };
    Ok((condition, ca, None))
}

async fn reconcile<K: IssuerObject>(issuer: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(controller_name::<K>());
    let namespace = ctx.issuer_secret_namespace(K::KIND, issuer.namespace().as_deref());
    let issuer_ref = IssuerRef { kind: K::KIND, name: issuer.name_any() };
    let key = issuer_ref.key(&issuer.namespace().unwrap_or_default());
    let (mut ready, ca, account_uri) =
        evaluate(&ctx, &issuer.name_any(), &key, issuer.issuer_spec(), &namespace).await?;
    ready.observed_generation = issuer.meta().generation;
    let previous = issuer.issuer_status().cloned().unwrap_or_default();
    let mut status =
        IssuerStatus { conditions: vec![ready], ca, account_uri, observed_generation: issuer.meta().generation };
    conditions::stamp(&mut status.conditions, &previous.conditions, jiff::Timestamp::now());
    if status != previous {
        apply_status(&issuer.api_for(ctx.client.clone()), &issuer.name_any(), &status).await?;
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

fn controller_name<K: IssuerObject>() -> &'static str {
    match K::KIND {
        IssuerKind::Issuer => "issuer",
        IssuerKind::ClusterIssuer => "clusterissuer",
    }
}

/// The issuer a Certificate names, as far as the Certificate controller needs to know, and its
/// spec when it exists.
pub async fn issuer_state(
    ctx: &Context,
    namespace: &str,
    issuer_ref: &IssuerRef,
) -> Result<(IssuerState, Option<IssuerSpec>)> {
    let (spec, status) = match issuer_ref.kind {
        IssuerKind::Issuer => {
            let issuer = ctx.namespaced::<Issuer>(namespace).get_opt(&issuer_ref.name).await?;
            (issuer.as_ref().map(|i| i.spec.clone()), issuer.and_then(|i| i.status))
        }
        IssuerKind::ClusterIssuer => {
            let issuer = Api::<ClusterIssuer>::all(ctx.client.clone()).get_opt(&issuer_ref.name).await?;
            (issuer.as_ref().map(|i| i.spec.issuer.clone()), issuer.and_then(|i| i.status))
        }
    };
    let found = spec.is_some();
    Ok((readiness(issuer_ref, namespace, found, status), spec))
}

fn readiness(issuer_ref: &IssuerRef, namespace: &str, found: bool, status: Option<IssuerStatus>) -> IssuerState {
    if !found {
        let place = match issuer_ref.kind {
            IssuerKind::Issuer => format!(" in namespace {namespace}"),
            IssuerKind::ClusterIssuer => String::new(),
        };
        return IssuerState::NotFound(format!(
            "{:?} {}{place} does not exist; create it, or point spec.issuerRef at an existing Issuer or ClusterIssuer",
            issuer_ref.kind, issuer_ref.name
        ));
    }
    let ready = status.as_ref().and_then(|s| conditions::find(&s.conditions, "Ready")).cloned();
    match ready {
        Some(c) if c.is_true() => IssuerState::Ready,
        Some(c) => IssuerState::NotReady(format!(
            "{:?} {} is not ready ({}): {}",
            issuer_ref.kind, issuer_ref.name, c.reason, c.message
        )),
        None => IssuerState::NotReady(format!("{:?} {} has not been checked yet", issuer_ref.kind, issuer_ref.name)),
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

pub async fn run(ctx: Arc<Context>) {
    let issuers: Api<Issuer> = ctx.watched();
    let cluster_issuers: Api<ClusterIssuer> = Api::all(ctx.client.clone());
    let concurrency = ctx.settings.concurrency;
    // Only Secrets certpilot wrote are watched (metadata only): a CA it bootstrapped becomes
    // usable at once; other CA Secrets are looked at again periodically.
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")).any_semantic();
    let namespaced = Controller::new(issuers, watcher::Config::default().any_semantic());
    let store = namespaced.store();
    let namespaced = namespaced
        .watches(ctx.watched::<PartialObjectMeta<Secret>>(), managed.clone(), move |secret| {
            issuers_using(&store, |i: &Issuer| i.namespace().unwrap_or_default(), &secret)
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(reconcile::<Issuer>, error_policy("issuer"), ctx.clone());
    let cluster = Controller::new(cluster_issuers, watcher::Config::default().any_semantic());
    let store = cluster.store();
    let resource_namespace = ctx.settings.cluster_resource_namespace.clone();
    let secrets: Api<PartialObjectMeta<Secret>> = ctx.namespaced(&resource_namespace);
    let cluster = cluster
        .watches(secrets, managed, move |secret| {
            issuers_using(&store, |_: &ClusterIssuer| resource_namespace.clone(), &secret)
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(reconcile::<ClusterIssuer>, error_policy("clusterissuer"), ctx);
    futures::join!(run_controller("issuer", namespaced.boxed()), run_controller("clusterissuer", cluster.boxed()));
}
