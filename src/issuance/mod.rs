//! Obtaining certificates: the steps of an attempt and their outcome, for each kind of issuer.

pub mod acme;
pub mod local;
pub mod steps;

use jiff::Timestamp;

/// Why an attempt ended without a certificate: a class (`errorCode`) and the full message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Timestamp>,
}

impl Failure {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }
}

/// A certificate obtained and verified, ready for the Secret.
pub struct Obtained {
    pub chain_pem: String,
    pub ca_pem: String,
    pub key: crate::pki::PrivateKey,
    pub info: crate::pki::CertInfo,
}
