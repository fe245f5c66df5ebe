//! What `convert` could not carry over, or changed on the way: each finding names the
//! resource and the field, says why, and what to do about it.

use std::fmt;

/// The input resource a finding is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceId {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{}/{namespace}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub resource: ResourceId,
    /// Field path in the input, e.g. `spec.acme.solvers[1].dns01.route53`; empty for the whole resource.
    pub path: String,
    pub problem: Problem,
}

impl Finding {
    /// Whether something of the input is missing or different in the output (as opposed to a
    /// note about something converted that needs a step outside the manifests).
    pub fn is_loss(&self) -> bool {
        !self.problem.is_note()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = if self.is_loss() { "not converted" } else { "note" };
        let path = if self.path.is_empty() { String::new() } else { format!(" {}", self.path) };
        write!(f, "# {label}: {}{path}: {}", self.resource, self.problem)
    }
}

/// Why something was not converted as it was, or what needs doing besides applying the output.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    // The whole resource is left out.
    NotCertManager {
        api_version: String,
    },
    OldApiVersion {
        api_version: String,
    },
    NoCounterpart,
    Malformed {
        error: String,
    },
    UnsupportedIssuerType {
        issuer_type: String,
    },
    NoIssuerType,
    ExternalIssuer {
        group: String,
    },
    UnknownIssuerKind {
        kind: String,
    },
    NoNamesLeft,
    TooManyNames {
        count: usize,
    },
    MissingSecretName,

    // A field is left out or changed; the rest of the resource is converted.
    NoCounterpartField,
    NoUriOrEmailSans,
    NoSubject,
    Usages {
        unsupported: Vec<String>,
    },
    KeystoreNoPassword,
    KeystoreLiteralPassword,
    KeystoreAlias,
    NoTruststore {
        file: String,
    },
    Pkcs12LegacyDefault,
    Pkcs12Profile {
        value: String,
    },
    OutputFormat {
        format: String,
    },
    InvalidDnsName {
        name: String,
    },
    InvalidIpAddress {
        address: String,
    },
    CommonNameTooLong,
    Duration {
        value: String,
        why: DurationProblem,
    },
    RenewBeforePercentage {
        value: i32,
    },
    KeyAlgorithm {
        value: String,
    },
    KeySize {
        algorithm: String,
        size: i32,
        used: i32,
    },
    KeyEncoding {
        value: String,
    },
    RotationPolicy {
        value: String,
    },
    HistoryLimit {
        value: i32,
        used: i32,
    },
    CertManagerAnnotation,
    SkipTlsVerify,
    ServerNotHttps,
    InvalidEmail,
    CaBundleNotBase64,
    EabKeyMissing,
    SolverWithoutType,
    SelectorEmptied,
    NoDnsProvider {
        provider: String,
    },
    /// cert-manager's own `webhook` solver: an API service in cert-manager's protocol.
    CertManagerWebhook {
        solver: String,
    },
    MatchLabels,
    Http01WildcardSelector {
        name: String,
    },
    InvalidZone {
        zone: String,
    },
    IngressName,
    Http01Option {
        option: String,
    },
    ParentRefs {
        count: usize,
    },
    NoParentRefs,
    ParentRefKind {
        kind: String,
    },
    GatewayNamespace {
        name: String,
    },
    TsigAlgorithm {
        value: Option<String>,
    },
    TsigKeyMissing,
    Route53KeyMissing,
    CaExtension {
        field: String,
    },

    // Converted; something else to do.
    Lowercased {
        from: String,
        to: String,
    },
    IngressClassAnnotation {
        class: String,
    },
    AccountKeyNotReused {
        secret: String,
        new_secret: String,
    },
    ClusterIssuerSecret {
        secret: String,
    },
    GatewayRoutes {
        gateway: String,
    },
    TcpOnly,
    UsagesWidened {
        added: Vec<String>,
    },
    Pkcs1NotRsa,
    NoSolvers,
    SelectorSplit {
        solvers: usize,
    },
    Route53ServiceAccount {
        name: String,
        role: Option<String>,
        namespaced: bool,
    },
    Route53Ambient {
        namespaced: bool,
    },
}

/// Why a duration cannot be carried over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationProblem {
    NotAGoDuration,
    TooShort,
    TooLong,
    RenewBeforeNotShorter,
    RenewBeforeTooClose,
}

impl fmt::Display for DurationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAGoDuration => "is not a duration such as 2160h or 1h30m",
            Self::TooShort => "is shorter than 1m, certpilot's shortest certificate lifetime",
            Self::TooLong => "is longer than 99999h (about 11 years), the longest certpilot accepts",
            Self::RenewBeforeNotShorter => "is not shorter than duration",
            Self::RenewBeforeTooClose => {
                "leaves less than 30s between issuance and renewal (certpilot renews at most once per --min-renewal-interval)"
            }
        })
    }
}

impl Problem {
    /// Notes describe a converted field; every other problem is a loss.
    pub fn is_note(&self) -> bool {
        matches!(
            self,
            Self::Lowercased { .. }
                | Self::IngressClassAnnotation { .. }
                | Self::AccountKeyNotReused { .. }
                | Self::ClusterIssuerSecret { .. }
                | Self::GatewayRoutes { .. }
                | Self::TcpOnly
                | Self::UsagesWidened { .. }
                | Self::Pkcs1NotRsa
                | Self::NoSolvers
                | Self::SelectorSplit { .. }
                | Self::Route53ServiceAccount { .. }
                | Self::Route53Ambient { .. }
                | Self::KeystoreAlias
                | Self::NoTruststore { .. }
                | Self::Pkcs12LegacyDefault
        )
    }
}

const LEFT_OUT: &str = "left out of the output";

/// What a note about ambient credentials adds for a namespaced Issuer.
const AMBIENT_FOR_ISSUERS: &str =
    "; an Issuer (not a ClusterIssuer) may use it only when certpilot runs with --issuer-ambient-credentials";

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotCertManager { api_version } => write!(
                f,
                "not a cert-manager resource ({api_version}); {LEFT_OUT}, which holds only certpilot resources: apply it as it is"
            ),
            Self::OldApiVersion { api_version } => write!(
                f,
                "{api_version} is an old cert-manager API; {LEFT_OUT}: upgrade it to cert-manager.io/v1 (`cmctl convert`) and convert again"
            ),
            Self::NoCounterpart => write!(
                f,
                "cert-manager's record of one issuance; {LEFT_OUT}: certpilot keeps its own (CertificateAttempt), nothing to carry over"
            ),
            Self::Malformed { error } => {
                write!(f, "not a valid cert-manager resource ({error}); {LEFT_OUT}: fix it and convert again")
            }
            Self::UnsupportedIssuerType { issuer_type } => write!(
                f,
                "certpilot has no {issuer_type} issuer (only acme, selfSigned and ca); {LEFT_OUT}: keep cert-manager for the Certificates that use it"
            ),
            Self::NoIssuerType => write!(f, "none of acme, selfSigned or ca is set; {LEFT_OUT}"),
            Self::ExternalIssuer { group } => write!(
                f,
                "signed by an external issuer ({group}), which certpilot cannot drive; {LEFT_OUT}: keep cert-manager for it, or point it at a certpilot issuer"
            ),
            Self::UnknownIssuerKind { kind } => {
                write!(f, "issuerRef.kind {kind:?} is neither Issuer nor ClusterIssuer; {LEFT_OUT}")
            }
            Self::NoNamesLeft => write!(
                f,
                "no DNS name, IP address or usable commonName is left for certpilot to certify; {LEFT_OUT}: give it dnsNames or ipAddresses"
            ),
            Self::TooManyNames { count } => write!(
                f,
                "{count} names, more than the 100 per list certpilot accepts; {LEFT_OUT}: split it into several Certificates"
            ),
            Self::MissingSecretName => write!(f, "secretName is missing; {LEFT_OUT}: set it and convert again"),
            Self::NoCounterpartField => {
                write!(f, "certpilot has no counterpart for this field; left out: check whether you rely on it")
            }
            Self::NoUriOrEmailSans => write!(
                f,
                "certpilot certifies only DNS names and IP addresses; left out: keep cert-manager for certificates that need URI or email SANs"
            ),
            Self::NoSubject => write!(
                f,
                "certpilot sets only the common name in the subject; left out: certificates will have no O/OU/C/L/ST fields"
            ),
            Self::Usages { unsupported } => write!(
                f,
                "certpilot sets fixed key usages (digital signature, key encipherment, server auth, client auth; a CA: cert sign, crl sign, digital signature) and cannot add {}; left out",
                unsupported.join(", ")
            ),
            Self::KeystoreNoPassword => write!(
                f,
                "the keystore names no password Secret and key; left out: set passwordSecretRef (name and key) and convert again"
            ),
            Self::KeystoreLiteralPassword => write!(
                f,
                "certpilot reads keystore passwords only from a Secret; left out: put the password in a Secret, name it in passwordSecretRef and convert again"
            ),
            Self::KeystoreAlias => write!(
                f,
                "certpilot names the keystore entry after the Certificate; readers that look the entry up by this alias must use the Certificate's name"
            ),
            Self::NoTruststore { file } => write!(
                f,
                "certpilot writes the keystore but no {file}: a reader that needs the CA alone in a truststore must build it from ca.crt"
            ),
            Self::Pkcs12LegacyDefault => write!(
                f,
                "unset, which cert-manager encrypts with 40-bit RC2; written as profile LegacyRC2 so old readers keep working: set Modern2023 (AES-256) when they allow"
            ),
            Self::Pkcs12Profile { value } => write!(
                f,
                "{value:?} is not a PKCS#12 profile certpilot knows (Modern2023, LegacyRC2, LegacyDES); LegacyRC2, cert-manager's default, is used"
            ),
            Self::OutputFormat { format } => {
                write!(f, "certpilot has no output format {format:?} (only CombinedPEM and DER); left out")
            }
            Self::InvalidDnsName { name } => write!(
                f,
                "{name:?} is not a DNS name certpilot accepts (lowercase letters, digits, '-', a wildcard only as the leftmost label); left out"
            ),
            Self::InvalidIpAddress { address } => write!(f, "{address:?} is not an IP address; left out"),
            Self::CommonNameTooLong => write!(f, "longer than 64 characters, which X.509 does not allow; left out"),
            Self::Duration { value, why } => write!(f, "{value:?} {why}; left out, so certpilot's default applies"),
            Self::RenewBeforePercentage { value } => {
                write!(
                    f,
                    "{value} is not between 1 and 99; left out, so certpilot renews when a third of the lifetime is left"
                )
            }
            Self::KeyAlgorithm { value } => {
                write!(
                    f,
                    "certpilot has no key algorithm {value:?} (RSA, ECDSA or Ed25519); left out, so ECDSA P-256 is used"
                )
            }
            Self::KeySize { algorithm, size, used } => write!(
                f,
                "certpilot makes no {size}-bit {algorithm} keys; {used} bits are used instead: check that this is strong enough"
            ),
            Self::KeyEncoding { value } => {
                write!(f, "certpilot has no key encoding {value:?} (PKCS1 or PKCS8); left out, so PKCS8 is used")
            }
            Self::Pkcs1NotRsa => write!(
                f,
                "cert-manager writes ECDSA keys as SEC1 (EC PRIVATE KEY), certpilot as PKCS8 (PRIVATE KEY): check that the key's consumers read PKCS8"
            ),
            Self::RotationPolicy { value } => {
                write!(f, "certpilot has no rotation policy {value:?} (Always or Never); left out, so Always applies")
            }
            Self::HistoryLimit { value, used } => {
                write!(f, "certpilot keeps 1 to 100 attempts, not {value}; attemptHistoryLimit is set to {used}")
            }
            Self::CertManagerAnnotation => write!(
                f,
                "a cert-manager annotation, meaningless to certpilot; left out: check whether the behaviour it asked for matters"
            ),
            Self::SkipTlsVerify => write!(
                f,
                "certpilot refuses to talk to an ACME server it cannot verify; left out: put the server's CA certificate in caBundle"
            ),
            Self::ServerNotHttps => write!(
                f,
                "certpilot talks to ACME servers over https only (RFC 8555); {LEFT_OUT}: use the server's https:// directory URL"
            ),
            Self::InvalidEmail => {
                write!(
                    f,
                    "not an address such as ops@example.com, as certpilot requires; left out: fix it and convert again"
                )
            }
            Self::CaBundleNotBase64 => {
                write!(
                    f,
                    "not base64 of a PEM bundle, as cert-manager stores it; left out: set caBundle to the PEM text"
                )
            }
            Self::EabKeyMissing => write!(
                f,
                "keySecretRef has no key; left out, so certpilot registers without a binding: add the key and convert again"
            ),
            Self::SelectorEmptied => write!(
                f,
                "nothing certpilot accepts is left in the selector, and an empty one would select every name; the solver is left out"
            ),
            Self::SolverWithoutType => write!(f, "the solver has neither http01 nor dns01; left out"),
            Self::NoDnsProvider { provider } => write!(
                f,
                "no provider for {provider} in certpilot (built in: rfc2136, powerdns, route53, webhook); the solver is left out: reach {provider} through a dns01.webhook solver and a webhook server for it, or CNAME _acme-challenge to a zone on an RFC 2136 server, PowerDNS or Route 53 and use cnameStrategy: Follow, or keep cert-manager for these names"
            ),
            Self::CertManagerWebhook { solver } => write!(
                f,
                "cert-manager's webhook solver {solver} is an API service speaking cert-manager's own protocol, which certpilot does not; the solver is left out: run a server in lego's httpreq protocol for that DNS (POST /present and /cleanup with {{\"fqdn\", \"value\"}}) and name it in dns01.webhook, or CNAME _acme-challenge to a zone on an RFC 2136 server, PowerDNS or Route 53 and use cnameStrategy: Follow, or keep cert-manager for these names"
            ),
            Self::MatchLabels => write!(
                f,
                "certpilot selects solvers by DNS name and zone, not by Certificate labels; the solver is left out: put it in a separate issuer and point the labelled Certificates at that"
            ),
            Self::Http01WildcardSelector { name } => {
                write!(f, "{name:?} is a wildcard, which http01 cannot validate; left out of the selector")
            }
            Self::InvalidZone { zone } => write!(
                f,
                "{zone:?} is not a zone name certpilot accepts (lowercase, no wildcard, no trailing dot); left out"
            ),
            Self::IngressName => write!(
                f,
                "certpilot creates its own Ingress for each challenge instead of editing an existing one; left out, so the default IngressClass is used: set ingressClassName if that is wrong"
            ),
            Self::Http01Option { option } => write!(
                f,
                "certpilot answers challenges from its own pods, so there is no solver {option} to set; left out"
            ),
            Self::ParentRefs { count } => write!(
                f,
                "certpilot attaches challenge routes to one Gateway, not {count}; only the first is converted"
            ),
            Self::NoParentRefs => write!(f, "gatewayHTTPRoute names no Gateway; the solver is left out"),
            Self::ParentRefKind { kind } => {
                write!(f, "certpilot attaches challenge routes only to a Gateway, not a {kind}; the solver is left out")
            }
            Self::GatewayNamespace { name } => write!(
                f,
                "the Gateway {name:?} has no namespace, so cert-manager used the Certificate's; certpilot reads it as a Gateway in its own namespace: set gateway to <namespace>/{name}"
            ),
            Self::TsigAlgorithm { value: None } => write!(
                f,
                "unset means HMACMD5 in cert-manager, which certpilot does not sign with; left out, so certpilot uses hmac-sha256: give the server an hmac-sha256 key"
            ),
            Self::TsigAlgorithm { value: Some(value) } => write!(
                f,
                "certpilot does not sign with {value} (only hmac-sha256, hmac-sha384, hmac-sha512); left out, so hmac-sha256 is used: give the server an hmac-sha256 key"
            ),
            Self::TsigKeyMissing => write!(
                f,
                "tsigSecretSecretRef has no key; left out, so updates are unsigned: add the key and convert again"
            ),
            Self::Route53KeyMissing => write!(
                f,
                "the Secret reference has no key; the keys are left out, so certpilot would use its own AWS identity: add the key and convert again"
            ),
            Self::CaExtension { field } => {
                write!(f, "certpilot does not put {field} into certificates it signs; left out")
            }
            Self::Lowercased { from, to } => {
                write!(f, "{from:?} is written {to:?}: certpilot accepts lowercase names only (DNS ignores case)")
            }
            Self::IngressClassAnnotation { class } => write!(
                f,
                "class {class:?} (the old annotation) becomes ingressClassName {class:?}: check that an IngressClass of that name exists"
            ),
            Self::AccountKeyNotReused { secret, new_secret } => write!(
                f,
                "Secret {secret:?} holds cert-manager's RSA account key, and certpilot's accounts use ECDSA P-256 keys, so certpilot registers a new account (kept in Secret {new_secret:?}); with a single-use external account binding, get a new one from the CA"
            ),
            Self::ClusterIssuerSecret { secret } => write!(
                f,
                "certpilot reads a ClusterIssuer's Secrets from its own namespace (certpilot by default), not cert-manager's: copy Secret {secret:?} there"
            ),
            Self::GatewayRoutes { gateway } => write!(
                f,
                "certpilot creates challenge HTTPRoutes in its own namespace: allow routes from there on Gateway {gateway:?} (listeners[].allowedRoutes)"
            ),
            Self::TcpOnly => write!(f, "certpilot sends updates over TCP only: check that the server accepts TCP"),
            Self::UsagesWidened { added } => {
                write!(f, "certpilot always sets these usages too: {}", added.join(", "))
            }
            Self::NoSolvers => write!(
                f,
                "no solver is left, so this issuer cannot validate any name until you add one (http01, dns01 with rfc2136, or tlsAlpn01)"
            ),
            Self::Route53ServiceAccount { name, role, namespaced } => {
                write!(
                    f,
                    "certpilot does not request tokens for ServiceAccount {name:?}: it uses its own AWS identity (ambient credentials){}. Give certpilot's ServiceAccount an IAM role (IRSA annotation eks.amazonaws.com/role-arn, or an EKS Pod Identity association)",
                    role.as_deref().map(|r| format!(" and assumes {r} with it")).unwrap_or_default()
                )?;
                if role.is_some() {
                    f.write_str(" that may sts:AssumeRole the role, and let the role's trust policy trust it")?;
                }
                f.write_str(if *namespaced { AMBIENT_FOR_ISSUERS } else { "" })
            }
            Self::Route53Ambient { namespaced } => {
                f.write_str(
                    "no keys: certpilot uses its own AWS identity (ambient credentials), as cert-manager used its own: give certpilot's ServiceAccount the IAM role (IRSA annotation eks.amazonaws.com/role-arn, or an EKS Pod Identity association)",
                )?;
                f.write_str(if *namespaced { AMBIENT_FOR_ISSUERS } else { "" })
            }
            Self::SelectorSplit { solvers } => write!(
                f,
                "a certpilot selector takes at most {max} names and {max} zones, so this solver became {solvers} solvers with the same settings, each selecting a part of them",
                max = crate::api::issuer::SELECTOR_MAX_ENTRIES
            ),
        }
    }
}
