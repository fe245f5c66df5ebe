//! Obtaining certificates: the steps of an attempt and their outcome, for each kind of issuer.

pub mod acme;
pub mod failure;
pub mod local;
pub mod signer;
pub mod steps;

pub use failure::{Failure, FailureCode, Outcome, Stop};

/// A certificate obtained and verified, ready for the Secret.
pub struct Obtained {
    pub chain_pem: String,
    pub ca_pem: String,
    pub key: crate::pki::PrivateKey,
    pub info: crate::pki::CertInfo,
}
