//! The one error type of the controllers, with a label for metrics.

use crate::pki::PkiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("could not encode or decode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A short, bounded label for the `certpilot_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(status)) if status.code == 404 => "not_found",
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "missing_field",
            Error::Pki(_) => "pki",
            Error::Json(_) => "json",
        }
    }
}

impl Error {
    /// The ValidatingAdmissionPolicy that refused the request, and what it refused, when one
    /// did (the API server's 403 says `<resource> "<name>" is forbidden: ValidatingAdmissionPolicy
    /// '<policy>' with binding '<binding>' denied request: <the policy's message>`).
    pub fn admission_policy(&self) -> Option<AdmissionRefusal<'_>> {
        let Error::Kube(kube::Error::Api(status)) = self else { return None };
        if status.code != 403 {
            return None;
        }
        let (refused, rest) = status.message.split_once("ValidatingAdmissionPolicy '")?;
        let (policy, _) = rest.split_once('\'')?;
        Some(AdmissionRefusal { policy, refused: refused.trim_end().trim_end_matches(':') })
    }
}

/// A write an admission policy refused.
#[derive(Debug, PartialEq)]
pub struct AdmissionRefusal<'a> {
    pub policy: &'a str,
    /// What was refused: `issuers.certpilot.dev "local" is forbidden`.
    pub refused: &'a str,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a result is the API server's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// Whether a result is the API server's 409 AlreadyExists.
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409 && status.reason == "AlreadyExists")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: u16, message: &str) -> Error {
        let status = kube::core::Status::failure(message, "Forbidden").with_code(code);
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn an_admission_policy_refusal_names_its_policy() {
        let denied = refusal(
            403,
            "certificates.certpilot.dev \"web\" is forbidden: ValidatingAdmissionPolicy 'certpilot-owned-objects' with binding 'certpilot-owned-objects' denied request: CertificateAttempts are made by certpilot alone",
        );
        let expected = AdmissionRefusal {
            policy: "certpilot-owned-objects",
            refused: "certificates.certpilot.dev \"web\" is forbidden",
        };
        assert_eq!(denied.admission_policy(), Some(expected));
        let rbac = refusal(403, "secrets is forbidden: User \"alice\" cannot list resource \"secrets\"");
        assert_eq!(rbac.admission_policy(), None);
        assert_eq!(refusal(422, "ValidatingAdmissionPolicy 'p' with binding").admission_policy(), None);
    }
}
