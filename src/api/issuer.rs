//! `Issuer` (namespaced) and `ClusterIssuer` (cluster-wide): where certificates come from.

use super::{LocalSecretReference, SecretKeySelector, conditions::Condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

const EXACTLY_ONE_KIND: &str =
    "[has(self.spec.acme), has(self.spec.selfSigned), has(self.spec.ca)].filter(x, x).size() == 1";
const EXACTLY_ONE_KIND_MESSAGE: &str = "spec: exactly one of acme, selfSigned or ca must be set";

/// Exactly one of `acme`, `selfSigned` or `ca`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "certpilot.dev",
    version = "v1alpha1",
    kind = "Issuer",
    namespaced,
    status = "IssuerStatus",
    shortname = "cpissuer",
    category = "certpilot",
    doc = "An issuer of certificates for Certificates in its own namespace.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[kube(
    derive = "Default",
    derive = "PartialEq",
    validation = Rule::new(EXACTLY_ONE_KIND).message(EXACTLY_ONE_KIND_MESSAGE)
)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// Issue from an ACME (RFC 8555) certificate authority such as Let's Encrypt or ZeroSSL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeIssuer>,
    /// Sign every certificate with its own key (for tests and bootstrapping private CAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signed: Option<SelfSignedIssuer>,
    /// Sign with a CA certificate and key kept in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaIssuer>,
}

/// The cluster-wide twin of `Issuer`; Secrets it names live in the operator's namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "certpilot.dev",
    version = "v1alpha1",
    kind = "ClusterIssuer",
    status = "IssuerStatus",
    shortname = "cpclusterissuer",
    category = "certpilot",
    doc = "An issuer of certificates for Certificates in every namespace.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[kube(
    derive = "Default",
    derive = "PartialEq",
    validation = Rule::new(EXACTLY_ONE_KIND).message(EXACTLY_ONE_KIND_MESSAGE)
)]
pub struct ClusterIssuerSpec {
    #[serde(flatten)]
    pub issuer: IssuerSpec,
}

/// Self-signed issuance: nothing to configure.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SelfSignedIssuer {}

/// Signing with a CA key pair kept in a Secret (`tls.crt` and `tls.key`, as written by certpilot
/// or `kubectl create secret tls`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaIssuer {
    /// Name of the Secret holding the CA certificate (`tls.crt`) and private key (`tls.key`).
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretName must be a valid Secret name (lowercase letters, digits, '-' and '.')"))]
    pub secret_name: String,
    /// Where certpilot publishes the CA's certificate revocation list (PEM, key `ca.crl`) when
    /// a certificate it signed is revoked (`certpilot revoke`). Optional: the revoked serials
    /// are in the issuer's `status.revoked` either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<CrlTarget>,
}

/// The Secret or ConfigMap (in the issuer's Secret namespace) a CA issuer's CRL is written to.
/// certpilot creates it and writes only one it created.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.configMapName)").message("crl names exactly one of secretName or configMapName"))]
pub struct CrlTarget {
    /// A Secret to hold the CRL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// A ConfigMap to hold the CRL (a CRL is public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map_name: Option<String>,
}

/// The longest list of revoked certificates a CA issuer keeps in its status (expired ones
/// leave it first: RFC 5280 lets a CRL drop them).
pub const REVOKED_MAX: usize = 500;

/// A certificate a CA issuer revoked.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevokedSerial {
    /// Serial number (hex).
    #[schemars(length(max = 128))]
    pub serial_number: String,
    /// The reason (RFC 5280 CRLReason, e.g. `keyCompromise`).
    #[schemars(length(max = 32))]
    pub reason: String,
    /// When it was revoked.
    pub revoked_at: Time,
    /// When the certificate expires (then it leaves the list and the CRL).
    pub not_after: Time,
}

/// An ACME account at a certificate authority, and how to answer its challenges.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AcmeIssuer {
    /// The CA's ACME directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("server must be an https:// URL of an ACME directory (RFC 8555 requires HTTPS; for a private CA, trust its certificate with caBundle)"))]
    pub server: String,
    /// Contact email registered with the account (the CA sends expiry notices there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    #[x_kube(validation = Rule::new(r"self.matches('^[^@\\s:/]+@[^@\\s:/]+\\.[^@\\s:/]+$')").message("email must be an address such as ops@example.com (without mailto:)"))]
    pub email: Option<String>,
    /// Certificate profile to request (e.g. `shortlived`, `tlsserver`), when the CA offers profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Prefer the alternate chain whose topmost issuer has this common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_chain: Option<String>,
    /// PEM bundle of CA certificates to trust for the ACME server's TLS (private ACME servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// External account binding, for CAs that require one (ZeroSSL, Google, many private CAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_account_binding: Option<ExternalAccountBinding>,
    /// Secret holding the account's private key; generated when absent. Defaults to `<issuer>-acme-account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key_secret_ref: Option<SecretKeySelector>,
    /// How to prove control of names; the first solver whose selector matches a name answers it.
    #[serde(default)]
    #[schemars(length(max = 50))]
    pub solvers: Vec<AcmeSolver>,
}

/// A key identifier and HMAC key the CA gave out of band.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAccountBinding {
    /// The key identifier from the CA.
    pub key_id: String,
    /// The base64url HMAC key from the CA, in a Secret.
    pub key_secret_ref: SecretKeySelector,
}

/// One way of answering challenges, optionally limited to some names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.http01), has(self.dns01), has(self.tlsAlpn01), has(self.dnsPersist01)].filter(x, x).size() == 1").message("each solver needs exactly one of http01, dns01, tlsAlpn01 or dnsPersist01"))]
#[x_kube(validation = Rule::new("!has(self.http01) || !has(self.selector) || !has(self.selector.dnsNames) || self.selector.dnsNames.all(n, !n.startsWith('*.'))").message("http01 cannot validate wildcard names: use a dns01 solver for names starting with '*.'"))]
pub struct AcmeSolver {
    /// Which names this solver answers for; without a selector it answers for all names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SolverSelector>,
    /// HTTP-01: the operator serves the token and routes the CA to itself with an Ingress or HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http01: Option<Http01Solver>,
    /// DNS-01: a TXT record at `_acme-challenge.<name>` (the only way to get wildcard names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns01: Option<Dns01Solver>,
    /// TLS-ALPN-01: a special certificate served on port 443 of the operator's solver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_alpn01: Option<TlsAlpn01Solver>,
    /// DNS-PERSIST-01: one TXT record at `_validation-persist.<name>`, published once by the
    /// domain's owner (certpilot never writes it), authorises this issuer's account for every
    /// later issuance, wildcards included. `status.persistRecords` lists what to publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_persist01: Option<DnsPersist01Solver>,
}

/// How many names, and how many zones, one selector lists at most (its `maxItems`).
pub const SELECTOR_MAX_ENTRIES: usize = 50;

/// Names a solver is used for.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SolverSelector {
    /// Exact names this solver answers for (at most 50: for more, select by `dnsZones`, or
    /// split them over several solvers). The limit keeps the lowercase rule within the API
    /// server's CEL cost budget: 50 solvers × 50 names × a regex over 253 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new(r"self.all(n, n.matches('^(\\*\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))").message("selector.dnsNames must be lowercase DNS names, as Certificates name them"))]
    pub dns_names: Option<Vec<String>>,
    /// Zones: a name matches when it is the zone or below it (at most 50, as for `dnsNames`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new(r"self.all(z, z.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))").message("selector.dnsZones must be lowercase zone names such as example.com (no wildcard, no trailing dot)"))]
    pub dns_zones: Option<Vec<String>>,
}

/// How the CA's HTTP request for the token reaches the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Http01Solver {
    /// The class of the Ingress rule that routes the host's challenge path to certpilot (one
    /// per host, kept while a Certificate names the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// Route with a Gateway API HTTPRoute attached to this Gateway (`namespace/name`) instead of an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The operator's Service that receives challenge requests (default `certpilot-solver`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

/// How TXT records are published.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
// One provider: a new provider is one more entry in the list (and in the message).
#[x_kube(validation = Rule::new("[has(self.rfc2136), has(self.powerdns), has(self.webhook), has(self.route53)].filter(x, x).size() == 1").message("dns01 needs exactly one provider to publish the TXT records: set one of rfc2136, powerdns, webhook or route53 (for two providers, use two solvers with selectors)"))]
pub struct Dns01Solver {
    /// RFC 2136 dynamic updates (BIND, Knot, PowerDNS…), signed with TSIG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136Solver>,
    /// The PowerDNS Authoritative Server's HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub powerdns: Option<PowerDnsSolver>,
    /// A web service of the user's that writes the records to any DNS with an API: certpilot
    /// posts `{"fqdn", "value"}` to `<url>/present` and `<url>/cleanup` (lego's `httpreq`
    /// protocol, so servers written for it work as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSolver>,
    /// Amazon Route 53 (or an API compatible with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route53: Option<Route53Solver>,
    /// `Follow`: when `_acme-challenge.<name>` is a CNAME (delegated to a zone this provider
    /// may update), write the record where the chain ends. `None` (default): write it at
    /// `_acme-challenge.<name>` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname_strategy: Option<CnameStrategy>,
}

/// Whether DNS-01 follows a CNAME at the challenge name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum CnameStrategy {
    #[default]
    None,
    Follow,
}

/// A PowerDNS Authoritative Server with its API enabled (`api=yes`, `api-key=…`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PowerDnsSolver {
    /// Base URL of the API, e.g. `http://pdns.dns.svc:8081` (without `/api/v1`).
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("powerdns.url must be an http:// or https:// URL of the PowerDNS API, e.g. http://pdns.dns.svc:8081"))]
    pub url: String,
    /// The server id in the API's paths (`localhost` unless the server says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// The API key (`api-key` in pdns.conf), in a Secret.
    pub api_key_secret_ref: SecretKeySelector,
    /// `host:port` where the server answers DNS, asked whether a record is served before the
    /// CA is (`--dns-check-nameservers` overrides it; with neither, the CA is asked at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
}

/// A webhook speaking lego's `httpreq` protocol (its default mode): `POST <url>/present` and
/// `POST <url>/cleanup` with `{"fqdn": "_acme-challenge.example.com.", "value": "…"}`; any 2xx
/// answer is success, and a repeated call must succeed too.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.basicAuthSecretRef) && has(self.bearerTokenSecretRef))").message("webhook takes one kind of authentication: basicAuthSecretRef or bearerTokenSecretRef, not both"))]
pub struct WebhookSolver {
    /// Base URL of the webhook, e.g. `https://dns-hook.dns.svc:8443/acme` (certpilot appends
    /// `/present` and `/cleanup` to its path).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("webhook.url must be an http:// or https:// URL, e.g. https://dns-hook.dns.svc:8443 (certpilot posts to <url>/present and <url>/cleanup)"))]
    pub url: String,
    /// HTTP basic authentication: a Secret with the keys `username` and `password` (the keys
    /// of a `kubernetes.io/basic-auth` Secret), as lego's `HTTPREQ_USERNAME`/`HTTPREQ_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_secret_ref: Option<LocalSecretReference>,
    /// `Authorization: Bearer <token>`, the token in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeySelector>,
    /// PEM bundle of CA certificates to trust for the webhook's TLS, instead of the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// How long one call may take, connecting included (Go duration, 1s to 2m; default 30s,
    /// as lego's `HTTPREQ_HTTP_TIMEOUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(r"self.matches('^([0-9]{1,5}(\\.[0-9]{1,9})?h)?([0-9]{1,6}(\\.[0-9]{1,9})?m)?([0-9]{1,6}(\\.[0-9]{1,9})?s)?([0-9]{1,6}(ms|us|ns))?$') && self.size() > 1 && duration(self) >= duration('1s') && duration(self) <= duration('2m')").message("webhook.timeout must be a Go duration from 1s to 2m, e.g. 30s"))]
    pub timeout: Option<String>,
    /// `host:port` where the zone's DNS answers, asked whether a record is served before the
    /// CA is (`--dns-check-nameservers` overrides it; with neither, the CA is asked at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<String>,
}

/// Amazon Route 53, its fields spelt as cert-manager's. Without keys, certpilot uses its own AWS
/// identity (ambient credentials: IRSA, EKS Pod Identity, environment), for ClusterIssuers, and
/// for Issuers only when it runs with `--issuer-ambient-credentials`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.accessKeyID) && has(self.accessKeyIDSecretRef))").message("route53 takes the access key id inline (accessKeyID) or from a Secret (accessKeyIDSecretRef), not both"))]
#[x_kube(validation = Rule::new("(has(self.accessKeyID) || has(self.accessKeyIDSecretRef)) == has(self.secretAccessKeySecretRef)").message("route53 keys come in pairs: an access key id (accessKeyID or accessKeyIDSecretRef) with secretAccessKeySecretRef, or neither for ambient credentials"))]
pub struct Route53Solver {
    /// The AWS region requests are signed for and STS is asked in (Route 53 itself is global):
    /// the operator's `AWS_REGION` when unset, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The hosted zone to write to (`Z…`). When unset, the public hosted zone with the longest
    /// name that holds the record (private zones are used only when named here).
    #[serde(default, rename = "hostedZoneID", skip_serializing_if = "Option::is_none")]
    pub hosted_zone_id: Option<String>,
    /// The access key id, inline (it is not secret on its own).
    #[serde(default, rename = "accessKeyID", skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// The access key id, in a Secret.
    #[serde(default, rename = "accessKeyIDSecretRef", skip_serializing_if = "Option::is_none")]
    pub access_key_id_secret_ref: Option<SecretKeySelector>,
    /// The secret access key, in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret_ref: Option<SecretKeySelector>,
    /// An IAM role ARN to assume (STS AssumeRole) with the keys or the ambient credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Base URL of a Route 53 API other than AWS's (an AWS-compatible service, a test server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("route53.endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
}

/// An authoritative server that accepts signed dynamic updates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rfc2136Solver {
    /// `host:port` of the authoritative server (port 53 when omitted).
    pub nameserver: String,
    /// TSIG key name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_key_name: Option<String>,
    /// TSIG algorithm: `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['hmac-sha256', 'hmac-sha384', 'hmac-sha512']").message("tsigAlgorithm must be hmac-sha256, hmac-sha384 or hmac-sha512 (the algorithms certpilot signs with)"))]
    pub tsig_algorithm: Option<String>,
    /// The base64 TSIG secret, in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_secret_ref: Option<SecretKeySelector>,
}

/// DNS-PERSIST-01: nothing is written (no DNS credentials); the record is checked before the
/// CA is asked, so that a missing or wrong record fails with the exact record to publish.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsPersist01Solver {
    /// Put `persistUntil=<this time>` in the records `status.persistRecords` suggests (the CA
    /// stops accepting a record after it; certpilot warns when it lapses before the
    /// certificate being issued expires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_until: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// `host:port` of servers asked for the record before the CA is (else
    /// `--dns-check-nameservers`; with neither, the CA is asked without a check).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub nameservers: Vec<String>,
    /// For owners who would rather not publish the record by hand: certpilot publishes it
    /// itself, once, with this RFC 2136 server's signed updates, when the look-up finds no
    /// record that would do. Later issuances find it there and write nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136Solver>,
}

/// TLS-ALPN-01 needs no settings: the operator's solver serves the validation certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TlsAlpn01Solver {}

/// What the issuer controller found.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    /// `Ready` says whether certificates can be issued, and if not, why and what to do.
    #[serde(default)]
    #[schemars(transform = super::conditions::list_map_by_type)]
    pub conditions: Vec<Condition>,
    /// The ACME account URL, once registered.
    #[serde(default, rename = "accountURI", skip_serializing_if = "Option::is_none")]
    pub account_uri: Option<String>,
    /// For `ca` issuers: the CA certificate's subject and expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaStatus>,
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ClusterIssuers: the cluster resource namespace of the certpilot whose view this status
    /// is, where the Secrets it names were looked up. With several certpilots installed (one per
    /// namespace, say), each uses the ClusterIssuer with its own Secrets; one writes the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_resource_namespace: Option<String>,
    /// The CA's issuer domain names (`meta.caaIdentities` of its directory), read when a
    /// solver uses dnsPersist01: DNS-PERSIST-01 records must name one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuer_domain_names: Vec<String>,
    /// For dnsPersist01 solvers: the TXT records to publish, exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persist_records: Vec<PersistRecord>,
    /// For `ca` issuers: the certificates revoked with certpilot, until they expire (at most
    /// 500). Written by Revoke attempts only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = REVOKED_MAX))]
    pub revoked: Vec<RevokedSerial>,
    /// For `ca` issuers: the number of the latest CRL published (RFC 5280 cRLNumber).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_number: Option<i64>,
}

/// A DNS-PERSIST-01 record the domain's owner publishes for this issuer's account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistRecord {
    /// The name or zone of the solver's selector it is for; `*`: any name the solver answers.
    pub name: String,
    /// Where to publish it: `_validation-persist.<name>` (for a wildcard, its base name).
    pub record_name: String,
    /// The TXT value.
    pub value: String,
    /// The TXT value that also authorises wildcard names (`policy=wildcard`).
    pub wildcard_value: String,
}

/// The signing CA of a `ca` issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaStatus {
    /// Subject of the CA certificate.
    pub subject: String,
    /// When the CA certificate expires (certificates it signs never outlive it).
    pub not_after: String,
    /// The names and address ranges the CA may issue for (its name constraints; none: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permitted_names: Vec<String>,
    /// The names and address ranges the CA may not issue for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_names: Vec<String>,
}
