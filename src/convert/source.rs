//! The cert-manager `cert-manager.io/v1` shapes `convert` reads. Only the fields it maps are
//! named; everything else lands in a `rest` map so that nothing is dropped without a report.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Fields a shape does not name, by their YAML key.
pub type Rest = BTreeMap<String, Value>;

/// An empty YAML value (`dnsNames:` with nothing after it) reads as an empty list or map.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub secret_name: Option<String>,
    pub common_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub dns_names: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ip_addresses: Vec<String>,
    pub duration: Option<String>,
    pub renew_before: Option<String>,
    pub renew_before_percentage: Option<i32>,
    pub issuer_ref: Option<IssuerRef>,
    pub private_key: Option<PrivateKey>,
    #[serde(rename = "isCA")]
    pub is_ca: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub usages: Vec<String>,
    pub secret_template: Option<SecretTemplate>,
    #[serde(default, deserialize_with = "nullable")]
    pub additional_output_formats: Vec<OutputFormat>,
    pub revision_history_limit: Option<i32>,
    pub keystores: Option<Keystores>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
pub struct IssuerRef {
    pub name: String,
    pub kind: Option<String>,
    pub group: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrivateKey {
    pub algorithm: Option<String>,
    pub size: Option<i32>,
    pub encoding: Option<String>,
    pub rotation_policy: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
pub struct SecretTemplate {
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug)]
pub struct OutputFormat {
    #[serde(rename = "type")]
    pub type_: String,
}

#[derive(Deserialize, Debug, Default)]
pub struct Keystores {
    pub jks: Option<Keystore>,
    pub pkcs12: Option<Keystore>,
}

/// One of `spec.keystores`: `jks` or `pkcs12`.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Keystore {
    pub create: Option<bool>,
    pub password_secret_ref: Option<SecretRef>,
    /// A literal password (cert-manager 1.16 and later).
    pub password: Option<String>,
    /// PKCS#12 only: `LegacyRC2` (cert-manager's default), `LegacyDES` or `Modern2023`.
    pub profile: Option<String>,
    /// JKS only: the entry's alias.
    pub alias: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    pub acme: Option<Acme>,
    pub self_signed: Option<SelfSigned>,
    pub ca: Option<Ca>,
    /// `vault`, `venafi` and anything newer.
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
pub struct SelfSigned {
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Ca {
    pub secret_name: String,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Acme {
    pub server: String,
    pub email: Option<String>,
    pub private_key_secret_ref: Option<SecretRef>,
    #[serde(rename = "skipTLSVerify")]
    pub skip_tls_verify: Option<bool>,
    /// Base64 of a PEM bundle (a `[]byte` in cert-manager's Go types).
    pub ca_bundle: Option<String>,
    pub preferred_chain: Option<String>,
    pub external_account_binding: Option<ExternalAccountBinding>,
    pub profile: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub solvers: Vec<Solver>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default, Clone)]
pub struct SecretRef {
    pub name: String,
    pub key: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAccountBinding {
    #[serde(rename = "keyID")]
    pub key_id: String,
    pub key_secret_ref: SecretRef,
    /// Deprecated in cert-manager and ignored by it (the CA decides): dropped without a word.
    #[serde(rename = "keyAlgorithm")]
    pub _key_algorithm: Option<serde::de::IgnoredAny>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Solver {
    pub selector: Option<Selector>,
    pub http01: Option<Http01>,
    pub dns01: Option<Dns01>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default, deserialize_with = "nullable")]
    pub dns_names: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub dns_zones: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Http01 {
    pub ingress: Option<Http01Ingress>,
    #[serde(rename = "gatewayHTTPRoute")]
    pub gateway_http_route: Option<Http01Gateway>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Http01Ingress {
    pub class: Option<String>,
    pub ingress_class_name: Option<String>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Http01Gateway {
    #[serde(default, deserialize_with = "nullable")]
    pub parent_refs: Vec<ParentRef>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    pub name: String,
    pub namespace: Option<String>,
    pub kind: Option<String>,
    pub group: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Dns01 {
    pub cname_strategy: Option<String>,
    pub rfc2136: Option<Rfc2136>,
    pub route53: Option<Route53>,
    /// Every other provider (`cloudflare`, `azureDNS`, `webhook`…).
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rfc2136 {
    pub nameserver: String,
    pub tsig_key_name: Option<String>,
    pub tsig_algorithm: Option<String>,
    pub tsig_secret_secret_ref: Option<SecretRef>,
    pub protocol: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Route53 {
    pub region: Option<String>,
    #[serde(rename = "hostedZoneID")]
    pub hosted_zone_id: Option<String>,
    #[serde(rename = "accessKeyID")]
    pub access_key_id: Option<String>,
    #[serde(rename = "accessKeyIDSecretRef")]
    pub access_key_id_secret_ref: Option<SecretRef>,
    pub secret_access_key_secret_ref: Option<SecretRef>,
    pub role: Option<String>,
    pub auth: Option<Route53Auth>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// `route53.auth`: cert-manager's ServiceAccount token for `AssumeRoleWithWebIdentity`.
#[derive(Deserialize, Debug, Default)]
pub struct Route53Auth {
    pub kubernetes: Option<Route53Kubernetes>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Route53Kubernetes {
    pub service_account_ref: Option<ServiceAccountRef>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Deserialize, Debug, Default)]
pub struct ServiceAccountRef {
    pub name: String,
    /// The token's audiences: meaningless once certpilot's own identity is used instead, so
    /// only named here to keep them out of the report's unconverted fields.
    #[allow(dead_code)]
    pub audiences: Option<Vec<String>>,
    #[serde(flatten)]
    pub rest: Rest,
}
