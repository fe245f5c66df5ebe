//! moto (PyPI `moto[server]`) in server mode on a free loopback port: AWS's Route 53 and STS as a
//! real server keeps them, without AWS; and [`Route53Front`], a proxy in front of it that does
//! what moto cannot:
//!
//! - Propagation. moto has no nameservers, and answers every change INSYNC at once. The front
//!   answers a change PENDING, as Route 53 does, and on each `GetChange` first copies the TXT
//!   records moto stores into BIND (with certpilot's own RFC 2136 updates): INSYNC then means
//!   what it means on AWS, that the record is served, and the CA (Pebble resolving through
//!   BIND) sees exactly what moto holds. A provider that asked the CA before INSYNC would find
//!   nothing there.
//! - Throttling. moto never throttles; the front can answer the first ChangeResourceRecordSets
//!   calls with Route 53's `Throttling` error, as fault injection.
//! - A record of the requests (User-Agent, the signing key id, STS's answers), to show which
//!   credentials signed what.
//!
//! The test's own calls (creating zones, reading what moto stores) go to moto directly.
#![allow(dead_code)]

use super::{bind::KEY_NAME, pebble::free_port};
use aws_sdk_route53::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
    types::{
        Change, ChangeAction, ChangeBatch, HostedZoneConfig, ResourceRecord, ResourceRecordSet, RrType, Vpc, VpcRegion,
    },
};
use axum::{body::Body, extract::State, response::Response};
use bytes::Bytes;
use certpilot::solver::dns01::{Provider, rfc2136::Rfc2136, txt_values};
use http_body_util::{BodyExt, Full};
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub client: Client,
}

impl Moto {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("moto's server is installed (pip install 'moto[server]')");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start listening on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!("http://127.0.0.1:{port}");
        Self { child, client: client(&url, "test-admin", "test-admin"), url }
    }

    /// Creates a hosted zone (private ones in a made-up VPC); returns its id (`Z…`).
    pub async fn create_zone(&self, name: &str, private: bool) -> String {
        let mut request =
            self.client.create_hosted_zone().name(name).caller_reference(format!("{name}-{private}-{}", free_port()));
        if private {
            let vpc = Vpc::builder().vpc_region(VpcRegion::UsEast1).vpc_id("vpc-certpilot").build();
            request = request.hosted_zone_config(HostedZoneConfig::builder().private_zone(true).build()).vpc(vpc);
        }
        let zone = request.send().await.expect("moto creates the hosted zone");
        zone.hosted_zone().expect("a hosted zone").id().trim_start_matches("/hostedzone/").to_string()
    }

    /// Every TXT record set in `zone`: name (no trailing dot) and values (as stored, quoted).
    pub async fn txt_sets(&self, zone: &str) -> TxtSets {
        let listed = self.client.list_resource_record_sets().hosted_zone_id(zone).send().await.expect("moto lists");
        listed
            .resource_record_sets()
            .iter()
            .filter(|set| *set.r#type() == RrType::Txt)
            .map(|set| {
                let values = set.resource_records().iter().map(|r| r.value().to_string()).collect();
                (set.name().trim_end_matches('.').to_string(), values)
            })
            .collect()
    }

    /// The TXT values moto stores at `name` in `zone`, as stored (quoted).
    pub async fn txt_values(&self, zone: &str, name: &str) -> Vec<String> {
        let name = name.trim_end_matches('.');
        self.txt_sets(zone).await.into_iter().find(|(n, _)| n == name).map(|(_, v)| v).unwrap_or_default()
    }

    /// Writes the TXT set at `name` as someone other than certpilot would.
    pub async fn put_txt(&self, zone: &str, name: &str, values: &[&str]) {
        let records = values.iter().map(|v| ResourceRecord::builder().value(*v).build().unwrap()).collect();
        let set = ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::Txt)
            .ttl(300)
            .set_resource_records(Some(records))
            .build()
            .unwrap();
        let change = Change::builder().action(ChangeAction::Upsert).resource_record_set(set).build().unwrap();
        let batch = ChangeBatch::builder().changes(change).build().unwrap();
        self.client.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch).send().await.unwrap();
    }

    /// From now on moto checks every request's key against its IAM users and assumed roles, as
    /// AWS does (moto's `/moto-api/reset-auth`).
    pub async fn check_keys(&self) {
        let request =
            http::Request::post(format!("{}/moto-api/reset-auth", self.url)).body(Full::new(Bytes::from("0"))).unwrap();
        let response = http_client().request(request).await.expect("moto answers");
        assert!(response.status().is_success(), "reset-auth: {}", response.status());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Route 53 client of moto (at `url`) signing with the given keys.
pub fn client(url: &str, key_id: &str, secret: &str) -> Client {
    let config = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key_id, secret, None, None, "test"))
        .endpoint_url(url)
        .build();
    Client::from_conf(config)
}

type HttpClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

/// One request the front received, and what it answered.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub user_agent: String,
    /// The access key id the request was signed with (from `Authorization`), if signed.
    pub key_id: Option<String>,
    pub body: String,
    pub status: u16,
    pub answer: String,
}

/// TXT record sets: names and values (as stored, quoted).
pub type TxtSets = Vec<(String, Vec<String>)>;

/// BIND serving what moto stores: moto's hosted zone (its id) and the BIND zone of the same name.
struct Mirror {
    moto: Client,
    bind: String,
    tsig_secret: String,
    zones: Vec<String>,
    /// Names the mirror wrote to BIND, to remove what moto no longer has.
    written: tokio::sync::Mutex<BTreeSet<String>>,
    /// What moto stored at each copy: TXT record names and values (as stored, quoted).
    copies: Mutex<Vec<TxtSets>>,
}

struct Shared {
    moto: String,
    client: HttpClient,
    seen: Mutex<Vec<Seen>>,
    /// How many ChangeResourceRecordSets calls are still to be throttled.
    throttle: Mutex<usize>,
    mirror: Option<Mirror>,
}

pub struct Route53Front {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Route53Front {
    /// A front of `moto` that copies the TXT records of moto's hosted `zones` into the BIND at
    /// `bind` (which serves zones of the same names, updatable with `tsig_secret`).
    pub async fn start(moto: &Moto, bind: &super::bind::Bind, zones: &[&str]) -> Self {
        let mirror = Mirror {
            moto: moto.client.clone(),
            bind: bind.address.clone(),
            tsig_secret: bind.tsig_secret.clone(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            written: Default::default(),
            copies: Default::default(),
        };
        Self::serve(moto, Some(mirror)).await
    }

    /// A front that mirrors nothing (for calls that never get that far).
    pub async fn without_mirror(moto: &Moto) -> Self {
        Self::serve(moto, None).await
    }

    async fn serve(moto: &Moto, mirror: Option<Mirror>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("front listens");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            moto: moto.url.clone(),
            client: http_client(),
            seen: Mutex::new(Vec::new()),
            throttle: Mutex::new(0),
            mirror,
        });
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `count` ChangeResourceRecordSets calls are answered with Route 53's `Throttling`.
    pub fn throttle_changes(&self, count: usize) {
        *self.shared.throttle.lock().unwrap() = count;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// What moto stored each time the front copied it into BIND (at each `GetChange`, just
    /// before certpilot learns that its change is out): TXT names (with a trailing dot) and
    /// values, quoted as stored.
    pub fn copies(&self) -> Vec<TxtSets> {
        self.shared.mirror.as_ref().map(|m| m.copies.lock().unwrap().clone()).unwrap_or_default()
    }

    /// The ChangeResourceRecordSets calls received, throttled or not.
    pub fn changes(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(is_change).collect()
    }
}

impl Drop for Route53Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_change(seen: &Seen) -> bool {
    seen.method == "POST" && seen.target.contains("/rrset")
}

/// Route 53's answer to a throttled call.
const THROTTLING: &str = r#"<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>certpilot-test-throttle</RequestId></ErrorResponse>"#;

async fn forward(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut seen = Seen {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        user_agent: header("user-agent"),
        key_id: header("authorization").split("Credential=").nth(1).and_then(|c| c.split('/').next()).map(String::from),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
        answer: String::new(),
    };
    let throttled = is_change(&seen) && {
        let mut left = shared.throttle.lock().unwrap();
        let throttle = *left > 0;
        *left = left.saturating_sub(1);
        throttle
    };
    let (status, headers, answer) = if throttled {
        (400, vec![("content-type".to_string(), "text/xml".to_string())], THROTTLING.to_string())
    } else {
        if seen.method == "GET"
            && seen.target.starts_with("/2013-04-01/change/")
            && let Some(mirror) = &shared.mirror
        {
            mirror.copy().await;
        }
        let (status, headers, answer) = send(&shared, &parts, body).await;
        // Route 53 answers a change PENDING: only GetChange says when it is out.
        let answer = if is_change(&seen) {
            answer.replace("<Status>INSYNC</Status>", "<Status>PENDING</Status>")
        } else {
            answer
        };
        (status, headers, answer)
    };
    seen.status = status;
    seen.answer = answer.clone();
    shared.seen.lock().unwrap().push(seen);
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    response.body(Body::from(answer)).unwrap()
}

/// Sends the request on to moto; its status, headers (but the length) and body.
async fn send(shared: &Shared, parts: &http::request::Parts, body: Bytes) -> (u16, Vec<(String, String)>, String) {
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut upstream = http::Request::builder().method(parts.method.clone()).uri(format!("{}{target}", shared.moto));
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let response = shared.client.request(upstream.body(Full::new(body)).unwrap()).await.expect("moto answers");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != http::header::CONTENT_LENGTH && *name != http::header::TRANSFER_ENCODING)
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_string()))
        .collect();
    let answer = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, headers, String::from_utf8_lossy(&answer).into_owned())
}

impl Mirror {
    /// Makes BIND's TXT values equal to moto's, name by name.
    async fn copy(&self) {
        let mut written = self.written.lock().await;
        let mut stored = Vec::new();
        for zone in &self.zones {
            let listed = self.moto.list_resource_record_sets().hosted_zone_id(zone).send().await.expect("moto lists");
            for set in listed.resource_record_sets().iter().filter(|s| *s.r#type() == RrType::Txt) {
                let values: Vec<String> = set.resource_records().iter().map(|r| r.value().to_string()).collect();
                stored.push((set.name().to_string(), values));
            }
        }
        self.copies.lock().unwrap().push(stored.clone());
        let names: BTreeSet<String> =
            stored.iter().map(|(name, _)| name.clone()).chain(written.iter().cloned()).collect();
        let bind = Rfc2136::with_key(&self.bind, KEY_NAME, None, &self.tsig_secret).expect("the TSIG key");
        for name in names {
            let quoted = stored.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap_or_default();
            let wanted: Vec<String> = quoted.iter().map(|v| v.trim_matches('"').to_string()).collect();
            let served = txt_values(&self.bind, &name).await.expect("BIND answers");
            let fqdn = name.parse().expect("a DNS name");
            for value in wanted.iter().filter(|v| !served.contains(v)) {
                bind.add_txt(&fqdn, value).await.expect("BIND takes the update");
            }
            for value in served.iter().filter(|v| !wanted.contains(v)) {
                bind.remove_txt(&fqdn, value).await.expect("BIND takes the update");
            }
            written.insert(name);
        }
    }
}
