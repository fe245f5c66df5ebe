//! certpilot: a Kubernetes operator that issues and renews TLS certificates.
#![forbid(unsafe_code)]

pub mod api;
pub mod pki;
pub mod policy;
