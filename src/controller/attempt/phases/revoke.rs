//! Revoking: the certificate a Revoke attempt names, revoked at the issuer that issued it: an
//! ACME CA is asked (`revokeCert`); a CA issuer records it and publishes its CRL (`crl.rs`).
//! The attempt revokes exactly the serial it was made for, read from the target Secret only
//! now (certpilot's own Secret for this Certificate; anyone else's is not looked into).

use super::{Pass, Phase, Transition};
use crate::{
    api::attempt::RevokedCertificate,
    issuance::{Failure, FailureCode as C, acme::revoke::revoke, signer::Signer},
    pki::{
        CertInfo,
        cert::{info, pem_certificates},
    },
    policy::revoke::{RevokeRequest, Revoked},
    secret,
};
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};

pub(super) const REVOKE_STEP: &str = "Revoke";

impl Pass<'_> {
    /// Revoking: ask the issuer's CA to revoke the current certificate, once.
    pub(super) async fn revoking(&mut self) -> Phase<Transition> {
        if !self.log.steps.iter().any(|s| s.name == REVOKE_STEP) {
            self.log.begin(REVOKE_STEP);
        }
        let request = self.revoke_request()?;
        let (leaf, der) = self.current_certificate().await?;
        let serial = leaf.serial_hex.clone();
        let mut published = None;
        let outcome = match self.signer().await? {
            Signer::SelfSigned => {
                return Err(Failure::new(
                    C::RevocationNotPossible,
                    format!(
                        "{} is self-signed: no CA can revoke certificate {serial}; stop using it (a reissue with a new key follows unless no-reissue was asked)",
                        self.attempt.spec.issuer_ref
                    ),
                )
                .into());
            }
            Signer::Ca(ca) => {
                let (revoked, crl) = self.revoke_at_ca(&ca, &leaf, request.reason).await?;
                published = crl;
                revoked
            }
            Signer::Acme(acme) => {
                let account = self.account(&acme).await?;
                revoke(&account.account, &der, request.reason).await?
            }
        };
        let mut note = match outcome {
            Revoked::Now => format!("the CA revoked certificate {serial} ({})", request.reason),
            Revoked::Already => {
                format!("certificate {serial} was already revoked at the CA: revoking twice does nothing more")
            }
        };
        if let Some(published) = published {
            note.push_str(&format!("; published the CRL in {published}"));
        }
        self.log.succeed(note);
        self.status.revoked = Some(RevokedCertificate {
            serial_number: serial,
            reason: request.reason.to_string(),
            revoked_at: Time(Timestamp::now()),
            already_revoked: outcome == Revoked::Already,
        });
        Ok(Transition::Succeed)
    }

    fn revoke_request(&self) -> Phase<RevokeRequest> {
        let value = self.attempt.spec.revoke_request.as_deref().unwrap_or_default();
        Ok(RevokeRequest::parse(value).map_err(|e| Failure::new(C::InvalidSpec, format!("spec.revokeRequest: {e}")))?)
    }

    /// The serial and DER of the certificate to revoke: the one the attempt names, still in
    /// certpilot's own Secret for this Certificate.
    async fn current_certificate(&self) -> Phase<(CertInfo, Vec<u8>)> {
        let spec = &self.attempt.spec;
        let name = &spec.secret_name;
        let Some(wanted) = spec.revoke_serial.clone() else {
            let message = format!("Secret {name} held no certificate when revocation was requested: nothing to revoke");
            return Err(Failure::new(C::NothingToRevoke, message).into());
        };
        let target = self.ctx.namespaced::<Secret>(&self.namespace).get_opt(name).await?;
        let target = target.filter(|t| secret::may_write(&t.metadata, &spec.certificate_name));
        let chain = target.as_ref().and_then(|t| t.data.as_ref()?.get(secret::TLS_CERT)).map(|b| b.0.clone());
        let leaf = chain.and_then(|pem| pem_certificates(&pem).ok()?.into_iter().next());
        let found = leaf.and_then(|der| Some((info(&der).ok()?, der)));
        match found {
            Some((leaf, der)) if leaf.serial_hex.eq_ignore_ascii_case(&wanted) => Ok((leaf, der)),
            Some((leaf, _)) => Err(Failure::new(
                C::NothingToRevoke,
                format!(
                    "Secret {name} now holds certificate {}, not {wanted} which this attempt was made to revoke; nothing was revoked",
                    leaf.serial_hex
                ),
            )
            .into()),
            None => Err(Failure::new(
                C::NothingToRevoke,
                format!("Secret {name} no longer holds certificate {wanted} in a Secret certpilot wrote for this Certificate; nothing was revoked"),
            )
            .into()),
        }
    }
}
