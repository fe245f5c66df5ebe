//! `/openapi/v3`: the index of group-version documents and each document, as much of them as
//! kubectl reads. `kubectl explain` renders a kind's schema from its document; `kubectl apply`
//! looks for the `fieldValidation` parameter on the kind's PATCH operation and, finding it, asks
//! the server to validate strictly instead of validating on the client.

use crate::{Shared, resource::ResourceType};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

pub fn serve(shared: &Shared, path: &str) -> Option<Response> {
    let rest = path.trim_matches('/').strip_prefix("openapi/v3")?;
    let documents = documents(shared);
    let body = match rest.trim_start_matches('/') {
        "" => index(&documents),
        group_version => documents.get(group_version)?.clone(),
    };
    Some(axum::Json(body).into_response())
}

/// `{"paths": {"apis/<group>/<version>": {"serverRelativeURL": ...}}}`; the hash changes with
/// the document, so clients caching by URL see new CRDs.
fn index(documents: &BTreeMap<String, Value>) -> Value {
    let paths: serde_json::Map<String, Value> = documents
        .iter()
        .map(|(key, doc)| {
            let mut hasher = DefaultHasher::new();
            doc.to_string().hash(&mut hasher);
            let url = format!("/openapi/v3/{key}?hash={:016X}", hasher.finish());
            (key.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// One document per group-version, keyed as the index names it (`api/v1`, `apis/<g>/<v>`).
fn documents(shared: &Shared) -> BTreeMap<String, Value> {
    let state = shared.store.lock();
    let mut documents: BTreeMap<String, Value> = BTreeMap::new();
    for rt in state.registry.all() {
        for version in &rt.versions {
            let key =
                if rt.group.is_empty() { format!("api/{version}") } else { format!("apis/{}/{version}", rt.group) };
            let doc = documents.entry(key).or_insert_with(empty_document);
            add_kind(doc, rt, version);
        }
    }
    documents
}

fn empty_document() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0"},
        "paths": {},
        "components": {"schemas": {OBJECT_META: object_meta()}},
    })
}

fn add_kind(doc: &mut Value, rt: &ResourceType, version: &str) {
    let gvk = json!({"group": rt.group, "version": version, "kind": rt.kind});
    let prefix = if rt.group.is_empty() { format!("/api/{version}") } else { format!("/apis/{}/{version}", rt.group) };
    let scope = if rt.namespaced { "/namespaces/{namespace}" } else { "" };
    let item = format!("{prefix}{scope}/{}/{{name}}", rt.plural);
    let parameters = ["dryRun", "fieldManager", "fieldValidation", "force"]
        .map(|name| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
    let writes = json!({
        "x-kubernetes-group-version-kind": gvk,
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
    });
    doc["paths"][item] = json!({"get": {"x-kubernetes-group-version-kind": gvk}, "patch": writes, "put": writes});
    let name = schema_name(rt, version);
    doc["components"]["schemas"][name] = kind_schema(rt, gvk);
}

/// `dev.certpilot.v1alpha1.Certificate`, `io.k8s.api.core.v1.Secret`: the reversed group, as the
/// API server names custom resources' schemas.
fn schema_name(rt: &ResourceType, version: &str) -> String {
    let group = if rt.group.is_empty() { "io.k8s.api.core".to_string() } else { reverse_dns(&rt.group) };
    format!("{group}.{version}.{}", rt.kind)
}

fn reverse_dns(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}

fn kind_schema(rt: &ResourceType, gvk: Value) -> Value {
    let mut schema = rt.schema.clone().unwrap_or_else(|| json!({"type": "object", "description": rt.kind}));
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "metadata".into(),
            json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."}),
        );
    } else {
        schema["x-kubernetes-preserve-unknown-fields"] = json!(true);
    }
    schema["x-kubernetes-group-version-kind"] = json!([gvk]);
    schema
}

fn object_meta() -> Value {
    let text = |description: &str| json!({"type": "string", "description": description});
    let map = |description: &str| json!({"type": "object", "additionalProperties": {"type": "string"}, "description": description});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": text("Name must be unique within a namespace."),
            "namespace": text("Namespace defines the space within which each name must be unique."),
            "labels": map("Map of string keys and values that can be used to organize and categorize objects."),
            "annotations": map("Annotations is an unstructured key value map stored with a resource."),
            "uid": text("UID is the unique in time and space value for this object."),
            "resourceVersion": text("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": text("CreationTimestamp is a timestamp representing the server time when this object was created."),
        },
    })
}
