//! Watch streams: initial events, history replay from a resourceVersion (410 when too old),
//! selector transitions, bookmarks, timeouts, streams dropped on demand and events delivered
//! late (the watch lag fault).

use crate::{
    Shared,
    error::{ApiError, ApiResult},
    http::{Query, Target, flag},
    resource::ResourceType,
    selector::{FieldSelector, LabelSelector},
    store::{Event, EventType, Version},
};
use axum::{body::Body, http::header, response::Response};
use serde_json::{Value, json};
use std::{collections::VecDeque, sync::Arc, time::Duration};
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
        self.labels.selects(object) && self.fields.matches(object)
    }

    fn concerns(&self, event: &Event) -> bool {
        event.key.group == self.rt.group
            && event.key.plural == self.rt.plural
            && self.namespace.as_ref().is_none_or(|ns| &event.key.namespace == ns)
    }

    /// The line of the event this watcher sees, if any: an object entering the selection is
    /// ADDED, one leaving it is DELETED.
    fn translate(&self, event: &Event) -> Option<String> {
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
        Some(self.line(kind.as_str(), &event.object))
    }

    /// The line of one event: the version's JSON text as stored, unless the watch is of
    /// another version of its kind.
    fn line(&self, kind: &str, object: &Version) -> String {
        if self.metadata_only {
            return line(kind, object.metadata_json());
        }
        let api_version = self.rt.api_version(&self.version);
        if object["apiVersion"] == api_version.as_str() {
            return line(kind, object.json());
        }
        let mut object = Value::clone(object);
        object["apiVersion"] = json!(api_version);
        line(kind, &object)
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

/// One line of a watch stream.
fn line(kind: &str, object: &(impl serde::Serialize + ?Sized)) -> String {
    #[derive(serde::Serialize)]
    struct Line<'a, T: ?Sized> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a T,
    }
    let mut line = serde_json::to_string(&Line { kind, object }).expect("a watch event serialises");
    line.push('\n');
    line
}

/// Where the stream starts: what to send first, the history to replay after it, and the
/// resourceVersion the client is at once it has both.
struct Start {
    backlog: Vec<String>,
    replay: Vec<Arc<Event>>,
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
            &rt.field_selectors(),
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
    let signals = Signals { dropped: shared.faults.drop_signal(), lag: shared.faults.lag_signal() };
    tokio::spawn(pump(filter, start, tx, Duration::from_secs(timeout), bookmarks, bookmark_interval, signals));
    Ok(stream_response(rx))
}

fn start(shared: &Shared, filter: &Filter, query: &Query, send_initial: bool) -> Result<Start, ApiError> {
    let state = shared.store.lock();
    let receiver = state.subscribe();
    let current = state.resource_version();
    let snapshot = || -> Vec<String> {
        state
            .list(&filter.rt, filter.namespace.as_deref())
            .into_iter()
            .filter(|o| filter.matches(o))
            .map(|o| filter.line("ADDED", o))
            .collect()
    };
    let requested = query.get("resourceVersion").filter(|rv| !rv.is_empty() && rv.as_str() != "0");
    if send_initial || requested.is_none() {
        return Ok(Start {
            backlog: snapshot(),
            replay: Vec::new(),
            rv: current,
            initial_events_end: send_initial,
            receiver,
        });
    }
    let rv: u64 = requested
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(|| ApiError::bad_request("resourceVersion: Invalid value: must be an integer"))?;
    let history = state
        .events_since(rv, &filter.rt)
        .ok_or_else(|| ApiError::gone(format!("too old resource version: {rv} ({current})")))?;
    Ok(Start { backlog: Vec::new(), replay: history, rv: current.max(rv), initial_events_end: false, receiver })
}

fn single_error(error: ApiError) -> mpsc::Receiver<Result<String, std::convert::Infallible>> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Ok(line("ERROR", &error.to_status())));
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

/// What a watch listens to besides its events.
struct Signals {
    dropped: tokio::sync::watch::Receiver<u64>,
    lag: tokio::sync::watch::Receiver<crate::faults::WatchLag>,
}

/// An event waiting for its time (under watch lag), with what the client sees of it, if anything.
struct Pending {
    due: tokio::time::Instant,
    rv: u64,
    line: Option<String>,
}

/// Events in the order they happened, each due `lag` after it happened (never before the one
/// ahead of it).
struct Queue {
    pending: VecDeque<Pending>,
    last_due: tokio::time::Instant,
}

impl Queue {
    fn push(&mut self, filter: &Filter, event: &Event, lag: Duration) {
        let due = (tokio::time::Instant::from_std(event.at) + lag).max(self.last_due);
        self.last_due = due;
        self.pending.push_back(Pending { due, rv: event.rv, line: filter.translate(event) });
    }
}

async fn pump(
    filter: Filter,
    start: Start,
    tx: mpsc::Sender<Result<String, std::convert::Infallible>>,
    timeout: Duration,
    bookmarks: bool,
    bookmark_interval: Duration,
    signals: Signals,
) {
    let Signals { dropped: mut drop_signal, lag } = signals;
    let Start { backlog, replay, rv, initial_events_end, mut receiver } = start;
    for line in backlog {
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
    }
    if initial_events_end && tx.send(Ok(line("BOOKMARK", &filter.bookmark(rv, true)))).await.is_err() {
        return;
    }
    drop_signal.mark_unchanged();
    let mut queue = Queue { pending: VecDeque::new(), last_due: tokio::time::Instant::now() };
    // `seen`: the newest change this stream knows of; `delivered`: the newest the client has.
    let (mut seen, mut delivered) = (rv, rv);
    for event in &replay {
        queue.push(&filter, event, lag.borrow().of(&filter.rt.plural));
    }
    if let Some(first) = replay.first() {
        delivered = first.rv - 1;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + bookmark_interval, bookmark_interval);
    loop {
        let next_due = queue.pending.front().map(|p| p.due);
        tokio::select! {
            _ = &mut deadline => {
                if bookmarks {
                    let _ = tx.send(Ok(line("BOOKMARK", &filter.bookmark(delivered, false)))).await;
                }
                return;
            }
            _ = drop_signal.changed() => return,
            _ = ticker.tick(), if bookmarks => {
                if tx.send(Ok(line("BOOKMARK", &filter.bookmark(delivered, false)))).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => {
                let now = tokio::time::Instant::now();
                while let Some(front) = queue.pending.front() {
                    if front.due > now {
                        break;
                    }
                    let Pending { rv, line: shown, .. } = queue.pending.pop_front().expect("front exists");
                    if let Some(shown) = shown
                        && tx.send(Ok(shown)).await.is_err() {
                            return;
                        }
                    delivered = rv;
                }
                if queue.pending.is_empty() {
                    delivered = delivered.max(seen);
                }
            }
            received = receiver.recv() => match received {
                Ok(event) if event.rv <= seen => {}
                Ok(event) => {
                    seen = event.rv;
                    let lag = lag.borrow().of(&filter.rt.plural);
                    if lag.is_zero() && queue.pending.is_empty() {
                        if let Some(shown) = filter.translate(&event)
                            && tx.send(Ok(shown)).await.is_err() {
                                return;
                            }
                        delivered = seen;
                    } else {
                        queue.push(&filter, &event, lag);
                    }
                }
                // A watcher too slow to keep up is cut off; the client resumes from its last version.
                Err(_) => return,
            },
        }
    }
}
