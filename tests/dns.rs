//! DNS-01's wire level against real BIND and against a forger: updates are signed with TSIG,
//! and an answer is only believed when BIND's TSIG signature over it checks out.

mod support;

use certpilot::solver::dns01::{Provider, rfc2136::Rfc2136, txt_values, wire};
use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::SOA},
};
use support::bind::{Bind, KEY_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a forger on the path answers an update.
#[derive(Clone, Copy)]
enum Forgery {
    /// "NOERROR", unsigned.
    Unsigned,
    /// "NOERROR", with the request's own TSIG record echoed back.
    EchoedSignature,
}

/// A DNS server on loopback that answers every message as `forgery` says; its address.
async fn forger(forgery: Forgery) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut length = [0u8; 2];
            stream.read_exact(&mut length).await.unwrap();
            let mut request = vec![0u8; u16::from_be_bytes(length) as usize];
            stream.read_exact(&mut request).await.unwrap();
            let request = Message::from_vec(&request).unwrap();
            let mut answer = Message::new(request.id, MessageType::Response, request.op_code);
            answer.metadata.response_code = ResponseCode::NoError;
            answer.add_queries(request.queries.clone());
            if request.queries.iter().any(|q| q.query_type() == RecordType::SOA) {
                // Authoritative for the zone, as far as the client can tell.
                let soa = SOA::new(name("ns.certpilot.test."), name("admin.certpilot.test."), 1, 60, 60, 600, 60);
                answer.add_answer(Record::from_rdata(name("certpilot.test."), 60, RData::SOA(soa)));
            }
            if let (Forgery::EchoedSignature, Some(signature)) = (forgery, request.signature.clone()) {
                answer.set_signature(signature);
            }
            let bytes = answer.to_vec().unwrap();
            stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.unwrap();
            stream.write_all(&bytes).await.unwrap();
        }
    });
    address
}

fn name(text: &str) -> Name {
    text.parse().unwrap()
}

#[tokio::test]
async fn bind_signs_its_answers_and_they_verify() {
    let bind = Bind::start();
    let provider = Rfc2136::with_key(&bind.address, KEY_NAME, None, &bind.tsig_secret).unwrap();
    let record = name("_acme-challenge.signed.certpilot.test.");
    provider.add_txt(&record, "first").await.expect("BIND's signed answer verifies");
    provider.add_txt(&record, "second").await.unwrap();
    let mut values = txt_values(&bind.address, &record.to_string()).await.unwrap();
    values.sort();
    assert_eq!(values, ["first", "second"], "adding keeps the values already there");
    provider.remove_txt(&record, "first").await.unwrap();
    assert_eq!(txt_values(&bind.address, &record.to_string()).await.unwrap(), ["second"]);
}

#[tokio::test]
async fn a_forged_answer_to_a_signed_update_is_not_believed() {
    let bind = Bind::start();
    for forgery in [Forgery::Unsigned, Forgery::EchoedSignature] {
        let address = forger(forgery).await;
        let provider = Rfc2136::with_key(&address, KEY_NAME, None, &bind.tsig_secret).unwrap();
        let failure = provider.add_txt(&name("_acme-challenge.forged.certpilot.test."), "v").await.unwrap_err();
        assert_eq!(failure.code.as_str(), "DNSAnswerNotSigned", "{}", failure.message);
        assert!(failure.message.contains("not signed with TSIG key"), "{}", failure.message);
    }
}

#[tokio::test]
async fn a_key_bind_does_not_know_is_refused_in_words() {
    let bind = Bind::start();
    let wrong = "d3JvbmcgLS0gbm90IHRoZSBrZXkgYXQgYWxsIQ==";
    let provider = Rfc2136::with_key(&bind.address, KEY_NAME, Some("hmac-sha256"), wrong).unwrap();
    let failure = provider.add_txt(&name("_acme-challenge.denied.certpilot.test."), "v").await.unwrap_err();
    assert_eq!(failure.code.as_str(), "DNSUpdateRefused", "{}", failure.message);
    assert!(failure.message.contains("check the TSIG key"), "{}", failure.message);
    assert!(Rfc2136::with_key(&bind.address, KEY_NAME, Some("hmac-md5"), &bind.tsig_secret).is_err());
}

#[tokio::test]
async fn a_cname_chain_into_another_zone_is_followed_to_its_end() {
    let bind = Bind::start_with(&[("delegated.test", "")], "_acme-challenge.www IN CNAME www.delegated.test.");
    let start = name("_acme-challenge.www.certpilot.test.");
    let end = wire::cname_target(&bind.address, &start).await.unwrap();
    assert_eq!(end, name("www.delegated.test."));
    let plain = name("_acme-challenge.plain.certpilot.test.");
    assert_eq!(wire::cname_target(&bind.address, &plain).await.unwrap(), plain, "no CNAME: the name itself");
    // Written at the end of the chain, the value is what a recursive look-up of the start finds.
    let provider = Rfc2136::with_key(&bind.address, KEY_NAME, None, &bind.tsig_secret).unwrap();
    provider.add_txt(&end, "delegated-value").await.unwrap();
    let mut query = wire::query(&start, RecordType::TXT);
    query.metadata.recursion_desired = true;
    let answer = wire::exchange(&bind.address, &query).await.unwrap();
    let found: Vec<String> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(txt.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(found, ["delegated-value"], "{answer:?}");
}
