//! What every reconcile needs: the client, the operator's settings, its metrics and the state
//! shared between controllers (ACME accounts, order slots, solver answers).

use super::cache::{Caches, LastWrites, RecentCreates};
use crate::{
    api::CertificateAttempt,
    issuance::acme::{
        account::AccountCache,
        slots::{AttemptKey, OrderSlots},
    },
    metrics::Metrics,
    policy::backoff::BackoffPolicy,
    solver::http01::RouteTarget,
};
use futures::{StreamExt, channel::mpsc};
use kube::{Api, Client, Resource, runtime::reflector::ObjectRef};
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

pub use crate::api::FIELD_MANAGER;

/// Operator settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only this namespace (Certificates, Issuers, attempts, Secrets); all when `None`.
    pub watch_namespace: Option<String>,
    /// Where Secrets named by ClusterIssuers live (the operator's own namespace).
    pub cluster_resource_namespace: String,
    pub backoff: BackoffPolicy,
    /// How many objects each controller reconciles at once.
    pub concurrency: u16,
    /// The Service (in the operator's namespace) that routes HTTP-01 requests to the operator.
    pub solver_service: String,
    pub solver_service_port: u16,
    /// How many ACME orders one issuer may have in flight at once.
    pub max_orders_per_issuer: usize,
    /// A Certificate is never renewed more often than this, whatever its spec says.
    pub min_renewal_interval: jiff::SignedDuration,
    /// `host:port` of the DNS servers DNS-01 checks ask, instead of each provider's own.
    pub dns_check_nameservers: Vec<String>,
    /// The Ingress/Gateway shim honours cert-manager's annotations too.
    pub accept_cert_manager_annotations: bool,
    /// Namespaced Issuers may use certpilot's own cloud identity (ambient credentials), as
    /// ClusterIssuers always may.
    pub issuer_ambient_credentials: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            watch_namespace: None,
            cluster_resource_namespace: "certpilot".into(),
            backoff: BackoffPolicy::default(),
            concurrency: 8,
            solver_service: "certpilot-solver".into(),
            solver_service_port: 8089,
            max_orders_per_issuer: 10,
            min_renewal_interval: jiff::SignedDuration::from_mins(5),
            dns_check_nameservers: Vec::new(),
            accept_cert_manager_annotations: false,
            issuer_ambient_credentials: false,
        }
    }
}

pub struct Context {
    pub client: Client,
    /// The shared stores every decision reads (see `cache.rs`).
    pub caches: Caches,
    /// The statuses certpilot wrote moments ago, to tell a lagging cache from news.
    pub last_writes: LastWrites,
    /// Attempts this process created moments ago (their watch events may not have arrived).
    pub recent_creates: RecentCreates,
    /// Kubernetes Events on Certificates (what `kubectl describe` shows).
    pub events: super::events::Events,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// ACME accounts per issuer, shared by the issuer and attempt controllers.
    pub accounts: AccountCache,
    /// ACME orders in flight, per issuer (give one back with `release_order_slot`).
    pub order_slots: OrderSlots,
    /// The attempts a slot came free for, to be woken at once.
    pub slot_wakes: SlotWakes,
    /// ACME attempts this process made that have not placed their order yet.
    pub unordered: Unordered,
    /// The HTTP-01 routes in place, one per host.
    pub routes: super::routes::Routes,
    /// The key ACME attempts seal their new private key with (in the operator's namespace).
    pub sealing: super::sealing::Sealing,
    /// Issuers whose CA does not confirm `replaces` (RFC 9773): orders stop naming it.
    no_replaces: Mutex<HashSet<String>>,
    /// The admission policies that refused certpilot's writes, each explained once.
    refusing_policies: Mutex<HashSet<String>>,
    /// This install's own view of each ClusterIssuer.
    pub cluster_issuer_views: ClusterIssuerViews,
}

/// The attempts an order slot came free for (`OrderSlots::release`): the attempt controller
/// wakes them at once, where they would otherwise look again only at their next poll.
pub struct SlotWakes {
    sender: mpsc::UnboundedSender<ObjectRef<CertificateAttempt>>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<CertificateAttempt>>>>,
}

impl Default for SlotWakes {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded();
        Self { sender, receiver: Mutex::new(Some(receiver)) }
    }
}

impl SlotWakes {
    /// The attempts to wake, for the one controller that takes them (empty for any other).
    pub fn take(&self) -> impl futures::Stream<Item = ObjectRef<CertificateAttempt>> + Send + use<> {
        futures::stream::iter(self.receiver.lock().expect("slot wakes lock").take()).flatten()
    }

    /// Wakes `attempts` (by namespace and name), as `OrderSlots::release` names them.
    fn wake(&self, attempts: Vec<AttemptKey>) {
        for (namespace, name) in attempts {
            // Closed only at shutdown.
            let _ = self.sender.unbounded_send(ObjectRef::new(&name).within(&namespace));
        }
    }
}

/// The ACME attempts (by uid) this process created and has not yet placed an order for. Their
/// first pass places the order at once. Any other attempt without a recorded order may have
/// placed one in a pass that stopped (or failed over) before its URL was written: it looks
/// for that order first (`order::find_placed`). So no status write is needed before the order.
#[derive(Default)]
pub struct Unordered(Mutex<HashSet<String>>);

impl Unordered {
    pub fn note(&self, uid: &str) {
        self.0.lock().expect("unordered lock").insert(uid.to_string());
    }

    /// Whether the attempt was made here and has not ordered yet; from now on, it has.
    pub fn take(&self, uid: &str) -> bool {
        self.0.lock().expect("unordered lock").remove(uid)
    }
}

/// This install's own view of each ClusterIssuer (`policy::cluster_issuer`): what its
/// Certificates go by, whichever install's view the ClusterIssuer's status shows. A change is
/// announced to the Certificate controller, as a status write would be through the watch.
pub struct ClusterIssuerViews {
    views: Mutex<std::collections::HashMap<String, crate::api::IssuerStatus>>,
    changes: async_broadcast::Sender<String>,
    /// Keeps the channel open while no controller listens yet.
    _open: async_broadcast::InactiveReceiver<String>,
}

impl Default for ClusterIssuerViews {
    fn default() -> Self {
        let (mut changes, receiver) = async_broadcast::broadcast(256);
        // A notice lost to a slow listener costs a later look (Certificates are looked at
        // again periodically), never a blocked issuer controller.
        changes.set_overflow(true);
        Self { views: Mutex::default(), changes, _open: receiver.deactivate() }
    }
}

impl ClusterIssuerViews {
    pub fn get(&self, name: &str) -> Option<crate::api::IssuerStatus> {
        self.views.lock().expect("views lock").get(name).cloned()
    }

    /// Records this install's view of ClusterIssuer `name`, announcing it when it changed.
    pub fn set(&self, name: &str, view: crate::api::IssuerStatus) {
        let previous = self.views.lock().expect("views lock").insert(name.to_string(), view.clone());
        if previous.as_ref() != Some(&view) {
            let _ = self.changes.try_broadcast(name.to_string());
        }
    }

    /// The names of the ClusterIssuers whose view changed, as they change.
    pub fn changes(&self) -> async_broadcast::Receiver<String> {
        self.changes.new_receiver()
    }
}

impl Context {
    /// Gives back the order slot of the attempt `namespace/name` (or its place in the queue for
    /// one) and wakes the attempts it lets in.
    pub fn release_order_slot(&self, namespace: &str, name: &str) {
        self.slot_wakes.wake(self.order_slots.release(namespace, name));
    }

    pub fn new(client: Client, caches: Caches, settings: Settings, metrics: Arc<Metrics>) -> Arc<Self> {
        let instance = std::env::var("POD_NAME").ok();
        let events = super::events::Events::new(client.clone(), instance);
        let routes = super::routes::Routes::new(RouteTarget {
            client: client.clone(),
            namespace: settings.cluster_resource_namespace.clone(),
            service: settings.solver_service.clone(),
            port: settings.solver_service_port,
        });
        let sealing = super::sealing::Sealing::new(client.clone(), &settings.cluster_resource_namespace);
        Arc::new(Self {
            client,
            caches,
            last_writes: LastWrites::default(),
            recent_creates: RecentCreates::default(),
            events,
            order_slots: OrderSlots::new(settings.max_orders_per_issuer),
            slot_wakes: SlotWakes::default(),
            unordered: Unordered::default(),
            settings,
            metrics,
            accounts: AccountCache::default(),
            routes,
            sealing,
            no_replaces: Mutex::default(),
            refusing_policies: Mutex::default(),
            cluster_issuer_views: ClusterIssuerViews::default(),
        })
    }

    /// A ValidatingAdmissionPolicy refused a write of certpilot's. The one certpilot ships admits
    /// only its ServiceAccount, so this is nearly always certpilot running as someone else (from
    /// a workstation, with a user's kubeconfig): said once, with what to do; afterwards quietly.
    pub fn admission_refused(&self, refusal: &crate::error::AdmissionRefusal, controller: &str, name: &str) {
        let crate::error::AdmissionRefusal { policy, refused } = refusal;
        if !self.refusing_policies.lock().expect("policies lock").insert(policy.to_string()) {
            tracing::debug!(controller, name, refused, "refused by admission policy {policy}");
            return;
        }
        tracing::error!(
            controller,
            name,
            refused,
            "the admission policy {policy} refuses certpilot's writes: certpilot's policy (deploy/04-admission-policy.yaml, \
             the chart's admissionPolicy) admits only certpilot's ServiceAccount, and this process runs as another identity. \
             Run certpilot as that ServiceAccount: in the cluster (the Deployment of deploy/ or the chart does), or from a \
             workstation with a kubeconfig holding its token (kubectl -n <namespace> create token certpilot); or, to run it \
             as yourself, delete the ValidatingAdmissionPolicyBinding of {policy}. Writes stay refused until then."
        );
    }

    /// Publishes an Event about a Certificate; failing to is logged, never fatal.
    pub async fn event(
        &self,
        certificate: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        text: String,
    ) {
        let note = super::events::Note { warning, reason, action, text };
        if let Err(error) = self.events.publish(certificate, note).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }

    pub fn forget_replaces(&self, issuer: &str) {
        self.no_replaces.lock().expect("replaces lock").insert(issuer.to_string());
    }

    pub fn sends_replaces(&self, issuer: &str) -> bool {
        !self.no_replaces.lock().expect("replaces lock").contains(issuer)
    }

    /// The namespace of an issuer's Secrets: its own, or the operator's for ClusterIssuers.
    pub fn issuer_secret_namespace(&self, kind: crate::api::IssuerKind, namespace: Option<&str>) -> String {
        crate::issuance::signer::secret_namespace(kind, namespace, &self.settings.cluster_resource_namespace)
    }

    /// Whether an issuer of `kind` may use certpilot's own cloud identity (ambient credentials)
    /// when its solver names no keys: a namespaced Issuer could otherwise write, with the
    /// operator's rights, to zones its namespace's owners were never given.
    pub fn ambient_credentials_allowed(&self, kind: crate::api::IssuerKind) -> bool {
        kind == crate::api::IssuerKind::ClusterIssuer || self.settings.issuer_ambient_credentials
    }

    /// An API for namespaced `K` in `namespace`.
    pub fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// An API for namespaced `K` across the watched namespaces.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match &self.settings.watch_namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_released_slot_wakes_the_first_waiter_through_the_one_controller_that_listens() {
        let (slots, wakes) = (OrderSlots::new(1), SlotWakes::default());
        assert!(slots.take("pebble", "shop", "web-1"));
        assert!(!slots.take("pebble", "shop", "api-1"));
        assert!(!slots.take("pebble", "blog", "web-1"));
        wakes.wake(slots.release("shop", "web-1"));
        let mut woken = wakes.take();
        assert_eq!(woken.next().await, Some(ObjectRef::new("api-1").within("shop")));
        assert_eq!(futures::FutureExt::now_or_never(woken.next()), None, "only the first waiter fits in the one slot");
        assert_eq!(wakes.take().next().await, None, "a second listener gets nothing");
    }
}
