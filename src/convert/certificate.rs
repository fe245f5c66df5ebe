//! cert-manager `Certificate` → certpilot `Certificate`.

use super::{Findings, Problem, report::DurationProblem, source, values};
use crate::api::{
    CertificateSpec, IssuerKind, IssuerRef, SecretKeySelector,
    certificate::{
        KeyAlgorithm, KeyEncoding, OutputFormat, OutputFormatType, Pkcs12Profile, PrivateKeySpec, RotationPolicy,
        SecretTemplate,
    },
};
use jiff::SignedDuration;

/// Most entries certpilot accepts in `dnsNames` and in `ipAddresses`.
const MAX_NAMES: usize = 100;

/// The converted spec, or `None` when the Certificate cannot be converted at all.
pub fn convert(spec: source::CertificateSpec, f: &mut Findings) -> Option<CertificateSpec> {
    f.rest("spec", &spec.rest, unmapped_field);
    let issuer_ref = issuer_ref(spec.issuer_ref, f)?;
    let Some(secret_name) = spec.secret_name.filter(|s| !s.is_empty()) else {
        f.left_out(Problem::MissingSecretName);
        return None;
    };
    let is_ca = spec.is_ca.unwrap_or(false);
    let dns_names = dns_names(&spec.dns_names, f);
    let ip_addresses = ip_addresses(&spec.ip_addresses, f);
    if let Some(count) = [dns_names.len(), ip_addresses.len()].into_iter().find(|n| *n > MAX_NAMES) {
        f.left_out(Problem::TooManyNames { count });
        return None;
    }
    let has_sans = !dns_names.is_empty() || !ip_addresses.is_empty();
    let common_name = common_name(spec.common_name, has_sans || is_ca, f);
    if !has_sans && common_name.is_none() {
        f.left_out(Problem::NoNamesLeft);
        return None;
    }
    let (duration, renew_before) = lifetime(spec.duration, spec.renew_before, f);
    usages(&spec.usages, is_ca, f);
    Some(CertificateSpec {
        secret_name,
        dns_names: non_empty(dns_names),
        ip_addresses: non_empty(ip_addresses),
        common_name,
        issuer_ref,
        // cert-manager has no fallback issuers.
        fallback_issuer_refs: None,
        duration,
        renew_before,
        renew_before_percentage: renew_before_percentage(spec.renew_before_percentage, f),
        is_ca: spec.is_ca,
        profile: None,
        private_key: Some(private_key(spec.private_key.unwrap_or_default(), f)),
        secret_template: spec.secret_template.and_then(secret_template),
        additional_output_formats: output_formats(&spec.additional_output_formats, spec.keystores, f),
        attempt_history_limit: spec.revision_history_limit.map(|limit| history_limit(limit, f)),
    })
}

fn unmapped_field(key: &str) -> Problem {
    match key {
        "uris" | "emailAddresses" | "otherNames" => Problem::NoUriOrEmailSans,
        "subject" | "literalSubject" => Problem::NoSubject,
        _ => Problem::NoCounterpartField,
    }
}

fn non_empty(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

fn issuer_ref(reference: Option<source::IssuerRef>, f: &mut Findings) -> Option<IssuerRef> {
    let Some(reference) = reference.filter(|r| !r.name.is_empty()) else {
        f.left_out(Problem::Malformed { error: "spec.issuerRef.name is missing".into() });
        return None;
    };
    if let Some(group) = reference.group.filter(|g| !g.is_empty() && g != "cert-manager.io") {
        f.left_out(Problem::ExternalIssuer { group });
        return None;
    }
    let kind = match reference.kind.as_deref().unwrap_or("Issuer") {
        "Issuer" | "" => IssuerKind::Issuer,
        "ClusterIssuer" => IssuerKind::ClusterIssuer,
        other => {
            f.left_out(Problem::UnknownIssuerKind { kind: other.into() });
            return None;
        }
    };
    Some(IssuerRef { kind, name: reference.name })
}

/// The names certpilot accepts, lowercased; the others are reported.
fn dns_names(names: &[String], f: &mut Findings) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match values::dns_name(name) {
            Some((normal, changed)) => {
                if changed {
                    f.add(
                        format!("spec.dnsNames[{i}]"),
                        Problem::Lowercased { from: name.clone(), to: normal.clone() },
                    );
                }
                // A set in certpilot's schema: a duplicate would be refused.
                if !out.contains(&normal) {
                    out.push(normal);
                }
            }
            None => f.add(format!("spec.dnsNames[{i}]"), Problem::InvalidDnsName { name: name.clone() }),
        }
    }
    out
}

fn ip_addresses(addresses: &[String], f: &mut Findings) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        match address.parse::<std::net::IpAddr>() {
            Ok(ip) if !out.contains(&ip.to_string()) => out.push(ip.to_string()),
            Ok(_) => {}
            Err(_) => f.add(format!("spec.ipAddresses[{i}]"), Problem::InvalidIpAddress { address: address.clone() }),
        }
    }
    out
}

/// The common name. Without SANs (and unless a CA) certpilot certifies it, so it must then be
/// a DNS name or an IP address.
fn common_name(common_name: Option<String>, free_text: bool, f: &mut Findings) -> Option<String> {
    let cn = common_name.filter(|cn| !cn.is_empty())?;
    if cn.chars().count() > 64 || cn.chars().any(char::is_control) {
        f.add("spec.commonName", Problem::CommonNameTooLong);
        return None;
    }
    if free_text || cn.parse::<std::net::IpAddr>().is_ok() {
        return Some(cn);
    }
    let (normal, changed) = values::dns_name(&cn)?;
    if changed {
        f.add("spec.commonName", Problem::Lowercased { from: cn, to: normal.clone() });
    }
    Some(normal)
}

/// `duration` and `renewBefore` in canonical form, each left out when certpilot's rules would
/// refuse it.
fn lifetime(
    duration: Option<String>,
    renew_before: Option<String>,
    f: &mut Findings,
) -> (Option<String>, Option<String>) {
    let mut reject = |field: &str, value: &str, why| {
        f.add(format!("spec.{field}"), Problem::Duration { value: value.into(), why });
    };
    let duration = duration.and_then(|text| checked_duration(&text).map_err(|why| reject("duration", &text, why)).ok());
    let lifetime = duration.as_ref().map(|(d, _)| *d);
    let renew_before = renew_before
        .and_then(|text| checked_renew_before(&text, lifetime).map_err(|why| reject("renewBefore", &text, why)).ok());
    (duration.map(|(_, canonical)| canonical), renew_before)
}

fn checked_duration(text: &str) -> Result<(SignedDuration, String), DurationProblem> {
    let (duration, canonical) = values::duration(text)?;
    if duration < SignedDuration::from_mins(1) {
        return Err(DurationProblem::TooShort);
    }
    Ok((duration, canonical))
}

fn checked_renew_before(text: &str, lifetime: Option<SignedDuration>) -> Result<String, DurationProblem> {
    let (before, canonical) = values::duration(text)?;
    match lifetime {
        Some(lifetime) if before >= lifetime => Err(DurationProblem::RenewBeforeNotShorter),
        Some(lifetime) if lifetime - before < SignedDuration::from_secs(30) => {
            Err(DurationProblem::RenewBeforeTooClose)
        }
        _ => Ok(canonical),
    }
}

fn renew_before_percentage(value: Option<i32>, f: &mut Findings) -> Option<i32> {
    let value = value?;
    if (1..=99).contains(&value) {
        return Some(value);
    }
    f.add("spec.renewBeforePercentage", Problem::RenewBeforePercentage { value });
    None
}

/// The key usages certpilot puts into every certificate it signs (see `pki::sign`).
fn fixed_usages(is_ca: bool) -> &'static [&'static str] {
    if is_ca {
        &["cert sign", "crl sign", "digital signature"]
    } else {
        &["digital signature", "key encipherment", "server auth", "client auth"]
    }
}

/// Usages cannot be chosen in certpilot: report those it will not set, and those it adds.
fn usages(requested: &[String], is_ca: bool, f: &mut Findings) {
    if requested.is_empty() {
        return;
    }
    let requested: Vec<&str> =
        requested.iter().map(|u| if u == "signing" { "digital signature" } else { u.as_str() }).collect();
    let fixed = fixed_usages(is_ca);
    let unsupported: Vec<String> = requested.iter().filter(|u| !fixed.contains(u)).map(|u| u.to_string()).collect();
    if !unsupported.is_empty() {
        f.add("spec.usages", Problem::Usages { unsupported });
    }
    let added: Vec<String> = fixed.iter().filter(|u| !requested.contains(u)).map(|u| u.to_string()).collect();
    if !added.is_empty() {
        f.add("spec.usages", Problem::UsagesWidened { added });
    }
}

/// cert-manager's `keystores` are certpilot's PKCS12 and JKS output formats, written under the
/// same Secret keys (`keystore.p12`, `keystore.jks`).
fn keystores(keystores: Option<source::Keystores>, f: &mut Findings) -> Vec<OutputFormat> {
    let Some(keystores) = keystores else { return Vec::new() };
    let mut formats = Vec::new();
    let stores =
        [("pkcs12", OutputFormatType::PKCS12, keystores.pkcs12), ("jks", OutputFormatType::JKS, keystores.jks)];
    for (field, type_, store) in stores {
        // `create: false` asks for nothing.
        let Some(store) = store.filter(|s| s.create != Some(false)) else { continue };
        formats.extend(keystore(&format!("spec.keystores.{field}"), type_, store, f));
    }
    formats
}

/// The keystore at `path` (cert-manager's `spec.keystores.<field>`) as an output format.
fn keystore(path: &str, type_: OutputFormatType, store: source::Keystore, f: &mut Findings) -> Option<OutputFormat> {
    f.unmapped(path, &store.rest);
    if store.alias.is_some() {
        f.add(format!("{path}.alias"), Problem::KeystoreAlias);
    }
    let reference = store.password_secret_ref.filter(|r| !r.name.is_empty());
    let Some(source::SecretRef { name, key: Some(key) }) = reference else {
        let problem =
            if store.password.is_some() { Problem::KeystoreLiteralPassword } else { Problem::KeystoreNoPassword };
        f.add(path, problem);
        return None;
    };
    // cert-manager writes the CA alone beside the keystore, under the matching name.
    f.add(path, Problem::NoTruststore { file: type_.data_key().replacen("keystore", "truststore", 1) });
    let profile = (type_ == OutputFormatType::PKCS12).then(|| pkcs12_profile(store.profile, path, f));
    Some(OutputFormat { type_, password_secret_ref: Some(SecretKeySelector { name, key }), profile })
}

/// cert-manager encrypts PKCS#12 with 40-bit RC2 unless told otherwise; the conversion keeps
/// that, so old Java readers go on working, and says how to move to AES.
fn pkcs12_profile(profile: Option<String>, path: &str, f: &mut Findings) -> Pkcs12Profile {
    match profile.as_deref() {
        Some("Modern2023") => Pkcs12Profile::Modern2023,
        Some("LegacyDES") => Pkcs12Profile::LegacyDES,
        Some("LegacyRC2") => Pkcs12Profile::LegacyRC2,
        None => {
            f.add(format!("{path}.profile"), Problem::Pkcs12LegacyDefault);
            Pkcs12Profile::LegacyRC2
        }
        Some(other) => {
            f.add(format!("{path}.profile"), Problem::Pkcs12Profile { value: other.into() });
            Pkcs12Profile::LegacyRC2
        }
    }
}

/// The private key. cert-manager's defaults differ from certpilot's (RSA rather than ECDSA,
/// PKCS1 rather than PKCS8), so they are written out.
fn private_key(key: source::PrivateKey, f: &mut Findings) -> PrivateKeySpec {
    f.unmapped("spec.privateKey", &key.rest);
    let algorithm = match key.algorithm.as_deref().unwrap_or("RSA") {
        "RSA" => KeyAlgorithm::Rsa,
        "ECDSA" => KeyAlgorithm::Ecdsa,
        "Ed25519" => KeyAlgorithm::Ed25519,
        other => {
            f.add("spec.privateKey.algorithm", Problem::KeyAlgorithm { value: other.into() });
            KeyAlgorithm::Ecdsa
        }
    };
    PrivateKeySpec {
        algorithm,
        size: key.size.and_then(|size| key_size(algorithm, size, f)),
        rotation_policy: rotation_policy(key.rotation_policy.as_deref(), f),
        encoding: encoding(algorithm, key.encoding.as_deref(), f),
    }
}

/// The nearest size certpilot makes; cert-manager ignores a size for Ed25519, and so does this.
fn key_size(algorithm: KeyAlgorithm, size: i32, f: &mut Findings) -> Option<i32> {
    let (name, sizes): (&str, &[i32]) = match algorithm {
        KeyAlgorithm::Rsa => ("RSA", &[2048, 3072, 4096]),
        KeyAlgorithm::Ecdsa => ("ECDSA", &[256, 384]),
        KeyAlgorithm::Ed25519 => return None,
    };
    if sizes.contains(&size) {
        return Some(size);
    }
    let used = sizes.iter().copied().filter(|s| *s <= size).max().unwrap_or(sizes[0]);
    f.add("spec.privateKey.size", Problem::KeySize { algorithm: name.into(), size, used });
    Some(used)
}

fn rotation_policy(value: Option<&str>, f: &mut Findings) -> RotationPolicy {
    match value {
        // cert-manager's default since v1.18, and certpilot's.
        None | Some("Always") => RotationPolicy::Always,
        Some("Never") => RotationPolicy::Never,
        Some(other) => {
            f.add("spec.privateKey.rotationPolicy", Problem::RotationPolicy { value: other.into() });
            RotationPolicy::Always
        }
    }
}

fn encoding(algorithm: KeyAlgorithm, value: Option<&str>, f: &mut Findings) -> KeyEncoding {
    match (value.unwrap_or("PKCS1"), algorithm) {
        ("PKCS8", _) => KeyEncoding::Pkcs8,
        ("PKCS1", KeyAlgorithm::Rsa) => KeyEncoding::Pkcs1,
        ("PKCS1", KeyAlgorithm::Ecdsa) => {
            f.add("spec.privateKey.encoding", Problem::Pkcs1NotRsa);
            KeyEncoding::Pkcs8
        }
        // Ed25519 keys are PKCS8 in cert-manager whatever the encoding says.
        ("PKCS1", KeyAlgorithm::Ed25519) => KeyEncoding::Pkcs8,
        (other, _) => {
            f.add("spec.privateKey.encoding", Problem::KeyEncoding { value: other.into() });
            KeyEncoding::Pkcs8
        }
    }
}

fn secret_template(template: source::SecretTemplate) -> Option<SecretTemplate> {
    let empty = template.labels.is_empty() && template.annotations.is_empty();
    (!empty).then_some(SecretTemplate { labels: template.labels, annotations: template.annotations })
}

fn output_formats(
    formats: &[source::OutputFormat],
    keystores: Option<source::Keystores>,
    f: &mut Findings,
) -> Option<Vec<OutputFormat>> {
    let mut out: Vec<OutputFormat> = self::keystores(keystores, f);
    for (i, format) in formats.iter().enumerate() {
        let type_ = match format.type_.as_str() {
            "CombinedPEM" => OutputFormatType::CombinedPEM,
            "DER" => OutputFormatType::DER,
            other => {
                f.add(format!("spec.additionalOutputFormats[{i}]"), Problem::OutputFormat { format: other.into() });
                continue;
            }
        };
        if !out.iter().any(|o| o.type_ == type_) {
            out.push(OutputFormat::of(type_));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// cert-manager's CertificateRequests kept are certpilot's CertificateAttempts kept.
fn history_limit(limit: i32, f: &mut Findings) -> i32 {
    let used = limit.clamp(1, 100);
    if used != limit {
        f.add("spec.revisionHistoryLimit", Problem::HistoryLimit { value: limit, used });
    }
    used
}
