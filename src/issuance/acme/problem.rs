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
        "alreadyRevoked" => C::AlreadyRevoked,
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
        Error::Hyper(e) => transport_failure(e),
        Error::Other(e) if e.downcast_ref::<hyper_util::client::legacy::Error>().is_some() => {
            transport_failure(e.as_ref())
        }
        Error::Other(e) if e.is::<super::client::Unanswered>() => Failure::new(C::Timeout, e.to_string()),
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

/// Why the ACME server could not be reached, told apart by what failed under the request: TLS
/// trust (a missing or wrong caBundle), name resolution, a refused connection, a timeout.
pub fn transport_failure(error: &(dyn std::error::Error + 'static)) -> Failure {
    let chain = std::iter::successors(Some(error), |e| e.source());
    let mut texts = Vec::new();
    for cause in chain {
        if let Some(tls) =
            cause.downcast_ref::<rustls::Error>().or_else(|| crate::outbound::io_inner::<rustls::Error>(cause))
        {
            return tls_failure(tls);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => {
                    return Failure::new(
                        C::Timeout,
                        "connecting to the ACME server timed out: check network policies, proxies and firewalls between certpilot and spec.acme.server",
                    );
                }
                std::io::ErrorKind::ConnectionRefused => {
                    return Failure::new(
                        C::CaUnreachable,
                        "the ACME server refused the connection: check the host and port of spec.acme.server",
                    );
                }
                _ => {}
            }
        }
        texts.push(cause.to_string());
    }
    if texts.iter().any(|t| t == "dns error" || t.contains("failed to lookup address")) {
        return Failure::new(
            C::CaNameUnresolved,
            format!(
                "the ACME server's host name could not be resolved ({}): check spec.acme.server and the cluster's DNS",
                texts.join(": ")
            ),
        );
    }
    Failure::new(C::CaUnreachable, format!("the ACME server could not be reached: {}", texts.join(": ")))
}

fn tls_failure(error: &rustls::Error) -> Failure {
    use rustls::{CertificateError, Error as Tls};
    let message = match error {
        Tls::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => format!(
            "the ACME server's TLS certificate is not trusted ({error}): for a private ACME server, set caBundle to the PEM of the CA that signed its certificate (and check that the one set is that CA)"
        ),
        Tls::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the ACME server's TLS certificate is not valid for the host in spec.acme.server ({error}): use the name (or address) its certificate covers"
        ),
        Tls::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            format!("the ACME server's TLS certificate has expired ({error})")
        }
        other => format!("TLS with the ACME server failed: {other}"),
    };
    Failure::new(C::CaTlsUntrusted, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_told_apart() {
        use std::io::{Error as Io, ErrorKind};
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = Io::other(Io::new(ErrorKind::InvalidData, untrusted));
        let tls = transport_failure(&wrapped);
        assert_eq!(tls.code, C::CaTlsUntrusted);
        assert!(tls.message.contains("caBundle"), "{}", tls.message);
        let wrong_name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert!(transport_failure(&wrong_name).message.contains("not valid for the host"));
        assert_eq!(transport_failure(&Io::from(ErrorKind::ConnectionRefused)).code, C::CaUnreachable);
        assert_eq!(transport_failure(&Io::from(ErrorKind::TimedOut)).code, C::Timeout);
        let other = transport_failure(&Io::other("something else"));
        assert_eq!(other.code, C::CaUnreachable);
        assert!(other.message.contains("something else"));
    }

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
