//! `Certificate`: what the user wants, and a status that says what is happening to it.

pub use super::request::{
    KeyAlgorithm, KeyEncoding, OutputFormat, OutputFormatType, Pkcs12Profile, PrivateKeySpec, RotationPolicy,
    SecretTemplate,
};
use super::{
    IssuerRef,
    attempt::{AttemptPhase, AttemptType, ValidationRecord},
    conditions::Condition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Lowercase DNS names; a wildcard only as the whole leftmost label.
pub const DNS_NAME_PATTERN: &str =
    r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// A TLS certificate certpilot issues, stores in a Secret and renews.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "certpilot.dev",
    version = "v1alpha1",
    kind = "Certificate",
    namespaced,
    status = "CertificateStatus",
    shortname = "cpcert",
    category = "certpilot",
    derive = "Default",
    derive = "PartialEq",
    doc = "A TLS certificate that certpilot issues into a Secret and keeps renewed.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secretName"),
    // Future times as strings: the API server renders `date` columns as ages, and a time to
    // come as `<invalid>`.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.notAfter"),
    printcolumn(name = "Renews", type_ = "string", json_path = ".status.renewalTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // `kubectl get certificates --field-selector status.phase=Failed`
    selectable = ".status.phase",
    selectable = ".spec.issuerRef.name",
    selectable = ".spec.issuerRef.kind",
    selectable = ".spec.secretName"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.dnsNames) || has(self.ipAddresses) || has(self.commonName)").message("at least one of dnsNames, ipAddresses or commonName is required"))]
#[x_kube(validation = Rule::new(r"(has(self.isCA) && self.isCA) || has(self.dnsNames) || has(self.ipAddresses) || !has(self.commonName) || isIP(self.commonName) || self.commonName.matches('^(\\*\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message("a commonName without dnsNames or ipAddresses must be a lowercase DNS name or an IP address (unless isCA): certpilot copies it into the subjectAltName, the only name clients check"))]
#[x_kube(validation = Rule::new("!has(self.fallbackIssuerRefs) || self.fallbackIssuerRefs.all(f, f.name != self.issuerRef.name || (has(f.kind) ? f.kind : 'Issuer') != (has(self.issuerRef.kind) ? self.issuerRef.kind : 'Issuer'))").message("fallbackIssuerRefs must not repeat issuerRef: it is always tried first"))]
#[x_kube(validation = Rule::new("!has(self.renewBefore) || !has(self.renewBeforePercentage)").message("set renewBefore or renewBeforePercentage, not both"))]
#[x_kube(validation = Rule::new(r"!has(self.renewBefore) || !has(self.duration) || !self.renewBefore.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?h)?([0-9]{1,6}(\\.[0-9]{1,9})?m)?([0-9]{1,6}(\\.[0-9]{1,9})?s)?([0-9]{1,6}(ms|us|ns))?$') || !self.duration.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?h)?([0-9]{1,6}(\\.[0-9]{1,9})?m)?([0-9]{1,6}(\\.[0-9]{1,9})?s)?([0-9]{1,6}(ms|us|ns))?$') || duration(self.renewBefore) < duration(self.duration)").message("renewBefore must be shorter than duration"))]
#[x_kube(validation = Rule::new(r"!has(self.duration) || !self.duration.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?h)?([0-9]{1,6}(\\.[0-9]{1,9})?m)?([0-9]{1,6}(\\.[0-9]{1,9})?s)?([0-9]{1,6}(ms|us|ns))?$') || duration(self.duration) >= duration('1m')").message("duration must be at least 1m"))]
#[x_kube(validation = Rule::new(r"!has(self.renewBefore) || !has(self.duration) || !self.renewBefore.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?h)?([0-9]{1,6}(\\.[0-9]{1,9})?m)?([0-9]{1,6}(\\.[0-9]{1,9})?s)?([0-9]{1,6}(ms|us|ns))?$') || !self.duration.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?h)?([0-9]{1,6}(\\.[0-9]{1,9})?m)?([0-9]{1,6}(\\.[0-9]{1,9})?s)?([0-9]{1,6}(ms|us|ns))?$') || duration(self.duration) - duration(self.renewBefore) >= duration('30s')").message("renewBefore must leave at least 30s between issuance and renewal (certpilot renews a Certificate at most once per --min-renewal-interval, 5m by default)"))]
pub struct CertificateSpec {
    /// Name of the Secret (type `kubernetes.io/tls`) that receives `tls.crt`, `tls.key` and `ca.crt`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretName must be a valid Secret name: lowercase letters, digits, '-' and '.', at most 253 characters"))]
    pub secret_name: String,
    /// DNS names the certificate covers (subject alternative names); `*.example.com` for a wildcard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(max = 253)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(r"self.all(n, n.matches('^(\\*\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))").message("dnsNames must be lowercase DNS names (letters, digits, '-' and '.'); a wildcard is only allowed as the whole leftmost label, as in '*.example.com'"))]
    pub dns_names: Option<Vec<String>>,
    /// IP addresses the certificate covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), inner(length(max = 45)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(ip, isIP(ip))").message("ipAddresses must be valid IPv4 or IPv6 addresses"))]
    pub ip_addresses: Option<Vec<String>>,
    /// Subject common name, at most 64 characters. When it is a DNS name or an IP address that
    /// `dnsNames`/`ipAddresses` do not list, the certificate covers it too (clients check only the
    /// subjectAltName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("!self.matches('[\\x00-\\x1f\\x7f]')").message("commonName must not contain control characters (newlines, tabs, NUL)"))]
    pub common_name: Option<String>,
    /// The issuer that signs this certificate.
    pub issuer_ref: IssuerRef,
    /// Issuers tried in order when an attempt fails for a reason on the CA's side (unreachable,
    /// 5xx, a rate limit that outlasts the certificate, an account it refuses, a CA that is not
    /// ready); a failure on the user's side keeps the issuer. Every renewal starts again with
    /// `issuerRef`. At most 3, none equal to `issuerRef`, no duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 3))]
    #[x_kube(validation = Rule::new("self.all(f, self.exists_one(g, g.name == f.name && (has(g.kind) ? g.kind : 'Issuer') == (has(f.kind) ? f.kind : 'Issuer')))").message("fallbackIssuerRefs must not name an issuer twice"))]
    pub fallback_issuer_refs: Option<Vec<IssuerRef>>,
    /// Requested lifetime as a Go duration (e.g. `2160h`); CAs may cap it. Default 2160h for local issuers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new(r"self.size() > 1 && self.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?h)?([0-9]{1,6}(\\.[0-9]{1,9})?m)?([0-9]{1,6}(\\.[0-9]{1,9})?s)?([0-9]{1,6}(ms|us|ns))?$')").message("duration must be hours, minutes and seconds in that order, at most 99999h (about 11 years), e.g. 2160h or 1h30m"))]
    pub duration: Option<String>,
    /// Renew this long before expiry (Go duration). Default: when a third of the lifetime is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new(r"self.size() > 1 && self.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?h)?([0-9]{1,6}(\\.[0-9]{1,9})?m)?([0-9]{1,6}(\\.[0-9]{1,9})?s)?([0-9]{1,6}(ms|us|ns))?$')").message("renewBefore must be hours, minutes and seconds in that order, at most 99999h (about 11 years), e.g. 2160h or 1h30m"))]
    pub renew_before: Option<String>,
    /// Renew when this percentage of the lifetime is left (1–99), instead of `renewBefore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub renew_before_percentage: Option<i32>,
    /// Make a CA certificate (basicConstraints CA:TRUE), e.g. to bootstrap a private CA with a
    /// selfSigned issuer and then sign with a `ca` issuer that uses this Secret. Local issuers only.
    #[serde(default, rename = "isCA", skip_serializing_if = "Option::is_none")]
    pub is_ca: Option<bool>,
    /// Certificate profile to ask an ACME CA for (overrides the issuer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The private key: algorithm, size, rotation and encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PrivateKeySpec>,
    /// Labels and annotations copied onto the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Extra keys written into the Secret besides `tls.crt`/`tls.key`/`ca.crt`: `tls-combined.pem`,
    /// `key.der`, `keystore.p12`, `keystore.jks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub additional_output_formats: Option<Vec<OutputFormat>>,
    /// How many finished CertificateAttempts to keep (1–100, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub attempt_history_limit: Option<i32>,
}

/// Certificate lifecycle phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum CertificatePhase {
    /// Nothing issued yet and nothing under way (e.g. waiting for the issuer).
    #[default]
    Pending,
    /// The first certificate is being issued.
    Issuing,
    /// The CA is checking the validation records.
    PendingValidation,
    /// A valid certificate is in the Secret.
    Ready,
    /// A valid certificate is in the Secret and its replacement is being issued.
    Renewing,
    /// No valid certificate, and the last attempt failed.
    Failed,
    /// The certificate in the Secret has expired.
    Expired,
}

/// Where the renewal time came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RenewalSource {
    /// The CA's ACME Renewal Information window (RFC 9773).
    #[serde(rename = "ARI")]
    Ari,
    /// `renewBefore`, `renewBeforePercentage` or the default share of the lifetime.
    Policy,
}

/// The latest attempt, in brief.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptSummary {
    /// Name of the CertificateAttempt (`kubectl get certificateattempt <name>` for every detail).
    pub name: String,
    /// Issue, Renew, Reissue, Manual, Repair or Revoke.
    #[serde(rename = "type")]
    pub type_: AttemptType,
    /// The attempt's phase.
    pub phase: AttemptPhase,
}

/// How many attempts `status.history` keeps.
pub const HISTORY_LENGTH: usize = 10;
/// The longest serial number `status.history` records (hex; 64 bytes, beyond RFC 5280's 20).
pub const HISTORY_SERIAL_MAX: usize = 128;
/// The longest error code `status.history` records.
pub const HISTORY_ERROR_CODE_MAX: usize = 64;

/// One attempt in brief, kept in `status.history` when the CertificateAttempt is pruned.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptHistoryEntry {
    /// Name of the CertificateAttempt (`<certificate>-<index>`); the object may have been pruned.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Issue, Renew, Reissue, Manual, Repair or Revoke.
    #[serde(rename = "type")]
    pub type_: AttemptType,
    /// The attempt's phase when last seen.
    pub phase: AttemptPhase,
    /// The issuer it was made with, as `Kind/name`.
    #[schemars(length(max = 267))]
    pub issuer: String,
    /// When work on the attempt began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Serial number of the certificate it produced (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = HISTORY_SERIAL_MAX))]
    pub serial: Option<String>,
    /// Class of failure, as the attempt's `errorCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = HISTORY_ERROR_CODE_MAX))]
    pub error_code: Option<String>,
}

/// What is happening to the certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Pending, Issuing, PendingValidation, Ready, Renewing, Failed or Expired.
    #[serde(default)]
    pub phase: CertificatePhase,
    /// `Ready`: a valid certificate matching the spec is in the Secret. `Issuing`: an attempt is under way, or why the last one failed.
    #[serde(default)]
    #[schemars(transform = super::conditions::list_map_by_type)]
    pub conditions: Vec<Condition>,
    /// Start of the current certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// End of the current certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// When the certificate will be renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// `ARI` or `Policy`: where `renewalTime` came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_source: Option<RenewalSource>,
    /// Serial number of the current certificate (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// SHA-256 fingerprint of the current certificate (hex, colon-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint_sha256: Option<String>,
    /// Issuer (distinguished name) of the current certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The most recent CertificateAttempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<AttemptSummary>,
    /// Consecutive failed attempts (0 after a success).
    #[serde(default)]
    pub attempts_count: i32,
    /// When the next attempt will be made after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// The CA's Retry-After on the last failure, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// The exact records the CA checks for the attempt under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_records: Vec<ValidationRecord>,
    /// Validation errors the CA reported on the latest attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
    /// The CA's ACME Renewal Information (RFC 9773) for the current certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_info: Option<RenewalInfoStatus>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Index of the latest attempt (`<name>-<index>`), recorded with its progress or outcome.
    /// The next attempt takes an index above it and above every attempt of this Certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub attempt_index: Option<u32>,
    /// Why the next renewal waits longer than the renewal policy says (the renewal floor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_held: Option<String>,
    /// The latest attempts, newest first (at most 10), kept when the CertificateAttempts are pruned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = HISTORY_LENGTH))]
    pub history: Vec<AttemptHistoryEntry>,
    /// The issuer that issued the current certificate, and why a fallback issuer did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<IssuedBy>,
}

/// The issuer of the current certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuedBy {
    /// `Issuer` or `ClusterIssuer`.
    pub kind: super::IssuerKind,
    /// Its name.
    pub name: String,
    /// Set when it is one of `fallbackIssuerRefs`: what failed on the CA's side before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// What the CA said about renewing the current certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RenewalInfoStatus {
    /// The ARI identifier of the certificate asked about (`<authority key id>.<serial>`).
    pub certificate_id: String,
    /// Start of the suggested renewal window; absent when the CA does not offer ARI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<Time>,
    /// End of the suggested renewal window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<Time>,
    /// The CA's explanation of the window, if it gave one.
    #[serde(default, rename = "explanationURL", skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
    /// When to ask the CA again (its Retry-After).
    pub next_check: Time,
}

/// A lowercase DNS name, as `dnsNames` accepts them (a wildcard only as the whole first label).
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label) && name.parse::<std::net::IpAddr>().is_err()
}

impl CertificateSpec {
    pub fn dns_names(&self) -> &[String] {
        self.dns_names.as_deref().unwrap_or_default()
    }
    pub fn ip_addresses(&self) -> &[String] {
        self.ip_addresses.as_deref().unwrap_or_default()
    }
    /// The DNS names the certificate covers: `dnsNames`, and the common name when it is a DNS
    /// name they do not list (clients check only the subjectAltName, never the common name). A
    /// CA's common name names the CA, not a server.
    pub fn covered_dns_names(&self) -> Vec<String> {
        let mut names = self.dns_names().to_vec();
        let server_name = |cn: &&String| !self.is_ca() && is_dns_name(cn) && !names.contains(cn);
        if let Some(cn) = self.common_name.as_ref().filter(server_name) {
            names.push(cn.clone());
        }
        names
    }
    /// The IP addresses the certificate covers: `ipAddresses`, and the common name when it is
    /// an address they do not list.
    pub fn covered_ip_addresses(&self) -> Vec<String> {
        let mut addresses = self.ip_addresses().to_vec();
        let is_ip = |cn: &&String| !self.is_ca() && cn.parse::<std::net::IpAddr>().is_ok();
        if let Some(cn) = self.common_name.as_ref().filter(is_ip).filter(|cn| !addresses.contains(cn)) {
            addresses.push(cn.clone());
        }
        addresses
    }
    /// `issuerRef`, then `fallbackIssuerRefs`: the order attempts go through them.
    pub fn issuers(&self) -> Vec<IssuerRef> {
        std::iter::once(&self.issuer_ref).chain(self.fallback_issuer_refs.iter().flatten()).cloned().collect()
    }
    pub fn private_key(&self) -> PrivateKeySpec {
        self.private_key.clone().unwrap_or_default()
    }
    pub fn is_ca(&self) -> bool {
        self.is_ca.unwrap_or(false)
    }
    pub fn history_limit(&self) -> usize {
        self.attempt_history_limit.unwrap_or(10).clamp(1, 100) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dns: &[&str], ips: &[&str], cn: Option<&str>) -> CertificateSpec {
        let list = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        CertificateSpec {
            dns_names: list(dns),
            ip_addresses: list(ips),
            common_name: cn.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn the_common_name_is_covered_when_it_is_a_name_or_an_address() {
        assert_eq!(spec(&[], &[], Some("web.example.com")).covered_dns_names(), ["web.example.com"]);
        assert_eq!(
            spec(&["a.example.com"], &[], Some("web.example.com")).covered_dns_names(),
            ["a.example.com", "web.example.com"]
        );
        assert_eq!(spec(&["web.example.com"], &[], Some("web.example.com")).covered_dns_names(), ["web.example.com"]);
        assert_eq!(spec(&["a.example.com"], &[], Some("My Service")).covered_dns_names(), ["a.example.com"]);
        let by_address = spec(&[], &["10.0.0.1"], Some("10.0.0.7"));
        assert_eq!(by_address.covered_ip_addresses(), ["10.0.0.1", "10.0.0.7"]);
        assert!(by_address.covered_dns_names().is_empty(), "an address is not a DNS name");
        let ca = CertificateSpec { is_ca: Some(true), ..spec(&[], &[], Some("ca.example.com")) };
        assert!(ca.covered_dns_names().is_empty(), "a CA's common name names the CA");
    }

    #[test]
    fn dns_names_are_told_apart_from_everything_else() {
        for good in ["example.com", "*.example.com", "a-b.c1.example", "localhost"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in ["Example.com", "a..b", "-a.example.com", "a_b.example.com", "My Service", "a.*.example.com", ""] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert!(!is_dns_name(&format!("{}.com", "a".repeat(64))));
    }
}
