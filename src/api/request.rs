//! What a certificate asks for beyond its names: the private key, the Secret's metadata and
//! extra output formats. Shared by `Certificate` and the snapshot in `CertificateAttempt`.

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
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum OutputFormatType {
    /// `tls-combined.pem`: the key followed by the chain.
    CombinedPEM,
    /// `key.der`: the private key, PKCS#8 DER.
    DER,
}

/// One extra output format.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OutputFormat {
    /// `CombinedPEM` or `DER`.
    #[serde(rename = "type")]
    pub type_: OutputFormatType,
}
