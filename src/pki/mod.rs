//! Keys, certificates and their checks: everything cryptographic is done by rcgen, aws-lc-rs and
//! x509-parser; this module only decides what to ask of them.

pub mod cert;
pub mod keys;
pub mod seal;
pub mod sign;

pub use cert::{CertInfo, parse_chain};
pub use keys::PrivateKey;

/// What a certificate must say: its names and, optionally, its common name.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NameRequest {
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub common_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    #[error("the private key could not be read: {0}")]
    KeyParse(String),
    #[error("the certificate could not be read: {0}")]
    CertificateParse(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("{0}")]
    Mismatch(String),
}
