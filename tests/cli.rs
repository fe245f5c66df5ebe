//! The binary, as a newcomer first runs it.

use std::process::Command;

/// Without a cluster, `certpilot controller` says so in one line: which kubeconfig it tried and
/// what to do (not a chain of "failed to infer config" causes).
#[test]
fn without_a_cluster_the_controller_says_so_in_one_line() {
    let home = std::env::temp_dir().join(format!("certpilot-no-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_certpilot"))
        .arg("controller")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("HOME", &home)
        .env("RUST_LOG", "off")
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_dir_all(&home);
    assert!(!out.status.success(), "it cannot run without a cluster");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    assert!(line.contains("no Kubernetes cluster found"), "{line}");
    assert!(
        line.contains(&home.join(".kube").join("config").display().to_string()),
        "names the kubeconfig tried: {line}"
    );
    assert!(line.contains("set KUBECONFIG"), "says what to do: {line}");
    assert!(line.contains("certpilot sandbox"), "points at the sandbox: {line}");
}

mod support;

use certpilot::api::{Certificate, CertificateAttempt, CertificatePhase};
use certpilot_test_apiserver::cluster::TestCluster;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use std::{path::Path, time::Duration};
use support::{Operator, eventually, install_certpilot_crds, wait_for};

const WAIT: Duration = Duration::from_secs(90);

/// Runs `certpilot ARGS` (or, with a plugin directory, `kubectl certpilot ARGS`) against the
/// cluster and returns its standard output; fails the test if it fails.
fn run(program: &[&str], kubeconfig: &Path, path: Option<&Path>, args: &[&str]) -> String {
    let mut command = Command::new(program[0]);
    command.args(&program[1..]).args(args).env("KUBECONFIG", kubeconfig).env_remove("NO_COLOR");
    if let Some(dir) = path {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined =
            std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path))).unwrap();
        command.env("PATH", joined);
    }
    let out = command.output().expect("the command runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{program:?} {args:?} failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains('\u{1b}'), "no colours when not on a terminal: {stdout:?}");
    stdout
}

/// `status`, `attempts`, `inspect` and `renew` against a running operator, for people and for
/// scripts, and the same binary as the kubectl plugin `kubectl certpilot`.
// Multi-threaded: the commands run as blocking child processes while the in-process API server
// (on this runtime) answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_attempts_inspect_and_renew_explain_a_certificate() {
    let mut cluster = TestCluster::start("cli").await.expect("cluster");
    install_certpilot_crds(&cluster).await;
    let _operator = Operator::start(&mut cluster);
    let namespace = cluster.namespace().to_string();
    let kubeconfig = cluster.kubeconfig_path().unwrap();
    let params = PatchParams::apply("cli-test").force();
    let issuer = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "local"}, "spec": {"selfSigned": {}}});
    Api::<certpilot::api::Issuer>::namespaced(cluster.client(), &namespace)
        .patch("local", &params, &Patch::Apply(issuer))
        .await
        .unwrap();
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), &namespace);
    let certificate = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": "web"},
        "spec": {"secretName": "web-tls", "dnsNames": ["web.example.com"], "issuerRef": {"name": "local"}}});
    certificates.patch("web", &params, &Patch::Apply(certificate)).await.unwrap();
    let ready = |c: &Certificate| c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Ready);
    wait_for(&certificates, "web", "web to be Ready", WAIT, ready).await;

    let certpilot = [env!("CARGO_BIN_EXE_certpilot")];
    let ns = ["-n", namespace.as_str()];
    let status = run(&certpilot, &kubeconfig, None, &[&["status", "web"][..], &ns].concat());
    assert!(status.starts_with(&format!("Certificate {namespace}/web: Ready\n")), "{status}");
    assert!(status.contains("Next          nothing to do: certpilot renews it at"), "{status}");
    assert!(status.contains("Names         web.example.com"), "{status}");
    assert!(status.contains("Last attempt  web-1 (Issue, Succeeded)"), "{status}");

    let listed: Value =
        serde_json::from_str(&run(&certpilot, &kubeconfig, None, &[&["status", "-o", "json"][..], &ns].concat()))
            .unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!((listed[0]["name"].as_str(), listed[0]["phase"].as_str()), (Some("web"), Some("Ready")));
    let failed = run(&certpilot, &kubeconfig, None, &[&["status", "--phase", "Failed"][..], &ns].concat());
    assert_eq!(failed, "No Certificates found.\n");

    let attempts = run(&certpilot, &kubeconfig, None, &[&["attempts", "web"][..], &ns].concat());
    assert!(attempts.starts_with("web-1  Issue  Succeeded"), "{attempts}");
    assert!(attempts.contains("WriteSecret"), "{attempts}");

    let yaml = run(&certpilot, &kubeconfig, None, &[&["inspect", "web-tls", "-o", "yaml"][..], &ns].concat());
    let inspected: Value = yaml_serde::from_str(&yaml).unwrap();
    assert_eq!(inspected["chain"][0]["dnsNames"], json!(["web.example.com"]), "{inspected}");
    assert_eq!(inspected["keyMatchesCertificate"], json!(true));
    assert_eq!(inspected["privateKey"], json!("ECDSA-256"));

    let renewed = run(&certpilot, &kubeconfig, None, &[&["renew", "web"][..], &ns].concat());
    assert!(renewed.starts_with("web-2  Manual  Succeeded"), "{renewed}");

    // Keeping one attempt prunes web-1: the Certificate's status.history still shows it.
    let keep_one = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": "web"},
        "spec": {"secretName": "web-tls", "dnsNames": ["web.example.com"], "issuerRef": {"name": "local"}, "attemptHistoryLimit": 1}});
    certificates.patch("web", &params, &Patch::Apply(keep_one)).await.unwrap();
    let attempts_api: Api<CertificateAttempt> = Api::namespaced(cluster.client(), &namespace);
    eventually("web-1 to be pruned", WAIT, || async {
        attempts_api.get_opt("web-1").await.unwrap().is_none().then_some(())
    })
    .await;
    let attempts = run(&certpilot, &kubeconfig, None, &[&["attempts", "web"][..], &ns].concat());
    let first = attempts.lines().next().unwrap_or_default();
    assert!(first.starts_with("web-1  Issue  Succeeded"), "{attempts}");
    assert!(
        first.contains("Issuer/local, serial ")
            && first.ends_with("(pruned: kept in the Certificate's status.history)"),
        "{attempts}"
    );
    assert!(attempts.contains("\nweb-2  Manual  Succeeded"), "{attempts}");
    let history: Value = serde_json::from_str(&run(
        &certpilot,
        &kubeconfig,
        None,
        &[&["attempts", "web", "-o", "json"][..], &ns].concat(),
    ))
    .unwrap();
    let types: Vec<&str> = history.as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Issue", "Manual"]);
    assert_eq!((history[0]["pruned"].as_bool(), history[1]["pruned"].as_bool()), (Some(true), None), "{history}");

    // Installed as `kubectl-certpilot` on the PATH, the same binary is a kubectl plugin.
    let plugins = std::env::temp_dir().join(format!("certpilot-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&plugins).unwrap();
    let plugin = plugins.join("kubectl-certpilot");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_certpilot"), &plugin).unwrap();
    let through_kubectl =
        run(&["kubectl", "certpilot"], &kubeconfig, Some(&plugins), &[&["status", "web"][..], &ns].concat());
    let help = run(&["kubectl", "certpilot"], &kubeconfig, Some(&plugins), &["--help"]);
    let _ = std::fs::remove_dir_all(&plugins);
    assert!(through_kubectl.starts_with(&format!("Certificate {namespace}/web: Ready\n")), "{through_kubectl}");
    assert!(help.contains("Usage: kubectl certpilot"), "{help}");
}

/// `revoke` on a CA issuer: the Revoke attempt and the Reissue after it, for scripts; with
/// `--no-reissue`, only the Revoke attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_shows_the_revocation_and_the_reissue() {
    let mut cluster = TestCluster::start("cli-revoke").await.expect("cluster");
    install_certpilot_crds(&cluster).await;
    let _operator = Operator::start(&mut cluster);
    let namespace = cluster.namespace().to_string();
    let kubeconfig = cluster.kubeconfig_path().unwrap();
    let params = PatchParams::apply("cli-test").force();
    let issuers: Api<certpilot::api::Issuer> = Api::namespaced(cluster.client(), &namespace);
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), &namespace);
    let ready = |c: &Certificate| c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Ready);
    let bootstrap = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "bootstrap"}, "spec": {"selfSigned": {}}});
    issuers.patch("bootstrap", &params, &Patch::Apply(bootstrap)).await.unwrap();
    let root = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": "root"},
        "spec": {"secretName": "root-ca", "commonName": "cli root", "isCA": true, "issuerRef": {"name": "bootstrap"}}});
    certificates.patch("root", &params, &Patch::Apply(root)).await.unwrap();
    wait_for(&certificates, "root", "root to be Ready", WAIT, ready).await;
    let ca = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "ca"}, "spec": {"ca": {"secretName": "root-ca"}}});
    issuers.patch("ca", &params, &Patch::Apply(ca)).await.unwrap();
    let web = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": "web"},
        "spec": {"secretName": "web-tls", "dnsNames": ["web.example.com"], "issuerRef": {"name": "ca"}}});
    certificates.patch("web", &params, &Patch::Apply(web)).await.unwrap();
    let serial = wait_for(&certificates, "web", "web to be Ready", WAIT, ready).await.status.unwrap().serial_number;

    let certpilot = [env!("CARGO_BIN_EXE_certpilot")];
    let ns = ["-n", namespace.as_str()];
    let args = [&["revoke", "web", "--reason", "keyCompromise", "-o", "json"][..], &ns].concat();
    let shown: Value = serde_json::from_str(&run(&certpilot, &kubeconfig, None, &args)).unwrap();
    let types: Vec<&str> = shown.as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Revoke", "Reissue"], "{shown}");
    assert!(shown.as_array().unwrap().iter().all(|a| a["phase"] == "Succeeded"), "{shown}");
    let revoked = &issuers.get("ca").await.unwrap().status.unwrap().revoked;
    assert_eq!(revoked.iter().map(|r| Some(r.serial_number.clone())).collect::<Vec<_>>(), [serial]);

    let text = run(&certpilot, &kubeconfig, None, &[&["revoke", "web", "--no-reissue"][..], &ns].concat());
    assert!(text.starts_with("web-4  Revoke  Succeeded"), "{text}");
    assert!(!text.contains("Reissue"), "{text}");
    assert_eq!(issuers.get("ca").await.unwrap().status.unwrap().revoked.len(), 2);
}
