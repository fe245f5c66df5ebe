//! Kubernetes API semantics certpilot relies on, one test each, written against a plain
//! `kube::Client`. They run against the in-process test API server, and unchanged against a
//! real cluster when `CERTPILOT_TEST_KUBECONFIG` names a kubeconfig: that keeps the test server
//! honest.

mod support;

use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
        core::v1::{ConfigMap, Namespace, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent, WatchParams},
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use std::{collections::BTreeMap, time::Duration};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

async fn cluster(test: &str) -> TestCluster {
    TestCluster::start(test).await.expect("test cluster starts")
}

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    s.data = Some(BTreeMap::from([("k".to_string(), ByteString(b"v".to_vec()))]));
    s
}

fn secrets(c: &TestCluster) -> Api<Secret> {
    Api::namespaced(c.client(), c.namespace())
}

#[tokio::test]
async fn create_get_list_and_delete() {
    let c = cluster("crud").await;
    let api = secrets(&c);
    let created = api.create(&PostParams::default(), &secret("one", &[])).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert!(created.resource_version().is_some());
    let fetched = api.get("one").await.unwrap();
    assert_eq!(fetched.metadata.uid, created.metadata.uid);
    assert_eq!(fetched.data.unwrap()["k"].0, b"v");
    assert!(api.list(&ListParams::default()).await.unwrap().items.iter().any(|s| s.name_any() == "one"));
    let dup = api_error(api.create(&PostParams::default(), &secret("one", &[])).await, "duplicate create");
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    api.delete("one", &DeleteParams::default()).await.unwrap();
    let gone = api_error(api.get("one").await, "get after delete");
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn generate_name_and_invalid_names() {
    let c = cluster("names").await;
    let api = secrets(&c);
    let mut s = secret("", &[]);
    s.metadata.name = None;
    s.metadata.generate_name = Some("gen-".into());
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    assert!(created.name_any().starts_with("gen-") && created.name_any().len() > 4);
    let bad = api_error(api.create(&PostParams::default(), &secret("Not_Valid", &[])).await, "invalid name");
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    assert!(bad.message.contains("metadata.name"), "{}", bad.message);
}

#[tokio::test]
async fn objects_in_a_missing_namespace_are_not_found() {
    let c = cluster("missing-ns").await;
    let api: Api<Secret> = Api::namespaced(c.client(), &format!("{}-absent", c.namespace()));
    let err = api_error(api.create(&PostParams::default(), &secret("x", &[])).await, "create in missing namespace");
    assert_eq!(err.code, 404);
    assert!(err.message.contains("namespaces"), "{}", err.message);
}

#[tokio::test]
async fn stale_resource_version_conflicts() {
    let c = cluster("stale-rv").await;
    let api = secrets(&c);
    let first = api.create(&PostParams::default(), &secret("s", &[])).await.unwrap();
    let mut update = first.clone();
    update.metadata.labels = Some(BTreeMap::from([("v".into(), "2".into())]));
    let second = api.replace("s", &PostParams::default(), &update).await.unwrap();
    assert_ne!(second.resource_version(), first.resource_version());
    let err = api_error(api.replace("s", &PostParams::default(), &update).await, "replace with stale resourceVersion");
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let merge_stale = json!({"metadata": {"resourceVersion": first.resource_version(), "labels": {"v": "3"}}});
    let err =
        api_error(api.patch("s", &PatchParams::default(), &Patch::Merge(&merge_stale)).await, "stale merge patch");
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn merge_and_json_patches() {
    let c = cluster("patches").await;
    let api = secrets(&c);
    api.create(&PostParams::default(), &secret("p", &[("a", "1")])).await.unwrap();
    let merged = api
        .patch("p", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"b": "2", "a": null}}})))
        .await
        .unwrap();
    assert_eq!(merged.labels(), &BTreeMap::from([("b".to_string(), "2".to_string())]));
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/b", "value": "2"},
        {"op": "add", "path": "/metadata/labels/c", "value": "3"}
    ]))
    .unwrap();
    let patched = api.patch("p", &PatchParams::default(), &Patch::<()>::Json(ops)).await.unwrap();
    assert_eq!(patched.labels().get("c").map(String::as_str), Some("3"));
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/labels/b", "value": "nope"}])).unwrap();
    let err =
        api_error(api.patch("p", &PatchParams::default(), &Patch::<()>::Json(failing)).await, "failed JSON patch test");
    assert_eq!(err.code, 422);
    assert_eq!(api.get("p").await.unwrap().labels().len(), 2);
}

#[tokio::test]
async fn secret_string_data_is_folded_into_data() {
    let c = cluster("stringdata").await;
    let api = secrets(&c);
    let mut s = secret("sd", &[]);
    s.string_data = Some(BTreeMap::from([("plain".into(), "text".into())]));
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    assert!(created.string_data.is_none());
    let data = created.data.unwrap();
    assert_eq!(data["plain"].0, b"text");
    assert_eq!(data["k"].0, b"v");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
}

#[tokio::test]
async fn tls_secrets_need_certificate_and_key() {
    let c = cluster("tls-secret").await;
    let mut s = secret("tls", &[]);
    s.type_ = Some("kubernetes.io/tls".into());
    let err = api_error(secrets(&c).create(&PostParams::default(), &s).await, "TLS secret without keys");
    assert_eq!(err.code, 422);
    assert!(err.message.contains("tls.crt"), "{}", err.message);
}

#[tokio::test]
async fn label_and_field_selectors() {
    let c = cluster("selectors").await;
    let api = secrets(&c);
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "cache")] {
        api.create(&PostParams::default(), &secret(name, &[("tier", tier), ("app", "shop")])).await.unwrap();
    }
    api.create(&PostParams::default(), &secret("d", &[])).await.unwrap();
    let names = |list: kube::api::ObjectList<Secret>| {
        let mut n: Vec<String> = list.items.iter().map(|s| s.name_any()).collect();
        n.sort();
        n
    };
    assert_eq!(names(api.list(&ListParams::default().labels("tier=web")).await.unwrap()), ["a"]);
    assert_eq!(names(api.list(&ListParams::default().labels("tier in (web,db)")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(api.list(&ListParams::default().labels("app=shop,tier notin (web)")).await.unwrap()), ["b", "c"]);
    assert_eq!(names(api.list(&ListParams::default().labels("!tier")).await.unwrap()), ["d"]);
    assert_eq!(names(api.list(&ListParams::default().labels("tier,tier!=db")).await.unwrap()), ["a", "c"]);
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.name=c")).await.unwrap()), ["c"]);
    let ns_field = format!("metadata.namespace={}", c.namespace());
    let all: Api<Secret> = Api::all(c.client());
    let listed = names(all.list(&ListParams::default().fields(&ns_field).labels("app=shop")).await.unwrap());
    assert_eq!(listed, ["a", "b", "c"]);
}

#[tokio::test]
async fn list_pagination_with_limit_and_continue() {
    let c = cluster("paging").await;
    let api = secrets(&c);
    for i in 0..5 {
        api.create(&PostParams::default(), &secret(&format!("page-{i}"), &[("paged", "yes")])).await.unwrap();
    }
    let lp = ListParams::default().labels("paged=yes").limit(2);
    let first = api.list(&lp).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let mut seen: Vec<String> = first.items.iter().map(|s| s.name_any()).collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api.list(&lp.clone().continue_token(&t)).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|s| s.name_any()));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(seen, (0..5).map(|i| format!("page-{i}")).collect::<Vec<_>>(), "every one once, in name order");
    assert_eq!(first.metadata.remaining_item_count, None, "not counted for a list with a selector");
}

#[tokio::test]
async fn list_pages_skip_what_the_selector_does_not_match_and_count_only_without_one() {
    let c = cluster("paging-mixed").await;
    let api = secrets(&c);
    for i in 0..6 {
        let labels: &[(&str, &str)] = if i % 2 == 0 { &[("paged", "yes")] } else { &[] };
        api.create(&PostParams::default(), &secret(&format!("mixed-{i}"), labels)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut lp = ListParams::default().labels("paged=yes").limit(1);
    loop {
        let page = api.list(&lp).await.unwrap();
        seen.extend(page.items.iter().map(|s| s.name_any()));
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(seen, ["mixed-0", "mixed-2", "mixed-4"]);
    let all = api.list(&ListParams::default()).await.unwrap().items.len();
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(all as i64 - 2), "counted without a selector");
}

/// Reads watch events until `n` non-bookmark ones arrived.
async fn next_events<K: Clone + std::fmt::Debug>(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
    n: usize,
) -> Vec<WatchEvent<K>> {
    let mut out = Vec::new();
    while out.len() < n {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .unwrap();
        if !matches!(event, WatchEvent::Bookmark(_)) {
            out.push(event);
        }
    }
    out
}

fn describe<K: ResourceExt>(event: &WatchEvent<K>) -> String {
    match event {
        WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn watch_from_resource_version_sees_every_change_in_order() {
    let c = cluster("watch-rv").await;
    let api = secrets(&c);
    let start = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &secret("w1", &[])).await.unwrap();
    api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}}))).await.unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    let mut stream = api.watch(&WatchParams::default(), &start).await.unwrap().boxed();
    let events = next_events(&mut stream, 3).await;
    let seen: Vec<String> = events.iter().map(describe).collect();
    assert_eq!(seen, ["ADDED w1", "MODIFIED w1", "DELETED w1"]);
    // Changes after the watch started arrive live.
    api.create(&PostParams::default(), &secret("w2", &[])).await.unwrap();
    assert_eq!(describe(&next_events(&mut stream, 1).await[0]), "ADDED w2");
}

/// A watch from a resourceVersion the API server no longer has is `410 Gone`: the client must
/// list again. A real API server keeps a kind's history from when it began serving it (its watch
/// cache starts there), so a version older than a new CRD is gone at once, as one etcd has
/// compacted away is.
#[tokio::test]
async fn watch_from_a_compacted_resource_version_is_gone() {
    use kube::{
        api::DynamicObject,
        core::{ApiResource, GroupVersionKind},
    };
    let c = cluster("watch-gone").await;
    let before = collection_version(&secrets(&c)).await;
    let schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let crd = scratch_crd("gone", "conformance.certpilot.dev", schema);
    c.install_crd(&crd).await.unwrap();
    let names = &crd.spec.names;
    let gvk = GroupVersionKind::gvk(&crd.spec.group, "v1", &names.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &names.plural);
    let api: Api<DynamicObject> = Api::namespaced_with(c.client(), c.namespace(), &resource);
    // A real API server answers 429 while it fills a new kind's cache: ask again then.
    let status = eventually("the watch to be answered", WAIT, || async {
        let status = match api.watch(&WatchParams::default(), &before).await {
            Err(kube::Error::Api(status)) => *status,
            Ok(stream) => match tokio::time::timeout(WAIT, stream.boxed().next()).await.unwrap().unwrap().unwrap() {
                WatchEvent::Error(status) => *status,
                other => panic!("expected 410 Gone, got {}", describe(&other)),
            },
            Err(other) => panic!("expected 410 Gone, got {other:?}"),
        };
        (status.code != 429).then_some(status)
    })
    .await;
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"), "{}", status.message);
    Api::<CustomResourceDefinition>::all(c.client()).delete(&crd.name_any(), &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn watch_with_initial_events_ends_them_with_a_bookmark() {
    let c = cluster("watch-initial").await;
    let api = secrets(&c);
    api.create(&PostParams::default(), &secret("i1", &[])).await.unwrap();
    api.create(&PostParams::default(), &secret("i2", &[])).await.unwrap();
    let mut stream = api.watch(&WatchParams::default().initial_events(), "").await.unwrap().boxed();
    let mut added = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
        match event {
            WatchEvent::Added(s) => added.push(s.name_any()),
            WatchEvent::Bookmark(b)
                if b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str) == Some("true") =>
            {
                assert!(!b.metadata.resource_version.is_empty());
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {}", describe(&other)),
        }
    }
    added.sort();
    assert_eq!(added, ["i1", "i2"]);
}

#[tokio::test]
async fn selector_watch_sees_objects_enter_and_leave() {
    let c = cluster("watch-selector").await;
    let api = secrets(&c);
    api.create(&PostParams::default(), &secret("sel", &[])).await.unwrap();
    let start = api.get("sel").await.unwrap().resource_version().unwrap();
    let mut stream = api.watch(&WatchParams::default().labels("watched=yes"), &start).await.unwrap().boxed();
    let label = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"watched": v}}}));
    api.patch("sel", &PatchParams::default(), &label(Some("yes"))).await.unwrap();
    api.patch("sel", &PatchParams::default(), &label(Some("no"))).await.unwrap();
    let seen: Vec<String> = next_events(&mut stream, 2).await.iter().map(describe).collect();
    assert_eq!(seen, ["ADDED sel", "DELETED sel"]);
}

#[tokio::test]
async fn metadata_only_list_and_watch_omit_data() {
    let c = cluster("metadata-only").await;
    let api = secrets(&c);
    api.create(&PostParams::default(), &secret("m", &[("kind", "meta")])).await.unwrap();
    // `Api<PartialObjectMeta<_>>` asks for `PartialObjectMetadata` views, as the operator does for Secrets.
    let meta_api: Api<PartialObjectMeta<Secret>> = Api::namespaced(c.client(), c.namespace());
    let list = meta_api.list(&ListParams::default().labels("kind=meta")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("m"));
    let path = format!("/api/v1/namespaces/{}/secrets/m", c.namespace());
    let request = http::Request::get(path)
        .header("Accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
        .body(Vec::new())
        .unwrap();
    let raw: serde_json::Value = c.client().request(request).await.unwrap();
    assert_eq!(raw["kind"], "PartialObjectMetadata");
    assert_eq!(raw["metadata"]["labels"]["kind"], "meta");
    assert!(raw.get("data").is_none(), "{raw}");
    let stream = watcher(meta_api, watcher::Config::default().labels("kind=meta")).applied_objects();
    let mut stream = stream.boxed();
    let first = tokio::time::timeout(WAIT, stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m"));
    api.patch("m", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touched": "1"}}})))
        .await
        .unwrap();
    let second = tokio::time::timeout(WAIT, stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.metadata.annotations.unwrap()["touched"], "1");
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_reports_conflicts() {
    let c = cluster_with_widgets("ssa").await;
    let api = raw_widgets(&c);
    let doc = |fields: serde_json::Value| {
        let mut d = json!({"apiVersion": "conformance.certpilot.dev/v1", "kind": "Widget", "metadata": {"name": "w"}});
        d.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        d
    };
    let alice = PatchParams::apply("alice");
    let bob = PatchParams::apply("bob");
    api.patch("w", &alice, &Patch::Apply(doc(json!({"spec": {"size": 2, "color": "red", "tags": ["a"]}}))))
        .await
        .unwrap();
    api.patch("w", &bob, &Patch::Apply(doc(json!({"spec": {"size": 2, "tags": ["b"]}})))).await.unwrap();
    let w = api.get("w").await.unwrap();
    assert_eq!(w.data["spec"]["tags"], json!(["a", "b"]), "set lists merge");
    // Bob changing Alice's color conflicts, and names the field and its manager.
    let err = api_error(
        api.patch("w", &bob, &Patch::Apply(doc(json!({"spec": {"size": 2, "color": "blue"}})))).await,
        "conflicting apply",
    );
    assert_eq!(err.code, 409);
    assert!(err.message.contains("alice") && err.message.contains(".spec.color"), "{}", err.message);
    // With force Bob takes the field over.
    api.patch(
        "w",
        &bob.clone().force(),
        &Patch::Apply(doc(json!({"spec": {"size": 2, "color": "blue", "tags": ["b"]}}))),
    )
    .await
    .unwrap();
    assert_eq!(api.get("w").await.unwrap().data["spec"]["color"], "blue");
    // Alice stops applying tags: her tag goes, Bob's stays; size is shared so it stays.
    api.patch("w", &alice, &Patch::Apply(doc(json!({"spec": {"size": 2}})))).await.unwrap();
    let w = api.get("w").await.unwrap();
    assert_eq!(w.data["spec"]["tags"], json!(["b"]));
    assert_eq!(w.data["spec"]["size"], 2);
    let managers: Vec<String> =
        w.metadata.managed_fields.unwrap_or_default().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"alice".into()) && managers.contains(&"bob".into()), "{managers:?}");
}

#[tokio::test]
async fn apply_without_changes_is_a_no_op() {
    let c = cluster_with_widgets("ssa-noop").await;
    let api = widgets(&c);
    let params = PatchParams::apply("noop");
    let first = api.patch("n", &params, &Patch::Apply(widget("n", 3))).await.unwrap();
    let second = api.patch("n", &params, &Patch::Apply(widget("n", 3))).await.unwrap();
    assert_eq!(first.resource_version(), second.resource_version());
}

#[tokio::test]
async fn apply_merges_map_lists_by_key_in_status() {
    let c = cluster_with_widgets("ssa-conditions").await;
    let api = widgets(&c);
    api.create(&PostParams::default(), &widget("cond", 1)).await.unwrap();
    let condition = |manager: &str, type_: &str, status: &str| {
        let body = json!({"apiVersion": "conformance.certpilot.dev/v1", "kind": "Widget", "metadata": {"name": "cond"},
            "status": {"conditions": [{"type": type_, "status": status}]}});
        (PatchParams::apply(manager), body)
    };
    let (p, b) = condition("ready-writer", "Ready", "False");
    api.patch_status("cond", &p, &Patch::Apply(&b)).await.unwrap();
    let (p, b) = condition("issuing-writer", "Issuing", "True");
    api.patch_status("cond", &p, &Patch::Apply(&b)).await.unwrap();
    let (p, b) = condition("ready-writer", "Ready", "True");
    let updated = api.patch_status("cond", &p, &Patch::Apply(&b)).await.unwrap();
    let conditions = updated.status.unwrap().conditions.unwrap();
    let summary: Vec<(String, String)> = conditions.iter().map(|c| (c.type_.clone(), c.status.clone())).collect();
    assert_eq!(summary, [("Ready".into(), "True".into()), ("Issuing".into(), "True".into())]);
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let c = cluster_with_widgets("status").await;
    let api = widgets(&c);
    let mut w = widget("st", 1);
    w.status = Some(WidgetStatus { phase: Some("Sneaky".into()), ..Default::default() });
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(created.status.is_none(), "status is ignored on create");
    let status_patch = json!({"status": {"phase": "Ready"}, "spec": {"size": 9}});
    let after_status = api.patch_status("st", &PatchParams::default(), &Patch::Merge(&status_patch)).await.unwrap();
    assert_eq!(after_status.status.unwrap().phase.as_deref(), Some("Ready"));
    assert_eq!(after_status.spec.size, 1, "spec is ignored on /status");
    let main_patch = json!({"status": {"phase": "Other"}, "spec": {"size": 2}});
    let after_main = api.patch("st", &PatchParams::default(), &Patch::Merge(&main_patch)).await.unwrap();
    assert_eq!(after_main.spec.size, 2);
    assert_eq!(after_main.status.unwrap().phase.as_deref(), Some("Ready"), "status is ignored on the main resource");
}

#[tokio::test]
async fn generation_changes_only_with_spec() {
    let c = cluster_with_widgets("generation").await;
    let api = widgets(&c);
    let created = api.create(&PostParams::default(), &widget("g", 1)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let labelled = api
        .patch("g", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let status =
        api.patch_status("g", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "x"}}))).await.unwrap();
    assert_eq!(status.metadata.generation, Some(1));
    let resized = api.patch("g", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 5}}))).await.unwrap();
    assert_eq!(resized.metadata.generation, Some(2));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let c = cluster_with_widgets("finalizers").await;
    let api = widgets(&c);
    let mut w = widget("f", 1);
    w.metadata.finalizers = Some(vec!["conformance.certpilot.dev/hold".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let add = json!({"metadata": {"finalizers": ["conformance.certpilot.dev/hold", "conformance.certpilot.dev/new"]}});
    let err = api_error(
        api.patch("f", &PatchParams::default(), &Patch::Merge(&add)).await,
        "adding a finalizer while deleting",
    );
    assert_eq!(err.code, 422);
    api.patch("f", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    eventually("widget to be gone", WAIT, || async { api.get_opt("f").await.unwrap().is_none().then_some(()) }).await;
}

#[tokio::test]
async fn delete_preconditions_are_checked() {
    let c = cluster("preconditions").await;
    let api = secrets(&c);
    api.create(&PostParams::default(), &secret("pre", &[])).await.unwrap();
    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let err = api_error(api.delete("pre", &wrong).await, "delete with wrong uid");
    assert_eq!(err.code, 409);
    assert!(api.get_opt("pre").await.unwrap().is_some());
}

fn owned_config_map(name: &str, owner: &Widget) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    cm
}

#[tokio::test]
async fn owner_deletion_collects_dependents() {
    let c = cluster_with_widgets("gc").await;
    let api = widgets(&c);
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), c.namespace());
    let owner = api.create(&PostParams::default(), &widget("owner", 1)).await.unwrap();
    cms.create(&PostParams::default(), &owned_config_map("dependent", &owner)).await.unwrap();
    api.delete("owner", &DeleteParams::background()).await.unwrap();
    eventually("dependent to be collected", WAIT, || async {
        cms.get_opt("dependent").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents() {
    let c = cluster_with_widgets("gc-orphan").await;
    let api = widgets(&c);
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), c.namespace());
    let owner = api.create(&PostParams::default(), &widget("owner", 1)).await.unwrap();
    cms.create(&PostParams::default(), &owned_config_map("kept", &owner)).await.unwrap();
    api.delete("owner", &DeleteParams::orphan()).await.unwrap();
    eventually("owner to be gone", WAIT, || async { api.get_opt("owner").await.unwrap().is_none().then_some(()) })
        .await;
    let kept = eventually("orphaned dependent without owner reference", WAIT, || async {
        cms.get_opt("kept").await.unwrap().filter(|cm| cm.owner_references().is_empty())
    })
    .await;
    assert_eq!(kept.name_any(), "kept");
}

#[tokio::test]
async fn schema_validation_prunes_defaults_and_rejects() {
    let c = cluster_with_widgets("schema").await;
    let api = raw_widgets(&c);
    let doc = |spec: serde_json::Value, name: &str| {
        serde_json::from_value::<kube::api::DynamicObject>(json!({"apiVersion": "conformance.certpilot.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let created = api.create(&PostParams::default(), &doc(json!({"size": 3, "unknown": "x"}), "ok")).await.unwrap();
    assert!(created.data["spec"].get("unknown").is_none(), "unknown fields are pruned");
    assert_eq!(created.data["spec"]["mode"], "safe", "defaults are applied");
    for (spec, field) in [
        (json!({"size": "three"}), "spec.size"),
        (json!({"mode": "fast"}), "spec.size"),
        (json!({"size": 2, "mode": "slow"}), "spec.mode"),
        (json!({"size": 0}), "spec.size"),
    ] {
        let err = api_error(
            api.create(&PostParams::default(), &doc(spec.clone(), "bad")).await,
            &format!("invalid spec {spec}"),
        );
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{spec}");
        assert!(err.message.contains(field), "{spec}: {}", err.message);
    }
}

#[tokio::test]
async fn cel_rules_reject_with_their_message() {
    let c = cluster_with_widgets("cel").await;
    let api = widgets(&c);
    let err = api_error(api.create(&PostParams::default(), &widget("big", 11)).await, "CEL rule");
    assert_eq!(err.code, 422);
    assert!(err.message.contains("size must be at most 10"), "{}", err.message);
    let mut w = widget("owned", 1);
    w.spec.owner = Some("team-a".into());
    api.create(&PostParams::default(), &w).await.unwrap();
    let change = json!({"spec": {"owner": "team-b"}});
    let err = api_error(api.patch("owned", &PatchParams::default(), &Patch::Merge(&change)).await, "transition rule");
    assert_eq!(err.code, 422);
    assert!(err.message.contains("owner is immutable"), "{}", err.message);
    api.patch("owned", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
}

/// A CRD for one test: `group`, a kind and plural of a name unique to this run, `schema`.
fn scratch_crd(prefix: &str, group: &str, schema: serde_json::Value) -> CustomResourceDefinition {
    let plural = unique_name(prefix).replace('-', "");
    let kind = format!("{}{}", plural[..1].to_uppercase(), &plural[1..]);
    serde_json::from_value(json!({
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural, "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]}
    }))
    .unwrap()
}

/// The lowercase rule of an Issuer's `solvers[].selector.dnsNames` (a regex over each name).
const DNS_NAMES_RULE: &str =
    r"self.all(n, n.matches('^(\\*\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))";

/// An Issuer's `spec.acme.solvers[].selector.dnsNames`: 50 solvers of `names` names each.
fn selector_schema(names: u64) -> serde_json::Value {
    let dns_names = json!({"type": "array", "maxItems": names, "items": {"type": "string", "maxLength": 253},
        "x-kubernetes-validations": [{"rule": DNS_NAMES_RULE, "message": "selector.dnsNames must be lowercase DNS names"}]});
    let solvers = json!({"type": "array", "maxItems": 50, "items": {"type": "object",
        "properties": {"selector": {"type": "object", "properties": {"dnsNames": dns_names}}}}});
    let acme = json!({"type": "object", "properties": {"solvers": solvers}});
    json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"acme": acme}}}})
}

/// The API server estimates what a CRD's CEL rules may cost and refuses a rule that may cost
/// more than 10,000,000: 50 solvers × 100 names × a regex over 253 characters is 1.07 times
/// that (certpilot's Issuer CRDs were refused for it); 50 names fit. So is an update.
#[tokio::test]
async fn crd_rules_over_the_cel_cost_budget_are_refused() {
    let c = cluster("cel-cost").await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.client());
    let over = scratch_crd("cost", "conformance.certpilot.dev", selector_schema(100));
    let name = over.metadata.name.clone().unwrap();
    let expected = format!(
        "CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: spec.validation.openAPIV3Schema.properties[spec].properties[acme].properties[solvers].items.properties[selector].properties[dnsNames].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of 1.073010x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    );
    let err = api_error(crds.create(&PostParams::default(), &over).await, "a CRD over the CEL cost budget");
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}", err.message);
    assert_eq!(err.message, expected);
    let mut fits = over.clone();
    fits.spec.versions[0].schema =
        Some(serde_json::from_value(json!({"openAPIV3Schema": selector_schema(50)})).unwrap());
    c.install_crd(&fits).await.expect("50 names a solver fit the budget");
    let apply = PatchParams::apply("conformance-cel-cost").force();
    let err = api_error(crds.patch(&name, &apply, &Patch::Apply(&over)).await, "an update over the budget");
    assert_eq!((err.code, err.message.as_str()), (422, expected.as_str()));
    crds.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// A CRD of a group the Kubernetes project owns (`*.k8s.io`, `*.kubernetes.io`) needs the URL of
/// its API review in `api-approved.kubernetes.io` (or a reason starting with `unapproved`), as
/// the Gateway API's CRDs carry it.
#[tokio::test]
async fn crds_of_protected_groups_need_api_approval() {
    let c = cluster("api-approval").await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.client());
    let mut crd = scratch_crd("approval", "conformance.certpilot.k8s.io", json!({"type": "object"}));
    let name = crd.metadata.name.clone().unwrap();
    let see = "see https://github.com/kubernetes/enhancements/pull/1111";
    let required = format!(
        "CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", {see}"
    );
    let err = api_error(crds.create(&PostParams::default(), &crd).await, "a protected group's CRD without approval");
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}", err.message);
    assert_eq!(err.message, required);
    let approve = |crd: &mut CustomResourceDefinition, value: &str| {
        crd.metadata.annotations =
            Some(BTreeMap::from([("api-approved.kubernetes.io".to_string(), value.to_string())]));
    };
    approve(&mut crd, "not a URL");
    let err = api_error(crds.create(&PostParams::default(), &crd).await, "an approval that is not a URL");
    assert_eq!(
        err.message,
        format!(
            "CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: metadata.annotations[api-approved.kubernetes.io]: Invalid value: \"not a URL\": protected groups must have approval annotation \"api-approved.kubernetes.io\" with either a URL or a reason starting with \"unapproved\", {see}"
        )
    );
    approve(&mut crd, "https://github.com/kubernetes-sigs/gateway-api/pull/3328");
    crds.create(&PostParams::default(), &crd).await.expect("an approved CRD");
    // Taking the approval away is refused as its absence was.
    let unapprove = Patch::Merge(json!({"metadata": {"annotations": null}}));
    let err = api_error(crds.patch(&name, &PatchParams::default(), &unapprove).await, "removing the approval");
    assert_eq!(err.message, required);
    crds.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn namespace_deletion_removes_its_content() {
    let c = cluster("ns-delete").await;
    let namespaces: Api<Namespace> = Api::all(c.client());
    let name = format!("{}-inner", c.namespace());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let inner: Api<Secret> = Api::namespaced(c.client(), &name);
    // A finalizer on its content holds the namespace in Terminating until the test lets it go.
    let mut held = secret("inside", &[]);
    held.metadata.finalizers = Some(vec!["certpilot.dev/test-hold".into()]);
    inner.create(&PostParams::default(), &held).await.unwrap();
    namespaces.delete(&name, &DeleteParams::default()).await.unwrap();
    let phase = namespaces.get(&name).await.unwrap().status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Terminating"));
    let err =
        api_error(inner.create(&PostParams::default(), &secret("late", &[])).await, "create in terminating namespace");
    assert!(matches!(err.code, 403 | 404), "{err:?}");
    eventually("the content to be marked for deletion", Duration::from_secs(60), || async {
        inner.get("inside").await.unwrap().metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    inner.patch("inside", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    eventually("namespace to be gone", Duration::from_secs(120), || async {
        namespaces.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn foreground_deletion_removes_dependents_first() {
    let c = cluster_with_widgets("gc-foreground").await;
    let api = widgets(&c);
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), c.namespace());
    let owner = api.create(&PostParams::default(), &widget("owner", 1)).await.unwrap();
    cms.create(&PostParams::default(), &owned_config_map("first", &owner)).await.unwrap();
    api.delete("owner", &DeleteParams::foreground()).await.unwrap();
    eventually("dependent and then owner to be gone", WAIT, || async {
        let dependent_gone = cms.get_opt("first").await.unwrap().is_none();
        let owner_gone = api.get_opt("owner").await.unwrap().is_none();
        // The owner never disappears before its dependent.
        assert!(!owner_gone || dependent_gone, "owner deleted before its dependent");
        (dependent_gone && owner_gone).then_some(())
    })
    .await;
}

#[tokio::test]
async fn core_kinds_round_trip() {
    use k8s_openapi::api::{
        coordination::v1::Lease,
        core::v1::{Event, Service},
        events::v1::Event as EventV1,
        networking::v1::Ingress,
    };
    let c = cluster("core-kinds").await;
    let pp = PostParams::default();
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "lock"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
    )
    .unwrap();
    let leases: Api<Lease> = Api::namespaced(c.client(), c.namespace());
    leases.create(&pp, &lease).await.unwrap();
    let taken = json!({"spec": {"holderIdentity": "b"}});
    let updated = leases.patch("lock", &PatchParams::default(), &Patch::Strategic(&taken)).await.unwrap();
    assert_eq!(updated.spec.unwrap().holder_identity.as_deref(), Some("b"));
    let service: Service = serde_json::from_value(
        json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}),
    )
    .unwrap();
    let services: Api<Service> = Api::namespaced(c.client(), c.namespace());
    assert_eq!(services.create(&pp, &service).await.unwrap().spec.unwrap().ports.unwrap()[0].port, 80);
    let ingress: Ingress =
        serde_json::from_value(json!({"metadata": {"name": "ing"}, "spec": {"rules": [{"host": "a.example.com"}]}}))
            .unwrap();
    let ingresses: Api<Ingress> = Api::namespaced(c.client(), c.namespace());
    assert_eq!(
        ingresses.create(&pp, &ingress).await.unwrap().spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some("a.example.com")
    );
    let event: Event = serde_json::from_value(json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Secret", "name": "x", "namespace": c.namespace()}, "reason": "Test", "message": "hello", "type": "Normal"})).unwrap();
    Api::<Event>::namespaced(c.client(), c.namespace()).create(&pp, &event).await.unwrap();
    let event_v1: EventV1 = serde_json::from_value(json!({"metadata": {"name": "e2"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "certpilot.dev/test", "reportingInstance": "test", "action": "Test", "reason": "Test", "type": "Normal", "note": "hello", "regarding": {"kind": "Secret", "name": "x", "namespace": c.namespace()}})).unwrap();
    let events: Api<EventV1> = Api::namespaced(c.client(), c.namespace());
    events.create(&pp, &event_v1).await.unwrap();
    assert_eq!(events.get("e2").await.unwrap().note.as_deref(), Some("hello"));
}

/// Events are validated by how they were written. A new-style Event (`events.k8s.io/v1`, with
/// an `eventTime`) may be about an object of another namespace (a controller reporting on what it
/// manages elsewhere), though not about none outside `default`, and is typed `Normal` or
/// `Warning`; an old-style `core/v1` Event (no `eventTime`) must be about an object of its own
/// namespace.
#[tokio::test]
async fn events_are_validated_as_the_api_server_does() {
    use k8s_openapi::api::{core::v1::Event as CoreEvent, events::v1::Event};
    let c = cluster("events").await;
    let events: Api<Event> = Api::namespaced(c.client(), c.namespace());
    let pp = PostParams::default();
    let event = |name: &str, extra: serde_json::Value| -> Event {
        let mut doc = json!({"metadata": {"name": name}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "certpilot.dev/test", "reportingInstance": "test", "action": "Test", "reason": "Test", "type": "Normal", "note": "hello"});
        doc.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(doc).unwrap()
    };
    let refusal = |err: kube::core::Status| {
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}", err.message);
        err.message
    };
    let err = api_error(events.create(&pp, &event("unregarding", json!({}))).await, "an Event without regarding");
    assert_eq!(
        refusal(err),
        "Event \"unregarding\" is invalid: involvedObject.namespace: Invalid value: \"\": does not match event.namespace"
    );
    let elsewhere = json!({"regarding": {"kind": "Secret", "name": "x", "namespace": "another-namespace"}});
    let created = events.create(&pp, &event("elsewhere", elsewhere)).await.expect("an Event about another namespace");
    assert_eq!(created.regarding.and_then(|r| r.namespace).as_deref(), Some("another-namespace"));
    let here = json!({"regarding": {"kind": "Secret", "name": "x", "namespace": c.namespace()}});
    let unknown_type = json!({"type": "Loud", "regarding": here["regarding"].clone()});
    let err = api_error(events.create(&pp, &event("typeless", unknown_type)).await, "an Event of an unknown type");
    assert_eq!(refusal(err), "Event \"typeless\" is invalid: type: Invalid value: \"\": has invalid value: Loud");
    events.create(&pp, &event("fine", here)).await.expect("an Event about an object of its namespace");
    let core: Api<CoreEvent> = Api::namespaced(c.client(), c.namespace());
    let old_style: CoreEvent = serde_json::from_value(
        json!({"metadata": {"name": "old-style"}, "reason": "Test", "message": "hello", "type": "Normal",
        "involvedObject": {"kind": "Secret", "name": "x", "namespace": "another-namespace"}}),
    )
    .unwrap();
    let err = api_error(core.create(&pp, &old_style).await, "an old-style Event about another namespace");
    assert_eq!(
        refusal(err),
        "Event \"old-style\" is invalid: involvedObject.namespace: Invalid value: \"another-namespace\": does not match event.namespace"
    );
}

/// A 422 refusal of a Secret's metadata, as the API server words it.
fn assert_invalid_metadata(err: &kube::core::Status, name: &str, field: &str) {
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}", err.message);
    assert!(err.message.starts_with(&format!("Secret \"{name}\" is invalid: ")), "{}", err.message);
    assert!(err.message.contains(&format!("{field}: ")), "{}", err.message);
}

#[tokio::test]
async fn metadata_is_validated_on_create() {
    let c = cluster("metadata-create").await;
    let api = secrets(&c);
    let pp = PostParams::default();
    let long = "v".repeat(64);
    let err = api_error(api.create(&pp, &secret("long-value", &[("app", &long)])).await, "label value of 64 bytes");
    assert_invalid_metadata(&err, "long-value", "metadata.labels");
    assert!(err.message.contains("must be no more than 63"), "{}", err.message);
    let err = api_error(api.create(&pp, &secret("bad-value", &[("app", "a b")])).await, "label value with a space");
    assert_invalid_metadata(&err, "bad-value", "metadata.labels");
    let long_key = format!("example.com/{}", "k".repeat(64));
    for key in ["-starts-with-dash", "a/b/c", "Not_A_Domain/x", long_key.as_str()] {
        let err = api_error(api.create(&pp, &secret("bad-key", &[(key, "x")])).await, &format!("label key {key}"));
        assert_invalid_metadata(&err, "bad-key", "metadata.labels");
    }
    // Empty values and prefixed keys are fine.
    api.create(&pp, &secret("good-labels", &[("example.com/Name_1.x", ""), ("app", "web")])).await.unwrap();
    let mut annotated = secret("bad-annotation", &[]);
    annotated.metadata.annotations = Some(BTreeMap::from([("bad key".to_string(), "x".to_string())]));
    let err = api_error(api.create(&pp, &annotated).await, "annotation key with a space");
    assert_invalid_metadata(&err, "bad-annotation", "metadata.annotations");
    // Annotation keys are checked in lower case, so upper case is allowed even in the prefix.
    annotated.metadata.name = Some("upper-annotation".into());
    annotated.metadata.annotations = Some(BTreeMap::from([("Example.COM/Key".to_string(), "x".to_string())]));
    api.create(&pp, &annotated).await.unwrap();
    let err = api_error(api.create(&pp, &secret(&"n".repeat(254), &[])).await, "name of 254 characters");
    assert_invalid_metadata(&err, &"n".repeat(254), "metadata.name");
}

#[tokio::test]
async fn annotations_may_take_256_kib_in_total() {
    let c = cluster("metadata-size").await;
    let api = secrets(&c);
    let pp = PostParams::default();
    let limit = 256 * 1024;
    // Keys count too: "a" plus a value of limit - 1 bytes is exactly the limit.
    let mut at_limit = secret("at-limit", &[]);
    at_limit.metadata.annotations = Some(BTreeMap::from([("a".to_string(), "x".repeat(limit - 1))]));
    api.create(&pp, &at_limit).await.unwrap();
    let mut over = secret("over-limit", &[]);
    over.metadata.annotations =
        Some(BTreeMap::from([("a".to_string(), "x".repeat(limit / 2)), ("b".to_string(), "x".repeat(limit / 2))]));
    let err = api_error(api.create(&pp, &over).await, "annotations over 256 KiB");
    assert_invalid_metadata(&err, "over-limit", "metadata.annotations");
    assert!(err.message.contains("Too long"), "{}", err.message);
}

#[tokio::test]
async fn metadata_is_validated_on_update_patch_and_apply() {
    let c = cluster("metadata-update").await;
    let api = secrets(&c);
    let created = api.create(&PostParams::default(), &secret("m", &[("app", "web")])).await.unwrap();
    let mut replaced = created.clone();
    replaced.metadata.labels = Some(BTreeMap::from([("app".to_string(), "v".repeat(64))]));
    let err = api_error(api.replace("m", &PostParams::default(), &replaced).await, "update with a long label");
    assert_invalid_metadata(&err, "m", "metadata.labels");
    let merge = json!({"metadata": {"labels": {"bad key": "x"}}});
    let err = api_error(api.patch("m", &PatchParams::default(), &Patch::Merge(&merge)).await, "merge patch");
    assert_invalid_metadata(&err, "m", "metadata.labels");
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/annotations", "value": {"-x": "1"}}])).unwrap();
    let err = api_error(api.patch("m", &PatchParams::default(), &Patch::<()>::Json(ops)).await, "JSON patch");
    assert_invalid_metadata(&err, "m", "metadata.annotations");
    let applied = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "m", "labels": {"tier": "a b"}}});
    let params = PatchParams::apply("conformance-metadata").force();
    let err = api_error(api.patch("m", &params, &Patch::Apply(&applied)).await, "server-side apply");
    assert_invalid_metadata(&err, "m", "metadata.labels");
    let stored = api.get("m").await.unwrap();
    assert_eq!(stored.resource_version(), created.resource_version(), "nothing was written");
    assert_eq!(stored.labels(), created.labels());
}

#[tokio::test]
async fn namespaces_are_labelled_with_their_name() {
    let c = cluster("ns-label").await;
    let namespaces: Api<Namespace> = Api::all(c.client());
    let ns = namespaces.get(c.namespace()).await.unwrap();
    assert_eq!(ns.labels().get("kubernetes.io/metadata.name").map(String::as_str), Some(c.namespace()));
    // The label cannot be changed: the server sets it again on every write.
    let relabel = json!({"metadata": {"labels": {"kubernetes.io/metadata.name": "other", "extra": "1"}}});
    let patched = namespaces.patch(c.namespace(), &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    assert_eq!(patched.labels().get("kubernetes.io/metadata.name").map(String::as_str), Some(c.namespace()));
    assert_eq!(patched.labels().get("extra").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn stale_merge_patches_conflict_on_the_resource_and_its_status() {
    let c = cluster_with_widgets("stale-merge").await;
    let api = widgets(&c);
    let first = api.create(&PostParams::default(), &widget("s", 1)).await.unwrap();
    let stale_rv = first.resource_version().unwrap();
    api.patch("s", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    let stale_spec = json!({"metadata": {"resourceVersion": stale_rv}, "spec": {"size": 3}});
    let err = api_error(api.patch("s", &PatchParams::default(), &Patch::Merge(&stale_spec)).await, "stale merge patch");
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"), "{}", err.message);
    let stale_status = json!({"metadata": {"resourceVersion": stale_rv}, "status": {"phase": "Stale"}});
    let err = api_error(
        api.patch_status("s", &PatchParams::default(), &Patch::Merge(&stale_status)).await,
        "stale merge patch of the status",
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"), "{}", err.message);
    let current = api.get("s").await.unwrap();
    assert_eq!(current.spec.size, 2);
    assert!(current.status.is_none());
    let fresh = json!({"metadata": {"resourceVersion": current.resource_version()}, "status": {"phase": "Fresh"}});
    let updated = api.patch_status("s", &PatchParams::default(), &Patch::Merge(&fresh)).await.unwrap();
    assert_eq!(updated.status.unwrap().phase.as_deref(), Some("Fresh"));
}

#[tokio::test]
async fn stale_applies_of_the_status_conflict() {
    let c = cluster_with_widgets("stale-apply").await;
    let api = widgets(&c);
    let first = api.create(&PostParams::default(), &widget("a", 1)).await.unwrap();
    let stale_rv = first.resource_version().unwrap();
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    let applied = |rv: String, phase: &str| {
        json!({"apiVersion": "conformance.certpilot.dev/v1", "kind": "Widget",
            "metadata": {"name": "a", "resourceVersion": rv}, "status": {"phase": phase}})
    };
    let params = PatchParams::apply("conformance");
    let err = api_error(
        api.patch_status("a", &params, &Patch::Apply(applied(stale_rv, "Stale"))).await,
        "apply of the status with a stale resourceVersion",
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"), "{}", err.message);
    assert!(api.get("a").await.unwrap().status.is_none());
    let current = api.get("a").await.unwrap().resource_version().unwrap();
    let updated = api.patch_status("a", &params, &Patch::Apply(applied(current, "Fresh"))).await.unwrap();
    assert_eq!(updated.status.unwrap().phase.as_deref(), Some("Fresh"));
}

#[tokio::test]
async fn create_records_its_field_manager() {
    let c = cluster("create-manager").await;
    let params = PostParams { field_manager: Some("x".into()), ..Default::default() };
    let created = secrets(&c).create(&params, &secret("managed", &[("a", "1")])).await.unwrap();
    let entries = created.metadata.managed_fields.unwrap_or_default();
    let entry = entries.iter().find(|m| m.manager.as_deref() == Some("x")).expect("an entry for manager x");
    assert_eq!(entry.operation.as_deref(), Some("Update"));
    assert_eq!(entry.api_version.as_deref(), Some("v1"));
    assert!(entry.fields_v1.is_some());
}

#[tokio::test]
async fn finalizers_hold_dependents_the_collector_deletes() {
    let c = cluster_with_widgets("gc-finalizer").await;
    let api = widgets(&c);
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), c.namespace());
    let owner = api.create(&PostParams::default(), &widget("owner", 1)).await.unwrap();
    let mut held = owned_config_map("held", &owner);
    held.metadata.finalizers = Some(vec!["conformance.certpilot.dev/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    api.delete("owner", &DeleteParams::background()).await.unwrap();
    let terminating = eventually("the dependent to be deleting", WAIT, || async {
        cms.get_opt("held").await.unwrap().filter(|cm| cm.metadata.deletion_timestamp.is_some())
    })
    .await;
    assert_eq!(terminating.finalizers(), ["conformance.certpilot.dev/hold"]);
    assert!(api.get_opt("owner").await.unwrap().is_none(), "the owner went at once");
    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    eventually("the dependent to be gone", WAIT, || async {
        cms.get_opt("held").await.unwrap().is_none().then_some(())
    })
    .await;
}

fn admission_policy(name: &str, spec: serde_json::Value) -> ValidatingAdmissionPolicy {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

#[tokio::test]
async fn admission_policies_are_validated_and_defaulted() {
    let c = cluster("vap-validation").await;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(c.client());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(c.client());
    let name = unique_name("vap-validation");
    let rules = json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]});
    let pp = PostParams::default();
    let bad_expression = admission_policy(
        &name,
        json!({"matchConstraints": rules, "validations": [{"expression": "object.metadata.name =="}]}),
    );
    let err = api_error(policies.create(&pp, &bad_expression).await, "expression that does not compile");
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}", err.message);
    assert!(err.message.contains("spec.validations[0].expression"), "{}", err.message);
    assert!(err.message.contains("compilation failed"), "{}", err.message);
    let unmatched = admission_policy(&name, json!({"validations": [{"expression": "true"}]}));
    let err = api_error(policies.create(&pp, &unmatched).await, "policy without matchConstraints");
    assert_eq!(err.code, 422);
    assert!(err.message.contains("spec.matchConstraints"), "{}", err.message);
    let binding: ValidatingAdmissionPolicyBinding =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"policyName": name}})).unwrap();
    let err = api_error(bindings.create(&pp, &binding).await, "binding without validationActions");
    assert_eq!(err.code, 422);
    assert!(err.message.contains("spec.validationActions"), "{}", err.message);
    let valid = admission_policy(&name, json!({"matchConstraints": rules, "validations": [{"expression": "true"}]}));
    let created = policies.create(&pp, &valid).await.unwrap();
    policies.delete(&name, &DeleteParams::default()).await.unwrap();
    let spec = created.spec.unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let constraints = spec.match_constraints.unwrap();
    assert_eq!(constraints.match_policy.as_deref(), Some("Equivalent"));
    assert_eq!(constraints.resource_rules.unwrap()[0].scope.as_deref(), Some("*"));
    assert_eq!(created.metadata.generation, Some(1));
}

#[tokio::test]
async fn admission_policies_deny_with_their_message() {
    let c = cluster("vap-deny").await;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(c.client());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(c.client());
    let name = unique_name("vap-deny");
    let policy = admission_policy(
        &name,
        json!({
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]},
            "validations": [{
                "expression": "!has(object.data) || !('forbidden' in object.data)",
                "messageExpression": "'no forbidden key in ' + object.metadata.name",
            }],
        }),
    );
    policies.create(&PostParams::default(), &policy).await.unwrap();
    // Bound to this test's namespace only, so that it cannot disturb other tests.
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": c.namespace()}}}},
    }))
    .unwrap();
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), c.namespace());
    let forbidden: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cm"}, "data": {"forbidden": "x"}})).unwrap();
    // Policies take effect asynchronously on a real cluster: retry until the create is refused.
    let err = eventually("the policy to deny", WAIT, || async {
        match cms.create(&PostParams::default(), &forbidden).await {
            Ok(_) => {
                cms.delete("cm", &DeleteParams::default()).await.unwrap();
                None
            }
            Err(kube::Error::Api(status)) => Some(*status),
            Err(other) => panic!("unexpected error {other}"),
        }
    })
    .await;
    let _ = bindings.delete(&name, &DeleteParams::default()).await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
    // Without a reason, a denial is 422 Invalid, worded as a "forbidden" of the resource.
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}", err.message);
    assert_eq!(
        err.message,
        format!(
            "configmaps \"cm\" is forbidden: ValidatingAdmissionPolicy '{name}' with binding '{name}' denied request: no forbidden key in cm"
        )
    );
    let allowed: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "ok"}, "data": {"fine": "x"}})).unwrap();
    cms.create(&PostParams::default(), &allowed).await.unwrap();
}

/// ServiceAccount tokens (TokenRequest), bearer-token authentication and RBAC authorization,
/// as certpilot meets them when it runs with its ServiceAccount's token. Each test's
/// ServiceAccount lives in the test's namespace; cluster-scoped RBAC objects get unique names
/// and are deleted at the end.
mod service_accounts_and_rbac {
    use super::*;
    use certpilot_test_apiserver::cluster::TokenKubeconfig;
    use k8s_openapi::api::{
        authentication::v1::{SelfSubjectReview, TokenRequest},
        core::v1::{Event as CoreEvent, ServiceAccount},
        events::v1::Event,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    };
    use kube::{Client, config::Kubeconfig};
    use std::future::Future;

    const BOT: &str = "bot";
    const RBAC: &str = "rbac.authorization.k8s.io";

    /// The ServiceAccount `bot` in the test's namespace, created, and a kubeconfig holding a
    /// token minted for it.
    async fn bot(c: &TestCluster) -> (TokenKubeconfig, Client) {
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": BOT}})).unwrap();
        Api::<ServiceAccount>::namespaced(c.client(), c.namespace())
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
        let access = c.service_account_access(c.namespace(), BOT).await.unwrap();
        let client = access.client().await.unwrap();
        (access, client)
    }

    fn username(c: &TestCluster) -> String {
        format!("system:serviceaccount:{}:{BOT}", c.namespace())
    }

    /// The `403` of a request RBAC refuses, with the API server's exact message.
    fn assert_forbidden<T: std::fmt::Debug>(result: kube::Result<T>, message: &str) {
        let status = api_error(result, message);
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"), "{}", status.message);
        assert_eq!(status.message, message);
    }

    /// `User "<bot>" cannot <verb> resource "<resource>" in API group "<group>" <scope>`.
    fn cannot(c: &TestCluster, verb: &str, resource: &str, group: &str, namespace: Option<&str>) -> String {
        let scope = namespace.map_or("at the cluster scope".to_string(), |ns| format!("in the namespace \"{ns}\""));
        format!("User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}", username(c))
    }

    /// Sends `request` until it succeeds: RBAC reaches a real API server's authorizer
    /// asynchronously.
    async fn once_allowed<T, F, Fut>(what: &str, mut request: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = kube::Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match request().await {
                Ok(value) => return value,
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "{what} was never allowed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A Role (or, with `namespace` None, a ClusterRole) named `name` with `rules`.
    async fn role(c: &TestCluster, namespace: Option<&str>, name: &str, rules: serde_json::Value) {
        let pp = PostParams::default();
        let body = json!({"metadata": {"name": name}, "rules": rules});
        match namespace {
            Some(ns) => {
                let role: Role = serde_json::from_value(body).unwrap();
                Api::<Role>::namespaced(c.client(), ns).create(&pp, &role).await.unwrap();
            }
            None => {
                let role: ClusterRole = serde_json::from_value(body).unwrap();
                Api::<ClusterRole>::all(c.client()).create(&pp, &role).await.unwrap();
            }
        }
    }

    /// Binds `role_kind` `role` to the bot: a RoleBinding in `namespace`, or a ClusterRoleBinding.
    async fn bind_bot(c: &TestCluster, namespace: Option<&str>, name: &str, role_kind: &str, role: &str) {
        let pp = PostParams::default();
        let body = json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": BOT, "namespace": c.namespace()}],
        });
        match namespace {
            Some(ns) => {
                let binding: RoleBinding = serde_json::from_value(body).unwrap();
                Api::<RoleBinding>::namespaced(c.client(), ns).create(&pp, &binding).await.unwrap();
            }
            None => {
                let binding: ClusterRoleBinding = serde_json::from_value(body).unwrap();
                Api::<ClusterRoleBinding>::all(c.client()).create(&pp, &binding).await.unwrap();
            }
        }
    }

    async fn delete_cluster_rbac(c: &TestCluster, name: &str) {
        let dp = DeleteParams::default();
        let _ = Api::<ClusterRoleBinding>::all(c.client()).delete(name, &dp).await;
        let _ = Api::<ClusterRole>::all(c.client()).delete(name, &dp).await;
    }

    fn seconds_until(time: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
        time.as_ref().expect("an expiration timestamp").0.as_second() - jiff::Timestamp::now().as_second()
    }

    #[tokio::test]
    async fn a_service_account_token_authenticates_as_it() {
        let c = cluster("sa-token").await;
        let (_access, bot_client) = bot(&c).await;
        let review = Api::<SelfSubjectReview>::all(bot_client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .unwrap();
        let user = review.status.unwrap().user_info.unwrap();
        let account = Api::<ServiceAccount>::namespaced(c.client(), c.namespace()).get(BOT).await.unwrap();
        assert_eq!(user.username.as_deref(), Some(username(&c).as_str()));
        assert_eq!(user.uid, account.metadata.uid);
        let groups = [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{}", c.namespace()),
            "system:authenticated".to_string(),
        ];
        assert_eq!(user.groups.unwrap(), groups);
        // Discovery is every authenticated user's.
        assert!(bot_client.list_api_groups().await.unwrap().groups.iter().any(|g| g.name == "apiextensions.k8s.io"));
        bot_client.apiserver_version().await.unwrap();

        // An hour unless asked otherwise; ten minutes at least.
        let hour = c.mint_token(c.namespace(), BOT, None).await.unwrap().status.unwrap();
        assert!((3540..=3600).contains(&seconds_until(&hour.expiration_timestamp)), "{:?}", hour.expiration_timestamp);
        let short = c.mint_token(c.namespace(), BOT, Some(700)).await.unwrap().status.unwrap();
        assert!((640..=700).contains(&seconds_until(&short.expiration_timestamp)), "{:?}", short.expiration_timestamp);
        let err = api_error(
            c.mint_token(c.namespace(), BOT, Some(60)).await.map_err(|e| e.downcast::<kube::Error>().unwrap()),
            "a minute's token",
        );
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        );
        let missing = c.mint_token(c.namespace(), "nobody", None).await.unwrap_err().downcast::<kube::Error>().unwrap();
        let err = api_error::<()>(Err(missing), "a token for a missing ServiceAccount");
        assert_eq!((err.code, err.message.as_str()), (404, "serviceaccounts \"nobody\" not found"));

        // Deleting the ServiceAccount invalidates its tokens (a real API server may take a few
        // seconds: it caches authenticated tokens).
        Api::<ServiceAccount>::namespaced(c.client(), c.namespace())
            .delete(BOT, &DeleteParams::default())
            .await
            .unwrap();
        let reviews = Api::<SelfSubjectReview>::all(bot_client);
        let status = eventually("the deleted ServiceAccount's token to be refused", WAIT, || async {
            match reviews.create(&PostParams::default(), &SelfSubjectReview::default()).await {
                Err(kube::Error::Api(status)) => Some(*status),
                _ => None,
            }
        })
        .await;
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (401, "Unauthorized", "Unauthorized")
        );
    }

    #[tokio::test]
    async fn unknown_tokens_and_tokens_for_other_audiences_are_unauthorized() {
        let c = cluster("sa-bogus").await;
        let (_access, _) = bot(&c).await;
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": ["https://vault.example.com"]}})).unwrap();
        let elsewhere = Api::<ServiceAccount>::namespaced(c.client(), c.namespace())
            .create_token_request(BOT, &PostParams::default(), &request)
            .await
            .unwrap();
        assert_eq!(elsewhere.spec.unwrap().audiences.unwrap(), ["https://vault.example.com"]);
        let vault_token = elsewhere.status.unwrap().token.unwrap();
        for token in ["not-a-token", vault_token.as_str()] {
            let client = c.token_kubeconfig(token, c.namespace()).unwrap().client().await.unwrap();
            let api: Api<Secret> = Api::namespaced(client.clone(), c.namespace());
            let err = api_error(api.list(&ListParams::default()).await, "a list with a bogus token");
            assert_eq!((err.code, err.reason.as_str(), err.message.as_str()), (401, "Unauthorized", "Unauthorized"));
            assert!(client.apiserver_version().await.is_err(), "even discovery needs a valid token");
        }
    }

    #[tokio::test]
    async fn without_rbac_a_service_account_is_refused() {
        let c = cluster("sa-no-rbac").await;
        let (_access, bot_client) = bot(&c).await;
        let ns = c.namespace();
        let here: Api<Secret> = Api::namespaced(bot_client.clone(), ns);
        let refused = cannot(&c, "list", "secrets", "", Some(ns));
        assert_forbidden(here.list(&ListParams::default()).await, &format!("secrets is forbidden: {refused}"));
        let refused = cannot(&c, "watch", "secrets", "", Some(ns));
        assert_forbidden(
            here.watch(&WatchParams::default(), "0").await.map(|_| ()),
            &format!("secrets is forbidden: {refused}"),
        );
        let refused = cannot(&c, "get", "secrets", "", Some(ns));
        assert_forbidden(here.get("absent").await, &format!("secrets \"absent\" is forbidden: {refused}"));
        let refused = cannot(&c, "create", "secrets", "", Some(ns));
        assert_forbidden(
            here.create(&PostParams::default(), &secret("s", &[])).await,
            &format!("secrets is forbidden: {refused}"),
        );
        let refused = cannot(&c, "deletecollection", "secrets", "", Some(ns));
        assert_forbidden(
            here.delete_collection(&DeleteParams::default(), &ListParams::default()).await,
            &format!("secrets is forbidden: {refused}"),
        );
        let everywhere: Api<Secret> = Api::all(bot_client.clone());
        let refused = cannot(&c, "list", "secrets", "", None);
        assert_forbidden(everywhere.list(&ListParams::default()).await, &format!("secrets is forbidden: {refused}"));
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(bot_client.clone());
        let refused = cannot(&c, "get", "customresourcedefinitions", "apiextensions.k8s.io", None);
        assert_forbidden(
            crds.get("widgets.conformance.certpilot.dev").await,
            &format!(
                "customresourcedefinitions.apiextensions.k8s.io \"widgets.conformance.certpilot.dev\" is forbidden: {refused}"
            ),
        );
        // Nor may it mint tokens, its own included.
        let accounts: Api<ServiceAccount> = Api::namespaced(bot_client, ns);
        let refused = cannot(&c, "create", "serviceaccounts/token", "", Some(ns));
        assert_forbidden(
            accounts.create_token_request(BOT, &PostParams::default(), &TokenRequest::default()).await,
            &format!("serviceaccounts \"{BOT}\" is forbidden: {refused}"),
        );
    }

    #[tokio::test]
    async fn a_role_binding_grants_in_its_namespace_only() {
        let c = cluster("sa-role").await;
        let (_access, bot_client) = bot(&c).await;
        let ns = c.namespace();
        role(
            &c,
            Some(ns),
            "secret-reader",
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]),
        )
        .await;
        bind_bot(&c, Some(ns), "secret-reader", "Role", "secret-reader").await;
        let here: Api<Secret> = Api::namespaced(bot_client.clone(), ns);
        let lp = ListParams::default();
        once_allowed("listing Secrets in the Role's namespace", || here.list(&lp)).await;
        secrets(&c).create(&PostParams::default(), &secret("seen", &[])).await.unwrap();
        assert_eq!(here.get("seen").await.unwrap().metadata.name.as_deref(), Some("seen"));
        let refused = cannot(&c, "list", "secrets", "", Some("default"));
        let default: Api<Secret> = Api::namespaced(bot_client.clone(), "default");
        assert_forbidden(default.list(&ListParams::default()).await, &format!("secrets is forbidden: {refused}"));
        let refused = cannot(&c, "list", "secrets", "", None);
        let everywhere: Api<Secret> = Api::all(bot_client.clone());
        assert_forbidden(everywhere.list(&ListParams::default()).await, &format!("secrets is forbidden: {refused}"));
        // Watches are authorized like lists: this one sees a Secret created after it started.
        let version = collection_version(&secrets(&c)).await;
        let mut stream = here.watch(&WatchParams::default().timeout(10), &version).await.unwrap().boxed();
        secrets(&c).create(&PostParams::default(), &secret("later", &[])).await.unwrap();
        let added = stream.try_next().await.unwrap().expect("a watch event");
        assert!(matches!(added, WatchEvent::Added(ref s) if s.name_any() == "later"), "{}", describe(&added));
        let refused = cannot(&c, "delete", "secrets", "", Some(ns));
        assert_forbidden(
            here.delete("seen", &DeleteParams::default()).await,
            &format!("secrets \"seen\" is forbidden: {refused}"),
        );
    }

    #[tokio::test]
    async fn a_cluster_role_binding_grants_cluster_wide() {
        let c = cluster("sa-cluster-role").await;
        let (_access, bot_client) = bot(&c).await;
        let name = unique_name("certpilot-test-secret-lister");
        role(&c, None, &name, json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}])).await;
        bind_bot(&c, None, &name, "ClusterRole", &name).await;
        let everywhere: Api<Secret> = Api::all(bot_client.clone());
        let lp = ListParams::default();
        once_allowed("listing Secrets in every namespace", || everywhere.list(&lp)).await;
        Api::<Secret>::namespaced(bot_client.clone(), "default").list(&ListParams::default()).await.unwrap();
        let refused = cannot(&c, "get", "secrets", "", Some("default"));
        let default: Api<Secret> = Api::namespaced(bot_client, "default");
        let outcome = default.get("absent").await;
        delete_cluster_rbac(&c, &name).await;
        assert_forbidden(outcome, &format!("secrets \"absent\" is forbidden: {refused}"));
    }

    #[tokio::test]
    async fn a_role_binding_to_a_cluster_role_grants_in_its_namespace_only() {
        let c = cluster("sa-rb-clusterrole").await;
        let (_access, bot_client) = bot(&c).await;
        let ns = c.namespace();
        let name = unique_name("certpilot-test-configmap-editor");
        role(&c, None, &name, json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "create"]}]))
            .await;
        bind_bot(&c, Some(ns), "configmap-editor", "ClusterRole", &name).await;
        let here: Api<ConfigMap> = Api::namespaced(bot_client.clone(), ns);
        let lp = ListParams::default();
        once_allowed("listing ConfigMaps in the binding's namespace", || here.list(&lp)).await;
        let default = Api::<ConfigMap>::namespaced(bot_client.clone(), "default").list(&ListParams::default()).await;
        let everywhere = Api::<ConfigMap>::all(bot_client).list(&ListParams::default()).await;
        delete_cluster_rbac(&c, &name).await;
        let refused = cannot(&c, "list", "configmaps", "", Some("default"));
        assert_forbidden(default, &format!("configmaps is forbidden: {refused}"));
        let refused = cannot(&c, "list", "configmaps", "", None);
        assert_forbidden(everywhere, &format!("configmaps is forbidden: {refused}"));
    }

    /// A rule naming resources allows requests naming one of them: a get, or a list or watch
    /// selecting that name with a field selector, but never a plain list.
    #[tokio::test]
    async fn resource_names_restrict_to_the_named_objects() {
        let c = cluster("sa-resource-names").await;
        let (_access, bot_client) = bot(&c).await;
        let ns = c.namespace();
        for name in ["mine", "theirs"] {
            secrets(&c).create(&PostParams::default(), &secret(name, &[])).await.unwrap();
        }
        role(&c, Some(ns), "mine", json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mine"], "verbs": ["get", "list", "watch"]}])).await;
        bind_bot(&c, Some(ns), "mine", "Role", "mine").await;
        let here: Api<Secret> = Api::namespaced(bot_client, ns);
        once_allowed("getting the named Secret", || here.get("mine")).await;
        let refused = cannot(&c, "get", "secrets", "", Some(ns));
        assert_forbidden(here.get("theirs").await, &format!("secrets \"theirs\" is forbidden: {refused}"));
        let refused = cannot(&c, "list", "secrets", "", Some(ns));
        assert_forbidden(here.list(&ListParams::default()).await, &format!("secrets is forbidden: {refused}"));
        let only_mine = here.list(&ListParams::default().fields("metadata.name=mine")).await.unwrap();
        assert_eq!(only_mine.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(), ["mine"]);
        assert_forbidden(
            here.list(&ListParams::default().fields("metadata.name=theirs")).await,
            &format!("secrets \"theirs\" is forbidden: {refused}"),
        );
    }

    #[tokio::test]
    async fn the_status_subresource_needs_its_own_rule() {
        let c = cluster_with_widgets("sa-status").await;
        let (_access, bot_client) = bot(&c).await;
        let ns = c.namespace();
        widgets(&c).create(&PostParams::default(), &widget("w", 1)).await.unwrap();
        let group = "conformance.certpilot.dev";
        role(
            &c,
            Some(ns),
            "widget-writer",
            json!([{"apiGroups": [group], "resources": ["widgets"], "verbs": ["get", "patch"]}]),
        )
        .await;
        bind_bot(&c, Some(ns), "widget-writer", "Role", "widget-writer").await;
        let bots: Api<Widget> = Api::namespaced(bot_client, ns);
        let (pp, size) = (PatchParams::default(), Patch::Merge(json!({"spec": {"size": 2}})));
        once_allowed("patching a widget", || bots.patch("w", &pp, &size)).await;
        let phase = Patch::Merge(json!({"status": {"phase": "Ready"}}));
        let refused = cannot(&c, "patch", "widgets/status", group, Some(ns));
        assert_forbidden(
            bots.patch_status("w", &pp, &phase).await,
            &format!("widgets.{group} \"w\" is forbidden: {refused}"),
        );
        let with_status = json!({"rules": [{"apiGroups": [group], "resources": ["widgets", "widgets/status"], "verbs": ["get", "patch"]}]});
        Api::<Role>::namespaced(c.client(), ns).patch("widget-writer", &pp, &Patch::Merge(&with_status)).await.unwrap();
        let patched = once_allowed("patching a widget's status", || bots.patch_status("w", &pp, &phase)).await;
        assert_eq!(patched.status.unwrap().phase.as_deref(), Some("Ready"));
    }

    /// Server-side apply is a `patch`; one that creates its object needs `create` too.
    #[tokio::test]
    async fn server_side_apply_that_creates_needs_create() {
        let c = cluster("sa-apply").await;
        let (_access, bot_client) = bot(&c).await;
        let ns = c.namespace();
        role(
            &c,
            Some(ns),
            "applier",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}]),
        )
        .await;
        bind_bot(&c, Some(ns), "applier", "Role", "applier").await;
        let bots: Api<ConfigMap> = Api::namespaced(bot_client, ns);
        let applied =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}});
        let apply = PatchParams::apply("certpilot-test");
        let refused = cannot(&c, "create", "configmaps", "", Some(ns));
        // Until the Role reaches the authorizer the refusal is of the patch: wait for the create's.
        let message = format!("configmaps \"applied\" is forbidden: {refused}");
        let status = eventually("the apply to be refused its create", WAIT, || async {
            let status =
                api_error(bots.patch("applied", &apply, &Patch::Apply(&applied)).await, "an apply that creates");
            (status.message == message).then_some(status)
        })
        .await;
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        let configmaps: Api<ConfigMap> = Api::namespaced(c.client(), ns);
        configmaps
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "applied"}})).unwrap())
            .await
            .unwrap();
        let updated = bots.patch("applied", &apply, &Patch::Apply(&applied)).await.unwrap();
        assert_eq!(updated.data.unwrap()["a"], "1");
    }

    /// Events are authorized by their API group: certpilot's RBAC grants `events.k8s.io` only.
    #[tokio::test]
    async fn events_are_authorized_by_their_api_group() {
        let c = cluster("sa-events").await;
        let (_access, bot_client) = bot(&c).await;
        let ns = c.namespace();
        role(
            &c,
            Some(ns),
            "recorder",
            json!([{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]),
        )
        .await;
        bind_bot(&c, Some(ns), "recorder", "Role", "recorder").await;
        let event: Event = serde_json::from_value(json!({"metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "certpilot.dev/test", "reportingInstance": "test", "action": "Test", "reason": "Test", "type": "Normal", "note": "hello", "regarding": {"kind": "Secret", "name": "x", "namespace": ns}})).unwrap();
        let events: Api<Event> = Api::namespaced(bot_client.clone(), ns);
        let pp = PostParams::default();
        once_allowed("recording an events.k8s.io Event", || events.create(&pp, &event)).await;
        let core: CoreEvent = serde_json::from_value(json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Secret", "name": "x", "namespace": ns}, "reason": "Test", "message": "hello", "type": "Normal"})).unwrap();
        let refused = cannot(&c, "create", "events", "", Some(ns));
        let core_events: Api<CoreEvent> = Api::namespaced(bot_client.clone(), ns);
        assert_forbidden(
            core_events.create(&PostParams::default(), &core).await,
            &format!("events is forbidden: {refused}"),
        );
        let refused = cannot(&c, "list", "events", "events.k8s.io", Some(ns));
        assert_forbidden(
            events.list(&ListParams::default()).await,
            &format!("events.events.k8s.io is forbidden: {refused}"),
        );
    }

    /// Impersonation needs RBAC of its own: constrained impersonation's `impersonate-on:…` is
    /// asked first, so a ServiceAccount without any is refused in its words; the legacy
    /// `impersonate` verb on `users` is enough.
    #[tokio::test]
    async fn impersonating_needs_rbac() {
        let c = cluster("sa-impersonate").await;
        let (access, _) = bot(&c).await;
        let ns = c.namespace();
        let kubeconfig = Kubeconfig::read_from(access.path()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        config.auth_info.impersonate = Some("certpilot-test-someone".into());
        let as_someone = Client::try_from(config).unwrap();
        let refused = cannot(&c, "impersonate-on:user-info:list", "secrets", "", Some(ns));
        let secrets_as_someone: Api<Secret> = Api::namespaced(as_someone.clone(), ns);
        assert_forbidden(
            secrets_as_someone.list(&ListParams::default()).await,
            &format!("secrets is forbidden: {refused}"),
        );
        let name = unique_name("certpilot-test-impersonator");
        role(&c, None, &name, json!([{"apiGroups": [""], "resources": ["users"], "resourceNames": ["certpilot-test-someone"], "verbs": ["impersonate"]}])).await;
        bind_bot(&c, None, &name, "ClusterRole", &name).await;
        let reviews: Api<SelfSubjectReview> = Api::all(as_someone);
        let (pp, review) = (PostParams::default(), SelfSubjectReview::default());
        let review = once_allowed("impersonating someone", || reviews.create(&pp, &review)).await;
        delete_cluster_rbac(&c, &name).await;
        let user = review.status.unwrap().user_info.unwrap();
        assert_eq!(user.username.as_deref(), Some("certpilot-test-someone"));
        assert_eq!(user.groups.unwrap(), ["system:authenticated"]);
    }

    /// A ValidatingAdmissionPolicy sees the ServiceAccount a token authenticates: its name and
    /// groups in `request.userInfo`.
    #[tokio::test]
    async fn admission_policies_see_the_service_account() {
        let c = cluster("sa-vap").await;
        let (_access, bot_client) = bot(&c).await;
        let ns = c.namespace();
        let writer = "certpilot-test-writer";
        role(
            &c,
            Some(ns),
            "configmap-writer",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "delete"]}]),
        )
        .await;
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "configmap-writer"},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "configmap-writer"},
            "subjects": [{"kind": "ServiceAccount", "name": BOT, "namespace": ns}, {"apiGroup": RBAC, "kind": "User", "name": writer}],
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(c.client(), ns).create(&PostParams::default(), &binding).await.unwrap();
        let name = unique_name("certpilot-test-sa-only");
        let policy = admission_policy(
            &name,
            json!({
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]},
                "validations": [{
                    "expression": format!("request.userInfo.username == '{}' && 'system:serviceaccounts:{ns}' in request.userInfo.groups", username(&c)),
                    "messageExpression": "'not for ' + request.userInfo.username",
                    "reason": "Forbidden",
                }],
            }),
        );
        let policies: Api<ValidatingAdmissionPolicy> = Api::all(c.client());
        policies.create(&PostParams::default(), &policy).await.unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}},
        }))
        .unwrap();
        let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(c.client());
        bindings.create(&PostParams::default(), &binding).await.unwrap();
        let config_map = |n: &str| -> ConfigMap { serde_json::from_value(json!({"metadata": {"name": n}})).unwrap() };
        // Policies and RBAC reach a real API server asynchronously: wait for the policy's refusal.
        let writers: Api<ConfigMap> = Api::namespaced(c.impersonating_client(writer, &[]).unwrap(), ns);
        let denied_by_policy = format!("ValidatingAdmissionPolicy '{name}' with binding '{name}' denied request");
        let refusal = eventually("the policy to refuse another user", WAIT, || async {
            match writers.create(&PostParams::default(), &config_map("theirs")).await {
                Ok(_) => {
                    writers.delete("theirs", &DeleteParams::default()).await.unwrap();
                    None
                }
                Err(kube::Error::Api(status)) => status.message.contains(&denied_by_policy).then_some(*status),
                Err(other) => panic!("unexpected error {other}"),
            }
        })
        .await;
        let bots: Api<ConfigMap> = Api::namespaced(bot_client, ns);
        let created = bots.create(&PostParams::default(), &config_map("mine")).await;
        let _ = bindings.delete(&name, &DeleteParams::default()).await;
        let _ = policies.delete(&name, &DeleteParams::default()).await;
        assert_eq!(created.unwrap().metadata.name.as_deref(), Some("mine"));
        assert_eq!((refusal.code, refusal.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            refusal.message,
            format!("configmaps \"theirs\" is forbidden: {denied_by_policy}: not for {writer}")
        );
    }
}

/// `kubectl get` asks for a `Table`: the API server renders a custom resource's printer columns,
/// strings as they are and dates as ages, a time to come as `<invalid>` (why certpilot's
/// Expires and Renews columns are strings).
#[tokio::test]
async fn printer_columns_are_rendered_as_tables() {
    use certpilot::api::{Certificate, CertificateAttempt};
    let c = cluster("tables").await;
    install_certpilot_crds(&c).await;
    let pp = PostParams::default();
    let certificate: Certificate = serde_json::from_value(json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": "web"}, "spec": {"secretName": "web-tls", "dnsNames": ["web.example.com"], "issuerRef": {"name": "local"}}})).unwrap();
    let certificates: Api<Certificate> = Api::namespaced(c.client(), c.namespace());
    certificates.create(&pp, &certificate).await.unwrap();
    let status = json!({"status": {"phase": "Ready", "notAfter": "2099-01-01T00:00:00Z", "renewalTime": "2098-12-01T00:00:00Z", "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    certificates.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let attempt: CertificateAttempt = serde_json::from_value(json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "CertificateAttempt", "metadata": {"name": "web-1"}, "spec": {"certificateName": "web", "type": "Issue", "reason": "new", "secretName": "web-tls", "dnsNames": ["web.example.com"], "issuerRef": {"name": "local"}, "privateKey": {"algorithm": "ECDSA"}, "keyAlgorithm": "ECDSA-256", "certificateGeneration": 1}})).unwrap();
    let attempts: Api<CertificateAttempt> = Api::namespaced(c.client(), c.namespace());
    attempts.create(&pp, &attempt).await.unwrap();
    let started = json!({"status": {"phase": "Pending", "startedAt": "2099-01-01T00:00:00Z"}});
    attempts.patch_status("web-1", &PatchParams::default(), &Patch::Merge(&started)).await.unwrap();

    let table = |path: String| {
        let client = c.client();
        async move {
            let request = http::Request::get(path)
                .header(http::header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
                .body(Vec::new())
                .unwrap();
            client.request::<serde_json::Value>(request).await.expect("a Table")
        }
    };
    let listed = table(format!("/apis/certpilot.dev/v1alpha1/namespaces/{}/certificates", c.namespace())).await;
    assert_eq!(listed["kind"], "Table", "{listed}");
    let names: Vec<&str> =
        listed["columnDefinitions"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Name", "Ready", "Phase", "Secret", "Expires", "Renews", "Age"]);
    let cells = listed["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(
        cells[..6],
        [
            json!("web"),
            json!("True"),
            json!("Ready"),
            json!("web-tls"),
            json!("2099-01-01T00:00:00Z"),
            json!("2098-12-01T00:00:00Z")
        ]
    );
    let age = cells[6].as_str().unwrap();
    assert!(
        age.ends_with('s') && age[..age.len() - 1].parse::<u32>().is_ok(),
        "a fresh object's age in seconds: {age}"
    );
    assert_eq!(listed["rows"][0]["object"]["metadata"]["name"], "web");

    let one =
        table(format!("/apis/certpilot.dev/v1alpha1/namespaces/{}/certificateattempts/web-1", c.namespace())).await;
    let definitions = one["columnDefinitions"].as_array().unwrap();
    let started_at = definitions.iter().position(|d| d["name"] == "Started").expect("a Started column");
    assert_eq!(definitions[started_at]["type"], "date");
    assert_eq!(one["rows"][0]["cells"][started_at], "<invalid>", "a date to come is <invalid>: {one}");
    let finished_at = definitions.iter().position(|d| d["name"] == "Finished").unwrap();
    assert!(one["rows"][0]["cells"][finished_at].is_null(), "a missing value is null: {one}");
}

/// GETs `path` and decodes the JSON answer.
async fn get_json(c: &TestCluster, path: &str) -> serde_json::Value {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    c.client().request(request).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// What kubectl reads of `/openapi/v3`: `explain` renders a custom resource's schema from its
/// group-version document, and `apply` validates on the server when the kind's PATCH operation
/// takes `fieldValidation`.
#[tokio::test]
async fn openapi_v3_describes_custom_resources_as_kubectl_reads_them() {
    let c = cluster("openapi").await;
    install_certpilot_crds(&c).await;
    // The real server publishes a new CRD's document shortly after it is established.
    let url = eventually("certpilot.dev in the OpenAPI v3 index", WAIT, || async {
        let index = get_json(&c, "/openapi/v3").await;
        index["paths"]["apis/certpilot.dev/v1alpha1"]["serverRelativeURL"].as_str().map(String::from)
    })
    .await;
    let doc = get_json(&c, &url).await;
    let schema = &doc["components"]["schemas"]["dev.certpilot.v1alpha1.Certificate"];
    let gvk = json!({"group": "certpilot.dev", "version": "v1alpha1", "kind": "Certificate"});
    assert!(schema["x-kubernetes-group-version-kind"].as_array().is_some_and(|k| k.contains(&gvk)), "{schema}");
    assert_eq!(schema["properties"]["spec"]["properties"]["secretName"]["type"], "string");
    let item = "/apis/certpilot.dev/v1alpha1/namespaces/{namespace}/certificates/{name}";
    let patch = &doc["paths"][item]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"], gvk, "{patch}");
    let parameter = |p: &serde_json::Value| match p["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/parameters/");
            doc["components"]["parameters"][name].clone()
        }
        None => p.clone(),
    };
    let strict = patch["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(parameter)
        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query");
    assert!(strict, "PATCH takes fieldValidation: {patch}");
}

/// `fieldValidation=Strict` (what `kubectl apply` asks for) refuses a field the schema does not
/// declare; without it the field is pruned.
#[tokio::test]
async fn strict_field_validation_refuses_undeclared_fields() {
    let c = cluster_with_widgets("strict").await;
    let path = format!("/apis/conformance.certpilot.dev/v1/namespaces/{}/widgets", c.namespace());
    let widget = |name: &str| json!({"apiVersion": "conformance.certpilot.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 1, "colour": "red"}});
    let post = |query: &str, body: serde_json::Value| {
        http::Request::post(format!("{path}{query}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap()
    };
    let refused = c.client().request::<serde_json::Value>(post("?fieldValidation=Strict", widget("strict"))).await;
    let err = api_error(refused, "a Widget with an undeclared field, strictly");
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"), "{}", err.message);
    assert!(err.message.contains("unknown field \"spec.colour\""), "{}", err.message);
    let created: serde_json::Value = c.client().request(post("", widget("lenient"))).await.unwrap();
    assert_eq!(created["spec"]["size"], 1);
    assert!(created["spec"].get("colour").is_none(), "pruned: {created}");
}

/// Events are one resource: one written through `events.k8s.io/v1` (as certpilot writes them)
/// is read through `core/v1` (as `kubectl describe` reads them), found by its involved object.
#[tokio::test]
async fn events_k8s_io_events_are_read_as_core_events() {
    use k8s_openapi::api::{core::v1::Event, events::v1::Event as EventV1};
    let c = cluster("event-faces").await;
    let event: EventV1 = serde_json::from_value(json!({"metadata": {"name": "faces"}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "certpilot.dev/test", "reportingInstance": "test", "action": "Test", "reason": "Issued", "type": "Normal", "note": "hello", "regarding": {"kind": "Secret", "name": "x", "namespace": c.namespace()}})).unwrap();
    Api::<EventV1>::namespaced(c.client(), c.namespace()).create(&PostParams::default(), &event).await.unwrap();
    let core: Api<Event> = Api::namespaced(c.client(), c.namespace());
    let by_object = ListParams::default().fields("involvedObject.name=x,involvedObject.kind=Secret");
    let found = core.list(&by_object).await.unwrap().items;
    assert_eq!(found.len(), 1, "{found:?}");
    let seen = &found[0];
    assert_eq!(seen.message.as_deref(), Some("hello"));
    assert_eq!(seen.reason.as_deref(), Some("Issued"));
    assert_eq!(seen.reporting_component.as_deref(), Some("certpilot.dev/test"));
    assert_eq!(seen.involved_object.namespace.as_deref(), Some(c.namespace()));
    let other = ListParams::default().fields("involvedObject.name=y");
    assert!(core.list(&other).await.unwrap().items.is_empty());
    assert_eq!(core.get("faces").await.unwrap().message.as_deref(), Some("hello"));
}

/// A custom resource's `selectableFields` are field-selector labels (`kubectl get certificates
/// --field-selector status.phase=Failed`); other fields are refused by name.
#[tokio::test]
async fn selectable_fields_filter_custom_resources() {
    use certpilot::api::Certificate;
    let c = cluster("selectable").await;
    install_certpilot_crds(&c).await;
    let certificates: Api<Certificate> = Api::namespaced(c.client(), c.namespace());
    for (name, issuer, phase) in [("good", "local", "Ready"), ("bad", "remote", "Failed")] {
        let certificate: Certificate = serde_json::from_value(json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name}, "spec": {"secretName": format!("{name}-tls"), "dnsNames": [format!("{name}.example.com")], "issuerRef": {"name": issuer}}})).unwrap();
        certificates.create(&PostParams::default(), &certificate).await.unwrap();
        let status = json!({"status": {"phase": phase}});
        certificates.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }
    let names = |fields: &'static str| {
        let certificates = certificates.clone();
        async move {
            let listed = certificates.list(&ListParams::default().fields(fields)).await.unwrap();
            listed.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
        }
    };
    assert_eq!(names("status.phase=Failed").await, ["bad"]);
    assert_eq!(names("status.phase!=Failed").await, ["good"]);
    assert_eq!(names("spec.issuerRef.name=local").await, ["good"]);
    assert_eq!(names("spec.secretName=bad-tls,status.phase=Failed").await, ["bad"]);
    let refused = certificates.list(&ListParams::default().fields("spec.dnsNames=good.example.com")).await;
    let err = api_error(refused, "a field that is not selectable");
    assert_eq!(err.code, 400, "{}", err.message);
    assert!(err.message.contains("spec.dnsNames"), "{}", err.message);
}

/// Discovery lists a CRD's short names and categories (`kubectl get cpcert`, `kubectl get
/// certpilot`) and the built-in short names kubectl users type (`kubectl get crd`).
#[tokio::test]
async fn discovery_lists_short_names_and_categories() {
    let c = cluster("discovery-names").await;
    install_certpilot_crds(&c).await;
    let resource = |list: &serde_json::Value, name: &str| {
        let found = list["resources"].as_array().and_then(|r| r.iter().find(|r| r["name"] == name)).cloned();
        found.unwrap_or_else(|| panic!("{name} in {list}"))
    };
    let certpilot = get_json(&c, "/apis/certpilot.dev/v1alpha1").await;
    let certificates = resource(&certpilot, "certificates");
    assert_eq!(certificates["shortNames"], json!(["cpcert"]));
    assert_eq!(certificates["categories"], json!(["certpilot"]));
    let extensions = get_json(&c, "/apis/apiextensions.k8s.io/v1").await;
    assert_eq!(resource(&extensions, "customresourcedefinitions")["shortNames"], json!(["crd", "crds"]));
}
