//! certpilot: a Kubernetes operator that issues and renews TLS certificates.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod convert;
pub mod error;
pub mod health;
pub mod issuance;
pub mod keystore;
pub mod leader;
pub mod metrics;
pub mod outbound;
pub mod pki;
pub mod policy;
pub mod secret;
pub mod server;
pub mod solver;
pub mod telemetry;
pub mod watched;
