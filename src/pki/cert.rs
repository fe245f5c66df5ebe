//! Reading certificates: the facts status reports, and the checks made before a Secret is written.

use super::{NameRequest, PkiError, PrivateKey};
use jiff::Timestamp;
use x509_parser::{extensions::GeneralName, prelude::*};

/// What certpilot needs to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The names a CA certificate may issue for (RFC 5280 name constraints), DNS and IP subtrees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NameConstraints {
    pub permitted_dns: Vec<String>,
    pub excluded_dns: Vec<String>,
    /// Address and mask, as the certificate holds them.
    pub permitted_ip: Vec<(Vec<u8>, Vec<u8>)>,
    pub excluded_ip: Vec<(Vec<u8>, Vec<u8>)>,
}

impl NameConstraints {
    /// As status shows them: DNS zones as they are, address ranges as CIDR (`10.0.0.0/8`).
    pub fn describe(&self) -> (Vec<String>, Vec<String>) {
        let describe = |dns: &[String], ip: &[(Vec<u8>, Vec<u8>)]| {
            let ranges = ip.iter().filter_map(|(net, mask)| cidr(net, mask));
            dns.iter().cloned().chain(ranges).collect::<Vec<_>>()
        };
        (describe(&self.permitted_dns, &self.permitted_ip), describe(&self.excluded_dns, &self.excluded_ip))
    }

    /// Back from what [`describe`](Self::describe) wrote.
    pub fn from_described(permitted: &[String], excluded: &[String]) -> Self {
        let split = |names: &[String]| {
            let (ranges, zones): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| n.contains('/'));
            let ranges = ranges.into_iter().filter_map(|r| from_cidr(r)).collect::<Vec<_>>();
            (zones.into_iter().cloned().collect::<Vec<_>>(), ranges)
        };
        let ((permitted_dns, permitted_ip), (excluded_dns, excluded_ip)) = (split(permitted), split(excluded));
        Self { permitted_dns, excluded_dns, permitted_ip, excluded_ip }
    }

    /// The first requested name the constraints do not allow, with why.
    pub fn violation(&self, names: &NameRequest) -> Option<String> {
        for name in &names.dns_names {
            let name = name.strip_prefix("*.").unwrap_or(name);
            if let Some(zone) = self.excluded_dns.iter().find(|zone| dns_within(name, zone)) {
                return Some(format!("{name} is under {zone}, which the CA's name constraints exclude"));
            }
            if !self.permitted_dns.is_empty() && !self.permitted_dns.iter().any(|zone| dns_within(name, zone)) {
                return Some(format!(
                    "{name} is outside the names the CA may issue for ({})",
                    self.permitted_dns.join(", ")
                ));
            }
        }
        for ip in &names.ip_addresses {
            let bytes = match ip {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            if self.excluded_ip.iter().any(|(net, mask)| ip_within(&bytes, net, mask)) {
                return Some(format!("{ip} is in a range the CA's name constraints exclude"));
            }
            if !self.permitted_ip.is_empty()
                && !self.permitted_ip.iter().any(|(net, mask)| ip_within(&bytes, net, mask))
            {
                return Some(format!("{ip} is outside the addresses the CA may issue for"));
            }
        }
        None
    }
}

/// RFC 5280: `zone` covers itself and every name below it (`.zone`: only the names below).
fn dns_within(name: &str, zone: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let zone = zone.to_ascii_lowercase();
    match zone.strip_prefix('.') {
        Some(below) => name.ends_with(&format!(".{below}")),
        None => zone.is_empty() || name == zone || name.ends_with(&format!(".{zone}")),
    }
}

fn cidr(network: &[u8], mask: &[u8]) -> Option<String> {
    let bits: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let address: std::net::IpAddr = match network.len() {
        4 => <[u8; 4]>::try_from(network).ok()?.into(),
        16 => <[u8; 16]>::try_from(network).ok()?.into(),
        _ => return None,
    };
    Some(format!("{address}/{bits}"))
}

fn from_cidr(range: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (address, bits) = range.split_once('/')?;
    let bits: usize = bits.parse().ok()?;
    let network = match address.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mask = (0..network.len())
        .map(|i| {
            let set = bits.saturating_sub(i * 8).min(8);
            (0xffu16 << (8 - set)) as u8
        })
        .collect();
    Some((network, mask))
}

fn ip_within(address: &[u8], network: &[u8], mask: &[u8]) -> bool {
    address.len() == network.len()
        && network.len() == mask.len()
        && address.iter().zip(network).zip(mask).all(|((a, n), m)| a & m == n & m)
}

/// The name constraints of a CA certificate (none when it has no such extension).
pub fn name_constraints(der: &[u8]) -> NameConstraints {
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return NameConstraints::default() };
    let Ok(Some(extension)) = cert.name_constraints() else { return NameConstraints::default() };
    let mut constraints = NameConstraints::default();
    let mut collect = |subtrees: &Option<Vec<x509_parser::extensions::GeneralSubtree>>, permitted: bool| {
        for subtree in subtrees.iter().flatten() {
            match &subtree.base {
                GeneralName::DNSName(zone) if permitted => constraints.permitted_dns.push(zone.to_string()),
                GeneralName::DNSName(zone) => constraints.excluded_dns.push(zone.to_string()),
                GeneralName::IPAddress(bytes) if bytes.len() % 2 == 0 => {
                    let (network, mask) = bytes.split_at(bytes.len() / 2);
                    let range = (network.to_vec(), mask.to_vec());
                    if permitted { constraints.permitted_ip.push(range) } else { constraints.excluded_ip.push(range) }
                }
                _ => {}
            }
        }
    };
    collect(&extension.value.permitted_subtrees, true);
    collect(&extension.value.excluded_subtrees, false);
    constraints
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

/// How a certificate's names differ from a request: the DNS names (compared without case),
/// IP addresses and common name asked for that it lacks, and those it has that were not asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameDifference {
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

/// The difference that makes [`check_names`] refuse `leaf` for `request`, listed name by name.
pub fn name_difference(leaf: &CertInfo, request: &NameRequest) -> NameDifference {
    use std::collections::BTreeSet;
    let dns = |names: &[String]| names.iter().map(|n| n.to_ascii_lowercase()).collect::<BTreeSet<_>>();
    let ips = |ips: &[std::net::IpAddr]| ips.iter().map(ToString::to_string).collect::<BTreeSet<_>>();
    let (want_dns, have_dns) = (dns(&request.dns_names), dns(&leaf.dns_names));
    let (want_ips, have_ips) = (ips(&request.ip_addresses), ips(&leaf.ip_addresses));
    let mut missing: Vec<String> =
        want_dns.difference(&have_dns).chain(want_ips.difference(&have_ips)).cloned().collect();
    let mut extra: Vec<String> =
        have_dns.difference(&want_dns).chain(have_ips.difference(&want_ips)).cloned().collect();
    if let Some(cn) = request.common_name.as_ref().filter(|cn| leaf.common_name.as_ref() != Some(*cn)) {
        missing.push(format!("common name {cn}"));
        extra.extend(leaf.common_name.as_ref().map(|have| format!("common name {have}")));
    }
    NameDifference { missing, extra }
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
