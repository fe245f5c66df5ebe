//! BIND (Debian's `bind9`) as the authoritative server of `certpilot.test`, accepting RFC 2136
//! updates signed with a TSIG key, on a free loopback port. Every name in the zone resolves to
//! 127.0.0.1, so Pebble can use it as its only DNS server.
#![allow(dead_code)]

use super::pebble::free_port;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const ZONE: &str = "certpilot.test";
pub const KEY_NAME: &str = "certpilot-test.";

pub struct Bind {
    child: Child,
    dir: PathBuf,
    pub address: String,
    /// The base64 TSIG secret (hmac-sha256).
    pub tsig_secret: String,
    /// A loopback address added for this server, removed on drop.
    added_address: Option<String>,
}

fn random_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Bind {
    pub fn start() -> Self {
        Self::start_with(&[], "")
    }

    /// BIND serving `certpilot.test` with `records` added (zone file lines), and each of
    /// `zones` (name, zone file lines) besides, all updatable with the TSIG key. With other zones
    /// it also resolves recursively for loopback clients, following CNAMEs from zone to zone.
    pub fn start_with(zones: &[(&str, &str)], records: &str) -> Self {
        Self::start_at("127.0.0.1", free_port(), zones, records)
    }

    /// BIND on port 53 of a loopback address of its own (for clients that ask only port 53,
    /// such as acme2certifier's dnspython; tests run as root). The address is derived from a
    /// free port, so that tests running at once do not meet.
    pub fn start_on_port_53(records: &str) -> Self {
        let port = free_port();
        let ip = format!("127.53.{}.{}", port >> 8, port & 0xff);
        // BIND listens only on addresses of an interface: the address is added to `lo` (and
        // removed again when BIND is dropped).
        let added = Command::new("ip").args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"]).status();
        assert!(added.is_ok_and(|s| s.success()), "could not add {ip} to lo (tests run as root)");
        let mut bind = Self::start_at(&ip, 53, &[], records);
        bind.added_address = Some(ip);
        bind
    }

    /// The IP address BIND listens on.
    pub fn ip(&self) -> &str {
        self.address.rsplit_once(':').map(|(ip, _)| ip).unwrap_or_default()
    }

    fn start_at(ip: &str, port: u16, zones: &[(&str, &str)], records: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("certpilot-bind-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let tsig_secret = random_secret();
        let zone = format!(
            "$TTL 60\n@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 60 60 600 60\n@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n{records}\n"
        );
        std::fs::write(dir.join("zone.db"), zone).unwrap();
        // With zones besides certpilot.test, a query arriving at one zone's CNAME is chased into
        // the other (as a CA's recursive resolver would): that takes recursion.
        let recursion =
            if zones.is_empty() { "recursion no;" } else { "recursion yes; allow-recursion { 127.0.0.1; };" };
        let mut extra = String::new();
        for (name, lines) in zones {
            let file = dir.join(format!("{name}.db"));
            let soa =
                format!("$TTL 60\n@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 60 60 600 60\n@ IN NS ns.{ZONE}.\n{lines}\n");
            std::fs::write(&file, soa).unwrap();
            extra.push_str(&format!(
                "zone \"{name}\" {{ type primary; file \"{}\"; update-policy {{ grant {KEY_NAME} zonesub TXT; }}; }};\n",
                file.display()
            ));
        }
        let config = format!(
            r#"options {{
  directory "{dir}";
  pid-file "{dir}/named.pid";
  listen-on port {port} {{ {ip}; }};
  listen-on-v6 {{ none; }};
  {recursion}
  dnssec-validation no;
  allow-query {{ any; }};
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{tsig_secret}"; }};
zone "{ZONE}" {{
  type primary;
  file "{dir}/zone.db";
  update-policy {{ grant {KEY_NAME} zonesub TXT; }};
}};
{extra}"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("named.conf"), config).unwrap();
        let child = Command::new("named")
            .args(["-g", "-4", "-c"])
            .arg(dir.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("BIND is installed (apt-get install bind9)");
        // Listening comes before the zones are loaded: wait until every zone answers its SOA.
        let deadline = Instant::now() + Duration::from_secs(20);
        let names: Vec<&str> = std::iter::once(ZONE).chain(zones.iter().map(|(name, _)| *name)).collect();
        while !names.iter().all(|zone| serves(ip, port, zone)) {
            assert!(Instant::now() < deadline, "BIND did not start serving {names:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, dir, address: format!("{ip}:{port}"), tsig_secret, added_address: None }
    }
}

/// Whether the server on `port` answers the SOA of `zone` with authority.
fn serves(ip: &str, port: u16, zone: &str) -> bool {
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query, ResponseCode},
        rr::{Name, RecordType},
    };
    use std::io::{Read, Write};
    let mut query = Message::new(1, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(format!("{zone}.")).unwrap(), RecordType::SOA));
    let bytes = query.to_vec().unwrap();
    let Ok(mut stream) = std::net::TcpStream::connect((ip, port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut length = [0u8; 2];
    let sent = stream.write_all(&(bytes.len() as u16).to_be_bytes()).and_then(|_| stream.write_all(&bytes));
    if sent.and_then(|_| stream.read_exact(&mut length)).is_err() {
        return false;
    }
    let mut answer = vec![0u8; u16::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).is_ok()
        && Message::from_vec(&answer)
            .is_ok_and(|m| m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty())
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(ip) = &self.added_address {
            let _ = Command::new("ip").args(["addr", "del", &format!("{ip}/32"), "dev", "lo"]).status();
        }
    }
}
