//! The test server's own fault injection, which a real cluster cannot offer.

use certpilot_test_apiserver::TestApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use std::time::{Duration, Instant};

fn config_map(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm
}

/// The next object the watcher reports, skipping the errors it surfaces before recovering.
async fn next_name(stream: &mut (impl futures::Stream<Item = Result<ConfigMap, watcher::Error>> + Unpin)) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("event in time") {
            Some(Ok(cm)) => return cm.name_any(),
            Some(Err(_)) => continue,
            None => panic!("watch stream ended"),
        }
    }
}

#[tokio::test]
async fn latency_is_added_to_every_request() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.faults().set_latency(Duration::from_millis(300));
    let started = Instant::now();
    api.list(&Default::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn the_nth_request_fails_with_the_chosen_status() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.faults().fail_nth_request(2, 500);
    api.list(&Default::default()).await.unwrap();
    match api.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 500),
        other => panic!("expected an injected 500, got {other:?}"),
    }
    api.list(&Default::default()).await.unwrap();
}

#[tokio::test]
async fn throttling_answers_429_for_matching_paths_only() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &config_map("throttled")).await.unwrap();
    api.create(&PostParams::default(), &config_map("other")).await.unwrap();
    server.faults().fail_requests(0, 1, 429, "/configmaps/throttled");
    api.get("other").await.unwrap();
    // kube's client retries a 429 by itself: the second GET of the throttled path succeeds.
    assert_eq!(api.get("throttled").await.unwrap().name_any(), "throttled");
    let gets = server
        .faults()
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/configmaps/throttled"))
        .count();
    assert_eq!(gets, 2, "one throttled GET and its retry");
}

#[tokio::test]
async fn watchers_recover_from_dropped_streams() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut stream = watcher(api.clone(), watcher::Config::default()).applied_objects().boxed();
    api.create(&PostParams::default(), &config_map("before")).await.unwrap();
    assert_eq!(next_name(&mut stream).await, "before");
    server.faults().drop_watches();
    api.create(&PostParams::default(), &config_map("after")).await.unwrap();
    assert_eq!(next_name(&mut stream).await, "after");
}

#[tokio::test]
async fn watchers_relist_after_compaction() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut stream = watcher(api.clone(), watcher::Config::default()).applied_objects().boxed();
    api.create(&PostParams::default(), &config_map("first")).await.unwrap();
    assert_eq!(next_name(&mut stream).await, "first");
    server.faults().drop_watches();
    api.create(&PostParams::default(), &config_map("second")).await.unwrap();
    server.compact();
    // Resuming from its last resourceVersion now gets 410 Gone; the watcher relists and
    // reports every object again, the missed one included.
    let mut seen = Vec::new();
    while !seen.contains(&"second".to_string()) {
        seen.push(next_name(&mut stream).await);
    }
    let gone_then_relisted = server.faults().requests().iter().filter(|r| r.method == "GET" && !r.is_watch()).count();
    assert!(gone_then_relisted >= 2, "the watcher listed again after 410");
}

#[tokio::test]
async fn the_request_log_tells_reads_from_writes() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &config_map("logged")).await.unwrap();
    api.get("logged").await.unwrap();
    let log = server.faults().requests();
    let writes: Vec<_> = log.iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "POST");
    assert!(log.iter().any(|r| r.method == "GET" && r.path.ends_with("/configmaps/logged")));
}
