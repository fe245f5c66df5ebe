//! PowerDNS Authoritative Server (Debian's `pdns-server` with `pdns-backend-sqlite3`) on free
//! loopback ports: DNS on one, its HTTP API (with an API key) on another, serving `pdns.test`,
//! where every name resolves to 127.0.0.1.
#![allow(dead_code)]

use super::pebble::free_port;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const PDNS_ZONE: &str = "pdns.test";
const SCHEMA: &str = "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql";

pub struct PowerDns {
    child: Child,
    dir: PathBuf,
    /// `127.0.0.1:<port>` where it answers DNS.
    pub dns_address: String,
    /// Base URL of the API (`http://127.0.0.1:<port>`).
    pub api_url: String,
    pub api_key: String,
}

fn run(program: &str, args: &[&str], input: Option<&Path>) {
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::null());
    if let Some(file) = input {
        command.stdin(std::fs::File::open(file).expect("schema file"));
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{program} runs (apt-get install pdns-server pdns-backend-sqlite3 sqlite3): {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

impl PowerDns {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("certpilot-pdns-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let database = dir.join("pdns.sqlite3");
        run("sqlite3", &[database.to_str().unwrap()], Some(Path::new(SCHEMA)));
        let (dns_port, api_port) = (free_port(), free_port());
        let api_key = format!("key-{}", free_port());
        // Caches off: a test reads what it just wrote.
        let config = format!(
            "launch=gsqlite3\ngsqlite3-database={database}\nlocal-address=127.0.0.1\nlocal-port={dns_port}\n\
             api=yes\napi-key={api_key}\nwebserver=yes\nwebserver-address=127.0.0.1\nwebserver-port={api_port}\n\
             webserver-allow-from=127.0.0.0/8\ncache-ttl=0\nnegquery-cache-ttl=0\nquery-cache-ttl=0\n\
             zone-cache-refresh-interval=0\nsocket-dir={dir}\nguardian=no\ndaemon=no\ndisable-syslog=yes\nwrite-pid=no\n",
            database = database.display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("pdns.conf"), config).unwrap();
        let config_dir = format!("--config-dir={}", dir.display());
        run("pdnsutil", &[&config_dir, "create-zone", PDNS_ZONE, &format!("ns.{PDNS_ZONE}")], None);
        for (name, kind, content) in [("ns", "A", "127.0.0.1"), ("@", "A", "127.0.0.1"), ("*", "A", "127.0.0.1")] {
            run("pdnsutil", &[&config_dir, "add-record", PDNS_ZONE, name, kind, "60", content], None);
        }
        let child = Command::new("pdns_server")
            .arg(&config_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("PowerDNS is installed (apt-get install pdns-server pdns-backend-sqlite3)");
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [dns_port, api_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "PowerDNS did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self {
            child,
            dir,
            dns_address: format!("127.0.0.1:{dns_port}"),
            api_url: format!("http://127.0.0.1:{api_port}"),
            api_key,
        }
    }
}

impl Drop for PowerDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
