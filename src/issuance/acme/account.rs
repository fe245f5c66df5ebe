//! ACME accounts: loaded from the account Secret, or registered (with external account binding
//! when the CA needs it) and saved there, so restarts reuse the same account. Accounts are kept
//! per issuer and rebuilt only when the issuer's spec changes, or when the CA says it no longer
//! knows the account (then they are registered again with the same key).

use super::client::{AcmeHttpClient, Observer, RetryAfter};
use crate::{
    api::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, issuer::AcmeIssuer},
    issuance::{Failure, FailureCode as C, Outcome, Stop, failure::is_refusal},
    secret::written_by_certpilot,
};
use base64::Engine;
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::{collections::BTreeMap, collections::HashMap, sync::Arc};

/// Secret names are DNS subdomains of at most this many characters.
const MAX_SECRET_NAME: usize = 253;

/// Key of the saved account credentials (account URL, key and directory) in the Secret.
pub const CREDENTIALS_KEY: &str = "credentials.json";

/// A usable account.
pub struct AcmeAccount {
    pub account: Account,
    pub retry_after: RetryAfter,
    pub observer: Observer,
    /// Held while a request whose raw body is wanted is under way (see `order::post_as_get`).
    pub raw_requests: tokio::sync::Mutex<()>,
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

/// Which issuer an account is for, and where its Secrets are.
pub struct AccountSource<'a> {
    /// `Kind/namespace/name`: identifies the issuer across attempts.
    pub key: &'a str,
    pub issuer_name: &'a str,
    pub spec: &'a AcmeIssuer,
    /// Secrets of the issuer's namespace (the operator's, for a ClusterIssuer).
    pub secrets: &'a Api<Secret>,
}

struct Entry {
    fingerprint: String,
    account: Arc<AcmeAccount>,
    /// Something the issuer's status should say about the account (e.g. it was re-registered).
    note: Option<String>,
}

/// Accounts per issuer, shared by the issuer and attempt controllers.
#[derive(Default)]
pub struct AccountCache {
    // Held across loading, so that two attempts never register two accounts for one issuer.
    entries: tokio::sync::Mutex<HashMap<String, Entry>>,
}

fn fingerprint(spec: &AcmeIssuer) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

impl AccountCache {
    /// The issuer's account: the one in memory while the spec is unchanged, else loaded from
    /// (or registered and saved to) the account Secret.
    pub async fn get(&self, source: &AccountSource<'_>) -> Outcome<Arc<AcmeAccount>> {
        let mut entries = self.entries.lock().await;
        let wanted = fingerprint(source.spec);
        if let Some(entry) = entries.get(source.key).filter(|e| e.fingerprint == wanted) {
            return Ok(entry.account.clone());
        }
        let account = Arc::new(load_or_register(source).await?);
        entries.insert(source.key.to_string(), Entry { fingerprint: wanted, account: account.clone(), note: None });
        Ok(account)
    }

    /// After the CA answered `accountDoesNotExist` for `stale`: registers the account again with
    /// the same key (a new one if that is refused), saves it, and keeps it for the issuer.
    pub async fn reregister(&self, source: &AccountSource<'_>, stale: &AcmeAccount) -> Outcome<Arc<AcmeAccount>> {
        let mut entries = self.entries.lock().await;
        if let Some(entry) = entries.get(source.key).filter(|e| e.account.uri() != stale.uri()) {
            // Another attempt already registered it again.
            return Ok(entry.account.clone());
        }
        let existing = source.secrets.get_opt(&secret_name(source.issuer_name, source.spec)).await?;
        let key_pem = existing.as_ref().and_then(|s| secret_data(s, &key_field(source.spec)));
        let registered = match key_pem {
            Some(pem) => match from_key(source.spec, &pem).await {
                Ok(registered) => registered,
                Err(_) => register(source).await?,
            },
            None => register(source).await?,
        };
        let account = keep_registered(source, existing.as_ref(), registered).await?;
        let note = format!(
            "the CA no longer knew account {}; registered again as {} at {}",
            stale.uri(),
            account.uri(),
            jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_default()
        );
        let account = Arc::new(account);
        let fingerprint = fingerprint(source.spec);
        entries.insert(source.key.to_string(), Entry { fingerprint, account: account.clone(), note: Some(note) });
        Ok(account)
    }

    /// What the issuer's status should say about its account, if anything.
    pub async fn note(&self, key: &str) -> Option<String> {
        self.entries.lock().await.get(key).and_then(|e| e.note.clone())
    }
}

type Builder = (instant_acme::AccountBuilder, RetryAfter, Observer);

fn builder(spec: &AcmeIssuer) -> std::result::Result<Builder, Failure> {
    let (http, retry_after, observer) =
        AcmeHttpClient::new(spec.ca_bundle.as_deref()).map_err(|e| Failure::new(C::InvalidCaBundle, e))?;
    Ok((Account::builder_with_http(Box::new(http)), retry_after, observer))
}

fn secret_data(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

/// Loads the account saved in the issuer's Secret, registering one first when there is none.
/// A rejected nonce (the CA asking for a retry) is retried a few times.
async fn load_or_register(source: &AccountSource<'_>) -> Outcome<AcmeAccount> {
    let mut tries = 0;
    loop {
        tries += 1;
        match load_or_register_once(source).await {
            Err(Stop::Failed(failure)) if failure.code == C::BadNonce && tries < 5 => continue,
            outcome => return outcome,
        }
    }
}

async fn load_or_register_once(source: &AccountSource<'_>) -> Outcome<AcmeAccount> {
    let spec = source.spec;
    let name = secret_name(source.issuer_name, spec);
    if name.len() > MAX_SECRET_NAME {
        // Registering an account that could never be saved would register a new one each time.
        return Err(Failure::new(
            C::InvalidSpec,
            format!(
                "the account Secret name {name:?} derived from the issuer's name is not a valid Secret name (longer than {MAX_SECRET_NAME} characters); use a shorter issuer name or set accountKeySecretRef"
            ),
        )
        .into());
    }
    let existing = source.secrets.get_opt(&name).await?;
    let saved = existing.as_ref().and_then(|s| secret_data(s, CREDENTIALS_KEY));
    if let Some(json) = saved
        && let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&json)
        && credentials_directory(&json).as_deref() == Some(spec.server.as_str())
    {
        let (builder, retry_after, observer) = builder(spec)?;
        let account = builder.from_credentials(credentials).await.map_err(|e| super::problem::failure(&e))?;
        return Ok(AcmeAccount { account, retry_after, observer, raw_requests: Default::default() });
    }
    if let Some(foreign) = existing.as_ref().filter(|s| !may_save(s)) {
        let user_key = secret_data(foreign, &key_field(spec));
        let Some(pem) = user_key else {
            return Err(foreign_secret(source, &name).into());
        };
        // The user's own key (e.g. migrated from another client): used, never written over.
        return Ok(from_key(spec, &pem).await?.0);
    }
    let user_key = existing.as_ref().and_then(|s| secret_data(s, &key_field(spec)));
    let registered = match user_key {
        Some(pem) => from_key(spec, &pem).await?,
        None => register(source).await?,
    };
    keep_registered(source, existing.as_ref(), registered).await
}

/// Whether certpilot may write the account Secret: it wrote it before.
fn may_save(secret: &Secret) -> bool {
    written_by_certpilot(&secret.metadata)
}

fn foreign_secret(source: &AccountSource<'_>, name: &str) -> Failure {
    let namespace = source.secrets.namespace().unwrap_or_default();
    Failure::new(
        C::SecretNotOwned,
        format!(
            "Secret {namespace}/{name} exists and was not created by certpilot, so the account is not written into it; delete or rename it, put the account's PKCS#8 key under {:?} in it, or set accountKeySecretRef to another Secret",
            key_field(source.spec)
        ),
    )
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

/// The account of a key (created at the CA when it does not know the key yet).
async fn from_key(spec: &AcmeIssuer, pem: &[u8]) -> std::result::Result<Registered, Failure> {
    let der =
        pem::parse(pem).map_err(|e| Failure::new(C::InvalidAccountKey, format!("the account key is not PEM: {e}")))?;
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.contents().to_vec());
    let key = instant_acme::Key::from_pkcs8_der(pkcs8.clone_key()).map_err(|e| {
        Failure::new(C::InvalidAccountKey, format!("the account key must be a PKCS#8 ECDSA P-256 key: {e}"))
    })?;
    let (builder, retry_after, observer) = builder(spec)?;
    let (account, credentials) = builder
        .create_from_key((key, rustls_pki_types::PrivateKeyDer::Pkcs8(pkcs8)), spec.server.clone())
        .await
        .map_err(|e| super::problem::failure(&e))?;
    let json = serde_json::to_vec(&credentials).map_err(|e| Failure::new(C::Internal, e.to_string()))?;
    let pem = String::from_utf8_lossy(pem).into_owned();
    Ok((AcmeAccount { account, retry_after, observer, raw_requests: Default::default() }, (json, pem)))
}

/// The external account binding's key, when the issuer has one.
async fn external_account_key(source: &AccountSource<'_>) -> Outcome<Option<ExternalAccountKey>> {
    let Some(binding) = &source.spec.external_account_binding else { return Ok(None) };
    let namespace = source.secrets.namespace().unwrap_or_default();
    let hmac = source
        .secrets
        .get_opt(&binding.key_secret_ref.name)
        .await?
        .and_then(|s| secret_data(&s, &binding.key_secret_ref.key));
    let Some(hmac) = hmac else {
        return Err(Failure::new(
            C::ExternalAccountKeyMissing,
            format!(
                "externalAccountBinding: key {:?} of Secret {}/{} not found",
                binding.key_secret_ref.key, namespace, binding.key_secret_ref.name
            ),
        )
        .into());
    };
    let text = String::from_utf8_lossy(&hmac).trim().trim_end_matches('=').to_string();
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.as_bytes()) else {
        return Err(Failure::new(
            C::InvalidExternalAccountKey,
            "externalAccountBinding: the HMAC key must be base64url, as the CA gave it",
        )
        .into());
    };
    Ok(Some(ExternalAccountKey::new(binding.key_id.clone(), &bytes)))
}

/// Registers a new account (with the contact email and, when configured, external account binding).
async fn register(source: &AccountSource<'_>) -> Outcome<Registered> {
    let spec = source.spec;
    let eab = external_account_key(source).await?;
    let contact: Vec<String> = spec.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact_refs: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new_account = NewAccount { contact: &contact_refs, terms_of_service_agreed: true, only_return_existing: false };
    let (builder, retry_after, observer) = builder(spec)?;
    let (account, credentials) = builder
        .create(&new_account, spec.server.clone(), eab.as_ref())
        .await
        .map_err(|e| super::problem::failure(&e))?;
    let json = serde_json::to_vec(&credentials).map_err(crate::error::Error::from)?;
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", credentials.private_key().secret_pkcs8_der().to_vec()));
    Ok((AcmeAccount { account, retry_after, observer, raw_requests: Default::default() }, (json, pem)))
}

/// The account just registered (or loaded from a key), once its credentials are saved.
async fn keep_registered(
    source: &AccountSource<'_>,
    existing: Option<&Secret>,
    (account, credentials): Registered,
) -> Outcome<AcmeAccount> {
    save(source, existing, &credentials).await?;
    Ok(account)
}

/// Saves the credentials: creates the Secret when there is none, updates it when certpilot
/// wrote it; a Secret of someone else's is never written. A refusal of the API server (e.g. a
/// derived name that is not a valid Secret name) is a failure that says so.
async fn save(
    source: &AccountSource<'_>,
    existing: Option<&Secret>,
    (credentials, key_pem): &(Vec<u8>, String),
) -> Outcome<()> {
    let name = secret_name(source.issuer_name, source.spec);
    let mut secret = Secret {
        data: Some(BTreeMap::from([
            (CREDENTIALS_KEY.to_string(), ByteString(credentials.clone())),
            (key_field(source.spec), ByteString(key_pem.as_bytes().to_vec())),
        ])),
        ..Default::default()
    };
    secret.metadata.name = Some(name.clone());
    secret.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]));
    let written = match existing {
        None => {
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            source.secrets.create(&params, &secret).await.map(|_| ())
        }
        Some(existing) if may_save(existing) => {
            let body = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": secret.metadata, "data": secret.data});
            source
                .secrets
                .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
                .await
                .map(|_| ())
        }
        Some(_) => return Err(foreign_secret(source, &name).into()),
    };
    let Err(error) = written else { return Ok(()) };
    if let Some(status) = is_refusal(&error) {
        let namespace = source.secrets.namespace().unwrap_or_default();
        return Err(Failure::refused(&format!("the account Secret {namespace}/{name}"), status).into());
    }
    if crate::error::is_already_exists(&error) {
        return Err(Failure::new(
            C::SecretNotOwned,
            format!("Secret {name} was created by someone else while certpilot registered the account; try again"),
        )
        .into());
    }
    Err(error.into())
}
