//! The CRDs: checked in and up to date, structural (a real API server rejects anything else),
//! CEL rules within the cost budget, and the rules rejecting bad input with their messages,
//! on the test API server or a real cluster.

mod support;

use certpilot::api::{Certificate, CertificateAttempt, ClusterIssuer, Issuer};
use certpilot_test_apiserver::cel_cost;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::*;

#[test]
fn checked_in_crds_match_the_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, yaml) in certpilot::cli::crd_files().unwrap() {
        let path = root.join("crds").join(&name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(on_disk == yaml, "{} is stale: run `cargo run -- crdgen --out crds`", path.display());
    }
}

/// Walks a schema and reports what makes it non-structural or unsafe for a real API server.
fn structural_problems(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = node.as_object() else { return };
    for forbidden in ["anyOf", "oneOf", "allOf", "not", "$ref", "definitions", "$defs"] {
        if map.contains_key(forbidden) {
            out.push(format!("{path}: has {forbidden}"));
        }
    }
    let typed = map.contains_key("type")
        || map.get("x-kubernetes-int-or-string") == Some(&json!(true))
        || map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if !typed {
        out.push(format!("{path}: has no type"));
    }
    if map.get("type") == Some(&json!("integer"))
        && !matches!(map.get("format").and_then(Value::as_str), Some("int32" | "int64"))
    {
        out.push(format!("{path}: integer without int32/int64 format"));
    }
    if map.contains_key("properties") && map.get("additionalProperties").is_some_and(|a| a.is_object()) {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if map.get("x-kubernetes-list-type") == Some(&json!("map")) {
        let keys: Vec<&str> = map["x-kubernetes-list-map-keys"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let items = &map["items"];
        let required: Vec<&str> =
            items["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        for key in keys {
            let defaulted = items["properties"][key].get("default").is_some();
            if !required.contains(&key) && !defaulted {
                out.push(format!("{path}: list map key {key} is neither required nor defaulted"));
            }
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_problems(v, &format!("{path}.{k}"), out);
        }
    }
    for child in ["items", "additionalProperties"] {
        if let Some(v) = map.get(child).filter(|v| v.is_object()) {
            structural_problems(v, &format!("{path}.{child}"), out);
        }
    }
}

fn schemas() -> Vec<(String, Value)> {
    certpilot::api::crds()
        .into_iter()
        .flat_map(|crd| {
            let name = crd.metadata.name.clone().unwrap();
            crd.spec.versions.into_iter().map(move |v| {
                (
                    format!("{name}/{}", v.name),
                    serde_json::to_value(v.schema.unwrap().open_api_v3_schema.unwrap()).unwrap(),
                )
            })
        })
        .collect()
}

#[test]
fn crds_are_structural() {
    for (name, schema) in schemas() {
        let mut problems = Vec::new();
        structural_problems(&schema, "", &mut problems);
        assert!(problems.is_empty(), "{name} is not structural:\n{}", problems.join("\n"));
    }
    // The checker itself must catch what a real API server rejects.
    let mut problems = Vec::new();
    structural_problems(
        &json!({"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}]}, "n": {"type": "integer"}}}),
        "",
        &mut problems,
    );
    assert_eq!(problems.len(), 3, "{problems:?}");
}

fn rules(node: &Value, out: &mut Vec<String>) {
    if let Some(list) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
        out.extend(list.iter().filter_map(|r| r["rule"].as_str().map(String::from)));
    }
    if let Some(map) = node.as_object() {
        for v in map.values() {
            rules(v, out);
        }
    }
}

/// The rules compile, and fit the CEL cost budget as a real API server estimates it: each rule
/// times how often it can run in one object (the `maxItems` above it), and all of a CRD's.
#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    for (name, schema) in schemas() {
        let compiled = kube::core::cel::compile_schema(&schema);
        let errors: Vec<String> = compiled.compilation_errors().iter().map(|e| format!("{e:?}")).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let mut all = Vec::new();
        rules(&schema, &mut all);
        assert!(!all.is_empty(), "{name} has rules");
    }
    for crd in certpilot::api::crds() {
        let over = cel_cost::crd_errors(&serde_json::to_value(&crd).unwrap(), None);
        let over: Vec<String> = over.iter().map(ToString::to_string).collect();
        assert!(over.is_empty(), "{} is over budget:\n{}", crd.metadata.name.unwrap_or_default(), over.join("\n"));
    }
}

async fn cluster(test: &str) -> certpilot_test_apiserver::cluster::TestCluster {
    let cluster = certpilot_test_apiserver::cluster::TestCluster::start(test).await.unwrap();
    install_certpilot_crds(&cluster).await;
    cluster
}

fn certificate(spec: Value) -> Certificate {
    let mut full = json!({"secretName": "web-tls", "issuerRef": {"name": "local"}});
    full.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": "web"}, "spec": full})).unwrap()
}

fn rejection<T: std::fmt::Debug>(result: kube::Result<T>, what: &str) -> String {
    let status = api_error(result, what);
    assert_eq!(status.code, 422, "{what}: {}", status.message);
    status.message
}

#[tokio::test]
async fn certificate_rules_reject_bad_input_with_clear_messages() {
    let c = cluster("cel-certificate").await;
    let api: Api<Certificate> = Api::namespaced(c.client(), c.namespace());
    let pp = PostParams::default();
    let cases = [
        (json!({}), "at least one of dnsNames, ipAddresses or commonName"),
        (json!({"dnsNames": ["Bad_Name.example.com"]}), "dnsNames must be lowercase DNS names"),
        (json!({"dnsNames": ["a.*.example.com"]}), "wildcard is only allowed"),
        (json!({"ipAddresses": ["10.0.0.300"]}), "ipAddresses must be valid"),
        (json!({"dnsNames": ["a.example.com"], "secretName": "Web_TLS"}), "secretName must be a valid Secret name"),
        (
            json!({"dnsNames": ["a.example.com"], "duration": "1h", "renewBefore": "2h"}),
            "renewBefore must be shorter than duration",
        ),
        (json!({"dnsNames": ["a.example.com"], "renewBefore": "1h", "renewBeforePercentage": 20}), "not both"),
        (json!({"dnsNames": ["a.example.com"], "duration": "30s"}), "duration must be at least 1m"),
        (
            json!({"dnsNames": ["a.example.com"], "privateKey": {"algorithm": "ECDSA", "size": 2048}}),
            "privateKey.size must be",
        ),
        (
            json!({"dnsNames": ["a.example.com"], "privateKey": {"algorithm": "ECDSA", "encoding": "PKCS1"}}),
            "PKCS1 is only for RSA",
        ),
        (json!({"dnsNames": ["a.example.com"], "duration": "ten days"}), "spec.duration"),
        (json!({"commonName": "web.example.com\nX-Evil: 1"}), "commonName must not contain control characters"),
        (json!({"dnsNames": ["a.example.com"], "commonName": "tab\there"}), "must not contain control characters"),
        (json!({"commonName": "My Service"}), "a commonName without dnsNames or ipAddresses must be"),
        (json!({"commonName": "Web.Example.com"}), "a commonName without dnsNames or ipAddresses must be"),
        (
            json!({"dnsNames": ["a.example.com"], "fallbackIssuerRefs": [{"name": "b"}, {"name": "local"}]}),
            "fallbackIssuerRefs must not repeat issuerRef",
        ),
        (
            json!({"dnsNames": ["a.example.com"], "fallbackIssuerRefs": [{"name": "b"}, {"name": "b", "kind": "Issuer"}]}),
            "fallbackIssuerRefs must not name an issuer twice",
        ),
        (
            json!({"dnsNames": ["a.example.com"], "fallbackIssuerRefs": [{"name": "b"}, {"name": "c"}, {"name": "d"}, {"name": "e"}]}),
            "fallbackIssuerRefs",
        ),
    ];
    for (spec, expected) in cases {
        let message = rejection(api.create(&pp, &certificate(spec.clone())).await, &spec.to_string());
        assert!(message.contains(expected), "{spec}: {message}");
    }
    let many: Vec<String> = (0..101).map(|i| format!("h{i}.example.com")).collect();
    rejection(api.create(&pp, &certificate(json!({"dnsNames": many}))).await, "101 names");
    let ok = api
        .create(
            &pp,
            &certificate(json!({"dnsNames": ["*.example.com", "example.com"], "ipAddresses": ["10.0.0.1", "::1"]})),
        )
        .await
        .unwrap();
    assert_eq!(ok.spec.private_key, None, "optional settings stay unset");
    for (name, spec) in [
        ("cn-only", json!({"commonName": "web.example.com"})),
        ("cn-ip", json!({"commonName": "10.0.0.7"})),
        ("cn-label", json!({"commonName": "My Service", "dnsNames": ["a.example.com"]})),
        ("cn-ca", json!({"commonName": "Example Root CA", "isCA": true})),
        (
            "fallbacks",
            json!({"dnsNames": ["a.example.com"], "fallbackIssuerRefs": [{"name": "local", "kind": "ClusterIssuer"}, {"name": "b"}, {"name": "c"}]}),
        ),
    ] {
        let mut cert = certificate(spec.clone());
        cert.metadata.name = Some(name.into());
        api.create(&pp, &cert).await.unwrap_or_else(|e| panic!("{spec} is accepted: {e}"));
    }
}

#[tokio::test]
async fn issuer_rules_reject_bad_input() {
    let c = cluster("cel-issuer").await;
    let issuers: Api<Issuer> = Api::namespaced(c.client(), c.namespace());
    let issuer = |spec: Value| -> Issuer {
        serde_json::from_value(
            json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "i"}, "spec": spec}),
        )
        .unwrap()
    };
    let pp = PostParams::default();
    let message = rejection(
        issuers.create(&pp, &issuer(json!({"selfSigned": {}, "ca": {"secretName": "ca"}}))).await,
        "two kinds",
    );
    assert!(message.contains("exactly one of acme, selfSigned or ca"), "{message}");
    rejection(issuers.create(&pp, &issuer(json!({}))).await, "no kind");
    let acme = |solver: Value| issuer(json!({"acme": {"server": "https://acme.example/dir", "solvers": [solver]}}));
    let acme_spec = |extra: Value| {
        let mut spec = json!({"server": "https://acme.example/dir", "solvers": [{"http01": {}}]});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        issuer(json!({ "acme": spec }))
    };
    let rfc2136 = |extra: Value| {
        let mut solver = json!({"nameserver": "127.0.0.1:53"});
        solver.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        acme(json!({"dns01": {"rfc2136": solver}}))
    };
    let webhook = |extra: Value| {
        let mut solver = json!({"url": "https://hook.example"});
        solver.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        acme(json!({"dns01": {"webhook": solver}}))
    };
    let cases = [
        (acme_spec(json!({"server": "http://acme.example/dir"})), "server must be an https:// URL"),
        (acme_spec(json!({"email": "not-an-email"})), "email must be an address"),
        (acme_spec(json!({"email": "mailto:ops@example.com"})), "email must be an address"),
        (acme_spec(json!({"email": "ops@example"})), "email must be an address"),
        (acme(json!({"dns01": {}})), "dns01 needs exactly one provider"),
        (
            acme(
                json!({"dns01": {"rfc2136": {"nameserver": "127.0.0.1:53"}, "webhook": {"url": "https://hook.example"}}}),
            ),
            "dns01 needs exactly one provider",
        ),
        (webhook(json!({"url": "hook.example"})), "webhook.url must be an http:// or https:// URL"),
        (webhook(json!({"timeout": "30"})), "webhook.timeout must be a Go duration from 1s to 2m"),
        (webhook(json!({"timeout": "10m"})), "webhook.timeout must be a Go duration from 1s to 2m"),
        (webhook(json!({"timeout": "500ms"})), "webhook.timeout must be a Go duration from 1s to 2m"),
        (
            webhook(
                json!({"basicAuthSecretRef": {"name": "a"}, "bearerTokenSecretRef": {"name": "b", "key": "token"}}),
            ),
            "webhook takes one kind of authentication",
        ),
        (
            acme(
                json!({"dns01": {"route53": {}, "powerdns": {"url": "http://pdns:8081", "apiKeySecretRef": {"name": "p", "key": "k"}}}}),
            ),
            "dns01 needs exactly one provider",
        ),
        (acme(json!({"dns01": {"route53": {"accessKeyID": "AKID"}}})), "route53 keys come in pairs"),
        (acme(json!({"dns01": {"route53": {"endpoint": "ftp://r53"}}})), "endpoint must be an http"),
        (rfc2136(json!({"tsigAlgorithm": "hmac-md5"})), "tsigAlgorithm must be hmac-sha256"),
        (acme(json!({"http01": {}, "selector": {"dnsZones": ["Example.com"]}})), "dnsZones must be lowercase"),
        (acme(json!({"http01": {}, "selector": {"dnsZones": ["*.example.com"]}})), "dnsZones must be lowercase"),
        (acme(json!({"http01": {}, "selector": {"dnsNames": ["WWW.example.com"]}})), "dnsNames must be lowercase"),
    ];
    for (bad, expected) in cases {
        let what = serde_json::to_string(&bad.spec).unwrap();
        let message = rejection(issuers.create(&pp, &bad).await, &what);
        assert!(message.contains(expected), "{what}: {message}");
    }
    let message = rejection(issuers.create(&pp, &acme(json!({"http01": {}, "dns01": {}}))).await, "two solver kinds");
    assert!(message.contains("exactly one of http01, dns01, tlsAlpn01 or dnsPersist01"), "{message}");
    let message = rejection(
        issuers.create(&pp, &acme(json!({"http01": {}, "selector": {"dnsNames": ["*.example.com"]}}))).await,
        "wildcard http01",
    );
    assert!(message.contains("http01 cannot validate wildcard names"), "{message}");
    let message = rejection(
        issuers.create(&pp, &issuer(json!({"acme": {"server": "ftp://x", "solvers": []}}))).await,
        "bad server",
    );
    assert!(message.contains("server must be an https:// URL"), "{message}");
    issuers.create(&pp, &issuer(json!({"selfSigned": {}}))).await.unwrap();
    let mut good = rfc2136(json!({"tsigAlgorithm": "hmac-sha512"}));
    good.metadata.name = Some("good-acme".into());
    if let Some(acme) = good.spec.acme.as_mut() {
        acme.email = Some("ops@example.com".into());
    }
    issuers.create(&pp, &good).await.expect("a correct ACME issuer is accepted");
    let mut good = webhook(json!({"timeout": "1m30s", "bearerTokenSecretRef": {"name": "hook", "key": "token"}}));
    good.metadata.name = Some("good-webhook".into());
    issuers.create(&pp, &good).await.expect("a correct webhook solver is accepted");
    let cluster_issuers: Api<ClusterIssuer> = Api::all(c.client());
    let name = certpilot_test_apiserver::cluster::unique_name("cel-ci");
    let bad: ClusterIssuer = serde_json::from_value(json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "ClusterIssuer", "metadata": {"name": name}, "spec": {}})).unwrap();
    rejection(cluster_issuers.create(&pp, &bad).await, "cluster issuer without kind");
}

#[tokio::test]
async fn attempt_specs_are_immutable() {
    let c = cluster("cel-attempt").await;
    let api: Api<CertificateAttempt> = Api::namespaced(c.client(), c.namespace());
    let attempt: CertificateAttempt = serde_json::from_value(json!({
        "apiVersion": "certpilot.dev/v1alpha1", "kind": "CertificateAttempt", "metadata": {"name": "web-1"},
        "spec": {"certificateName": "web", "type": "Issue", "secretName": "web-tls", "dnsNames": ["a.example.com"],
                 "issuerRef": {"name": "local"}, "privateKey": {}, "keyAlgorithm": "ECDSA-256", "certificateGeneration": 1}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &attempt).await.unwrap();
    let patch = json!({"spec": {"dnsNames": ["b.example.com"]}});
    let message = rejection(
        api.patch(&created.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await,
        "changing an attempt",
    );
    assert!(message.contains("spec is immutable"), "{message}");
}
