//! certpilot's sealing key (see `pki::seal`): an ACME attempt's new private key is sealed with it
//! into the attempt's status. It lives in a Secret of its own in the operator's namespace,
//! created by whichever replica needs it first (another one racing it gets AlreadyExists and
//! reads the winner's), and is read once per process.

use crate::{
    api::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE},
    error::is_already_exists,
    issuance::{Failure, FailureCode as C, Stop, failure::is_refusal},
    pki::seal::SealingKey,
};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, Client, ResourceExt, api::PostParams};
use std::{collections::BTreeMap, sync::Arc};
use tokio::sync::OnceCell;

/// The sealing key's Secret, in the operator's namespace.
pub const SEALING_KEY_SECRET: &str = "certpilot-sealing";
/// Its data key.
const SEALING_KEY_FIELD: &str = "key";

/// The sealing key, once read (or made) by this process.
pub struct Sealing {
    secrets: Api<Secret>,
    namespace: String,
    key: OnceCell<Arc<SealingKey>>,
}

impl Sealing {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self { secrets: Api::namespaced(client, namespace), namespace: namespace.to_string(), key: OnceCell::new() }
    }

    /// Where the sealing key is kept, as messages name it.
    pub fn location(&self) -> String {
        format!("Secret {}/{SEALING_KEY_SECRET}", self.namespace)
    }

    /// The sealing key: read, else made. A process keeps the key it first read: a Secret
    /// deleted or replaced since takes effect at its next start.
    pub async fn key(&self) -> Result<Arc<SealingKey>, Stop> {
        self.key.get_or_try_init(|| self.read_or_create()).await.cloned()
    }

    async fn read_or_create(&self) -> Result<Arc<SealingKey>, Stop> {
        // Read first: every start of a process after the first finds it, and a create refused
        // as AlreadyExists would still be a write.
        if let Some(secret) = self.secrets.get_opt(SEALING_KEY_SECRET).await.map_err(api)? {
            return self.key_in(&secret);
        }
        let material = SealingKey::generate().map_err(|e| self.unusable(&e.to_string()))?;
        let mut secret = Secret {
            data: Some(BTreeMap::from([(SEALING_KEY_FIELD.to_string(), ByteString(material.clone()))])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        secret.metadata.name = Some(SEALING_KEY_SECRET.into());
        secret.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]));
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.secrets.create(&params, &secret).await {
            Ok(_) => {
                tracing::info!(secret = %self.location(), "created certpilot's sealing key");
                Ok(Arc::new(SealingKey::new(&material).map_err(|e| self.unusable(&e.to_string()))?))
            }
            // Another replica made it first: its key is the one.
            Err(e) if is_already_exists(&e) => match self.secrets.get_opt(SEALING_KEY_SECRET).await.map_err(api)? {
                Some(secret) => self.key_in(&secret),
                None => Err(api(e)),
            },
            Err(e) => match is_refusal(&e) {
                Some(status) => Err(Failure::refused(&format!("the sealing key {}", self.location()), status).into()),
                None => Err(api(e)),
            },
        }
    }

    /// The key in `secret`, when certpilot made it and it holds a key.
    fn key_in(&self, secret: &Secret) -> Result<Arc<SealingKey>, Stop> {
        if secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE) {
            return Err(self.unusable("it was not created by certpilot"));
        }
        let material = secret.data.as_ref().and_then(|d| d.get(SEALING_KEY_FIELD)).map(|b| b.0.as_slice());
        let Some(material) = material else { return Err(self.unusable(&format!("it has no {SEALING_KEY_FIELD:?}"))) };
        Ok(Arc::new(SealingKey::new(material).map_err(|e| self.unusable(&e.to_string()))?))
    }

    fn unusable(&self, why: &str) -> Stop {
        Failure::new(
            C::SealedKeyUnusable,
            format!(
                "{} cannot hold certpilot's sealing key: {why}; delete it, and certpilot makes a new one",
                self.location()
            ),
        )
        .into()
    }
}

fn api(error: kube::Error) -> Stop {
    Stop::Api(error.into())
}
