//! `/version` and the discovery documents (`/api`, `/apis`, `/apis/<group>/<version>`).

use crate::Shared;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn serve(shared: &Shared, path: &str) -> Option<Response> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = match segs.as_slice() {
        ["version"] => {
            json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-certpilot-test", "platform": "linux/amd64"})
        }
        ["api"] => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        }
        ["apis"] => group_list(shared),
        ["api", version] => resource_list(shared, "", version),
        ["apis", group, version] => resource_list(shared, group, version),
        _ => return None,
    };
    Some(axum::Json(body).into_response())
}

fn group_list(shared: &Shared) -> Value {
    let state = shared.store.lock();
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for rt in state.registry.all().filter(|rt| !rt.group.is_empty()) {
        let versions = groups.entry(rt.group.as_str()).or_default();
        for v in &rt.versions {
            if !versions.contains(&v.as_str()) {
                versions.push(v);
            }
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let vs: Vec<Value> =
                versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
            json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(shared: &Shared, group: &str, version: &str) -> Value {
    let state = shared.store.lock();
    let mut resources = Vec::new();
    for rt in state.registry.all().filter(|rt| rt.group == group && rt.versions.iter().any(|v| v == version)) {
        let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
        let mut resource = json!({"name": rt.plural, "singularName": rt.kind.to_lowercase(), "namespaced": rt.namespaced, "kind": rt.kind, "verbs": verbs});
        if !rt.short_names.is_empty() {
            resource["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            resource["categories"] = json!(rt.categories);
        }
        resources.push(resource);
        if rt.group.is_empty() && rt.plural == "serviceaccounts" {
            resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true, "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
        if rt.status_subresource {
            resources.push(json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}
