//! The Ingress and Gateway shim end to end: the operator binary against the test API server (or
//! a real cluster with `CERTPILOT_TEST_KUBECONFIG`) makes Certificates from annotations, keeps
//! them in step with their Ingress or Gateway, and never touches a Certificate it did not make.

mod support;

use certpilot::api::{Certificate, IssuerKind, IssuerRef, SHIM_LABEL, certificate::CertificatePhase};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use k8s_openapi::{
    api::{core::v1::Secret, events::v1::Event, networking::v1::Ingress},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use std::time::Duration;
use support::*;

const WAIT: Duration = Duration::from_secs(90);
const GATEWAY_CRD: &str = "gateways.gateway.networking.k8s.io";

struct Env {
    cluster: TestCluster,
    operator: Option<Operator>,
}

impl Env {
    /// A cluster with certpilot's CRDs (and the Gateway CRD if `gateways`), and the operator
    /// started with `flags`.
    async fn start(test: &str, gateways: bool, flags: &[&str]) -> Self {
        let mut cluster = TestCluster::start(test).await.expect("cluster");
        install_certpilot_crds(&cluster).await;
        if gateways {
            // Before the operator starts: it looks for the Gateway API once, at startup.
            ensure_gateway_crd(&cluster).await;
        }
        let operator = Operator::start_with(&mut cluster, flags);
        Self { cluster, operator: Some(operator) }
    }

    /// Stops the operator and starts it again with `flags`.
    fn restart(&mut self, flags: &[&str]) {
        if let Some(operator) = self.operator.take() {
            operator.kill();
        }
        self.operator = Some(Operator::start_with(&mut self.cluster, flags));
    }

    fn ns(&self) -> &str {
        self.cluster.namespace()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.cluster.client(), self.ns())
    }

    fn gateways(&self) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "gateways");
        Api::namespaced_with(self.cluster.client(), self.ns(), &resource)
    }

    async fn apply<K>(&self, api: &Api<K>, doc: Value) -> K
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(&name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(&doc)).await.expect("apply")
    }

    /// An Ingress with `annotations` and `tls` entries (and a rule, as Ingresses need).
    async fn ingress(&self, name: &str, annotations: Value, tls: Value) -> Ingress {
        let doc = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "rules": [{"host": "web.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
                "tls": tls,
            },
        });
        self.apply(&self.api(), doc).await
    }

    /// A selfSigned ClusterIssuer of a name unique to the run (ClusterIssuers are shared).
    async fn self_signed_cluster_issuer(&self) -> String {
        let name = unique_name("shim-selfsigned");
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "ClusterIssuer", "metadata": {"name": name}, "spec": {"selfSigned": {}}});
        self.apply(&Api::<certpilot::api::ClusterIssuer>::all(self.cluster.client()), doc).await;
        name
    }

    async fn self_signed_issuer(&self, name: &str) {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": name}, "spec": {"selfSigned": {}}});
        self.apply(&self.api::<certpilot::api::Issuer>(), doc).await;
    }

    /// Waits until Certificate `name` satisfies `check`.
    async fn certificate(&self, name: &str, what: &str, check: impl Fn(&Certificate) -> bool) -> Certificate {
        wait_for(&self.api(), name, &format!("Certificate {name}: {what}"), WAIT, check).await
    }

    async fn ready(&self, name: &str) -> Certificate {
        let certificate = self.certificate(name, "Ready", is_ready).await;
        let secret = self.api::<Secret>().get(&certificate.spec.secret_name).await.expect("the Secret exists");
        assert!(secret.data.unwrap().contains_key("tls.crt"), "the Secret holds the certificate");
        certificate
    }

    async fn gone(&self, name: &str) {
        let api = self.api::<Certificate>();
        eventually(&format!("Certificate {name} to be deleted"), WAIT, || async {
            api.get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await;
    }

    /// Waits for a Warning Event with `reason` about the `kind` named `name`; returns its note.
    async fn warning(&self, kind: &str, name: &str, reason: &str) -> String {
        let events = self.api::<Event>();
        eventually(&format!("a {reason} Event on {kind} {name}"), WAIT, || async {
            let list = events.list(&Default::default()).await.unwrap();
            list.items.into_iter().find_map(|e| {
                let regarding = e.regarding.as_ref()?;
                let about = regarding.kind.as_deref() == Some(kind) && regarding.name.as_deref() == Some(name);
                (about && e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
                    .then(|| e.note.unwrap_or_default())
            })
        })
        .await
    }
}

fn is_ready(cert: &Certificate) -> bool {
    let Some(status) = cert.status.as_ref() else { return false };
    status.observed_generation == cert.metadata.generation
        && status.phase == CertificatePhase::Ready
        && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn names(cert: &Certificate) -> Vec<&str> {
    cert.spec.dns_names().iter().map(String::as_str).collect()
}

fn cluster_issuer(name: &str) -> IssuerRef {
    IssuerRef { kind: IssuerKind::ClusterIssuer, name: name.into() }
}

/// The Certificate carries the shim's label and names `owner` as its controller.
fn assert_made_for<K: Resource<DynamicType = ()>>(cert: &Certificate, owner: &K, kind: &str) {
    assert_eq!(cert.labels().get(SHIM_LABEL).map(String::as_str), Some(kind), "the shim's label");
    let owners = cert.owner_references();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].kind, kind);
    assert_eq!(owners[0].api_version, K::api_version(&()));
    assert_eq!(Some(&owners[0].name), owner.meta().name.as_ref());
    assert_eq!(Some(&owners[0].uid), owner.meta().uid.as_ref());
    assert_eq!(owners[0].controller, Some(true));
}

/// The Gateway CRD from tests/fixtures, unless the cluster has one (a real one stays as it is).
async fn ensure_gateway_crd(cluster: &TestCluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    if crds.get_opt(GATEWAY_CRD).await.unwrap().is_some() {
        // Installed already, perhaps a moment ago by another test: used once established.
        let established = kube::runtime::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(crds, GATEWAY_CRD, established);
        tokio::time::timeout(Duration::from_secs(30), wait).await.expect("established in time").unwrap();
        return;
    }
    let crd: CustomResourceDefinition =
        yaml_serde::from_str(include_str!("fixtures/gateway-crd.yaml")).expect("fixture CRD parses");
    cluster.install_crd(&crd).await.expect("Gateway CRD installs and is established");
}

#[tokio::test]
async fn an_annotated_ingress_gets_certificates_that_follow_it() {
    let env = Env::start("shim-ingress", false, &[]).await;
    let issuer = env.self_signed_cluster_issuer().await;
    let annotated = json!({"certpilot.dev/cluster-issuer": issuer});
    let ingress = env
        .ingress(
            "web",
            annotated.clone(),
            json!([
                {"secretName": "web-tls", "hosts": ["web.example.com", "www.example.com"]},
                {"secretName": "api-tls", "hosts": ["api.example.com"]},
            ]),
        )
        .await;
    // One Certificate per TLS Secret, named after it, for its hosts. (A real API server refuses
    // upper-case hosts in an Ingress; the lowercasing is unit-tested in policy::shim.)
    let web = env.certificate("web-tls", "made from the Ingress", |_| true).await;
    assert_eq!(web.spec.secret_name, "web-tls");
    assert_eq!(names(&web), ["web.example.com", "www.example.com"]);
    assert_eq!(web.spec.issuer_ref, cluster_issuer(&issuer));
    assert_made_for(&web, &ingress, "Ingress");
    let api = env.certificate("api-tls", "made from the Ingress", |_| true).await;
    assert_eq!(names(&api), ["api.example.com"]);
    assert_made_for(&api, &ingress, "Ingress");
    // certpilot issues them like any other.
    env.ready("web-tls").await;
    env.ready("api-tls").await;

    // Deleted by hand, a Certificate the Ingress still asks for comes back.
    let certificates = env.api::<Certificate>();
    certificates.delete("api-tls", &DeleteParams::default()).await.unwrap();
    let again = env.certificate("api-tls", "made again", |c| c.uid() != api.uid()).await;
    assert_made_for(&again, &ingress, "Ingress");

    // Edited hosts: the Certificate follows.
    env.ingress(
        "web",
        annotated.clone(),
        json!([
            {"secretName": "web-tls", "hosts": ["web.example.com", "shop.example.com"]},
            {"secretName": "api-tls", "hosts": ["api.example.com"]},
        ]),
    )
    .await;
    let web =
        env.certificate("web-tls", "with the new hosts", |c| names(c) == ["web.example.com", "shop.example.com"]).await;
    assert_made_for(&web, &ingress, "Ingress");

    // A TLS entry removed: its Certificate goes, the other stays.
    env.ingress("web", annotated, json!([{"secretName": "web-tls", "hosts": ["web.example.com", "shop.example.com"]}]))
        .await;
    env.gone("api-tls").await;
    assert!(env.api::<Certificate>().get_opt("web-tls").await.unwrap().is_some());

    // The annotation removed: the rest goes too.
    env.ingress("web", json!({}), json!([{"secretName": "web-tls", "hosts": ["web.example.com"]}])).await;
    env.gone("web-tls").await;
}

#[tokio::test]
async fn a_certificate_the_shim_did_not_make_is_left_alone() {
    let env = Env::start("shim-conflict", false, &[]).await;
    env.self_signed_issuer("local").await;
    let users = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": "taken-tls"},
        "spec": {"secretName": "taken-tls", "dnsNames": ["user.example.com"], "issuerRef": {"kind": "Issuer", "name": "local"}}});
    let before = env.apply(&env.api::<Certificate>(), users).await;
    env.ingress(
        "shop",
        json!({"certpilot.dev/issuer": "local"}),
        json!([
            {"secretName": "taken-tls", "hosts": ["shop.example.com"]},
            {"secretName": "free-tls", "hosts": ["free.example.com"]},
        ]),
    )
    .await;
    // The free name gets its Certificate, with the Issuer the annotation names.
    let free = env.ready("free-tls").await;
    assert_eq!(free.spec.issuer_ref, IssuerRef { kind: IssuerKind::Issuer, name: "local".into() });
    // The taken one is reported on the Ingress, and left as its owner made it.
    let note = env.warning("Ingress", "shop", "CertificateConflict").await;
    assert!(note.contains("taken-tls"), "{note}");
    let unchanged = |after: &Certificate| {
        assert_eq!(after.spec, before.spec);
        assert!(after.owner_references().is_empty(), "{:?}", after.owner_references());
        assert!(!after.labels().contains_key(SHIM_LABEL));
        assert_eq!(after.uid(), before.uid());
    };
    unchanged(&env.api::<Certificate>().get("taken-tls").await.unwrap());
    // Without the annotation, the shim's Certificate goes; the user's stays.
    env.ingress(
        "shop",
        json!({}),
        json!([
            {"secretName": "taken-tls", "hosts": ["shop.example.com"]},
            {"secretName": "free-tls", "hosts": ["free.example.com"]},
        ]),
    )
    .await;
    env.gone("free-tls").await;
    unchanged(&env.api::<Certificate>().get("taken-tls").await.unwrap());

    // Annotated again, and the user's Certificate deleted: the name is free, the shim takes it.
    let ingress = env
        .ingress(
            "shop",
            json!({"certpilot.dev/issuer": "local"}),
            json!([{"secretName": "taken-tls", "hosts": ["shop.example.com"]}]),
        )
        .await;
    env.api::<Certificate>().delete("taken-tls", &DeleteParams::default()).await.unwrap();
    let taken = env.certificate("taken-tls", "made by the shim once free", |c| c.uid() != before.uid()).await;
    assert_made_for(&taken, &ingress, "Ingress");
    assert_eq!(names(&taken), ["shop.example.com"]);
}

#[tokio::test]
async fn cert_manager_annotations_count_only_with_the_flag() {
    let mut env = Env::start("shim-cert-manager", false, &[]).await;
    let issuer = env.self_signed_cluster_issuer().await;
    let tls = |secret: &str, host: &str| json!([{"secretName": secret, "hosts": [host]}]);
    let legacy = env
        .ingress("legacy", json!({"cert-manager.io/cluster-issuer": issuer}), tls("legacy-tls", "legacy.example.com"))
        .await;
    let kinded = env
        .ingress(
            "kinded",
            json!({"cert-manager.io/issuer": issuer, "cert-manager.io/issuer-kind": "ClusterIssuer"}),
            tls("kinded-tls", "kinded.example.com"),
        )
        .await;
    // Both families: certpilot's own wins (with or without the flag).
    let both = env
        .ingress(
            "both",
            json!({"cert-manager.io/issuer": "cert-managers", "certpilot.dev/cluster-issuer": issuer}),
            tls("both-tls", "both.example.com"),
        )
        .await;
    // The last Ingress handled means the earlier ones were: theirs were ignored.
    let made = env.certificate("both-tls", "made from certpilot's annotation", |_| true).await;
    assert_eq!(made.spec.issuer_ref, cluster_issuer(&issuer));
    assert_made_for(&made, &both, "Ingress");
    let certificates = env.api::<Certificate>();
    assert!(certificates.get_opt("legacy-tls").await.unwrap().is_none(), "cert-manager's annotation, no flag");
    assert!(certificates.get_opt("kinded-tls").await.unwrap().is_none(), "cert-manager's annotation, no flag");

    // With the flag (cert-manager's controller stopped), cert-manager's annotations count.
    env.restart(&["--accept-cert-manager-annotations"]);
    let made = env.certificate("legacy-tls", "made from cert-manager's annotation", |_| true).await;
    assert_eq!(made.spec.issuer_ref, cluster_issuer(&issuer));
    assert_eq!(names(&made), ["legacy.example.com"]);
    assert_made_for(&made, &legacy, "Ingress");
    let made = env.certificate("kinded-tls", "made from cert-manager's annotations", |_| true).await;
    assert_eq!(made.spec.issuer_ref, cluster_issuer(&issuer), "cert-manager.io/issuer-kind: ClusterIssuer");
    assert_made_for(&made, &kinded, "Ingress");
    env.ready("legacy-tls").await;
    let both = env.api::<Certificate>().get("both-tls").await.unwrap();
    assert_eq!(both.spec.issuer_ref, cluster_issuer(&issuer), "certpilot's own annotation still wins");
}

/// Moving an Ingress from cert-manager without downtime: with cert-manager's controller stopped
/// and the flag set, the shim's Certificate (named after the Secret, as cert-manager's
/// ingress-shim names its own) adopts the Secret cert-manager wrote: no attempt, no write.
#[tokio::test]
async fn a_cert_manager_ingress_keeps_its_certificate_when_certpilot_takes_over() {
    let env = Env::start("shim-migrate", false, &["--accept-cert-manager-annotations"]).await;
    let issuer = env.self_signed_cluster_issuer().await;
    let now = jiff::Timestamp::now();
    let day = jiff::SignedDuration::from_hours(24);
    let hosts = ["shop.example.com"];
    let before =
        cert_manager_secret(&env.api(), "shop-tls", "shop-tls", &hosts, (now - day * 10, now + day * 80)).await;
    let tls = json!([{"secretName": "shop-tls", "hosts": hosts}]);
    env.ingress("shop", json!({"cert-manager.io/cluster-issuer": issuer}), tls).await;
    let adopted = env
        .certificate("shop-tls", "Ready, adopted", |c| {
            c.status.as_ref().is_some_and(|s| {
                s.observed_generation == c.metadata.generation
                    && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "Adopted")
            })
        })
        .await;
    assert!(adopted.status.unwrap().last_attempt.is_none(), "no attempt was made");
    let after = env.api::<Secret>().get("shop-tls").await.unwrap();
    assert_eq!(after.resource_version(), before.resource_version(), "the Secret cert-manager wrote is untouched");
}

#[tokio::test]
async fn a_gateway_gets_a_certificate_per_secret_of_its_listeners() {
    let env = Env::start("shim-gateway", true, &[]).await;
    let issuer = env.self_signed_cluster_issuer().await;
    let https = |name: &str, hostname: Option<&str>, secret: &str| {
        let mut listener = json!({"name": name, "port": 443, "protocol": "HTTPS",
            "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "group": "", "name": secret}]}});
        if let Some(hostname) = hostname {
            listener["hostname"] = hostname.into();
        }
        listener
    };
    let doc = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "public", "annotations": {"certpilot.dev/cluster-issuer": issuer}},
        "spec": {"gatewayClassName": "certpilot-test", "listeners": [
            https("shop", Some("shop.example.com"), "shop-tls"),
            https("www", Some("www.example.com"), "shop-tls"),
            https("any", None, "any-tls"),
            {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "shop.example.com"},
            {"name": "passthrough", "port": 8443, "protocol": "TLS", "hostname": "pass.example.com", "tls": {"mode": "Passthrough"}},
        ]},
    });
    let gateway = env.apply(&env.gateways(), doc).await;
    // The listeners of one Secret share a Certificate, for their hostnames.
    let shop = env.certificate("shop-tls", "made from the Gateway", |_| true).await;
    assert_eq!(names(&shop), ["shop.example.com", "www.example.com"]);
    assert_eq!(shop.spec.issuer_ref, cluster_issuer(&issuer));
    assert_eq!(shop.labels().get(SHIM_LABEL).map(String::as_str), Some("Gateway"));
    let owner = &shop.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.api_version.as_str()), ("Gateway", "gateway.networking.k8s.io/v1"));
    assert_eq!((Some(&owner.uid), owner.controller), (gateway.metadata.uid.as_ref(), Some(true)));
    env.ready("shop-tls").await;
    // A listener without hostname cannot say which names it needs: reported, no Certificate.
    let note = env.warning("Gateway", "public", "BadListener").await;
    assert!(note.contains("listener any") && note.contains("hostname"), "{note}");
    assert!(env.api::<Certificate>().get_opt("any-tls").await.unwrap().is_none());
    // Its Certificates go with the Gateway (garbage collection of what it owns).
    env.gateways().delete("public", &DeleteParams::background()).await.unwrap();
    env.gone("shop-tls").await;
}
