//! Revocation at the CA (RFC 8555 §7.6), signed with the account key of the issuer that
//! issued the certificate.

use super::problem;
use crate::{
    issuance::{Failure, FailureCode as C},
    policy::revoke::{RevocationReason, Revoked},
};
use instant_acme::{Account, RevocationRequest};
use rustls_pki_types::CertificateDer;

/// Asks the CA to revoke `der` for `reason`.
pub async fn revoke(account: &Account, der: &[u8], reason: RevocationReason) -> Result<Revoked, Failure> {
    let certificate = CertificateDer::from(der);
    let request = RevocationRequest { certificate: &certificate, reason: Some(acme_reason(reason)) };
    match account.revoke(&request).await {
        Ok(()) => Ok(Revoked::Now),
        Err(error) => outcome(problem::failure(&error)),
    }
}

/// A failed request in the words a Revoke attempt reports: already revoked is success; a
/// certificate the CA does not know says so and what to do.
fn outcome(failure: Failure) -> Result<Revoked, Failure> {
    if failure.code == C::AlreadyRevoked {
        return Ok(Revoked::Already);
    }
    let text = failure.message.to_ascii_lowercase();
    let unknown = ["not found", "unable to find", "unknown certificate", "no such certificate", "not issued"];
    if matches!(failure.code, C::Malformed | C::Unauthorized | C::AcmeError) && unknown.iter().any(|u| text.contains(u))
    {
        return Err(Failure::new(
            C::CertificateUnknown,
            format!(
                "the CA does not know this certificate ({}): it was issued by another CA or the CA has forgotten it; nothing was revoked, remove the certificate from use instead",
                failure.message
            ),
        ));
    }
    Err(failure)
}

fn acme_reason(reason: RevocationReason) -> instant_acme::RevocationReason {
    use instant_acme::RevocationReason as R;
    match reason {
        RevocationReason::Unspecified => R::Unspecified,
        RevocationReason::KeyCompromise => R::KeyCompromise,
        RevocationReason::AffiliationChanged => R::AffiliationChanged,
        RevocationReason::Superseded => R::Superseded,
        RevocationReason::CessationOfOperation => R::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_revoked_is_done_and_an_unknown_certificate_says_so() {
        let already = Failure::new(C::AlreadyRevoked, "Certificate already revoked");
        assert_eq!(outcome(already), Ok(Revoked::Already));
        let unknown = Failure::new(C::Malformed, "Unable to find specified certificate (urn:...:malformed)");
        let failure = outcome(unknown).unwrap_err();
        assert_eq!(failure.code, C::CertificateUnknown);
        assert!(failure.message.contains("does not know") && failure.message.contains("Unable to find"));
        let other = Failure::new(C::Unauthorized, "the account did not issue it");
        assert_eq!(outcome(other.clone()).unwrap_err(), other);
    }

    #[test]
    fn reasons_keep_their_crl_codes() {
        for &reason in RevocationReason::ALL {
            assert_eq!(acme_reason(reason) as u8, reason.code());
        }
    }
}
