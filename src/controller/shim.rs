//! The Ingress and Gateway shim: Certificates from annotations on Ingresses and Gateways.
//!
//! `policy::shim` decides which Certificates an Ingress or Gateway asks for; this makes it so,
//! with server-side apply under certpilot's field manager. Every Certificate made here carries
//! the shim's label and a controller owner reference to its Ingress or Gateway (the garbage
//! collector deletes it with its owner). A Certificate without both is never changed nor
//! deleted: a conflict is reported on the owner as a Warning Event instead.

use super::{
    cache::{Feeds, trim_meta},
    context::{Context, FIELD_MANAGER},
    error_policy, run_controller,
};
use crate::{
    api::{
        Certificate, SHIM_LABEL,
        gateway::{GATEWAY_GROUP, GATEWAY_VERSION, Gateway},
    },
    error::{Result, is_not_found},
    policy::{
        json_digest,
        shim::{self, Desired, Intent, Options, Plan, Problem, Source, Step},
    },
};
use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use k8s_openapi::{NamespaceResourceScope, api::networking::v1::Ingress};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::Duration,
};

/// What the shim's reconcilers share.
struct Shim {
    ctx: Arc<Context>,
    options: Options,
    /// Per owner (uid), a digest of the problems last reported on it: each is reported once
    /// (an Event and a log line), not on every reconcile.
    reported: Mutex<HashMap<String, u64>>,
}

/// An Ingress or a Gateway: an object whose annotations ask for Certificates.
trait Owner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    const SOURCE: Source;
    /// The controller's name (in logs and metrics).
    const CONTROLLER: &'static str;
    fn plan(&self, options: Options) -> Plan;
    /// Whether it names the Secret (and so the Certificate) `name`, usable or not.
    fn names_secret(&self, name: &str) -> bool;
}

impl Owner for Ingress {
    const SOURCE: Source = Source::Ingress;
    const CONTROLLER: &'static str = "ingress-shim";
    fn plan(&self, options: Options) -> Plan {
        shim::ingress_plan(self, options)
    }
    fn names_secret(&self, name: &str) -> bool {
        let tls = self.spec.as_ref().and_then(|s| s.tls.as_ref());
        tls.into_iter().flatten().any(|t| t.secret_name.as_deref() == Some(name))
    }
}

impl Owner for Gateway {
    const SOURCE: Source = Source::Gateway;
    const CONTROLLER: &'static str = "gateway-shim";
    fn plan(&self, options: Options) -> Plan {
        shim::gateway_plan(self, options)
    }
    fn names_secret(&self, name: &str) -> bool {
        let refs = self.spec.listeners.iter().filter_map(|l| l.tls.as_ref()).flat_map(|t| &t.certificate_refs);
        refs.into_iter().any(|r| r.name == name)
    }
}

async fn reconcile<K: Owner>(owner: Arc<K>, shim: Arc<Shim>) -> Result<Action> {
    let ctx = &shim.ctx;
    let _timer = ctx.metrics.reconcile(K::CONTROLLER);
    let (Some(namespace), Some(uid)) = (owner.namespace(), owner.meta().uid.clone()) else {
        return Ok(Action::await_change());
    };
    if owner.meta().deletion_timestamp.is_some() {
        // Its Certificates go with it (garbage collection).
        return Ok(Action::await_change());
    }
    // Which Certificates exist is read from the shared cache: wait for its first full list.
    ctx.caches.wait_until_ready().await;
    let plan = owner.plan(shim.options);
    let api: Api<Certificate> = ctx.namespaced(&namespace);
    let mut problems = plan.problems.clone();
    if let Intent::Certificates { desired, .. } = &plan.intent {
        for want in desired {
            let cached = ctx.caches.certificates.get(&ObjectRef::new(&want.name).within(&namespace));
            // Not cached yet is no proof that it does not exist: ask before creating it.
            let existing = match cached {
                Some(cached) => Some(cached),
                None => api.get_opt(&want.name).await?.map(Arc::new),
            };
            match shim::step(want, existing.as_deref(), &uid) {
                step @ (Step::Create | Step::Update) => {
                    // An update names the uid it found: were the Certificate replaced meanwhile
                    // (by someone else's of the same name), the API server refuses it.
                    let uid = existing.as_ref().and_then(|c| c.meta().uid.as_deref());
                    apply::<K>(&api, &owner, want, uid).await?;
                    let verb = if step == Step::Create { "created" } else { "updated" };
                    tracing::info!(controller = K::CONTROLLER, %namespace, owner = %owner.name_any(), certificate = %want.name, "{verb} Certificate");
                }
                Step::UpToDate => {}
                Step::Conflict(problem) => problems.push(problem),
            }
        }
    }
    let ours: Vec<Arc<Certificate>> = ctx
        .caches
        .certificates
        .state()
        .into_iter()
        .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()) && shim::is_ours(c, &uid))
        .collect();
    let ours: Vec<&Certificate> = ours.iter().map(AsRef::as_ref).collect();
    for stale in shim::stale(&plan, &ours) {
        delete(&api, stale).await?;
        tracing::info!(controller = K::CONTROLLER, %namespace, owner = %owner.name_any(), certificate = %stale.name_any(), "deleted Certificate it no longer asks for");
    }
    report(&shim, owner.as_ref(), &uid, &problems).await;
    Ok(Action::await_change())
}

/// Creates or updates the Certificate `want` for `owner` (server-side apply: the shim owns
/// the fields it sets and no others); an update only of the Certificate of uid `uid`.
async fn apply<K: Owner>(api: &Api<Certificate>, owner: &K, want: &Desired, uid: Option<&str>) -> Result<()> {
    let owner_ref = owner.controller_owner_ref(&()).expect("an object from the API server has a name and a uid");
    let mut body = serde_json::json!({
        "apiVersion": Certificate::api_version(&()),
        "kind": Certificate::kind(&()),
        "metadata": {
            "name": want.name,
            "labels": {SHIM_LABEL: K::SOURCE.label_value()},
            "ownerReferences": [owner_ref],
        },
        "spec": want.spec,
    });
    if let Some(uid) = uid {
        body["metadata"]["uid"] = uid.into();
    }
    api.patch(&want.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Deletes `certificate`, that very object (uid precondition): if it was replaced since, the
/// replacement is someone else's business.
async fn delete(api: &Api<Certificate>, certificate: &Certificate) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: certificate.meta().uid.clone(), resource_version: None }),
        ..DeleteParams::background()
    };
    match api.delete(&certificate.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reports `problems` on `owner` (a Warning Event each, and the log) unless exactly these were
/// reported last time.
async fn report<K: Owner>(shim: &Shim, owner: &K, uid: &str, problems: &[Problem]) {
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    {
        let mut reported = shim.reported.lock().expect("reported lock");
        if problems.is_empty() {
            reported.remove(uid);
            return;
        }
        let digest = json_digest(&texts);
        if reported.insert(uid.to_string(), digest) == Some(digest) {
            return;
        }
    }
    let regarding = owner.object_ref(&());
    for (problem, text) in problems.iter().zip(texts) {
        tracing::warn!(
            controller = K::CONTROLLER,
            namespace = %owner.namespace().unwrap_or_default(),
            name = %owner.name_any(),
            reason = problem.reason(),
            "{text}"
        );
        shim.ctx.event(&regarding, true, problem.reason(), "CreateCertificates", text).await;
    }
}

/// The owners in the deleted Certificate's namespace that name its Secret: one of them may
/// want it back, or may have been waiting for a conflicting one to go.
fn owners_naming<K: Owner>(store: &Store<K>, certificate: &Certificate) -> Vec<ObjectRef<K>> {
    let name = certificate.name_any();
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == certificate.namespace() && o.names_secret(&name))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// One owner kind's controller: watches its objects (without managed fields), wakes on
/// changes of the Certificates they own and on deletions of Certificates they name.
fn controller<K: Owner>(
    shim: Arc<Shim>,
    certificates: impl Stream<Item = Arc<Certificate>> + Send + 'static,
    deletions: impl Stream<Item = Arc<Certificate>> + Send + 'static,
) -> BoxFuture<'static, ()> {
    let api: Api<K> = shim.ctx.watched();
    let (reader, writer) = reflector::store();
    let forget = shim.clone();
    let objects = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|object: &mut K| trim_meta(object.meta_mut()))
        .inspect(move |event| {
            // A deleted owner is never reconciled again: forget what was reported on it.
            if let Ok(watcher::Event::Delete(object)) = event
                && let Some(uid) = object.meta().uid.as_deref()
            {
                forget.reported.lock().expect("reported lock").remove(uid);
            }
        })
        .reflect(writer)
        .touched_objects();
    let store = reader.clone();
    let woken = deletions.flat_map(move |certificate| futures::stream::iter(owners_naming(&store, &certificate)));
    let on_error = error_policy::<K>(K::CONTROLLER);
    let config = kube::runtime::controller::Config::default().concurrency(shim.ctx.settings.concurrency);
    let stream = Controller::for_stream(objects, reader)
        .owns_shared_stream(certificates)
        .reconcile_on(woken)
        .with_config(config)
        .shutdown_on_signal()
        .run(reconcile::<K>, move |object, error, shim: Arc<Shim>| on_error(object, error, shim.ctx.clone()), shim);
    run_controller(K::CONTROLLER, stream.boxed()).boxed()
}

/// Whether the cluster serves Gateways (`gateway.networking.k8s.io/v1`), by discovery.
pub async fn gateway_api_installed(client: &Client) -> bool {
    let group_version = format!("{GATEWAY_GROUP}/{GATEWAY_VERSION}");
    let mut delay = Duration::from_secs(1);
    for _ in 0..3 {
        match client.list_api_group_resources(&group_version).await {
            Ok(list) => return list.resources.iter().any(|r| r.name == "gateways"),
            Err(e) if is_not_found(&e) => return false,
            Err(error) => {
                tracing::warn!(%error, "could not ask the API server whether it serves Gateways; asking again");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    false
}

/// The shim's controllers: Ingresses always, Gateways when `gateways` (the Gateway API is
/// installed). Subscribed to the shared watches now.
pub fn run(ctx: Arc<Context>, feeds: &Feeds, gateways: bool) -> impl std::future::Future<Output = ()> + use<> {
    let options = Options { accept_cert_manager: ctx.settings.accept_cert_manager_annotations };
    let shim = Arc::new(Shim { ctx, options, reported: Mutex::default() });
    let ingresses = controller::<Ingress>(shim.clone(), feeds.certificates.subscribe(), feeds.certificates.deletions());
    let gateways = if gateways {
        controller::<Gateway>(shim, feeds.certificates.subscribe(), feeds.certificates.deletions())
    } else {
        tracing::info!(
            "the cluster does not serve {GATEWAY_GROUP}/{GATEWAY_VERSION} Gateways: the Gateway shim is off (restart certpilot after installing the Gateway API)"
        );
        futures::future::ready(()).boxed()
    };
    async move {
        futures::join!(ingresses, gateways);
    }
}
