//! Why an attempt ended without a certificate: a typed class (`errorCode` in status) and the
//! refusing party's full message.

use jiff::Timestamp;

macro_rules! failure_codes {
    ($($(#[$doc:meta])* $name:ident => $text:literal, transient: $transient:literal;)*) => {
        /// The class of a failure; `as_str` is the `errorCode` an attempt reports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum FailureCode {
            $($(#[$doc])* $name,)*
        }

        impl FailureCode {
            pub const ALL: &[FailureCode] = &[$(FailureCode::$name,)*];

            /// The code an attempt's `errorCode` names, if it is one of these.
            pub fn parse(text: &str) -> Option<FailureCode> {
                Self::ALL.iter().copied().find(|code| code.as_str() == text)
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    $(FailureCode::$name => $text,)*
                }
            }

            /// Whether the same step may succeed if simply tried again shortly (the CA or the
            /// network hiccuped), as opposed to a refusal that ends the attempt.
            pub fn is_transient(self) -> bool {
                match self {
                    $(FailureCode::$name => $transient,)*
                }
            }
        }
    };
}

failure_codes! {
    // The CA's problem types (RFC 8555 §6.7, RFC 9773, profiles).
    RateLimited => "RateLimited", transient: false;
    Unauthorized => "Unauthorized", transient: false;
    Dns => "DNS", transient: false;
    Connection => "Connection", transient: false;
    Tls => "TLS", transient: false;
    IncorrectResponse => "IncorrectResponse", transient: false;
    Caa => "CAA", transient: false;
    RejectedIdentifier => "RejectedIdentifier", transient: false;
    UnsupportedIdentifier => "UnsupportedIdentifier", transient: false;
    BadCsr => "BadCSR", transient: false;
    BadNonce => "BadNonce", transient: true;
    BadSignatureAlgorithm => "BadSignatureAlgorithm", transient: false;
    BadPublicKey => "BadPublicKey", transient: false;
    BadRevocationReason => "BadRevocationReason", transient: false;
    ExternalAccountRequired => "ExternalAccountRequired", transient: false;
    AccountDoesNotExist => "AccountDoesNotExist", transient: false;
    UserActionRequired => "UserActionRequired", transient: false;
    OrderNotReady => "OrderNotReady", transient: false;
    Malformed => "Malformed", transient: false;
    ServerInternal => "ServerInternal", transient: true;
    InvalidContact => "InvalidContact", transient: false;
    UnsupportedContact => "UnsupportedContact", transient: false;
    Compound => "Compound", transient: false;
    AlreadyReplaced => "AlreadyReplaced", transient: false;
    InvalidProfile => "InvalidProfile", transient: false;
    /// The certificate was already revoked (a Revoke attempt takes it as done).
    AlreadyRevoked => "AlreadyRevoked", transient: false;
    AcmeError => "ACMEError", transient: false;
    /// The CA accepted a renewal order without confirming `replaces`.
    ReplacesNotReflected => "ReplacesNotReflected", transient: false;
    /// The ACME server could not be reached (network, TLS): not the CA's verdict on anything.
    CaUnreachable => "CAUnreachable", transient: true;
    /// The ACME server's TLS certificate is not trusted (caBundle missing or wrong).
    CaTlsUntrusted => "CATLSUntrusted", transient: false;
    /// The ACME server's host name does not resolve.
    CaNameUnresolved => "CANameUnresolved", transient: true;
    /// The CA did not answer in time, or the order did not complete within the attempt's time.
    Timeout => "Timeout", transient: true;
    Unsupported => "Unsupported", transient: false;
    OrderInvalid => "OrderInvalid", transient: false;
    InvalidCaBundle => "InvalidCABundle", transient: false;
    InvalidAccountKey => "InvalidAccountKey", transient: false;
    ExternalAccountKeyMissing => "ExternalAccountKeyMissing", transient: false;
    InvalidExternalAccountKey => "InvalidExternalAccountKey", transient: false;
    // The issuer and the Certificate.
    IssuerNotFound => "IssuerNotFound", transient: false;
    IssuerNotReady => "IssuerNotReady", transient: false;
    InvalidSpec => "InvalidSpec", transient: false;
    NotSupported => "NotSupported", transient: false;
    // Secrets.
    SecretNotOwned => "SecretNotOwned", transient: false;
    SecretTypeMismatch => "SecretTypeMismatch", transient: false;
    /// A keystore's password Secret, or its key, is missing or unusable.
    KeystorePasswordMissing => "KeystorePasswordMissing", transient: false;
    /// The API server refused a write (validation, admission, quota).
    ApiServerRefused => "APIServerRefused", transient: false;
    // Keys and signing.
    KeyGenerationFailed => "KeyGenerationFailed", transient: false;
    KeyEncodingFailed => "KeyEncodingFailed", transient: false;
    /// The key an ACME attempt sealed into its status does not open (certpilot's sealing key
    /// was deleted or replaced since), or the sealing key's Secret is not usable.
    SealedKeyUnusable => "SealedKeyUnusable", transient: false;
    SigningFailed => "SigningFailed", transient: false;
    VerificationFailed => "VerificationFailed", transient: false;
    // Solvers.
    NoSolver => "NoSolver", transient: false;
    SolverFailed => "SolverFailed", transient: false;
    DnsUpdateFailed => "DNSUpdateFailed", transient: false;
    DnsUpdateRefused => "DNSUpdateRefused", transient: false;
    DnsPropagation => "DNSPropagation", transient: false;
    TsigKeyMissing => "TSIGKeyMissing", transient: false;
    TsigKeyInvalid => "TSIGKeyInvalid", transient: false;
    DnsAnswerNotSigned => "DNSAnswerNotSigned", transient: false;
    DnsProviderCredentials => "DNSProviderCredentials", transient: false;
    /// A DNS provider's API (a webhook) could not be reached, did not answer in time or said it
    /// is unavailable for now (502, 503, 504): tried again shortly.
    DnsProviderUnreachable => "DNSProviderUnreachable", transient: true;
    /// The DNS-PERSIST-01 record is missing or would not authorise the request.
    DnsPersistRecord => "DNSPersistRecord", transient: false;
    /// The CA names no issuer domain name (`caaIdentities`), which DNS-PERSIST-01 needs.
    DnsPersistUnsupported => "DNSPersistUnsupported", transient: false;
    // Revocation.
    /// The CA does not know the certificate (another CA's, or one it has forgotten).
    CertificateUnknown => "CertificateUnknown", transient: false;
    /// The Secret holds no certificate certpilot stored for the Certificate, or another one
    /// than the attempt was made to revoke.
    NothingToRevoke => "NothingToRevoke", transient: false;
    /// The issuer cannot revoke (a self-signed certificate has no one to revoke it).
    RevocationNotPossible => "RevocationNotPossible", transient: false;
    Internal => "Internal", transient: false;
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a step could not be done: a class, the full message and the CA's Retry-After.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
    pub retry_after: Option<Timestamp>,
}

impl Failure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }

    /// The API server refused a write: its own words, naming the object.
    pub fn refused(what: &str, status: &kube::core::Status) -> Self {
        Self::new(FailureCode::ApiServerRefused, format!("the API server refused {what}: {}", status.message))
    }
}

/// Why a step stopped short: the attempt fails for a reason it records and shows the user
/// (`Failed`), or the API server could not be asked (`Api`: the pass is tried again). One type,
/// so that a step's code reads as a line of `?`s rather than nested results.
#[derive(Debug)]
pub enum Stop {
    Failed(Failure),
    Api(crate::error::Error),
}

/// What a step of issuance comes to.
pub type Outcome<T> = std::result::Result<T, Stop>;

impl Stop {
    /// The failure to record, or the API error passed on to the caller: where a failure is a
    /// state to show (an issuer's condition) rather than the end of an attempt.
    pub fn failure(self) -> crate::error::Result<Failure> {
        match self {
            Stop::Failed(failure) => Ok(failure),
            Stop::Api(error) => Err(error),
        }
    }
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

impl From<crate::error::Error> for Stop {
    fn from(error: crate::error::Error) -> Self {
        Stop::Api(error)
    }
}

impl From<kube::Error> for Stop {
    fn from(error: kube::Error) -> Self {
        Stop::Api(error.into())
    }
}

/// Whether an API error is a refusal that retrying will not change (the object is invalid,
/// forbidden by policy or quota), as opposed to a conflict or an outage.
pub fn is_refusal(error: &kube::Error) -> Option<&kube::core::Status> {
    match error {
        kube::Error::Api(status) if matches!(status.code, 400 | 403 | 413 | 422) => Some(status),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_words() {
        let mut seen = std::collections::HashSet::new();
        for code in FailureCode::ALL {
            assert!(seen.insert(code.as_str()), "{code:?} repeats {}", code.as_str());
            assert!(code.as_str().chars().all(|c| c.is_ascii_alphanumeric()), "{code:?}");
        }
        assert!(FailureCode::CaUnreachable.is_transient() && !FailureCode::Unauthorized.is_transient());
        assert!(!FailureCode::Connection.is_transient(), "the CA could not connect to a solver: its verdict");
    }

    #[test]
    fn refusals_are_told_apart_from_conflicts_and_outages() {
        let status = |code| kube::Error::Api(Box::new(kube::core::Status { code, ..Default::default() }));
        assert!(is_refusal(&status(422)).is_some());
        assert!(is_refusal(&status(403)).is_some());
        assert!(is_refusal(&status(409)).is_none());
        assert!(is_refusal(&status(500)).is_none());
    }
}
