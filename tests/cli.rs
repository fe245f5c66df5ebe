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
