//! acme2certifier (from PyPI) as an ACME server with Renewal Information and profiles, signing
//! with a local CA, on a free loopback port. Challenge validation is off by default (Pebble tests
//! cover validation; what this server is for is ARI and profiles), and on for dns-persist-01,
//! which it implements and Pebble does not.
#![allow(dead_code)]

use super::pebble::free_port;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct A2c {
    child: Child,
    dir: PathBuf,
    pub directory: String,
    /// PEM of the CA behind the server's TLS certificate (the issuer's `caBundle`).
    pub ca_pem: String,
}

/// The Python that has acme2certifier installed: `CERTPILOT_A2C_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("CERTPILOT_A2C_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Serves acme2certifier over HTTPS (RFC 8555 requires it, and certpilot does too): the
/// certificate and key in argv[2] and argv[3].
const RUNNER: &str = r#"
import os
# Read by wsgiref when it is imported: the WSGI scheme (and so the server's links) is https.
os.environ["HTTPS"] = "on"
import runpy, ssl, sys
from wsgiref.simple_server import WSGIServer, make_server
import acme2certifier

class TLSServer(WSGIServer):
    def shutdown_request(self, request):
        # Ends TLS with close_notify: a response delimited by the connection's end is only
        # complete to a TLS client that receives it.
        try:
            request.unwrap()
        except (OSError, ValueError):
            pass
        super().shutdown_request(request)

app = runpy.run_path(os.path.join(os.path.dirname(acme2certifier.__file__), "share", "acme2certifier_wsgi.py"))
server = make_server("127.0.0.1", int(sys.argv[1]), app["application"], server_class=TLSServer, handler_class=app["get_handler_cls"]())
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// How the server is set up.
pub struct A2cOptions {
    /// Seconds the server asks clients to wait between ARI checks.
    pub renewal_retry_after: u32,
    /// Validate challenges (off: every challenge passes at once).
    pub validate: bool,
    /// The directory's `meta.caaIdentities`; with validation, dns-persist-01 is offered
    /// (wildcards allowed with `policy=wildcard`).
    pub caa_identities: Vec<String>,
    /// The DNS servers validation asks: IP addresses (dnspython asks them on port 53).
    pub dns_servers: Vec<String>,
}

impl Default for A2cOptions {
    fn default() -> Self {
        Self { renewal_retry_after: 3600, validate: false, caa_identities: Vec::new(), dns_servers: Vec::new() }
    }
}

impl A2cOptions {
    /// The config lines these options add.
    fn config(&self) -> String {
        let list = |items: &[String]| serde_json::to_string(items).unwrap();
        let mut lines =
            format!("\n[Challenge]\nchallenge_validation_disable: {}\n", if self.validate { "False" } else { "True" });
        if self.validate {
            lines.push_str("dns_persist_01_support: True\ndns_persist_allow_policy_wildcard: True\n");
        }
        if !self.caa_identities.is_empty() {
            lines.push_str(&format!("\n[Directory]\ncaaidentities: {}\n", list(&self.caa_identities)));
        }
        lines
    }
}

impl A2c {
    /// `renewal_retry_after`: seconds the server asks clients to wait between ARI checks.
    pub fn start(renewal_retry_after: u32) -> Self {
        Self::start_with(A2cOptions { renewal_retry_after, ..Default::default() })
    }

    pub fn start_with(options: A2cOptions) -> Self {
        let renewal_retry_after = options.renewal_retry_after;
        let dir = std::env::temp_dir().join(format!("certpilot-a2c-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(rcgen::DnType::CommonName, "certpilot test acme2certifier CA");
        params.use_authority_key_identifier_extension = true;
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        // The server's own TLS certificate, for 127.0.0.1, signed by the same CA.
        let tls_key = rcgen::KeyPair::generate().unwrap();
        let mut tls_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        tls_params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        let issuer = rcgen::Issuer::from_params(&params, &ca_key);
        let tls = tls_params.signed_by(&tls_key, &issuer).unwrap();
        std::fs::write(dir.join("tls.crt"), tls.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), tls_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
        // The openssl CA handler wants a CRL of its CA; an empty one will do.
        let now = time::OffsetDateTime::now_utc();
        let crl = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(30),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&rcgen::Issuer::new(params, &ca_key))
        .unwrap();
        std::fs::write(dir.join("ca.crl"), crl.pem().unwrap()).unwrap();
        let d = dir.display();
        let challenge = options.config();
        let dns_servers = if options.dns_servers.is_empty() {
            String::new()
        } else {
            format!("dns_server_list: {}\n", serde_json::to_string(&options.dns_servers).unwrap())
        };
        let config = format!(
            "[DEFAULT]\ndebug: False\n{dns_servers}\n[Nonce]\nnonce_check_disable: False\n\n[CAhandler]\nhandler_module: acme2certifier.cahandlers.openssl_ca_handler\nissuing_ca_key: {d}/ca.key\nissuing_ca_cert: {d}/ca.crt\nissuing_ca_crl: {d}/ca.crl\ncert_save_path: {d}/certs\nca_cert_chain_list: [\"{d}/ca.crt\"]\ncert_validity_days: 10\n\n[DBhandler]\ndbfile: {d}/a2c.db\n{challenge}\n[Renewalinfo]\nrenewalthreshold_pctg: 50\nretry_after_timeout: {renewal_retry_after}\n\n[Order]\nprofiles: {{\"shortlived\": \"a few days\", \"classic\": \"the default\"}}\n"
        );
        std::fs::write(dir.join("acme_srv.cfg"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("a2c.log")).unwrap();
        let mut child = Command::new(python())
            .args(["-c", RUNNER, &port.to_string()])
            .arg(dir.join("tls.crt"))
            .arg(dir.join("tls.key"))
            .env("ACME_SRV_CONFIGFILE", dir.join("acme_srv.cfg"))
            .env("ACME2CERTIFIER_I_KNOW_THE_RISK", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("a2c.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "acme2certifier did not start (pip install acme2certifier, or set CERTPILOT_A2C_PYTHON):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, dir, directory: format!("https://127.0.0.1:{port}/directory"), ca_pem: ca.pem() }
    }
}

impl A2c {
    /// Rows of a query on the server's database (first column of each), to see what it received.
    pub fn query(&self, sql: &str) -> Vec<String> {
        let script =
            "import sqlite3, sys\nfor row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):\n    print(row[0])";
        let output = Command::new(python())
            .args(["-c", script])
            .arg(self.dir.join("a2c.db"))
            .arg(sql)
            .output()
            .expect("python3 runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect()
    }
}

impl A2c {
    /// The CA's CRL as `openssl crl -text` reads it (acme2certifier's OpenSSL handler adds each
    /// certificate it revokes).
    pub fn crl_text(&self) -> String {
        let output = Command::new("openssl")
            .args(["crl", "-noout", "-text", "-in"])
            .arg(self.dir.join("ca.crl"))
            .output()
            .expect("openssl runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for A2c {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("CERTPILOT_KEEP_A2C").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
