//! `certpilot inspect SECRET`: what a TLS Secret holds, decoded: each certificate of the chain
//! (names, issuer, validity, key), whether the private key belongs to the leaf, the CA, and the
//! other keys written beside them.

use super::output::{Cluster, Palette, Scope, print, when};
use crate::pki::{
    cert::{CertInfo, info, pem_certificates},
    keys::{PrivateKey, describe_public_key},
};
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::ResourceExt;
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The Secret (type kubernetes.io/tls) to decode.
    pub secret: String,
    #[command(flatten)]
    pub scope: Scope,
}

/// One certificate, decoded.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateFacts {
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub serial_number: String,
    pub not_before: Time,
    pub not_after: Time,
    pub key: String,
    pub is_ca: bool,
    pub fingerprint_sha256: String,
}

/// What a Secret holds.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretFacts {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// `tls.crt`: the leaf first, then the chain.
    pub chain: Vec<CertificateFacts>,
    /// `tls.key`: its kind, or why it could not be read.
    pub private_key: String,
    /// Whether `tls.key` is the leaf's key.
    pub key_matches_certificate: bool,
    /// `ca.crt`.
    pub ca: Vec<CertificateFacts>,
    /// Every key of the Secret's data (keystores and other formats included).
    pub keys: Vec<String>,
    /// What could not be decoded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

pub async fn run(args: InspectArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.scope).await?;
    let namespace = cluster.one_namespace()?;
    let secret = cluster
        .api::<Secret>()
        .get_opt(&args.secret)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no Secret {} in namespace {namespace}", args.secret))?;
    let facts = facts(&secret);
    let palette = Palette::for_stdout();
    print(args.scope.output, &facts, || screen(&facts, &palette, Timestamp::now()))
}

/// Decodes a Secret's certificates and key (pure: the Secret as read).
pub fn facts(secret: &Secret) -> SecretFacts {
    let data = secret.data.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let mut decode = |key: &str| -> Vec<CertInfo> {
        let Some(pem) = data.get(key) else {
            return Vec::new();
        };
        let parsed = pem_certificates(&pem.0).and_then(|ders| ders.iter().map(|der| info(der)).collect());
        parsed.unwrap_or_else(|e| {
            problems.push(format!("{key}: {e}"));
            Vec::new()
        })
    };
    let chain = decode("tls.crt");
    let ca = decode("ca.crt");
    let key = data.get("tls.key").map(|k| PrivateKey::from_pem(&String::from_utf8_lossy(&k.0)));
    let (private_key, key_matches_certificate) = match key {
        None => ("absent".to_string(), false),
        Some(Err(e)) => (format!("unreadable: {e}"), false),
        Some(Ok(key)) => {
            let matches = chain.first().is_some_and(|leaf| leaf.public_key_info == key.public_key_info());
            (key.describe(), matches)
        }
    };
    SecretFacts {
        namespace: secret.namespace().unwrap_or_default(),
        name: secret.name_any(),
        type_: secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
        chain: chain.iter().map(certificate_facts).collect(),
        private_key,
        key_matches_certificate,
        ca: ca.iter().map(certificate_facts).collect(),
        keys: data.keys().cloned().collect(),
        problems,
    }
}

fn certificate_facts(cert: &CertInfo) -> CertificateFacts {
    CertificateFacts {
        subject: cert.subject.clone(),
        issuer: cert.issuer.clone(),
        dns_names: cert.dns_names.clone(),
        ip_addresses: cert.ip_addresses.iter().map(ToString::to_string).collect(),
        serial_number: cert.serial_hex.clone(),
        not_before: Time(cert.not_before),
        not_after: Time(cert.not_after),
        key: describe_public_key(&cert.public_key_info),
        is_ca: cert.is_ca,
        fingerprint_sha256: cert.fingerprint_sha256.clone(),
    }
}

/// The Secret, for people.
pub fn screen(facts: &SecretFacts, palette: &Palette, now: Timestamp) -> String {
    let title = Palette::paint(palette.strong, &format!("Secret {}/{}", facts.namespace, facts.name));
    let mut out = format!("{title} ({})\n  keys: {}\n", facts.type_, facts.keys.join(", "));
    if facts.chain.is_empty() {
        out.push_str(&format!("  {}\n", Palette::paint(palette.bad, "no certificate in tls.crt")));
    }
    for (i, cert) in facts.chain.iter().enumerate() {
        let role = if i == 0 { "certificate".to_string() } else { format!("chain[{i}]") };
        out.push_str(&describe(&role, cert, palette, now));
    }
    let verdict = if facts.key_matches_certificate {
        Palette::paint(palette.good, "matches the certificate")
    } else {
        Palette::paint(palette.bad, "does NOT match the certificate")
    };
    out.push_str(&format!("  private key: {}, {verdict}\n", facts.private_key));
    for (i, cert) in facts.ca.iter().enumerate() {
        out.push_str(&describe(&format!("ca.crt[{i}]"), cert, palette, now));
    }
    for problem in &facts.problems {
        out.push_str(&format!("  {} {problem}\n", Palette::paint(palette.bad, "cannot read")));
    }
    out
}

fn describe(role: &str, cert: &CertificateFacts, palette: &Palette, now: Timestamp) -> String {
    let expired = cert.not_after.0 < now;
    let validity = when(Some(&cert.not_after), now);
    let until = if expired { Palette::paint(palette.bad, &format!("EXPIRED {validity}")) } else { validity };
    let mut names: Vec<String> = cert.dns_names.clone();
    names.extend(cert.ip_addresses.iter().cloned());
    let mut out = format!("  {}\n", Palette::paint(palette.strong, role));
    out.push_str(&format!("    subject:  {}\n", cert.subject));
    out.push_str(&format!("    issuer:   {}\n", cert.issuer));
    if !names.is_empty() {
        out.push_str(&format!("    names:    {}\n", names.join(", ")));
    }
    out.push_str(&format!("    valid:    from {} until {until}\n", cert.not_before.0));
    let ca = if cert.is_ca { ", CA" } else { "" };
    out.push_str(&format!("    key:      {}{ca}; serial {}\n", cert.key, cert.serial_number));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(cert_pem: &str, key_pem: &str) -> Secret {
        let mut s = Secret { type_: Some("kubernetes.io/tls".into()), ..Default::default() };
        s.metadata.name = Some("web-tls".into());
        s.metadata.namespace = Some("shop".into());
        s.data = Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(cert_pem.as_bytes().to_vec())),
            ("tls.key".to_string(), ByteString(key_pem.as_bytes().to_vec())),
        ]));
        s
    }

    fn self_signed(names: &[&str]) -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        (params.self_signed(&key).unwrap().pem(), key)
    }

    #[test]
    fn a_certificate_and_its_key_are_decoded_and_matched() {
        let (cert, key) = self_signed(&["web.example.com", "10.0.0.1"]);
        let facts = facts(&secret(&cert, &key.serialize_pem()));
        assert_eq!(facts.chain.len(), 1);
        assert_eq!(facts.chain[0].dns_names, ["web.example.com"]);
        assert_eq!(facts.chain[0].ip_addresses, ["10.0.0.1"]);
        assert_eq!(facts.chain[0].key, "ECDSA-256");
        assert_eq!(facts.private_key, "ECDSA-256");
        assert!(facts.key_matches_certificate);
        assert_eq!(facts.keys, ["tls.crt", "tls.key"]);
        let text = screen(&facts, &Palette::default(), Timestamp::now());
        assert!(text.contains("names:    web.example.com, 10.0.0.1"), "{text}");
        assert!(text.contains("private key: ECDSA-256, matches the certificate"), "{text}");
    }

    #[test]
    fn a_key_of_another_certificate_and_garbage_are_reported() {
        let (cert, _) = self_signed(&["web.example.com"]);
        let (_, other) = self_signed(&["other.example.com"]);
        let facts = facts(&secret(&cert, &other.serialize_pem()));
        assert!(!facts.key_matches_certificate);
        let text = screen(&facts, &Palette::default(), Timestamp::now());
        assert!(text.contains("does NOT match the certificate"), "{text}");
        let broken = facts_of_garbage();
        assert!(broken.chain.is_empty());
        assert!(broken.private_key.starts_with("unreadable"), "{}", broken.private_key);
    }

    fn facts_of_garbage() -> SecretFacts {
        facts(&secret("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a key"))
    }
}
