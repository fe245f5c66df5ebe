//! The attempt's private key: kept from the Secret when rotation is off, else generated and,
//! for ACME, sealed into the attempt's status (`pki::seal`) before the CA sees a CSR for it.

use super::{Pass, Phase, target::not_owned};
use crate::{
    api::certificate::{PrivateKeySpec, RotationPolicy},
    controller::attempt::key_secret_name,
    error::Error,
    issuance::{Failure, FailureCode as C},
    pki::PrivateKey,
    policy::adopt::Adoption,
    secret,
};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

pub(in crate::controller::attempt) const GENERATE_KEY_STEP: &str = "GenerateKey";

impl Pass<'_> {
    /// The key for this attempt and how it was come by: the Secret's own key when rotation is
    /// off and it still fits, else (ACME) the key sealed into the status by an earlier pass,
    /// else a new one (sealed into the status for ACME, written with the intent to order,
    /// before the CA can see a CSR for it).
    pub(super) async fn key_for(&mut self, acme: bool) -> Phase<(PrivateKey, String)> {
        if let Some(key) = self.kept_key_if_asked().await? {
            let how = format!("kept the {} key already in the Secret (rotationPolicy: Never)", key.describe());
            return Ok((key, how));
        }
        if acme && self.status.sealed_key.is_some() {
            let key = self.unsealed_key().await?;
            return Ok((key, "reused the key sealed into this status by an earlier pass".to_string()));
        }
        let key = generate(self.attempt.spec.private_key.clone()).await?;
        let how = format!("generated a new {} key", key.describe());
        if !acme {
            return Ok((key, how));
        }
        let sealing = self.ctx.sealing.key().await?;
        let uid = self.attempt.uid().ok_or(Error::MissingField("metadata.uid"))?;
        let sealed = sealing.seal_key(&key, &uid).map_err(|e| Failure::new(C::KeyEncodingFailed, e.to_string()))?;
        self.status.sealed_key = Some(sealed);
        Ok((key, format!("{how} and sealed it into this status")))
    }

    /// The key an ACME attempt finalizes with: sealed into the status, else the Secret's own
    /// (rotationPolicy: Never), else (an attempt begun by a certpilot that kept keys in a
    /// Secret of the attempt's) that Secret's.
    pub(super) async fn attempt_key(&self) -> Phase<PrivateKey> {
        if self.status.sealed_key.is_some() {
            return self.unsealed_key().await;
        }
        if let Some(key) = self.kept_key_if_asked().await? {
            return Ok(key);
        }
        self.key_from_secret().await
    }

    /// The key sealed into the status, opened. One that does not open (the sealing key was
    /// deleted or replaced since it was sealed) ends the attempt: the next starts afresh.
    pub(super) async fn unsealed_key(&self) -> Phase<PrivateKey> {
        let sealed = self.status.sealed_key.as_deref().unwrap_or_default();
        let sealing = self.ctx.sealing.key().await?;
        let uid = self.attempt.uid().unwrap_or_default();
        sealing.open_key(sealed, &uid).map_err(|why| {
            Failure::new(
                C::SealedKeyUnusable,
                format!(
                    "the key this attempt sealed into its status before the CA saw a CSR for it cannot be opened with \
                     certpilot's sealing key ({}): {why}. The sealing key was deleted or replaced while the attempt was \
                     under way; this attempt cannot finish, and the next one starts afresh with a new key and order",
                    self.ctx.sealing.location()
                ),
            )
            .into()
        })
    }

    /// The target Secret's key, when rotation is off (and the attempt was not made after a
    /// revocation: the old key may be the reason for it) and it still fits.
    async fn kept_key_if_asked(&self) -> Phase<Option<PrivateKey>> {
        let spec = &self.attempt.spec;
        if spec.private_key.rotation_policy != RotationPolicy::Never || spec.new_key {
            return Ok(None);
        }
        self.kept_key().await
    }

    /// The key in the target Secret, when certpilot may write that Secret (or adopts it) and
    /// the key still fits the spec.
    async fn kept_key(&self) -> Phase<Option<PrivateKey>> {
        let spec = &self.attempt.spec;
        let target = self.ctx.namespaced::<Secret>(&self.namespace).get_opt(&spec.secret_name).await?;
        Ok(target
            .filter(|t| {
                secret::may_write(&t.metadata, &spec.certificate_name)
                    || matches!(self.adoption(t), Some(Adoption::Adoptable(_)))
            })
            .and_then(|t| secret::stored_key(&t).ok())
            .filter(|k| k.matches(&spec.private_key)))
    }

    /// The key saved in the attempt's own key Secret (owned by its uid: no one else's) by a
    /// certpilot that kept keys there.
    async fn key_from_secret(&self) -> Phase<PrivateKey> {
        let name = key_secret_name(&self.attempt.name_any());
        let saved = self.ctx.namespaced::<Secret>(&self.namespace).get_opt(&name).await?;
        let Some(saved) = saved else {
            return Err(Failure::new(
                C::Internal,
                format!("the attempt has no sealed key, and its key Secret {name} is gone"),
            )
            .into());
        };
        if !saved.owner_references().iter().any(|o| Some(&o.uid) == self.attempt.uid().as_ref()) {
            return Err(not_owned(&name, None).into());
        }
        Ok(secret::stored_key(&saved).map_err(|e| Failure::new(C::Internal, format!("Secret {name}: {e}")))?)
    }
}

/// Generates a key off the async runtime (RSA 4096 takes a while).
async fn generate(spec: PrivateKeySpec) -> Result<PrivateKey, Failure> {
    tokio::task::spawn_blocking(move || PrivateKey::generate(&spec))
        .await
        .map_err(|e| Failure::new(C::KeyGenerationFailed, e.to_string()))?
        .map_err(|e| Failure::new(C::KeyGenerationFailed, e.to_string()))
}
