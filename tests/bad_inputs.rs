//! Bad inputs, as users of certificate operators commonly get them wrong, each with the answer
//! it gets: rejected at apply time with a message naming the field, or accepted with a `Ready`
//! condition whose message names the problem and the fix. For all of them together: no Secret
//! certpilot does not own is changed, no Certificate makes more than one attempt, and the
//! operator is still running. Runs unchanged on a real cluster (`CERTPILOT_TEST_KUBECONFIG`).

mod support;

use certpilot::api::{Certificate, CertificateAttempt, Issuer};
use certpilot_test_apiserver::cluster::TestCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};
use std::{collections::BTreeMap, time::Duration};
use support::*;

const WAIT: Duration = Duration::from_secs(90);

/// A Certificate spec: `secretName` and `issuerRef` filled in unless the case sets them.
fn certificate(name: &str, spec: &Value) -> Value {
    let mut full =
        json!({"secretName": format!("{name}-tls"), "dnsNames": ["app.example.com"], "issuerRef": {"name": "local"}});
    for (key, value) in spec.as_object().unwrap() {
        if value.is_null() {
            full.as_object_mut().unwrap().remove(key);
        } else {
            full[key] = value.clone();
        }
    }
    json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name}, "spec": full})
}

fn issuer(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": name}, "spec": spec})
}

fn acme(extra: Value) -> Value {
    let mut acme = json!({"server": "https://acme.example/directory", "solvers": [{"http01": {}}]});
    for (key, value) in extra.as_object().unwrap() {
        acme[key] = value.clone();
    }
    json!({"acme": acme})
}

/// Certificate specs rejected at apply time, and the field each message names.
fn rejected_certificates() -> Vec<(Value, &'static str)> {
    let names = |n: &[&str]| json!({"dnsNames": n});
    let long_label = format!("{}.example.com", "a".repeat(64));
    let long_name = format!("{}.com", "a.".repeat(126));
    let pass = json!({"name": "store-pass", "key": "password"});
    let mut cases = vec![
        (json!({"dnsNames": null}), "at least one of dnsNames, ipAddresses or commonName"),
        (names(&["Bad_Name.example.com"]), "dnsNames"),
        (names(&["UPPER.example.com"]), "dnsNames"),
        (names(&["a..b.example.com"]), "dnsNames"),
        (names(&["-lead.example.com"]), "dnsNames"),
        (names(&["trail-.example.com"]), "dnsNames"),
        (names(&["a.*.example.com"]), "dnsNames"),
        (names(&["*"]), "dnsNames"),
        (names(&["*.*.example.com"]), "dnsNames"),
        (names(&["exa mple.com"]), "dnsNames"),
        (names(&["example.com."]), "dnsNames"),
        (names(&[""]), "dnsNames"),
        (names(&[&long_label]), "dnsNames"),
        (names(&[&long_name]), "dnsNames"),
        (names(&["bücher.example.com"]), "dnsNames"),
        (names(&["a/b.example.com"]), "dnsNames"),
        (names(&["a:8443.example.com"]), "dnsNames"),
        (names(&["https://example.com"]), "dnsNames"),
        (names(&["example.com", "example.com"]), "dnsNames"),
        (json!({"dnsNames": []}), "dnsNames"),
        (json!({"ipAddresses": ["10.0.0.300"]}), "ipAddresses"),
        (json!({"ipAddresses": ["1.2.3"]}), "ipAddresses"),
        (json!({"ipAddresses": ["::g"]}), "ipAddresses"),
        (json!({"ipAddresses": ["10.0.0.0/24"]}), "ipAddresses"),
        (json!({"ipAddresses": ["localhost"]}), "ipAddresses"),
        (json!({"ipAddresses": [""]}), "ipAddresses"),
        (json!({"secretName": "Web_TLS"}), "secretName"),
        (json!({"secretName": "-web"}), "secretName"),
        (json!({"secretName": "web-"}), "secretName"),
        (json!({"secretName": "web tls"}), "secretName"),
        (json!({"secretName": "UPPER"}), "secretName"),
        (json!({"secretName": ""}), "secretName"),
        (json!({"secretName": "a".repeat(254)}), "secretName"),
        (json!({"duration": "ten days"}), "duration"),
        (json!({"duration": "1d"}), "duration"),
        (json!({"duration": "30s"}), "duration must be at least 1m"),
        (json!({"duration": "-1h"}), "duration"),
        (json!({"duration": "1h "}), "duration"),
        (json!({"duration": "90"}), "duration"),
        (json!({"duration": "9999999999h"}), "duration must be hours, minutes and seconds in that order"),
        (json!({"duration": "30m1h"}), "duration must be hours, minutes and seconds in that order"),
        (json!({"renewBefore": "99999999h"}), "renewBefore must be hours, minutes and seconds in that order"),
        (json!({"duration": "1h", "renewBefore": "2h"}), "renewBefore must be shorter than duration"),
        (json!({"duration": "1h", "renewBefore": "1h"}), "renewBefore must be shorter than duration"),
        (json!({"duration": "1h", "renewBefore": "59m50s"}), "renewBefore must leave at least 30s"),
        (json!({"renewBefore": "1y"}), "renewBefore"),
        (json!({"renewBefore": "1h", "renewBeforePercentage": 20}), "not both"),
        (json!({"renewBeforePercentage": 0}), "renewBeforePercentage"),
        (json!({"renewBeforePercentage": 100}), "renewBeforePercentage"),
        (json!({"renewBeforePercentage": -5}), "renewBeforePercentage"),
        (json!({"privateKey": {"algorithm": "ECDSA", "size": 2048}}), "privateKey.size must be"),
        (json!({"privateKey": {"algorithm": "ECDSA", "size": 521}}), "privateKey.size must be"),
        (json!({"privateKey": {"algorithm": "RSA", "size": 1024}}), "privateKey.size must be"),
        (json!({"privateKey": {"algorithm": "RSA", "size": 2000}}), "privateKey.size must be"),
        (json!({"privateKey": {"algorithm": "DSA"}}), "algorithm"),
        (json!({"privateKey": {"algorithm": "ecdsa"}}), "algorithm"),
        (json!({"privateKey": {"algorithm": "ECDSA", "encoding": "PEM"}}), "encoding"),
        (json!({"privateKey": {"algorithm": "ECDSA", "encoding": "PKCS1"}}), "PKCS1 is only for RSA"),
        (json!({"privateKey": {"algorithm": "Ed25519", "encoding": "PKCS1"}}), "PKCS1 is only for RSA"),
        (json!({"privateKey": {"algorithm": "ECDSA", "rotationPolicy": "Sometimes"}}), "rotationPolicy"),
        (json!({"commonName": "web.example.com\nX-Evil: 1"}), "commonName must not contain control characters"),
        (json!({"commonName": "tab\there"}), "commonName must not contain control characters"),
        (json!({"commonName": "nul\u{0}byte"}), "commonName must not contain control characters"),
        (json!({"commonName": "a".repeat(65)}), "commonName"),
        (json!({"commonName": ""}), "commonName"),
        (json!({"dnsNames": null, "commonName": "My Service"}), "a commonName without dnsNames or ipAddresses"),
        (json!({"dnsNames": null, "commonName": "Web.Example.com"}), "a commonName without dnsNames or ipAddresses"),
        (json!({"issuerRef": {"name": "local", "kind": "Foo"}}), "kind"),
        (json!({"issuerRef": {"name": ""}}), "issuerRef"),
        (json!({"issuerRef": {}}), "issuerRef"),
        (json!({"issuerRef": null}), "issuerRef"),
        (json!({"secretName": null}), "secretName"),
        (json!({"isCA": "yes"}), "isCA"),
        (json!({"additionalOutputFormats": [{"type": "PFX"}]}), "additionalOutputFormats"),
        (json!({"additionalOutputFormats": [{"type": "PKCS12"}]}), "passwordSecretRef"),
        (json!({"additionalOutputFormats": [{"type": "JKS"}]}), "passwordSecretRef"),
        (json!({"additionalOutputFormats": [{"type": "DER", "passwordSecretRef": pass}]}), "passwordSecretRef"),
        (
            json!({"additionalOutputFormats": [{"type": "JKS", "passwordSecretRef": {"name": "p", "key": ""}}]}),
            "passwordSecretRef",
        ),
        (
            json!({"additionalOutputFormats": [{"type": "JKS", "passwordSecretRef": pass, "profile": "LegacyRC2"}]}),
            "profile",
        ),
        (
            json!({"additionalOutputFormats": [{"type": "PKCS12", "passwordSecretRef": pass, "profile": "RC4"}]}),
            "profile",
        ),
        (json!({"attemptHistoryLimit": 0}), "attemptHistoryLimit"),
        (json!({"attemptHistoryLimit": 1000}), "attemptHistoryLimit"),
    ];
    let many: Vec<String> = (0..101).map(|i| format!("h{i}.example.com")).collect();
    cases.push((json!({ "dnsNames": many }), "dnsNames"));
    cases
}

/// Issuer specs rejected at apply time, and the field (or rule) each message names.
fn rejected_issuers() -> Vec<(Value, &'static str)> {
    vec![
        (json!({}), "exactly one of acme, selfSigned or ca"),
        (json!({"selfSigned": {}, "ca": {"secretName": "ca"}}), "exactly one of acme, selfSigned or ca"),
        (json!({"ca": {"secretName": "Bad_Name"}}), "secretName"),
        (json!({"ca": {}}), "secretName"),
        (acme(json!({"server": "http://acme.example/directory"})), "server must be an https:// URL"),
        (acme(json!({"server": "ftp://acme.example/directory"})), "server must be an https:// URL"),
        (acme(json!({"server": "acme.example/directory"})), "server must be an https:// URL"),
        (acme(json!({"email": "not-an-email"})), "email must be an address"),
        (acme(json!({"email": "mailto:ops@example.com"})), "email must be an address"),
        (acme(json!({"email": "ops@example"})), "email must be an address"),
        (acme(json!({"email": "ops @example.com"})), "email must be an address"),
        (acme(json!({"solvers": [{"dns01": {}}]})), "dns01 needs exactly one provider"),
        (
            acme(json!({"solvers": [{"http01": {}, "dns01": {}}]})),
            "exactly one of http01, dns01, tlsAlpn01 or dnsPersist01",
        ),
        (acme(json!({"solvers": [{}]})), "exactly one of http01, dns01, tlsAlpn01 or dnsPersist01"),
        (
            acme(
                json!({"solvers": [{"dns01": {"rfc2136": {"nameserver": "127.0.0.1:53", "tsigAlgorithm": "hmac-md5"}}}]}),
            ),
            "tsigAlgorithm must be hmac-sha256",
        ),
        (
            acme(json!({"solvers": [{"http01": {}, "selector": {"dnsNames": ["*.example.com"]}}]})),
            "http01 cannot validate wildcard names",
        ),
        (
            acme(json!({"solvers": [{"http01": {}, "selector": {"dnsZones": ["Example.com"]}}]})),
            "dnsZones must be lowercase",
        ),
        (
            acme(json!({"solvers": [{"http01": {}, "selector": {"dnsZones": ["*.example.com"]}}]})),
            "dnsZones must be lowercase",
        ),
        (
            acme(json!({"solvers": [{"http01": {}, "selector": {"dnsNames": ["WWW.example.com"]}}]})),
            "dnsNames must be lowercase",
        ),
        (json!({"acme": {"solvers": [{"http01": {}}]}}), "server"),
    ]
}

/// Whether the failed apply's message names what it should.
fn refusal(result: kube::Result<Value>, expected: &str, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert!(matches!(status.code, 400 | 422), "{what}: {}", status.message);
            assert!(status.message.contains(expected), "{what}: expected {expected:?} in {:?}", status.message);
        }
        other => panic!("{what}: expected a refusal naming {expected:?}, got {other:?}"),
    }
}

async fn create(cluster: &TestCluster, object: &Value) -> kube::Result<Value> {
    let kind = object["kind"].as_str().unwrap();
    let plural = if kind == "Issuer" { "issuers" } else { "certificates" };
    let path = format!("/apis/certpilot.dev/v1alpha1/namespaces/{}/{plural}", cluster.namespace());
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(object).unwrap())
        .unwrap();
    cluster.client().request::<Value>(request).await
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_answer_and_nothing_is_lost() {
    let mut cluster = TestCluster::start("bad-inputs").await.expect("cluster");
    install_certpilot_crds(&cluster).await;
    let mut operator = Operator::start(&mut cluster);
    let mut answered = 0;

    // Rejected at apply time: nothing is stored.
    for (i, (spec, expected)) in rejected_certificates().into_iter().enumerate() {
        let name = format!("bad-cert-{i}");
        refusal(create(&cluster, &certificate(&name, &spec)).await, expected, &format!("Certificate {spec}"));
        answered += 1;
    }
    for (i, (spec, expected)) in rejected_issuers().into_iter().enumerate() {
        refusal(
            create(&cluster, &issuer(&format!("bad-issuer-{i}"), spec.clone())).await,
            expected,
            &format!("Issuer {spec}"),
        );
        answered += 1;
    }

    // Accepted, with a condition that names the problem and the fix.
    let issuers: Api<Issuer> = Api::namespaced(cluster.client(), cluster.namespace());
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), cluster.namespace());
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), cluster.namespace());
    let pp = PostParams::default();
    create(&cluster, &issuer("local", json!({"selfSigned": {}}))).await.unwrap();
    let foreign: Secret =
        serde_json::from_value(json!({"metadata": {"name": "foreign-tls"}, "stringData": {"config": "precious"}}))
            .unwrap();
    let foreign = secrets.create(&pp, &foreign).await.unwrap();
    secrets.create(&pp, &ca_secret("not-a-ca", "nosign")).await.unwrap();
    secrets.create(&pp, &ca_secret("weak-ca", "rsa1024")).await.unwrap();
    secrets.create(&pp, &ca_secret("constrained-ca", "constrained")).await.unwrap();
    create(&cluster, &issuer("constrained-ca", json!({"ca": {"secretName": "constrained-ca"}}))).await.unwrap();
    create(&cluster, &issuer("no-sign-ca", json!({"ca": {"secretName": "not-a-ca"}}))).await.unwrap();
    create(&cluster, &issuer("weak-ca", json!({"ca": {"secretName": "weak-ca"}}))).await.unwrap();
    create(&cluster, &issuer("missing-ca", json!({"ca": {"secretName": "no-such-secret"}}))).await.unwrap();
    create(&cluster, &issuer("closed-port", acme(json!({"server": "https://127.0.0.1:1/directory"})))).await.unwrap();
    let accepted: Vec<(&str, Value, &str, &str)> = vec![
        ("no-issuer", json!({"issuerRef": {"name": "nowhere"}}), "IssuerNotFound", "does not exist; create it"),
        (
            "wrong-kind",
            json!({"issuerRef": {"name": "local", "kind": "ClusterIssuer"}}),
            "IssuerNotFound",
            "set spec.issuerRef.kind to Issuer",
        ),
        ("foreign-secret", json!({"secretName": "foreign-tls"}), "SecretNotOwned", "certpilot.dev/adopt"),
        ("no-sign-ca", json!({"issuerRef": {"name": "no-sign-ca"}}), "IssuerNotReady", "keyCertSign"),
        ("weak-ca", json!({"issuerRef": {"name": "weak-ca"}}), "IssuerNotReady", "RSA-1024"),
        ("missing-ca", json!({"issuerRef": {"name": "missing-ca"}}), "IssuerNotReady", "no-such-secret"),
        ("closed-port", json!({"issuerRef": {"name": "closed-port"}}), "IssuerNotReady", "refused the connection"),
        (
            "outside-constraints",
            json!({"dnsNames": ["evil.com"], "issuerRef": {"name": "constrained-ca"}}),
            "NamesNotPermitted",
            "may not issue for these names: evil.com is outside",
        ),
    ];
    for (name, spec, _, _) in &accepted {
        create(&cluster, &certificate(name, spec)).await.unwrap_or_else(|e| panic!("{name} is accepted: {e}"));
    }
    for (name, _, reason, says) in &accepted {
        let found =
            wait_for(&certificates, name, &format!("{name} to say why it is not ready"), WAIT, |c: &Certificate| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Ready" && c.status == "False" && c.reason == *reason && c.message.contains(says)
                    })
                })
            })
            .await;
        assert!(found.status.is_some(), "{name}");
        answered += 1;
    }
    assert!(answered >= 100, "{answered} bad inputs answered");
    eprintln!("{answered} bad inputs answered");

    // Nothing lost, nothing repeated, nobody crashed.
    let after = secrets.get("foreign-tls").await.unwrap();
    assert_eq!(
        (after.resource_version(), &after.data),
        (foreign.resource_version(), &foreign.data),
        "the foreign Secret is untouched"
    );
    let attempts: Api<CertificateAttempt> = Api::namespaced(cluster.client(), cluster.namespace());
    let mut per_certificate: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in attempts.list(&ListParams::default()).await.unwrap().items {
        *per_certificate.entry(attempt.spec.certificate_name).or_default() += 1;
    }
    assert!(per_certificate.values().all(|n| *n <= 1), "at most one attempt per Certificate: {per_certificate:?}");
    assert!(
        issuers.list(&ListParams::default()).await.unwrap().items.iter().all(|i| !i.name_any().starts_with("bad-")),
        "no rejected Issuer was stored"
    );
    assert!(operator.is_running(), "the operator is alive");
}

/// A TLS Secret holding the CA `tests/fixtures/ca/<stem>.crt` and its key.
fn ca_secret(name: &str, stem: &str) -> Secret {
    let read = |extension: &str| std::fs::read_to_string(fixture(&format!("{stem}.{extension}"))).unwrap();
    serde_json::from_value(json!({"metadata": {"name": name}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": read("crt"), "tls.key": read("key")}}))
    .unwrap()
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/ca/{name}", env!("CARGO_MANIFEST_DIR"))
}
