//! `cargo bench --bench scale`: the operator binary against the in-process test API server,
//! printing figures (no assertions; targets are read, not enforced by timed tests):
//! - its resident memory with and without many unrelated Secrets in the cluster,
//! - how long N self-signed certificates take to become Ready, and the API requests per certificate,
//! - the requests it makes at rest once every certificate is Ready.

#[path = "../tests/support/mod.rs"]
mod support;

use certpilot::api::Certificate;
use certpilot_test_apiserver::cluster::TestCluster;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn idle_memory(unrelated: usize) -> u64 {
    let mut cluster = TestCluster::start("bench-memory").await.unwrap();
    install_certpilot_crds(&cluster).await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), cluster.namespace());
    let payload = ByteString(vec![b'x'; 4096]);
    for i in 0..unrelated {
        let mut s = Secret::default();
        s.metadata.name = Some(format!("unrelated-{i}"));
        s.data = Some([("blob".to_string(), payload.clone())].into());
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let operator = Operator::start(&mut cluster);
    tokio::time::sleep(Duration::from_secs(4)).await;
    rss_kib(operator.pid())
}

async fn issuance(count: usize) {
    let mut cluster = TestCluster::start("bench-issue").await.unwrap();
    install_certpilot_crds(&cluster).await;
    let operator = Operator::start(&mut cluster);
    let params = PatchParams::apply("bench").force();
    let issuers: Api<certpilot::api::Issuer> = Api::namespaced(cluster.client(), cluster.namespace());
    let issuer = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "local"}, "spec": {"selfSigned": {}}});
    issuers.patch("local", &params, &Patch::Apply(&issuer)).await.unwrap();
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), cluster.namespace());
    let before = cluster.server().map(|s| s.faults().requests().len()).unwrap_or(0);
    let started = Instant::now();
    for i in 0..count {
        let name = format!("c{i}");
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
            "spec": {"secretName": format!("{name}-tls"), "dnsNames": [format!("{name}.example.com")], "issuerRef": {"name": "local"}}});
        certificates.patch(&name, &params, &Patch::Apply(&doc)).await.unwrap();
    }
    loop {
        let ready = certificates
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|c| {
                c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "issue {count} self-signed certificates: {:.2}s ({:.1} certificates/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    println!("operator memory after issuing them: {} KiB", rss_kib(operator.pid()));
    if let Some(server) = cluster.server() {
        let requests = server.faults().requests();
        let by_operator: Vec<_> =
            requests[before..].iter().filter(|r| !r.path.contains("/certificates/c") || r.method != "PATCH").collect();
        let writes = by_operator.iter().filter(|r| r.is_write()).count();
        println!(
            "API requests while issuing: {} ({:.1} per certificate, {:.1} writes per certificate)",
            by_operator.len(),
            by_operator.len() as f64 / count as f64,
            writes as f64 / count as f64
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mark = server.faults().requests().len();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let at_rest: Vec<_> = server.faults().requests()[mark..].iter().filter(|r| !r.is_watch()).cloned().collect();
        println!(
            "API requests in 10s at rest with {count} Ready certificates: {} ({} writes)",
            at_rest.len(),
            at_rest.iter().filter(|r| r.is_write()).count()
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let unrelated = env_number("CERTPILOT_BENCH_UNRELATED_SECRETS", 5000);
        let alone = idle_memory(0).await;
        let crowded = idle_memory(unrelated).await;
        println!("operator memory at rest: {alone} KiB alone, {crowded} KiB with {unrelated} unrelated 4 KiB Secrets");
        issuance(env_number("CERTPILOT_BENCH_CERTIFICATES", 200)).await;
    });
}
