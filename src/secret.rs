//! The target Secret: reading what certpilot stored there, deciding whether it may be written,
//! and building the new contents applied in one server-side apply.

use crate::{
    api::{
        ADOPT_ANNOTATION, CERTIFICATE_NAME_LABEL, FIELD_MANAGER, IssuerKind, IssuerRef, MANAGED_BY_LABEL,
        MANAGED_BY_VALUE,
        certificate::{OutputFormatType, SecretTemplate},
    },
    keystore::{Keystore, KeystoreError, Material},
    pki::{CertInfo, NameRequest, PrivateKey, cert::parse_chain},
    policy::{
        adopt::{self, Adoption, Candidate, Unusable},
        trigger::{SecretState, StoredCertificate},
    },
};
use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use std::collections::BTreeMap;

pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CERT: &str = "ca.crt";
pub const ISSUER_KIND_ANNOTATION: &str = "certpilot.dev/issuer-kind";
pub const ISSUER_NAME_ANNOTATION: &str = "certpilot.dev/issuer-name";
pub const ATTEMPT_ANNOTATION: &str = "certpilot.dev/attempt";
/// cert-manager's annotation naming the Certificate it wrote a Secret for.
pub const CERT_MANAGER_CERTIFICATE_ANNOTATION: &str = "cert-manager.io/certificate-name";
/// cert-manager's annotations on a Secret that describe the certificate it issued (prefixes).
const CERT_MANAGER_ANNOTATIONS: [&str; 10] = [
    CERT_MANAGER_CERTIFICATE_ANNOTATION,
    "cert-manager.io/issuer-name",
    "cert-manager.io/issuer-kind",
    "cert-manager.io/issuer-group",
    "cert-manager.io/common-name",
    "cert-manager.io/alt-names",
    "cert-manager.io/ip-sans",
    "cert-manager.io/uri-sans",
    "cert-manager.io/email-sans",
    "cert-manager.io/subject-",
];
/// The data keys cert-manager writes, all derived from the certificate it issued.
const CERT_MANAGER_KEYS: [&str; 9] = [
    TLS_CERT,
    TLS_KEY,
    CA_CERT,
    "tls-combined.pem",
    "key.der",
    "keystore.p12",
    "truststore.p12",
    "keystore.jks",
    "truststore.jks",
];

/// `name` if it is at most `max` characters, otherwise a prefix and a hash of the whole, so that
/// derived names and label values stay within Kubernetes limits and unique.
pub fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
    let hash: String = digest.as_ref()[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hash}", name[..max - 11].trim_end_matches(['-', '.']))
}

/// A label value for a Certificate name (labels hold at most 63 characters).
pub fn label_value(name: &str) -> String {
    shorten(name, 63)
}

/// The field manager of certpilot's writes of a Certificate's target Secret: one per
/// Certificate (`certpilot/<name>`), so that server-side apply itself keeps two Certificates
/// naming the same Secret apart: the second one's create conflicts with the first one's fields
/// instead of silently taking them, which one shared manager would let it do.
pub fn field_manager(certificate: &str) -> String {
    format!("{FIELD_MANAGER}/{}", label_value(certificate))
}

/// Whether `manager` is one of certpilot's field managers (`certpilot`, `certpilot/<name>`).
pub fn is_certpilot_manager(manager: &str) -> bool {
    manager.strip_prefix(FIELD_MANAGER).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether certpilot wrote this object: its field manager appears in `managedFields`, which
/// the API server records and a user's `kubectl apply` does not forge by copying labels.
pub fn written_by_certpilot(meta: &ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| entry.manager.as_deref().is_some_and(is_certpilot_manager))
}

/// Whether certpilot may write this Secret for `certificate`: it wrote it for that
/// Certificate, or the owner annotated it for adoption. Labels alone prove nothing.
pub fn may_write(meta: &ObjectMeta, certificate: &str) -> bool {
    let adoptable = meta.annotations.as_ref().and_then(|a| a.get(ADOPT_ANNOTATION)).map(String::as_str) == Some("true");
    written_for(meta, certificate) || adoptable
}

/// certpilot wrote this Secret for `certificate` (labels and certpilot's field manager).
pub fn written_for(meta: &ObjectMeta, certificate: &str) -> bool {
    holder(meta) == Some(label_value(certificate))
}

/// The Secret says attempt `attempt` wrote it.
pub fn names_attempt(meta: &ObjectMeta, attempt: &str) -> bool {
    meta.annotations.as_ref().and_then(|a| a.get(ATTEMPT_ANNOTATION)).map(String::as_str) == Some(attempt)
}

fn data<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret.data.as_ref()?.get(key).map(|b| b.0.as_slice())
}

/// The Certificate (its label value) certpilot wrote this Secret for, if it did.
pub fn holder(meta: &ObjectMeta) -> Option<String> {
    let labels = meta.labels.as_ref()?;
    let labelled = labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE);
    (labelled && written_by_certpilot(meta)).then(|| labels.get(CERTIFICATE_NAME_LABEL).cloned()).flatten()
}

/// What the Secret holds for `certificate`.
pub fn classify(secret: Option<&Secret>, certificate: &str) -> SecretState {
    let Some(secret) = secret else { return SecretState::Missing };
    if !may_write(&secret.metadata, certificate) {
        return SecretState::NotOwned { holder: holder(&secret.metadata) };
    }
    if let Some(other) = secret.type_.as_deref().filter(|t| *t != "kubernetes.io/tls") {
        // What reads it (Ingress controllers, Gateways) expects a TLS Secret; the type cannot
        // change in place, so the Storing step says to delete it.
        return SecretState::Invalid(format!("its type is {other}, not kubernetes.io/tls"));
    }
    match stored_certificate(secret) {
        Ok(stored) => SecretState::Present(Box::new(stored)),
        Err(why) => SecretState::Invalid(why.to_string()),
    }
}

/// What the Secret holds for `certificate`, which asks for `wanted` at `now`: as [`classify`]
/// says, except that a Secret cert-manager wrote (and certpilot did not) is adopted or not.
pub fn classify_adopting(
    secret: Option<&Secret>,
    certificate: &str,
    wanted: &NameRequest,
    now: Timestamp,
) -> SecretState {
    let state = classify(secret, certificate);
    let (SecretState::NotOwned { holder: None }, Some(secret)) = (&state, secret) else { return state };
    match adoption(secret, certificate, wanted, now) {
        Some(Adoption::Adoptable(stored)) => SecretState::Adopted(stored),
        Some(Adoption::NotAdoptable(reason)) => SecretState::NotAdoptable { reason },
        None => state,
    }
}

/// Whether cert-manager wrote this Secret and certpilot adopts it for `certificate` now
/// (`None`: cert-manager did not write it).
pub fn adoption(secret: &Secret, certificate: &str, wanted: &NameRequest, now: Timestamp) -> Option<Adoption> {
    let written_for = secret.metadata.annotations.as_ref()?.get(CERT_MANAGER_CERTIFICATE_ANNOTATION)?;
    let candidate = Candidate {
        type_: secret.type_.clone(),
        written_for: written_for.clone(),
        contents: stored_certificate(secret),
    };
    Some(adopt::adoption(candidate, certificate, wanted, now))
}

/// Whether certpilot may write this Secret for `certificate`, which asks for `wanted`, at
/// `now`: it may by [`may_write`], or it adopts what cert-manager wrote there.
pub fn may_take_over(secret: &Secret, certificate: &str, wanted: &NameRequest, now: Timestamp) -> bool {
    may_write(&secret.metadata, certificate)
        || matches!(adoption(secret, certificate, wanted, now), Some(Adoption::Adoptable(_)))
}

/// The adopted Secret `existing` as certpilot takes it over with `built`: certpilot's keys,
/// labels and annotations go in; cert-manager's keys, annotations and owner references go out,
/// as they describe (or would delete the Secret with) the certificate being replaced; anything
/// else a user put there stays. Replaced whole, at `existing`'s resourceVersion, so that
/// nothing stale survives and nothing changed meanwhile is overwritten.
pub fn taken_over(existing: &Secret, built: Secret) -> Secret {
    let mut secret = existing.clone();
    let meta = &mut secret.metadata;
    meta.managed_fields = None;
    let mut labels = meta.labels.take().unwrap_or_default();
    labels.retain(|key, _| !key.starts_with("controller.cert-manager.io/"));
    labels.extend(built.metadata.labels.unwrap_or_default());
    meta.labels = Some(labels);
    let mut annotations = meta.annotations.take().unwrap_or_default();
    // Others (e.g. `cert-manager.io/allow-direct-injection`, for cainjector) are the user's.
    annotations.retain(|key, _| !CERT_MANAGER_ANNOTATIONS.iter().any(|prefix| key.starts_with(prefix)));
    annotations.extend(built.metadata.annotations.unwrap_or_default());
    meta.annotations = Some(annotations);
    if let Some(owners) = meta.owner_references.as_mut() {
        owners.retain(|owner| !owner.api_version.starts_with("cert-manager.io/"));
    }
    let mut data = secret.data.take().unwrap_or_default();
    data.retain(|key, _| !CERT_MANAGER_KEYS.contains(&key.as_str()));
    data.extend(built.data.unwrap_or_default());
    secret.data = Some(data);
    secret.string_data = None;
    secret.type_ = built.type_;
    secret
}

fn stored_certificate(secret: &Secret) -> Result<StoredCertificate, Unusable> {
    let unreadable = |why: String| Unusable::Unreadable(why);
    let chain = data(secret, TLS_CERT).ok_or_else(|| unreadable("it has no tls.crt".into()))?;
    let info = parse_chain(chain).map_err(|e| unreadable(format!("tls.crt: {e}")))?;
    let key = stored_key(secret).map_err(unreadable)?;
    if key.public_key_info() != info.public_key_info {
        return Err(Unusable::KeyMismatch);
    }
    let ari_id = crate::pki::cert::pem_certificates(chain).ok().and_then(|ders| ari_identifier(&ders[0]));
    Ok(StoredCertificate { info, issuer: stored_issuer(secret), key: key.describe(), ari_id, outputs: outputs(secret) })
}

/// The additional output formats whose keys the Secret holds. Only their presence is looked
/// at: keystores are encrypted anew (random salts) on every write, so their bytes never match
/// a fresh encoding, and comparing them would rewrite the Secret forever.
fn outputs(secret: &Secret) -> Vec<OutputFormatType> {
    let all = [OutputFormatType::CombinedPEM, OutputFormatType::DER, OutputFormatType::PKCS12, OutputFormatType::JKS];
    all.into_iter().filter(|format| data(secret, format.data_key()).is_some()).collect()
}

/// The certificate in the Secret, when attempt `attempt` wrote it and it is intact.
pub fn written_by_attempt(secret: &Secret, attempt: &str) -> Option<CertInfo> {
    let annotations = secret.metadata.annotations.as_ref()?;
    (annotations.get(ATTEMPT_ANNOTATION).map(String::as_str) == Some(attempt)).then_some(())?;
    stored_certificate(secret).ok().map(|stored| stored.info)
}

/// The RFC 9773 identifier of a certificate (`<base64url AKI>.<base64url serial>`).
pub fn ari_identifier(der: &[u8]) -> Option<String> {
    let der = rustls_pki_types::CertificateDer::from(der.to_vec());
    instant_acme::CertificateIdentifier::try_from(&der).ok().map(|id| id.to_string())
}

/// The private key in the Secret, if it holds a readable one.
pub fn stored_key(secret: &Secret) -> Result<PrivateKey, String> {
    let pem = data(secret, TLS_KEY).ok_or("it has no tls.key")?;
    let pem = std::str::from_utf8(pem).map_err(|_| "tls.key is not PEM text".to_string())?;
    PrivateKey::from_pem(pem).map_err(|e| format!("tls.key: {e}"))
}

fn stored_issuer(secret: &Secret) -> Option<IssuerRef> {
    let annotations = secret.metadata.annotations.as_ref()?;
    let kind = match annotations.get(ISSUER_KIND_ANNOTATION)?.as_str() {
        "ClusterIssuer" => IssuerKind::ClusterIssuer,
        "Issuer" => IssuerKind::Issuer,
        _ => return None,
    };
    Some(IssuerRef { kind, name: annotations.get(ISSUER_NAME_ANNOTATION)?.clone() })
}

/// Everything that goes into the Secret.
pub struct SecretContents<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub certificate: &'a str,
    pub attempt: &'a str,
    pub issuer: &'a IssuerRef,
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
    pub key_der: &'a [u8],
    pub ca_pem: &'a str,
    pub template: Option<&'a SecretTemplate>,
    pub output_formats: &'a [OutputFormatType],
    /// The keystores among the output formats, with their passwords.
    pub keystores: &'a [Keystore],
    pub info: &'a CertInfo,
}

/// The Secret to apply: `kubernetes.io/tls` with the chain, key and CA, the template's labels
/// and annotations, and certpilot's own labels (which the template cannot override).
pub fn build(c: &SecretContents) -> Result<Secret, KeystoreError> {
    let mut labels: BTreeMap<String, String> = c.template.map(|t| t.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(CERTIFICATE_NAME_LABEL.into(), label_value(c.certificate));
    let mut annotations: BTreeMap<String, String> = c.template.map(|t| t.annotations.clone()).unwrap_or_default();
    annotations.insert(ISSUER_KIND_ANNOTATION.into(), format!("{:?}", c.issuer.kind));
    annotations.insert(ISSUER_NAME_ANNOTATION.into(), c.issuer.name.clone());
    annotations.insert(ATTEMPT_ANNOTATION.into(), c.attempt.into());
    annotations.insert("certpilot.dev/serial-number".into(), c.info.serial_hex.clone());
    annotations.insert("certpilot.dev/not-after".into(), c.info.not_after.to_string());
    let mut data = BTreeMap::from([
        (TLS_CERT.to_string(), ByteString(c.chain_pem.as_bytes().to_vec())),
        (TLS_KEY.to_string(), ByteString(c.key_pem.as_bytes().to_vec())),
        (CA_CERT.to_string(), ByteString(c.ca_pem.as_bytes().to_vec())),
    ]);
    for format in c.output_formats {
        match format {
            OutputFormatType::CombinedPEM => {
                let combined = format!("{}\n{}", c.key_pem.trim_end(), c.chain_pem);
                data.insert(format.data_key().into(), ByteString(combined.into_bytes()));
            }
            OutputFormatType::DER => {
                data.insert(format.data_key().into(), ByteString(c.key_der.to_vec()));
            }
            // Encoded below, with the passwords read for them.
            OutputFormatType::PKCS12 | OutputFormatType::JKS => {}
        }
    }
    let material = Material { alias: c.certificate, key_der: c.key_der, chain_pem: c.chain_pem, ca_pem: c.ca_pem };
    for keystore in c.keystores {
        data.insert(keystore.data_key().into(), ByteString(keystore.encode(&material)?));
    }
    let mut secret = Secret { type_: Some("kubernetes.io/tls".into()), data: Some(data), ..Default::default() };
    secret.metadata.name = Some(c.name.into());
    secret.metadata.namespace = Some(c.namespace.into());
    secret.metadata.labels = Some(labels);
    secret.metadata.annotations = Some(annotations);
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_certificate_writes_its_secret_under_a_manager_of_its_own() {
        assert_eq!(field_manager("web"), "certpilot/web");
        assert_ne!(field_manager("web"), field_manager("api"));
        assert!(field_manager(&"x".repeat(253)).len() <= 128, "the API server's limit for field managers");
        for ours in ["certpilot", "certpilot/web"] {
            assert!(is_certpilot_manager(ours), "{ours}");
        }
        for theirs in ["certpilot-cli", "certpilotx/web", "kubectl", "cert-manager-certificates"] {
            assert!(!is_certpilot_manager(theirs), "{theirs}");
        }
    }

    #[test]
    fn label_values_fit_and_stay_unique() {
        assert_eq!(label_value("short"), "short");
        let a = label_value(&"a".repeat(100));
        let b = label_value(&format!("{}b", "a".repeat(99)));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
    }

    #[test]
    fn only_our_or_adopted_secrets_may_be_written() {
        let mut s = Secret::default();
        assert!(!may_write(&s.metadata, "web"));
        assert_eq!(classify(Some(&s), "web"), SecretState::NotOwned { holder: None });
        s.metadata.labels = Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
            (CERTIFICATE_NAME_LABEL.to_string(), "other".to_string()),
        ]));
        assert!(!may_write(&s.metadata, "web"), "another Certificate's Secret is not ours");
        s.metadata.labels.as_mut().unwrap().insert(CERTIFICATE_NAME_LABEL.to_string(), "web".to_string());
        assert!(!may_write(&s.metadata, "web"), "labels anyone can set do not make a Secret certpilot's");
        s.metadata.managed_fields = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            ..Default::default()
        }]);
        assert!(may_write(&s.metadata, "web"), "certpilot wrote it for this Certificate");
        s.metadata.managed_fields = None;
        s.metadata.annotations = Some(BTreeMap::from([(ADOPT_ANNOTATION.to_string(), "true".to_string())]));
        assert!(may_write(&s.metadata, "web"));
        assert!(matches!(classify(Some(&s), "web"), SecretState::Invalid(why) if why.contains("tls.crt")));
        s.type_ = Some("Opaque".into());
        let opaque = classify(Some(&s), "web");
        assert!(matches!(&opaque, SecretState::Invalid(why) if why.contains("type is Opaque")), "{opaque:?}");
        assert_eq!(classify(None, "web"), SecretState::Missing);
    }

    /// A Secret as cert-manager writes it for Certificate `web`, with a certificate for `names`
    /// valid for a day more, plus what a user added (a key, a label, an annotation).
    fn cert_manager_secret(names: &[&str]) -> Secret {
        let key = PrivateKey::generate(&Default::default()).unwrap();
        let request = NameRequest { dns_names: names.iter().map(|n| n.to_string()).collect(), ..Default::default() };
        let now = Timestamp::now();
        let hour = jiff::SignedDuration::from_hours(1);
        let sign = crate::pki::sign::SignRequest {
            names: &request,
            key: &key,
            not_before: now - hour,
            not_after: now + 24 * hour,
            is_ca: false,
        };
        let pem = crate::pki::sign::self_signed(&sign).unwrap();
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let mut secret = Secret { type_: Some("kubernetes.io/tls".into()), ..Default::default() };
        secret.data = Some(BTreeMap::from([
            (TLS_CERT.to_string(), bytes(&pem)),
            (TLS_KEY.to_string(), bytes(&key.to_pem(Default::default()).unwrap())),
            (CA_CERT.to_string(), bytes(&pem)),
            ("key.der".to_string(), ByteString(key.pkcs8_der())),
            ("extra".to_string(), bytes("the user's")),
        ]));
        let meta = &mut secret.metadata;
        meta.resource_version = Some("7".into());
        meta.annotations = Some(BTreeMap::from(
            [
                (CERT_MANAGER_CERTIFICATE_ANNOTATION, "web"),
                ("cert-manager.io/issuer-name", "selfsigned"),
                ("cert-manager.io/subject-organizations", "shop"),
                ("cert-manager.io/allow-direct-injection", "true"),
                ("owner", "shop@example.com"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        ));
        meta.labels = Some(BTreeMap::from(
            [("controller.cert-manager.io/fao", "true"), ("team", "shop")].map(|(k, v)| (k.to_string(), v.to_string())),
        ));
        meta.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "cert-manager.io/v1".into(),
            kind: "Certificate".into(),
            name: "web".into(),
            ..Default::default()
        }]);
        meta.managed_fields = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
            manager: Some("cert-manager-certificates".into()),
            ..Default::default()
        }]);
        secret
    }

    fn web_names() -> NameRequest {
        NameRequest { dns_names: vec!["web.example.com".into()], ..Default::default() }
    }

    #[test]
    fn cert_manager_secrets_are_adopted_only_when_they_qualify() {
        let now = Timestamp::now();
        let secret = cert_manager_secret(&["web.example.com"]);
        let adopted = classify_adopting(Some(&secret), "web", &web_names(), now);
        assert!(matches!(&adopted, SecretState::Adopted(s) if s.info.dns_names == ["web.example.com"]), "{adopted:?}");
        assert!(may_take_over(&secret, "web", &web_names(), now));
        assert!(!may_write(&secret.metadata, "web"), "adoption is decided anew, never remembered");
        // Expired by the time it would be written: not taken over.
        let later = now + jiff::SignedDuration::from_hours(25);
        assert!(!may_take_over(&secret, "web", &web_names(), later));
        let other = classify_adopting(Some(&cert_manager_secret(&["old.example.com"])), "web", &web_names(), now);
        let SecretState::NotAdoptable { reason } = other else { panic!("{other:?}") };
        assert_eq!(reason.to_string(), "names differ: missing web.example.com; extra old.example.com");
        assert_eq!(
            classify_adopting(Some(&secret), "api", &web_names(), now),
            SecretState::NotAdoptable { reason: adopt::NotAdoptable::OtherCertificate("web".into()) }
        );
        let mut foreign = secret.clone();
        foreign.metadata.annotations = None;
        assert_eq!(classify_adopting(Some(&foreign), "web", &web_names(), now), SecretState::NotOwned { holder: None });
        assert!(!may_take_over(&foreign, "web", &web_names(), now));
        assert_eq!(classify_adopting(None, "web", &web_names(), now), SecretState::Missing);
    }

    #[test]
    fn taking_over_keeps_what_is_the_users_and_drops_what_describes_the_old_certificate() {
        let existing = cert_manager_secret(&["web.example.com"]);
        let mut built = Secret { type_: Some("kubernetes.io/tls".into()), ..Default::default() };
        built.data = Some(BTreeMap::from([
            (TLS_CERT.to_string(), ByteString(b"new chain".to_vec())),
            (TLS_KEY.to_string(), ByteString(b"new key".to_vec())),
        ]));
        built.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]));
        built.metadata.annotations = Some(BTreeMap::from([(ATTEMPT_ANNOTATION.to_string(), "web-1".to_string())]));
        let taken = taken_over(&existing, built);
        let data = taken.data.as_ref().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["extra", TLS_CERT, TLS_KEY], "cert-manager's ca.crt and key.der would be stale");
        assert_eq!(data[TLS_CERT].0, b"new chain");
        let annotations: Vec<&str> = taken.metadata.annotations.as_ref().unwrap().keys().map(String::as_str).collect();
        assert_eq!(annotations, ["cert-manager.io/allow-direct-injection", ATTEMPT_ANNOTATION, "owner"]);
        let labels: Vec<&str> = taken.metadata.labels.as_ref().unwrap().keys().map(String::as_str).collect();
        assert_eq!(labels, [MANAGED_BY_LABEL, "team"]);
        assert_eq!(taken.metadata.owner_references, Some(vec![]), "cert-manager's Certificate must not delete it");
        assert_eq!(taken.metadata.managed_fields, None);
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("7"), "replaced only if unchanged");
    }

    #[test]
    fn keystores_are_written_under_their_keys() {
        let key = PrivateKey::generate(&Default::default()).unwrap();
        let names = crate::pki::NameRequest { dns_names: vec!["web.example.com".into()], ..Default::default() };
        let now = jiff::Timestamp::now();
        let request = crate::pki::sign::SignRequest {
            names: &names,
            key: &key,
            not_before: now,
            not_after: now + jiff::SignedDuration::from_hours(1),
            is_ca: false,
        };
        let pem = crate::pki::sign::self_signed(&request).unwrap();
        let key_pem = key.to_pem(Default::default()).unwrap();
        let info = parse_chain(pem.as_bytes()).unwrap();
        let issuer = IssuerRef { kind: IssuerKind::Issuer, name: "self".into() };
        let keystores = [
            Keystore::Pkcs12 { profile: Default::default(), password: "s3cret".into() },
            Keystore::Jks { password: "changeit".into() },
        ];
        let formats = [OutputFormatType::PKCS12, OutputFormatType::JKS, OutputFormatType::DER];
        let built = build(&SecretContents {
            name: "web-tls",
            namespace: "shop",
            certificate: "web",
            attempt: "web-1",
            issuer: &issuer,
            chain_pem: &pem,
            key_pem: &key_pem,
            key_der: &key.pkcs8_der(),
            ca_pem: &pem,
            template: None,
            output_formats: &formats,
            keystores: &keystores,
            info: &info,
        })
        .unwrap();
        let data = built.data.as_ref().unwrap();
        for key in ["keystore.p12", "keystore.jks", "key.der", TLS_CERT, TLS_KEY, CA_CERT] {
            assert!(data.get(key).is_some_and(|v| !v.0.is_empty()), "{key}");
        }
        let mut written = built.clone();
        written.metadata.annotations.as_mut().unwrap().insert(ADOPT_ANNOTATION.into(), "true".into());
        let SecretState::Present(stored) = classify(Some(&written), "web") else { panic!("a whole Secret") };
        assert_eq!(stored.outputs, [OutputFormatType::DER, OutputFormatType::PKCS12, OutputFormatType::JKS]);
    }
}
