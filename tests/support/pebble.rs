//! Pebble (Let's Encrypt's ACME test server: Debian's 2.4, or v2.10.1 from `../shared/pebble`)
//! and pebble-challtestsrv as its DNS, started per test on free loopback ports, with a TLS
//! certificate generated at start.
#![allow(dead_code)]

use certpilot::pki::{
    PrivateKey,
    cert::{parse_chain, pem_certificates},
};
use k8s_openapi::api::core::v1::Secret;
use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

/// How many ports below the kernel's ephemeral range `free_port` hands out from.
const PORT_POOL: u32 = 16_000;

/// A loopback port nothing listens on (TCP or UDP), for a server started later (Pebble, BIND,
/// an operator's solver): taken below the kernel's ephemeral range, each handed out once per
/// process. A port the kernel picked (bound to 0, then let go) could go to any outgoing
/// connection of a test running beside it before the server binds it, and an operator that
/// cannot listen exits.
pub fn free_port() -> u16 {
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    static BELOW_EPHEMERAL: OnceLock<(u32, u32)> = OnceLock::new();
    let &(base, low) = BELOW_EPHEMERAL.get_or_init(|| {
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
        let low: u32 = ephemeral.and_then(|range| range.split_whitespace().next()?.parse().ok()).unwrap_or(32_768);
        (low.saturating_sub(PORT_POOL).max(1024), low)
    });
    // Where each process starts in the pool: servers a previous test binary started may linger.
    let start = std::process::id() % PORT_POOL;
    loop {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        assert!(n < PORT_POOL, "no free loopback port left below {low}");
        let port = u16::try_from(base + (start + n) % (low - base)).expect("a port number");
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// Which Pebble a test runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Release {
    /// Debian's `pebble` 2.4 and its `pebble-challtestsrv` (`apt-get install pebble`).
    #[default]
    Debian,
    /// Let's Encrypt's v2.10.1 from `../shared/pebble` beside the project's root, unpacked by its
    /// `unpack.sh`: it offers dns-persist-01 (naming its `caaIdentities`, by default
    /// `pebble.letsencrypt.org`) and refuses every request without a User-Agent.
    V2_10,
}

impl Release {
    /// The `pebble` and `pebble-challtestsrv` programs.
    fn programs(self) -> (PathBuf, PathBuf) {
        match self {
            Self::Debian => ("pebble".into(), "pebble-challtestsrv".into()),
            Self::V2_10 => {
                let dir = shared_pebble();
                (dir.join("pebble"), dir.join("pebble-challtestsrv"))
            }
        }
    }

    /// pebble-challtestsrv's arguments to answer DNS at `dns` only, managed at `management`:
    /// v2.10.1 renamed `-dns01` and added a DNS-over-HTTPS server, turned off here.
    fn challtestsrv_args(self, dns: &str, management: &str) -> Vec<String> {
        let mut args = vec!["-http01", "", "-https01", "", "-tlsalpn01", ""];
        match self {
            Self::Debian => args.extend(["-dns01", dns]),
            Self::V2_10 => args.extend(["-doh", "", "-dnsserver", dns]),
        }
        args.extend(["-management", management, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        args.into_iter().map(String::from).collect()
    }
}

/// Where `../shared/pebble/unpack.sh` put Pebble v2.10.1's programs (unpacked once per test
/// process; the script skips what is already there).
fn shared_pebble() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pebble");
        let script = shared.join("unpack.sh");
        assert!(
            script.is_file(),
            "Pebble v2.10.1 is missing: no {} (tests on Pebble v2.10.1 need the shared folder ../shared/pebble beside the project's root)",
            script.display()
        );
        let output = Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{} failed: {stderr}", script.display());
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
}

/// Options of a Pebble instance.
pub struct PebbleOptions {
    /// Debian's Pebble 2.4, or v2.10.1.
    pub release: Release,
    /// Where Pebble connects for HTTP-01 (the operator's solver port).
    pub http_port: u16,
    /// Where Pebble connects for TLS-ALPN-01.
    pub tls_port: u16,
    /// DNS server Pebble resolves names with; a pebble-challtestsrv answering 127.0.0.1 when `None`.
    pub dns_server: Option<String>,
    /// External account binding keys (key id, base64url HMAC key); required when not empty.
    pub eab_keys: Vec<(String, String)>,
    /// Percentage of good nonces Pebble rejects.
    pub nonce_reject: u8,
    /// How many alternate chains (to other roots) Pebble offers besides the default.
    pub alternate_roots: u8,
    /// Before each validation Pebble waits a random whole number of seconds below this
    /// (`PEBBLE_VA_SLEEPTIME`), as a real CA takes its time; 0 validates at once.
    pub validation_delay_below: u8,
}

impl PebbleOptions {
    /// Pebble reaching the operator's HTTP-01 and TLS-ALPN-01 solvers on free loopback ports,
    /// resolving every name to 127.0.0.1.
    pub fn on_free_ports() -> Self {
        Self {
            release: Release::Debian,
            http_port: free_port(),
            tls_port: free_port(),
            dns_server: None,
            eab_keys: Vec::new(),
            nonce_reject: 0,
            alternate_roots: 0,
            validation_delay_below: 0,
        }
    }

    /// The operator's flags to serve challenges where these options make Pebble connect.
    pub fn solver_args(&self) -> Vec<String> {
        vec![
            "--solver-http-address".to_string(),
            format!("127.0.0.1:{}", self.http_port),
            "--solver-tls-address".to_string(),
            format!("127.0.0.1:{}", self.tls_port),
        ]
    }
}

pub struct Pebble {
    children: Vec<Child>,
    pub directory: String,
    management_port: u16,
    /// `127.0.0.1:<port>` where the pebble-challtestsrv started with Pebble answers DNS.
    pub dns_address: Option<String>,
    /// pebble-challtestsrv's management port (where TXT records are set).
    dns_management_port: Option<u16>,
    /// PEM of the CA that signed Pebble's TLS certificate (the issuer's `caBundle`).
    pub ca_pem: String,
    log: Arc<Mutex<Vec<String>>>,
    /// How to start the CA process again (see [`Pebble::restart`]).
    ca_command: (PathBuf, PathBuf, String, PebbleOptions),
    acme_port: u16,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls_files(dir: &std::path::Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "certpilot test Pebble TLS CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca_cert.pem()
}

fn spawn_logged(mut command: Command, log: Arc<Mutex<Vec<String>>>) -> Child {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} does not start ({e}): Debian's Pebble comes with apt-get install pebble, v2.10.1 from ../shared/pebble")
        });
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    child
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Pebble {
    pub fn start(options: PebbleOptions) -> Self {
        let dir = std::env::temp_dir().join(format!("certpilot-pebble-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = tls_files(&dir);
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut children = Vec::new();
        let (pebble, challtestsrv) = options.release.programs();
        let (dns, dns_management_port) = match options.dns_server.clone() {
            Some(server) => (server, None),
            None => {
                let (dns, management_port) = (format!("127.0.0.1:{}", free_port()), free_port());
                let mut command = Command::new(challtestsrv);
                command.args(options.release.challtestsrv_args(&dns, &format!("127.0.0.1:{management_port}")));
                children.push(spawn_logged(command, log.clone()));
                wait_for_port(management_port);
                (dns, Some(management_port))
            }
        };
        let (acme_port, management_port) = (free_port(), free_port());
        let eab: serde_json::Map<String, serde_json::Value> =
            options.eab_keys.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.join("cert.pem"), "privateKey": dir.join("key.pem"),
            "httpPort": options.http_port, "tlsPort": options.tls_port, "ocspResponderURL": "",
            "externalAccountBindingRequired": !eab.is_empty(), "externalAccountMACKeys": eab,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let dns_address = dns_management_port.map(|_| dns.clone());
        let ca_command = (pebble, dir.join("pebble.json"), dns, options);
        children.push(spawn_logged(ca_process(&ca_command), log.clone()));
        wait_for_port(acme_port);
        Self {
            children,
            directory: format!("https://127.0.0.1:{acme_port}/dir"),
            management_port,
            dns_address,
            dns_management_port,
            ca_pem,
            log,
            ca_command,
            acme_port,
            _dir: TempDir(dir),
        }
    }

    /// Stops the CA and starts it again on the same address: it forgets every account and
    /// order, as a private CA restored from backup or a restarted test CA does.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the CA process (its DNS server stays): its address refuses connections, as a CA
    /// that is down does.
    pub fn stop(&mut self) {
        let mut ca = self.children.pop().expect("the CA process");
        let _ = ca.kill();
        let _ = ca.wait();
    }

    /// Starts the CA stopped by [`Pebble::stop`] again on the same address, knowing no account.
    pub fn start_again(&mut self) {
        self.children.push(spawn_logged(ca_process(&self.ca_command), self.log.clone()));
        wait_for_port(self.acme_port);
    }

    /// Options for another Pebble that validates at the same solver ports as this one, so that
    /// one operator serves both CAs' challenges.
    pub fn same_solvers(&self) -> PebbleOptions {
        let options = &self.ca_command.3;
        PebbleOptions { http_port: options.http_port, tls_port: options.tls_port, ..PebbleOptions::on_free_ports() }
    }

    /// The subject of Pebble's root number `index` (0 is the default chain's root).
    pub async fn root_subject(&self, index: usize) -> String {
        use instant_acme::{BodyWrapper, HttpClient};
        let (client, _, _) = certpilot::issuance::acme::client::AcmeHttpClient::new(Some(&self.ca_pem)).unwrap();
        let url = format!("https://127.0.0.1:{}/roots/{index}", self.management_port);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let request = http::Request::get(&url).body(BodyWrapper::default()).unwrap();
            match HttpClient::request(&client, request).await {
                Ok(mut response) => {
                    let body = response.body.into_bytes().await.unwrap_or_default();
                    match certpilot::pki::cert::parse_chain(&body) {
                        Ok(info) => return info.subject,
                        Err(e) => eprintln!("{url}: {} {e}: {}", response.parts.status, String::from_utf8_lossy(&body)),
                    }
                }
                Err(e) => eprintln!("{url}: {e:?}"),
            }
            assert!(std::time::Instant::now() < deadline, "Pebble's management interface did not serve {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What Pebble's management interface says of the certificate with serial `serial` (hex):
    /// its status (`Valid`, `Revoked`) and, when revoked, the reason code.
    pub async fn cert_status(&self, serial: &str) -> serde_json::Value {
        use instant_acme::{BodyWrapper, HttpClient};
        let (client, _, _) = certpilot::issuance::acme::client::AcmeHttpClient::new(Some(&self.ca_pem)).unwrap();
        let url = format!("https://127.0.0.1:{}/cert-status-by-serial/{serial}", self.management_port);
        let request = http::Request::get(&url).body(BodyWrapper::default()).unwrap();
        let mut response = HttpClient::request(&client, request).await.unwrap();
        let status = response.parts.status;
        let body = response.body.into_bytes().await.unwrap_or_default();
        assert!(status.is_success(), "{url}: {status}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&body)))
    }

    /// An `Issuer` named `name` for this Pebble, with one HTTP-01 solver; the fields of
    /// `extra` (an object) replace those of `spec.acme`.
    pub fn acme_issuer(&self, name: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut acme = serde_json::json!({"server": self.directory, "caBundle": self.ca_pem, "email": "ops@example.com", "solvers": [{"http01": {}}]});
        if let (Some(acme), Some(extra)) = (acme.as_object_mut(), extra.as_object()) {
            acme.extend(extra.clone());
        }
        serde_json::json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": name}, "spec": {"acme": acme}})
    }

    /// Adds TXT `value` at `name` to what pebble-challtestsrv (Pebble's DNS) answers, as the
    /// domain's owner would publish it.
    pub async fn set_txt(&self, name: &str, value: &str) {
        use http_body_util::Full;
        let port = self.dns_management_port.expect("Pebble's own pebble-challtestsrv (no dns_server given)");
        let body = serde_json::json!({"host": format!("{}.", name.trim_end_matches('.')), "value": value});
        let request = http::Request::post(format!("http://127.0.0.1:{port}/set-txt"))
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let client = certpilot::outbound::HttpClient::new(certpilot::outbound::public_roots());
        let response = client.request(request).await.expect("pebble-challtestsrv answers");
        assert!(response.status().is_success(), "set-txt {name}: {}", response.status());
    }

    /// How many times Pebble was asked for a new order.
    pub fn new_orders(&self) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains("POST /order-plz")).count()
    }

    /// How many CSRs Pebble was sent (each finalizes an order into a certificate).
    pub fn finalized(&self) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains("POST /finalize-order")).count()
    }

    /// How many times a certificate was downloaded from Pebble.
    pub fn downloads(&self) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains("POST /certZ")).count()
    }

    /// How many times Pebble was asked to register an account.
    pub fn new_accounts(&self) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains("POST /sign-me-up")).count()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn ca_process((pebble, config, dns, options): &(PathBuf, PathBuf, String, PebbleOptions)) -> Command {
    let mut command = Command::new(pebble);
    command.arg("-config").arg(config).args(["-dnsserver", dns]);
    match options.validation_delay_below {
        0 => command.env("PEBBLE_VA_NOSLEEP", "1"),
        below => command.env("PEBBLE_VA_SLEEPTIME", below.to_string()),
    };
    command
        .env("PEBBLE_WFE_NONCEREJECT", options.nonce_reject.to_string())
        .env("PEBBLE_AUTHZREUSE", "0")
        .env("PEBBLE_ALTERNATE_ROOTS", options.alternate_roots.to_string());
    command
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), free_port())
}

/// A Secret certpilot wrote from Pebble: a key, and a chain (leaf and intermediate) whose leaf
/// matches the key and names exactly `names` (sorted).
pub fn assert_acme_secret(secret: &Secret, names: &[&str]) {
    let data = secret.data.as_ref().unwrap();
    let key = PrivateKey::from_pem(std::str::from_utf8(&data["tls.key"].0).unwrap()).unwrap();
    let leaf = parse_chain(&data["tls.crt"].0).unwrap();
    assert_eq!(leaf.public_key_info, key.public_key_info());
    assert!(leaf.issuer.contains("Pebble"), "{}", leaf.issuer);
    let mut got = leaf.dns_names.clone();
    got.sort();
    assert_eq!(got, names);
    assert!(pem_certificates(&data["tls.crt"].0).unwrap().len() >= 2, "leaf and intermediate");
}
