//! `cargo bench --bench footprint`: the operator's heap per certificate, and what holds it.
//!
//! `benches/scale.rs` reads the operator's RSS, which also counts what the allocator keeps in
//! reserve; this bench counts the heap itself. The operator runs in this process, on a thread
//! of its own whose allocations are counted (bytes in use, at jemalloc's size classes, net of
//! what that thread freed). It issues N self-signed Certificates against the in-process test
//! API server; the heap it holds once quiet, minus what it held before, per certificate, is
//! the first figure. Then the objects it cached are listed and cached again piece by piece on
//! a fresh counted thread (the Certificate store, the attempt records, the Secrets' verified
//! contents, the status histories alone), each piece's heap per certificate a row.
//!
//! Parameters (environment): `CERTPILOT_FOOTPRINT_CERTIFICATES` (N, default 2000) and
//! `CERTPILOT_FOOTPRINT_RENEWALS` (0: renewals by hand of every Certificate, one round at a
//! time, before measuring: more attempts each, a longer `status.history`).

#[path = "../tests/support/mod.rs"]
mod support;

use certpilot::{
    api::CERTIFICATE_NAME_LABEL,
    api::{Certificate, CertificateAttempt, Issuer, certificate::AttemptHistoryEntry},
    cli::ControllerArgs,
    controller::cache::{AttemptIndex, AttemptRecord, Feeds, SecretIndex, Verified, trim_attempt, trim_certificate},
    pki::NameRequest,
};
use certpilot_test_apiserver::cluster::TestCluster;
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{reflector::store::Writer, watcher},
};
use serde_json::json;
use std::{
    alloc::{GlobalAlloc, Layout},
    cell::Cell,
    sync::atomic::{AtomicIsize, Ordering},
    time::{Duration, Instant},
};
use support::{bulk, install_certpilot_crds};
use tikv_jemallocator::Jemalloc;

/// The operator's allocator, counting the heap of the threads marked [`COUNTED`].
struct Counting;

thread_local! {
    /// Whether this thread's allocations count (const: reading it allocates nothing).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Bytes in use by the counted threads' allocations, net of their frees.
static HEAP: AtomicIsize = AtomicIsize::new(0);

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn usable(ptr: *mut u8) -> isize {
    // SAFETY: `ptr` was allocated by jemalloc and not yet freed.
    unsafe { tikv_jemallocator::usable_size(ptr) as isize }
}

// SAFETY: every call is passed to jemalloc unchanged; counting only reads sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { Jemalloc.alloc(layout) };
        if counted() && !ptr.is_null() {
            HEAP.fetch_add(usable(ptr), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            HEAP.fetch_sub(usable(ptr), Ordering::Relaxed);
        }
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { Jemalloc.alloc_zeroed(layout) };
        if counted() && !ptr.is_null() {
            HEAP.fetch_add(usable(ptr), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = if counted() { usable(ptr) } else { 0 };
        let new = unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        if counted() && !new.is_null() {
            HEAP.fetch_add(usable(new) - before, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap() -> isize {
    HEAP.load(Ordering::Relaxed)
}

/// The heap a counted piece of work leaves behind, per certificate.
fn per_certificate(bytes: isize, n: usize) -> String {
    format!("{:.0} B", bytes as f64 / n.max(1) as f64)
}

/// The operator's flags: `operate` takes them as parsed.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    controller: ControllerArgs,
}

/// Runs the operator on a counted thread of its own (a single-threaded runtime, so its tasks
/// allocate there) against `config`.
fn start_operator(config: kube::Config, namespace: &str) {
    // Nothing connects to its listeners here: any free loopback port will do.
    let any_port = "127.0.0.1:0";
    let flags = Flags::parse_from([
        "certpilot",
        "--namespace",
        namespace,
        "--probe-address",
        any_port,
        "--solver-http-address",
        any_port,
        "--solver-tls-address",
        any_port,
        "--min-renewal-interval",
        "1s",
    ]);
    std::thread::spawn(move || {
        COUNTED.set(true);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let client = certpilot::outbound::kube_client(config).expect("client");
            if let Err(e) = certpilot::cli::controller::operate(client, flags.controller).await {
                eprintln!("[footprint] operator stopped: {e}");
            }
        });
    });
}

/// Waits until `check` holds for every Certificate, listing them every half second.
async fn wait_all(api: &Api<Certificate>, n: usize, what: &str, check: impl Fn(&Certificate) -> bool) {
    let started = Instant::now();
    loop {
        let certificates = api.list(&ListParams::default()).await.expect("Certificates list").items;
        let done = certificates.iter().filter(|c| check(c)).count();
        if done == n {
            eprintln!("[footprint] {n} Certificates {what} after {:.1} s", started.elapsed().as_secs_f64());
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "{done} of {n} Certificates {what} after 30 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_ready(cert: &Certificate) -> bool {
    cert.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn newest_attempt(cert: &Certificate) -> Option<(String, bool)> {
    let newest = cert.status.as_ref()?.history.first()?;
    Some((newest.name.clone(), newest.phase == certpilot::api::AttemptPhase::Succeeded))
}

/// The heap the five watches of `controller::cache` hold once filled (what a standby replica, or
/// an operator just restarted, holds before deciding anything), on a counted thread of their
/// own. Counted apart from the operator's: the difference is what its controllers hold.
async fn caches_heap(config: kube::Config, namespace: &str) -> isize {
    let namespace = namespace.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        COUNTED.set(true);
        let before = heap();
        runtime.block_on(async move {
            let client = certpilot::outbound::kube_client(config).expect("client");
            let (caches, feeds) = Feeds::new(&client, Some(&namespace));
            let watches = tokio::spawn(feeds.run());
            caches.wait_until_ready().await;
            // Filled; let what the listing left behind be freed.
            let mut last = heap();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if heap() == last {
                    break;
                }
                last = heap();
            }
            let _ = tx.send(heap() - before);
            // Keep the caches alive until the process ends.
            let _ = watches.await;
            drop(caches);
        });
    });
    rx.await.expect("caches measured")
}

/// Waits until the counted heap holds still for two seconds (the operator is done).
async fn settled_heap() -> isize {
    let mut last = heap();
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = heap();
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(2) {
            return now;
        }
    }
}

/// Runs `work` over `input` on a fresh counted thread; returns what it built and the heap
/// that holds it (`input` is dropped uncounted).
fn on_counted_thread<I: Send + 'static, T: Send + 'static>(
    input: I,
    work: impl FnOnce(&I) -> T + Send + 'static,
) -> (T, isize) {
    std::thread::spawn(move || {
        COUNTED.set(true);
        let before = heap();
        let kept = work(&input);
        let after = heap();
        COUNTED.set(false);
        drop(input);
        (kept, after - before)
    })
    .join()
    .expect("counted work")
}

struct Listed {
    certificates: Vec<Vec<u8>>,
    attempts: Vec<Vec<u8>>,
    secrets: Vec<Secret>,
}

/// Each piece of the operator's cache, rebuilt from the listed objects, per certificate.
fn pieces(listed: Listed, n: usize) -> Vec<(String, String)> {
    let Listed { certificates, attempts, secrets } = listed;
    let history_json: Vec<Vec<u8>> = certificates
        .iter()
        .map(|json| {
            let cert: Certificate = serde_json::from_slice(json).expect("Certificate");
            serde_json::to_vec(&cert.status.unwrap_or_default().history).expect("history")
        })
        .collect();
    let mut rows = Vec::new();
    let (_store, bytes) = on_counted_thread(certificates, |certificates| {
        let mut writer = Writer::<Certificate>::default();
        for json in certificates {
            let mut cert: Certificate = serde_json::from_slice(json).expect("Certificate");
            trim_certificate(&mut cert);
            writer.apply_watcher_event(&watcher::Event::Apply(cert));
        }
        writer
    });
    rows.push(("Certificates, as cached (reflector store, trimmed)".into(), per_certificate(bytes, n)));
    let histories: Vec<Vec<AttemptHistoryEntry>> =
        history_json.iter().map(|json| serde_json::from_slice(json).expect("history")).collect();
    // The store holds clones of what the watch deserialised: lists without spare room.
    let (_histories, bytes) = on_counted_thread(histories, |histories| histories.to_vec());
    rows.push(("… of which `status.history`".into(), per_certificate(bytes, n)));
    let count = attempts.len();
    let (_records, bytes) = on_counted_thread(attempts, |attempts| {
        let index = AttemptIndex::default();
        for json in attempts {
            let mut attempt: CertificateAttempt = serde_json::from_slice(json).expect("attempt");
            trim_attempt(&mut attempt);
            index.note(&attempt);
        }
        index
    });
    rows.push((format!("attempt records ({count} attempts, with their keys)"), per_certificate(bytes, n)));
    let (_index, bytes) = on_counted_thread(secrets, |secrets| {
        let index = SecretIndex::default();
        let now = jiff::Timestamp::now();
        for secret in secrets {
            let certificate = secret.labels().get(CERTIFICATE_NAME_LABEL).cloned().unwrap_or_default();
            let state = certpilot::secret::classify_adopting(Some(secret), &certificate, &NameRequest::default(), now);
            let version = secret.resource_version();
            let verified = Verified { version, written_by: None, certificate, state };
            index.put_verified(&secret.namespace().unwrap_or_default(), &secret.name_any(), verified);
        }
        index
    });
    rows.push((
        "what certpilot verified of its Secrets (`SecretIndex::put_verified`)".into(),
        per_certificate(bytes, n),
    ));
    let size = |name: &str, bytes: usize| (format!("(size of one `{name}`, inline)"), format!("{bytes} B"));
    rows.push(size("Certificate", std::mem::size_of::<Certificate>()));
    rows.push(size("AttemptHistoryEntry", std::mem::size_of::<AttemptHistoryEntry>()));
    rows.push(size("Condition", std::mem::size_of::<certpilot::api::Condition>()));
    rows.push(size("AttemptRecord", std::mem::size_of::<AttemptRecord>()));
    rows.push(size("StoredCertificate", std::mem::size_of::<certpilot::policy::trigger::StoredCertificate>()));
    rows
}

async fn list_json<K: kube::Resource + serde::Serialize + Clone + std::fmt::Debug + serde::de::DeserializeOwned>(
    api: &Api<K>,
) -> Vec<Vec<u8>> {
    let items = api.list(&ListParams::default()).await.expect("list").items;
    items.iter().map(|item| serde_json::to_vec(item).expect("serialises")).collect()
}

async fn renew(api: &Api<Certificate>, n: usize, rounds: usize) {
    for round in 1..=rounds {
        bulk::request_renewals(api, n, "c", &format!("footprint-{round}")).await;
        let wanted = |cert: &Certificate| {
            let name = format!("{}-{}", cert.name_any(), round + 1);
            newest_attempt(cert) == Some((name, true))
        };
        wait_all(api, n, &format!("renewed (round {round})"), wanted).await;
    }
}

fn main() {
    let number = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let n = number("CERTPILOT_FOOTPRINT_CERTIFICATES", 2000);
    let renewals = number("CERTPILOT_FOOTPRINT_RENEWALS", 0);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let rows = runtime.block_on(async {
        let cluster = TestCluster::start("bench-footprint").await.expect("test cluster starts");
        install_certpilot_crds(&cluster).await;
        let client: Client = cluster.client();
        let namespace = cluster.namespace().to_string();
        let issuers: Api<Issuer> = Api::namespaced(client.clone(), &namespace);
        let issuer = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "local"}, "spec": {"selfSigned": {}}});
        issuers.patch("local", &PatchParams::apply("footprint"), &Patch::Apply(&issuer)).await.expect("Issuer");
        start_operator(cluster.config(), &namespace);
        let idle = settled_heap().await;
        let certificates: Api<Certificate> = Api::namespaced(client.clone(), &namespace);
        bulk::apply_certificates(&certificates, n, "c", "example.com", "local").await;
        wait_all(&certificates, n, "Ready", is_ready).await;
        renew(&certificates, n, renewals).await;
        // What the last writes noted is forgotten by the housekeeping every 30 s.
        settled_heap().await;
        tokio::time::sleep(Duration::from_secs(35)).await;
        let busy = settled_heap().await;
        let mut rows = vec![
            ("operator heap, idle, before any Certificate".to_string(), format!("{:.1} KiB", idle as f64 / 1024.0)),
            ("operator heap per certificate, once quiet (minus idle)".to_string(), per_certificate(busy - idle, n)),
        ];
        let attempts: Api<CertificateAttempt> = Api::namespaced(client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let listed = Listed {
            certificates: list_json(&certificates).await,
            attempts: list_json(&attempts).await,
            secrets: secrets.list(&ListParams::default().labels("app.kubernetes.io/managed-by=certpilot")).await.expect("Secrets").items,
        };
        rows.push(("the five watches' caches alone (filled afresh, as after a restart)".to_string(), per_certificate(caches_heap(cluster.config(), &namespace).await, n)));
        rows.extend(tokio::task::spawn_blocking(move || pieces(listed, n)).await.expect("pieces"));
        rows
    });
    println!(
        "certpilot heap footprint bench\n- CERTPILOT_FOOTPRINT_CERTIFICATES={n}\n- CERTPILOT_FOOTPRINT_RENEWALS={renewals}\n"
    );
    println!("| what | heap per certificate |\n|---|---|");
    for (what, value) in rows {
        println!("| {what} | {value} |");
    }
    // The operator's thread runs on; leaving main ends it.
    std::process::exit(0);
}
