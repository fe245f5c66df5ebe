//! Revocation at a CA issuer: certpilot is the CA, so the revoked serials are kept in the
//! issuer's `status.revoked` (written under a field manager of their own, so the issuer
//! controller's status writes never touch them) and published as a CRL signed by the CA in
//! the Secret or ConfigMap `spec.ca.crl` names, one certpilot created and no one else's.

use super::{Pass, Phase};
use crate::{
    api::{
        ClusterIssuer, FIELD_MANAGER, IssuerKind, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
        issuer::{CrlTarget, IssuerSpec, REVOKED_MAX, RevokedSerial},
    },
    controller::issuer::IssuerObject,
    issuance::{Failure, FailureCode as C},
    pki::{
        CertInfo,
        sign::{CertificateAuthority, CrlEntry},
    },
    policy::revoke::{RevocationReason, Revoked, record},
};
use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;

/// The field manager of `status.revoked` and `status.crlNumber`.
const REVOCATIONS_MANAGER: &str = "certpilot-revocations";
/// The key the CRL (PEM) is stored under.
pub(super) const CRL_KEY: &str = "ca.crl";
/// On a CRL's Secret or ConfigMap: the issuer (`Kind/namespace/name`) certpilot wrote it for.
const CRL_OF_ANNOTATION: &str = "certpilot.dev/crl-of";

impl Pass<'_> {
    /// Records the revocation in the issuer's status and publishes the CRL, if one is asked for.
    pub(super) async fn revoke_at_ca(
        &self,
        ca: &CertificateAuthority,
        leaf: &CertInfo,
        reason: RevocationReason,
    ) -> Phase<(Revoked, Option<String>)> {
        let issuer = &self.attempt.spec.issuer_ref;
        let now = Timestamp::now();
        let entry = RevokedSerial {
            serial_number: leaf.serial_hex.clone(),
            reason: reason.to_string(),
            revoked_at: Time(now),
            not_after: Time(leaf.not_after),
        };
        let (spec, status) = match issuer.kind {
            IssuerKind::Issuer => {
                self.record_at::<crate::api::Issuer>(self.ctx.namespaced(&self.namespace), entry, now).await?
            }
            IssuerKind::ClusterIssuer => {
                self.record_at::<ClusterIssuer>(Api::all(self.ctx.client.clone()), entry, now).await?
            }
        };
        let (revoked, list, number) = status;
        let Some(target) = spec.ca.and_then(|ca| ca.crl) else { return Ok((revoked, None)) };
        let entries: Vec<CrlEntry> = list
            .iter()
            .map(|r| CrlEntry {
                serial_hex: &r.serial_number,
                revoked_at: r.revoked_at.0,
                reason_code: RevocationReason::parse(&r.reason).map_or(0, |r| r.code()),
            })
            .collect();
        let pem = ca
            .crl(&entries, number as u64, now)
            .map_err(|e| Failure::new(C::SigningFailed, format!("the CRL could not be signed: {e}")))?;
        let written = self.publish_crl(&target, &pem).await?;
        Ok((revoked, Some(written)))
    }

    /// Adds `entry` to the issuer's `status.revoked` and numbers the next CRL, on the
    /// condition that the issuer was not changed meanwhile (a 409 tries the pass again).
    async fn record_at<K: IssuerObject>(
        &self,
        api: Api<K>,
        entry: RevokedSerial,
        now: Timestamp,
    ) -> Phase<(IssuerSpec, (Revoked, Vec<RevokedSerial>, i64))> {
        let name = &self.attempt.spec.issuer_ref.name;
        let Some(issuer) = api.get_opt(name).await? else {
            let message = format!("{} does not exist", self.attempt.spec.issuer_ref);
            return Err(Failure::new(C::IssuerNotFound, message).into());
        };
        let status = issuer.issuer_status().cloned().unwrap_or_default();
        let (revoked, list) = match record(&status.revoked, entry, now, REVOKED_MAX) {
            Some(list) => (Revoked::Now, list),
            None => (Revoked::Already, status.revoked.clone()),
        };
        // Each CRL gets the next number, even one written again for a revocation already listed
        // (a pass stopped after recording it, before publishing).
        let number = status.crl_number.unwrap_or(0) + 1;
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {"name": name, "resourceVersion": issuer.resource_version()},
            "status": {"revoked": list, "crlNumber": number},
        });
        let params = PatchParams::apply(REVOCATIONS_MANAGER).force();
        api.patch_status(name, &params, &Patch::Apply(&body)).await?;
        Ok((issuer.issuer_spec().clone(), (revoked, list, number)))
    }

    /// Writes the CRL to the Secret or ConfigMap `target` names: created by certpilot for this
    /// issuer, or not written at all. Returns what it wrote, in words.
    async fn publish_crl(&self, target: &CrlTarget, pem: &str) -> Phase<String> {
        let namespace = self.issuer_secrets().namespace().unwrap_or_default().to_string();
        let owner = self.issuer_key();
        let metadata = |name: &str| {
            serde_json::json!({
                "name": name,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
                "annotations": {CRL_OF_ANNOTATION: owner},
            })
        };
        match (&target.secret_name, &target.config_map_name) {
            (Some(name), _) => {
                let body = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": metadata(name),
                    "type": "Opaque", "stringData": {CRL_KEY: pem}});
                self.write_owned::<Secret>(self.ctx.namespaced(&namespace), name, &owner, &body).await?;
                Ok(format!("Secret {namespace}/{name}"))
            }
            (None, Some(name)) => {
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name),
                    "data": {CRL_KEY: pem}});
                self.write_owned::<ConfigMap>(self.ctx.namespaced(&namespace), name, &owner, &body).await?;
                Ok(format!("ConfigMap {namespace}/{name}"))
            }
            (None, None) => {
                Err(Failure::new(C::InvalidSpec, "spec.ca.crl names neither a Secret nor a ConfigMap").into())
            }
        }
    }

    /// Applies `body` to object `name`, unless it exists and certpilot did not create it for
    /// the issuer `owner`.
    async fn write_owned<K>(&self, api: Api<K>, name: &str, owner: &str, body: &serde_json::Value) -> Phase<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        if let Some(existing) = api.get_opt(name).await? {
            let ours = existing.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
                && existing.annotations().get(CRL_OF_ANNOTATION).map(String::as_str) == Some(owner);
            if !ours {
                let kind = K::kind(&());
                return Err(Failure::new(
                    C::SecretNotOwned,
                    format!(
                        "{kind} {name} exists and certpilot did not create it for {owner}'s CRL, so it is left untouched: the revocation is recorded in the issuer's status.revoked, but no CRL was published; name another {kind} in spec.ca.crl, or delete this one"
                    ),
                )
                .into());
            }
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(body)).await?;
        Ok(())
    }
}
