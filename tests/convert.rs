//! `certpilot convert` on a corpus of cert-manager manifests (tests/fixtures/cert-manager): the
//! exit status, the report, and the converted output passing certpilot's CRD schemas and rules
//! on the test API server (or a real cluster with CERTPILOT_TEST_KUBECONFIG).

mod support;

use certpilot::api::{Certificate, ClusterIssuer, Issuer};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde::Deserialize;
use serde_json::Value;
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};
use support::*;

const CORPUS: &str = "tests/fixtures/cert-manager";

/// What converting each corpus file must give: the exit status, and text the report must hold.
const EXPECTED: &[(&str, i32, &[&str])] = &[
    (
        "letsencrypt-staging-http01-nginx.yaml",
        0,
        &["note: ClusterIssuer/letsencrypt-staging spec.acme.privateKeySecretRef"],
    ),
    (
        "letsencrypt-prod-http01-class.yaml",
        2,
        &[
            "not converted: ClusterIssuer/letsencrypt-prod spec.acme.solvers[0].http01.ingress.podTemplate",
            "not converted: ClusterIssuer/letsencrypt-prod spec.acme.solvers[0].http01.ingress.serviceType",
            "becomes ingressClassName \"nginx\"",
        ],
    ),
    ("gateway-httproute.yaml", 0, &["Gateway \"gateway-system/public-gateway\" (listeners[].allowedRoutes)"]),
    ("rfc2136-tsig.yaml", 0, &["converted 2 resource(s); 0 thing(s) not converted"]),
    (
        "rfc2136-md5-default.yaml",
        2,
        &[
            "spec.acme.solvers[0].dns01.rfc2136.tsigAlgorithm: unset means HMACMD5",
            "copy Secret \"rfc2136-tsig\" there",
            "over TCP only",
        ],
    ),
    ("selfsigned-ca-chain.yaml", 0, &["ClusterIssuer/my-ca-issuer spec.ca.secretName", "converted 3 resource(s)"]),
    ("ca-issuer-crl.yaml", 2, &["not converted: Issuer/sandbox/ca-issuer spec.ca.crlDistributionPoints"]),
    ("certificate-ecdsa-p256.yaml", 0, &["converted 1 resource(s); 0 thing(s) not converted, 0 note(s)"]),
    ("certificate-rsa-4096.yaml", 0, &["note: Certificate/legacy/legacy-app spec.usages", "client auth"]),
    ("certificate-ip-sans.yaml", 0, &["converted 1 resource(s); 0 thing(s) not converted, 0 note(s)"]),
    ("certificate-secret-template.yaml", 0, &["converted 1 resource(s); 0 thing(s) not converted, 0 note(s)"]),
    (
        "certificate-keystores.yaml",
        2,
        &[
            "note: Certificate/kafka/kafka-broker spec.keystores.pkcs12.profile: unset, which cert-manager encrypts with 40-bit RC2",
            "note: Certificate/kafka/kafka-broker spec.keystores.jks: certpilot writes the keystore but no truststore.jks",
            "Certificate/kafka/kafka-broker spec.subject",
        ],
    ),
    ("certificate-wildcard-uppercase.yaml", 0, &["\"*.Apps.Example.com.\" is written \"*.apps.example.com\""]),
    (
        "route53-cloudflare.yaml",
        2,
        &[
            "note: ClusterIssuer/letsencrypt-dns spec.acme.solvers[0].dns01.route53: no keys: certpilot uses its own AWS identity",
            "not converted: ClusterIssuer/letsencrypt-dns spec.acme.solvers[1].dns01.cloudflare: no provider for cloudflare in certpilot",
            "through a dns01.webhook solver",
            "1 thing(s) not converted",
        ],
    ),
    (
        "route53-eks.yaml",
        0,
        &[
            "note: ClusterIssuer/letsencrypt-route53 spec.acme.solvers[0].dns01.route53.auth.kubernetes.serviceAccountRef: certpilot does not request tokens for ServiceAccount \"cert-manager-route53\"",
            "assumes arn:aws:iam::123456789012:role/cert-manager-route53",
            "note: ClusterIssuer/letsencrypt-route53-keys spec.acme.solvers[0].dns01.route53.secretAccessKeySecretRef: ",
            "converted 2 resource(s); 0 thing(s) not converted",
        ],
    ),
    ("vault-issuer.yaml", 2, &["not converted: Issuer/sandbox/vault-issuer: certpilot has no vault issuer"]),
    (
        "external-issuer.yaml",
        2,
        &["not converted: Certificate/payments/internal-api: signed by an external issuer (awspca.cert-manager.io)"],
    ),
    (
        "zerossl-eab.yaml",
        2,
        &[
            "Issuer/internal/step-ca spec.acme.skipTLSVerify: certpilot refuses",
            "Issuer/internal/step-ca spec.acme.solvers[0].selector.matchLabels",
            "copy Secret \"zero-ssl-eabsecret\" there",
        ],
    ),
    ("kubectl-get-list.yaml", 2, &["CertificateRequest/web/dashboard-1: cert-manager's record of one issuance"]),
    (
        "mixed-with-other-kinds.yaml",
        2,
        &[
            "not converted: Secret/cert-manager/rfc2136-tsig: not a cert-manager resource (v1); left out of the output",
            "not converted: Ingress/blog/blog: not a cert-manager resource",
        ],
    ),
    (
        "venafi-and-durations.yaml",
        2,
        &[
            "ClusterIssuer/venafi-tpp: certpilot has no venafi issuer",
            "Certificate/jobs/short-lived spec.renewBefore: \"100m\" is not shorter than duration",
            "Certificate/jobs/short-lived spec.privateKey.size: certpilot makes no 8192-bit RSA keys",
        ],
    ),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(root().join(CORPUS)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn convert(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_certpilot"))
        .arg("convert")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn convert_file(path: &Path) -> Output {
    convert(&["-f", path.to_str().unwrap()], None)
}

fn documents(yaml: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(yaml).unwrap();
    yaml_serde::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

#[test]
fn the_corpus_converts_with_the_expected_status_and_report() {
    let files = corpus();
    assert!(files.len() >= 15, "the corpus has {} files", files.len());
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let (_, status, expected) = EXPECTED
            .iter()
            .find(|(file, ..)| *file == name)
            .unwrap_or_else(|| panic!("{name} has no entry in EXPECTED"));
        let out = convert_file(path);
        let report = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*status), "{name}: exit status; report:\n{report}");
        for text in *expected {
            assert!(report.contains(text), "{name}: the report lacks {text:?}:\n{report}");
        }
        assert!(report.lines().all(|l| l.starts_with("# ")), "{name}: the report is `# ` lines:\n{report}");
        for doc in documents(&out.stdout) {
            assert_eq!(doc["apiVersion"], "certpilot.dev/v1alpha1", "{name}: only certpilot resources are output");
        }
    }
}

#[test]
fn stdin_is_read_with_a_dash_and_unreadable_input_exits_1() {
    let input = std::fs::read(root().join(CORPUS).join("certificate-ecdsa-p256.yaml")).unwrap();
    let out = convert(&["-f", "-"], Some(&input));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(documents(&out.stdout)[0]["kind"], "Certificate");
    let out = convert(&["-f", "-"], Some(b"kind: [unclosed"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not YAML"));
    let out = convert(&["-f", "/nonexistent/cert-manager.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/cert-manager.yaml"));
}

/// Applies one converted object: namespaced ones into the test's namespace, ClusterIssuers
/// under a unique name (removed again) so that runs on a shared cluster do not collide.
async fn apply(cluster: &TestCluster, mut doc: Value, suffix: &str) -> Result<(), kube::Error> {
    let params = PatchParams::apply("convert-test").force();
    let kind = doc["kind"].as_str().unwrap().to_string();
    if kind == "ClusterIssuer" {
        let unique = format!("{}-{suffix}", doc["metadata"]["name"].as_str().unwrap());
        doc["metadata"]["name"] = Value::String(unique);
    } else {
        doc["metadata"]["namespace"] = Value::String(cluster.namespace().to_string());
    }
    let name = doc["metadata"]["name"].as_str().unwrap().to_string();
    match kind.as_str() {
        "ClusterIssuer" => {
            let api = Api::<ClusterIssuer>::all(cluster.client());
            let applied = api.patch(&name, &params, &Patch::Apply(&doc)).await.map(|_| ());
            let _ = api.delete(&name, &Default::default()).await;
            applied
        }
        "Issuer" => Api::<Issuer>::namespaced(cluster.client(), cluster.namespace())
            .patch(&name, &params, &Patch::Apply(&doc))
            .await
            .map(|_| ()),
        "Certificate" => Api::<Certificate>::namespaced(cluster.client(), cluster.namespace())
            .patch(&name, &params, &Patch::Apply(&doc))
            .await
            .map(|_| ()),
        other => panic!("convert printed a {other}"),
    }
}

#[tokio::test]
async fn every_converted_object_is_accepted_by_the_crds() {
    let cluster = TestCluster::start("convert-corpus").await.unwrap();
    install_certpilot_crds(&cluster).await;
    let suffix = unique_name("cv");
    let mut applied = 0;
    let mut refused = Vec::new();
    for path in corpus() {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        for doc in documents(&convert_file(&path).stdout) {
            let what = format!("{name}: {} {}", doc["kind"], doc["metadata"]["name"]);
            match apply(&cluster, doc, &suffix).await {
                Ok(()) => applied += 1,
                Err(e) => refused.push(format!("{what}: {e}")),
            }
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    assert!(applied >= 20, "only {applied} objects were converted");
}
