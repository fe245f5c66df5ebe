//! Migrating from cert-manager: certpilot adopts the Secret cert-manager issued for a
//! Certificate of the same name, uses it until its renewal time, then renews it and takes the
//! Secret over; a Secret it cannot adopt is left untouched and the Certificate says why.
//! Runs against the test API server, or a real cluster with `CERTPILOT_TEST_KUBECONFIG`.

mod support;

use certpilot::{
    api::{Certificate, CertificateAttempt, Issuer, attempt::AttemptPhase, attempt::AttemptType},
    pki::{PrivateKey, parse_chain},
};
use certpilot_test_apiserver::cluster::TestCluster;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
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
        let env = Self { cluster, _operator: operator };
        let issuer = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "selfsigned"}, "spec": {"selfSigned": {}}});
        let issuers: Api<Issuer> = Api::namespaced(env.cluster.client(), env.ns());
        issuers.patch("selfsigned", &PatchParams::apply("adopt-test"), &Patch::Apply(&issuer)).await.unwrap();
        env
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
    /// A certpilot Certificate as `certpilot convert` writes one: same name, same Secret.
    async fn certificate(&self, name: &str, dns_names: &[&str]) {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
            "spec": {"secretName": format!("{name}-tls"), "dnsNames": dns_names, "issuerRef": {"name": "selfsigned"}}});
        let params = PatchParams::apply("adopt-test").force();
        self.certificates().patch(name, &params, &Patch::Apply(&doc)).await.unwrap();
    }
    /// The Secret cert-manager wrote for its Certificate `name` (see `support::cert_manager_secret`).
    async fn cert_manager_secret(&self, name: &str, names: &[&str], validity: (Timestamp, Timestamp)) -> Secret {
        cert_manager_secret(&self.secrets(), name, &format!("{name}-tls"), names, validity).await
    }
    async fn attempt_count(&self) -> usize {
        self.attempts().list(&ListParams::default()).await.unwrap().items.len()
    }
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

fn ready_condition(cert: &Certificate) -> Option<&certpilot::api::Condition> {
    let status = cert.status.as_ref()?;
    let current = status.observed_generation == cert.metadata.generation;
    status.conditions.iter().find(|c| c.type_ == "Ready").filter(|_| current)
}

/// Waits until the Certificate's Ready condition has `reason`.
async fn wait_for_reason(env: &Env, name: &str, reason: &str) -> Certificate {
    wait_for(&env.certificates(), name, &format!("Ready reason {reason}"), WAIT, |c: &Certificate| {
        ready_condition(c).is_some_and(|r| r.reason == reason)
    })
    .await
}

#[tokio::test]
async fn adopts_a_valid_cert_manager_secret_without_issuing() {
    let env = Env::start("adopt-valid").await;
    let now = Timestamp::now();
    let names = ["web.example.com", "www.example.com"];
    let before = env.cert_manager_secret("web", &names, (now - days(10), now + days(80))).await;
    env.certificate("web", &names).await;
    let cert = wait_for_reason(&env, "web", "Adopted").await;
    let ready = ready_condition(&cert).unwrap();
    assert_eq!(ready.status, "True");
    assert!(ready.message.contains("issued by cert-manager"), "{}", ready.message);
    let status = cert.status.clone().unwrap();
    let renewal = status.renewal_time.expect("a renewal time").0;
    let renews_at = renewal.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert!(
        ready.message.contains(&format!("certpilot adopted it and will renew it at {renews_at}")),
        "{}",
        ready.message
    );
    assert!(renewal > now && renewal < now + days(80));
    let leaf = parse_chain(&before.data.as_ref().unwrap()["tls.crt"].0).unwrap();
    assert_eq!(status.serial_number.as_deref(), Some(leaf.serial_hex.as_str()));
    assert_eq!(status.not_after.unwrap().0, leaf.not_after);
    assert_eq!(env.attempt_count().await, 0, "no attempt was made");
    let after = env.secrets().get("web-tls").await.unwrap();
    assert_eq!(after.data, before.data, "the Secret's data is unchanged");
    assert_eq!(after.resource_version(), before.resource_version(), "the Secret was not written");
    assert!(!certpilot::secret::written_for(&after.metadata, "web"), "adopted, not yet taken over");
    // At rest it stays so: no attempt, no write of the Secret or the Certificate.
    let (certificates, attempts, secrets) = (env.certificates(), env.attempts(), env.secrets());
    let (c, a, s) =
        tokio::join!(collection_version(&certificates), collection_version(&attempts), collection_version(&secrets));
    let window = Duration::from_secs(4);
    let (c, a, s) = tokio::join!(
        changes_since(&certificates, &c, "", window),
        changes_since(&attempts, &a, "", window),
        changes_since(&secrets, &s, "", window),
    );
    assert!(c.is_empty() && a.is_empty() && s.is_empty(), "writes at rest: {c:#?} {a:#?} {s:#?}");
}

#[tokio::test]
async fn leaves_a_cert_manager_secret_it_cannot_adopt_alone_and_says_why() {
    let env = Env::start("adopt-refused").await;
    let now = Timestamp::now();
    let expired = env.cert_manager_secret("old", &["old.example.com"], (now - days(100), now - days(10))).await;
    let differs = env.cert_manager_secret("api", &["api.example.com"], (now - days(1), now + days(60))).await;
    env.certificate("old", &["old.example.com"]).await;
    env.certificate("api", &["api.example.com", "api2.example.com"]).await;
    let expected = [
        ("old", &expired, format!("expired on {}", (now - days(10)).strftime("%Y-%m-%d"))),
        ("api", &differs, "names differ: missing api2.example.com".to_string()),
    ];
    for (name, before, problem) in expected {
        let cert = wait_for_reason(&env, name, "SecretNotAdoptable").await;
        let ready = ready_condition(&cert).unwrap();
        assert_eq!(ready.status, "False");
        for part in [problem.as_str(), "cert-manager", "delete it", "certpilot.dev/adopt=true"] {
            assert!(ready.message.contains(part), "{name}: {part}: {}", ready.message);
        }
        let after = env.secrets().get(&format!("{name}-tls")).await.unwrap();
        assert_eq!(after.data, before.data, "{name}: the Secret's data is unchanged");
        assert_eq!(after.resource_version(), before.resource_version(), "{name}: the Secret was not written");
    }
    assert_eq!(env.attempt_count().await, 0, "no attempt was made");
}

#[tokio::test]
async fn renews_an_adopted_secret_at_its_renewal_time_and_takes_it_over() {
    let env = Env::start("adopt-renew").await;
    let now = Timestamp::now();
    let names = ["shop.example.com"];
    // Still valid, but past its renewal time (a third of the lifetime left by default).
    let before = env.cert_manager_secret("shop", &names, (now - days(80), now + days(5))).await;
    let old_serial = parse_chain(&before.data.as_ref().unwrap()["tls.crt"].0).unwrap().serial_hex;
    env.certificate("shop", &names).await;
    let cert = wait_for(&env.certificates(), "shop", "the renewal", WAIT, |c: &Certificate| {
        let renewed = c
            .status
            .as_ref()
            .and_then(|s| s.last_attempt.as_ref())
            .is_some_and(|a| a.type_ == AttemptType::Renew && a.phase == AttemptPhase::Succeeded);
        renewed && ready_condition(c).is_some_and(|r| r.status == "True" && r.reason == "Ready")
    })
    .await;
    let status = cert.status.unwrap();
    assert_ne!(status.serial_number.as_deref(), Some(old_serial.as_str()));
    let attempts = env.attempts().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(attempts.len(), 1, "one attempt: {attempts:#?}");
    let steps = &attempts[0].status.as_ref().unwrap().steps;
    assert!(steps.iter().any(|s| s.message.contains("took over")), "{steps:#?}");
    // The Secret now holds the new certificate, for the names, and is certpilot's.
    let secret = env.secrets().get("shop-tls").await.unwrap();
    let data: &BTreeMap<String, ByteString> = secret.data.as_ref().unwrap();
    let leaf = parse_chain(&data["tls.crt"].0).unwrap();
    assert_eq!(Some(leaf.serial_hex.as_str()), status.serial_number.as_deref());
    assert_eq!(leaf.dns_names, names);
    assert!(leaf.not_after > now + days(30));
    let key = PrivateKey::from_pem(std::str::from_utf8(&data["tls.key"].0).unwrap()).unwrap();
    assert_eq!(key.public_key_info(), leaf.public_key_info, "tls.key belongs to tls.crt");
    assert!(certpilot::secret::written_for(&secret.metadata, "shop"), "labels and field manager are certpilot's");
    let annotations = secret.annotations();
    assert!(!annotations.contains_key("cert-manager.io/certificate-name"), "{annotations:?}");
    assert!(!secret.labels().contains_key("controller.cert-manager.io/fao"));
    // And it stays that way: no further attempt.
    let cert = wait_for_reason(&env, "shop", "Ready").await;
    assert_eq!(env.attempt_count().await, 1);
    assert!(cert.status.unwrap().renewal_time.unwrap().0 > now + days(30));
}
