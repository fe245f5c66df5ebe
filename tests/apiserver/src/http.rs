//! The HTTP face of the server: path parsing, verbs, content types, metadata-only views.

use crate::{
    Shared,
    error::{ApiError, ApiResult},
    faults::RequestRecord,
    fields::Scope,
    managed::{self, Writer},
    policy::UserInfo,
    resource::ResourceType,
    selector::{FieldSelector, LabelSelector},
    store::{DeleteOptions, Key, Ownership, PatchAuthor, Version},
    watch,
};
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use std::{collections::HashMap, sync::Arc};

/// What a request path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub(crate) fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let namespaced_path =
        rest.len() >= 3 && rest[0] == "namespaces" && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced_path { (Some(rest[1].to_string()), &rest[2..]) } else { (None, rest) };
    let plural = rest.first()?.to_string();
    if rest.len() > 3 {
        return None;
    }
    Some(Target {
        group: group.into(),
        version: version.into(),
        plural,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

/// Query parameters, decoded.
pub type Query = HashMap<String, String>;

fn parse_query(uri: &Uri) -> Query {
    uri.query().map(url_decode_pairs).unwrap_or_default()
}

fn url_decode_pairs(q: &str) -> Query {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn flag(query: &Query, name: &str) -> bool {
    matches!(query.get(name).map(String::as_str), Some("true" | "1"))
}

/// Whether the client asked for `PartialObjectMetadata` views.
fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"))
}

pub fn metadata_view(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let record = RequestRecord {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        user_agent: header_text(&headers, header::USER_AGENT),
        content_type: header_text(&headers, header::CONTENT_TYPE),
        at: std::time::Instant::now(),
    };
    let verdict = shared.faults.on_request(record);
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    if let Some(code) = verdict.fail_with {
        return injected_failure(code, uri.path()).into_response();
    }
    match route(&shared, &method, &uri, &headers, &body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// An injected failure, shaped as the API server answers with that code: a `409` is the
/// conflict of a stale write, other codes carry their usual reason.
fn injected_failure(code: u16, path: &str) -> ApiError {
    if code == 429 {
        return ApiError::too_many_requests(1);
    }
    let target = parse_target(path);
    let resource = target
        .as_ref()
        .map(|t| if t.group.is_empty() { t.plural.clone() } else { format!("{}.{}", t.plural, t.group) })
        .unwrap_or_default();
    let name = target.as_ref().and_then(|t| t.name.clone()).unwrap_or_default();
    if code == 409 {
        return ApiError::stale(&resource, &name);
    }
    let mut e = ApiError::internal(format!("injected fault: HTTP {code}"));
    e.code = code;
    e.reason = ApiError::reason_for_code(code);
    e
}

async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let query = parse_query(uri);
    let user = crate::access::requester(shared, method, uri.path(), &query, headers)?;
    if let Some(response) = crate::discovery::serve(shared, uri.path()) {
        return Ok(response);
    }
    if let Some(response) = crate::openapi::serve(shared, uri.path()) {
        return Ok(response);
    }
    if uri.path() == crate::access::SELF_SUBJECT_REVIEWS {
        return self_subject_review(method, &user);
    }
    let target = parse_target(uri.path())
        .ok_or_else(|| ApiError::not_found_plain("the server could not find the requested resource"))?;
    let rt = shared.store.lock().registry.get(&target.group, &target.version, &target.plural)?;
    if rt.namespaced != target.namespace.is_some() && (target.name.is_some() || *method == Method::POST) {
        return Err(ApiError::not_found_plain(format!(
            "the server could not find the requested resource ({} {})",
            rt.plural,
            uri.path()
        )));
    }
    if target.group.is_empty() && target.plural == "serviceaccounts" && target.subresource.as_deref() == Some("token") {
        return token_request(shared, method, &target, body);
    }
    if crate::events::is_core(&target.group, &target.plural) && !flag(&query, "watch") {
        return core_events(shared, method, &target, &query, body, headers, &user);
    }
    let scope = scope_for(&rt, &target)?;
    let metadata_only = wants_metadata(headers);
    // Tables of custom resources' printer columns (built-in kinds answer with plain JSON,
    // which kubectl's Accept header also takes).
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let as_table = rt.custom && crate::table::wanted(accept);
    let json_response = |v: Value| Ok(axum::Json(if metadata_only { metadata_view(&v) } else { v }).into_response());
    match (method.clone(), target.name.as_deref()) {
        (Method::GET, None) if flag(&query, "watch") => {
            Ok(watch::serve(shared.clone(), rt, target, query, metadata_only)?)
        }
        (Method::GET, None) if as_table => {
            let listed = list(shared, &rt, &target, &query, false)?.into_value();
            let items = listed["items"].as_array().cloned().unwrap_or_default();
            let version = listed["metadata"]["resourceVersion"].as_str().map(String::from);
            Ok(axum::Json(crate::table::render(&rt, &items, version)).into_response())
        }
        (Method::GET, None) => Ok(axum::Json(list(shared, &rt, &target, &query, metadata_only)?).into_response()),
        (Method::GET, Some(name)) if as_table => {
            let object = shared.store.lock().get(&rt, ns(&target), name)?;
            Ok(axum::Json(crate::table::render(&rt, &[object], None)).into_response())
        }
        (Method::GET, Some(name)) => json_response(shared.store.lock().get(&rt, ns(&target), name)?),
        (Method::POST, None) => {
            let obj = parse_object(body)?;
            check_body_namespace(&obj, &target)?;
            check_declared_fields(&rt, &query, &obj)?;
            let manager = field_manager(&query, headers);
            let created = shared.store.lock().create(&rt, ns(&target), obj, &manager, &user)?;
            Ok((axum::http::StatusCode::CREATED, axum::Json(created)).into_response())
        }
        (Method::PUT, Some(name)) => {
            let obj = parse_object(body)?;
            check_body_name(&obj, name)?;
            check_body_namespace(&obj, &target)?;
            check_declared_fields(&rt, &query, &obj)?;
            let manager = field_manager(&query, headers);
            let key = Key::new(&rt, ns(&target), name);
            json_response(shared.store.lock().update(&rt, key, obj, scope, &manager, &user)?)
        }
        (Method::PATCH, Some(name)) => {
            let content_type =
                headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let request =
                PatchRequest { content_type: &content_type, body, query: &query, headers, scope, user: &user };
            let result = patch(shared, &rt, &target, name, &request)?;
            shared.gc_wakeup();
            json_response(result)
        }
        (Method::DELETE, Some(name)) => {
            let opts = delete_options(body, &query)?;
            let (obj, removed) = shared.store.lock().delete(&rt, Key::new(&rt, ns(&target), name), &opts, &user)?;
            shared.gc_wakeup();
            if removed && !rt.returns_deleted_object {
                return Ok(axum::Json(success_status(&rt, &obj)).into_response());
            }
            json_response(obj)
        }
        (Method::DELETE, None) => {
            let opts = delete_options(body, &query)?;
            let deleted = delete_collection(shared, &rt, &target, &query, &opts, &user)?;
            shared.gc_wakeup();
            Ok(axum::Json(deleted).into_response())
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// `POST …/serviceaccounts/<name>/token`: a TokenRequest (see `crate::tokens`).
fn token_request(shared: &Shared, method: &Method, target: &Target, body: &[u8]) -> ApiResult<Response> {
    let (&Method::POST, Some(name)) = (method, target.name.as_deref()) else {
        return Err(not_allowed());
    };
    let minted = shared.tokens.request(&shared.store.lock(), ns(target), name, body, chrono::Utc::now())?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(minted)).into_response())
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`).
fn self_subject_review(method: &Method, user: &UserInfo) -> ApiResult<Response> {
    if *method != Method::POST {
        return Err(not_allowed());
    }
    let review = crate::access::self_subject_review(user);
    Ok((axum::http::StatusCode::CREATED, axum::Json(review)).into_response())
}

/// `405`, as the API server answers a method a create-only resource does not serve.
fn not_allowed() -> ApiError {
    ApiError::method_not_allowed("the server does not allow this method on the requested resource")
        .with_details(json!({}))
}

/// `core/v1` Events: the stored `events.k8s.io/v1` Events, converted (see `crate::events`).
fn core_events(
    shared: &Arc<Shared>,
    method: &Method,
    target: &Target,
    query: &Query,
    body: &[u8],
    headers: &HeaderMap,
    user: &UserInfo,
) -> ApiResult<Response> {
    let core_rt = shared.store.lock().registry.get("", "v1", "events")?;
    let stored_rt = shared.store.lock().registry.get("events.k8s.io", "v1", "events")?;
    let stored_target = Target { group: stored_rt.group.clone(), version: "v1".into(), ..target.clone() };
    match (method.clone(), target.name.as_deref()) {
        (Method::GET, None) => {
            let fields = FieldSelector::parse(
                query.get("fieldSelector").map(String::as_str).unwrap_or(""),
                &core_rt.field_selectors(),
            )?;
            let mut unfiltered = query.clone();
            unfiltered.retain(|k, _| k == "labelSelector");
            let mut listed = list(shared, &stored_rt, &stored_target, &unfiltered, false)?.into_value();
            let items: Vec<Value> = listed["items"]
                .as_array()
                .map(|items| items.iter().map(crate::events::to_core).filter(|e| fields.matches(e)).collect())
                .unwrap_or_default();
            listed["items"] = json!(items);
            listed["apiVersion"] = json!("v1");
            Ok(axum::Json(listed).into_response())
        }
        (Method::GET, Some(name)) => {
            let stored = shared.store.lock().get(&stored_rt, ns(target), name)?;
            Ok(axum::Json(crate::events::to_core(&stored)).into_response())
        }
        (Method::POST, None) => {
            let obj = parse_object(body)?;
            check_body_namespace(&obj, target)?;
            let manager = field_manager(query, headers);
            let stored = crate::events::from_core(&obj);
            let face = ResourceType { core_face: true, ..(*stored_rt).clone() };
            let created = shared.store.lock().create(&face, ns(target), stored, &manager, user)?;
            Ok((axum::http::StatusCode::CREATED, axum::Json(crate::events::to_core(&created))).into_response())
        }
        (Method::DELETE, Some(name)) => {
            let opts = delete_options(body, query)?;
            let key = Key::new(&stored_rt, ns(target), name);
            let (obj, _) = shared.store.lock().delete(&stored_rt, key, &opts, user)?;
            Ok(axum::Json(success_status(&core_rt, &obj)).into_response())
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on core/v1 events here ({method})"
        ))),
    }
}

/// `fieldValidation=Strict` (what `kubectl apply` asks for): a custom resource with fields its
/// schema does not declare is refused instead of pruned, naming the first such field.
fn check_declared_fields(rt: &ResourceType, query: &Query, object: &Value) -> ApiResult<()> {
    let (Some(schema), Some("Strict")) = (&rt.schema, query.get("fieldValidation").map(String::as_str)) else {
        return Ok(());
    };
    let unknown = crate::schema::unknown_fields(schema, object);
    match unknown.first() {
        None => Ok(()),
        Some(field) => {
            let version = rt.versions.first().map(String::as_str).unwrap_or_default();
            Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: unknown field \"{field}\"",
                kind = rt.kind
            )))
        }
    }
}

fn ns(target: &Target) -> &str {
    target.namespace.as_deref().unwrap_or("")
}

fn scope_for(rt: &ResourceType, target: &Target) -> ApiResult<Scope> {
    match target.subresource.as_deref() {
        None if rt.status_subresource => Ok(Scope::MainResource),
        None => Ok(Scope::Whole),
        Some("status") if rt.status_subresource => Ok(Scope::Status),
        Some(other) => Err(ApiError::not_found_plain(format!(
            "the server could not find the requested resource ({}/{other})",
            rt.plural
        ))),
    }
}

fn parse_object(body: &[u8]) -> ApiResult<Value> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(value)
}

fn check_body_name(obj: &Value, name: &str) -> ApiResult<()> {
    match obj["metadata"]["name"].as_str() {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

fn check_body_namespace(obj: &Value, target: &Target) -> ApiResult<()> {
    match (obj["metadata"]["namespace"].as_str(), &target.namespace) {
        (Some(body_ns), Some(url_ns)) if !body_ns.is_empty() && body_ns != url_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

/// The field manager: `fieldManager`, else the User-Agent up to its first '/', as the API server does.
fn field_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// A list (or a page of one) as it is written out: its items are the stored versions
/// themselves, written as the JSON text each keeps, once the lock is released.
struct Listing {
    api_version: String,
    kind: String,
    metadata: Value,
    items: Vec<Arc<Version>>,
    /// Whether each item is sent as its `PartialObjectMetadata` view.
    metadata_only: bool,
}

impl serde::Serialize for Listing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut list = serializer.serialize_map(Some(4))?;
        list.serialize_entry("apiVersion", &self.api_version)?;
        list.serialize_entry("kind", &self.kind)?;
        list.serialize_entry("metadata", &self.metadata)?;
        list.serialize_entry("items", &Items(self))?;
        list.end()
    }
}

/// A list's items as JSON text.
struct Items<'a>(&'a Listing);

impl serde::Serialize for Items<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Listing { items, metadata_only, .. } = self.0;
        serializer.collect_seq(items.iter().map(|item| if *metadata_only { item.metadata_json() } else { item.json() }))
    }
}

impl Listing {
    /// The list as a document, for the paths that rework it (tables, core/v1 Events).
    fn into_value(self) -> Value {
        let item =
            |version: &Arc<Version>| if self.metadata_only { metadata_view(version) } else { Value::clone(version) };
        let items: Vec<Value> = self.items.iter().map(item).collect();
        let mut list = json!({"apiVersion": self.api_version, "kind": self.kind, "metadata": self.metadata});
        list["items"] = Value::Array(items);
        list
    }
}

fn list(shared: &Shared, rt: &ResourceType, target: &Target, query: &Query, metadata_only: bool) -> ApiResult<Listing> {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields =
        FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""), &rt.field_selectors())?;
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let namespace = target.namespace.as_deref();
    let state = shared.store.lock();
    let current = state.resource_version();
    let (list_rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => decode_continue(token)?,
        None => {
            check_list_resource_version(query, current)?;
            (current, None)
        }
    };
    let after = after.as_ref().map(|(ns, name)| (ns.as_str(), name.as_str()));
    let mut matching = state.list_after(rt, namespace, after).filter(|o| labels.selects(o) && fields.matches(o));
    let items: Vec<Arc<Version>> = matching.by_ref().take(limit.unwrap_or(usize::MAX)).cloned().collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let (Some(last), true) = (items.last(), matching.next().is_some()) {
        metadata["continue"] = json!(encode_continue(list_rv, last));
        // As the API server does: the count only of a list without selectors (with them,
        // counting would mean matching every object left).
        let selected = ["labelSelector", "fieldSelector"].iter().any(|s| query.get(*s).is_some_and(|v| !v.is_empty()));
        if !selected {
            let last =
                (last["metadata"]["namespace"].as_str().unwrap_or(""), last["metadata"]["name"].as_str().unwrap_or(""));
            metadata["remainingItemCount"] = json!(state.count_after(rt, namespace, last));
        }
    }
    drop(matching);
    drop(state);
    let (api_version, kind) = if metadata_only {
        ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
    } else {
        (rt.api_version(&target.version), format!("{}List", rt.kind))
    };
    Ok(Listing { api_version, kind, metadata, items, metadata_only })
}

/// Lists are served from the latest state; an exact older resourceVersion can't be, so it is
/// `410 Gone` (as for a compacted one on a real cluster).
fn check_list_resource_version(query: &Query, current: u64) -> ApiResult<()> {
    let exact = query.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    match query.get("resourceVersion").and_then(|rv| rv.parse::<u64>().ok()) {
        Some(rv) if exact && rv != current => {
            Err(ApiError::gone(format!("too old resource version: {rv} ({current})")))
        }
        _ => Ok(()),
    }
}

/// A continue token: the list's resourceVersion and the namespace and name of the last object
/// of the page.
fn encode_continue(rv: u64, last: &Value) -> String {
    use base64::Engine;
    let (namespace, name) = (last["metadata"]["namespace"].as_str(), last["metadata"]["name"].as_str());
    let token = json!({"rv": rv, "namespace": namespace.unwrap_or(""), "name": name.unwrap_or("")});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(u64, Option<(String, String)>)> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let field = |name: &str| v[name].as_str().map(String::from).ok_or_else(bad);
    Ok((v["rv"].as_u64().ok_or_else(bad)?, Some((field("namespace")?, field("name")?))))
}

/// What a PATCH request brings besides its target.
#[derive(Clone, Copy)]
struct PatchRequest<'a> {
    content_type: &'a str,
    body: &'a [u8],
    query: &'a Query,
    headers: &'a HeaderMap,
    scope: Scope,
    user: &'a UserInfo,
}

fn patch(shared: &Shared, rt: &ResourceType, target: &Target, name: &str, request: &PatchRequest) -> ApiResult<Value> {
    let PatchRequest { content_type, body, query, headers, scope, user } = *request;
    let key = Key::new(rt, ns(target), name);
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let mut state = shared.store.lock();
    let live = state.object(&key).cloned();
    if mime == "application/apply-patch+yaml" {
        let manager = query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad_request("PATCH /apply requires fieldManager to be set"))?;
        let applied: Value =
            yaml_serde::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        check_applied(rt, &applied, name, live.as_ref())?;
        check_declared_fields(rt, query, &applied)?;
        if live.is_none() && scope == Scope::Status {
            return Err(ApiError::not_found(&rt.qualified_name(), name));
        }
        if live.is_none() {
            crate::access::require_create(&state, user, rt, ns(target), name)?;
        }
        let base = live.clone().unwrap_or_else(|| {
            json!({"apiVersion": applied["apiVersion"], "kind": rt.kind, "metadata": {"name": name, "namespace": target.namespace}})
        });
        let api_version = applied["apiVersion"].as_str().unwrap_or_default().to_string();
        let writer = Writer { manager, api_version: &api_version, scope };
        let merged = managed::apply(rt, &base, &applied, &writer, flag(query, "force"))?;
        return state.write_patched(rt, key, live, merged, scope, PatchAuthor { ownership: Ownership::Applied, user });
    }
    let live = live.ok_or_else(|| ApiError::not_found(&rt.qualified_name(), name))?;
    let patch_doc: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut patched = live.clone();
    match mime {
        "application/merge-patch+json" => json_patch::merge(&mut patched, &patch_doc),
        "application/strategic-merge-patch+json" if !rt.custom => strategic_merge(&mut patched, &patch_doc)?,
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(patch_doc)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            // A failed `test` is 422, like the API server; a patch that does not fit the document is 400.
            json_patch::patch(&mut patched, &ops).map_err(|e| {
                let mut err = ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ));
                if matches!(e.kind, json_patch::PatchErrorKind::TestFailed) {
                    err.code = 422;
                    err.reason = "Invalid";
                }
                err
            })?;
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    if !patched.is_object() {
        return Err(ApiError::bad_request("the patch did not produce an object"));
    }
    check_declared_fields(rt, query, &patched)?;
    let manager = field_manager(query, headers);
    let author = PatchAuthor { ownership: Ownership::Update(&manager), user };
    state.write_patched(rt, key, Some(live), patched, scope, author)
}

fn check_applied(rt: &ResourceType, applied: &Value, name: &str, live: Option<&Value>) -> ApiResult<()> {
    let api_version = applied["apiVersion"].as_str().unwrap_or_default();
    if applied["kind"].as_str() != Some(rt.kind.as_str())
        || !rt.versions.iter().any(|v| rt.api_version(v) == api_version)
    {
        return Err(ApiError::bad_request(format!(
            "the apiVersion and kind of the applied object must be set and match the request ({}, {})",
            rt.api_version(&rt.versions[0]),
            rt.kind
        )));
    }
    check_body_name(applied, name)?;
    if let (Some(rv), Some(live)) = (applied["metadata"]["resourceVersion"].as_str(), live)
        && Some(rv) != live["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::stale(&rt.qualified_name(), name));
    }
    Ok(())
}

/// Strategic merge patch for built-in kinds, approximated by a JSON merge patch (lists are
/// replaced rather than merged by their patch keys); `$patch`-style directives are refused.
fn strategic_merge(doc: &mut Value, patch: &Value) -> ApiResult<()> {
    fn has_directive(v: &Value) -> bool {
        match v {
            Value::Object(m) => {
                m.iter().any(|(k, v)| (k.starts_with('$') && !k.starts_with("$setElementOrder")) || has_directive(v))
            }
            Value::Array(items) => items.iter().any(has_directive),
            _ => false,
        }
    }
    fn strip_order(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !k.starts_with("$setElementOrder"))
                    .map(|(k, v)| (k.clone(), strip_order(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    if has_directive(patch) {
        return Err(ApiError::bad_request("strategic merge patch directives are not supported by the test API server"));
    }
    json_patch::merge(doc, &strip_order(patch));
    Ok(())
}

fn delete_options(body: &[u8], query: &Query) -> ApiResult<DeleteOptions> {
    let parsed: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let propagation =
        parsed["propagationPolicy"].as_str().map(String::from).or_else(|| query.get("propagationPolicy").cloned());
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::bad_request(format!("propagationPolicy: Unsupported value: {p:?}")));
    }
    Ok(DeleteOptions {
        propagation,
        precondition_uid: parsed["preconditions"]["uid"].as_str().map(String::from),
        precondition_rv: parsed["preconditions"]["resourceVersion"].as_str().map(String::from),
    })
}

fn delete_collection(
    shared: &Shared,
    rt: &ResourceType,
    target: &Target,
    query: &Query,
    opts: &DeleteOptions,
    user: &UserInfo,
) -> ApiResult<Value> {
    let labels = LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields =
        FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""), &rt.field_selectors())?;
    let mut state = shared.store.lock();
    let keys: Vec<Key> = state
        .list(rt, target.namespace.as_deref())
        .into_iter()
        .filter(|o| labels.selects(o) && fields.matches(o))
        .map(|o| {
            Key::new(
                rt,
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let mut items = Vec::new();
    for key in keys {
        items.push(state.delete(rt, key, opts, user)?.0);
    }
    let rv = state.resource_version().to_string();
    Ok(
        json!({"apiVersion": rt.api_version(&target.version), "kind": format!("{}List", rt.kind), "metadata": {"resourceVersion": rv}, "items": items}),
    )
}

fn success_status(rt: &ResourceType, obj: &Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": obj["metadata"]["name"], "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_targets() {
        let t = parse_target("/api/v1/namespaces/ns1/secrets/s1").unwrap();
        assert_eq!(
            (t.group.as_str(), t.plural.as_str(), t.namespace.as_deref(), t.name.as_deref()),
            ("", "secrets", Some("ns1"), Some("s1"))
        );
        let t = parse_target("/api/v1/namespaces/ns1").unwrap();
        assert_eq!((t.plural.as_str(), t.name.as_deref(), t.namespace), ("namespaces", Some("ns1"), None));
        let t = parse_target("/apis/certpilot.dev/v1alpha1/namespaces/a/certificates/c/status").unwrap();
        assert_eq!((t.group.as_str(), t.subresource.as_deref()), ("certpilot.dev", Some("status")));
        let t = parse_target("/apis/certpilot.dev/v1alpha1/certificates").unwrap();
        assert_eq!((t.plural.as_str(), t.namespace, t.name), ("certificates", None, None));
        assert!(parse_target("/healthz").is_none());
    }

    #[test]
    fn query_strings_are_decoded() {
        let q = url_decode_pairs("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=true");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert!(flag(&q, "watch"));
    }
}
