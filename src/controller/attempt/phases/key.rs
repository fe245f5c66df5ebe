//! The attempt's private key: kept from the Secret when rotation is off, else generated and,
//! for ACME, saved in a Secret owned by the attempt before the CA sees a CSR for it.

use super::{Halt, Pass, Phase, target::not_owned};
use crate::{
    api::{
        FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
        certificate::{KeyEncoding, PrivateKeySpec, RotationPolicy},
    },
    controller::attempt::key_secret_name,
    error::Error,
    issuance::{Failure, FailureCode as C, failure::is_refusal},
    pki::PrivateKey,
    policy::adopt::Adoption,
    secret,
};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Resource, ResourceExt, api::PostParams};
use std::collections::BTreeMap;

pub(super) const GENERATE_KEY_STEP: &str = "GenerateKey";

impl Pass<'_> {
    /// The key for this attempt and how it was come by: the Secret's own key when rotation is
    /// off and it still fits, else (ACME) the key saved by an earlier pass, else a new one
    /// (saved first for ACME).
    pub(super) async fn key_for(&self, acme: bool) -> Phase<(PrivateKey, String)> {
        let spec = &self.attempt.spec.private_key;
        // After a revocation the old key is never kept: it may be the reason for it.
        if spec.rotation_policy == RotationPolicy::Never
            && !self.attempt.spec.new_key
            && let Some(key) = self.kept_key().await?
        {
            let how = format!("kept the {} key already in the Secret (rotationPolicy: Never)", key.describe());
            return Ok((key, how));
        }
        if acme {
            match self.saved_key().await {
                Ok(key) => return Ok((key, "reused the key saved earlier by this attempt".to_string())),
                Err(Halt::Fail(_)) => {}
                Err(halt) => return Err(halt),
            }
        }
        let key = generate(spec.clone()).await?;
        let how = format!("generated a new {} key", key.describe());
        if acme {
            self.save_key(&key).await?;
        }
        Ok((key, how))
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

    /// The key saved in the attempt's own key Secret (owned by its uid: no one else's).
    pub(super) async fn saved_key(&self) -> Phase<PrivateKey> {
        let name = key_secret_name(&self.attempt.name_any());
        let saved = self.ctx.namespaced::<Secret>(&self.namespace).get_opt(&name).await?;
        let Some(saved) = saved else {
            return Err(Failure::new(C::Internal, format!("the attempt's key Secret {name} is gone")).into());
        };
        if !saved.owner_references().iter().any(|o| Some(&o.uid) == self.attempt.uid().as_ref()) {
            return Err(not_owned(&name, None).into());
        }
        Ok(secret::stored_key(&saved).map_err(|e| Failure::new(C::Internal, format!("Secret {name}: {e}")))?)
    }

    /// Saves the key in a Secret of the attempt's own, created (never written over).
    async fn save_key(&self, key: &PrivateKey) -> Phase<()> {
        let pem = key.to_pem(KeyEncoding::Pkcs8).map_err(|e| Failure::new(C::KeyEncodingFailed, e.to_string()))?;
        let name = key_secret_name(&self.attempt.name_any());
        let mut saved = Secret {
            data: Some(BTreeMap::from([(secret::TLS_KEY.to_string(), ByteString(pem.into_bytes()))])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        saved.metadata.name = Some(name.clone());
        saved.metadata.namespace = Some(self.namespace.clone());
        saved.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]));
        saved.metadata.owner_references =
            Some(vec![self.attempt.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?]);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.ctx.namespaced::<Secret>(&self.namespace).create(&params, &saved).await {
            Ok(_) => Ok(()),
            // Someone else's Secret of that name: never overwritten.
            Err(e) if crate::error::is_already_exists(&e) => Err(not_owned(&name, None).into()),
            Err(e) => match is_refusal(&e) {
                Some(status) => Err(Failure::refused(&format!("the key Secret {name}"), status).into()),
                None => Err(e.into()),
            },
        }
    }
}

/// Generates a key off the async runtime (RSA 4096 takes a while).
async fn generate(spec: PrivateKeySpec) -> Result<PrivateKey, Failure> {
    tokio::task::spawn_blocking(move || PrivateKey::generate(&spec))
        .await
        .map_err(|e| Failure::new(C::KeyGenerationFailed, e.to_string()))?
        .map_err(|e| Failure::new(C::KeyGenerationFailed, e.to_string()))
}
