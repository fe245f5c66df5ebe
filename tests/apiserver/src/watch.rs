//! Watch streams: initial events, history replay from a resourceVersion (410 when too old),
//! selector transitions, bookmarks, timeouts, and streams dropped on demand.

use crate::{
    Shared,
    error::{ApiError, ApiResult},
    http::{Query, Target, flag, metadata_view},
    meta,
    resource::ResourceType,
    selector::{FieldSelector, LabelSelector},
    store::{Event, EventType},
};
use axum::{body::Body, http::header, response::Response};
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};
use tokio::sync::{broadcast, mpsc};

struct Filter {
    rt: Arc<ResourceType>,
    version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    metadata_only: bool,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&meta::labels(object)) && self.fields.matches(object)
    }

    fn concerns(&self, event: &Event) -> bool {
        event.key.group == self.rt.group
            && event.key.plural == self.rt.plural
            && self.namespace.as_ref().is_none_or(|ns| &event.key.namespace == ns)
    }

    /// The event this watcher sees, if any: an object entering the selection is ADDED, one
    /// leaving it is DELETED.
    fn translate(&self, event: &Event) -> Option<(&'static str, Value)> {
        if !self.concerns(event) {
            return None;
        }
        let now = self.matches(&event.object);
        let before = event.old.as_ref().is_some_and(|o| self.matches(o));
        let kind = match (event.kind, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            (EventType::Deleted, _, true) => EventType::Deleted,
            _ => return None,
        };
        Some((kind.as_str(), self.render(&event.object)))
    }

    fn render(&self, object: &Value) -> Value {
        if self.metadata_only {
            return metadata_view(object);
        }
        let mut object = object.clone();
        object["apiVersion"] = json!(self.rt.api_version(&self.version));
        object
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (api_version, kind) = if self.metadata_only {
            ("meta.k8s.io/v1".to_string(), "PartialObjectMetadata".to_string())
        } else {
            (self.rt.api_version(&self.version), self.rt.kind.clone())
        };
        json!({"apiVersion": api_version, "kind": kind, "metadata": metadata})
    }
}

fn line(kind: &str, object: Value) -> Result<String, std::convert::Infallible> {
    Ok(format!("{}\n", json!({"type": kind, "object": object})))
}

/// Where the stream starts: what to send first, and the resourceVersion it brings the client to.
struct Start {
    backlog: Vec<(&'static str, Value)>,
    rv: u64,
    initial_events_end: bool,
    receiver: broadcast::Receiver<Arc<Event>>,
}

pub fn serve(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    target: Target,
    query: Query,
    metadata_only: bool,
) -> ApiResult<Response> {
    let filter = Filter {
        labels: LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: FieldSelector::parse(
            query.get("fieldSelector").map(String::as_str).unwrap_or(""),
            rt.field_selectors(),
        )?,
        rt,
        version: target.version,
        namespace: target.namespace,
        metadata_only,
    };
    let bookmarks = flag(&query, "allowWatchBookmarks");
    let send_initial = flag(&query, "sendInitialEvents");
    if send_initial && !bookmarks {
        return Err(ApiError::bad_request("sendInitialEvents requires allowWatchBookmarks=true"));
    }
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let start = match start(&shared, &filter, &query, send_initial) {
        Ok(start) => start,
        Err(gone) => return Ok(stream_response(single_error(gone))),
    };
    let (tx, rx) = mpsc::channel::<Result<String, std::convert::Infallible>>(256);
    let bookmark_interval = shared.bookmark_interval;
    let drop_signal = shared.faults.drop_signal();
    tokio::spawn(pump(filter, start, tx, Duration::from_secs(timeout), bookmarks, bookmark_interval, drop_signal));
    Ok(stream_response(rx))
}

fn start(shared: &Shared, filter: &Filter, query: &Query, send_initial: bool) -> Result<Start, ApiError> {
    let state = shared.store.lock();
    let receiver = state.subscribe();
    let current = state.resource_version();
    let snapshot = || -> Vec<(&'static str, Value)> {
        state
            .list(&filter.rt, filter.namespace.as_deref())
            .into_iter()
            .filter(|o| filter.matches(o))
            .map(|o| ("ADDED", filter.render(o)))
            .collect()
    };
    let requested = query.get("resourceVersion").filter(|rv| !rv.is_empty() && rv.as_str() != "0");
    if send_initial || requested.is_none() {
        return Ok(Start { backlog: snapshot(), rv: current, initial_events_end: send_initial, receiver });
    }
    let rv: u64 = requested
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(|| ApiError::bad_request("resourceVersion: Invalid value: must be an integer"))?;
    let history =
        state.events_since(rv).ok_or_else(|| ApiError::gone(format!("too old resource version: {rv} ({current})")))?;
    let backlog = history.iter().filter_map(|e| filter.translate(e)).collect();
    Ok(Start { backlog, rv: current.max(rv), initial_events_end: false, receiver })
}

fn single_error(error: ApiError) -> mpsc::Receiver<Result<String, std::convert::Infallible>> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(line("ERROR", error.to_status()));
    rx
}

fn stream_response(rx: mpsc::Receiver<Result<String, std::convert::Infallible>>) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(body)
        .expect("static response parts are valid")
}

async fn pump(
    filter: Filter,
    start: Start,
    tx: mpsc::Sender<Result<String, std::convert::Infallible>>,
    timeout: Duration,
    bookmarks: bool,
    bookmark_interval: Duration,
    mut drop_signal: tokio::sync::watch::Receiver<u64>,
) {
    let Start { backlog, mut rv, initial_events_end, mut receiver } = start;
    for (kind, object) in backlog {
        if tx.send(line(kind, object)).await.is_err() {
            return;
        }
    }
    if initial_events_end && tx.send(line("BOOKMARK", filter.bookmark(rv, true))).await.is_err() {
        return;
    }
    drop_signal.mark_unchanged();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + bookmark_interval, bookmark_interval);
    loop {
        tokio::select! {
            _ = &mut deadline => {
                if bookmarks {
                    let _ = tx.send(line("BOOKMARK", filter.bookmark(rv, false))).await;
                }
                return;
            }
            _ = drop_signal.changed() => return,
            _ = ticker.tick(), if bookmarks => {
                if tx.send(line("BOOKMARK", filter.bookmark(rv, false))).await.is_err() {
                    return;
                }
            }
            received = receiver.recv() => match received {
                Ok(event) if event.rv <= rv => {}
                Ok(event) => {
                    rv = event.rv;
                    if let Some((kind, object)) = filter.translate(&event)
                        && tx.send(line(kind, object)).await.is_err() {
                            return;
                        }
                }
                // A watcher too slow to keep up is cut off; the client resumes from its last version.
                Err(_) => return,
            },
        }
    }
}
