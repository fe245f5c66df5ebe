//! ACME accounts: loaded from the account Secret, or registered (with external account binding
//! when the CA needs it) and saved there, so restarts reuse the same account.

use super::client::{AcmeHttpClient, Observer, RetryAfter};
use crate::{
    api::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, issuer::AcmeIssuer},
    controller::context::{Context, FIELD_MANAGER},
    error::Result,
    issuance::Failure,
};
use base64::Engine;
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeMap;

/// Key of the saved account credentials (account URL, key and directory) in the Secret.
pub const CREDENTIALS_KEY: &str = "credentials.json";

/// A usable account.
pub struct AcmeAccount {
    pub account: Account,
    pub retry_after: RetryAfter,
    pub observer: Observer,
}

impl AcmeAccount {
    pub fn uri(&self) -> &str {
        self.account.id()
    }
}

/// The Secret holding an issuer's account: `accountKeySecretRef.name`, or `<issuer>-acme-account`.
pub fn secret_name(issuer: &str, spec: &AcmeIssuer) -> String {
    spec.account_key_secret_ref.as_ref().map(|r| r.name.clone()).unwrap_or_else(|| format!("{issuer}-acme-account"))
}

type Builder = (instant_acme::AccountBuilder, RetryAfter, Observer);

fn builder(spec: &AcmeIssuer) -> std::result::Result<Builder, Failure> {
    let (http, retry_after, observer) =
        AcmeHttpClient::new(spec.ca_bundle.as_deref()).map_err(|e| Failure::new("InvalidCABundle", e))?;
    Ok((Account::builder_with_http(Box::new(http)), retry_after, observer))
}

fn secret_data(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

/// Loads the account saved in the issuer's Secret, registering one first when there is none.
/// A rejected nonce (the CA asking for a retry) is retried a few times.
pub async fn load_or_register(
    ctx: &Context,
    issuer: &str,
    namespace: &str,
    spec: &AcmeIssuer,
) -> Result<std::result::Result<AcmeAccount, Failure>> {
    let mut tries = 0;
    loop {
        tries += 1;
        match load_or_register_once(ctx, issuer, namespace, spec).await? {
            Err(failure) if failure.code == "BadNonce" && tries < 5 => continue,
            outcome => return Ok(outcome),
        }
    }
}

async fn load_or_register_once(
    ctx: &Context,
    issuer: &str,
    namespace: &str,
    spec: &AcmeIssuer,
) -> Result<std::result::Result<AcmeAccount, Failure>> {
    let secrets: Api<Secret> = ctx.namespaced(namespace);
    let name = secret_name(issuer, spec);
    let existing = secrets.get_opt(&name).await?;
    let saved = existing.as_ref().and_then(|s| secret_data(s, CREDENTIALS_KEY));
    if let Some(json) = saved
        && let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&json)
        && credentials_directory(&json).as_deref() == Some(spec.server.as_str())
    {
        let (builder, retry_after, observer) = match builder(spec) {
            Ok(b) => b,
            Err(f) => return Ok(Err(f)),
        };
        return Ok(builder
            .from_credentials(credentials)
            .await
            .map(|account| AcmeAccount { account, retry_after, observer })
            .map_err(|e| super::problem::failure(&e)));
    }
    let user_key = existing.as_ref().and_then(|s| secret_data(s, &key_field(spec)));
    let registered = match user_key {
        Some(pem) => from_user_key(spec, &pem).await,
        None => register(ctx, namespace, spec).await?,
    };
    let (account, credentials) = match registered {
        Ok(pair) => pair,
        Err(failure) => return Ok(Err(failure)),
    };
    save(&secrets, &name, spec, &credentials.0, &credentials.1).await?;
    Ok(Ok(account))
}

fn key_field(spec: &AcmeIssuer) -> String {
    spec.account_key_secret_ref
        .as_ref()
        .map(|r| r.key.clone())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "tls.key".into())
}

fn credentials_directory(json: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(json).ok()?.get("directory")?.as_str().map(String::from)
}

type Registered = (AcmeAccount, (Vec<u8>, String));

/// An account for a key the user put in the Secret (e.g. migrated from another client).
async fn from_user_key(spec: &AcmeIssuer, pem: &[u8]) -> std::result::Result<Registered, Failure> {
    let der =
        pem::parse(pem).map_err(|e| Failure::new("InvalidAccountKey", format!("the account key is not PEM: {e}")))?;
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.contents().to_vec());
    let key = instant_acme::Key::from_pkcs8_der(pkcs8.clone_key()).map_err(|e| {
        Failure::new("InvalidAccountKey", format!("the account key must be a PKCS#8 ECDSA P-256 key: {e}"))
    })?;
    let (builder, retry_after, observer) = builder(spec)?;
    let (account, credentials) = builder
        .create_from_key((key, rustls_pki_types::PrivateKeyDer::Pkcs8(pkcs8)), spec.server.clone())
        .await
        .map_err(|e| super::problem::failure(&e))?;
    let json = serde_json::to_vec(&credentials).map_err(|e| Failure::new("Internal", e.to_string()))?;
    let pem = String::from_utf8_lossy(pem).into_owned();
    Ok((AcmeAccount { account, retry_after, observer }, (json, pem)))
}

/// Registers a new account (with the contact email and, when configured, external account binding).
async fn register(
    ctx: &Context,
    namespace: &str,
    spec: &AcmeIssuer,
) -> Result<std::result::Result<Registered, Failure>> {
    let eab = match &spec.external_account_binding {
        Some(binding) => {
            let secrets: Api<Secret> = ctx.namespaced(namespace);
            let hmac = secrets
                .get_opt(&binding.key_secret_ref.name)
                .await?
                .and_then(|s| secret_data(&s, &binding.key_secret_ref.key));
            let Some(hmac) = hmac else {
                return Ok(Err(Failure::new(
                    "ExternalAccountKeyMissing",
                    format!(
                        "externalAccountBinding: key {:?} of Secret {}/{} not found",
                        binding.key_secret_ref.key, namespace, binding.key_secret_ref.name
                    ),
                )));
            };
            let text = String::from_utf8_lossy(&hmac).trim().trim_end_matches('=').to_string();
            let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.as_bytes()) else {
                return Ok(Err(Failure::new(
                    "InvalidExternalAccountKey",
                    "externalAccountBinding: the HMAC key must be base64url, as the CA gave it",
                )));
            };
            Some(ExternalAccountKey::new(binding.key_id.clone(), &bytes))
        }
        None => None,
    };
    let contact: Vec<String> = spec.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact_refs: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new_account = NewAccount { contact: &contact_refs, terms_of_service_agreed: true, only_return_existing: false };
    let (builder, retry_after, observer) = match builder(spec) {
        Ok(b) => b,
        Err(f) => return Ok(Err(f)),
    };
    let (account, credentials) = match builder.create(&new_account, spec.server.clone(), eab.as_ref()).await {
        Ok(pair) => pair,
        Err(e) => return Ok(Err(super::problem::failure(&e))),
    };
    let json = serde_json::to_vec(&credentials)?;
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", credentials.private_key().secret_pkcs8_der().to_vec()));
    Ok(Ok((AcmeAccount { account, retry_after, observer }, (json, pem))))
}

async fn save(secrets: &Api<Secret>, name: &str, spec: &AcmeIssuer, credentials: &[u8], key_pem: &str) -> Result<()> {
    let mut secret = Secret {
        data: Some(BTreeMap::from([
            (CREDENTIALS_KEY.to_string(), ByteString(credentials.to_vec())),
            (key_field(spec), ByteString(key_pem.as_bytes().to_vec())),
        ])),
        ..Default::default()
    };
    secret.metadata.name = Some(name.into());
    secret.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]));
    let body =
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": secret.metadata, "data": secret.data});
    secrets.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}
