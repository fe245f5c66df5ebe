//! Fault injection a test can switch on: added latency, failing requests or a share of the
//! writes, dropped watches, watch events that arrive late. Also a log of the requests served,
//! so tests can count what a controller did.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};
use tokio::sync::watch;

#[derive(Debug, Default)]
struct Plan {
    latency: Duration,
    /// Requests still to let through before failing (the N-th request fails when this is N-1).
    skip: u64,
    /// How many requests to fail after skipping, and with which status code.
    fail: u64,
    status: u16,
    /// Only requests whose path contains this string count (all requests when empty).
    path_filter: String,
    /// Fail every n-th matching write (0: off), with this status, counting from the switch.
    writes_every: u64,
    writes_status: u16,
    writes_filter: String,
    writes_seen: u64,
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `User-Agent` header ("" when absent), to tell clients apart.
    pub user_agent: String,
    /// The `Content-Type` header ("" when absent): tells a server-side apply from other patches.
    pub content_type: String,
    /// When the server received the request.
    pub at: Instant,
}

impl RequestRecord {
    /// Whether the request changes state (anything but GET, which covers list and watch).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true" || p == "watch=1")
    }

    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `apply` (a
    /// patch with the apply content type), `delete` or `deletecollection`. Discovery and
    /// other paths outside a resource count by method (`get`, …).
    pub fn verb(&self) -> &'static str {
        let named = crate::http::parse_target(&self.path).is_none_or(|t| t.name.is_some());
        match (self.method.as_str(), named) {
            ("GET", _) if self.is_watch() => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) if self.content_type.starts_with("application/apply-patch") => "apply",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => "other",
        }
    }

    /// What the request was about, without namespace and name: `secrets`,
    /// `certificates.certpilot.dev/status`, `leases.coordination.k8s.io`; the path itself
    /// for discovery and other paths outside a resource.
    pub fn resource(&self) -> String {
        let Some(target) = crate::http::parse_target(&self.path) else { return self.path.clone() };
        let mut resource =
            if target.group.is_empty() { target.plural } else { format!("{}.{}", target.plural, target.group) };
        if let Some(subresource) = target.subresource {
            resource = format!("{resource}/{subresource}");
        }
        resource
    }
}

/// How late watch events arrive: for every watch, and for the watches of some resources.
#[derive(Clone, Debug, Default)]
pub struct WatchLag {
    all: Duration,
    by_resource: std::collections::HashMap<String, Duration>,
}

impl WatchLag {
    pub(crate) fn of(&self, plural: &str) -> Duration {
        self.all + self.by_resource.get(plural).copied().unwrap_or_default()
    }
}

/// Switches shared by the server and the test that drives it.
pub struct Faults {
    plan: Mutex<Plan>,
    drop_epoch: watch::Sender<u64>,
    watch_lag: watch::Sender<WatchLag>,
    log: Mutex<Vec<RequestRecord>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            plan: Mutex::default(),
            drop_epoch: watch::channel(0).0,
            watch_lag: watch::channel(WatchLag::default()).0,
            log: Mutex::default(),
        }
    }
}

/// What the server must do with a request before serving it.
pub struct Verdict {
    pub delay: Duration,
    pub fail_with: Option<u16>,
}

impl Faults {
    /// Adds `latency` before every response.
    pub fn set_latency(&self, latency: Duration) {
        self.plan.lock().unwrap().latency = latency;
    }

    /// Lets `skip` requests through, then fails the next `count` with `status` (500, 429…).
    /// Only requests whose path contains `path_filter` count; "" counts all.
    pub fn fail_requests(&self, skip: u64, count: u64, status: u16, path_filter: &str) {
        let mut plan = self.plan.lock().unwrap();
        plan.skip = skip;
        plan.fail = count;
        plan.status = status;
        plan.path_filter = path_filter.to_string();
    }

    /// Fails only the `n`-th request from now (1-based).
    pub fn fail_nth_request(&self, n: u64, status: u16) {
        self.fail_requests(n.saturating_sub(1), 1, status, "");
    }

    /// Fails every `n`-th write (any request but GET) whose path contains `path_filter` ("" for
    /// all), counting from now, with `status`, until [`Faults::clear_write_failures`]. The
    /// answer is the API server's for that code: `409` is a `Conflict` on the object, as when
    /// another writer got there first; `500` an `InternalError`, `503` `ServiceUnavailable`…
    pub fn fail_writes_every(&self, n: u64, status: u16, path_filter: &str) {
        let mut plan = self.plan.lock().unwrap();
        plan.writes_every = n;
        plan.writes_status = status;
        plan.writes_filter = path_filter.to_string();
        plan.writes_seen = 0;
    }

    /// Stops failing writes.
    pub fn clear_write_failures(&self) {
        self.fail_writes_every(0, 0, "");
    }

    /// Delays every watch event by `lag` (from when it happened), keeping their order, so
    /// that informers lag behind the writes, their own included. Zero switches it off; open
    /// watches pick a change up with the next event.
    pub fn set_watch_lag(&self, lag: Duration) {
        self.watch_lag.send_modify(|plan| plan.all = lag);
    }

    /// Delays the watch events of one resource (its plural, e.g. `secrets`) by `lag`, on top
    /// of [`Faults::set_watch_lag`]: separate watches then see the same history at different
    /// times, as separate connections to a busy API server do.
    pub fn set_watch_lag_for(&self, plural: &str, lag: Duration) {
        self.watch_lag.send_modify(|plan| {
            plan.by_resource.insert(plural.to_string(), lag);
        });
    }

    pub(crate) fn lag_signal(&self) -> watch::Receiver<WatchLag> {
        self.watch_lag.subscribe()
    }

    /// Ends every open watch stream, as a restarted API server or a broken connection would.
    pub fn drop_watches(&self) {
        self.drop_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Switches every fault off (latency, failures, write failures and watch lag).
    pub fn clear(&self) {
        *self.plan.lock().unwrap() = Plan::default();
        self.watch_lag.send_replace(WatchLag::default());
    }

    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drop_epoch.subscribe()
    }

    pub(crate) fn on_request(&self, record: RequestRecord) -> Verdict {
        let mut plan = self.plan.lock().unwrap();
        let counts = plan.path_filter.is_empty() || record.path.contains(&plan.path_filter);
        let fail_with = if counts && plan.fail > 0 {
            if plan.skip > 0 {
                plan.skip -= 1;
                None
            } else {
                plan.fail -= 1;
                Some(plan.status)
            }
        } else {
            None
        };
        let write_counts = plan.writes_every > 0
            && record.is_write()
            && (plan.writes_filter.is_empty() || record.path.contains(&plan.writes_filter));
        let fail_with = if write_counts {
            plan.writes_seen += 1;
            fail_with.or(plan.writes_seen.is_multiple_of(plan.writes_every).then_some(plan.writes_status))
        } else {
            fail_with
        };
        self.log.lock().unwrap().push(record);
        Verdict { delay: plan.latency, fail_with }
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.lock().unwrap().clone()
    }

    /// How many requests were served so far: a mark for [`Faults::requests_since`].
    pub fn request_count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The requests served after the first `mark` ones, oldest first.
    pub fn requests_since(&self, mark: usize) -> Vec<RequestRecord> {
        self.log.lock().unwrap().get(mark..).map(<[_]>::to_vec).unwrap_or_default()
    }
}
