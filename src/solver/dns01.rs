//! DNS-01 through RFC 2136 dynamic updates signed with TSIG (to come in this module).

use crate::{
    api::{CertificateAttempt, issuer::Rfc2136Solver},
    controller::context::Context,
    error::Result,
    issuance::Failure,
};

/// Publishes `_acme-challenge.<name>` TXT `value` and waits until the server answers with it.
pub async fn present(
    _ctx: &Context,
    _attempt: &CertificateAttempt,
    _solver: &Rfc2136Solver,
    _name: &str,
    _value: &str,
) -> Result<std::result::Result<(), Failure>> {
    Ok(Err(Failure::new("NotSupported", "dns-01 is not supported by this version of certpilot yet")))
}
