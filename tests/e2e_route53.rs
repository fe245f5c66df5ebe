//! DNS-01 through Amazon Route 53, end to end: the operator binary, the test API server (or a
//! real cluster with `CERTPILOT_TEST_KUBECONFIG`), Pebble, and moto (PyPI `moto[server]`) as
//! Route 53 and STS.
//!
//! How the CA sees what moto stores: moto has no nameservers, so each test runs BIND too, and
//! `support::moto::Route53Front` (the proxy certpilot reaches moto through) copies moto's TXT
//! record sets into BIND whenever certpilot asks `GetChange`, and only then answers INSYNC.
//! Pebble resolves through that BIND (`-dnsserver`). The chain stays real: certpilot writes to
//! moto through the Route 53 API, the CA reads exactly what moto holds, and a certpilot that
//! asked the CA before INSYNC would find nothing published. The front also injects Route 53's
//! `Throttling` error, which moto cannot produce.

mod support;

use certpilot::api::{
    Certificate, CertificateAttempt, attempt::CertificateAttemptStatus, certificate::CertificatePhase,
};
use certpilot_test_apiserver::cluster::TestCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use std::time::Duration;
use support::{
    bind::*,
    moto::{Moto, Route53Front},
    pebble::*,
    *,
};

const WAIT: Duration = Duration::from_secs(120);

/// Route 53 on moto, its records served to the CA by BIND: a public hosted zone of BIND's
/// zone's name, a private one of the same name that certpilot must leave alone, the front
/// certpilot reaches them by, and Pebble and the operator on a cluster.
struct Route53Test {
    cluster: TestCluster,
    _pebble: Pebble,
    _operator: Operator,
    moto: Moto,
    front: Route53Front,
    zone: String,
    private_zone: String,
    _bind: Bind,
    issuer: Value,
}

impl Route53Test {
    /// moto serving `zone` (a zone `bind` serves too) and Pebble resolving through `bind`; the
    /// operator runs with `operator_args`, and with what `operator_env` makes of the front's URL
    /// in its environment.
    async fn start(
        test: &str,
        bind: Bind,
        zone: &str,
        operator_args: &[&str],
        operator_env: impl FnOnce(&str) -> Vec<(String, String)>,
    ) -> Self {
        let moto = Moto::start();
        let private_zone = moto.create_zone(zone, true).await;
        let zone = moto.create_zone(zone, false).await;
        let front = Route53Front::start(&moto, &bind, &[&zone]).await;
        let mut cluster = TestCluster::start(test).await.expect("cluster");
        install_certpilot_crds(&cluster).await;
        let mut options = PebbleOptions::on_free_ports();
        let mut args = options.solver_args();
        args.extend(operator_args.iter().map(|a| a.to_string()));
        options.dns_server = Some(bind.address.clone());
        let pebble = Pebble::start(options);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let operator = Operator::start_with_env(&mut cluster, &args, &operator_env(&front.url()));
        let issuer = pebble.acme_issuer("route53", json!({}));
        Self { cluster, _pebble: pebble, _operator: operator, moto, front, zone, private_zone, _bind: bind, issuer }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.cluster.client(), self.cluster.namespace())
    }

    async fn apply<K>(&self, doc: &Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = doc["metadata"]["name"].as_str().unwrap();
        self.api::<K>().patch(name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(doc)).await.expect("apply");
    }

    /// A `route53` solver reaching moto through the front, with `extra` fields.
    fn solver(&self, extra: Value) -> Value {
        let mut route53 = json!({"region": "eu-west-1", "endpoint": self.front.url()});
        route53.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        route53
    }

    /// The keys `key_id` (and a secret key) in Secrets, as `solver` fields.
    async fn keys(&self, key_id: &str) -> Value {
        for (name, key, value) in [("aws-key-id", "id", key_id), ("aws-secret-key", "key", "certpilot-test-secret-key")]
        {
            let mut secret = Secret::default();
            secret.metadata.name = Some(name.into());
            secret.string_data = Some([(key.to_string(), value.to_string())].into());
            self.api::<Secret>().create(&Default::default(), &secret).await.unwrap();
        }
        json!({"accessKeyIDSecretRef": {"name": "aws-key-id", "key": "id"},
               "secretAccessKeySecretRef": {"name": "aws-secret-key", "key": "key"}})
    }

    /// Issuer `route53` for Pebble, with one solver of `dns01`.
    async fn issuer(&self, dns01: Value) {
        let mut issuer = self.issuer.clone();
        issuer["spec"]["acme"]["solvers"] = json!([{"dns01": dns01}]);
        self.apply::<certpilot::api::Issuer>(&issuer).await;
    }

    async fn certificate(&self, name: &str, dns_names: &[&str]) {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
            "spec": {"secretName": format!("{name}-tls"), "dnsNames": dns_names, "issuerRef": {"name": "route53"}}});
        self.apply::<Certificate>(&doc).await;
    }

    /// The last attempt of Certificate `name`, once the Certificate is in `phase`.
    async fn attempt(&self, name: &str, phase: CertificatePhase) -> CertificateAttemptStatus {
        let what = format!("Certificate {name} {phase:?}");
        let cert = wait_for(&self.api::<Certificate>(), name, &what, WAIT, |c: &Certificate| {
            c.status.as_ref().is_some_and(|s| s.phase == phase)
        })
        .await;
        let attempt = cert.status.unwrap().last_attempt.unwrap().name;
        self.api::<CertificateAttempt>().get(&attempt).await.unwrap().status.unwrap()
    }

    /// The Secret of Certificate `name` holds a key and Pebble's chain for exactly `names`.
    async fn assert_issued(&self, name: &str, names: &[&str]) {
        let secret = self.api::<Secret>().get(&format!("{name}-tls")).await.unwrap();
        assert_acme_secret(&secret, names);
    }

    /// Waits until moto's TXT values at `name` are `left` (no record set at all when empty). An
    /// attempt removes its records right after its status says it ended.
    async fn txt_left(&self, name: &str, left: &[&str]) {
        eventually(&format!("moto's TXT values at {name} to be {left:?}"), WAIT, || async {
            (self.moto.txt_values(&self.zone, name).await == left).then_some(())
        })
        .await;
    }

    /// What moto stored at `name` (sorted) each time it was copied to BIND for the CA.
    fn copied_at(&self, name: &str) -> Vec<Vec<String>> {
        let copies = self.front.copies().into_iter();
        let at_name = copies.filter_map(|sets| sets.into_iter().find(|(n, _)| n == name).map(|(_, v)| v));
        at_name
            .map(|mut values| {
                values.sort();
                values
            })
            .collect()
    }

    /// Every Route 53 call certpilot made names it first in its User-Agent.
    fn assert_calls_name_certpilot(&self) {
        let calls: Vec<_> = self.front.seen().into_iter().filter(|s| s.target.starts_with("/2013-04-01/")).collect();
        assert!(!calls.is_empty(), "certpilot called Route 53");
        for call in calls {
            assert!(call.user_agent.starts_with(certpilot::outbound::PRODUCT), "{call:?}");
        }
    }
}

/// The challenges' TXT values, quoted as Route 53 stores them, sorted.
fn quoted_values(attempt: &CertificateAttemptStatus) -> Vec<String> {
    let mut values: Vec<String> =
        attempt.challenges.iter().map(|r| format!("\"{}\"", r.record_value.as_deref().unwrap())).collect();
    values.sort();
    values
}

#[tokio::test]
async fn a_wildcard_and_its_base_share_one_record_set_written_with_keys_from_a_secret() {
    let r53 = Route53Test::start("route53-keys", Bind::start(), ZONE, &[], |_| Vec::new()).await;
    let keys = r53.keys("AKIDCERTPILOTTEST").await;
    r53.issuer(json!({"route53": r53.solver(keys)})).await;
    let names = ["*.certpilot.test", "certpilot.test"];
    r53.certificate("wild", &names).await;
    let attempt = r53.attempt("wild", CertificatePhase::Ready).await;
    r53.assert_issued("wild", &names).await;
    // Both challenges' values in one record set, exactly those the CA was given, in the
    // public zone (found by name, no hostedZoneID).
    let record = "_acme-challenge.certpilot.test.";
    let expected = quoted_values(&attempt);
    assert_eq!(expected.len(), 2);
    let copied = r53.copied_at(record);
    assert!(copied.contains(&expected), "moto stored {copied:?}, the CA was given {expected:?}");
    for challenge in &attempt.challenges {
        let check = challenge.dns_check.as_deref().unwrap_or_default();
        assert!(check.contains("INSYNC"), "the status says why the CA was asked: {check}");
    }
    let signed: Vec<_> = r53.front.seen().into_iter().filter_map(|s| s.key_id).collect();
    assert!(signed.iter().all(|k| k == "AKIDCERTPILOTTEST"), "signed with the Secret's key: {signed:?}");
    r53.txt_left(record, &[]).await;
    assert!(r53.moto.txt_sets(&r53.private_zone).await.is_empty(), "the private zone of the same name is left alone");
    r53.assert_calls_name_certpilot();
}

#[tokio::test]
async fn web_identity_credentials_from_the_environment_sign_without_any_key_in_a_secret() {
    // As on EKS with IRSA: a token file and a role in the operator's environment, no key
    // anywhere. moto's STS exchanges the token (AssumeRoleWithWebIdentity) for the keys that
    // sign the Route 53 calls.
    let token_file = std::env::temp_dir().join(format!("certpilot-web-identity-{}", free_port()));
    std::fs::write(&token_file, "projected-service-account-token").unwrap();
    let role = "arn:aws:iam::123456789012:role/certpilot-dns01";
    let web_identity = |front: &str| {
        [
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.display().to_string()),
            ("AWS_ROLE_ARN", role.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            // STS is moto too, through the front.
            ("AWS_ENDPOINT_URL_STS", front.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    };
    let args = ["--issuer-ambient-credentials"];
    let r53 = Route53Test::start("route53-web-identity", Bind::start(), ZONE, &args, web_identity).await;
    r53.issuer(json!({"route53": r53.solver(json!({}))})).await;
    r53.certificate("irsa", &["*.certpilot.test"]).await;
    let attempt = r53.attempt("irsa", CertificatePhase::Ready).await;
    r53.assert_issued("irsa", &["*.certpilot.test"]).await;
    assert!(r53.copied_at("_acme-challenge.certpilot.test.").contains(&quoted_values(&attempt)));
    let seen = r53.front.seen();
    let exchange = seen.iter().find(|s| s.body.contains("Action=AssumeRoleWithWebIdentity"));
    let exchange = exchange.unwrap_or_else(|| panic!("certpilot asked STS for keys: {seen:?}"));
    assert!(exchange.body.contains("WebIdentityToken=projected-service-account-token"), "{exchange:?}");
    assert!(exchange.body.contains("certpilot-dns01"), "{exchange:?}");
    assert!(exchange.user_agent.starts_with(certpilot::outbound::PRODUCT), "STS calls name certpilot: {exchange:?}");
    let key_id = exchange.answer.split("<AccessKeyId>").nth(1).and_then(|a| a.split('<').next()).unwrap();
    let calls: Vec<_> = seen.iter().filter(|s| s.target.starts_with("/2013-04-01/")).collect();
    assert!(calls.iter().all(|c| c.key_id.as_deref() == Some(key_id)), "signed with STS's keys: {calls:?}");
    r53.txt_left("_acme-challenge.certpilot.test.", &[]).await;
    let _ = std::fs::remove_file(token_file);
}

#[tokio::test]
async fn a_throttled_change_is_retried_and_cleanup_leaves_values_certpilot_did_not_write() {
    let r53 = Route53Test::start("route53-throttle", Bind::start(), ZONE, &[], |_| Vec::new()).await;
    let record = "_acme-challenge.certpilot.test.";
    let owners = "\"site-verification=owner\"";
    r53.moto.put_txt(&r53.zone, record, &[owners]).await;
    r53.front.throttle_changes(1);
    let mut solver = r53.solver(r53.keys("AKIDCERTPILOTTEST").await);
    solver["hostedZoneID"] = json!(r53.zone);
    r53.issuer(json!({"route53": solver})).await;
    r53.certificate("throttled", &["certpilot.test"]).await;
    let attempt = r53.attempt("throttled", CertificatePhase::Ready).await;
    let changes = r53.front.changes();
    assert_eq!(changes[0].status, 400, "the first change was throttled: {changes:?}");
    assert_eq!(changes[1].status, 200, "and the same change tried again: {changes:?}");
    assert_eq!(changes[0].body, changes[1].body);
    let mut expected = quoted_values(&attempt);
    expected.push(owners.to_string());
    expected.sort();
    let copied = r53.copied_at(record);
    assert!(copied.contains(&expected), "certpilot's value was added beside the owner's: {copied:?}");
    r53.txt_left(record, &[owners]).await;
}

#[tokio::test]
async fn keys_route53_refuses_are_a_credentials_failure_naming_the_action_and_the_zone() {
    let r53 = Route53Test::start("route53-denied", Bind::start(), ZONE, &[], |_| Vec::new()).await;
    let mut solver = r53.solver(r53.keys("AKIDUNKNOWNTOAWS").await);
    solver["hostedZoneID"] = json!(r53.zone);
    r53.moto.check_keys().await;
    r53.issuer(json!({"route53": solver})).await;
    r53.certificate("denied", &["denied.certpilot.test"]).await;
    let attempt = r53.attempt("denied", CertificatePhase::Failed).await;
    assert_eq!(attempt.error_code.as_deref(), Some("DNSProviderCredentials"), "{attempt:#?}");
    let message = attempt.error_message.unwrap_or_default();
    assert!(message.contains("route53:ListResourceRecordSets"), "names the action: {message}");
    assert!(message.contains(&r53.zone), "names the zone: {message}");
    assert!(message.contains("AKIDUNKNOWNTOAWS"), "names the key: {message}");
}

#[tokio::test]
async fn a_cname_is_followed_to_the_route53_zone_it_delegates_to() {
    // `_acme-challenge.www.certpilot.test` (on BIND) is a CNAME into `delegated.test`, a
    // Route 53 zone. Route 53's nameservers are not reachable here, so the CNAME is looked up
    // where --dns-check-nameservers says.
    let bind = Bind::start_with(&[("delegated.test", "")], "_acme-challenge.www IN CNAME www.delegated.test.");
    let check = bind.address.clone();
    let args = ["--dns-check-nameservers", &check];
    let r53 = Route53Test::start("route53-cname", bind, "delegated.test", &args, |_| Vec::new()).await;
    let keys = r53.keys("AKIDCERTPILOTTEST").await;
    r53.issuer(json!({"cnameStrategy": "Follow", "route53": r53.solver(keys)})).await;
    r53.certificate("delegated", &["www.certpilot.test"]).await;
    let attempt = r53.attempt("delegated", CertificatePhase::Ready).await;
    assert_eq!(attempt.challenges[0].delegated_to.as_deref(), Some("www.delegated.test."));
    assert!(r53.copied_at("www.delegated.test.").contains(&quoted_values(&attempt)));
    r53.txt_left("www.delegated.test.", &[]).await;
}
