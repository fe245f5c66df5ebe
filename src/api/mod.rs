//! The custom resources of `certpilot.dev/v1alpha1`. Doc comments become `kubectl explain` text.

// Every `printcolumn(...)` repeats `type_ = ...`, which this lint mistakes for a duplicate.
#![allow(clippy::duplicated_attributes)]

pub mod attempt;
pub mod certificate;
pub mod conditions;
pub mod gateway;
pub mod issuer;
pub mod request;

pub use attempt::{AttemptPhase, AttemptType, CertificateAttempt, CertificateAttemptSpec, CertificateAttemptStatus};
pub use certificate::{Certificate, CertificatePhase, CertificateSpec, CertificateStatus};
pub use conditions::Condition;
pub use issuer::{ClusterIssuer, Issuer, IssuerSpec, IssuerStatus};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "certpilot.dev";

/// Label on every Secret and attempt certpilot writes, so watches can select only those.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "certpilot";
/// Field manager of every write the operator makes (server-side apply and creates).
pub const FIELD_MANAGER: &str = "certpilot";
/// Finalizer on attempts under way: their solver routes, records, key and order slot are
/// removed before the attempt goes away.
pub const CLEANUP_FINALIZER: &str = "certpilot.dev/cleanup";
/// Annotation by which the Certificate controller asks the attempt controller to cancel an
/// attempt (its value says why); only the attempt controller writes an attempt's status.
pub const CANCEL_ANNOTATION: &str = "certpilot.dev/cancel";
/// Label naming the Certificate a Secret or attempt belongs to.
pub const CERTIFICATE_NAME_LABEL: &str = "certpilot.dev/certificate-name";
/// Annotation a user changes (to any new value) on a Certificate to request a renewal now.
pub const RENEW_ANNOTATION: &str = "certpilot.dev/renew";
/// Annotation a user sets on a Certificate to revoke its current certificate:
/// `<reason>[,no-reissue]@<RFC 3339 time>` (`policy::revoke`); each new value is one request.
pub const REVOKE_ANNOTATION: &str = "certpilot.dev/revoke";
/// Annotation a user puts on an existing Secret to let certpilot take it over.
pub const ADOPT_ANNOTATION: &str = "certpilot.dev/adopt";
/// Label on every Certificate the Ingress/Gateway shim created; its value names the kind of
/// its owner (`Ingress` or `Gateway`). Only Certificates with this label and a controller
/// owner reference to the Ingress or Gateway are ever changed or deleted by the shim.
pub const SHIM_LABEL: &str = "certpilot.dev/created-by-shim";

/// Which kind of issuer a reference names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

/// A reference to the `Issuer` (same namespace) or `ClusterIssuer` that signs a certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// `Issuer` (default; in the certificate's namespace) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl IssuerRef {
    /// Identifies the issuer across Certificates and attempts: `Kind/namespace/name` (no
    /// namespace for a ClusterIssuer). `namespace` is the referring object's.
    pub fn key(&self, namespace: &str) -> String {
        let namespace = if self.kind == IssuerKind::Issuer { namespace } else { "" };
        format!("{:?}/{namespace}/{}", self.kind, self.name)
    }
}

impl std::fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}/{}", self.kind, self.name)
    }
}

/// A key of a Secret in the issuer's namespace (for a `ClusterIssuer`: the operator's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// A Secret in the issuer's namespace (for a `ClusterIssuer`: the operator's namespace), whose
/// keys the field naming it says.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecretReference {
    /// Name of the Secret.
    pub name: String,
}

/// Every CRD of the project, in install order.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![ClusterIssuer::crd(), Issuer::crd(), Certificate::crd(), CertificateAttempt::crd()]
}
