//! What an issuer signs with, loaded and checked before anything is signed.

use crate::{
    api::{IssuerKind, IssuerSpec, issuer::AcmeIssuer},
    error::Result,
    pki::sign::CertificateAuthority,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// How an issuer signs.
pub enum Signer {
    SelfSigned,
    Ca(Box<CertificateAuthority>),
    Acme(Box<AcmeIssuer>),
}

/// Why an issuer cannot sign: a reason word and a message that says what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct NotReady {
    pub reason: &'static str,
    pub message: String,
}

/// The namespace whose Secrets an issuer uses: its own, or the operator's for ClusterIssuers.
pub fn secret_namespace(kind: IssuerKind, issuer_namespace: Option<&str>, cluster_resource_namespace: &str) -> String {
    match kind {
        IssuerKind::Issuer => issuer_namespace.unwrap_or_default().to_string(),
        IssuerKind::ClusterIssuer => cluster_resource_namespace.to_string(),
    }
}

/// Loads what the issuer signs with from `secrets` (the issuer's Secret namespace), checking
/// everything that can be checked before signing.
pub async fn load_signer(secrets: &Api<Secret>, spec: &IssuerSpec) -> Result<Result<Signer, NotReady>> {
    if spec.self_signed.is_some() {
        return Ok(Ok(Signer::SelfSigned));
    }
    if let Some(acme) = &spec.acme {
        return Ok(Ok(Signer::Acme(Box::new(acme.clone()))));
    }
    let Some(ca) = &spec.ca else {
        return Ok(Err(NotReady {
            reason: "InvalidSpec",
            message: "exactly one of acme, selfSigned or ca must be set".into(),
        }));
    };
    let namespace = secrets.namespace().unwrap_or_default().to_string();
    let Some(secret) = secrets.get_opt(&ca.secret_name).await? else {
        return Ok(Err(NotReady {
            reason: "CASecretNotFound",
            message: format!(
                "Secret {} not found in namespace {namespace}; create it with the CA certificate and key (kubectl create secret tls {} --cert=ca.crt --key=ca.key -n {namespace})",
                ca.secret_name, ca.secret_name
            ),
        }));
    };
    let field =
        |key: &str| secret.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let (Some(cert), Some(key)) = (field(crate::secret::TLS_CERT), field(crate::secret::TLS_KEY)) else {
        return Ok(Err(NotReady {
            reason: "CASecretInvalid",
            message: format!("Secret {namespace}/{} must contain tls.crt and tls.key", ca.secret_name),
        }));
    };
    Ok(CertificateAuthority::load(&cert, &key, jiff::Timestamp::now()).map(|ca| Signer::Ca(Box::new(ca))).map_err(
        |e| NotReady { reason: "CASecretInvalid", message: format!("Secret {namespace}/{}: {e}", ca.secret_name) },
    ))
}
