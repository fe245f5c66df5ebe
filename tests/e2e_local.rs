//! End to end: the operator binary against the test API server (or a real cluster with
//! `CERTPILOT_TEST_KUBECONFIG`), issuing with the selfSigned and ca issuers.

mod support;

use certpilot::{
    api::{
        Certificate, CertificateAttempt, ClusterIssuer, Issuer, attempt::AttemptPhase, attempt::AttemptType,
        certificate::CertificatePhase,
    },
    pki::{
        PrivateKey,
        cert::{parse_chain, pem_certificates},
    },
};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use k8s_openapi::{
    ByteString,
    api::{coordination::v1::Lease, core::v1::Secret},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use std::{collections::BTreeMap, time::Duration};
use support::*;

const WAIT: Duration = Duration::from_secs(90);

struct Env {
    cluster: TestCluster,
    _operator: Operator,
}

impl Env {
    async fn start(test: &str) -> Self {
        let mut cluster = TestCluster::start(test).await.expect("cluster");
        install_certpilot_crds(&cluster).await;
        let operator = Operator::start(&mut cluster);
        Self { cluster, _operator: operator }
    }
    fn ns(&self) -> &str {
        self.cluster.namespace()
    }
    fn certificates(&self) -> Api<Certificate> {
        Api::namespaced(self.cluster.client(), self.ns())
    }
    fn attempts(&self) -> Api<CertificateAttempt> {
        Api::namespaced(self.cluster.client(), self.ns())
    }
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.cluster.client(), self.ns())
    }
    fn issuers(&self) -> Api<Issuer> {
        Api::namespaced(self.cluster.client(), self.ns())
    }
    async fn apply<K>(&self, api: &Api<K>, doc: Value) -> K
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(&name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(&doc)).await.expect("apply")
    }
    async fn self_signed_issuer(&self, name: &str) {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": name}, "spec": {"selfSigned": {}}});
        self.apply(&self.issuers(), doc).await;
    }
    async fn certificate(&self, name: &str, spec: Value) -> Certificate {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name}, "spec": spec});
        self.apply(&self.certificates(), doc).await
    }
    async fn ready(&self, name: &str) -> Certificate {
        wait_for(&self.certificates(), name, &format!("Certificate {name} to be Ready"), WAIT, is_ready).await
    }
    async fn secret_data(&self, name: &str) -> BTreeMap<String, ByteString> {
        self.secrets().get(name).await.unwrap().data.unwrap()
    }
}

fn condition<'a>(cert: &'a Certificate, type_: &str) -> Option<&'a certpilot::api::Condition> {
    cert.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

fn is_ready(cert: &Certificate) -> bool {
    let current = cert.status.as_ref().and_then(|s| s.observed_generation) == cert.metadata.generation;
    current
        && condition(cert, "Ready").is_some_and(|c| c.status == "True")
        && cert.status.as_ref().unwrap().phase == CertificatePhase::Ready
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// The Secret holds a chain whose leaf matches the key and the names, as a client would check.
fn assert_secret_matches(data: &BTreeMap<String, ByteString>, dns_names: &[&str]) -> certpilot::pki::CertInfo {
    let key = PrivateKey::from_pem(&text(data, "tls.key")).expect("tls.key parses");
    let leaf = parse_chain(&data["tls.crt"].0).expect("tls.crt parses");
    assert_eq!(leaf.public_key_info, key.public_key_info(), "tls.key belongs to tls.crt");
    let mut names = leaf.dns_names.clone();
    names.sort();
    let mut want: Vec<String> = dns_names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
    assert!(!data["ca.crt"].0.is_empty());
    leaf
}

#[tokio::test]
async fn issues_a_self_signed_certificate_with_a_cluster_issuer() {
    let env = Env::start("e2e-selfsigned").await;
    let issuer_name = unique_name("selfsigned");
    let cluster_issuers: Api<ClusterIssuer> = Api::all(env.cluster.client());
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "ClusterIssuer", "metadata": {"name": issuer_name}, "spec": {"selfSigned": {}}});
    env.apply(&cluster_issuers, doc).await;
    let before = collection_version(&env.secrets()).await;
    env.certificate(
        "web",
        json!({
            "secretName": "web-tls",
            "dnsNames": ["web.example.com", "www.example.com"],
            "issuerRef": {"kind": "ClusterIssuer", "name": issuer_name},
            "secretTemplate": {"labels": {"team": "shop"}, "annotations": {"owner": "shop@example.com"}},
            "additionalOutputFormats": [{"type": "CombinedPEM"}, {"type": "DER"}],
        }),
    )
    .await;
    let cert = env.ready("web").await;
    let status = cert.status.clone().unwrap();
    let secret = env.secrets().get("web-tls").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret.labels().get("team").map(String::as_str), Some("shop"));
    assert_eq!(secret.annotations().get("owner").map(String::as_str), Some("shop@example.com"));
    let data = secret.data.unwrap();
    let leaf = assert_secret_matches(&data, &["web.example.com", "www.example.com"]);
    assert!(
        text(&data, "tls-combined.pem").contains("PRIVATE KEY")
            && text(&data, "tls-combined.pem").contains("CERTIFICATE")
    );
    assert_eq!(PrivateKey::from_pem(&text(&data, "tls.key")).unwrap().pkcs8_der(), data["key.der"].0);
    // The status summarises the certificate and its attempt.
    assert_eq!(status.serial_number.as_deref(), Some(leaf.serial_hex.as_str()));
    assert_eq!(status.fingerprint_sha256.as_deref(), Some(leaf.fingerprint_sha256.as_str()));
    assert_eq!(status.not_after.as_ref().unwrap().0, leaf.not_after);
    assert!(status.renewal_time.as_ref().unwrap().0 < leaf.not_after);
    assert_eq!(status.attempts_count, 0);
    let last = status.last_attempt.unwrap();
    assert_eq!((last.type_, last.phase), (AttemptType::Issue, AttemptPhase::Succeeded));
    let attempt = env.attempts().get(&last.name).await.unwrap();
    let steps: Vec<String> = attempt.status.as_ref().unwrap().steps.iter().map(|s| s.name.clone()).collect();
    assert_eq!(steps, ["GenerateKey", "Sign", "Verify", "WriteSecret"]);
    assert!(attempt.status.as_ref().unwrap().steps.iter().all(|s| s.finished_at.is_some()));
    assert_eq!(attempt.status.unwrap().issued.unwrap().serial_number, leaf.serial_hex);
    // The temporary key Secret is gone once the certificate is stored.
    assert!(env.secrets().get_opt(&format!("{}-key", last.name)).await.unwrap().is_none());
    // `kubectl describe` shows the story as Events on the Certificate.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.cluster.client(), env.ns());
    let issued = eventually("an Issued event", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Issued"))
    })
    .await;
    assert_eq!(issued.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("web"));
    assert!(issued.note.unwrap().contains("web-tls"));
    // One attempt, one write of the target Secret (a finished attempt never runs again).
    let writes = changes_since(&env.secrets(), &before, "metadata.name=web-tls", Duration::from_secs(1)).await;
    assert_eq!(writes.len(), 1, "the Secret was written once: {writes:#?}");
    cluster_issuers.delete(&issuer_name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn issues_from_a_ca_bootstrapped_with_a_self_signed_issuer() {
    let env = Env::start("e2e-ca").await;
    env.self_signed_issuer("bootstrap").await;
    env.certificate("root", json!({"secretName": "root-ca", "commonName": "certpilot e2e root", "isCA": true, "issuerRef": {"name": "bootstrap"}, "privateKey": {"algorithm": "ECDSA", "size": 384}})).await;
    env.ready("root").await;
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "ca"}, "spec": {"ca": {"secretName": "root-ca"}}});
    env.apply(&env.issuers(), doc).await;
    let issuer = wait_for(&env.issuers(), "ca", "CA issuer Ready", WAIT, |i: &Issuer| {
        i.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    assert!(issuer.status.unwrap().ca.unwrap().subject.contains("certpilot e2e root"));
    env.certificate("api", json!({"secretName": "api-tls", "dnsNames": ["api.internal"], "ipAddresses": ["10.1.2.3"], "issuerRef": {"name": "ca"}, "privateKey": {"algorithm": "RSA", "size": 2048, "encoding": "PKCS1"}})).await;
    let cert = env.ready("api").await;
    let data = env.secret_data("api-tls").await;
    assert!(text(&data, "tls.key").starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let leaf = assert_secret_matches(&data, &["api.internal"]);
    assert_eq!(leaf.ip_addresses, vec!["10.1.2.3".parse::<std::net::IpAddr>().unwrap()]);
    assert!(leaf.issuer.contains("certpilot e2e root"));
    assert!(cert.status.unwrap().issuer.unwrap().contains("certpilot e2e root"));
    let chain = pem_certificates(&data["tls.crt"].0).unwrap();
    assert_eq!(chain.len(), 2, "leaf and CA");
    let ca = parse_chain(&data["ca.crt"].0).unwrap();
    assert!(ca.is_ca && ca.subject.contains("certpilot e2e root"));
}

#[tokio::test]
async fn renews_at_the_renewal_time_with_a_new_key() {
    let env = Env::start("e2e-renew").await;
    env.self_signed_issuer("local").await;
    env.certificate("short", json!({"secretName": "short-tls", "dnsNames": ["short.example.com"], "issuerRef": {"name": "local"}, "duration": "1m", "renewBefore": "30s"})).await;
    let first = env.ready("short").await.status.unwrap();
    let first_key = text(&env.secret_data("short-tls").await, "tls.key");
    let renewed = wait_for(&env.certificates(), "short", "a renewal", WAIT, |c: &Certificate| {
        let s = c.status.as_ref().unwrap();
        is_ready(c)
            && s.serial_number != first.serial_number
            && s.last_attempt.as_ref().is_some_and(|a| a.type_ == AttemptType::Renew)
    })
    .await
    .status
    .unwrap();
    assert!(renewed.not_after.unwrap().0 > first.not_after.unwrap().0);
    let second_key = text(&env.secret_data("short-tls").await, "tls.key");
    assert_ne!(first_key, second_key, "rotationPolicy Always gives a new key");
    // Renewal was not early: the first certificate had passed its renewal time.
    let renew_attempt = env.attempts().get(&renewed.last_attempt.unwrap().name).await.unwrap();
    let started = renew_attempt.status.unwrap().started_at.unwrap().0;
    assert!(started >= first.renewal_time.unwrap().0 - jiff::SignedDuration::from_secs(1));
}

#[tokio::test]
async fn reissues_when_the_names_or_key_change() {
    let env = Env::start("e2e-reissue").await;
    env.self_signed_issuer("local").await;
    env.certificate(
        "app",
        json!({"secretName": "app-tls", "dnsNames": ["a.example.com"], "issuerRef": {"name": "local"}}),
    )
    .await;
    env.ready("app").await;
    env.certificate("app", json!({"secretName": "app-tls", "dnsNames": ["a.example.com", "b.example.com"], "issuerRef": {"name": "local"}, "privateKey": {"algorithm": "Ed25519"}})).await;
    let cert = env.ready("app").await;
    assert_eq!(cert.status.unwrap().last_attempt.unwrap().type_, AttemptType::Reissue);
    let data = env.secret_data("app-tls").await;
    assert_secret_matches(&data, &["a.example.com", "b.example.com"]);
    assert_eq!(PrivateKey::from_pem(&text(&data, "tls.key")).unwrap().describe(), "Ed25519");
}

#[tokio::test]
async fn repairs_a_deleted_secret() {
    let env = Env::start("e2e-repair").await;
    env.self_signed_issuer("local").await;
    env.certificate(
        "app",
        json!({"secretName": "app-tls", "dnsNames": ["a.example.com"], "issuerRef": {"name": "local"}}),
    )
    .await;
    let before = env.ready("app").await.status.unwrap();
    env.secrets().delete("app-tls", &DeleteParams::default()).await.unwrap();
    let after = wait_for(&env.certificates(), "app", "the Secret to be reissued", WAIT, |c: &Certificate| {
        is_ready(c) && c.status.as_ref().unwrap().serial_number != before.serial_number
    })
    .await;
    assert_secret_matches(&env.secret_data("app-tls").await, &["a.example.com"]);
    assert_ne!(after.status.unwrap().last_attempt.unwrap().name, before.last_attempt.unwrap().name);
}

#[tokio::test]
async fn refuses_a_foreign_secret_until_it_is_adopted() {
    let env = Env::start("e2e-foreign").await;
    env.self_signed_issuer("local").await;
    let mut foreign = Secret { type_: Some("kubernetes.io/tls".into()), ..Default::default() };
    foreign.metadata.name = Some("taken-tls".into());
    foreign.data = Some(BTreeMap::from([
        ("tls.crt".to_string(), ByteString(b"theirs".to_vec())),
        ("tls.key".to_string(), ByteString(b"theirs".to_vec())),
    ]));
    env.secrets().create(&PostParams::default(), &foreign).await.unwrap();
    env.certificate(
        "app",
        json!({"secretName": "taken-tls", "dnsNames": ["a.example.com"], "issuerRef": {"name": "local"}}),
    )
    .await;
    let refused = wait_for(&env.certificates(), "app", "SecretNotOwned", WAIT, |c: &Certificate| {
        condition(c, "Ready").is_some_and(|r| r.reason == "SecretNotOwned")
    })
    .await;
    assert!(condition(&refused, "Ready").unwrap().message.contains("certpilot.dev/adopt"));
    assert_eq!(env.secret_data("taken-tls").await["tls.crt"].0, b"theirs", "the foreign Secret is untouched");
    assert!(env.attempts().list(&ListParams::default()).await.unwrap().items.is_empty(), "no attempt was made");
    let adopt = json!({"metadata": {"annotations": {"certpilot.dev/adopt": "true"}}});
    env.secrets().patch("taken-tls", &PatchParams::default(), &Patch::Merge(&adopt)).await.unwrap();
    env.ready("app").await;
    assert_secret_matches(&env.secret_data("taken-tls").await, &["a.example.com"]);
}

#[tokio::test]
async fn explains_issuer_problems_on_the_certificate() {
    let env = Env::start("e2e-bad-issuer").await;
    env.certificate(
        "app",
        json!({"secretName": "app-tls", "dnsNames": ["a.example.com"], "issuerRef": {"name": "missing"}}),
    )
    .await;
    let c = wait_for(&env.certificates(), "app", "IssuerNotFound", WAIT, |c: &Certificate| {
        condition(c, "Ready").is_some_and(|r| r.reason == "IssuerNotFound")
    })
    .await;
    assert!(condition(&c, "Ready").unwrap().message.contains("missing"));
    assert_eq!(c.status.unwrap().phase, CertificatePhase::Pending);
    // A CA issuer whose Secret does not exist is not ready, and the Certificate says why.
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "missing"}, "spec": {"ca": {"secretName": "no-such-ca"}}});
    env.apply(&env.issuers(), doc).await;
    let issuer = wait_for(&env.issuers(), "missing", "CASecretNotFound", WAIT, |i: &Issuer| {
        i.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "CASecretNotFound"))
    })
    .await;
    assert!(issuer.status.unwrap().conditions[0].message.contains("kubectl create secret tls no-such-ca"));
    let c = wait_for(&env.certificates(), "app", "IssuerNotReady", WAIT, |c: &Certificate| {
        condition(c, "Ready").is_some_and(|r| r.reason == "IssuerNotReady")
    })
    .await;
    assert!(condition(&c, "Ready").unwrap().message.contains("no-such-ca"));
    // A Secret that is not a CA is refused with the reason.
    env.self_signed_issuer("leafmaker").await;
    env.certificate(
        "not-a-ca",
        json!({"secretName": "no-such-ca", "dnsNames": ["leaf.example.com"], "issuerRef": {"name": "leafmaker"}}),
    )
    .await;
    env.ready("not-a-ca").await;
    let issuer = wait_for(&env.issuers(), "missing", "CASecretInvalid", WAIT, |i: &Issuer| {
        i.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "CASecretInvalid"))
    })
    .await;
    assert!(issuer.status.unwrap().conditions[0].message.contains("not a CA certificate"));
}

#[tokio::test]
async fn manual_renewals_and_the_attempt_history_limit() {
    let env = Env::start("e2e-manual").await;
    env.self_signed_issuer("local").await;
    env.certificate("app", json!({"secretName": "app-tls", "dnsNames": ["a.example.com"], "issuerRef": {"name": "local"}, "attemptHistoryLimit": 2, "privateKey": {"rotationPolicy": "Never"}})).await;
    env.ready("app").await;
    let key = text(&env.secret_data("app-tls").await, "tls.key");
    for round in 1..=3 {
        let before = env.certificates().get("app").await.unwrap().status.unwrap().serial_number;
        let request = json!({"metadata": {"annotations": {"certpilot.dev/renew": format!("round-{round}")}}});
        env.certificates().patch("app", &PatchParams::default(), &Patch::Merge(&request)).await.unwrap();
        wait_for(&env.certificates(), "app", "a manual renewal", WAIT, |c: &Certificate| {
            let s = c.status.as_ref().unwrap();
            is_ready(c)
                && s.serial_number != before
                && s.last_attempt
                    .as_ref()
                    .is_some_and(|a| a.type_ == AttemptType::Manual && a.phase == AttemptPhase::Succeeded)
        })
        .await;
    }
    assert_eq!(text(&env.secret_data("app-tls").await, "tls.key"), key, "rotationPolicy Never keeps the key");
    let remaining = eventually("pruned history", WAIT, || async {
        let items = env.attempts().list(&ListParams::default()).await.unwrap().items;
        (items.len() <= 2).then_some(items)
    })
    .await;
    assert!(remaining.iter().any(|a| a.spec.renew_request.as_deref() == Some("round-3")));
}

/// `status.history` keeps the latest ten attempts, newest first, as they ended, when all but
/// two objects are pruned; and the Certificate stays under 8 KiB.
#[tokio::test]
async fn the_history_on_the_certificate_outlives_pruned_attempts() {
    let env = Env::start("e2e-history").await;
    env.self_signed_issuer("local").await;
    env.certificate("hist", json!({"secretName": "hist-tls", "dnsNames": ["h.example.com"], "issuerRef": {"name": "local"}, "attemptHistoryLimit": 2})).await;
    env.ready("hist").await;
    let mut serials = BTreeMap::new();
    for round in 1..=15u32 {
        let name = format!("hist-{}", round + 1);
        let request = json!({"metadata": {"annotations": {"certpilot.dev/renew": format!("round-{round}")}}});
        env.certificates().patch("hist", &PatchParams::default(), &Patch::Merge(&request)).await.unwrap();
        wait_for(&env.certificates(), "hist", &format!("{name} to succeed"), WAIT, |c: &Certificate| {
            is_ready(c)
                && c.status
                    .as_ref()
                    .unwrap()
                    .last_attempt
                    .as_ref()
                    .is_some_and(|a| a.name == name && a.phase == AttemptPhase::Succeeded)
        })
        .await;
        // The latest attempt is never pruned: its object is there to read.
        let attempt = env.attempts().get(&name).await.unwrap();
        serials.insert(name, attempt.status.unwrap().issued.expect("a succeeded attempt's certificate").serial_number);
    }
    let remaining = eventually("the attempts pruned to two", WAIT, || async {
        let items = env.attempts().list(&ListParams::default()).await.unwrap().items;
        (items.len() <= 2).then_some(items)
    })
    .await;
    let mut left: Vec<String> = remaining.iter().map(ResourceExt::name_any).collect();
    left.sort();
    assert_eq!(left, ["hist-15", "hist-16"]);

    let history = env.certificates().get("hist").await.unwrap().status.unwrap().history;
    let names: Vec<&str> = history.iter().map(|e| e.name.as_str()).collect();
    let expected: Vec<String> = (7..=16).rev().map(|i| format!("hist-{i}")).collect();
    assert_eq!(names, expected, "the latest ten, newest first");
    for entry in &history {
        assert_eq!((entry.type_, entry.phase), (AttemptType::Manual, AttemptPhase::Succeeded), "{entry:?}");
        assert_eq!(entry.issuer, "Issuer/local");
        assert_eq!(entry.serial.as_ref(), Some(&serials[&entry.name]), "{entry:?}");
        assert!(entry.started_at.is_some() && entry.finished_at.is_some() && entry.error_code.is_none(), "{entry:?}");
    }
    // The object as the API server returns and stores it: every field, managedFields included
    // (`kubectl get -o json` prints the same, indented).
    let resource = kube::core::ApiResource::erase::<Certificate>(&());
    let raw = Api::<kube::core::DynamicObject>::namespaced_with(env.cluster.client(), env.ns(), &resource)
        .get("hist")
        .await
        .unwrap();
    let json = serde_json::to_string(&raw).unwrap();
    assert!(json.len() < 8 * 1024, "the Certificate is {} bytes: {json}", json.len());
    eprintln!("the Certificate with a full history: {} bytes as JSON", json.len());
}

#[tokio::test]
async fn a_ready_certificate_costs_no_api_writes() {
    let env = Env::start("e2e-at-rest").await;
    env.self_signed_issuer("local").await;
    env.certificate(
        "app",
        json!({"secretName": "app-tls", "dnsNames": ["a.example.com"], "issuerRef": {"name": "local"}}),
    )
    .await;
    env.ready("app").await;
    // The issuance ends with its Event; from then on nothing certpilot owns may change.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.cluster.client(), env.ns());
    eventually("the Issued event", WAIT, || async {
        let items = events.list(&ListParams::default()).await.unwrap().items;
        items.into_iter().find(|e| e.reason.as_deref() == Some("Issued"))
    })
    .await;
    let at_rest = Duration::from_secs(6);
    let (certificate_api, attempt_api, secret_api) = (env.certificates(), env.attempts(), env.secrets());
    let (certificates, attempts, secrets, event_list) = tokio::join!(
        collection_version(&certificate_api),
        collection_version(&attempt_api),
        collection_version(&secret_api),
        collection_version(&events),
    );
    let (certificates, attempts, secrets, events) = tokio::join!(
        changes_since(&certificate_api, &certificates, "", at_rest),
        changes_since(&attempt_api, &attempts, "", at_rest),
        changes_since(&secret_api, &secrets, "", at_rest),
        changes_since(&events, &event_list, "", at_rest),
    );
    assert!(certificates.is_empty(), "Certificate writes at rest: {certificates:#?}");
    assert!(attempts.is_empty(), "attempt writes at rest: {attempts:#?}");
    assert!(secrets.is_empty(), "Secret writes at rest: {secrets:#?}");
    assert!(events.is_empty(), "Events at rest: {events:#?}");
}

#[tokio::test]
async fn repairs_a_tampered_secret() {
    let env = Env::start("e2e-tamper").await;
    env.self_signed_issuer("local").await;
    env.certificate(
        "app",
        json!({"secretName": "app-tls", "dnsNames": ["a.example.com"], "issuerRef": {"name": "local"}}),
    )
    .await;
    let before = env.ready("app").await.status.unwrap();
    let broken = json!({"data": {"tls.crt": "Z2FyYmFnZQ=="}});
    env.secrets().patch("app-tls", &PatchParams::default(), &Patch::Merge(&broken)).await.unwrap();
    let after = wait_for(&env.certificates(), "app", "the tampered Secret to be reissued", WAIT, |c: &Certificate| {
        is_ready(c) && c.status.as_ref().unwrap().serial_number != before.serial_number
    })
    .await;
    assert_eq!(after.status.as_ref().unwrap().last_attempt.as_ref().unwrap().type_, AttemptType::Repair, "{after:#?}");
    assert_secret_matches(&env.secret_data("app-tls").await, &["a.example.com"]);
}

#[tokio::test]
async fn an_adopted_secret_of_the_wrong_type_fails_with_a_clear_error() {
    let env = Env::start("e2e-wrong-type").await;
    env.self_signed_issuer("local").await;
    let mut opaque = Secret::default();
    opaque.metadata.name = Some("opaque".into());
    opaque.metadata.annotations = Some(BTreeMap::from([("certpilot.dev/adopt".to_string(), "true".to_string())]));
    opaque.string_data = Some(BTreeMap::from([("password".to_string(), "hunter2".to_string())]));
    env.secrets().create(&PostParams::default(), &opaque).await.unwrap();
    env.certificate(
        "app",
        json!({"secretName": "opaque", "dnsNames": ["a.example.com"], "issuerRef": {"name": "local"}}),
    )
    .await;
    let failed = wait_for(&env.certificates(), "app", "SecretTypeMismatch", WAIT, |c: &Certificate| {
        condition(c, "Issuing").is_some_and(|i| i.reason == "SecretTypeMismatch")
    })
    .await;
    let status = failed.status.unwrap();
    assert_eq!(status.phase, CertificatePhase::Failed);
    assert!(status.attempts_count >= 1 && status.next_attempt_time.is_some());
    assert!(condition_message(&status, "Issuing").contains("delete the Secret"));
    assert_eq!(env.secret_data("opaque").await["password"].0, b"hunter2", "nothing is lost");
}

fn condition_message(status: &certpilot::api::CertificateStatus, type_: &str) -> String {
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_standby_replica_takes_over_when_the_leader_stops() {
    let mut cluster = TestCluster::start("e2e-leader").await.expect("cluster");
    install_certpilot_crds(&cluster).await;
    let ports = [support::pebble::free_port(), support::pebble::free_port()];
    let mut operators: Vec<Option<Operator>> = ports
        .iter()
        .map(|port| {
            let probe = format!("127.0.0.1:{port}");
            Some(Operator::start_with(&mut cluster, &["--leader-elect", "--probe-address", &probe]))
        })
        .collect();
    // Both replicas are ready (both answer challenges); /readyz's body says which one leads.
    let leader = eventually("one leader and one ready standby", WAIT, || async {
        let roles = [http_get(ports[0], "/readyz").await, http_get(ports[1], "/readyz").await];
        let role = |i: usize| (roles[i].0, roles[i].1.as_str());
        match (role(0), role(1)) {
            ((200, "ok: leader"), (200, "ok: standby")) => Some(0),
            ((200, "ok: standby"), (200, "ok: leader")) => Some(1),
            _ => None,
        }
    })
    .await;
    let api = |kind: &str, name: &str, spec: Value| json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let params = PatchParams::apply("e2e-test").force();
    let issuers: Api<Issuer> = Api::namespaced(cluster.client(), cluster.namespace());
    issuers.patch("local", &params, &Patch::Apply(api("Issuer", "local", json!({"selfSigned": {}})))).await.unwrap();
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), cluster.namespace());
    let spec = |n: &str| json!({"secretName": format!("{n}-tls"), "dnsNames": [format!("{n}.example.com")], "issuerRef": {"name": "local"}});
    certificates.patch("first", &params, &Patch::Apply(api("Certificate", "first", spec("first")))).await.unwrap();
    wait_for(&certificates, "first", "the leader to issue", WAIT, is_ready).await;
    // The standby did nothing meanwhile and still stands by.
    assert_eq!(http_get(ports[1 - leader], "/readyz").await, (200, "ok: standby".to_string()));
    let (_, metrics) = http_get(ports[1 - leader], "/metrics").await;
    assert!(metrics.contains("\ncertpilot_leader 0\n"), "{metrics}");
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity);
    let first_holder = holder(leases.get("certpilot-leader").await.unwrap()).expect("the leader holds the Lease");
    // SIGKILL: the Lease is not released, so the standby takes over only once it expires.
    operators[leader].take().unwrap().kill();
    eventually("the standby to take over", WAIT, || async {
        (http_get(ports[1 - leader], "/readyz").await.1 == "ok: leader").then_some(())
    })
    .await;
    let second_holder = holder(leases.get("certpilot-leader").await.unwrap()).expect("the new leader holds the Lease");
    assert_ne!(first_holder, second_holder, "the Lease changed hands");
    certificates.patch("second", &params, &Patch::Apply(api("Certificate", "second", spec("second")))).await.unwrap();
    wait_for(&certificates, "second", "the new leader to issue", WAIT, is_ready).await;
}

/// Creates the Secret `name` holding a keystore password under key `password`.
async fn password_secret(env: &Env, name: &str, password: &str) {
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.string_data = Some(BTreeMap::from([("password".to_string(), password.to_string())]));
    env.secrets().create(&PostParams::default(), &secret).await.unwrap();
}

/// Runs `program` with `args`; it must be installed and succeed. Returns what it printed.
fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed to read the keystores back: {e}"));
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?} failed: {printed}");
    printed
}

/// The key and the certificates OpenSSL finds in a PKCS#12 file, and what it says of it.
struct OpensslView {
    key: PrivateKey,
    certificates: Vec<Vec<u8>>,
    info: String,
}

fn openssl_pkcs12(path: &std::path::Path, password: &str, legacy: bool) -> OpensslView {
    let pass = format!("pass:{password}");
    let mut args = vec!["pkcs12", "-in", path.to_str().unwrap(), "-passin", &pass, "-info", "-nodes"];
    if legacy {
        args.push("-legacy");
    }
    let info = run("openssl", &args);
    let blocks = ::pem::parse_many(info.as_bytes()).expect("PEM blocks in the openssl output");
    let key_block = blocks.iter().find(|b| b.tag() == "PRIVATE KEY").expect("the private key");
    let key = PrivateKey::from_pem(&::pem::encode(key_block)).expect("the private key parses");
    let certificates = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").map(|b| b.contents().to_vec()).collect();
    OpensslView { key, certificates, info }
}

/// The keystore holds the Secret's key and its whole chain, under the Certificate's name.
fn assert_keystore_holds(view: &OpensslView, data: &BTreeMap<String, ByteString>, alias: &str) {
    let chain = pem_certificates(&data["tls.crt"].0).unwrap();
    let tls_key = PrivateKey::from_pem(&text(data, "tls.key")).unwrap();
    assert_eq!(view.key.public_key_info(), tls_key.public_key_info(), "the keystore holds tls.key");
    let leaf = parse_chain(&data["tls.crt"].0).unwrap();
    assert_eq!(view.key.public_key_info(), leaf.public_key_info, "the key matches the certificate");
    assert_eq!(view.certificates.len(), chain.len(), "leaf and CA: {}", view.info);
    for der in &chain {
        assert!(view.certificates.contains(der), "every certificate of tls.crt is in the keystore");
    }
    assert!(view.info.contains(&format!("friendlyName: {alias}")), "{}", view.info);
}

#[tokio::test]
async fn writes_pkcs12_and_jks_keystores_that_openssl_and_keytool_read() {
    let env = Env::start("e2e-keystores").await;
    env.self_signed_issuer("bootstrap").await;
    env.certificate("root", json!({"secretName": "root-ca", "commonName": "certpilot keystore root", "isCA": true, "issuerRef": {"name": "bootstrap"}})).await;
    env.ready("root").await;
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "ca"}, "spec": {"ca": {"secretName": "root-ca"}}});
    env.apply(&env.issuers(), doc).await;
    password_secret(&env, "store-pass", "s3cret-pass").await;
    let pass = json!({"name": "store-pass", "key": "password"});
    let keystores = |pkcs12: Value| {
        json!({"secretName": format!("{}-tls", pkcs12["name"].as_str().unwrap()), "dnsNames": ["app.example.com"], "issuerRef": {"name": "ca"},
            "additionalOutputFormats": [pkcs12["format"].clone(), {"type": "JKS", "passwordSecretRef": pass}]})
    };
    let modern = json!({"name": "modern", "format": {"type": "PKCS12", "passwordSecretRef": pass}});
    let rc2 = json!({"name": "rc2", "format": {"type": "PKCS12", "passwordSecretRef": pass, "profile": "LegacyRC2"}});
    let des = json!({"name": "des", "format": {"type": "PKCS12", "passwordSecretRef": pass, "profile": "LegacyDES"}});
    for variant in [&modern, &rc2, &des] {
        env.certificate(variant["name"].as_str().unwrap(), keystores(variant.clone())).await;
    }
    let dir = std::env::temp_dir().join(unique_name("certpilot-keystores"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, legacy, scheme) in [
        ("modern", false, "PBES2, PBKDF2, AES-256-CBC"),
        ("rc2", true, "pbeWithSHA1And40BitRC2-CBC"),
        ("des", false, "pbeWithSHA1And3-KeyTripleDES-CBC"),
    ] {
        env.ready(name).await;
        let data = env.secret_data(&format!("{name}-tls")).await;
        let p12 = dir.join(format!("{name}.p12"));
        std::fs::write(&p12, &data["keystore.p12"].0).unwrap();
        let view = openssl_pkcs12(&p12, "s3cret-pass", legacy);
        assert_keystore_holds(&view, &data, name);
        assert!(view.info.contains(scheme), "{name}: {}", view.info);
        let mac = if name == "modern" { "MAC: sha256" } else { "MAC: sha1" };
        assert!(view.info.contains(mac), "{name}: {}", view.info);
    }
    // keytool lists the JKS entry and, converting it, proves it can decrypt the key.
    let data = env.secret_data("modern-tls").await;
    let jks = dir.join("modern.jks");
    std::fs::write(&jks, &data["keystore.jks"].0).unwrap();
    let jks_path = jks.to_str().unwrap();
    let listing =
        run("keytool", &["-list", "-v", "-keystore", jks_path, "-storepass", "s3cret-pass", "-storetype", "JKS"]);
    assert!(listing.contains("Alias name: modern"), "{listing}");
    assert!(listing.contains("Entry type: PrivateKeyEntry"), "{listing}");
    assert!(listing.contains("Certificate chain length: 2"), "{listing}");
    let converted = dir.join("from-jks.p12");
    let converted_path = converted.to_str().unwrap();
    run(
        "keytool",
        &[
            "-importkeystore",
            "-noprompt",
            "-srckeystore",
            jks_path,
            "-srcstoretype",
            "JKS",
            "-srcstorepass",
            "s3cret-pass",
            "-destkeystore",
            converted_path,
            "-deststoretype",
            "PKCS12",
            "-deststorepass",
            "s3cret-pass",
        ],
    );
    assert_keystore_holds(&openssl_pkcs12(&converted, "s3cret-pass", false), &data, "modern");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_missing_keystore_password_blocks_and_leaves_the_secret_alone() {
    let env = Env::start("e2e-keystore-password").await;
    env.self_signed_issuer("local").await;
    let spec = |formats: Value| json!({"secretName": "app-tls", "dnsNames": ["a.example.com"], "issuerRef": {"name": "local"}, "additionalOutputFormats": formats});
    env.certificate("app", spec(json!([{"type": "DER"}]))).await;
    let ready = env.ready("app").await.status.unwrap();
    let before = env.secrets().get("app-tls").await.unwrap();
    let pkcs12 = json!([{"type": "DER"}, {"type": "PKCS12", "passwordSecretRef": {"name": "app-store-pass", "key": "password"}}]);
    env.certificate("app", spec(pkcs12)).await;
    let blocked = wait_for(&env.certificates(), "app", "KeystorePasswordMissing", WAIT, |c: &Certificate| {
        let current = c.status.as_ref().and_then(|s| s.observed_generation) == c.metadata.generation;
        current && condition(c, "Ready").is_some_and(|r| r.reason == "KeystorePasswordMissing")
    })
    .await;
    let message = condition(&blocked, "Ready").unwrap().message.clone();
    assert!(message.contains("Secret app-store-pass") && message.contains("\"password\""), "{message}");
    assert!(message.contains("kubectl create secret generic app-store-pass"), "says how to fix it: {message}");
    let status = blocked.status.unwrap();
    assert_eq!(status.last_attempt.unwrap().name, ready.last_attempt.unwrap().name, "no attempt was made");
    let after = env.secrets().get("app-tls").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "the Secret is untouched");
    // With the password in place, the keystore appears.
    password_secret(&env, "app-store-pass", "s3cret-pass").await;
    let issued = wait_for(&env.certificates(), "app", "the keystore to be written", WAIT, |c: &Certificate| {
        is_ready(c) && c.status.as_ref().unwrap().serial_number != ready.serial_number
    })
    .await;
    assert_eq!(issued.status.unwrap().last_attempt.unwrap().type_, AttemptType::Reissue);
    let data = env.secret_data("app-tls").await;
    let p12 = std::env::temp_dir().join(format!("{}.p12", unique_name("certpilot-added")));
    std::fs::write(&p12, &data["keystore.p12"].0).unwrap();
    assert_keystore_holds(&openssl_pkcs12(&p12, "s3cret-pass", false), &data, "app");
    std::fs::remove_file(&p12).ok();
    // Keystores are encrypted anew on every write, but a written one is not written again.
    let since = collection_version(&env.secrets()).await;
    let writes = changes_since(&env.secrets(), &since, "metadata.name=app-tls", Duration::from_secs(6)).await;
    assert!(writes.is_empty(), "Secret writes at rest: {writes:#?}");
}

/// Asks for the revocation of Certificate `name` with annotation value `request`, and waits
/// for the attempt after it of type `last` to end in `phase`.
async fn revoke(env: &Env, name: &str, request: &str, last: AttemptType, phase: AttemptPhase) -> Certificate {
    let before = env.certificates().get(name).await.unwrap();
    let previous = before.status.and_then(|s| s.last_attempt).map(|a| a.name);
    let patch = json!({"metadata": {"annotations": {"certpilot.dev/revoke": request}}});
    env.certificates().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for(&env.certificates(), name, &format!("the {last:?} attempt after a revocation"), WAIT, |c: &Certificate| {
        is_ready(c)
            && c.status
                .as_ref()
                .and_then(|s| s.last_attempt.as_ref())
                .is_some_and(|a| a.type_ == last && a.phase == phase && Some(&a.name) != previous.as_ref())
    })
    .await
}

/// The attempt of type `type_` made under revocation request `request`.
async fn attempt_under(env: &Env, request: &str, type_: AttemptType) -> CertificateAttempt {
    let attempts = env.attempts().list(&ListParams::default()).await.unwrap().items;
    attempts
        .into_iter()
        .find(|a| a.spec.type_ == type_ && a.spec.revoke_request.as_deref() == Some(request))
        .unwrap_or_else(|| panic!("no {type_:?} attempt for {request}"))
}

/// `openssl crl -text` of `pem`, its signature checked against the CA in `ca_pem`.
fn openssl_crl(pem: &str, ca_pem: &str) -> String {
    let dir = std::env::temp_dir().join(unique_name("certpilot-crl"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crl"), pem).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    let output = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(dir.join("ca.crl"))
        .arg("-CAfile")
        .arg(dir.join("ca.pem"))
        .output()
        .expect("openssl runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.contains("verify OK"), "{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_ca_issuer_records_a_revocation_and_publishes_its_crl() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let env = Env::start("e2e-ca-revoke").await;
    env.self_signed_issuer("bootstrap").await;
    env.certificate("root", json!({"secretName": "root-ca", "commonName": "certpilot revoking root", "isCA": true, "issuerRef": {"name": "bootstrap"}})).await;
    env.ready("root").await;
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "ca"},
        "spec": {"ca": {"secretName": "root-ca", "crl": {"configMapName": "root-crl"}}}});
    env.apply(&env.issuers(), doc).await;
    env.certificate("api", json!({"secretName": "api-tls", "dnsNames": ["api.internal"], "issuerRef": {"name": "ca"}}))
        .await;
    let serial = env.ready("api").await.status.unwrap().serial_number.unwrap();
    let key_before = text(&env.secret_data("api-tls").await, "tls.key");

    let request = "keyCompromise@2026-06-01T12:00:00Z";
    let reissued = revoke(&env, "api", request, AttemptType::Reissue, AttemptPhase::Succeeded).await;
    assert_ne!(reissued.status.unwrap().serial_number.as_deref(), Some(serial.as_str()));
    assert_ne!(text(&env.secret_data("api-tls").await, "tls.key"), key_before, "a new key");
    let status = env.issuers().get("ca").await.unwrap().status.unwrap();
    assert_eq!(status.revoked.len(), 1);
    assert!(status.revoked[0].serial_number.eq_ignore_ascii_case(&serial));
    assert_eq!((status.revoked[0].reason.as_str(), status.crl_number), ("keyCompromise", Some(1)));
    let configmaps: Api<ConfigMap> = Api::namespaced(env.cluster.client(), env.ns());
    let crl = configmaps.get("root-crl").await.unwrap().data.unwrap()["ca.crl"].clone();
    let ca_pem = text(&env.secret_data("root-ca").await, "tls.crt");
    let printed = openssl_crl(&crl, &ca_pem);
    let listed = serial.to_uppercase().trim_start_matches("00").to_string();
    let entry = printed.split("Serial Number:").find(|e| e.trim().starts_with(&listed));
    let entry = entry.unwrap_or_else(|| panic!("serial {serial} not in the CRL:\n{printed}"));
    assert!(entry.contains("Key Compromise"), "{entry}");
    let attempt = attempt_under(&env, request, AttemptType::Revoke).await.status.unwrap();
    assert!(attempt.steps[0].message.contains("ConfigMap") && attempt.steps[0].message.contains("root-crl"));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.cluster.client(), env.ns());
    let revoked = eventually("a Revoked event", WAIT, || async {
        let listed = events.list(&ListParams::default()).await.unwrap().items;
        listed.into_iter().find(|e| e.reason.as_deref() == Some("Revoked"))
    })
    .await;
    assert_eq!(revoked.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("api"));
    assert!(revoked.note.unwrap().contains("keyCompromise"));

    // Someone else's Secret under the CRL's name is not written: the revocation is recorded,
    // and the attempt says why no CRL was published.
    let mut theirs = Secret::default();
    theirs.metadata.name = Some("taken-crl".into());
    theirs.string_data = Some([("ca.crl".to_string(), "theirs".to_string())].into());
    env.secrets().create(&PostParams::default(), &theirs).await.unwrap();
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "ca"},
        "spec": {"ca": {"secretName": "root-ca", "crl": {"secretName": "taken-crl"}}}});
    env.apply(&env.issuers(), doc).await;
    let second = "superseded,no-reissue@2026-06-01T13:00:00Z";
    revoke(&env, "api", second, AttemptType::Revoke, AttemptPhase::Failed).await;
    let failed = attempt_under(&env, second, AttemptType::Revoke).await.status.unwrap();
    assert_eq!(failed.error_code.as_deref(), Some("SecretNotOwned"));
    assert!(failed.error_message.unwrap().contains("certpilot did not create it"));
    assert_eq!(text(&env.secret_data("taken-crl").await, "ca.crl"), "theirs");
    assert_eq!(env.issuers().get("ca").await.unwrap().status.unwrap().revoked.len(), 2);
}

#[tokio::test]
async fn a_self_signed_certificate_is_not_revoked_but_reissued_with_a_new_key() {
    let env = Env::start("e2e-selfsigned-revoke").await;
    env.self_signed_issuer("local").await;
    env.certificate(
        "plain",
        json!({"secretName": "plain-tls", "dnsNames": ["plain.example.com"], "issuerRef": {"name": "local"}}),
    )
    .await;
    env.ready("plain").await;
    let key_before = text(&env.secret_data("plain-tls").await, "tls.key");
    let request = "keyCompromise@2026-06-01T12:00:00Z";
    revoke(&env, "plain", request, AttemptType::Reissue, AttemptPhase::Succeeded).await;
    let refused = attempt_under(&env, request, AttemptType::Revoke).await.status.unwrap();
    assert_eq!(refused.error_code.as_deref(), Some("RevocationNotPossible"));
    assert!(refused.error_message.unwrap().contains("self-signed"));
    assert_ne!(text(&env.secret_data("plain-tls").await, "tls.key"), key_before);
}
