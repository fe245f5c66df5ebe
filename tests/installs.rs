//! certpilot installed as users install it, on the test API server or, with
//! `CERTPILOT_TEST_KUBECONFIG`, a real cluster: `deploy/` and the chart (each value set of
//! `tests/helm.rs`) applied for real; the operator run as the ServiceAccount they install, with
//! their RBAC and admission policy; several installs in one cluster, each with its own Secrets,
//! exactly one writing a shared ClusterIssuer's status.
//!
//! `deploy/` and the chart's defaults bind an admission policy to every namespace that admits
//! one ServiceAccount: while one is in place, nothing else may run certpilot. The tests here
//! take turns (other test binaries never run beside this one), and remove what they installed
//! even when they fail.

mod support;

use certpilot::api::{Certificate, CertificateAttempt, ClusterIssuer, Issuer};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use k8s_openapi::api::{
    core::v1::{Namespace, Secret},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent},
};
use serde_json::{Value, json};
use std::{process::Stdio, time::Duration};
use support::{
    helm::{self, Release},
    install::{Installation, await_crds_established, deploy_objects, ensure_prometheus_operator_crds},
    pebble::{Pebble, PebbleOptions},
    *,
};

/// One test at a time: see the module's documentation.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(120);

async fn apply<K>(api: &Api<K>, doc: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = doc["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(&name, &PatchParams::apply("installs-test").force(), &Patch::Apply(&doc)).await.expect("applied")
}

/// A CA key pair, as a `kubernetes.io/tls` Secret.
fn ca_secret(name: &str) -> Secret {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(rcgen::DnType::CommonName, "certpilot installs test CA");
    let cert = params.self_signed(&key).unwrap();
    let b64 = |pem: String| serde_json::to_value(k8s_openapi::ByteString(pem.into_bytes())).unwrap();
    serde_json::from_value(json!({"metadata": {"name": name}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(cert.pem()), "tls.key": b64(key.serialize_pem())}}))
    .unwrap()
}

fn ready_condition(c: &Certificate) -> Option<(String, String, String)> {
    let ready = c.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((ready.status.clone(), ready.reason.clone(), ready.message.clone()))
}

/// Two installs (each watching its own namespace, each with its own cluster resource namespace)
/// and one CA ClusterIssuer whose Secret only one of them has: that one's Certificates are
/// issued, the other's say why not in their own terms, and the status is written at most twice
/// (the first look, then the install that can use it), then left alone.
#[tokio::test]
async fn two_installs_share_a_cluster_issuer_without_fighting_over_its_status() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start("installs-two").await.unwrap();
    install_certpilot_crds(&cluster).await;
    let (ns_a, ns_b) = (cluster.namespace().to_string(), unique_name("installs-two-b"));
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns_b}})).unwrap())
        .await
        .unwrap();
    Api::<Secret>::namespaced(cluster.client(), &ns_a)
        .create(&PostParams::default(), &ca_secret("shared-ca"))
        .await
        .unwrap();
    let kubeconfig = cluster.kubeconfig_path().unwrap();
    // B looks first and finds no Secret; A, which has it, comes second.
    let _b = Operator::spawn(&kubeconfig, &ns_b, &["--probe-address", "127.0.0.1:0"], Stdio::inherit());
    let cluster_issuers: Api<ClusterIssuer> = Api::all(cluster.client());
    let since = collection_version(&cluster_issuers).await;
    let name = unique_name("shared-ca");
    apply(
        &cluster_issuers,
        json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "ClusterIssuer",
        "metadata": {"name": name}, "spec": {"ca": {"secretName": "shared-ca"}}}),
    )
    .await;
    let claimed_by = |i: &ClusterIssuer| i.status.as_ref().and_then(|s| s.cluster_resource_namespace.clone());
    wait_for(&cluster_issuers, &name, "B's view in the status", WAIT, |i| {
        claimed_by(i).as_deref() == Some(ns_b.as_str())
    })
    .await;
    let _a = Operator::spawn(&kubeconfig, &ns_a, &["--probe-address", "127.0.0.1:0"], Stdio::inherit());
    let ready = |i: &ClusterIssuer| {
        i.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let taken = wait_for(&cluster_issuers, &name, "A's view (ready) in the status", WAIT, |i| ready(i)).await;
    assert_eq!(claimed_by(&taken).as_deref(), Some(ns_a.as_str()));
    // Each install's Certificates go by its own view.
    let certificate = |secret: &str| {
        json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate",
        "metadata": {"name": "web"}, "spec": {"secretName": secret, "dnsNames": ["web.example.com"],
        "issuerRef": {"kind": "ClusterIssuer", "name": name}}})
    };
    let (certs_a, certs_b): (Api<Certificate>, Api<Certificate>) =
        (Api::namespaced(cluster.client(), &ns_a), Api::namespaced(cluster.client(), &ns_b));
    apply(&certs_a, certificate("web-tls")).await;
    apply(&certs_b, certificate("web-tls")).await;
    wait_for(&certs_a, "web", "A's Certificate to be Ready", WAIT, |c| {
        ready_condition(c).is_some_and(|(status, _, _)| status == "True")
    })
    .await;
    let blocked = wait_for(&certs_b, "web", "B's Certificate to say why not", WAIT, |c| {
        ready_condition(c).is_some_and(|(_, reason, _)| reason == "IssuerNotReady")
    })
    .await;
    let (_, _, message) = ready_condition(&blocked).unwrap();
    assert!(message.contains("shared-ca") && message.contains(&ns_b), "B's own terms: {message}");
    // Ten seconds from the create: the create, and at most two status writes.
    let events =
        changes_since(&cluster_issuers, &since, &format!("metadata.name={name}"), Duration::from_secs(10)).await;
    let writes = events.iter().filter(|e| matches!(e, WatchEvent::Modified(_))).count();
    assert!(
        writes <= 2,
        "{writes} status writes: {:#?}",
        events
            .iter()
            .map(|e| match e {
                WatchEvent::Modified(i) => format!("{:?}", i.status),
                _ => "other".into(),
            })
            .collect::<Vec<_>>()
    );
    let now = cluster_issuers.get(&name).await.unwrap();
    assert!(ready(&now) && claimed_by(&now).as_deref() == Some(ns_a.as_str()), "{:?}", now.status);
    cluster_issuers.delete(&name, &DeleteParams::default()).await.unwrap();
    let _ = namespaces.delete(&ns_b, &DeleteParams::background()).await;
}

/// A namespace object, for an installation to create (as `--create-namespace` would).
fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects.iter().map(|o| o["kind"].as_str().unwrap().to_string()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// `kubectl apply -f deploy/`, and the chart with each value set, for real: every object is
/// created and the CRDs are Established.
#[tokio::test]
async fn deploy_and_the_chart_install_for_real() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("installs-real").await.unwrap();
    let objects = deploy_objects();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    assert_eq!(kinds(&objects), expected, "what deploy/ installs");
    let deploy = Installation::apply(&cluster, "deploy/", objects.clone()).await;
    await_crds_established(&cluster, &objects).await;
    deploy.remove().await;
    let prometheus = ensure_prometheus_operator_crds(&cluster).await;
    for (what, overrides) in helm::value_sets() {
        let (name, ns) = (unique_name("certpilot"), unique_name("certpilot-release"));
        let mut objects = vec![namespace(&ns)];
        objects.extend(helm::crds());
        objects.extend(helm::objects(&Release { name: &name, namespace: &ns }, &helm::values(&overrides)));
        let release = Installation::apply(&cluster, what, objects.clone()).await;
        await_crds_established(&cluster, &objects).await;
        release.remove().await;
    }
    let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(
        cluster.client(),
    );
    for name in prometheus {
        crds.delete(&name, &DeleteParams::default()).await.unwrap();
    }
}

fn ready(c: &Certificate) -> bool {
    ready_condition(c).is_some_and(|(status, _, _)| status == "True")
}

/// The log lines of file `log` that contain `text`.
fn lines_with(log: &std::path::Path, text: &str) -> Vec<String> {
    let all = std::fs::read_to_string(log).unwrap_or_default();
    all.lines().filter(|l| l.contains(text)).map(String::from).collect()
}

/// The operator run as the `certpilot` ServiceAccount that `deploy/` installs (a token from
/// TokenRequest), with `deploy/`'s RBAC and admission policy in place: it issues from a
/// self-signed, a CA and an ACME issuer (Pebble, HTTP-01 through an Ingress); an ordinary user
/// who makes or edits an attempt, or writes a Certificate's status, is refused with the
/// policy's message.
#[tokio::test]
async fn certpilot_runs_as_its_service_account_with_the_rbac_and_policy_it_ships() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("installs-account").await.unwrap();
    let ns = cluster.namespace().to_string();
    let objects = deploy_objects();
    let deploy = Installation::apply(&cluster, "deploy/", objects.clone()).await;
    await_crds_established(&cluster, &objects).await;
    let access = cluster.service_account_access("certpilot", "certpilot").await.unwrap();
    let options = PebbleOptions::on_free_ports();
    let mut args: Vec<String> = vec!["--cluster-resource-namespace".into(), "certpilot".into()];
    args.extend(options.solver_args());
    let pebble = Pebble::start(options);
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("certpilot-account")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::spawn(access.path(), &ns, &args, Stdio::from(std::fs::File::create(&log).unwrap()));
    let (issuers, certificates): (Api<Issuer>, Api<Certificate>) =
        (Api::namespaced(cluster.client(), &ns), Api::namespaced(cluster.client(), &ns));
    let issuer = |name: &str, spec: Value| json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": name}, "spec": spec});
    let certificate = |name: &str, issuer: &str, spec: Value| {
        let mut full = json!({"secretName": format!("{name}-tls"), "issuerRef": {"name": issuer}});
        full.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name}, "spec": full})
    };
    apply(&issuers, issuer("selfsigned", json!({"selfSigned": {}}))).await;
    apply(&issuers, pebble.acme_issuer("pebble", json!({}))).await;
    apply(
        &certificates,
        certificate("root", "selfsigned", json!({"commonName": "certpilot account test CA", "isCA": true})),
    )
    .await;
    apply(&certificates, certificate("local", "selfsigned", json!({"dnsNames": ["local.example.com"]}))).await;
    apply(&certificates, certificate("public", "pebble", json!({"dnsNames": ["public.certpilot.test"]}))).await;
    wait_for(&certificates, "root", "the CA certificate", WAIT, ready).await;
    apply(&issuers, issuer("ca", json!({"ca": {"secretName": "root-tls"}}))).await;
    apply(&certificates, certificate("internal", "ca", json!({"dnsNames": ["internal.example.com"]}))).await;
    for name in ["local", "internal", "public"] {
        wait_for(&certificates, name, &format!("Certificate {name} to be Ready"), WAIT, ready).await;
    }
    assert!(lines_with(&log, "refuses certpilot's writes").is_empty(), "the policy admits certpilot's ServiceAccount");
    // An ordinary user, allowed by RBAC, is refused by the policy.
    let user = "certpilot-account-test-user";
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "attempt-writer"},
        "rules": [{"apiGroups": ["certpilot.dev"], "resources": ["certificateattempts", "certificates/status"],
                   "verbs": ["get", "create", "update", "patch"]}]}))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "attempt-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "attempt-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
    .unwrap();
    Api::<Role>::namespaced(cluster.client(), &ns).create(&PostParams::default(), &role).await.unwrap();
    Api::<RoleBinding>::namespaced(cluster.client(), &ns).create(&PostParams::default(), &binding).await.unwrap();
    let as_user = cluster.impersonating_client(user, &[]).unwrap();
    let user_attempts: Api<CertificateAttempt> = Api::namespaced(as_user.clone(), &ns);
    let user_certificates: Api<Certificate> = Api::namespaced(as_user, &ns);
    let made = Api::<CertificateAttempt>::namespaced(cluster.client(), &ns).get("public-1").await.unwrap();
    let mut forged = CertificateAttempt::new("public-99", made.spec.clone());
    forged.metadata.owner_references = made.metadata.owner_references.clone();
    let label = Patch::Merge(json!({"metadata": {"labels": {"edited": "yes"}}}));
    let status = Patch::Merge(json!({"status": {"phase": "Ready"}}));
    let (pp, post) = (PatchParams::default(), PostParams::default());
    let refusals = [
        ("creating an attempt", refused(|| user_attempts.create(&post, &forged)).await),
        ("editing an attempt", refused(|| user_attempts.patch("public-1", &pp, &label)).await),
        ("writing a Certificate's status", refused(|| user_certificates.patch_status("public", &pp, &status)).await),
    ];
    for (what, refusal) in refusals {
        assert_eq!(refusal.code, 403, "{what}: {}", refusal.message);
        assert!(
            refusal.message.contains("ValidatingAdmissionPolicy 'certpilot-owned-objects'"),
            "{what}: {}",
            refusal.message
        );
        assert!(
            refusal.message.contains("CertificateAttempts are made by certpilot alone"),
            "{what}: {}",
            refusal.message
        );
    }
    deploy.remove().await;
    std::fs::remove_file(&log).ok();
}

/// Sends `request` until something other than RBAC (which reaches a real API server's cache a
/// moment after it is written) refuses it; the refusal.
async fn refused<T, F, Fut>(request: F) -> kube::core::Status
where
    T: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    eventually("a refusal that is not RBAC's", WAIT, || async {
        match request().await {
            Err(kube::Error::Api(status)) if !status.message.contains("cannot ") => Some(*status),
            Ok(made) => panic!("allowed: {made:?}"),
            Err(_) => None,
        }
    })
    .await
}

/// Two chart releases, each watching its own namespace with the admission policy on: both issue,
/// neither's policy refuses the other, and one writes the ClusterIssuer they share.
#[tokio::test]
async fn two_chart_releases_for_two_namespaces_work_side_by_side() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start("installs-releases").await.unwrap();
    install_certpilot_crds(&cluster).await;
    let shared = unique_name("installs-shared");
    let cluster_issuers: Api<ClusterIssuer> = Api::all(cluster.client());
    let since = collection_version(&cluster_issuers).await;
    apply(
        &cluster_issuers,
        json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "ClusterIssuer",
        "metadata": {"name": shared}, "spec": {"selfSigned": {}}}),
    )
    .await;
    let mut releases = Vec::new();
    for team in ["a", "b"] {
        let (name, ns) = (unique_name(&format!("certpilot-{team}")), unique_name(&format!("team-{team}")));
        let mut objects = vec![namespace(&ns)];
        let values = helm::values(&json!({"watchNamespace": ns}));
        objects.extend(helm::objects(&Release { name: &name, namespace: &ns }, &values));
        let installed = Installation::apply(&cluster, &format!("release {name}"), objects).await;
        let access = cluster.service_account_access(&ns, &name).await.unwrap();
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("certpilot-release")));
        let operator = Operator::spawn(access.path(), &ns, &[], Stdio::from(std::fs::File::create(&log).unwrap()));
        releases.push((ns, installed, access, log, operator));
    }
    for (ns, ..) in &releases {
        let issuers: Api<Issuer> = Api::namespaced(cluster.client(), ns);
        apply(
            &issuers,
            json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "local"},
            "spec": {"selfSigned": {}}}),
        )
        .await;
        let certificates: Api<Certificate> = Api::namespaced(cluster.client(), ns);
        for (name, kind, issuer) in [("own", "Issuer", "local"), ("shared", "ClusterIssuer", shared.as_str())] {
            apply(
                &certificates,
                json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate",
                "metadata": {"name": name}, "spec": {"secretName": format!("{name}-tls"),
                "dnsNames": [format!("{name}.example.com")], "issuerRef": {"kind": kind, "name": issuer}}}),
            )
            .await;
        }
    }
    for (ns, ..) in &releases {
        let certificates: Api<Certificate> = Api::namespaced(cluster.client(), ns);
        for name in ["own", "shared"] {
            wait_for(&certificates, name, &format!("{ns}/{name} to be Ready"), WAIT, ready).await;
        }
    }
    let events =
        changes_since(&cluster_issuers, &since, &format!("metadata.name={shared}"), Duration::from_secs(10)).await;
    let writes = events.iter().filter(|e| matches!(e, WatchEvent::Modified(_))).count();
    assert!((1..=2).contains(&writes), "{writes} status writes of the shared ClusterIssuer");
    for (_, _, _, log, _) in &releases {
        assert!(
            lines_with(log, "refuses certpilot's writes").is_empty(),
            "no release's policy refuses the other's certpilot"
        );
    }
    cluster_issuers.delete(&shared, &DeleteParams::default()).await.unwrap();
    for (_, installed, _, log, operator) in releases {
        drop(operator);
        installed.remove().await;
        std::fs::remove_file(&log).ok();
    }
}
