//! DNS-01 through RFC 2136 dynamic updates signed with TSIG, sent to the zone's authoritative
//! server (BIND, Knot, PowerDNS…). hickory-proto builds, signs and parses the DNS messages.

use crate::{
    api::issuer::Rfc2136Solver,
    error::Result,
    issuance::{Failure, FailureCode as C},
};
use base64::Engine;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode, update_message},
    rr::{DNSClass, Name, RData, RecordSet, RecordType, TSigner, rdata::TXT, rdata::tsig::TsigAlgorithm},
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::{str::FromStr, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TTL: u32 = 60;

/// The record name a CA checks for `name`.
pub fn record_name(name: &str) -> String {
    format!("_acme-challenge.{}.", name.trim_start_matches("*.").trim_end_matches('.'))
}

/// `host:port`, with port 53 when the nameserver names none.
fn server_address(nameserver: &str) -> String {
    if nameserver.parse::<std::net::SocketAddr>().is_ok() {
        return nameserver.to_string();
    }
    match nameserver.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, 53).to_string(),
        Err(_) if nameserver.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) => {
            nameserver.to_string()
        }
        Err(_) => format!("{nameserver}:53"),
    }
}

/// Sends `message` over TCP and returns the answer.
async fn exchange(nameserver: &str, message: &Message) -> std::result::Result<Message, String> {
    let bytes = message.to_vec().map_err(|e| format!("could not encode the DNS message: {e}"))?;
    let address = server_address(nameserver);
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        stream.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
        stream.write_all(&bytes).await?;
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).await?;
        let mut answer = vec![0u8; u16::from_be_bytes(length) as usize];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| format!("{address} did not answer in 10s"))?
        .map_err(|e| format!("could not reach {address}: {e}"))?;
    Message::from_vec(&answer).map_err(|e| format!("{address} sent an unreadable answer: {e}"))
}

fn query(name: &Name, record_type: RecordType) -> Message {
    let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(name.clone(), record_type));
    message
}

fn rand_id() -> u16 {
    let mut bytes = [0u8; 2];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    u16::from_be_bytes(bytes)
}

/// The zone holding `name`, from the SOA the authoritative server names for it.
async fn zone_of(nameserver: &str, name: &Name) -> std::result::Result<Name, String> {
    let answer = exchange(nameserver, &query(name, RecordType::SOA)).await?;
    answer
        .answers
        .iter()
        .chain(answer.authorities.iter())
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.name.clone())
        .ok_or_else(|| format!("{nameserver} is not authoritative for {name} (no SOA in its answer)"))
}

/// The TXT values the server publishes at `name` (e.g. to check an update took effect).
pub async fn txt_values(nameserver: &str, name: &str) -> std::result::Result<Vec<String>, String> {
    let name = Name::from_str(name).map_err(|e| e.to_string())?;
    let answer = exchange(nameserver, &query(&name, RecordType::TXT)).await?;
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => {
                Some(txt.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<String>())
            }
            _ => None,
        })
        .collect())
}

fn algorithm(name: Option<&str>) -> std::result::Result<TsigAlgorithm, String> {
    match name.unwrap_or("hmac-sha256").to_ascii_lowercase().trim_end_matches('.') {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(format!("TSIG algorithm {other:?} is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512")),
    }
}

async fn signer(
    secrets: &Api<Secret>,
    solver: &Rfc2136Solver,
) -> Result<std::result::Result<Option<TSigner>, Failure>> {
    let (Some(key_name), Some(secret_ref)) = (&solver.tsig_key_name, &solver.tsig_secret_ref) else {
        return Ok(Ok(None));
    };
    let namespace = secrets.namespace().unwrap_or_default();
    let secret = secrets.get_opt(&secret_ref.name).await?;
    let Some(encoded) = secret.and_then(|s| s.data).and_then(|d| d.get(&secret_ref.key).map(|b| b.0.clone())) else {
        return Ok(Err(Failure::new(
            C::TsigKeyMissing,
            format!("key {:?} of Secret {namespace}/{} not found", secret_ref.key, secret_ref.name),
        )));
    };
    let text = String::from_utf8_lossy(&encoded).trim().to_string();
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(&text) else {
        return Ok(Err(Failure::new(C::TsigKeyInvalid, "the TSIG secret must be base64, as tsig-keygen prints it")));
    };
    let algorithm = match algorithm(solver.tsig_algorithm.as_deref()) {
        Ok(a) => a,
        Err(e) => return Ok(Err(Failure::new(C::TsigKeyInvalid, e))),
    };
    let name = match Name::from_str(key_name) {
        Ok(n) => n,
        Err(e) => return Ok(Err(Failure::new(C::TsigKeyInvalid, format!("tsigKeyName {key_name:?}: {e}")))),
    };
    Ok(TSigner::new(key, algorithm, name, 300).map(Some).map_err(|e| Failure::new(C::TsigKeyInvalid, e.to_string())))
}

fn txt_rrset(name: &Name, value: &str) -> RecordSet {
    let mut rrset = RecordSet::with_ttl(name.clone(), RecordType::TXT, TTL);
    rrset.add_rdata(RData::TXT(TXT::new(vec![value.to_string()])));
    rrset.set_dns_class(DNSClass::IN);
    rrset
}

/// Sends an update built by `build` for `value` at the challenge name of `name`.
async fn update(
    secrets: &Api<Secret>,
    solver: &Rfc2136Solver,
    name: &str,
    value: &str,
    build: fn(RecordSet, Name, bool) -> Message,
) -> Result<std::result::Result<(), Failure>> {
    let signer = match signer(secrets, solver).await? {
        Ok(s) => s,
        Err(f) => return Ok(Err(f)),
    };
    let fqdn = match Name::from_str(&record_name(name)) {
        Ok(n) => n,
        Err(e) => return Ok(Err(Failure::new(C::Dns, format!("{name}: {e}")))),
    };
    let zone = match zone_of(&solver.nameserver, &fqdn).await {
        Ok(zone) => zone,
        Err(e) => return Ok(Err(Failure::new(C::DnsUpdateFailed, e))),
    };
    let mut message = build(txt_rrset(&fqdn, value), zone.clone(), false);
    if let Some(signer) = &signer {
        let now = jiff::Timestamp::now().as_second() as u64;
        if let Err(e) = message.finalize(signer, now) {
            return Ok(Err(Failure::new(C::DnsUpdateFailed, format!("could not sign the update: {e}"))));
        }
    }
    let answer = match exchange(&solver.nameserver, &message).await {
        Ok(answer) => answer,
        Err(e) => return Ok(Err(Failure::new(C::DnsUpdateFailed, e))),
    };
    if answer.metadata.response_code != ResponseCode::NoError {
        return Ok(Err(Failure::new(
            C::DnsUpdateRefused,
            format!(
                "{} refused the update of {fqdn} in zone {zone}: {} (check the TSIG key and the zone's update policy)",
                solver.nameserver, answer.metadata.response_code
            ),
        )));
    }
    Ok(Ok(()))
}

/// Publishes `_acme-challenge.<name>` TXT `value` (an append: other values stay). Whether the
/// server answers with it yet is asked separately, on a later pass ([`is_visible`]).
pub async fn present(
    secrets: &Api<Secret>,
    solver: &Rfc2136Solver,
    name: &str,
    value: &str,
) -> Result<std::result::Result<(), Failure>> {
    update(secrets, solver, name, value, |rrset, zone, edns| update_message::append(rrset, zone, false, edns)).await
}

/// Whether the authoritative server already answers `_acme-challenge.<name>` with `value`.
pub async fn is_visible(solver: &Rfc2136Solver, name: &str, value: &str) -> bool {
    txt_values(&solver.nameserver, &record_name(name)).await.is_ok_and(|values| values.iter().any(|v| v == value))
}

/// Removes the TXT value again (other values at the same name stay).
pub async fn cleanup(
    secrets: &Api<Secret>,
    solver: &Rfc2136Solver,
    name: &str,
    value: &str,
) -> Result<std::result::Result<(), Failure>> {
    update(secrets, solver, name, value, update_message::delete_by_rdata).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_record_names() {
        assert_eq!(record_name("*.example.com"), "_acme-challenge.example.com.");
        assert_eq!(record_name("www.example.com."), "_acme-challenge.www.example.com.");
        assert_eq!(server_address("10.0.0.1"), "10.0.0.1:53");
        assert_eq!(server_address("127.0.0.1:5353"), "127.0.0.1:5353");
        assert_eq!(server_address("::1"), "[::1]:53");
        assert_eq!(server_address("ns1.example.com"), "ns1.example.com:53");
        assert_eq!(server_address("ns1.example.com:5353"), "ns1.example.com:5353");
        assert!(algorithm(Some("hmac-md5")).is_err());
        assert_eq!(algorithm(None).unwrap(), TsigAlgorithm::HmacSha256);
    }
}
