//! DNS messages over TCP, built and parsed by hickory-proto: the queries behind the checks
//! (is the record served? where does a CNAME chain end? which zone holds a name?) and the
//! exchange the RFC 2136 provider sends its updates through.

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one server may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest CNAME chain followed (resolvers stop at about the same length).
const MAX_CNAME_HOPS: usize = 8;

/// `host:port`, with port 53 when the nameserver names none.
pub fn server_address(nameserver: &str) -> String {
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

/// Sends `bytes` (an encoded message) over TCP and returns the encoded answer.
pub async fn exchange_bytes(nameserver: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let address = server_address(nameserver);
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await?;
        stream.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
        stream.write_all(bytes).await?;
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).await?;
        let mut answer = vec![0u8; u16::from_be_bytes(length) as usize];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    tokio::time::timeout(ANSWER_TIMEOUT, io)
        .await
        .map_err(|_| format!("{address} did not answer in {}s", ANSWER_TIMEOUT.as_secs()))?
        .map_err(|e| format!("could not reach {address}: {e}"))
}

/// Sends `message` and parses the answer.
pub async fn exchange(nameserver: &str, message: &Message) -> Result<Message, String> {
    let bytes = message.to_vec().map_err(|e| format!("could not encode the DNS message: {e}"))?;
    let answer = exchange_bytes(nameserver, &bytes).await?;
    Message::from_vec(&answer).map_err(|e| format!("{} sent an unreadable answer: {e}", server_address(nameserver)))
}

pub fn query(name: &Name, record_type: RecordType) -> Message {
    let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(name.clone(), record_type));
    message
}

pub fn rand_id() -> u16 {
    let mut bytes = [0u8; 2];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    u16::from_be_bytes(bytes)
}

/// The zone holding `name`, from the SOA the authoritative server names for it.
pub async fn zone_of(nameserver: &str, name: &Name) -> Result<Name, String> {
    let answer = exchange(nameserver, &query(name, RecordType::SOA)).await?;
    answer
        .answers
        .iter()
        .chain(answer.authorities.iter())
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.name.clone())
        .ok_or_else(|| format!("{nameserver} is not authoritative for {name} (no SOA in its answer)"))
}

/// The TXT values in an answer, for `name` alone.
fn txt_of(answer: &Message, name: &Name) -> Vec<String> {
    answer
        .answers
        .iter()
        .filter(|r| r.name.eq_ignore_root(name))
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => {
                Some(txt.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<String>())
            }
            _ => None,
        })
        .collect()
}

/// The TXT values the server publishes at `name` (e.g. to check an update took effect).
pub async fn txt_values(nameserver: &str, name: &str) -> Result<Vec<String>, String> {
    let mut name: Name = name.parse().map_err(|e| format!("{name}: {e}"))?;
    name.set_fqdn(true);
    let answer = exchange(nameserver, &query(&name, RecordType::TXT)).await?;
    Ok(txt_of(&answer, &name))
}

/// Where `name` leads through the CNAMEs in `answer`, starting at `name` itself.
fn follow_in(answer: &Message, name: &Name) -> Name {
    let mut current = name.clone();
    for _ in 0..MAX_CNAME_HOPS {
        let next = answer.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name.eq_ignore_root(&current) => Some(target.0.clone()),
            _ => None,
        });
        match next {
            Some(target) => current = target,
            None => break,
        }
    }
    current
}

/// The name at the end of `name`'s CNAME chain (`name` itself when it has no CNAME), as
/// `nameserver` answers. A chain through zones the server does not serve is asked again at
/// each hop.
pub async fn cname_target(nameserver: &str, name: &Name) -> Result<Name, String> {
    let mut current = name.clone();
    let mut hops = 0;
    loop {
        let answer = exchange(nameserver, &query(&current, RecordType::TXT)).await?;
        let code = answer.metadata.response_code;
        if ![ResponseCode::NoError, ResponseCode::NXDomain].contains(&code) {
            // A failure says nothing about CNAMEs: taking the name as the end would be a guess.
            return Err(format!("{} answered {code} for {current}", server_address(nameserver)));
        }
        let next = follow_in(&answer, &current);
        if next == current {
            return Ok(current);
        }
        hops += 1;
        if hops >= MAX_CNAME_HOPS {
            return Err(format!("the CNAME chain from {name} is longer than {MAX_CNAME_HOPS} names (a loop?)"));
        }
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Record, rdata::CNAME, rdata::TXT};

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    fn answer(records: Vec<Record>) -> Message {
        let mut message = Message::new(1, MessageType::Response, OpCode::Query);
        message.add_answers(records);
        message
    }

    #[test]
    fn server_addresses_default_to_port_53() {
        assert_eq!(server_address("10.0.0.1"), "10.0.0.1:53");
        assert_eq!(server_address("127.0.0.1:5353"), "127.0.0.1:5353");
        assert_eq!(server_address("::1"), "[::1]:53");
        assert_eq!(server_address("ns1.example.com"), "ns1.example.com:53");
        assert_eq!(server_address("ns1.example.com:5353"), "ns1.example.com:5353");
    }

    #[test]
    fn cname_chains_are_followed_within_an_answer() {
        let start = name("_acme-challenge.www.example.com.");
        let middle = name("www.acme.example.net.");
        let end = name("www.validation.example.org.");
        let chain = answer(vec![
            Record::from_rdata(start.clone(), 60, RData::CNAME(CNAME(middle.clone()))),
            Record::from_rdata(middle.clone(), 60, RData::CNAME(CNAME(end.clone()))),
            Record::from_rdata(end.clone(), 60, RData::TXT(TXT::new(vec!["token".into()]))),
        ]);
        assert_eq!(follow_in(&chain, &start), end);
        assert_eq!(txt_of(&chain, &end), ["token"]);
        assert_eq!(txt_of(&chain, &start), Vec::<String>::new(), "values belong to the name that holds them");
        assert_eq!(follow_in(&answer(vec![]), &start), start, "no CNAME: the name itself");
        let looped = answer(vec![
            Record::from_rdata(start.clone(), 60, RData::CNAME(CNAME(middle.clone()))),
            Record::from_rdata(middle.clone(), 60, RData::CNAME(CNAME(start.clone()))),
        ]);
        let stopped = follow_in(&looped, &start);
        assert!(stopped == start || stopped == middle, "a loop ends after a bounded number of hops");
    }
}
