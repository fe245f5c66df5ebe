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
    /// The ValidatingAdmissionPolicy that refused the request, when one did (the API server's
    /// 403 says `ValidatingAdmissionPolicy '<name>' with binding '<binding>' denied request`).
    pub fn admission_policy(&self) -> Option<&str> {
        let Error::Kube(kube::Error::Api(status)) = self else { return None };
        if status.code != 403 {
            return None;
        }
        let (_, rest) = status.message.split_once("ValidatingAdmissionPolicy '")?;
        rest.split_once('\'').map(|(policy, _)| policy)
    }
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
        assert_eq!(denied.admission_policy(), Some("certpilot-owned-objects"));
        let rbac = refusal(403, "secrets is forbidden: User \"alice\" cannot list resource \"secrets\"");
        assert_eq!(rbac.admission_policy(), None);
        assert_eq!(refusal(422, "ValidatingAdmissionPolicy 'p' with binding").admission_policy(), None);
    }
}
