//! What a certificate asks for beyond its names: the private key, the Secret's metadata and
//! extra output formats. Shared by `Certificate` and the snapshot in `CertificateAttempt`.

use super::SecretKeySelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Key algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum KeyAlgorithm {
    #[default]
    #[serde(rename = "ECDSA")]
    Ecdsa,
    #[serde(rename = "RSA")]
    Rsa,
    Ed25519,
}

/// Whether a renewal gets a fresh key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RotationPolicy {
    /// A new private key for every issuance (default).
    #[default]
    Always,
    /// Keep the key already in the Secret when it matches the requested algorithm and size.
    Never,
}

/// PEM encoding of `tls.key`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum KeyEncoding {
    /// `PRIVATE KEY` (default; every algorithm).
    #[default]
    #[serde(rename = "PKCS8")]
    Pkcs8,
    /// `RSA PRIVATE KEY` (RSA keys only).
    #[serde(rename = "PKCS1")]
    Pkcs1,
}

/// The private key to generate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.size) || (self.algorithm == 'ECDSA' && self.size in [256, 384]) || (self.algorithm == 'RSA' && self.size in [2048, 3072, 4096])").message("privateKey.size must be 256 or 384 for ECDSA, 2048, 3072 or 4096 for RSA, and unset for Ed25519"))]
#[x_kube(validation = Rule::new("self.encoding != 'PKCS1' || self.algorithm == 'RSA'").message("privateKey.encoding PKCS1 is only for RSA keys; use PKCS8"))]
pub struct PrivateKeySpec {
    /// `ECDSA` (default; P-256, or P-384 with size 384), `RSA` (size 2048 default, 3072, 4096) or `Ed25519`.
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
    /// Key size in bits (ECDSA: 256 or 384; RSA: 2048, 3072 or 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i32>,
    /// `Always` (default) rotates the key on every issuance; `Never` keeps the Secret's key.
    #[serde(default)]
    pub rotation_policy: RotationPolicy,
    /// `PKCS8` (default) or `PKCS1` (RSA only).
    #[serde(default)]
    pub encoding: KeyEncoding,
}

/// Metadata copied onto the Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels for the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations for the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Extra output formats.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
pub enum OutputFormatType {
    /// `tls-combined.pem`: the key followed by the chain.
    CombinedPEM,
    /// `key.der`: the private key, PKCS#8 DER.
    DER,
    /// `keystore.p12`: the key, the certificate and its chain in a password-protected PKCS#12 file.
    PKCS12,
    /// `keystore.jks`: the key, the certificate and its chain in a password-protected Java KeyStore.
    JKS,
}

impl OutputFormatType {
    /// The Secret key this format is written to.
    pub fn data_key(self) -> &'static str {
        match self {
            Self::CombinedPEM => "tls-combined.pem",
            Self::DER => "key.der",
            Self::PKCS12 => "keystore.p12",
            Self::JKS => "keystore.jks",
        }
    }

    /// A keystore, which needs a password.
    pub fn is_keystore(self) -> bool {
        matches!(self, Self::PKCS12 | Self::JKS)
    }
}

/// PKCS12 only: how the keystore is encrypted: `Modern2023` (default; AES-256-CBC, SHA-256),
/// `LegacyRC2` or `LegacyDES` (for old Java and Windows readers). The names are cert-manager's.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Pkcs12Profile {
    /// PBES2 with AES-256-CBC and PBKDF2-HMAC-SHA256, MAC HMAC-SHA256 (default; Java 8u301+,
    /// OpenSSL 1.1.1+).
    #[default]
    Modern2023,
    /// 40-bit RC2-CBC, MAC HMAC-SHA1: for old Java and Windows readers only (OpenSSL 3 needs `-legacy`).
    LegacyRC2,
    /// 3-key triple DES-CBC, MAC HMAC-SHA1: for readers that cannot do AES.
    LegacyDES,
}

/// One extra output format.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.type in ['PKCS12', 'JKS']) || has(self.passwordSecretRef)").message("additionalOutputFormats: passwordSecretRef (the Secret and key holding the keystore password) is required for type PKCS12 and JKS"))]
#[x_kube(validation = Rule::new("self.type in ['PKCS12', 'JKS'] || !has(self.passwordSecretRef)").message("additionalOutputFormats: passwordSecretRef is only for type PKCS12 or JKS"))]
#[x_kube(validation = Rule::new("!has(self.passwordSecretRef) || (self.passwordSecretRef.name != '' && self.passwordSecretRef.key != '')").message("additionalOutputFormats: passwordSecretRef needs both the Secret's name and the key holding the password"))]
#[x_kube(validation = Rule::new("self.type == 'PKCS12' || !has(self.profile)").message("additionalOutputFormats: profile is only for type PKCS12"))]
pub struct OutputFormat {
    /// `CombinedPEM`, `DER`, `PKCS12` or `JKS`.
    #[serde(rename = "type")]
    pub type_: OutputFormatType,
    /// PKCS12 and JKS: the Secret in the Certificate's namespace, and its key, holding the
    /// keystore password (JKS: at least 6 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// PKCS12 only: `Modern2023` (default), `LegacyRC2` or `LegacyDES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Pkcs12Profile>,
}

impl OutputFormat {
    /// A format that needs nothing but its type (`CombinedPEM`, `DER`).
    pub fn of(type_: OutputFormatType) -> Self {
        Self { type_, password_secret_ref: None, profile: None }
    }
}
