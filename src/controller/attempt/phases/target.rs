//! The target Secret: what it is to hold (the chain, the key, keystores), and writing it only
//! where certpilot may: its own Secret for this Certificate, or one cert-manager wrote that
//! certpilot adopts; anyone else's is left untouched, saying whose it is.

use super::{Pass, Phase};
use crate::{
    controller::cache::Verified,
    issuance::{Failure, FailureCode as C, Obtained, failure::is_refusal, local},
    keystore::{self, Keystore},
    policy::adopt::Adoption,
    secret::{self, SecretContents},
};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};

impl Pass<'_> {
    /// Writes the target Secret in one server-side apply, after checking again that it may:
    /// - one the cache shows as certpilot's (for this Certificate, not yet written by this
    ///   attempt) is written on the condition that it is still the version the cache shows;
    /// - one the cache does not show is created by an apply that does not force: a Secret that
    ///   someone else holds conflicts (its `tls.crt`, or its type, is theirs: another
    ///   Certificate's attempt writes under a field manager of its own) instead of being
    ///   overwritten;
    /// - anything else, or when either write is refused, is read and checked first. A Secret
    ///   this very attempt already wrote (its status write was lost) is left as it is; one
    ///   cert-manager wrote that certpilot adopts (checked again now) is taken over.
    pub(super) async fn write_target(&self, obtained: &Obtained) -> Phase<Stored> {
        let spec = &self.attempt.spec;
        let keystores = self.keystores().await?;
        let built = self.target_contents(obtained, &keystores)?;
        let unchecked = match self.cached_target() {
            CachedTarget::Ours(version) => Some(self.apply_target(built.clone(), Some(version), true).await),
            CachedTarget::Absent => Some(self.apply_target(built.clone(), None, false).await),
            CachedTarget::Other => None,
        };
        match unchecked {
            // Changed since the cache saw it, or someone else's: look at it before writing.
            Some(Err(kube::Error::Api(status))) if status.code == 409 || status.code == 422 => {}
            Some(written) => return self.stored(written),
            None => {}
        }
        let secrets: Api<Secret> = self.ctx.namespaced(&self.namespace);
        if let Some(existing) = secrets.get_opt(&spec.secret_name).await? {
            if !secret::may_write(&existing.metadata, &spec.certificate_name) {
                return match self.adoption(&existing) {
                    Some(Adoption::Adoptable(_)) => {
                        let written = self.take_over(&existing, built).await;
                        self.stored(written).map(|_| Stored::TakenOver)
                    }
                    Some(Adoption::NotAdoptable(reason)) => Err(not_adoptable(&spec.secret_name, &reason).into()),
                    None => Err(not_owned(&spec.secret_name, secret::holder(&existing.metadata)).into()),
                };
            }
            if let Some(info) = secret::written_by_attempt(&existing, &self.attempt.name_any()) {
                return Ok(Stored::Already(Box::new(info)));
            }
            if existing.type_.as_deref().is_some_and(|t| t != "kubernetes.io/tls") {
                return Err(Failure::new(
                    C::SecretTypeMismatch,
                    format!(
                        "Secret {} has type {:?}, but certpilot writes kubernetes.io/tls and the type of a Secret cannot change; delete the Secret so certpilot can recreate it",
                        spec.secret_name,
                        existing.type_.as_deref().unwrap_or_default()
                    ),
                )
                .into());
            }
        }
        let written = self.apply_target(built, None, true).await;
        self.stored(written)
    }

    /// Whether certpilot adopts the target Secret for this attempt's names now, if cert-manager
    /// wrote it (`policy::adopt`). Decided at every write: one that expired or changed since
    /// the Certificate looked is not written.
    pub(super) fn adoption(&self, target: &Secret) -> Option<Adoption> {
        let spec = &self.attempt.spec;
        let names = local::name_request(spec).ok()?;
        secret::adoption(target, &spec.certificate_name, &names, Timestamp::now())
    }

    /// Replaces the adopted Secret `existing` whole (`secret::taken_over`), at its
    /// resourceVersion: one changed meanwhile is refused (409) and looked at again.
    async fn take_over(&self, existing: &Secret, built: Secret) -> kube::Result<Secret> {
        let manager = secret::field_manager(&self.attempt.spec.certificate_name);
        let params = PostParams { field_manager: Some(manager), ..Default::default() };
        let secrets: Api<Secret> = self.ctx.namespaced(&self.namespace);
        secrets.replace(&self.attempt.spec.secret_name, &params, &secret::taken_over(existing, built)).await
    }

    /// What the cache of certpilot's Secrets says of the target Secret.
    fn cached_target(&self) -> CachedTarget {
        let spec = &self.attempt.spec;
        let Some(cached) = self.ctx.caches.secrets.watched(&self.namespace, &spec.secret_name) else {
            return CachedTarget::Absent;
        };
        let ours = cached.written_for == Some(secret::label_value(&spec.certificate_name))
            && !cached.names_attempt(&self.attempt.name_any());
        if ours { CachedTarget::Ours(cached.version) } else { CachedTarget::Other }
    }

    /// The keystores the attempt asks for, with their passwords read from their Secrets now:
    /// without one, nothing is written (the Secret in place stays whole).
    async fn keystores(&self) -> Phase<Vec<Keystore>> {
        let secrets: Api<Secret> = self.ctx.namespaced(&self.namespace);
        let mut keystores = Vec::new();
        for format in &self.attempt.spec.additional_output_formats {
            let secret = match format.password_secret_ref.as_ref().filter(|_| format.type_.is_keystore()) {
                Some(reference) => secrets.get_opt(&reference.name).await?,
                None => None,
            };
            match keystore::keystore(format, secret.as_ref()) {
                Some(Ok(keystore)) => keystores.push(keystore),
                Some(Err(problem)) => return Err(Failure::new(C::KeystorePasswordMissing, problem.to_string()).into()),
                None => {}
            }
        }
        Ok(keystores)
    }

    /// What the target Secret is to hold.
    fn target_contents(&self, obtained: &Obtained, keystores: &[Keystore]) -> Result<Secret, Failure> {
        let spec = &self.attempt.spec;
        let key_pem = obtained
            .key
            .to_pem(spec.private_key.encoding)
            .map_err(|e| Failure::new(C::KeyEncodingFailed, e.to_string()))?;
        let formats: Vec<_> = spec.additional_output_formats.iter().map(|f| f.type_).collect();
        secret::build(&SecretContents {
            name: &spec.secret_name,
            namespace: &self.namespace,
            certificate: &spec.certificate_name,
            attempt: &self.attempt.name_any(),
            issuer: &spec.issuer_ref,
            chain_pem: &obtained.chain_pem,
            key_pem: &key_pem,
            key_der: &obtained.key.pkcs8_der(),
            ca_pem: &obtained.ca_pem,
            template: spec.secret_template.as_ref(),
            output_formats: &formats,
            keystores,
            info: &obtained.info,
        })
        .map_err(|e| Failure::new(C::KeyEncodingFailed, e.to_string()))
    }

    /// One server-side apply of the target Secret, at `version` when given, taking fields
    /// other managers hold only when `force`. The manager is this Certificate's own: an apply
    /// that does not force conflicts with the fields another Certificate's attempt wrote.
    async fn apply_target(&self, mut built: Secret, version: Option<String>, force: bool) -> kube::Result<Secret> {
        built.metadata.resource_version = version;
        let manager = secret::field_manager(&self.attempt.spec.certificate_name);
        let params = PatchParams { force, ..PatchParams::apply(&manager) };
        let secrets: Api<Secret> = self.ctx.namespaced(&self.namespace);
        secrets.patch(&self.attempt.spec.secret_name, &params, &Patch::Apply(&built)).await
    }

    /// What a write of the target Secret came to. What was written is remembered as verified:
    /// it is what the Certificate controller would otherwise read back.
    fn stored(&self, written: kube::Result<Secret>) -> Phase<Stored> {
        let name = &self.attempt.spec.secret_name;
        match written {
            Ok(written) => {
                let certificate = self.attempt.spec.certificate_name.clone();
                let verified = Verified {
                    state: secret::classify(Some(&written), &certificate),
                    certificate,
                    version: written.metadata.resource_version.clone(),
                    written_by: Some(self.attempt.name_any()),
                };
                self.ctx.caches.secrets.put_verified(&self.namespace, name, verified);
                Ok(Stored::Written)
            }
            Err(e) => match is_refusal(&e) {
                Some(status) => Err(Failure::refused(&format!("Secret {name}"), status).into()),
                None => Err(e.into()),
            },
        }
    }
}

/// What the cache of certpilot's Secrets says of the target Secret.
enum CachedTarget {
    /// Not there: it does not exist, or it is not certpilot's.
    Absent,
    /// certpilot wrote it for this Certificate, at this resourceVersion.
    Ours(String),
    /// Another Certificate's, or written by this very attempt.
    Other,
}

/// What storing found or did.
pub(super) enum Stored {
    Written,
    /// Written over the Secret cert-manager wrote, which certpilot adopted.
    TakenOver,
    /// The Secret already holds the certificate this attempt wrote before.
    Already(Box<crate::pki::CertInfo>),
}

/// A Secret certpilot may not write; `holder`: the Certificate certpilot wrote it for, if any.
pub(super) fn not_owned(secret: &str, holder: Option<String>) -> Failure {
    let message = match holder {
        Some(holder) => format!("Secret {secret} belongs to Certificate {holder}; it was left untouched"),
        None => format!(
            "Secret {secret} exists and was not created by certpilot for this Certificate; it was left untouched"
        ),
    };
    Failure::new(C::SecretNotOwned, message)
}

/// A Secret cert-manager wrote that certpilot does not adopt (any more): left untouched.
fn not_adoptable(secret: &str, reason: &crate::policy::adopt::NotAdoptable) -> Failure {
    let message = format!(
        "Secret {secret} was issued by cert-manager, but certpilot cannot adopt it: {reason}; it was left untouched"
    );
    Failure::new(C::SecretNotOwned, message)
}
