//! Reading certificates: the facts status reports, and the checks made before a Secret is written.

use super::{NameRequest, PkiError, PrivateKey};
use jiff::Timestamp;
use x509_parser::{extensions::GeneralName, prelude::*};

/// What certpilot needs to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub serial_hex: String,
    pub fingerprint_sha256: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub public_key_info: Vec<u8>,
    pub is_ca: bool,
}

impl CertInfo {
    pub fn lifetime(&self) -> jiff::SignedDuration {
        self.not_after.duration_since(self.not_before)
    }
}

/// DER blocks of every `CERTIFICATE` in a PEM bundle, in order.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| PkiError::CertificateParse(e.to_string()))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(PkiError::CertificateParse("no PEM CERTIFICATE block found".into()));
    }
    Ok(out)
}

/// Parses the leaf (first certificate) of a PEM chain.
pub fn parse_chain(pem: &[u8]) -> Result<CertInfo, PkiError> {
    let ders = pem_certificates(pem)?;
    info(&ders[0])
}

/// Whether the certificate may sign certificates: it has no keyUsage, or one with keyCertSign.
pub fn may_sign_certificates(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return false };
    match cert.key_usage() {
        Ok(Some(usage)) => usage.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    }
}

pub fn info(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::CertificateParse(e.to_string()))?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push(n.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ip_addresses.push(ip)
                    }
                }
                _ => {}
            }
        }
    }
    let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(String::from);
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    Ok(CertInfo {
        serial_hex: hex_upper(cert.raw_serial(), ""),
        fingerprint_sha256: hex_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref(), ":"),
        not_before: timestamp(cert.validity().not_before),
        not_after: timestamp(cert.validity().not_after),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        common_name,
        dns_names,
        ip_addresses,
        public_key_info: cert.public_key().raw.to_vec(),
        is_ca,
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn timestamp(t: ASN1Time) -> Timestamp {
    Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn hex_upper(bytes: &[u8], sep: &str) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(sep)
}

/// The checks made before a new certificate replaces anything: the chain parses and each
/// certificate is signed by the next, the leaf carries exactly the requested names, its key is
/// the key we hold, and it is valid now.
pub fn verify_issued(
    chain_pem: &[u8],
    key: &PrivateKey,
    request: &NameRequest,
    now: Timestamp,
) -> Result<CertInfo, PkiError> {
    let ders = pem_certificates(chain_pem)?;
    verify_chain_signatures(&ders)?;
    let leaf = info(&ders[0])?;
    if leaf.public_key_info != key.public_key_info() {
        return Err(PkiError::Mismatch("the certificate's public key does not match the private key".into()));
    }
    check_names(&leaf, request)?;
    // Allow a little clock skew between the signer and us.
    let skew = jiff::SignedDuration::from_secs(300);
    if now < leaf.not_before - skew || now >= leaf.not_after {
        return Err(PkiError::Mismatch(format!(
            "the certificate is not valid now (valid from {} to {})",
            leaf.not_before, leaf.not_after
        )));
    }
    Ok(leaf)
}

fn verify_chain_signatures(ders: &[Vec<u8>]) -> Result<(), PkiError> {
    let parsed: Vec<X509Certificate> = ders
        .iter()
        .map(|d| X509Certificate::from_der(d).map(|(_, c)| c).map_err(|e| PkiError::CertificateParse(e.to_string())))
        .collect::<Result<_, _>>()?;
    for pair in parsed.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer() != parent.subject() {
            return Err(PkiError::Mismatch(format!(
                "chain is out of order: {} is not issued by {}",
                child.subject(),
                parent.subject()
            )));
        }
        child.verify_signature(Some(parent.public_key())).map_err(|e| {
            PkiError::Mismatch(format!("{} is not signed by {}: {e}", child.subject(), parent.subject()))
        })?;
    }
    Ok(())
}

/// The leaf must name exactly what was requested: no name missing, none extra.
pub fn check_names(leaf: &CertInfo, request: &NameRequest) -> Result<(), PkiError> {
    let mut want: Vec<String> = request.dns_names.iter().map(|n| n.to_ascii_lowercase()).collect();
    let mut have: Vec<String> = leaf.dns_names.iter().map(|n| n.to_ascii_lowercase()).collect();
    want.sort();
    want.dedup();
    have.sort();
    have.dedup();
    if want != have {
        return Err(PkiError::Mismatch(format!(
            "the certificate covers DNS names {have:?}, but {want:?} were requested"
        )));
    }
    let mut want_ips = request.ip_addresses.clone();
    let mut have_ips = leaf.ip_addresses.clone();
    want_ips.sort();
    have_ips.sort();
    if want_ips != have_ips {
        return Err(PkiError::Mismatch(format!(
            "the certificate covers IP addresses {have_ips:?}, but {want_ips:?} were requested"
        )));
    }
    if let Some(cn) = &request.common_name
        && leaf.common_name.as_deref() != Some(cn.as_str())
    {
        return Err(PkiError::Mismatch(format!("the certificate's common name is {:?}, not {cn:?}", leaf.common_name)));
    }
    Ok(())
}
