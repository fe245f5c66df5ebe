//! Fault injection a test can switch on: added latency, failing requests, dropped watches.
//! Also a log of the requests served, so tests can count what a controller did.

use std::{sync::Mutex, time::Duration};
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
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
}

impl RequestRecord {
    /// Whether the request changes state (anything but GET, which covers list and watch).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true" || p == "watch=1")
    }
}

/// Switches shared by the server and the test that drives it.
pub struct Faults {
    plan: Mutex<Plan>,
    drop_epoch: watch::Sender<u64>,
    log: Mutex<Vec<RequestRecord>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self { plan: Mutex::default(), drop_epoch: watch::channel(0).0, log: Mutex::default() }
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

    /// Ends every open watch stream, as a restarted API server or a broken connection would.
    pub fn drop_watches(&self) {
        self.drop_epoch.send_modify(|epoch| *epoch += 1);
    }

    pub fn clear(&self) {
        *self.plan.lock().unwrap() = Plan::default();
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
        self.log.lock().unwrap().push(record);
        Verdict { delay: plan.latency, fail_with }
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.lock().unwrap().clone()
    }
}
