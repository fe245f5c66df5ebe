//! The Ingress and Gateway shim, decided: which Certificates an annotated Ingress or Gateway
//! asks for, what in it cannot be used, and what to do about the Certificates that exist. No
//! I/O: `controller::shim` reads the objects and carries the decisions out.
//!
//! An Ingress asks for one Certificate per `spec.tls[]` Secret, covering the entry's hosts; a
//! Gateway for one per Secret its TLS-terminating listeners name, covering their hostnames.
//! The Certificate is named after the Secret, in the owner's namespace.

use crate::api::{
    IssuerKind, IssuerRef, SHIM_LABEL,
    certificate::{Certificate, CertificateSpec, is_dns_name},
    gateway::Gateway,
};
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use std::{collections::BTreeMap, fmt};

/// certpilot's annotation naming a ClusterIssuer.
pub const CLUSTER_ISSUER_ANNOTATION: &str = "certpilot.dev/cluster-issuer";
/// certpilot's annotation naming an Issuer in the owner's namespace.
pub const ISSUER_ANNOTATION: &str = "certpilot.dev/issuer";
/// The Certificates' `duration` (a Go duration).
pub const DURATION_ANNOTATION: &str = "certpilot.dev/duration";
/// The Certificates' `renewBefore` (a Go duration).
pub const RENEW_BEFORE_ANNOTATION: &str = "certpilot.dev/renew-before";
/// The Certificates' `commonName`.
pub const COMMON_NAME_ANNOTATION: &str = "certpilot.dev/common-name";
/// cert-manager's annotations, honoured with `--accept-cert-manager-annotations`.
pub const CM_CLUSTER_ISSUER_ANNOTATION: &str = "cert-manager.io/cluster-issuer";
pub const CM_ISSUER_ANNOTATION: &str = "cert-manager.io/issuer";
pub const CM_ISSUER_KIND_ANNOTATION: &str = "cert-manager.io/issuer-kind";
pub const CM_ISSUER_GROUP_ANNOTATION: &str = "cert-manager.io/issuer-group";
pub const CM_DURATION_ANNOTATION: &str = "cert-manager.io/duration";
pub const CM_RENEW_BEFORE_ANNOTATION: &str = "cert-manager.io/renew-before";
pub const CM_COMMON_NAME_ANNOTATION: &str = "cert-manager.io/common-name";

/// Issuer groups that `cert-manager.io/issuer-group` may name: cert-manager's own issuers
/// become certpilot's when migrating.
const ACCEPTED_ISSUER_GROUPS: [&str; 2] = ["cert-manager.io", "certpilot.dev"];
/// The most names a Certificate may list (its CRD's limit).
const MAX_NAMES: usize = 100;
/// The longest common name (its CRD's limit).
const MAX_COMMON_NAME: usize = 64;
/// The shortest certificate lifetime a Certificate accepts.
const MIN_DURATION: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);
/// The longest a Certificate's durations may be written as (99999h).
const MAX_DURATION: jiff::SignedDuration = jiff::SignedDuration::from_hours(99_999);
/// What `renewBefore` must leave of `duration`.
const MIN_RENEWAL_GAP: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// How the shim reads annotations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Honour cert-manager's annotations too (certpilot's own win where both are set).
    pub accept_cert_manager: bool,
}

/// The kind of object a shim Certificate is made for (the value of its [`SHIM_LABEL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Ingress,
    Gateway,
}

impl Source {
    pub fn label_value(self) -> &'static str {
        match self {
            Source::Ingress => "Ingress",
            Source::Gateway => "Gateway",
        }
    }
}

/// A Certificate the owner asks for: its name (that of its Secret) and the spec the shim sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub name: String,
    pub spec: CertificateSpec,
}

/// What the owner asks of the shim.
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// No issuer annotation: no Certificates (those the shim made for it earlier go).
    Nothing,
    /// Annotated, but the annotations cannot be used: nothing changes until they are fixed.
    Unclear,
    /// These Certificates; `kept` names Secrets the owner still uses but in a way the shim
    /// cannot make a Certificate of (e.g. no host names): an earlier Certificate stays.
    Certificates { desired: Vec<Desired>, kept: Vec<String> },
}

/// The owner's intent and everything in it the shim could not use.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub intent: Intent,
    pub problems: Vec<Problem>,
}

impl Plan {
    fn nothing() -> Self {
        Self { intent: Intent::Nothing, problems: Vec::new() }
    }

    /// The names of the Certificates that must not be deleted: wanted or kept. `None` when
    /// nothing may be deleted at all (the intent is unclear).
    fn keeps(&self) -> Option<Vec<&str>> {
        match &self.intent {
            Intent::Nothing => Some(Vec::new()),
            Intent::Unclear => None,
            Intent::Certificates { desired, kept } => {
                Some(desired.iter().map(|d| d.name.as_str()).chain(kept.iter().map(String::as_str)).collect())
            }
        }
    }
}

/// Why an annotation's value cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnotationProblem {
    /// Empty, or longer than an object name may be.
    BadIssuerName,
    /// Not a Go duration such as `2160h` or `1h30m`.
    NotADuration,
    /// A certificate lifetime under a minute.
    DurationTooShort,
    /// Over 99999 hours.
    DurationTooLong,
    /// Zero or negative.
    RenewBeforeNotPositive,
    /// Leaves less than 30 seconds of the duration.
    RenewBeforeNotWithinDuration,
    /// Over 64 characters.
    CommonNameTooLong,
    /// Contains control characters.
    ControlCharacters,
}

impl fmt::Display for AnnotationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadIssuerName => "an issuer name must be 1 to 253 characters",
            Self::NotADuration => "it is not a duration such as 2160h or 1h30m",
            Self::DurationTooShort => "a certificate must last at least 1m",
            Self::DurationTooLong => "durations are at most 99999h",
            Self::RenewBeforeNotPositive => "renew-before must be longer than zero",
            Self::RenewBeforeNotWithinDuration => "renew-before must be at least 30s shorter than the duration",
            Self::CommonNameTooLong => "a common name is at most 64 characters",
            Self::ControlCharacters => "it contains control characters",
        })
    }
}

/// Something in an Ingress or Gateway the shim cannot act on; shown as a Warning Event on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Both a ClusterIssuer and an Issuer annotation (of the same family).
    BothIssuers { cluster_issuer: &'static str, issuer: &'static str },
    /// An annotation whose value cannot be used.
    BadAnnotation { annotation: &'static str, value: String, why: AnnotationProblem },
    /// `cert-manager.io/issuer-kind` names something other than Issuer or ClusterIssuer.
    UnsupportedIssuerKind { kind: String },
    /// `cert-manager.io/issuer-group` names an external issuer's group.
    UnsupportedIssuerGroup { group: String },
    /// An Ingress TLS entry without `secretName`.
    TlsWithoutSecretName { hosts: Vec<String> },
    /// An Ingress TLS entry without hosts.
    TlsWithoutHosts { secret_name: String },
    /// A Secret name that cannot name a Certificate.
    BadSecretName { secret_name: String },
    /// A host name that is not a DNS name (after lowercasing).
    BadHostname { secret_name: String, hostname: String },
    /// More names for one Secret than a Certificate may list.
    TooManyNames { secret_name: String, count: usize },
    /// A TLS listener without `hostname`: nothing says which names its certificate needs.
    ListenerWithoutHostname { listener: String, secret_name: String },
    /// A certificate reference to something other than a Secret.
    NotASecret { listener: String, group: String, kind: String, name: String },
    /// A certificate reference to a Secret in another namespace.
    OtherNamespace { listener: String, namespace: String, name: String },
    /// A Certificate of the wanted name exists and the shim did not make it for this owner:
    /// it is left alone. `controller` names its controlling owner (`Kind/name`), if any.
    CertificateExists { name: String, controller: Option<String> },
}

impl Problem {
    /// A short CamelCase reason, for Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BothIssuers { .. }
            | Self::BadAnnotation { .. }
            | Self::UnsupportedIssuerKind { .. }
            | Self::UnsupportedIssuerGroup { .. } => "BadAnnotation",
            Self::TlsWithoutSecretName { .. }
            | Self::TlsWithoutHosts { .. }
            | Self::BadSecretName { .. }
            | Self::BadHostname { .. }
            | Self::TooManyNames { .. } => "BadTLSEntry",
            Self::ListenerWithoutHostname { .. } | Self::NotASecret { .. } | Self::OtherNamespace { .. } => {
                "BadListener"
            }
            Self::CertificateExists { .. } => "CertificateConflict",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BothIssuers { cluster_issuer, issuer } => {
                write!(f, "both {cluster_issuer} and {issuer} are set; keep one: no Certificate is changed until then")
            }
            Self::BadAnnotation { annotation, value, why } => {
                write!(
                    f,
                    "annotation {annotation}: {value:?} cannot be used ({why}); no Certificate is changed until it is fixed"
                )
            }
            Self::UnsupportedIssuerKind { kind } => write!(
                f,
                "{CM_ISSUER_KIND_ANNOTATION} is {kind:?}; certpilot signs with an Issuer or a ClusterIssuer only; no Certificate is changed"
            ),
            Self::UnsupportedIssuerGroup { group } => write!(
                f,
                "{CM_ISSUER_GROUP_ANNOTATION} is {group:?}, an external issuer certpilot cannot use; no Certificate is changed"
            ),
            Self::TlsWithoutSecretName { hosts } => {
                write!(f, "a TLS entry for [{}] has no secretName: no Certificate for it", hosts.join(", "))
            }
            Self::TlsWithoutHosts { secret_name } => {
                write!(f, "the TLS entry of Secret {secret_name} lists no hosts: no Certificate for it")
            }
            Self::BadSecretName { secret_name } => {
                write!(f, "{secret_name:?} cannot name a Certificate (not a lowercase DNS subdomain)")
            }
            Self::BadHostname { secret_name, hostname } => {
                write!(f, "host {hostname:?} (Secret {secret_name}) is not a DNS name; the Certificate leaves it out")
            }
            Self::TooManyNames { secret_name, count } => write!(
                f,
                "Secret {secret_name} would need a certificate for {count} names, more than {MAX_NAMES}: no Certificate for it"
            ),
            Self::ListenerWithoutHostname { listener, secret_name } => write!(
                f,
                "listener {listener} (Secret {secret_name}) has no hostname, so nothing says which names the certificate needs; set its hostname"
            ),
            Self::NotASecret { listener, group, kind, name } => {
                let kind = if group.is_empty() { kind.clone() } else { format!("{kind}.{group}") };
                write!(f, "listener {listener} refers to {kind} {name}, not a Secret: no Certificate for it")
            }
            Self::OtherNamespace { listener, namespace, name } => write!(
                f,
                "listener {listener} refers to Secret {name} in namespace {namespace}; certpilot makes Certificates in the Gateway's namespace only"
            ),
            Self::CertificateExists { name, controller: None } => write!(
                f,
                "Certificate {name} exists and was not made from this object: certpilot leaves it alone; delete it or rename the Secret to let certpilot manage it"
            ),
            Self::CertificateExists { name, controller: Some(owner) } => write!(
                f,
                "Certificate {name} exists and belongs to {owner}: certpilot leaves it alone; give one of them another Secret name"
            ),
        }
    }
}

/// The Certificate settings an owner's annotations ask for.
#[derive(Clone, Debug, PartialEq)]
struct Requested {
    issuer_ref: IssuerRef,
    duration: Option<String>,
    renew_before: Option<String>,
    common_name: Option<String>,
}

/// The value of the first annotation set: certpilot's own, then (if accepted) cert-manager's.
fn pick<'a>(
    annotations: &'a BTreeMap<String, String>,
    options: Options,
    own: &'static str,
    cert_manager: &'static str,
) -> Option<(&'static str, &'a str)> {
    let get = |key: &'static str| annotations.get(key).map(|value| (key, value.trim()));
    get(own).or_else(|| options.accept_cert_manager.then(|| get(cert_manager)).flatten())
}

/// The issuer the annotations name; `None` when they name none (the owner is not the shim's).
fn issuer(annotations: &BTreeMap<String, String>, options: Options) -> Result<Option<IssuerRef>, Problem> {
    let named = |annotation: &'static str, kind: IssuerKind, name: &str| {
        if name.is_empty() || name.len() > 253 {
            let why = AnnotationProblem::BadIssuerName;
            return Err(Problem::BadAnnotation { annotation, value: name.into(), why });
        }
        Ok(Some(IssuerRef { kind, name: name.into() }))
    };
    let family = |cluster: &'static str, namespaced: &'static str| {
        (annotations.get(cluster).map(|v| v.trim()), annotations.get(namespaced).map(|v| v.trim()))
    };
    match family(CLUSTER_ISSUER_ANNOTATION, ISSUER_ANNOTATION) {
        (Some(_), Some(_)) => {
            return Err(Problem::BothIssuers { cluster_issuer: CLUSTER_ISSUER_ANNOTATION, issuer: ISSUER_ANNOTATION });
        }
        (Some(name), None) => return named(CLUSTER_ISSUER_ANNOTATION, IssuerKind::ClusterIssuer, name),
        (None, Some(name)) => return named(ISSUER_ANNOTATION, IssuerKind::Issuer, name),
        (None, None) if !options.accept_cert_manager => return Ok(None),
        (None, None) => {}
    }
    match family(CM_CLUSTER_ISSUER_ANNOTATION, CM_ISSUER_ANNOTATION) {
        (Some(_), Some(_)) => {
            Err(Problem::BothIssuers { cluster_issuer: CM_CLUSTER_ISSUER_ANNOTATION, issuer: CM_ISSUER_ANNOTATION })
        }
        (Some(name), None) => named(CM_CLUSTER_ISSUER_ANNOTATION, IssuerKind::ClusterIssuer, name),
        (None, Some(name)) => {
            let group = annotations.get(CM_ISSUER_GROUP_ANNOTATION).map(|g| g.trim()).unwrap_or_default();
            if !group.is_empty() && !ACCEPTED_ISSUER_GROUPS.contains(&group) {
                return Err(Problem::UnsupportedIssuerGroup { group: group.into() });
            }
            let kind = match annotations.get(CM_ISSUER_KIND_ANNOTATION).map(|k| k.trim()).unwrap_or_default() {
                "" | "Issuer" => IssuerKind::Issuer,
                "ClusterIssuer" => IssuerKind::ClusterIssuer,
                other => return Err(Problem::UnsupportedIssuerKind { kind: other.into() }),
            };
            named(CM_ISSUER_ANNOTATION, kind, name)
        }
        (None, None) => Ok(None),
    }
}

/// A duration annotation as the CRD writes durations (`2160h`, `1h30m`), and its length.
fn duration(annotation: &'static str, value: &str) -> Result<(String, jiff::SignedDuration), Problem> {
    let bad = |why| Problem::BadAnnotation { annotation, value: value.into(), why };
    let parsed = super::parse_duration(value).ok_or_else(|| bad(AnnotationProblem::NotADuration))?;
    if parsed > MAX_DURATION {
        return Err(bad(AnnotationProblem::DurationTooLong));
    }
    Ok((go_duration(parsed), parsed))
}

/// `d` in whole seconds as hours, minutes and seconds, leaving out what is zero.
fn go_duration(d: jiff::SignedDuration) -> String {
    let seconds = d.as_secs().max(0);
    let (hours, minutes, seconds) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut text = String::new();
    for (value, unit) in [(hours, 'h'), (minutes, 'm'), (seconds, 's')] {
        if value > 0 {
            text.push_str(&format!("{value}{unit}"));
        }
    }
    if text.is_empty() { "0s".into() } else { text }
}

/// What the annotations ask for: `Ok(None)` when they name no issuer.
fn requested(annotations: &BTreeMap<String, String>, options: Options) -> Result<Option<Requested>, Vec<Problem>> {
    let mut problems = Vec::new();
    let issuer_ref = match issuer(annotations, options) {
        Ok(None) => return Ok(None),
        Ok(Some(issuer_ref)) => Some(issuer_ref),
        Err(problem) => {
            problems.push(problem);
            None
        }
    };
    let mut parse = |own, cert_manager| {
        let (annotation, value) = pick(annotations, options, own, cert_manager)?;
        duration(annotation, value).map_err(|p| problems.push(p)).ok().map(|(text, d)| (annotation, value, text, d))
    };
    let lifetime = parse(DURATION_ANNOTATION, CM_DURATION_ANNOTATION);
    let renew_before = parse(RENEW_BEFORE_ANNOTATION, CM_RENEW_BEFORE_ANNOTATION);
    if let Some((annotation, value, _, d)) = &lifetime
        && *d < MIN_DURATION
    {
        let why = AnnotationProblem::DurationTooShort;
        problems.push(Problem::BadAnnotation { annotation, value: value.to_string(), why });
    }
    if let Some((annotation, value, _, before)) = &renew_before {
        let why = if before.is_zero() || before.is_negative() {
            Some(AnnotationProblem::RenewBeforeNotPositive)
        } else {
            let short = lifetime.as_ref().is_some_and(|(_, _, _, d)| *d - *before < MIN_RENEWAL_GAP);
            short.then_some(AnnotationProblem::RenewBeforeNotWithinDuration)
        };
        if let Some(why) = why {
            problems.push(Problem::BadAnnotation { annotation, value: value.to_string(), why });
        }
    }
    let common_name = pick(annotations, options, COMMON_NAME_ANNOTATION, CM_COMMON_NAME_ANNOTATION)
        .filter(|(_, value)| !value.is_empty());
    if let Some((annotation, value)) = common_name {
        let why = if value.chars().any(char::is_control) {
            Some(AnnotationProblem::ControlCharacters)
        } else {
            (value.chars().count() > MAX_COMMON_NAME).then_some(AnnotationProblem::CommonNameTooLong)
        };
        if let Some(why) = why {
            problems.push(Problem::BadAnnotation { annotation, value: value.into(), why });
        }
    }
    match issuer_ref {
        Some(issuer_ref) if problems.is_empty() => Ok(Some(Requested {
            issuer_ref,
            duration: lifetime.map(|(_, _, text, _)| text),
            renew_before: renew_before.map(|(_, _, text, _)| text),
            common_name: common_name.map(|(_, value)| value.to_string()),
        })),
        _ => Err(problems),
    }
}

/// Whether `name` can name a Certificate (and a Secret): a lowercase DNS subdomain.
fn is_object_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (1..=253).contains(&name.len()) && name.split('.').all(label)
}

/// The names wanted per Secret, in the order the owner first names each.
#[derive(Default)]
struct Wanted(Vec<(String, Vec<String>)>);

impl Wanted {
    fn add(&mut self, secret_name: &str, names: impl IntoIterator<Item = String>) {
        let index = match self.0.iter().position(|(s, _)| s == secret_name) {
            Some(index) => index,
            None => {
                self.0.push((secret_name.to_string(), Vec::new()));
                self.0.len() - 1
            }
        };
        self.0[index].1.extend(names);
    }

    /// The Certificates, with what makes a Secret's names unusable added to `problems`.
    fn plan(self, requested: Requested, mut problems: Vec<Problem>) -> Plan {
        let mut desired = Vec::new();
        let mut kept = Vec::new();
        for (secret_name, hosts) in self.0 {
            if !is_object_name(&secret_name) {
                problems.push(Problem::BadSecretName { secret_name });
                continue;
            }
            let mut names: Vec<String> = Vec::new();
            for host in hosts {
                let name = host.trim().to_ascii_lowercase();
                if !is_dns_name(&name) {
                    problems.push(Problem::BadHostname { secret_name: secret_name.clone(), hostname: host });
                } else if !names.contains(&name) {
                    names.push(name);
                }
            }
            if names.len() > MAX_NAMES {
                problems.push(Problem::TooManyNames { secret_name: secret_name.clone(), count: names.len() });
                names.clear();
            }
            if names.is_empty() {
                kept.push(secret_name);
                continue;
            }
            let spec = CertificateSpec {
                secret_name: secret_name.clone(),
                dns_names: Some(names),
                common_name: requested.common_name.clone(),
                issuer_ref: requested.issuer_ref.clone(),
                duration: requested.duration.clone(),
                renew_before: requested.renew_before.clone(),
                ..Default::default()
            };
            desired.push(Desired { name: secret_name, spec });
        }
        Plan { intent: Intent::Certificates { desired, kept }, problems }
    }
}

/// What the annotations ask for, or the plan that ends the shim's part early.
fn start(annotations: &BTreeMap<String, String>, options: Options) -> Result<Requested, Plan> {
    match requested(annotations, options) {
        Ok(Some(requested)) => Ok(requested),
        Ok(None) => Err(Plan::nothing()),
        Err(problems) => Err(Plan { intent: Intent::Unclear, problems }),
    }
}

/// The Certificates an Ingress asks for: one per `spec.tls[].secretName`, for its hosts.
pub fn ingress_plan(ingress: &Ingress, options: Options) -> Plan {
    let requested = match start(ingress.annotations(), options) {
        Ok(requested) => requested,
        Err(plan) => return plan,
    };
    let mut problems = Vec::new();
    let mut wanted = Wanted::default();
    for tls in ingress.spec.as_ref().and_then(|s| s.tls.as_ref()).into_iter().flatten() {
        let hosts = tls.hosts.clone().unwrap_or_default();
        let Some(secret_name) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            problems.push(Problem::TlsWithoutSecretName { hosts });
            continue;
        };
        if hosts.is_empty() {
            problems.push(Problem::TlsWithoutHosts { secret_name: secret_name.into() });
        }
        wanted.add(secret_name, hosts);
    }
    wanted.plan(requested, problems)
}

/// The Certificates a Gateway asks for: one per Secret its TLS-terminating listeners name,
/// for their hostnames.
pub fn gateway_plan(gateway: &Gateway, options: Options) -> Plan {
    let requested = match start(gateway.annotations(), options) {
        Ok(requested) => requested,
        Err(plan) => return plan,
    };
    let namespace = gateway.namespace().unwrap_or_default();
    let mut problems = Vec::new();
    let mut wanted = Wanted::default();
    for listener in &gateway.spec.listeners {
        let Some(tls) = listener.tls.as_ref().filter(|tls| tls.terminates()) else { continue };
        for reference in &tls.certificate_refs {
            if !reference.is_secret() {
                problems.push(Problem::NotASecret {
                    listener: listener.name.clone(),
                    group: reference.group.clone().unwrap_or_default(),
                    kind: reference.kind.clone().unwrap_or_default(),
                    name: reference.name.clone(),
                });
                continue;
            }
            if let Some(other) = reference.namespace.as_deref().filter(|ns| !ns.is_empty() && *ns != namespace) {
                problems.push(Problem::OtherNamespace {
                    listener: listener.name.clone(),
                    namespace: other.into(),
                    name: reference.name.clone(),
                });
                continue;
            }
            let hostname = listener.hostname.clone().filter(|h| !h.is_empty());
            if hostname.is_none() {
                problems.push(Problem::ListenerWithoutHostname {
                    listener: listener.name.clone(),
                    secret_name: reference.name.clone(),
                });
            }
            wanted.add(&reference.name, hostname);
        }
    }
    wanted.plan(requested, problems)
}

/// Whether the shim made `certificate` for the owner of uid `owner_uid`: it carries the shim's
/// label and its controller owner reference names that owner. Nothing else is ever changed.
pub fn is_ours(certificate: &Certificate, owner_uid: &str) -> bool {
    certificate.labels().contains_key(SHIM_LABEL)
        && certificate.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == owner_uid)
}

/// What to do for one wanted Certificate, given the one of its name that exists.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// None exists: create it.
    Create,
    /// The shim's own, out of date: apply the wanted spec.
    Update,
    /// The shim's own, as wanted.
    UpToDate,
    /// Someone else's: leave it alone and say so.
    Conflict(Problem),
}

/// The fields of a Certificate's spec that the shim sets.
fn shim_fields(spec: &CertificateSpec) -> CertificateSpec {
    CertificateSpec {
        secret_name: spec.secret_name.clone(),
        dns_names: spec.dns_names.clone(),
        common_name: spec.common_name.clone(),
        issuer_ref: spec.issuer_ref.clone(),
        duration: spec.duration.clone(),
        renew_before: spec.renew_before.clone(),
        ..Default::default()
    }
}

/// What to do for `desired`, given `existing`, the Certificate of that name if there is one.
pub fn step(desired: &Desired, existing: Option<&Certificate>, owner_uid: &str) -> Step {
    let Some(existing) = existing else { return Step::Create };
    if !is_ours(existing, owner_uid) {
        let controller = existing
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.name));
        return Step::Conflict(Problem::CertificateExists { name: desired.name.clone(), controller });
    }
    if shim_fields(&existing.spec) == desired.spec { Step::UpToDate } else { Step::Update }
}

/// Of the Certificates the shim made for this owner (`ours`), the ones to delete: those it no
/// longer asks for. None while its intent is unclear.
pub fn stale<'a>(plan: &Plan, ours: &[&'a Certificate]) -> Vec<&'a Certificate> {
    let Some(keeps) = plan.keeps() else { return Vec::new() };
    ours.iter().filter(|c| !keeps.contains(&c.name_any().as_str())).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::gateway::{GatewaySpec, GatewayTlsConfig, Listener, SecretObjectReference};
    use k8s_openapi::{
        api::networking::v1::{IngressSpec, IngressTLS},
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    };

    const CM: Options = Options { accept_cert_manager: true };
    const OWN: Options = Options { accept_cert_manager: false };

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn ingress(pairs: &[(&str, &str)], tls: &[(Option<&str>, &[&str])]) -> Ingress {
        let tls = tls
            .iter()
            .map(|(secret, hosts)| IngressTLS {
                secret_name: secret.map(String::from),
                hosts: (!hosts.is_empty()).then(|| hosts.iter().map(|h| h.to_string()).collect()),
            })
            .collect();
        Ingress {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                annotations: Some(annotations(pairs)),
                ..Default::default()
            },
            spec: Some(IngressSpec { tls: Some(tls), ..Default::default() }),
            ..Default::default()
        }
    }

    fn cluster_issuer(name: &str) -> IssuerRef {
        IssuerRef { kind: IssuerKind::ClusterIssuer, name: name.into() }
    }

    fn desired(name: &str, names: &[&str], issuer_ref: IssuerRef) -> Desired {
        let spec = CertificateSpec {
            secret_name: name.into(),
            dns_names: Some(names.iter().map(|n| n.to_string()).collect()),
            issuer_ref,
            ..Default::default()
        };
        Desired { name: name.into(), spec }
    }

    fn certificates(plan: &Plan) -> (&[Desired], &[String]) {
        match &plan.intent {
            Intent::Certificates { desired, kept } => (desired, kept),
            other => panic!("expected Certificates, got {other:?}"),
        }
    }

    #[test]
    fn an_annotated_ingress_asks_for_a_certificate_per_secret() {
        let ing = ingress(
            &[(CLUSTER_ISSUER_ANNOTATION, "letsencrypt")],
            &[(Some("web-tls"), &["Web.Example.com", "www.example.com"]), (Some("api-tls"), &["api.example.com"])],
        );
        let plan = ingress_plan(&ing, OWN);
        assert_eq!(plan.problems, []);
        let (desired_, kept) = certificates(&plan);
        assert_eq!(
            desired_,
            [
                desired("web-tls", &["web.example.com", "www.example.com"], cluster_issuer("letsencrypt")),
                desired("api-tls", &["api.example.com"], cluster_issuer("letsencrypt")),
            ]
        );
        assert!(kept.is_empty());
    }

    #[test]
    fn an_issuer_annotation_names_an_issuer_in_the_namespace() {
        let plan = ingress_plan(&ingress(&[(ISSUER_ANNOTATION, " local ")], &[(Some("a"), &["a.example"])]), OWN);
        let (desired_, _) = certificates(&plan);
        assert_eq!(desired_[0].spec.issuer_ref, IssuerRef { kind: IssuerKind::Issuer, name: "local".into() });
    }

    #[test]
    fn without_an_issuer_annotation_the_shim_wants_nothing() {
        let plan = ingress_plan(&ingress(&[("other", "x")], &[(Some("a"), &["a.example"])]), OWN);
        assert_eq!(plan, Plan::nothing());
        let no_metadata = Ingress::default();
        assert_eq!(ingress_plan(&no_metadata, CM), Plan::nothing());
    }

    #[test]
    fn cert_manager_annotations_count_only_when_accepted() {
        let ing = ingress(&[(CM_CLUSTER_ISSUER_ANNOTATION, "le")], &[(Some("a"), &["a.example"])]);
        assert_eq!(ingress_plan(&ing, OWN), Plan::nothing());
        let plan = ingress_plan(&ing, CM);
        assert_eq!(certificates(&plan).0[0].spec.issuer_ref, cluster_issuer("le"));
    }

    #[test]
    fn certpilots_own_annotations_win_over_cert_managers() {
        let ing = ingress(
            &[
                (CM_ISSUER_ANNOTATION, "cm"),
                (CM_CLUSTER_ISSUER_ANNOTATION, "cm-too"),
                (CLUSTER_ISSUER_ANNOTATION, "mine"),
                (CM_DURATION_ANNOTATION, "1h"),
                (DURATION_ANNOTATION, "2h"),
                (CM_RENEW_BEFORE_ANNOTATION, "30m"),
            ],
            &[(Some("a"), &["a.example"])],
        );
        let plan = ingress_plan(&ing, CM);
        assert_eq!(plan.problems, []);
        let spec = &certificates(&plan).0[0].spec;
        assert_eq!(spec.issuer_ref, cluster_issuer("mine"));
        assert_eq!(spec.duration.as_deref(), Some("2h"));
        assert_eq!(spec.renew_before.as_deref(), Some("30m"), "a setting certpilot's annotations leave out");
    }

    #[test]
    fn cert_managers_issuer_kind_and_group() {
        let plan = |pairs: &[(&str, &str)]| ingress_plan(&ingress(pairs, &[(Some("a"), &["a.example"])]), CM);
        let kind_of = |plan: Plan| certificates(&plan).0[0].spec.issuer_ref.kind;
        assert_eq!(kind_of(plan(&[(CM_ISSUER_ANNOTATION, "x")])), IssuerKind::Issuer);
        let cluster = [(CM_ISSUER_ANNOTATION, "x"), (CM_ISSUER_KIND_ANNOTATION, "ClusterIssuer")];
        assert_eq!(kind_of(plan(&cluster)), IssuerKind::ClusterIssuer);
        let grouped = [(CM_ISSUER_ANNOTATION, "x"), (CM_ISSUER_GROUP_ANNOTATION, "cert-manager.io")];
        assert_eq!(kind_of(plan(&grouped)), IssuerKind::Issuer);
        let external = plan(&[(CM_ISSUER_ANNOTATION, "x"), (CM_ISSUER_KIND_ANNOTATION, "AWSPCAIssuer")]);
        assert_eq!(external.intent, Intent::Unclear);
        assert_eq!(external.problems, [Problem::UnsupportedIssuerKind { kind: "AWSPCAIssuer".into() }]);
        let external = plan(&[(CM_ISSUER_ANNOTATION, "x"), (CM_ISSUER_GROUP_ANNOTATION, "awspca.cert-manager.io")]);
        assert_eq!(external.problems, [Problem::UnsupportedIssuerGroup { group: "awspca.cert-manager.io".into() }]);
    }

    #[test]
    fn two_issuers_or_an_empty_name_change_nothing() {
        let both = ingress(&[(CLUSTER_ISSUER_ANNOTATION, "a"), (ISSUER_ANNOTATION, "b")], &[(Some("a"), &["a.x"])]);
        let plan = ingress_plan(&both, OWN);
        assert_eq!(plan.intent, Intent::Unclear);
        assert_eq!(
            plan.problems,
            [Problem::BothIssuers { cluster_issuer: CLUSTER_ISSUER_ANNOTATION, issuer: ISSUER_ANNOTATION }]
        );
        let cm_both = ingress(&[(CM_CLUSTER_ISSUER_ANNOTATION, "a"), (CM_ISSUER_ANNOTATION, "b")], &[]);
        assert!(matches!(ingress_plan(&cm_both, CM).problems[..], [Problem::BothIssuers { .. }]));
        let empty = ingress(&[(ISSUER_ANNOTATION, " ")], &[]);
        let plan = ingress_plan(&empty, OWN);
        assert_eq!(plan.intent, Intent::Unclear);
        let why = AnnotationProblem::BadIssuerName;
        assert_eq!(plan.problems, [Problem::BadAnnotation { annotation: ISSUER_ANNOTATION, value: "".into(), why }]);
        assert!(ingress_plan(&ingress(&[(ISSUER_ANNOTATION, &"x".repeat(254))], &[]), OWN).intent == Intent::Unclear);
    }

    #[test]
    fn durations_and_common_names_from_annotations() {
        let pairs = [
            (ISSUER_ANNOTATION, "x"),
            (DURATION_ANNOTATION, "90m"),
            (RENEW_BEFORE_ANNOTATION, "1800s"),
            (COMMON_NAME_ANNOTATION, "a.example"),
        ];
        let plan = ingress_plan(&ingress(&pairs, &[(Some("a"), &["a.example"])]), OWN);
        let spec = &certificates(&plan).0[0].spec;
        assert_eq!(spec.duration.as_deref(), Some("1h30m"), "as the CRD writes durations");
        assert_eq!(spec.renew_before.as_deref(), Some("30m"));
        assert_eq!(spec.common_name.as_deref(), Some("a.example"));
        let cm = [(CM_ISSUER_ANNOTATION, "x"), (CM_COMMON_NAME_ANNOTATION, "cm.example")];
        let plan = ingress_plan(&ingress(&cm, &[(Some("a"), &["a.example"])]), CM);
        assert_eq!(certificates(&plan).0[0].spec.common_name.as_deref(), Some("cm.example"));
        let plan = ingress_plan(&ingress(&[cm[0], (CM_DURATION_ANNOTATION, "1h")], &[(Some("a"), &["a.x"])]), OWN);
        assert_eq!(plan, Plan::nothing(), "cert-manager's annotations alone, not accepted");
    }

    #[test]
    fn unusable_settings_change_nothing_and_say_why() {
        type Case<'a> = (&'a [(&'static str, &'a str)], &'static str, &'a str, AnnotationProblem);
        let cases: [Case; 8] = [
            (&[(DURATION_ANNOTATION, "10d")], DURATION_ANNOTATION, "10d", AnnotationProblem::NotADuration),
            (&[(DURATION_ANNOTATION, "30s")], DURATION_ANNOTATION, "30s", AnnotationProblem::DurationTooShort),
            (&[(DURATION_ANNOTATION, "100000h")], DURATION_ANNOTATION, "100000h", AnnotationProblem::DurationTooLong),
            (
                &[(RENEW_BEFORE_ANNOTATION, "0s")],
                RENEW_BEFORE_ANNOTATION,
                "0s",
                AnnotationProblem::RenewBeforeNotPositive,
            ),
            (
                &[(DURATION_ANNOTATION, "1h"), (RENEW_BEFORE_ANNOTATION, "1h")],
                RENEW_BEFORE_ANNOTATION,
                "1h",
                AnnotationProblem::RenewBeforeNotWithinDuration,
            ),
            (
                &[(DURATION_ANNOTATION, "1h"), (RENEW_BEFORE_ANNOTATION, "59m45s")],
                RENEW_BEFORE_ANNOTATION,
                "59m45s",
                AnnotationProblem::RenewBeforeNotWithinDuration,
            ),
            (&[(COMMON_NAME_ANNOTATION, "a\nb")], COMMON_NAME_ANNOTATION, "a\nb", AnnotationProblem::ControlCharacters),
            (
                &[(COMMON_NAME_ANNOTATION, &"c".repeat(65))],
                COMMON_NAME_ANNOTATION,
                &"c".repeat(65),
                AnnotationProblem::CommonNameTooLong,
            ),
        ];
        for (pairs, annotation, value, why) in cases {
            let mut all = vec![(ISSUER_ANNOTATION, "x")];
            all.extend_from_slice(pairs);
            let plan = ingress_plan(&ingress(&all, &[(Some("a"), &["a.example"])]), OWN);
            assert_eq!(plan.intent, Intent::Unclear, "{pairs:?}");
            assert_eq!(plan.problems, [Problem::BadAnnotation { annotation, value: value.into(), why }], "{pairs:?}");
        }
        let fine = [(ISSUER_ANNOTATION, "x"), (DURATION_ANNOTATION, "1h"), (RENEW_BEFORE_ANNOTATION, "59m30s")];
        assert_eq!(ingress_plan(&ingress(&fine, &[(Some("a"), &["a.example"])]), OWN).problems, []);
        let bad_issuer_and_duration = [(ISSUER_ANNOTATION, ""), (DURATION_ANNOTATION, "soon")];
        assert_eq!(ingress_plan(&ingress(&bad_issuer_and_duration, &[]), OWN).problems.len(), 2, "every problem");
    }

    #[test]
    fn unusable_tls_entries_are_reported_and_the_rest_still_served() {
        let ing = ingress(
            &[(ISSUER_ANNOTATION, "x")],
            &[
                (None, &["nosecret.example"]),
                (Some(""), &["empty.example"]),
                (Some("no-hosts"), &[]),
                (Some("Bad_Name"), &["a.example"]),
                (Some("mixed"), &["ok.example", "not a host", "10.0.0.1", "OK.example"]),
                (Some("all-bad"), &["*.*.example"]),
            ],
        );
        let plan = ingress_plan(&ing, OWN);
        let (desired_, kept) = certificates(&plan);
        assert_eq!(
            desired_,
            [desired("mixed", &["ok.example"], IssuerRef { kind: IssuerKind::Issuer, name: "x".into() })]
        );
        assert_eq!(kept, ["no-hosts", "all-bad"], "their earlier Certificates stay");
        assert_eq!(
            plan.problems,
            [
                Problem::TlsWithoutSecretName { hosts: vec!["nosecret.example".into()] },
                Problem::TlsWithoutSecretName { hosts: vec!["empty.example".into()] },
                Problem::TlsWithoutHosts { secret_name: "no-hosts".into() },
                Problem::BadSecretName { secret_name: "Bad_Name".into() },
                Problem::BadHostname { secret_name: "mixed".into(), hostname: "not a host".into() },
                Problem::BadHostname { secret_name: "mixed".into(), hostname: "10.0.0.1".into() },
                Problem::BadHostname { secret_name: "all-bad".into(), hostname: "*.*.example".into() },
            ]
        );
    }

    #[test]
    fn entries_of_one_secret_share_a_certificate_and_wildcards_pass() {
        let ing = ingress(
            &[(ISSUER_ANNOTATION, "x")],
            &[(Some("shared"), &["a.example", "*.b.example"]), (Some("shared"), &["c.example", "a.example"])],
        );
        let plan = ingress_plan(&ing, OWN);
        let names = certificates(&plan).0[0].spec.dns_names.clone().unwrap();
        assert_eq!(names, ["a.example", "*.b.example", "c.example"]);
        assert_eq!(certificates(&plan).0.len(), 1);
    }

    #[test]
    fn too_many_names_make_no_certificate() {
        let hosts: Vec<String> = (0..101).map(|i| format!("h{i}.example")).collect();
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let plan = ingress_plan(&ingress(&[(ISSUER_ANNOTATION, "x")], &[(Some("big"), &hosts)]), OWN);
        assert_eq!(certificates(&plan).1, ["big"]);
        assert_eq!(plan.problems, [Problem::TooManyNames { secret_name: "big".into(), count: 101 }]);
    }

    fn listener(name: &str, hostname: Option<&str>, tls: Option<GatewayTlsConfig>) -> Listener {
        Listener { name: name.into(), hostname: hostname.map(String::from), protocol: "HTTPS".into(), tls }
    }

    fn secret_ref(name: &str) -> SecretObjectReference {
        SecretObjectReference { name: name.into(), ..Default::default() }
    }

    fn terminate(refs: Vec<SecretObjectReference>) -> Option<GatewayTlsConfig> {
        Some(GatewayTlsConfig { mode: None, certificate_refs: refs })
    }

    fn gateway(pairs: &[(&str, &str)], listeners: Vec<Listener>) -> Gateway {
        let mut gateway = Gateway::new("public", GatewaySpec { listeners });
        gateway.metadata.namespace = Some("infra".into());
        gateway.metadata.annotations = Some(annotations(pairs));
        gateway
    }

    #[test]
    fn a_gateway_asks_for_a_certificate_per_secret_of_its_listeners() {
        let gw = gateway(
            &[(CLUSTER_ISSUER_ANNOTATION, "le")],
            vec![
                listener("shop", Some("Shop.example.com"), terminate(vec![secret_ref("shop-tls")])),
                listener("www", Some("www.example.com"), terminate(vec![secret_ref("shop-tls")])),
                listener(
                    "api",
                    Some("*.api.example.com"),
                    Some(GatewayTlsConfig {
                        mode: Some("Terminate".into()),
                        certificate_refs: vec![SecretObjectReference {
                            group: Some("".into()),
                            kind: Some("Secret".into()),
                            name: "api-tls".into(),
                            namespace: Some("infra".into()),
                        }],
                    }),
                ),
                listener("http", Some("plain.example.com"), None),
                listener(
                    "passthrough",
                    Some("pass.example.com"),
                    Some(GatewayTlsConfig { mode: Some("Passthrough".into()), certificate_refs: vec![] }),
                ),
            ],
        );
        let plan = gateway_plan(&gw, OWN);
        assert_eq!(plan.problems, []);
        assert_eq!(
            certificates(&plan).0,
            [
                desired("shop-tls", &["shop.example.com", "www.example.com"], cluster_issuer("le")),
                desired("api-tls", &["*.api.example.com"], cluster_issuer("le")),
            ]
        );
    }

    #[test]
    fn unusable_listeners_are_reported() {
        let gw = gateway(
            &[(CM_ISSUER_ANNOTATION, "x")],
            vec![
                listener("any-host", None, terminate(vec![secret_ref("any-tls")])),
                listener(
                    "configmap",
                    Some("a.example"),
                    terminate(vec![SecretObjectReference {
                        group: Some("".into()),
                        kind: Some("ConfigMap".into()),
                        name: "cm".into(),
                        namespace: None,
                    }]),
                ),
                listener(
                    "elsewhere",
                    Some("b.example"),
                    terminate(vec![SecretObjectReference { namespace: Some("certs".into()), ..secret_ref("b-tls") }]),
                ),
                listener("good", Some("c.example"), terminate(vec![secret_ref("c-tls")])),
            ],
        );
        assert_eq!(gateway_plan(&gw, OWN), Plan::nothing());
        let plan = gateway_plan(&gw, CM);
        let (desired_, kept) = certificates(&plan);
        assert_eq!(
            desired_,
            [desired("c-tls", &["c.example"], IssuerRef { kind: IssuerKind::Issuer, name: "x".into() })]
        );
        assert_eq!(kept, ["any-tls"]);
        assert_eq!(
            plan.problems,
            [
                Problem::ListenerWithoutHostname { listener: "any-host".into(), secret_name: "any-tls".into() },
                Problem::NotASecret {
                    listener: "configmap".into(),
                    group: "".into(),
                    kind: "ConfigMap".into(),
                    name: "cm".into()
                },
                Problem::OtherNamespace {
                    listener: "elsewhere".into(),
                    namespace: "certs".into(),
                    name: "b-tls".into()
                },
            ]
        );
    }

    #[test]
    fn a_listener_without_hostname_does_not_spoil_its_secrets_other_listeners() {
        let gw = gateway(
            &[(ISSUER_ANNOTATION, "x")],
            vec![
                listener("catch-all", None, terminate(vec![secret_ref("t")])),
                listener("named", Some("n.example"), terminate(vec![secret_ref("t")])),
            ],
        );
        let plan = gateway_plan(&gw, OWN);
        assert_eq!(certificates(&plan).0[0].spec.dns_names.as_deref(), Some(&["n.example".to_string()][..]));
        assert_eq!(plan.problems.len(), 1);
    }

    fn certificate(name: &str, labelled: bool, owner: Option<(&str, bool)>, spec: CertificateSpec) -> Certificate {
        let mut cert = Certificate::new(name, spec);
        if labelled {
            cert.metadata.labels = Some([(SHIM_LABEL.to_string(), "Ingress".to_string())].into());
        }
        cert.metadata.owner_references = owner.map(|(uid, controller)| {
            vec![OwnerReference {
                api_version: "networking.k8s.io/v1".into(),
                kind: "Ingress".into(),
                name: format!("ing-{uid}"),
                uid: uid.into(),
                controller: Some(controller),
                block_owner_deletion: None,
            }]
        });
        cert
    }

    #[test]
    fn only_labelled_certificates_controlled_by_the_owner_are_ours() {
        let spec = CertificateSpec::default;
        assert!(is_ours(&certificate("a", true, Some(("u1", true)), spec()), "u1"));
        assert!(!is_ours(&certificate("a", true, Some(("u2", true)), spec()), "u1"), "another owner's");
        assert!(!is_ours(&certificate("a", false, Some(("u1", true)), spec()), "u1"), "no label");
        assert!(!is_ours(&certificate("a", true, Some(("u1", false)), spec()), "u1"), "not controller");
        assert!(!is_ours(&certificate("a", true, None, spec()), "u1"), "no owner");
    }

    #[test]
    fn each_wanted_certificate_is_created_updated_left_or_refused() {
        let want = desired("web-tls", &["a.example"], cluster_issuer("le"));
        assert_eq!(step(&want, None, "u1"), Step::Create);
        let ours = certificate("web-tls", true, Some(("u1", true)), want.spec.clone());
        assert_eq!(step(&want, Some(&ours), "u1"), Step::UpToDate);
        // Fields the shim does not set (a user's, or defaults) do not make it out of date.
        let mut tuned = ours.clone();
        tuned.spec.attempt_history_limit = Some(3);
        assert_eq!(step(&want, Some(&tuned), "u1"), Step::UpToDate);
        let mut other_hosts = ours.clone();
        other_hosts.spec.dns_names = Some(vec!["b.example".into()]);
        assert_eq!(step(&want, Some(&other_hosts), "u1"), Step::Update);
        let mut other_issuer = ours.clone();
        other_issuer.spec.issuer_ref = IssuerRef { kind: IssuerKind::Issuer, name: "le".into() };
        assert_eq!(step(&want, Some(&other_issuer), "u1"), Step::Update);
        let users = certificate("web-tls", false, None, want.spec.clone());
        assert_eq!(
            step(&want, Some(&users), "u1"),
            Step::Conflict(Problem::CertificateExists { name: "web-tls".into(), controller: None })
        );
        let others = certificate("web-tls", true, Some(("u2", true)), want.spec.clone());
        assert_eq!(
            step(&want, Some(&others), "u1"),
            Step::Conflict(Problem::CertificateExists {
                name: "web-tls".into(),
                controller: Some("Ingress/ing-u2".into())
            })
        );
    }

    #[test]
    fn stale_certificates_are_those_no_longer_wanted_nor_kept() {
        let ours = |name: &str| certificate(name, true, Some(("u1", true)), CertificateSpec::default());
        let (a, b, c) = (ours("a"), ours("b"), ours("c"));
        let all = [&a, &b, &c];
        let names = |list: Vec<&Certificate>| list.iter().map(|c| c.name_any()).collect::<Vec<_>>();
        let plan = Plan {
            intent: Intent::Certificates {
                desired: vec![desired("a", &["a.example"], cluster_issuer("x"))],
                kept: vec!["b".into()],
            },
            problems: vec![],
        };
        assert_eq!(names(stale(&plan, &all)), ["c"]);
        assert_eq!(names(stale(&Plan::nothing(), &all)), ["a", "b", "c"], "the annotation was removed");
        let unclear = Plan { intent: Intent::Unclear, problems: vec![] };
        assert!(stale(&unclear, &all).is_empty(), "nothing goes while the annotations are unusable");
    }

    #[test]
    fn every_problem_reads_as_a_sentence_with_a_reason() {
        let problems = [
            Problem::BothIssuers { cluster_issuer: CLUSTER_ISSUER_ANNOTATION, issuer: ISSUER_ANNOTATION },
            Problem::BadAnnotation {
                annotation: DURATION_ANNOTATION,
                value: "10d".into(),
                why: AnnotationProblem::NotADuration,
            },
            Problem::UnsupportedIssuerKind { kind: "Foo".into() },
            Problem::UnsupportedIssuerGroup { group: "foo.io".into() },
            Problem::TlsWithoutSecretName { hosts: vec!["a.example".into()] },
            Problem::TlsWithoutHosts { secret_name: "s".into() },
            Problem::BadSecretName { secret_name: "S".into() },
            Problem::BadHostname { secret_name: "s".into(), hostname: "h h".into() },
            Problem::TooManyNames { secret_name: "s".into(), count: 101 },
            Problem::ListenerWithoutHostname { listener: "l".into(), secret_name: "s".into() },
            Problem::NotASecret {
                listener: "l".into(),
                group: "example.com".into(),
                kind: "Cert".into(),
                name: "n".into(),
            },
            Problem::OtherNamespace { listener: "l".into(), namespace: "ns".into(), name: "n".into() },
            Problem::CertificateExists { name: "n".into(), controller: None },
            Problem::CertificateExists { name: "n".into(), controller: Some("Ingress/other".into()) },
        ];
        for problem in &problems {
            let text = problem.to_string();
            assert!(text.len() > 20 && !text.ends_with('.'), "{text}");
            assert!(!problem.reason().is_empty());
        }
        assert!(problems[1].to_string().contains("certpilot.dev/duration: \"10d\""));
        assert!(problems[10].to_string().contains("Cert.example.com n"));
        assert_eq!(problems[13].reason(), "CertificateConflict");
    }

    #[test]
    fn go_durations_are_written_as_the_crd_writes_them() {
        let d = |s| go_duration(jiff::SignedDuration::from_secs(s));
        assert_eq!(d(7_776_000), "2160h");
        assert_eq!(d(5400), "1h30m");
        assert_eq!(d(3601), "1h1s");
        assert_eq!(d(59), "59s");
        assert_eq!(d(0), "0s");
    }

    #[test]
    fn object_names() {
        for good in ["a", "web-tls", "a.b-c.d", "0x"] {
            assert!(is_object_name(good), "{good}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a..b", &"a".repeat(254)] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }
}
