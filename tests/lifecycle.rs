//! The operator's life as a process: a CRD that is not installed is named once, makes
//! certpilot unready, stops nothing else, and is picked up once installed, without a restart;
//! SIGTERM stops certpilot within two seconds whatever it is doing. On the test API server or,
//! with `CERTPILOT_TEST_KUBECONFIG`, a real cluster: the states are made by a proxy in front of
//! either (a kind not served, requests that never get an answer).

mod support;

use certpilot::api::{Certificate, ClusterIssuer, Issuer};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use std::{process::Stdio, time::Duration};
use support::{pebble::free_port, proxy::ApiProxy, *};

const WAIT: Duration = Duration::from_secs(120);
/// What the kubelet would wait at most is 30 s; certpilot promises far less.
const STOPS_WITHIN: Duration = Duration::from_secs(2);

async fn cluster(test: &str) -> TestCluster {
    let cluster = TestCluster::start(test).await.expect("cluster");
    install_certpilot_crds(&cluster).await;
    cluster
}

async fn apply<K>(api: &Api<K>, doc: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = doc["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(&name, &PatchParams::apply("lifecycle-test").force(), &Patch::Apply(&doc)).await.expect("applied")
}

fn certificate(name: &str, issuer_kind: &str, issuer: &str) -> serde_json::Value {
    json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
        "spec": {"secretName": format!("{name}-tls"), "dnsNames": [format!("{name}.example.com")],
                 "issuerRef": {"kind": issuer_kind, "name": issuer}}})
}

fn is_ready(c: &Certificate) -> bool {
    c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The operator through `proxy`, its log kept in a file of its own.
fn operator(proxy: &ApiProxy, namespace: &str, extra: &[&str]) -> (Operator, std::path::PathBuf) {
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("certpilot-lifecycle")));
    let file = std::fs::File::create(&log).expect("log file");
    (Operator::spawn(proxy.kubeconfig(), namespace, extra, Stdio::from(file)), log)
}

/// SIGTERM stops the operator within two seconds, and it exits as a stop should (status 0).
async fn stops_cleanly(mut operator: Operator, log: &std::path::Path) {
    let exited = operator.terminate(STOPS_WITHIN).await.expect("stopped within 2 s of SIGTERM");
    assert!(exited.success(), "{exited}");
    std::fs::remove_file(log).ok();
}

fn lines_with(log: &std::path::Path, text: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(text)).count()
}

#[tokio::test]
async fn a_missing_crd_is_named_once_and_picked_up_when_installed() {
    let cluster = cluster("life-missing-crd").await;
    let proxy = ApiProxy::start(&cluster).await;
    proxy.not_served("issuers.certpilot.dev");
    let probe = free_port();
    let (_operator, log) = operator(&proxy, cluster.namespace(), &["--probe-address", &format!("127.0.0.1:{probe}")]);
    // Everything else keeps working: a Certificate of a ClusterIssuer is issued.
    let cluster_issuer = unique_name("life-selfsigned");
    let cluster_issuers: Api<ClusterIssuer> = Api::all(cluster.client());
    apply(
        &cluster_issuers,
        json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "ClusterIssuer",
        "metadata": {"name": cluster_issuer}, "spec": {"selfSigned": {}}}),
    )
    .await;
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), cluster.namespace());
    apply(&certificates, certificate("web", "ClusterIssuer", &cluster_issuer)).await;
    wait_for(&certificates, "web", "a Certificate of a ClusterIssuer to be Ready", WAIT, is_ready).await;
    // The missing one is named, with what to do; certpilot is not ready and says why.
    let named = "issuers.certpilot.dev is not installed: kubectl apply -f crds/";
    let (status, body) = http_get(probe, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not installed: issuers.certpilot.dev"));
    let (_, metrics) = http_get(probe, "/metrics").await;
    assert!(metrics.contains("certpilot_crd_installed{crd=\"issuers.certpilot.dev\"} 0"), "{metrics}");
    assert!(metrics.contains("certpilot_crd_installed{crd=\"certificates.certpilot.dev\"} 1"), "{metrics}");
    assert_eq!(lines_with(&log, named), 1, "named once, in one line");
    // Installed now: picked up without a restart.
    proxy.clear();
    let issuers: Api<Issuer> = Api::namespaced(cluster.client(), cluster.namespace());
    apply(
        &issuers,
        json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer",
        "metadata": {"name": "local"}, "spec": {"selfSigned": {}}}),
    )
    .await;
    apply(&certificates, certificate("api", "Issuer", "local")).await;
    wait_for(&certificates, "api", "a Certificate of an Issuer to be Ready", WAIT, is_ready).await;
    eventually("certpilot to be ready", WAIT, || async { (http_get(probe, "/readyz").await.0 == 200).then_some(()) })
        .await;
    let (_, metrics) = http_get(probe, "/metrics").await;
    assert!(metrics.contains("certpilot_crd_installed{crd=\"issuers.certpilot.dev\"} 1"), "{metrics}");
    assert_eq!(lines_with(&log, "issuers.certpilot.dev is installed now"), 1);
    assert_eq!(lines_with(&log, named), 1, "still said once");
    let _ = cluster_issuers.delete(&cluster_issuer, &DeleteParams::default()).await;
    std::fs::remove_file(&log).ok();
}

#[tokio::test]
async fn sigterm_stops_certpilot_while_its_caches_cannot_fill() {
    let cluster = cluster("life-term-unsynced").await;
    let proxy = ApiProxy::start(&cluster).await;
    // Every list and watch of certpilot's kinds waits forever for its answer.
    proxy.hang(http::Method::GET, "/apis/certpilot.dev/");
    let probe = free_port();
    let (operator, log) = operator(&proxy, cluster.namespace(), &["--probe-address", &format!("127.0.0.1:{probe}")]);
    eventually("the operator to serve its probes", WAIT, || async {
        (http_get(probe, "/healthz").await.0 == 200).then_some(())
    })
    .await;
    stops_cleanly(operator, &log).await;
}

#[tokio::test]
async fn sigterm_stops_certpilot_while_an_attempt_is_mid_phase() {
    let cluster = cluster("life-term-attempt").await;
    let proxy = ApiProxy::start(&cluster).await;
    // The attempt's first status write (its phase) waits forever for its answer.
    proxy.hang(http::Method::PATCH, "/certificateattempts/");
    let (operator, log) = operator(&proxy, cluster.namespace(), &[]);
    let issuers: Api<Issuer> = Api::namespaced(cluster.client(), cluster.namespace());
    apply(
        &issuers,
        json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer",
        "metadata": {"name": "local"}, "spec": {"selfSigned": {}}}),
    )
    .await;
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), cluster.namespace());
    apply(&certificates, certificate("web", "Issuer", "local")).await;
    let attempts: Api<certpilot::api::CertificateAttempt> = Api::namespaced(cluster.client(), cluster.namespace());
    wait_for(&attempts, "web-1", "the attempt to be made", WAIT, |_| true).await;
    stops_cleanly(operator, &log).await;
}

#[tokio::test]
async fn sigterm_stops_certpilot_with_solver_connections_open() {
    use tokio::io::AsyncWriteExt;
    let cluster = cluster("life-term-solver").await;
    let proxy = ApiProxy::start(&cluster).await;
    let (http, tls) = (free_port(), free_port());
    let (operator, log) = operator(
        &proxy,
        cluster.namespace(),
        &["--solver-http-address", &format!("127.0.0.1:{http}"), "--solver-tls-address", &format!("127.0.0.1:{tls}")],
    );
    let connect = |port: u16| async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok() };
    let mut http_client = eventually("the HTTP-01 solver to listen", WAIT, || connect(http)).await;
    let _tls_client = eventually("the TLS-ALPN-01 solver to listen", WAIT, || connect(tls)).await;
    // A request that never ends on the one, a handshake never begun on the other.
    http_client.write_all(b"GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a.example.com\r\n").await.unwrap();
    stops_cleanly(operator, &log).await;
}

/// An address certpilot cannot listen on (here, one another process holds) stops it at once,
/// with a failing exit status and the address and its use in the log: a replica that ran on
/// without its solver would look ready and leave the CA's validations unanswered.
#[tokio::test]
async fn certpilot_exits_saying_so_when_it_cannot_listen() {
    let cluster = cluster("life-listen").await;
    let proxy = ApiProxy::start(&cluster).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = taken.local_addr().expect("bound").to_string();
    for (flag, use_) in [
        ("--solver-http-address", "HTTP-01 challenges"),
        ("--solver-tls-address", "TLS-ALPN-01 challenges"),
        ("--probe-address", "/healthz, /readyz and /metrics"),
    ] {
        let (mut operator, log) = operator(&proxy, cluster.namespace(), &[flag, &address]);
        let exited = operator.exited_within(WAIT).await.expect("the operator exits");
        assert!(!exited.success(), "{flag}: {exited}");
        let said = format!("cannot listen on {address} for {use_}");
        assert_eq!(lines_with(&log, &said), 1, "{flag}: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::fs::remove_file(&log).ok();
    }
}

/// How many reconciles of `controller` the operator behind `probe` has finished.
async fn reconciles_done(probe: u16, controller: &str) -> usize {
    let (_, metrics) = http_get(probe, "/metrics").await;
    let series = format!("certpilot_reconcile_duration_seconds_count{{controller=\"{controller}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_restarted_operator_reads_its_secrets_in_pages_not_one_by_one() {
    const COUNT: usize = 12;
    let cluster = cluster("life-restart-reads").await;
    let proxy = ApiProxy::start(&cluster).await;
    let (operator_before, log) = operator(&proxy, cluster.namespace(), &[]);
    let issuers: Api<Issuer> = Api::namespaced(cluster.client(), cluster.namespace());
    let issuer = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer",
        "metadata": {"name": "local"}, "spec": {"selfSigned": {}}});
    apply(&issuers, issuer).await;
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), cluster.namespace());
    for i in 0..COUNT {
        apply(&certificates, certificate(&format!("c{i}"), "Issuer", "local")).await;
    }
    for i in 0..COUNT {
        wait_for(&certificates, &format!("c{i}"), "the Certificate to be Ready", WAIT, is_ready).await;
    }
    operator_before.kill();
    std::fs::remove_file(&log).ok();
    proxy.take_seen();
    let probe = free_port();
    let (operator_after, log) =
        operator(&proxy, cluster.namespace(), &["--probe-address", &format!("127.0.0.1:{probe}")]);
    eventually("every Certificate to be looked at again", WAIT, || async {
        (reconciles_done(probe, "certificate").await >= COUNT).then_some(())
    })
    .await;
    let secrets = format!("/api/v1/namespaces/{}/secrets", cluster.namespace());
    let seen = proxy.take_seen();
    let one_by_one: Vec<_> = seen.iter().filter(|s| s.uri.starts_with(&format!("{secrets}/c"))).collect();
    assert!(one_by_one.is_empty(), "no Secret is read on its own: {one_by_one:?}");
    let lists = seen.iter().filter(|s| s.method == http::Method::GET && s.uri.starts_with(&format!("{secrets}?")));
    let whole: Vec<_> = lists.filter(|s| !s.metadata_only && !s.uri.contains("watch=")).collect();
    assert!(!whole.is_empty() && whole.iter().all(|s| s.uri.contains("limit=")), "read whole, in pages: {seen:?}");
    assert_eq!(lines_with(&log, &format!("read={COUNT}")), 1, "every Secret read once, in the one pass");
    stops_cleanly(operator_after, &log).await;
}
