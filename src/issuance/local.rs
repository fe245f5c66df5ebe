//! Local signing (selfSigned and ca issuers): sign with the attempt's key, then verify.

use super::{Failure, FailureCode as C, Obtained, signer::Signer, steps::StepLog};
use crate::{
    api::CertificateAttemptSpec,
    pki::{
        NameRequest, PrivateKey,
        cert::verify_issued,
        sign::{DEFAULT_DURATION, SignRequest, self_signed},
    },
    policy::parse_duration,
};
use jiff::Timestamp;

/// The step of a local signature.
pub const SIGN_STEP: &str = "Sign";

/// The names an attempt asks for, as the PKI checks them.
pub fn name_request(spec: &CertificateAttemptSpec) -> Result<NameRequest, Failure> {
    let ip_addresses = spec
        .ip_addresses
        .iter()
        .map(|ip| ip.parse().map_err(|_| Failure::new(C::InvalidSpec, format!("{ip:?} is not an IP address"))))
        .collect::<Result<_, _>>()?;
    Ok(NameRequest { dns_names: spec.dns_names.clone(), ip_addresses, common_name: spec.common_name.clone() })
}

/// Signs with a local signer and verifies the result against the key and the names.
pub fn sign(
    spec: &CertificateAttemptSpec,
    signer: &Signer,
    key: PrivateKey,
    log: &mut StepLog,
) -> Result<Obtained, Failure> {
    let names = name_request(spec)?;
    let now = Timestamp::now();
    let lifetime = spec.duration.as_deref().and_then(parse_duration).unwrap_or(DEFAULT_DURATION);
    let request =
        SignRequest { names: &names, key: &key, not_before: now, not_after: now + lifetime, is_ca: spec.is_ca };
    log.begin(SIGN_STEP);
    let (chain_pem, ca_pem) = match signer {
        Signer::SelfSigned => {
            let pem = self_signed(&request).map_err(|e| Failure::new(C::SigningFailed, e.to_string()))?;
            log.succeed("signed with the certificate's own key");
            (pem.clone(), pem)
        }
        Signer::Ca(ca) => {
            let leaf = ca.sign(&request).map_err(|e| Failure::new(C::SigningFailed, e.to_string()))?;
            log.succeed(format!("signed by {}", ca.info.subject));
            (format!("{leaf}{}", ca.cert_pem), ca.cert_pem.clone())
        }
        Signer::Acme(_) => return Err(Failure::new(C::NotSupported, "ACME is not a local issuer")),
    };
    log.begin("Verify");
    let info = verify_issued(chain_pem.as_bytes(), &key, &names, Timestamp::now()).map_err(|e| {
        let failure = Failure::new(C::VerificationFailed, format!("the signed certificate was not written: {e}"));
        log.fail(failure.message.clone());
        failure
    })?;
    log.succeed(format!("the certificate matches the key and names; valid until {}", info.not_after));
    Ok(Obtained { chain_pem, ca_pem, key, info })
}
