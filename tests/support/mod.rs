//! Helpers shared by the integration tests: the widget CRD, polling, and small builders.
#![allow(dead_code)]

use certpilot_test_apiserver::cluster::TestCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, CustomResource,
    api::{DynamicObject, GroupVersionKind},
    core::ApiResource,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{future::Future, time::Duration};

/// The conformance suite's own custom resource (see `tests/fixtures/widgets-crd.yaml`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(group = "conformance.certpilot.dev", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
pub struct WidgetSpec {
    pub size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
pub struct WidgetStatus {
    #[serde(rename = "observedGeneration", skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<WidgetCondition>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
pub struct WidgetCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn widget_crd() -> CustomResourceDefinition {
    yaml_serde::from_str(include_str!("../fixtures/widgets-crd.yaml")).expect("fixture CRD parses")
}

/// A cluster with the widget CRD installed.
pub async fn cluster_with_widgets(test: &str) -> TestCluster {
    let cluster = TestCluster::start(test).await.expect("test cluster starts");
    cluster.install_crd(&widget_crd()).await.expect("widget CRD installs");
    cluster
}

pub fn widgets(cluster: &TestCluster) -> Api<Widget> {
    Api::namespaced(cluster.client(), cluster.namespace())
}

/// A dynamic API for widgets, to send documents the typed struct cannot express.
pub fn raw_widgets(cluster: &TestCluster) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("conformance.certpilot.dev", "v1", "Widget");
    Api::namespaced_with(cluster.client(), cluster.namespace(), &ApiResource::from_gvk(&gvk))
}

pub fn widget(name: &str, size: i64) -> Widget {
    Widget::new(name, WidgetSpec { size, ..Default::default() })
}

/// Polls `check` until it yields a value or `timeout` passes; panics with `what` on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API error of a result, or a panic naming what was expected to fail.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("{what}: expected an API error, got {other:?}"),
    }
}

/// The resourceVersion of `api`'s collection now: changes after it can be watched for.
pub async fn collection_version<K>(api: &Api<K>) -> String
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api.list_metadata(&kube::api::ListParams::default().limit(1)).await.expect("list");
    list.metadata.resource_version.expect("a list has a resourceVersion")
}

/// The changes (added, modified, deleted) of `api`'s objects matching `fields` since
/// resourceVersion `since`, watching for `window` at most. How a test on any API server tells
/// what was written: a write that changes nothing makes no event, as on a real API server.
pub async fn changes_since<K>(
    api: &Api<K>,
    since: &str,
    fields: &str,
    window: Duration,
) -> Vec<kube::api::WatchEvent<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use futures::TryStreamExt;
    let params = kube::api::WatchParams::default().fields(fields).timeout(window.as_secs().max(1) as u32);
    let stream = api.watch(&params, since).await.expect("watch");
    let events: Vec<_> = stream.try_collect().await.expect("watch events");
    events
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                kube::api::WatchEvent::Added(_)
                    | kube::api::WatchEvent::Modified(_)
                    | kube::api::WatchEvent::Deleted(_)
            )
        })
        .collect()
}

/// Installs certpilot's CRDs (as generated from the code) into the cluster.
pub async fn install_certpilot_crds(cluster: &TestCluster) {
    for crd in certpilot::api::crds() {
        cluster.install_crd(&crd).await.expect("certpilot CRD installs");
    }
}

/// The operator binary, running against a test cluster and restricted to the test's namespace.
pub struct Operator {
    child: std::process::Child,
}

impl Operator {
    pub fn start(cluster: &mut TestCluster) -> Self {
        Self::start_with(cluster, &[])
    }

    pub fn start_with(cluster: &mut TestCluster, extra: &[&str]) -> Self {
        Self::start_with_env(cluster, extra, &[])
    }

    /// `start_with`, with `env` added to the operator's environment.
    pub fn start_with_env(cluster: &mut TestCluster, extra: &[&str], env: &[(String, String)]) -> Self {
        let kubeconfig = cluster.kubeconfig_path().expect("kubeconfig for the operator");
        Self::spawn_with_env(&kubeconfig, cluster.namespace(), extra, env, std::process::Stdio::inherit())
    }

    /// The operator binary on the cluster `kubeconfig` names, restricted to `namespace`, its
    /// log (stderr) going to `log`.
    pub fn spawn(kubeconfig: &std::path::Path, namespace: &str, extra: &[&str], log: std::process::Stdio) -> Self {
        Self::spawn_with_env(kubeconfig, namespace, extra, &[], log)
    }

    /// `spawn`, with `env` added to the operator's environment.
    pub fn spawn_with_env(
        kubeconfig: &std::path::Path,
        namespace: &str,
        extra: &[&str],
        env: &[(String, String)],
        log: std::process::Stdio,
    ) -> Self {
        // Ports of their own, unless the test gives them: operators of tests running side by
        // side would otherwise all ask for the default ones, and an operator that cannot listen
        // exits.
        let any_port = |flag: &'static str| if extra.contains(&flag) { vec![] } else { vec![flag, "127.0.0.1:0"] };
        let listeners: Vec<&str> = ["--probe-address", "--solver-http-address", "--solver-tls-address"]
            .into_iter()
            .flat_map(any_port)
            .collect();
        // Tests renew within seconds; a test of the floor itself sets its own.
        let floor: &[&str] =
            if extra.contains(&"--min-renewal-interval") { &[] } else { &["--min-renewal-interval", "1s"] };
        // Failures are retried within seconds; a test that must tell a retry from a switch of
        // issuer sets its own backoff.
        let retry: &[&str] =
            if extra.contains(&"--retry-base") { &[] } else { &["--retry-base", "2s", "--retry-max", "10s"] };
        // `CERTPILOT_OPERATOR_WRAP`, e.g. `heaptrack`: a command to run the operator under
        // (for profiling a test or the scale bench).
        let mut command = match std::env::var("CERTPILOT_OPERATOR_WRAP") {
            Ok(wrap) => {
                let mut words = wrap.split_whitespace();
                let mut command = std::process::Command::new(words.next().expect("a command"));
                command.args(words).arg(env!("CARGO_BIN_EXE_certpilot"));
                command
            }
            Err(_) => std::process::Command::new(env!("CARGO_BIN_EXE_certpilot")),
        };
        // The Secrets ClusterIssuers name are in the watched namespace, unless told otherwise.
        let resources: &[&str] = if extra.contains(&"--cluster-resource-namespace") {
            &[]
        } else {
            &["--cluster-resource-namespace", namespace]
        };
        let child = command
            .args(["controller", "--namespace", namespace])
            .args(resources)
            .args(listeners)
            .args(retry)
            .args(floor)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            // AWS's SDK never asks EC2's instance metadata address (off this machine) for a
            // region or credentials the test did not give.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", std::env::var("CERTPILOT_TEST_LOG").unwrap_or_else(|_| "warn,certpilot=info".into()))
            .stdin(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("operator binary starts");
        Self { child }
    }

    /// Sends SIGTERM, as the kubelet does to stop a Pod, and waits at most `within` for the
    /// process to exit: how it exited, if it did.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        assert!(sent.expect("kill runs").success(), "SIGTERM sent");
        self.exited_within(within).await
    }

    /// How the process exited, if it does within `within`.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the operator is still running (it did not exit or crash).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Kills the operator at once, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `api` until object `name` satisfies `check`; panics with `what` and the last state.
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, what: &str, timeout: Duration, check: F) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(Some(object)) = api.get_opt(name).await {
            if check(&object) {
                return object;
            }
            last = Some(object);
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; last state: {last:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Secret cert-manager writes for its Certificate `certificate`: type `kubernetes.io/tls`,
/// cert-manager's annotations, a self-signed certificate for `names` valid over `validity` and
/// its key (applied as cert-manager's field manager).
pub async fn cert_manager_secret(
    secrets: &Api<k8s_openapi::api::core::v1::Secret>,
    certificate: &str,
    secret_name: &str,
    names: &[&str],
    (not_before, not_after): (jiff::Timestamp, jiff::Timestamp),
) -> k8s_openapi::api::core::v1::Secret {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let offset = |t: jiff::Timestamp| time::OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap();
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    let cert_pem = params.self_signed(&key).unwrap().pem();
    let b64 = |pem: &str| serde_json::to_value(k8s_openapi::ByteString(pem.as_bytes().to_vec())).unwrap();
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {
            "name": secret_name,
            "labels": {"controller.cert-manager.io/fao": "true"},
            "annotations": {
                "cert-manager.io/certificate-name": certificate,
                "cert-manager.io/issuer-name": "selfsigned",
                "cert-manager.io/issuer-kind": "Issuer",
                "cert-manager.io/issuer-group": "cert-manager.io",
                "cert-manager.io/common-name": "",
                "cert-manager.io/alt-names": names.join(","),
                "cert-manager.io/ip-sans": "",
                "cert-manager.io/uri-sans": "",
            },
        },
        "data": {"tls.crt": b64(&cert_pem), "tls.key": b64(&key.serialize_pem()), "ca.crt": b64(&cert_pem)},
    });
    let params = kube::api::PatchParams::apply("cert-manager-certificates").force();
    secrets.patch(secret_name, &params, &kube::api::Patch::Apply(&doc)).await.unwrap()
}

pub mod a2c;
pub mod bind;
pub mod bulk;
pub mod front;
pub mod helm;
pub mod install;
pub mod moto;
pub mod pdns;
pub mod pebble;
pub mod proxy;
pub mod webhook;

/// The status and body of `GET path` on a local port (status 0 when nothing answers).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return (0, String::new()) };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

/// The HTTP status of `GET path` on a local port (0 when nothing answers).
pub async fn http_status(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return 0 };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}
