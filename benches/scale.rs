//! `cargo bench --bench scale`: the figures of certpilot's scale target, measured on the operator
//! binary against the in-process test API server and printed as a Markdown table. No
//! assertions: the targets are read, not enforced.
//!
//! Self-signed run, in one cluster: M unrelated 10 KiB Secrets and a `selfSigned` Issuer, then
//! the operator; its idle RSS as a baseline; N Certificates applied at once; the time until all
//! are Ready, the operator's API requests per issuance, its RSS once settled and per
//! certificate; its requests during an idle window; then a SIGKILL and a new operator: the
//! time until it is quiet, what it requested meanwhile, and its RSS.
//!
//! ACME run, in a second cluster: K Certificates from Pebble with HTTP-01 answered by the
//! operator: the time until all are Ready, orders per certificate, requests per issuance.
//!
//! Parameters (environment): `CERTPILOT_BENCH_CERTIFICATES` (N, default 10000),
//! `CERTPILOT_BENCH_UNRELATED_SECRETS` (M, 30000), `CERTPILOT_BENCH_IDLE_SECONDS` (60),
//! `CERTPILOT_BENCH_ACME_CERTIFICATES` (K, 1000; 0 skips the ACME run),
//! `CERTPILOT_BENCH_RENEWALS` (0: renewal rounds after the restart, for the steady state of
//! many attempts and a full `status.history`),
//! `CERTPILOT_BENCH_TIMEOUT_SECONDS` (3600: how long to wait for Ready or quiet at most).
//!
//! The operator's requests are told from the bench's own by the `User-Agent` header the server
//! logs: the bench's client sends [`BENCH_USER_AGENT`], and after the operator starts nothing
//! else talks to the server. Readiness is followed with one watch on Certificates.

#[path = "../tests/support/mod.rs"]
mod support;

use certpilot::api::{AttemptPhase, Certificate, Issuer};
use certpilot_test_apiserver::{RequestRecord, cluster::TestCluster};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use support::{
    pebble::{Pebble, PebbleOptions},
    *,
};
use tokio::sync::watch;

/// The `User-Agent` of the bench's own client; every other request after the operator started
/// is the operator's.
const BENCH_USER_AGENT: &str = "certpilot-bench";
/// How long the operator must make no request but watches to count as quiet.
const QUIET: Duration = Duration::from_secs(3);
/// Verbs in the order they are printed.
const VERBS: [&str; 10] =
    ["get", "list", "watch", "create", "update", "patch", "apply", "delete", "deletecollection", "other"];

struct Params {
    certificates: usize,
    unrelated_secrets: usize,
    idle: Duration,
    acme_certificates: usize,
    renewals: usize,
    timeout: Duration,
}

impl Params {
    fn from_env() -> Self {
        fn number(name: &str, default: usize) -> usize {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        Self {
            certificates: number("CERTPILOT_BENCH_CERTIFICATES", 10_000),
            unrelated_secrets: number("CERTPILOT_BENCH_UNRELATED_SECRETS", 30_000),
            idle: Duration::from_secs(number("CERTPILOT_BENCH_IDLE_SECONDS", 60) as u64),
            acme_certificates: number("CERTPILOT_BENCH_ACME_CERTIFICATES", 1000),
            renewals: number("CERTPILOT_BENCH_RENEWALS", 0),
            timeout: Duration::from_secs(number("CERTPILOT_BENCH_TIMEOUT_SECONDS", 3600) as u64),
        }
    }
}

/// The rows of the final table, plus detail tables printed after it.
#[derive(Default)]
struct Report {
    rows: Vec<[String; 3]>,
    details: Vec<String>,
}

impl Report {
    fn row(&mut self, figure: &str, value: impl Into<String>, target: &str) {
        self.rows.push([figure.to_string(), value.into(), target.to_string()]);
        let [figure, value, _] = self.rows.last().expect("just pushed");
        eprintln!("[bench] {figure}: {value}");
    }

    fn print(&self) {
        println!("| figure | value | target |");
        println!("|---|---|---|");
        for [figure, value, target] in &self.rows {
            println!("| {figure} | {value} | {target} |");
        }
        for detail in &self.details {
            println!("\n{detail}");
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// VmRSS sampled every second until two samples differ by less than 1% (at most 20 s).
async fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut previous = rss_kib(pid);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid);
        if now.abs_diff(previous) * 100 < previous.max(1) || Instant::now() >= deadline {
            return now;
        }
        previous = now;
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn is_operator(record: &RequestRecord) -> bool {
    record.user_agent != BENCH_USER_AGENT
}

/// The operator's requests in the server's log from `mark` on (`None` on a real cluster).
fn operator_requests(cluster: &TestCluster, mark: usize) -> Option<Vec<RequestRecord>> {
    let server = cluster.server()?;
    Some(server.faults().requests_since(mark).into_iter().filter(is_operator).collect())
}

fn request_mark(cluster: &TestCluster) -> usize {
    cluster.server().map_or(0, |s| s.faults().request_count())
}

fn count_by_verb(records: &[RequestRecord]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry(record.verb()).or_default() += 1;
    }
    counts
}

/// `GET 3, PATCH 1` (the non-zero verbs), or `none`.
fn verbs_summary(records: &[RequestRecord]) -> String {
    let counts = count_by_verb(records);
    let parts: Vec<String> =
        VERBS.iter().filter_map(|v| counts.get(v).map(|n| format!("{} {n}", v.to_uppercase()))).collect();
    if parts.is_empty() { "none".to_string() } else { parts.join(", ") }
}

fn writes(records: &[RequestRecord]) -> usize {
    records.iter().filter(|r| r.is_write()).count()
}

/// The resource Events are written to (`events.k8s.io/v1`).
const EVENTS: &str = "events.events.k8s.io";

fn is_event(record: &RequestRecord) -> bool {
    record.resource() == EVENTS
}

/// Rows with the writes per issuance (Events apart: each is a write too, but one nothing
/// watches), each verb's requests per issuance, and a detail table of the most frequent (verb,
/// resource) pairs.
fn per_issuance(report: &mut Report, label: &str, records: &[RequestRecord], issued: usize, writes_target: &str) {
    let per = |n: usize| n as f64 / issued.max(1) as f64;
    let counts = count_by_verb(records);
    report.row(
        &format!("{label}: API requests per issuance"),
        format!(
            "{:.2} ({:.2} writes, {:.2} watches)",
            per(records.len()),
            per(writes(records)),
            per(counts.get("watch").copied().unwrap_or(0))
        ),
        "",
    );
    let events = records.iter().filter(|r| r.is_write() && is_event(r)).count();
    report.row(
        &format!("{label}: writes per issuance, without Events"),
        format!("{:.2}", per(writes(records) - events)),
        writes_target,
    );
    report.row(&format!("{label}: Events per issuance"), format!("{:.2}", per(events)), "≤ 1");
    for verb in ["get", "list", "create", "patch", "apply", "update", "delete", "watch"] {
        report.row(
            &format!("{label}: {} per issuance", verb.to_uppercase()),
            format!("{:.2}", per(counts.get(verb).copied().unwrap_or(0))),
            "",
        );
    }
    for verb in ["deletecollection", "other"] {
        if let Some(&n) = counts.get(verb) {
            report.row(&format!("{label}: {} per issuance", verb.to_uppercase()), format!("{:.2}", per(n)), "");
        }
    }
    let mut by_kind: HashMap<(&'static str, String), usize> = HashMap::new();
    for record in records {
        *by_kind.entry((record.verb(), record.resource())).or_default() += 1;
    }
    let mut by_kind: Vec<_> = by_kind.into_iter().collect();
    by_kind.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut table = format!(
        "{label}: operator requests per issuance by verb and resource ({} requests, {issued} certificates)\n\n| verb | resource | per issuance | total |\n|---|---|---|---|\n",
        records.len()
    );
    for ((verb, resource), n) in by_kind.iter().take(25) {
        table.push_str(&format!("| {} | {resource} | {:.2} | {n} |\n", verb.to_uppercase(), per(*n)));
    }
    report.details.push(table);
}

/// The average JSON size of a Certificate trimmed as the operator caches it: the one object it
/// keeps whole per certificate (attempts and Secrets are kept as small records of what
/// decisions read; attempts with work left are kept whole only while they have it).
async fn cached_certificate_size(api: &Api<Certificate>) -> String {
    let mut certificates = api.list(&Default::default()).await.expect("list").items;
    let count = certificates.len().max(1);
    let total: usize = certificates
        .iter_mut()
        .map(|c| {
            certpilot::controller::cache::trim_certificate(c);
            serde_json::to_vec(c).map(|v| v.len()).unwrap_or_default()
        })
        .sum();
    format!("{} B", total / count)
}

/// When the operator went quiet: no request but watches for [`QUIET`] while `settled` holds.
struct Quiet {
    /// The last non-watch request of the operator seen, if any.
    last_request: Option<Instant>,
    /// When it was quiet; `None` if it was not within the limit.
    quiet_at: Option<Instant>,
}

/// Waits until the operator, judged by its requests from `mark` on, is quiet, counting from
/// `since`; gives up after `limit`. On a real cluster (no request log) it waits [`QUIET`].
async fn wait_quiet(
    cluster: &TestCluster,
    mark: usize,
    since: Instant,
    limit: Duration,
    settled: impl Fn() -> bool,
) -> Quiet {
    let Some(server) = cluster.server() else {
        tokio::time::sleep(QUIET).await;
        return Quiet { last_request: None, quiet_at: settled().then(Instant::now) };
    };
    let mut cursor = mark;
    let mut last_request = None;
    loop {
        let new = server.faults().requests_since(cursor);
        cursor += new.len();
        if let Some(at) = new.iter().filter(|r| is_operator(r) && !r.is_watch()).map(|r| r.at).max() {
            last_request = Some(at);
        }
        let now = Instant::now();
        if now.duration_since(last_request.unwrap_or(since).max(since)) >= QUIET && settled() {
            return Quiet { last_request, quiet_at: Some(now) };
        }
        if now.duration_since(since) >= limit {
            return Quiet { last_request, quiet_at: None };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    total: usize,
    ready: usize,
}

fn is_ready(cert: &Certificate) -> bool {
    let status = cert.status.as_ref();
    let current = status.and_then(|s| s.observed_generation) == cert.metadata.generation;
    current && status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How many Certificates exist and how many are Ready, followed with one watch; and, for the
/// renewal rounds, how many have their latest attempt succeeded at each attempt index.
struct Readiness {
    counts: watch::Receiver<Counts>,
    /// Attempt index of each Certificate's newest history entry when it succeeded → how many.
    succeeded: Arc<Mutex<SucceededAt>>,
    task: tokio::task::JoinHandle<()>,
}

/// Each Certificate's newest succeeded attempt index (from the head of `status.history`), and
/// how many Certificates are at each index.
#[derive(Default)]
struct SucceededAt {
    by_name: HashMap<String, u32>,
    by_index: BTreeMap<u32, usize>,
}

impl SucceededAt {
    fn set(&mut self, name: String, index: Option<u32>) {
        let before = match index {
            Some(index) => self.by_name.insert(name, index),
            None => self.by_name.remove(&name),
        };
        if let Some(before) = before {
            *self.by_index.entry(before).or_default() -= 1;
        }
        if let Some(index) = index {
            *self.by_index.entry(index).or_default() += 1;
        }
    }

    fn at_least(&self, index: u32) -> usize {
        self.by_index.range(index..).map(|(_, n)| n).sum()
    }
}

/// `c7-3` → 3, when the newest attempt in the Certificate's history succeeded.
fn succeeded_index(cert: &Certificate) -> Option<u32> {
    let newest = cert.status.as_ref()?.history.first()?;
    (newest.phase == AttemptPhase::Succeeded).then_some(())?;
    newest.name.rsplit('-').next()?.parse().ok()
}

impl Readiness {
    fn follow(api: Api<Certificate>) -> Self {
        let (tx, counts) = watch::channel(Counts::default());
        let succeeded = Arc::new(Mutex::new(SucceededAt::default()));
        let record = succeeded.clone();
        let task = tokio::spawn(async move {
            let mut ready: HashMap<String, bool> = HashMap::new();
            let mut listing: Option<HashMap<String, bool>> = None;
            let mut ready_count = 0usize;
            let config = watcher::Config::default().page_size(1000);
            let mut events = watcher(api, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
                    Ok(watcher::Event::InitApply(cert)) => {
                        record.lock().expect("lock").set(cert.name_any(), succeeded_index(&cert));
                        listing.get_or_insert_default().insert(cert.name_any(), is_ready(&cert));
                    }
                    Ok(watcher::Event::InitDone) => {
                        ready = listing.take().unwrap_or_default();
                        ready_count = ready.values().filter(|r| **r).count();
                    }
                    Ok(watcher::Event::Apply(cert)) => {
                        record.lock().expect("lock").set(cert.name_any(), succeeded_index(&cert));
                        let now = is_ready(&cert);
                        let before = ready.insert(cert.name_any(), now).unwrap_or(false);
                        ready_count = ready_count + usize::from(now) - usize::from(before);
                    }
                    Ok(watcher::Event::Delete(cert)) => {
                        if ready.remove(&cert.name_any()).unwrap_or(false) {
                            ready_count -= 1;
                        }
                    }
                    Err(e) => eprintln!("[bench] watch on Certificates: {e}"),
                }
                // Every event wakes the waiters: the renewal rounds read `succeeded`.
                tx.send_replace(Counts { total: ready.len(), ready: ready_count });
            }
        });
        Self { counts, succeeded, task }
    }

    /// Waits until `n` Certificates' newest attempt is attempt `index` or later and succeeded;
    /// `false` after `timeout`.
    async fn wait_all_succeeded_at(&mut self, n: usize, index: u32, started: Instant, timeout: Duration) -> bool {
        let succeeded = self.succeeded.clone();
        let count = move || succeeded.lock().expect("lock").at_least(index);
        loop {
            let wait = self.counts.wait_for(|_| count() >= n);
            match tokio::time::timeout(Duration::from_secs(10), wait).await {
                Ok(done) => return done.is_ok(),
                Err(_) => {
                    eprintln!(
                        "[bench] {} of {n} Certificates at attempt {index} after {}",
                        count(),
                        seconds(started.elapsed())
                    );
                    if started.elapsed() >= timeout {
                        return false;
                    }
                }
            }
        }
    }

    /// Waits until `n` Certificates are Ready, printing progress; `false` after `timeout`.
    async fn wait_all_ready(&mut self, n: usize, started: Instant, timeout: Duration) -> bool {
        loop {
            let wait = self.counts.wait_for(|c| c.total == n && c.ready == n);
            let waited = tokio::time::timeout(Duration::from_secs(10), wait).await.map(|result| result.is_ok());
            match waited {
                Ok(ready) => return ready,
                Err(_) => {
                    let counts = *self.counts.borrow();
                    eprintln!(
                        "[bench] {} of {n} Certificates Ready after {}",
                        counts.ready,
                        seconds(started.elapsed())
                    );
                    if started.elapsed() >= timeout {
                        return false;
                    }
                }
            }
        }
    }

    fn ready(&self) -> usize {
        self.counts.borrow().ready
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn apply_issuer(api: &Api<Issuer>, doc: serde_json::Value) {
    let name = doc["metadata"]["name"].as_str().expect("issuer name").to_string();
    api.patch(&name, &PatchParams::apply("certpilot-bench").force(), &Patch::Apply(&doc))
        .await
        .expect("Issuer applies");
}

async fn wait_issuer_ready(api: &Api<Issuer>, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let issuer = api.get(name).await.expect("Issuer reads");
        let ready =
            issuer.status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready || Instant::now() >= deadline {
            if !ready {
                eprintln!("[bench] Issuer {name} not Ready after {}", seconds(timeout));
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn bench_client(cluster: &TestCluster) -> Client {
    cluster.client_with_user_agent(BENCH_USER_AGENT).expect("bench client")
}

fn solver_args() -> Vec<String> {
    PebbleOptions::on_free_ports().solver_args()
}

fn start_operator(cluster: &mut TestCluster, args: &[String]) -> Operator {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Operator::start_with(cluster, &args)
}

/// Issues `n` Certificates (applied at once) and reports the time until all are Ready and the
/// operator's requests from the first apply until it is quiet again. Returns whether all
/// became Ready.
async fn issue(
    report: &mut Report,
    (label, writes_target): (&str, &str),
    cluster: &TestCluster,
    readiness: &mut Readiness,
    n: usize,
    (prefix, domain, issuer): (&str, &str, &str),
    timeout: Duration,
) -> bool {
    let certificates: Api<Certificate> = Api::namespaced(bench_client(cluster), cluster.namespace());
    let mark = request_mark(cluster);
    let started = Instant::now();
    bulk::apply_certificates(&certificates, n, prefix, domain, issuer).await;
    eprintln!("[bench] {label}: {n} Certificates applied in {}", seconds(started.elapsed()));
    let all_ready = readiness.wait_all_ready(n, started, timeout).await;
    let elapsed = started.elapsed();
    if all_ready {
        let rate = n as f64 / elapsed.as_secs_f64();
        report.row(&format!("{label}: time to all Ready"), format!("{} ({rate:.1} certs/s)", seconds(elapsed)), "");
    } else {
        report.row(
            &format!("{label}: time to all Ready"),
            format!("not all Ready: {} of {n} after {}", readiness.ready(), seconds(elapsed)),
            "",
        );
    }
    // The work an issuance causes may trail its Ready condition (attempt clean-up…): count up
    // to when the operator is quiet, a minute at most.
    let ready_at = Instant::now();
    let quiet = wait_quiet(cluster, mark, ready_at, Duration::from_secs(60), || true).await;
    report.row(
        &format!("{label}: operator quiet after all Ready"),
        match quiet.quiet_at {
            Some(at) => format!(
                "{}, quiet ({} s without requests) {} after",
                quiet
                    .last_request
                    .filter(|l| *l > ready_at)
                    .map_or("no request after".into(), |l| format!("last request {} after", seconds(l - ready_at))),
                QUIET.as_secs(),
                seconds(at - ready_at)
            ),
            None => "still busy 60 s after".to_string(),
        },
        "",
    );
    if let Some(records) = operator_requests(cluster, mark) {
        let until = quiet.quiet_at.unwrap_or_else(Instant::now);
        let records: Vec<_> = records.into_iter().filter(|r| r.at <= until).collect();
        let issued = if all_ready { n } else { readiness.ready() };
        per_issuance(report, label, &records, issued, writes_target);
    }
    all_ready
}

async fn self_signed(report: &mut Report, params: &Params) {
    let n = params.certificates;
    let mut cluster = TestCluster::start("bench-scale").await.expect("test cluster starts");
    install_certpilot_crds(&cluster).await;
    let client = bench_client(&cluster);
    let issuers: Api<Issuer> = Api::namespaced(client.clone(), cluster.namespace());
    apply_issuer(
        &issuers,
        json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "local"}, "spec": {"selfSigned": {}}}),
    )
    .await;

    let started = Instant::now();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), cluster.namespace());
    let payload = ByteString(vec![b'x'; 10 * 1024]);
    futures::stream::iter(0..params.unrelated_secrets)
        .map(|i| {
            let mut secret = Secret::default();
            secret.metadata.name = Some(format!("unrelated-{i}"));
            secret.data = Some([("blob".to_string(), payload.clone())].into());
            let secrets = &secrets;
            async move { secrets.create(&PostParams::default(), &secret).await.map(drop) }
        })
        .buffer_unordered(bulk::IN_FLIGHT)
        .try_collect::<()>()
        .await
        .expect("unrelated Secrets are created");
    eprintln!("[bench] {} unrelated Secrets created in {}", params.unrelated_secrets, seconds(started.elapsed()));

    let mut readiness = Readiness::follow(Api::namespaced(client.clone(), cluster.namespace()));
    let args = solver_args();
    let mark = request_mark(&cluster);
    let started = Instant::now();
    let operator = start_operator(&mut cluster, &args);
    wait_issuer_ready(&issuers, "local", Duration::from_secs(60)).await;
    let quiet = wait_quiet(&cluster, mark, started, params.timeout, || true).await;
    if let Some(at) = quiet.last_request {
        eprintln!("[bench] idle operator's last start-up request {} after its start", seconds(at - started));
    }
    if let Some(records) = operator_requests(&cluster, mark) {
        let mut agents: Vec<_> = records.iter().map(|r| r.user_agent.as_str()).collect();
        agents.sort_unstable();
        agents.dedup();
        let agents: Vec<_> = agents.iter().map(|a| if a.is_empty() { "(none)" } else { a }).collect();
        report.row("operator's User-Agent header", agents.join(", "), "");
    }
    let baseline = settled_rss(operator.pid()).await;
    report.row(
        &format!("operator RSS, idle, with {} unrelated Secrets (baseline)", params.unrelated_secrets),
        mib(baseline),
        "flat in unrelated Secrets",
    );

    let label = "self-signed";
    let all_ready =
        issue(report, (label, "≤ 4"), &cluster, &mut readiness, n, ("c", "example.com", "local"), params.timeout).await;
    let rss = settled_rss(operator.pid()).await;
    let ready = if all_ready { n } else { readiness.ready() };
    report.row("operator RSS after all Ready (settled)", mib(rss), "");
    report.row(
        "RSS per Ready certificate (minus baseline)",
        format!("{:.2} KiB", rss.saturating_sub(baseline) as f64 / ready.max(1) as f64),
        "≤ 6 KiB",
    );
    report.row(
        "Certificate as cached (JSON; attempts and Secrets are cached as records)",
        cached_certificate_size(&Api::namespaced(bench_client(&cluster), cluster.namespace())).await,
        "",
    );

    let mark = request_mark(&cluster);
    tokio::time::sleep(params.idle).await;
    if let Some(records) = operator_requests(&cluster, mark) {
        let non_watch: Vec<_> = records.into_iter().filter(|r| !r.is_watch()).collect();
        let idle = params.idle.as_secs();
        report.row(&format!("idle {idle} s after all Ready: operator writes"), writes(&non_watch).to_string(), "0");
        report.row(
            &format!("idle {idle} s after all Ready: operator requests (not watches)"),
            format!("{} ({})", non_watch.len(), verbs_summary(&non_watch)),
            "",
        );
        if !non_watch.is_empty() {
            report.details.push(request_list("requests of the operator during the idle window", &non_watch));
        }
    }

    let certificates: Api<Certificate> = Api::namespaced(client.clone(), cluster.namespace());
    let before_restart = certificates.list(&Default::default()).await.expect("Certificates list").items;
    operator.kill();
    let mark = request_mark(&cluster);
    let started = Instant::now();
    let operator = start_operator(&mut cluster, &args);
    let quiet = wait_quiet(&cluster, mark, started, params.timeout, || readiness.ready() >= ready).await;
    report.row(
        "restart (SIGKILL, new operator): time to last request (not watch)",
        quiet.last_request.map_or("none".into(), |at| seconds(at.saturating_duration_since(started))),
        "≤ 30 s",
    );
    report.row(
        "restart: time to quiet",
        match quiet.quiet_at {
            Some(at) => {
                format!("{} ({ready} still Ready, {} s without requests)", seconds(at - started), QUIET.as_secs())
            }
            None => format!("not quiet after {} ({} Ready)", seconds(params.timeout), readiness.ready()),
        },
        "",
    );
    if let Some(records) = operator_requests(&cluster, mark) {
        let until = quiet.quiet_at.unwrap_or_else(Instant::now);
        let records: Vec<_> = records.into_iter().filter(|r| r.at <= until).collect();
        report.row("restart: operator requests", format!("{} ({})", records.len(), verbs_summary(&records)), "");
        report.row("restart: operator writes", writes(&records).to_string(), "0");
        let written: Vec<_> = records.iter().filter(|r| r.is_write()).cloned().collect();
        if !written.is_empty() {
            report.details.push(request_list("writes of the operator during restart", &written));
        }
    }
    report.row("restart: operator RSS (settled)", mib(settled_rss(operator.pid()).await), "");
    let after_restart = certificates.list(&Default::default()).await.expect("Certificates list").items;
    let (changed, example) = changed_statuses(&before_restart, &after_restart);
    report.row("restart: Certificates whose object changed", changed.to_string(), "0");
    report.details.extend(example);
    if params.renewals > 0 {
        renewal_rounds(report, params, &certificates, &mut readiness, (operator.pid(), baseline)).await;
    }
}

/// The steady state of a cluster that has run for a while: each Certificate renewed
/// `params.renewals` times by hand (one round at a time, all Certificates at once), so each
/// has that many more attempts and a longer `status.history`; then the operator's RSS per
/// certificate against the same baseline.
async fn renewal_rounds(
    report: &mut Report,
    params: &Params,
    certificates: &Api<Certificate>,
    readiness: &mut Readiness,
    (pid, baseline): (u32, u64),
) {
    let n = params.certificates;
    let started = Instant::now();
    for round in 1..=params.renewals {
        bulk::request_renewals(certificates, n, "c", &format!("bench-round-{round}")).await;
        // Attempt 1 issued; round r's attempt is r + 1.
        let index = u32::try_from(round + 1).expect("a small number of rounds");
        if !readiness.wait_all_succeeded_at(n, index, started, params.timeout).await {
            report.row("renewal rounds", format!("round {round} unfinished after {}", seconds(started.elapsed())), "");
            return;
        }
    }
    let renewals = n * params.renewals;
    let elapsed = started.elapsed();
    report.row(
        &format!("{} renewal rounds (every Certificate renewed by hand, round by round)", params.renewals),
        format!(
            "{renewals} renewals in {} ({:.1} renewals/s)",
            seconds(elapsed),
            renewals as f64 / elapsed.as_secs_f64()
        ),
        "",
    );
    let rss = settled_rss(pid).await;
    let attempts = params.renewals + 1;
    report.row(
        &format!("after the rounds: RSS per certificate ({attempts} attempts each, minus baseline)"),
        format!("{:.2} KiB ({} in all)", rss.saturating_sub(baseline) as f64 / n.max(1) as f64, mib(rss)),
        "≤ 6 KiB",
    );
    report.row("after the rounds: Certificate as cached (JSON)", cached_certificate_size(certificates).await, "");
}

/// How many Certificates of `after` have another resourceVersion than in `before`, and for the
/// first of them, the status fields that differ.
fn changed_statuses(before: &[Certificate], after: &[Certificate]) -> (usize, Option<String>) {
    let before: HashMap<_, _> = before.iter().map(|c| (c.name_any(), c)).collect();
    let changed: Vec<_> = after
        .iter()
        .filter_map(|c| before.get(&c.name_any()).map(|b| (*b, c)))
        .filter(|(b, c)| b.resource_version() != c.resource_version())
        .collect();
    let example = changed.first().map(|(b, c)| {
        let value = |c: &Certificate| serde_json::to_value(&c.status).unwrap_or_default();
        let (old, new) = (value(b), value(c));
        let mut text = format!(
            "first Certificate changed by the restart: {} (status fields that differ)\n\n| field | before | after |\n|---|---|---|\n",
            c.name_any()
        );
        let keys: std::collections::BTreeSet<&String> =
            old.as_object().into_iter().chain(new.as_object()).flat_map(|o| o.keys()).collect();
        for key in keys {
            if old.get(key) != new.get(key) {
                let show = |v: Option<&serde_json::Value>| {
                    let text = v.map_or("(absent)".to_string(), |v| v.to_string()).replace('|', "\\|");
                    if text.chars().count() > 400 { format!("{}…", text.chars().take(400).collect::<String>()) } else { text }
                };
                text.push_str(&format!("| {key} | `{}` | `{}` |\n", show(old.get(key)), show(new.get(key))));
            }
        }
        text
    });
    (changed.len(), example)
}

/// A detail table of requests grouped by verb and resource.
fn request_list(title: &str, records: &[RequestRecord]) -> String {
    let mut groups: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
    for record in records {
        *groups.entry((record.verb(), record.resource())).or_default() += 1;
    }
    let mut table = format!("{title}\n\n| verb | resource | count |\n|---|---|---|\n");
    for ((verb, resource), n) in groups {
        table.push_str(&format!("| {} | {resource} | {n} |\n", verb.to_uppercase()));
    }
    table
}

async fn acme(report: &mut Report, params: &Params) {
    let n = params.acme_certificates;
    let mut cluster = TestCluster::start("bench-acme").await.expect("test cluster starts");
    install_certpilot_crds(&cluster).await;
    let options = PebbleOptions::on_free_ports();
    let args = options.solver_args();
    let pebble = Pebble::start(options);
    let client = bench_client(&cluster);
    let issuers: Api<Issuer> = Api::namespaced(client.clone(), cluster.namespace());
    apply_issuer(&issuers, pebble.acme_issuer("pebble", json!({}))).await;
    let mut readiness = Readiness::follow(Api::namespaced(client.clone(), cluster.namespace()));
    let operator = start_operator(&mut cluster, &args);
    wait_issuer_ready(&issuers, "pebble", Duration::from_secs(60)).await;
    let orders_before = pebble.new_orders();
    let label = "ACME (Pebble, http-01)";
    let all_ready =
        issue(report, (label, "≤ 6"), &cluster, &mut readiness, n, ("a", "certpilot.test", "pebble"), params.timeout)
            .await;
    let issued = if all_ready { n } else { readiness.ready() };
    let orders = pebble.new_orders() - orders_before;
    report.row(
        &format!("{label}: orders per certificate"),
        format!("{:.2} ({orders} orders)", orders as f64 / issued.max(1) as f64),
        "1",
    );
    drop(operator);
}

fn main() {
    let params = Params::from_env();
    println!("certpilot scale bench");
    println!("- CERTPILOT_BENCH_CERTIFICATES={}", params.certificates);
    println!("- CERTPILOT_BENCH_UNRELATED_SECRETS={} (10 KiB each)", params.unrelated_secrets);
    println!("- CERTPILOT_BENCH_IDLE_SECONDS={}", params.idle.as_secs());
    println!("- CERTPILOT_BENCH_ACME_CERTIFICATES={}", params.acme_certificates);
    println!("- CERTPILOT_BENCH_RENEWALS={}", params.renewals);
    println!("- CERTPILOT_BENCH_TIMEOUT_SECONDS={}", params.timeout.as_secs());
    println!(
        "- operator: the test flags of `Operator::start` (--retry-base 2s --retry-max 10s --min-renewal-interval 1s), other flags at their defaults"
    );
    println!("- operator requests: every request but the bench client's (User-Agent {BENCH_USER_AGENT})\n");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let report = runtime.block_on(async {
        let mut report = Report::default();
        report.row("certificates (self-signed)", params.certificates.to_string(), "10000");
        report.row("unrelated Secrets (10 KiB)", params.unrelated_secrets.to_string(), "");
        self_signed(&mut report, &params).await;
        if params.acme_certificates > 0 {
            report.row("certificates (ACME)", params.acme_certificates.to_string(), "");
            acme(&mut report, &params).await;
        }
        report
    });
    report.print();
}
