//! ACME problem documents (RFC 8555 §6.7) and transport failures, classified into the short
//! `errorCode` words attempts and issuers report.

use crate::issuance::{Failure, FailureCode as C};
use instant_acme::{Error, Problem};

const PREFIX: &str = "urn:ietf:params:acme:error:";

/// The `errorCode` for an ACME problem type.
pub fn code_for_type(problem_type: &str) -> C {
    match problem_type.strip_prefix(PREFIX).unwrap_or(problem_type) {
        "rateLimited" => C::RateLimited,
        "unauthorized" => C::Unauthorized,
        "dns" => C::Dns,
        "connection" => C::Connection,
        "tls" => C::Tls,
        "incorrectResponse" => C::IncorrectResponse,
        "caa" => C::Caa,
        "rejectedIdentifier" => C::RejectedIdentifier,
        "unsupportedIdentifier" => C::UnsupportedIdentifier,
        "badCSR" => C::BadCsr,
        "badNonce" => C::BadNonce,
        "badSignatureAlgorithm" => C::BadSignatureAlgorithm,
        "badPublicKey" => C::BadPublicKey,
        "badRevocationReason" => C::BadRevocationReason,
        "externalAccountRequired" => C::ExternalAccountRequired,
        "accountDoesNotExist" => C::AccountDoesNotExist,
        "userActionRequired" => C::UserActionRequired,
        "orderNotReady" => C::OrderNotReady,
        "malformed" => C::Malformed,
        "serverInternal" => C::ServerInternal,
        "invalidContact" => C::InvalidContact,
        "unsupportedContact" => C::UnsupportedContact,
        "compound" => C::Compound,
        "alreadyReplaced" => C::AlreadyReplaced,
        "invalidProfile" => C::InvalidProfile,
        _ => C::AcmeError,
    }
}

/// "detail (type)", with each subproblem's identifier and detail.
pub fn describe(problem: &Problem) -> String {
    let mut text = problem.detail.clone().unwrap_or_else(|| "the CA gave no detail".into());
    if let Some(t) = &problem.r#type {
        text.push_str(&format!(" ({t})"));
    }
    for sub in &problem.subproblems {
        let who = sub.identifier.as_ref().map(|i| format!("{i:?}")).unwrap_or_default();
        text.push_str(&format!("; {who}: {}", sub.detail.as_deref().unwrap_or("")));
    }
    text
}

/// The most specific code of a problem: a compound problem takes its first subproblem's type.
pub fn code(problem: &Problem) -> C {
    let own = problem.r#type.as_deref().map(code_for_type).unwrap_or(C::AcmeError);
    if own == C::Compound
        && let Some(sub) = problem.subproblems.iter().find_map(|s| s.r#type.as_deref())
    {
        return code_for_type(sub);
    }
    own
}

/// A failure from an instant-acme error.
pub fn failure(error: &Error) -> Failure {
    match error {
        Error::Api(problem) => Failure::new(code(problem), describe(problem)),
        Error::Hyper(e) => Failure::new(C::CaUnreachable, format!("the ACME server could not be reached: {e}")),
        Error::Other(e) if e.downcast_ref::<hyper_util::client::legacy::Error>().is_some() => {
            Failure::new(C::CaUnreachable, format!("the ACME server could not be reached: {e}"))
        }
        Error::Other(e) if e.to_string().starts_with("replaces field mismatch") => Failure::new(
            C::ReplacesNotReflected,
            format!(
                "the CA accepted the renewal order but did not confirm which certificate it replaces ({e}); the next attempt orders without naming it"
            ),
        ),
        Error::Other(e) => Failure::new(C::AcmeError, format!("the ACME request failed: {e}")),
        Error::Timeout(_) => Failure::new(C::Timeout, "timed out waiting for the ACME server"),
        Error::Unsupported(what) => Failure::new(C::Unsupported, format!("the ACME server does not support {what}")),
        other => Failure::new(C::AcmeError, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(t: &str, detail: &str) -> Problem {
        serde_json::from_value(serde_json::json!({"type": t, "detail": detail, "status": 400})).unwrap()
    }

    #[test]
    fn problem_types_map_to_codes() {
        assert_eq!(code(&problem("urn:ietf:params:acme:error:rateLimited", "too many")), C::RateLimited);
        assert_eq!(code(&problem("urn:ietf:params:acme:error:unauthorized", "no")), C::Unauthorized);
        assert_eq!(code(&problem("urn:ietf:params:acme:error:dns", "NXDOMAIN")), C::Dns);
        assert_eq!(
            code(&problem("urn:ietf:params:acme:error:externalAccountRequired", "eab")),
            C::ExternalAccountRequired
        );
        assert_eq!(code(&problem("about:blank", "x")), C::AcmeError);
        let f = failure(&Error::Api(problem("urn:ietf:params:acme:error:incorrectResponse", "wrong token")));
        assert_eq!(f.code, C::IncorrectResponse);
        assert!(f.message.contains("wrong token") && f.message.contains("incorrectResponse"));
    }

    #[test]
    fn compound_problems_use_their_first_subproblem() {
        let p: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:compound", "detail": "several",
            "subproblems": [{"type": "urn:ietf:params:acme:error:caa", "detail": "CAA forbids", "identifier": {"type": "dns", "value": "a.example.com"}}]
        }))
        .unwrap();
        assert_eq!(code(&p), C::Caa);
        assert!(describe(&p).contains("CAA forbids"));
    }
}
