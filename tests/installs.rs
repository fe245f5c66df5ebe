//! Several certpilot installs in one cluster: each works with its own Secrets, and exactly one
//! writes a shared ClusterIssuer's status, so they never take turns overwriting it. On the test
//! API server or, with `CERTPILOT_TEST_KUBECONFIG`, a real cluster.

mod support;

use certpilot::api::{Certificate, ClusterIssuer};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent},
};
use serde_json::json;
use std::{process::Stdio, time::Duration};
use support::*;

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
