//! `CertificateAttempt`: one issuance or renewal, created and driven only by the operator.

use super::{
    IssuerRef,
    conditions::Condition,
    request::{OutputFormat, PrivateKeySpec, SecretTemplate},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One attempt to obtain a certificate; its spec is a snapshot and never changes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "certpilot.dev",
    version = "v1alpha1",
    kind = "CertificateAttempt",
    namespaced,
    status = "CertificateAttemptStatus",
    shortname = "cpattempt",
    category = "certpilot",
    derive = "Default",
    derive = "PartialEq",
    doc = "One issuance or renewal of a Certificate: its steps, the records the CA checks, and the outcome. Created by certpilot; read-only.",
    printcolumn(name = "Certificate", type_ = "string", json_path = ".spec.certificateName"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startedAt"),
    printcolumn(name = "Finished", type_ = "date", json_path = ".status.finishedAt"),
    printcolumn(name = "Error", type_ = "string", json_path = ".status.errorCode"),
    // `kubectl get certificateattempts --field-selector spec.certificateName=web`
    selectable = ".spec.certificateName",
    selectable = ".spec.type",
    selectable = ".spec.issuerRef.name",
    selectable = ".status.phase"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: a CertificateAttempt records one attempt as it was made"))]
pub struct CertificateAttemptSpec {
    /// The Certificate this attempt is for.
    pub certificate_name: String,
    /// Issue (first certificate), Renew (renewal time reached), Reissue (the spec or Secret changed), Manual (renewal requested), Repair or Revoke (revocation requested).
    #[serde(rename = "type")]
    pub type_: AttemptType,
    /// Why the attempt was made, in words.
    #[serde(default)]
    pub reason: String,
    /// The Secret the result goes to.
    pub secret_name: String,
    /// DNS names requested.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// IP addresses requested.
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// Subject common name requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Requested lifetime (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Whether a CA certificate was requested.
    #[serde(default, rename = "isCA")]
    pub is_ca: bool,
    /// The issuer asked: the Certificate's `issuerRef`, or one of its `fallbackIssuerRefs`.
    pub issuer_ref: IssuerRef,
    /// Why a fallback issuer was asked instead of `issuerRef` (what failed on the CA's side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The private key settings.
    pub private_key: PrivateKeySpec,
    /// The key algorithm in words (e.g. `ECDSA-256`), for display.
    pub key_algorithm: String,
    /// ACME profile requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// ARI certificate identifier of the certificate this one replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The Certificate's `metadata.generation` when the attempt was made.
    pub certificate_generation: i64,
    /// The value of the `certpilot.dev/renew` annotation this attempt answers (Manual attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_request: Option<String>,
    /// The value of the `certpilot.dev/revoke` annotation when the attempt was made: the Revoke
    /// attempt answers it, and the attempts after it carry it, so that it is answered once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub revoke_request: Option<String>,
    /// The serial number (hex) of the certificate a Revoke attempt revokes: the Certificate's
    /// current one when the attempt was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub revoke_serial: Option<String>,
    /// Generate a new key whatever `privateKey.rotationPolicy` says: the certificate this one
    /// replaces was revoked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_key: bool,
    /// Labels and annotations for the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Extra keys written into the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "formats_or_types")]
    pub additional_output_formats: Vec<OutputFormat>,
}

/// Output formats, as attempts list them now or, made before keystores, as bare type names:
/// such attempts must still be read (an unreadable one would stall the watch of every attempt).
fn formats_or_types<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OutputFormat>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Listed {
        Format(OutputFormat),
        Type(super::request::OutputFormatType),
    }
    let listed = Vec::<Listed>::deserialize(d)?;
    Ok(listed
        .into_iter()
        .map(|l| match l {
            Listed::Format(format) => format,
            Listed::Type(type_) => OutputFormat::of(type_),
        })
        .collect())
}

/// Why an attempt was made.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AttemptType {
    /// The first certificate (the Secret does not exist, and no attempt succeeded yet).
    #[default]
    Issue,
    /// The renewal time was reached.
    Renew,
    /// The spec changed, or the Secret no longer matched it.
    Reissue,
    /// A user asked for a renewal with the `certpilot.dev/renew` annotation.
    Manual,
    /// The Secret certpilot stored a certificate in was deleted or damaged since: the first
    /// repair starts at once, a second within `--min-renewal-interval` waits for it.
    Repair,
    /// A user asked for the current certificate to be revoked with the `certpilot.dev/revoke`
    /// annotation; a Reissue with a new key follows unless the request said `no-reissue`.
    Revoke,
}

/// Attempt lifecycle phases, in the order an attempt goes through them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AttemptPhase {
    /// Created, not started.
    #[default]
    Pending,
    /// Getting the private key (saved before any CA sees a request for it).
    Keying,
    /// Placing the ACME order (its URL is saved before anything else happens).
    Ordering,
    /// Publishing the validation records (HTTP-01 token and route, DNS-01 TXT record,
    /// TLS-ALPN-01 certificate) and waiting until they can be seen.
    Presenting,
    /// The CA is checking the validation records.
    Validating,
    /// Signing (local issuers) or sending the CSR and downloading the chain (ACME), then verifying it.
    Finalizing,
    /// Writing the verified certificate and key to the Secret.
    Storing,
    /// Revoke attempts: asking the CA that issued the certificate to revoke it.
    Revoking,
    /// The Secret holds the new certificate.
    Succeeded,
    /// The attempt ended without a certificate; see errorCode and errorMessage.
    Failed,
    /// The attempt was superseded (e.g. the spec changed) before it finished.
    Cancelled,
    /// The attempt was not made by certpilot for its Certificate as it stands; nothing was done.
    Rejected,
}

impl CertificateAttempt {
    /// Nothing left to do: ended, and cleaned up behind (certpilot's finalizer is gone).
    pub fn is_settled(&self) -> bool {
        let ended = self.status.as_ref().is_some_and(|s| s.phase.is_terminal());
        let held = self.metadata.finalizers.iter().flatten().any(|f| f == super::CLEANUP_FINALIZER);
        ended && !held
    }
}

impl AttemptPhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::Rejected)
    }
}

/// Step phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum StepPhase {
    #[default]
    Running,
    Succeeded,
    Failed,
}

/// One step of an attempt, with its timing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// e.g. `GenerateKey`, `Sign`, `Verify`, `WriteSecret`.
    pub name: String,
    /// Running, Succeeded or Failed.
    pub phase: StepPhase,
    /// When the step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the step ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// What happened.
    #[serde(default)]
    pub message: String,
}

/// The ACME order of an attempt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatus {
    /// The order URL at the CA (an attempt places exactly one order).
    pub url: String,
    /// pending, ready, processing, valid or invalid.
    pub status: String,
    /// When the CA discards the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
    /// The certificate profile the CA applies to the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// A record the CA checks to validate one name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRecord {
    /// The name being validated.
    pub dns_name: String,
    /// `http-01`, `dns-01` or `tls-alpn-01`.
    #[serde(rename = "type")]
    pub type_: String,
    /// For dns-01: the TXT record name (`_acme-challenge.<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_name: Option<String>,
    /// For dns-01 with `cnameStrategy: Follow`: where the CNAME chain from `recordName` ends,
    /// and so where certpilot wrote the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_to: Option<String>,
    /// For dns-01: what the last look-up of the record found, while it was not yet served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_check: Option<String>,
    /// For dns-01: the TXT value; for http-01: the expected body; for tls-alpn-01: the key
    /// authorization (its SHA-256 goes into the validation certificate). Written before the
    /// CA is told to validate: every replica answers from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_value: Option<String>,
    /// For http-01: the URL the CA fetches.
    #[serde(default, rename = "httpURL", skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
    /// pending, processing, valid or invalid.
    pub status: String,
    /// When certpilot published the record (absent until it has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presented_at: Option<Time>,
    /// The CA's error for this record, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The certificate an attempt produced.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    /// Serial number (hex).
    pub serial_number: String,
    /// Start of validity.
    pub not_before: Time,
    /// End of validity.
    pub not_after: Time,
    /// SHA-256 fingerprint (hex, colon-separated).
    pub fingerprint_sha256: String,
}

/// The certificate a Revoke attempt revoked, and how the CA answered.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevokedCertificate {
    /// Serial number (hex).
    pub serial_number: String,
    /// The reason given (RFC 5280 CRLReason, e.g. `keyCompromise`).
    pub reason: String,
    /// When certpilot revoked it (or found it revoked).
    pub revoked_at: Time,
    /// The CA already had it revoked: the request changed nothing.
    #[serde(default)]
    pub already_revoked: bool,
}

/// The course and outcome of an attempt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateAttemptStatus {
    /// Pending, Keying, Ordering, Presenting, Validating, Finalizing, Storing, Revoking, Succeeded, Failed, Cancelled or Rejected.
    #[serde(default)]
    pub phase: AttemptPhase,
    /// When work on the attempt began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Every step taken, in order, with timings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub steps: Vec<Step>,
    /// The ACME order (ACME issuers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderStatus>,
    /// The attempt's new private key while an ACME attempt is under way, sealed (AES-256-GCM,
    /// bound to this attempt) with certpilot's sealing key: written before the CA sees a CSR
    /// for it, so that a restarted operator finishes with the same key; removed when the
    /// attempt ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub sealed_key: Option<String>,
    /// Each challenge: the exact record the CA checks, its status and error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub challenges: Vec<ValidationRecord>,
    /// Class of failure: e.g. `RateLimited`, `Unauthorized`, `DNS`, `Connection`, `IssuerNotReady`, `SecretNotOwned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The CA's (or certpilot's) error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Do not retry before this time (the CA's Retry-After).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// The certificate produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<IssuedCertificate>,
    /// What a Revoke attempt revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<RevokedCertificate>,
    /// Conditions, for tools that expect them (`Succeeded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = super::conditions::list_map_by_type)]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::certificate::OutputFormatType;

    #[test]
    fn attempts_made_before_keystores_still_read() {
        let spec = |formats: serde_json::Value| {
            let json = serde_json::json!({
                "certificateName": "web", "type": "Issue", "secretName": "web-tls",
                "issuerRef": {"name": "ca"}, "privateKey": {}, "keyAlgorithm": "ECDSA-256",
                "certificateGeneration": 1, "additionalOutputFormats": formats,
            });
            serde_json::from_value::<CertificateAttemptSpec>(json).unwrap().additional_output_formats
        };
        assert_eq!(spec(serde_json::json!(["DER"])), [OutputFormat::of(OutputFormatType::DER)]);
        let keystore = serde_json::json!([{"type": "PKCS12", "passwordSecretRef": {"name": "p", "key": "k"}}]);
        let read = spec(keystore);
        assert_eq!(read[0].type_, OutputFormatType::PKCS12);
        assert_eq!(read[0].password_secret_ref.as_ref().map(|r| r.name.as_str()), Some("p"));
    }
}
