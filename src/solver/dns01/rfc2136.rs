//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), sent to the zone's authoritative
//! server (BIND, Knot, PowerDNS…). The server's answer must carry a valid TSIG signature
//! made with the same key over the request's MAC: an unsigned "NOERROR" could come from
//! anyone on the path, so it is not taken as proof that the record was written.

use super::{Provider, wire};
use crate::{
    api::issuer::Rfc2136Solver,
    issuance::{Failure, FailureCode as C, Outcome},
};
use base64::Engine;
use hickory_proto::{
    op::{Message, ResponseCode, update_message},
    rr::{DNSClass, Name, RData, RecordSet, RecordType, TSigner, rdata::TXT, rdata::tsig::TsigAlgorithm},
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::str::FromStr;

const TTL: u32 = 60;
/// Seconds a signature is valid either side of its time (RFC 8945 recommends 300).
const FUDGE: u16 = 300;

/// An authoritative server taking signed updates.
pub struct Rfc2136 {
    nameserver: String,
    signer: Option<TSigner>,
}

impl Rfc2136 {
    /// The provider `solver` describes, its TSIG key read from `secrets`.
    pub async fn new(secrets: &Api<Secret>, solver: &Rfc2136Solver) -> Outcome<Self> {
        let signer = signer(secrets, solver).await?;
        Ok(Self { nameserver: solver.nameserver.clone(), signer })
    }

    /// A provider for `nameserver` signing with the given TSIG key (`algorithm`: hmac-sha256
    /// when `None`).
    pub fn with_key(
        nameserver: &str,
        key_name: &str,
        algorithm: Option<&str>,
        secret: &str,
    ) -> std::result::Result<Self, Failure> {
        Ok(Self { nameserver: nameserver.to_string(), signer: Some(tsigner(key_name, algorithm, secret)?) })
    }

    /// Sends the update `build` makes of TXT `value` at `fqdn`.
    async fn update(
        &self,
        fqdn: &Name,
        value: &str,
        build: fn(RecordSet, Name, bool) -> Message,
    ) -> std::result::Result<(), Failure> {
        let zone = wire::zone_of(&self.nameserver, fqdn).await.map_err(|e| Failure::new(C::DnsUpdateFailed, e))?;
        let mut message = build(txt_rrset(fqdn, value), zone.clone(), false);
        let mut verifier = None;
        if let Some(signer) = &self.signer {
            let now = jiff::Timestamp::now().as_second() as u64;
            verifier = message
                .finalize(signer, now)
                .map_err(|e| Failure::new(C::DnsUpdateFailed, format!("could not sign the update: {e}")))?;
        }
        let bytes = message
            .to_vec()
            .map_err(|e| Failure::new(C::DnsUpdateFailed, format!("could not encode the update: {e}")))?;
        let answer_bytes =
            wire::exchange_bytes(&self.nameserver, &bytes).await.map_err(|e| Failure::new(C::DnsUpdateFailed, e))?;
        let answer = Message::from_vec(&answer_bytes).map_err(|e| {
            Failure::new(C::DnsUpdateFailed, format!("{} sent an unreadable answer: {e}", self.nameserver))
        })?;
        let code = answer.metadata.response_code;
        if code != ResponseCode::NoError {
            // A refusal is believed signed or not: trusting it costs nothing but a retry.
            return Err(Failure::new(
                C::DnsUpdateRefused,
                format!(
                    "{} refused the update of {fqdn} in zone {zone}: {code} (check the TSIG key and the zone's update policy)",
                    self.nameserver
                ),
            ));
        }
        if let Some(mut verifier) = verifier {
            verifier.verify(&answer_bytes).map_err(|e| {
                Failure::new(
                    C::DnsAnswerNotSigned,
                    format!(
                        "the answer from {} to the update of {fqdn} is not signed with TSIG key {} ({e}): it may not come from the server, so the record is not taken as written; check that the server knows the key and that nothing on the path answers for it",
                        self.nameserver,
                        self.signer.as_ref().map(|s| s.signer_name().to_string()).unwrap_or_default()
                    ),
                )
            })?;
        }
        Ok(())
    }
}

impl Provider for Rfc2136 {
    async fn add_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        self.update(fqdn, value, |rrset, zone, edns| update_message::append(rrset, zone, false, edns)).await
    }

    async fn remove_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        self.update(fqdn, value, update_message::delete_by_rdata).await
    }
}

/// The algorithms certpilot signs with (the CRD lists the same).
pub fn algorithm(name: Option<&str>) -> std::result::Result<TsigAlgorithm, String> {
    match name.unwrap_or("hmac-sha256").to_ascii_lowercase().trim_end_matches('.') {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(format!("TSIG algorithm {other:?} is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512")),
    }
}

async fn signer(secrets: &Api<Secret>, solver: &Rfc2136Solver) -> Outcome<Option<TSigner>> {
    let (Some(key_name), Some(secret_ref)) = (&solver.tsig_key_name, &solver.tsig_secret_ref) else {
        return Ok(None);
    };
    let namespace = secrets.namespace().unwrap_or_default();
    let secret = secrets.get_opt(&secret_ref.name).await?;
    let Some(encoded) = secret.and_then(|s| s.data).and_then(|d| d.get(&secret_ref.key).map(|b| b.0.clone())) else {
        return Err(Failure::new(
            C::TsigKeyMissing,
            format!("key {:?} of Secret {namespace}/{} not found", secret_ref.key, secret_ref.name),
        )
        .into());
    };
    let text = String::from_utf8_lossy(&encoded);
    Ok(Some(tsigner(key_name, solver.tsig_algorithm.as_deref(), &text)?))
}

/// A TSIG signer from the key's name, algorithm and base64 secret (as tsig-keygen prints it).
fn tsigner(key_name: &str, algorithm_name: Option<&str>, secret: &str) -> std::result::Result<TSigner, Failure> {
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(secret.trim()) else {
        return Err(Failure::new(C::TsigKeyInvalid, "the TSIG secret must be base64, as tsig-keygen prints it"));
    };
    let algorithm = algorithm(algorithm_name).map_err(|e| Failure::new(C::TsigKeyInvalid, e))?;
    let name = Name::from_str(key_name)
        .map_err(|e| Failure::new(C::TsigKeyInvalid, format!("tsigKeyName {key_name:?}: {e}")))?;
    TSigner::new(key, algorithm, name, FUDGE).map_err(|e| Failure::new(C::TsigKeyInvalid, e.to_string()))
}

fn txt_rrset(name: &Name, value: &str) -> RecordSet {
    let mut rrset = RecordSet::with_ttl(name.clone(), RecordType::TXT, TTL);
    rrset.add_rdata(RData::TXT(TXT::new(vec![value.to_string()])));
    rrset.set_dns_class(DNSClass::IN);
    rrset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sha2_algorithms_are_accepted() {
        assert!(algorithm(Some("hmac-md5")).is_err());
        assert_eq!(algorithm(None).unwrap(), TsigAlgorithm::HmacSha256);
        assert_eq!(algorithm(Some("HMAC-SHA512.")).unwrap(), TsigAlgorithm::HmacSha512);
    }
}
