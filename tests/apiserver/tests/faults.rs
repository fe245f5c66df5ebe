//! The test server's own fault injection, which a real cluster cannot offer.

use certpilot_test_apiserver::TestApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    core::response::StatusSummary,
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

#[tokio::test]
async fn the_request_log_names_the_client_and_the_verb() {
    let server = TestApiServer::start().await.unwrap();
    let mut config = server.config();
    config.headers.push((axum::http::header::USER_AGENT, axum::http::HeaderValue::from_static("log-test/1.0")));
    let api: Api<ConfigMap> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
    let mark = server.faults().request_count();
    api.create(&PostParams::default(), &config_map("verbs")).await.unwrap();
    api.get("verbs").await.unwrap();
    api.list(&Default::default()).await.unwrap();
    let apply = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}});
    api.patch("verbs", &PatchParams::apply("log-test"), &Patch::Apply(&apply)).await.unwrap();
    api.patch("verbs", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"b": "2"}}))).await.unwrap();
    api.replace("verbs", &PostParams::default(), &api.get("verbs").await.unwrap()).await.unwrap();
    api.delete("verbs", &Default::default()).await.unwrap();
    let log = server.faults().requests_since(mark);
    let verbs: Vec<_> = log.iter().map(|r| r.verb()).collect();
    assert_eq!(verbs, ["create", "get", "list", "apply", "patch", "get", "update", "delete"]);
    assert!(log.iter().all(|r| r.user_agent == "log-test/1.0"), "{log:?}");
    assert!(log.iter().all(|r| r.resource() == "configmaps"), "{log:?}");
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(server.faults().requests_since(server.faults().request_count() + 5).is_empty());
}

#[tokio::test]
async fn watch_lag_delays_every_event_and_keeps_their_order() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut stream = watcher(api.clone(), watcher::Config::default()).applied_objects().boxed();
    api.create(&PostParams::default(), &config_map("zero")).await.unwrap();
    assert_eq!(next_name(&mut stream).await, "zero");
    let lag = Duration::from_millis(600);
    server.faults().set_watch_lag(lag);
    let written = Instant::now();
    for name in ["first", "second", "third"] {
        api.create(&PostParams::default(), &config_map(name)).await.unwrap();
    }
    // Reads are not lagged: the object is there at once, while the watch has not told yet.
    assert_eq!(api.get("third").await.unwrap().name_any(), "third");
    assert!(tokio::time::timeout(lag / 3, stream.next()).await.is_err(), "no watch event before the lag has passed");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(next_name(&mut stream).await);
    }
    assert!(written.elapsed() >= lag, "events arrived after {:?}", written.elapsed());
    assert_eq!(seen, ["first", "second", "third"]);
    // Switched off, events flow at once again.
    server.faults().set_watch_lag(Duration::ZERO);
    api.create(&PostParams::default(), &config_map("fourth")).await.unwrap();
    let started = Instant::now();
    assert_eq!(next_name(&mut stream).await, "fourth");
    assert!(started.elapsed() < lag, "no lag once switched off");
}

#[tokio::test]
async fn a_lagging_watch_resumes_without_losing_events() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut stream = watcher(api.clone(), watcher::Config::default()).applied_objects().boxed();
    api.create(&PostParams::default(), &config_map("before")).await.unwrap();
    assert_eq!(next_name(&mut stream).await, "before");
    server.faults().set_watch_lag(Duration::from_millis(400));
    api.create(&PostParams::default(), &config_map("pending")).await.unwrap();
    // The stream drops while the event is still held back: the watcher resumes from what it
    // was told, so the event comes after the reconnect (late, but not lost).
    server.faults().drop_watches();
    assert_eq!(next_name(&mut stream).await, "pending");
}

fn api_status<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_nth_write_fails_with_a_proper_conflict() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &config_map("target")).await.unwrap();
    api.create(&PostParams::default(), &config_map("elsewhere")).await.unwrap();
    server.faults().fail_writes_every(2, 409, "/configmaps/target");
    let label = |v: &str| Patch::Merge(serde_json::json!({"metadata": {"labels": {"n": v}}}));
    let mut outcomes = Vec::new();
    for i in 0..4 {
        // Reads and writes elsewhere do not count.
        api.get("target").await.unwrap();
        api.patch("elsewhere", &PatchParams::default(), &label(&i.to_string())).await.unwrap();
        outcomes.push(api.patch("target", &PatchParams::default(), &label(&i.to_string())).await);
    }
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
    for failed in [outcomes.remove(3), outcomes.remove(1)] {
        let status = api_status(failed);
        assert_eq!(
            (status.code, status.reason.as_str(), status.status),
            (409, "Conflict", Some(StatusSummary::Failure))
        );
        assert_eq!(
            status.message,
            "Operation cannot be fulfilled on configmaps \"target\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(status.details.unwrap().name, "target");
    }
    // The failed writes changed nothing: the label is the last successful one.
    assert_eq!(api.get("target").await.unwrap().labels()["n"], "2");
    server.faults().clear_write_failures();
    for i in 0..3 {
        api.patch("target", &PatchParams::default(), &label(&format!("after-{i}"))).await.unwrap();
    }
}

#[tokio::test]
async fn write_failures_carry_the_reason_of_their_code() {
    let server = TestApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.faults().fail_writes_every(1, 500, "");
    let status = api_status(api.create(&PostParams::default(), &config_map("x")).await);
    assert_eq!((status.code, status.reason.as_str()), (500, "InternalError"));
    server.faults().fail_writes_every(1, 403, "");
    let status = api_status(api.create(&PostParams::default(), &config_map("x")).await);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    api.list(&Default::default()).await.unwrap();
    server.faults().clear();
    api.create(&PostParams::default(), &config_map("x")).await.unwrap();
}

#[tokio::test]
async fn watch_lag_for_one_resource_leaves_the_others_on_time() {
    use k8s_openapi::api::core::v1::Secret;
    let server = TestApiServer::start().await.unwrap();
    let config_maps: Api<ConfigMap> = Api::default_namespaced(server.client());
    let secrets: Api<Secret> = Api::default_namespaced(server.client());
    let mut lagging = watcher(config_maps.clone(), watcher::Config::default()).applied_objects().boxed();
    let mut on_time = watcher(secrets.clone(), watcher::Config::default()).applied_objects().boxed();
    config_maps.create(&PostParams::default(), &config_map("zero")).await.unwrap();
    assert_eq!(next_name(&mut lagging).await, "zero");
    let lag = Duration::from_millis(800);
    server.faults().set_watch_lag_for("configmaps", lag);
    let written = Instant::now();
    config_maps.create(&PostParams::default(), &config_map("first")).await.unwrap();
    let mut secret = Secret::default();
    secret.metadata.name = Some("second".into());
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    // The later write is seen first: its watch is not held back.
    let seen = tokio::time::timeout(Duration::from_secs(30), on_time.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(seen.name_any(), "second");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), lagging.next()).await.is_err(),
        "the lagging watch has not told yet"
    );
    assert_eq!(next_name(&mut lagging).await, "first");
    assert!(written.elapsed() >= lag, "the lagged event arrived after {:?}", written.elapsed());
}
