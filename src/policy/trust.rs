//! Whether an attempt is certpilot's own, for its Certificate as it stands: the only attempts
//! ever executed. Also the one place where an attempt's snapshot is made from a Certificate,
//! so that making and checking cannot drift apart.

use crate::api::{
    Certificate, CertificateAttempt, CertificateAttemptSpec, GROUP, IssuerRef,
    attempt::AttemptType,
    certificate::{CertificateSpec, OutputFormat},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use serde_json::Value;

/// What the attempt controller may do with an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Made by certpilot for its Certificate as it stands: run it.
    Trusted,
    /// Made for an earlier state of its Certificate (or one since deleted): end it as Cancelled.
    Superseded(String),
    /// Not what its Certificate asked for: end it as Rejected and touch nothing.
    Rejected(String),
}

/// The attempt spec a Certificate asks for now, of `issuer` (type, reason and issuer are the
/// decision's; the issuer is `issuerRef` or one of `fallbackIssuerRefs`, see `policy::fallback`).
pub fn snapshot(cert: &Certificate, type_: AttemptType, reason: &str, issuer: &IssuerRef) -> CertificateAttemptSpec {
    let spec = &cert.spec;
    let key = spec.private_key();
    CertificateAttemptSpec {
        certificate_name: cert.name_any(),
        type_,
        reason: reason.into(),
        secret_name: spec.secret_name.clone(),
        dns_names: spec.covered_dns_names(),
        ip_addresses: spec.covered_ip_addresses(),
        common_name: spec.common_name.clone(),
        duration: spec.duration.clone(),
        is_ca: spec.is_ca(),
        issuer_ref: issuer.clone(),
        fallback_reason: None,
        key_algorithm: crate::pki::keys::describe_spec(&key),
        private_key: key,
        profile: spec.profile.clone(),
        replaces: None,
        certificate_generation: cert.metadata.generation.unwrap_or(1),
        renew_request: None,
        revoke_request: None,
        revoke_serial: None,
        new_key: false,
        secret_template: spec.secret_template.clone().filter(|t| !t.labels.is_empty() || !t.annotations.is_empty()),
        additional_output_formats: output_formats(spec),
    }
}

fn output_formats(spec: &CertificateSpec) -> Vec<OutputFormat> {
    spec.additional_output_formats.clone().unwrap_or_default()
}

/// The fields of a snapshot that must equal the Certificate's, by name.
fn requested(spec: &CertificateAttemptSpec) -> [(&'static str, Value); 12] {
    let json = |v: &dyn erased::Json| v.json();
    [
        ("certificateName", json(&spec.certificate_name)),
        ("secretName", json(&spec.secret_name)),
        ("dnsNames", json(&spec.dns_names)),
        ("ipAddresses", json(&spec.ip_addresses)),
        ("commonName", json(&spec.common_name)),
        ("duration", json(&spec.duration)),
        ("isCA", json(&spec.is_ca)),
        ("issuerRef", json(&spec.issuer_ref)),
        ("privateKey", json(&spec.private_key)),
        ("profile", json(&spec.profile)),
        ("secretTemplate", json(&spec.secret_template)),
        ("additionalOutputFormats", json(&spec.additional_output_formats)),
    ]
}

mod erased {
    /// Any serialisable value as JSON, so fields of different types can be listed together.
    pub trait Json {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
    }
}

/// The first field in which the attempt asks for something else than the Certificate.
fn difference(attempt: &CertificateAttemptSpec, wanted: &CertificateAttemptSpec) -> Option<String> {
    requested(attempt)
        .into_iter()
        .zip(requested(wanted))
        .find(|((_, a), (_, w))| a != w)
        .map(|((field, a), (_, w))| format!("spec.{field} is {a}, but the Certificate asks for {w}"))
}

/// The Certificate the attempt names as its controller, if that reference is well formed: a
/// Certificate of certpilot's group, named as `spec.certificateName`.
fn controller_of(attempt: &CertificateAttempt) -> Result<&OwnerReference, String> {
    let name = &attempt.spec.certificate_name;
    let Some(owner) = attempt.owner_references().iter().find(|o| o.controller == Some(true)) else {
        return Err("it has no controlling owner; attempts are made by certpilot for a Certificate".into());
    };
    if owner.kind != "Certificate" || !owner.api_version.starts_with(&format!("{GROUP}/")) || &owner.name != name {
        return Err(format!(
            "its controller is {} {}, not Certificate {name} named in spec.certificateName",
            owner.kind, owner.name
        ));
    }
    Ok(owner)
}

/// Judges `attempt` against `cert`, the Certificate of its name (`None` when there is none).
pub fn verdict(attempt: &CertificateAttempt, cert: Option<&Certificate>) -> Verdict {
    let spec = &attempt.spec;
    let name = &spec.certificate_name;
    let owner = match controller_of(attempt) {
        Ok(owner) => owner,
        Err(why) => return Verdict::Rejected(why),
    };
    let Some(cert) = cert else {
        return Verdict::Superseded(format!("superseded: Certificate {name} no longer exists"));
    };
    if cert.uid().as_deref() != Some(owner.uid.as_str()) {
        return Verdict::Rejected(format!(
            "it belongs to a Certificate {name} with uid {}, not to the one that exists (uid {})",
            owner.uid,
            cert.uid().unwrap_or_default()
        ));
    }
    let generation = cert.metadata.generation.unwrap_or(1);
    if spec.certificate_generation > generation {
        return Verdict::Rejected(format!(
            "it claims generation {} of Certificate {name}, which is at generation {generation}",
            spec.certificate_generation
        ));
    }
    if !is_indexed_name(&attempt.name_any(), name) {
        return Verdict::Rejected(format!("its name is not {name}-<index>, as certpilot names attempts"));
    }
    if let Some(why) = revokes_another(spec.revoke_serial.as_deref(), cert) {
        return Verdict::Superseded(why);
    }
    let change = if cert.spec.issuers().contains(&spec.issuer_ref) {
        difference(spec, &snapshot(cert, spec.type_, &spec.reason, &spec.issuer_ref))
    } else {
        Some(format!(
            "spec.issuerRef is {}, which is neither the Certificate's issuerRef nor one of its fallbackIssuerRefs",
            spec.issuer_ref
        ))
    };
    match change {
        None => Verdict::Trusted,
        Some(change) if spec.certificate_generation < generation => Verdict::Superseded(format!(
            "superseded: the Certificate changed (generation {} to {generation}): {change}",
            spec.certificate_generation
        )),
        Some(change) => Verdict::Rejected(format!("it does not ask for what its Certificate asks for: {change}")),
    }
}

/// Why a Revoke attempt for certificate `serial` is no longer wanted: the Certificate's
/// current certificate is another one (renewed since), and only the current one is revoked.
fn revokes_another(serial: Option<&str>, cert: &Certificate) -> Option<String> {
    let serial = serial?;
    let current = cert.status.as_ref()?.serial_number.as_deref()?;
    (!current.eq_ignore_ascii_case(serial)).then(|| {
        format!("superseded: it revokes certificate {serial}, but the Certificate's current certificate is {current}")
    })
}

/// What an attempt claims, reduced to what decides whether it is trusted: kept in the cache
/// instead of the attempt, and judged against the Certificate as it stands by [`trusts`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    /// The uid of its controlling Certificate, when the reference and the attempt's name are
    /// as certpilot makes them (`None`: it is never trusted).
    owner_uid: Option<String>,
    generation: i64,
    /// The issuer it asks, which the Certificate must list.
    issuer: IssuerRef,
    /// A digest of the fields that must equal the Certificate's (see `requested`).
    requested: u64,
    /// The certificate a Revoke attempt revokes, which must be the Certificate's current one.
    revoke_serial: Option<String>,
}

pub fn claim(attempt: &CertificateAttempt) -> Claim {
    let well_formed = is_indexed_name(&attempt.name_any(), &attempt.spec.certificate_name);
    Claim {
        owner_uid: controller_of(attempt).ok().filter(|_| well_formed).map(|owner| owner.uid.clone()),
        generation: attempt.spec.certificate_generation,
        issuer: attempt.spec.issuer_ref.clone(),
        requested: requested_digest(&attempt.spec),
        revoke_serial: attempt.spec.revoke_serial.clone(),
    }
}

/// Whether [`verdict`] would trust the attempt `claim` was made from, for `cert`.
pub fn trusts(claim: &Claim, cert: &Certificate) -> bool {
    let generation = cert.metadata.generation.unwrap_or(1);
    claim.owner_uid.is_some()
        && cert.uid() == claim.owner_uid
        && claim.generation <= generation
        && cert.spec.issuers().contains(&claim.issuer)
        && claim.requested == requested_digest(&snapshot(cert, AttemptType::Issue, "", &claim.issuer))
        && revokes_another(claim.revoke_serial.as_deref(), cert).is_none()
}

fn requested_digest(spec: &CertificateAttemptSpec) -> u64 {
    super::json_digest(&requested(spec))
}

/// `<certificate>-<n>`: attempt names are deterministic, so a retried create finds its earlier
/// success as AlreadyExists instead of making a second attempt.
pub fn attempt_name(certificate: &str, index: u32) -> String {
    format!("{}-{index}", crate::secret::shorten(certificate, 240))
}

/// The index of an attempt named `<certificate>-<n>`.
pub fn attempt_index(certificate: &str, attempt: &str) -> Option<u32> {
    attempt.strip_prefix(&crate::secret::shorten(certificate, 240))?.strip_prefix('-')?.parse().ok()
}

fn is_indexed_name(attempt: &str, certificate: &str) -> bool {
    attempt_index(certificate, attempt).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{IssuerKind, IssuerRef, certificate::SecretTemplate};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::Resource;

    fn ca() -> IssuerRef {
        IssuerRef { kind: IssuerKind::ClusterIssuer, name: "ca".into() }
    }

    fn fallback() -> IssuerRef {
        IssuerRef { kind: IssuerKind::Issuer, name: "backup".into() }
    }

    fn cert() -> Certificate {
        let mut cert = Certificate::new(
            "web",
            CertificateSpec {
                secret_name: "web-tls".into(),
                dns_names: Some(vec!["web.example.com".into()]),
                issuer_ref: ca(),
                ..Default::default()
            },
        );
        cert.metadata.namespace = Some("shop".into());
        cert.metadata.uid = Some("uid-web".into());
        cert.metadata.generation = Some(3);
        cert
    }

    fn attempt_for(cert: &Certificate, index: u32) -> CertificateAttempt {
        let mut attempt =
            CertificateAttempt::new(&attempt_name("web", index), snapshot(cert, AttemptType::Issue, "new", &ca()));
        attempt.metadata.owner_references = Some(vec![cert.controller_owner_ref(&()).unwrap()]);
        attempt
    }

    #[test]
    fn certpilots_own_attempts_are_trusted() {
        let cert = cert();
        assert_eq!(verdict(&attempt_for(&cert, 1), Some(&cert)), Verdict::Trusted);
    }

    #[test]
    fn an_attempt_may_ask_a_fallback_issuer_the_certificate_lists_and_no_other() {
        let mut cert = cert();
        let mut to_fallback = attempt_for(&cert, 1);
        to_fallback.spec.issuer_ref = fallback();
        let Verdict::Rejected(why) = verdict(&to_fallback, Some(&cert)) else { panic!("an unlisted issuer") };
        assert!(why.contains("Issuer/backup") && why.contains("fallbackIssuerRefs"), "{why}");
        assert!(!trusts(&claim(&to_fallback), &cert));
        cert.spec.fallback_issuer_refs = Some(vec![fallback()]);
        assert_eq!(verdict(&to_fallback, Some(&cert)), Verdict::Trusted);
        assert!(trusts(&claim(&to_fallback), &cert));
        to_fallback.spec.fallback_reason = Some("ca was down".into());
        assert_eq!(verdict(&to_fallback, Some(&cert)), Verdict::Trusted, "the reason is the decision's, not asked for");
        let mut dropped = cert.clone();
        dropped.spec.fallback_issuer_refs = None;
        dropped.metadata.generation = Some(4);
        assert!(matches!(verdict(&to_fallback, Some(&dropped)), Verdict::Superseded(_)), "the fallback was removed");
    }

    #[test]
    fn forged_names_ca_flags_and_templates_are_rejected() {
        let cert = cert();
        let mut names = attempt_for(&cert, 1);
        names.spec.dns_names = vec!["evil.example.com".into()];
        let Verdict::Rejected(why) = verdict(&names, Some(&cert)) else { panic!("forged names must be rejected") };
        assert!(why.contains("spec.dnsNames") && why.contains("evil.example.com"), "{why}");
        let mut ca = attempt_for(&cert, 1);
        ca.spec.is_ca = true;
        assert!(matches!(verdict(&ca, Some(&cert)), Verdict::Rejected(why) if why.contains("spec.isCA")));
        let mut template = attempt_for(&cert, 1);
        template.spec.secret_template =
            Some(SecretTemplate { labels: [("a".into(), "b".into())].into(), ..Default::default() });
        assert!(matches!(verdict(&template, Some(&cert)), Verdict::Rejected(why) if why.contains("secretTemplate")));
        let mut secret = attempt_for(&cert, 1);
        secret.spec.secret_name = "victim-tls".into();
        assert!(matches!(verdict(&secret, Some(&cert)), Verdict::Rejected(why) if why.contains("secretName")));
    }

    #[test]
    fn attempts_owned_by_another_certificate_are_rejected() {
        let cert = cert();
        let mut other = cert.clone();
        other.metadata.name = Some("other".into());
        other.metadata.uid = Some("uid-other".into());
        let mut forged = attempt_for(&cert, 1);
        forged.metadata.owner_references = Some(vec![other.controller_owner_ref(&()).unwrap()]);
        assert!(matches!(verdict(&forged, Some(&cert)), Verdict::Rejected(why) if why.contains("Certificate other")));
        let mut unowned = attempt_for(&cert, 1);
        unowned.metadata.owner_references = None;
        assert!(matches!(verdict(&unowned, Some(&cert)), Verdict::Rejected(_)));
        let mut stale_uid = attempt_for(&cert, 1);
        stale_uid.metadata.owner_references =
            Some(vec![OwnerReference { uid: "uid-old".into(), ..cert.controller_owner_ref(&()).unwrap() }]);
        assert!(matches!(verdict(&stale_uid, Some(&cert)), Verdict::Rejected(why) if why.contains("uid-old")));
        let mut misnamed = attempt_for(&cert, 1);
        misnamed.metadata.name = Some("web-tls-x".into());
        assert!(matches!(verdict(&misnamed, Some(&cert)), Verdict::Rejected(why) if why.contains("web-<index>")));
    }

    #[test]
    fn future_generations_are_rejected_and_past_ones_superseded() {
        let cert = cert();
        let mut future = attempt_for(&cert, 1);
        future.spec.certificate_generation = 4;
        assert!(matches!(verdict(&future, Some(&cert)), Verdict::Rejected(why) if why.contains("generation 4")));
        let mut past = attempt_for(&cert, 1);
        past.spec.certificate_generation = 2;
        assert_eq!(verdict(&past, Some(&cert)), Verdict::Trusted, "an unchanged request stays valid");
        past.spec.dns_names = vec!["old.example.com".into()];
        assert!(matches!(verdict(&past, Some(&cert)), Verdict::Superseded(why) if why.contains("generation 2 to 3")));
        assert!(matches!(verdict(&attempt_for(&cert, 1), None), Verdict::Superseded(_)));
    }

    /// The cache keeps a claim instead of the attempt: it must trust exactly what `verdict` trusts.
    #[test]
    fn a_claim_is_trusted_exactly_when_its_attempt_is() {
        let cert = cert();
        let mut other = cert.clone();
        other.metadata.uid = Some("uid-other".into());
        let mut changed = cert.clone();
        changed.metadata.generation = Some(4);
        changed.spec.dns_names = Some(vec!["new.example.com".into()]);
        let mut with_fallback = cert.clone();
        with_fallback.spec.fallback_issuer_refs = Some(vec![fallback()]);
        type Mutation = Box<dyn Fn(&mut CertificateAttempt)>;
        let mutations: Vec<Mutation> = vec![
            Box::new(|_| {}),
            Box::new(|a| a.spec.dns_names = vec!["evil.example.com".into()]),
            Box::new(|a| a.spec.is_ca = true),
            Box::new(|a| a.spec.secret_name = "victim-tls".into()),
            Box::new(|a| a.spec.issuer_ref.name = "other".into()),
            Box::new(|a| a.spec.issuer_ref = fallback()),
            Box::new(|a| a.spec.fallback_reason = Some("ca was down".into())),
            Box::new(|a| a.spec.duration = Some("1h".into())),
            Box::new(|a| a.spec.certificate_generation = 4),
            Box::new(|a| a.spec.certificate_generation = 2),
            Box::new(|a| a.spec.type_ = AttemptType::Renew),
            Box::new(|a| a.spec.reason = "another reason".into()),
            Box::new(|a| a.metadata.owner_references = None),
            Box::new(|a| a.metadata.name = Some("web-tls-x".into())),
            Box::new(|a| a.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false)),
            Box::new(|a| a.metadata.owner_references.as_mut().unwrap()[0].kind = "Issuer".into()),
            Box::new(|a| a.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-old".into()),
        ];
        for (i, mutate) in mutations.iter().enumerate() {
            let mut attempt = attempt_for(&cert, 1);
            mutate(&mut attempt);
            for judge in [&cert, &other, &changed, &with_fallback] {
                let trusted = verdict(&attempt, Some(judge)) == Verdict::Trusted;
                assert_eq!(trusts(&claim(&attempt), judge), trusted, "mutation {i}, judged by {:?}", judge.uid());
            }
        }
        assert!(trusts(&claim(&attempt_for(&cert, 1)), &cert), "the unchanged attempt is trusted");
    }

    #[test]
    fn attempt_names_are_deterministic_and_parse_back() {
        assert_eq!(attempt_name("web", 3), "web-3");
        assert_eq!(attempt_index("web", "web-3"), Some(3));
        assert_eq!(attempt_index("web", "web-tls-3"), None);
        let long = "c".repeat(250);
        let name = attempt_name(&long, 12);
        assert!(name.len() <= 253);
        assert_eq!(attempt_index(&long, &name), Some(12));
    }

    #[test]
    fn a_revoke_attempt_is_trusted_only_for_the_current_certificate() {
        let mut cert = cert();
        cert.status = Some(crate::api::CertificateStatus { serial_number: Some("0A1B".into()), ..Default::default() });
        let mut revoke = attempt_for(&cert, 1);
        revoke.spec.type_ = AttemptType::Revoke;
        revoke.spec.revoke_serial = Some("0a1b".into());
        assert_eq!(verdict(&revoke, Some(&cert)), Verdict::Trusted);
        assert!(trusts(&claim(&revoke), &cert));
        revoke.spec.revoke_serial = Some("0C".into());
        let Verdict::Superseded(why) = verdict(&revoke, Some(&cert)) else { panic!("another serial is not revoked") };
        assert!(why.contains("0C") && why.contains("0A1B"), "{why}");
        assert!(!trusts(&claim(&revoke), &cert));
    }
}
