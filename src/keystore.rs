//! Keystores for TLS stacks that do not read PEM (Java above all): PKCS#12, encoded by
//! `p12-keystore`, and JKS, encoded by `jks`. Each holds one entry: the private key with the
//! certificate and its chain, under a password the user keeps in a Secret.

use crate::api::certificate::{OutputFormat, OutputFormatType, Pkcs12Profile};
use k8s_openapi::api::core::v1::Secret;
use p12_keystore::{EncryptionAlgorithm, MacAlgorithm};

/// keytool refuses JKS passwords shorter than this, and so does the JKS encoder.
pub const JKS_MIN_PASSWORD: usize = 6;

/// A keystore to write, and the password it is written under.
#[derive(Clone, PartialEq)]
pub enum Keystore {
    Pkcs12 { profile: Pkcs12Profile, password: String },
    Jks { password: String },
}

// The password stays out of logs and failure messages.
impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pkcs12 { profile, .. } => write!(f, "Pkcs12({profile:?})"),
            Self::Jks { .. } => f.write_str("Jks"),
        }
    }
}

/// What goes into a keystore's one entry.
pub struct Material<'a> {
    /// The entry's alias (PKCS#12: the key's friendly name): the Certificate's name.
    pub alias: &'a str,
    /// The private key, PKCS#8 DER.
    pub key_der: &'a [u8],
    /// The leaf certificate first, then the intermediates (PEM).
    pub chain_pem: &'a str,
    /// The CA certificates (PEM); those the chain already holds are not repeated.
    pub ca_pem: &'a str,
}

/// Why a keystore's password cannot be had. Every message names the Secret and the key, and
/// says how to put it right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PasswordProblem {
    #[error(
        "additionalOutputFormats {format:?} has no passwordSecretRef; name the Secret and key that hold the keystore password"
    )]
    NoReference { format: OutputFormatType },
    #[error(
        "Secret {secret} with the {format:?} keystore password does not exist; create it in the Certificate's namespace with the password under key {key:?} (kubectl create secret generic {secret} --from-literal={key}=...)"
    )]
    SecretMissing { format: OutputFormatType, secret: String, key: String },
    #[error(
        "Secret {secret} has no key {key:?} for the {format:?} keystore password; add the password under that key, or point passwordSecretRef.key at the key that holds it"
    )]
    KeyMissing { format: OutputFormatType, secret: String, key: String },
    #[error("the {format:?} keystore password in Secret {secret}, key {key:?}, is not UTF-8 text; store it as text")]
    NotText { format: OutputFormatType, secret: String, key: String },
    #[error(
        "the JKS keystore password in Secret {secret}, key {key:?}, must be at least {JKS_MIN_PASSWORD} ASCII characters (as keytool requires); store a longer one"
    )]
    UnfitForJks { secret: String, key: String },
}

/// Why a keystore could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("the certificates for the keystore cannot be read: {0}")]
    Certificates(#[from] crate::pki::PkiError),
    #[error("PKCS#12 keystore: {0}")]
    Pkcs12(#[from] p12_keystore::error::Error),
    #[error("JKS keystore: {0}")]
    Jks(#[from] jks::KeyStoreError),
}

/// The keystore `format` asks for, with its password from `secret` (the Secret its
/// `passwordSecretRef` names, `None` when there is none); `None` for formats that are not keystores.
pub fn keystore(format: &OutputFormat, secret: Option<&Secret>) -> Option<Result<Keystore, PasswordProblem>> {
    format.type_.is_keystore().then(|| {
        let password = password(format, secret)?;
        Ok(match format.type_ {
            OutputFormatType::JKS => Keystore::Jks { password },
            _ => Keystore::Pkcs12 { profile: format.profile.unwrap_or_default(), password },
        })
    })
}

fn password(format: &OutputFormat, secret: Option<&Secret>) -> Result<String, PasswordProblem> {
    let type_ = format.type_;
    let reference = format.password_secret_ref.as_ref().ok_or(PasswordProblem::NoReference { format: type_ })?;
    let (name, key) = (reference.name.clone(), reference.key.clone());
    let Some(secret) = secret else {
        return Err(PasswordProblem::SecretMissing { format: type_, secret: name, key });
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(&key)) else {
        return Err(PasswordProblem::KeyMissing { format: type_, secret: name, key });
    };
    let Ok(password) = String::from_utf8(bytes.0.clone()) else {
        return Err(PasswordProblem::NotText { format: type_, secret: name, key });
    };
    // The JKS encoder widens each byte to a Java char: only ASCII comes out as Java reads it.
    if type_ == OutputFormatType::JKS && (password.len() < JKS_MIN_PASSWORD || !password.is_ascii()) {
        return Err(PasswordProblem::UnfitForJks { secret: name, key });
    }
    Ok(password)
}

impl Keystore {
    /// The Secret key it is written to.
    pub fn data_key(&self) -> &'static str {
        match self {
            Self::Pkcs12 { .. } => OutputFormatType::PKCS12.data_key(),
            Self::Jks { .. } => OutputFormatType::JKS.data_key(),
        }
    }

    /// The encoded keystore. Salts and IVs are random: the bytes differ on every call.
    pub fn encode(&self, material: &Material) -> Result<Vec<u8>, KeystoreError> {
        let certificates = certificates(material)?;
        match self {
            Self::Pkcs12 { profile, password } => pkcs12(material, certificates, *profile, password),
            Self::Jks { password } => jks(material, certificates, password),
        }
    }
}

/// The chain, leaf first, then the CA certificates it does not hold yet.
fn certificates(material: &Material) -> Result<Vec<Vec<u8>>, KeystoreError> {
    let mut certificates = crate::pki::cert::pem_certificates(material.chain_pem.as_bytes())?;
    let cas = crate::pki::cert::pem_certificates(material.ca_pem.as_bytes()).unwrap_or_default();
    for ca in cas {
        if !certificates.contains(&ca) {
            certificates.push(ca);
        }
    }
    Ok(certificates)
}

/// Encryption and MAC of each profile, as cert-manager's profiles of the same names (legacy
/// profiles encrypt the key with the certificates' algorithm: the encoder uses one for both).
fn algorithms(profile: Pkcs12Profile) -> (EncryptionAlgorithm, MacAlgorithm) {
    match profile {
        Pkcs12Profile::Modern2023 => (EncryptionAlgorithm::PbeWithHmacSha256AndAes256, MacAlgorithm::HmacSha256),
        // Named RC4 by the encoder, but its identifier is pbeWithSHAAnd40BitRC2-CBC.
        Pkcs12Profile::LegacyRC2 => (EncryptionAlgorithm::PbeWithShaAnd40BitRc4Cbc, MacAlgorithm::HmacSha1),
        Pkcs12Profile::LegacyDES => (EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc, MacAlgorithm::HmacSha1),
    }
}

fn pkcs12(
    material: &Material,
    certificates: Vec<Vec<u8>>,
    profile: Pkcs12Profile,
    password: &str,
) -> Result<Vec<u8>, KeystoreError> {
    let key = p12_keystore::PrivateKey::from_der(material.key_der)?;
    let certificates =
        certificates.iter().map(|der| p12_keystore::Certificate::from_der(der)).collect::<Result<Vec<_>, _>>()?;
    // The local key id ties the key to its certificate; any value unique in the file does.
    let chain = p12_keystore::PrivateKeyChain::new(material.alias, key, certificates);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(material.alias, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let (encryption, mac) = algorithms(profile);
    Ok(store.writer(password).encryption_algorithm(encryption).mac_algorithm(mac).write()?)
}

fn jks(material: &Material, certificates: Vec<Vec<u8>>, password: &str) -> Result<Vec<u8>, KeystoreError> {
    let entry = jks::PrivateKeyEntry {
        creation_time: std::time::SystemTime::now(),
        private_key: material.key_der.to_vec(),
        certificate_chain: certificates
            .into_iter()
            .map(|content| jks::Certificate { cert_type: "X509".into(), content })
            .collect(),
    };
    let mut store = jks::KeyStore::new();
    store.set_private_key_entry(material.alias, entry, password.as_bytes())?;
    let mut out = Vec::new();
    store.store(&mut out, password.as_bytes())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecretKeySelector;
    use k8s_openapi::ByteString;

    fn format(type_: OutputFormatType) -> OutputFormat {
        let reference = SecretKeySelector { name: "store-pass".into(), key: "password".into() };
        OutputFormat { type_, password_secret_ref: Some(reference), profile: None }
    }

    fn secret(key: &str, value: &[u8]) -> Secret {
        Secret { data: Some([(key.to_string(), ByteString(value.to_vec()))].into()), ..Default::default() }
    }

    fn material_for<'a>(key: &'a [u8], pem: &'a str) -> Material<'a> {
        Material { alias: "web", key_der: key, chain_pem: pem, ca_pem: pem }
    }

    fn self_signed() -> (Vec<u8>, String) {
        self_signed_with(Default::default())
    }

    fn self_signed_with(algorithm: crate::api::certificate::KeyAlgorithm) -> (Vec<u8>, String) {
        let spec = crate::api::certificate::PrivateKeySpec { algorithm, ..Default::default() };
        let key = crate::pki::PrivateKey::generate(&spec).unwrap();
        let names = crate::pki::NameRequest { dns_names: vec!["web.example.com".into()], ..Default::default() };
        let now = jiff::Timestamp::now();
        let request = crate::pki::sign::SignRequest {
            names: &names,
            key: &key,
            not_before: now,
            not_after: now + jiff::SignedDuration::from_hours(1),
            is_ca: false,
        };
        (key.pkcs8_der(), crate::pki::sign::self_signed(&request).unwrap())
    }

    #[test]
    fn formats_that_are_not_keystores_need_no_password() {
        assert_eq!(keystore(&OutputFormat::of(OutputFormatType::DER), None), None);
        assert_eq!(keystore(&OutputFormat::of(OutputFormatType::CombinedPEM), None), None);
    }

    #[test]
    fn the_password_comes_from_the_named_key() {
        let found = keystore(&format(OutputFormatType::PKCS12), Some(&secret("password", b"s3cret"))).unwrap();
        assert_eq!(found, Ok(Keystore::Pkcs12 { profile: Pkcs12Profile::Modern2023, password: "s3cret".into() }));
        let legacy = OutputFormat { profile: Some(Pkcs12Profile::LegacyDES), ..format(OutputFormatType::PKCS12) };
        let found = keystore(&legacy, Some(&secret("password", b"s3cret"))).unwrap().unwrap();
        assert!(matches!(found, Keystore::Pkcs12 { profile: Pkcs12Profile::LegacyDES, .. }));
        let jks = keystore(&format(OutputFormatType::JKS), Some(&secret("password", b"changeit"))).unwrap();
        assert_eq!(jks, Ok(Keystore::Jks { password: "changeit".into() }));
    }

    #[test]
    fn password_problems_name_the_secret_and_key() {
        let problem = |type_, secret: Option<Secret>| keystore(&format(type_), secret.as_ref()).unwrap().unwrap_err();
        let missing = problem(OutputFormatType::PKCS12, None);
        assert!(matches!(missing, PasswordProblem::SecretMissing { .. }), "{missing:?}");
        let text = missing.to_string();
        assert!(
            text.contains("Secret store-pass") && text.contains("\"password\"") && text.contains("create"),
            "{text}"
        );
        let no_key = problem(OutputFormatType::PKCS12, Some(secret("other", b"s3cret")));
        assert!(matches!(no_key, PasswordProblem::KeyMissing { .. }) && no_key.to_string().contains("no key"));
        let binary = problem(OutputFormatType::PKCS12, Some(secret("password", &[0xff, 0xfe])));
        assert!(matches!(binary, PasswordProblem::NotText { .. }));
        let short = problem(OutputFormatType::JKS, Some(secret("password", b"12345")));
        assert!(matches!(short, PasswordProblem::UnfitForJks { .. }) && short.to_string().contains("at least 6"));
        let unreferenced = OutputFormat::of(OutputFormatType::JKS);
        let none = keystore(&unreferenced, None).unwrap().unwrap_err();
        assert!(none.to_string().contains("passwordSecretRef"), "{none}");
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let store = Keystore::Jks { password: "hunter2hunter2".into() };
        assert!(!format!("{store:?}").contains("hunter2"));
    }

    #[test]
    fn pkcs12_keystores_read_back_with_key_certificate_and_alias() {
        let (key, pem) = self_signed();
        for profile in [Pkcs12Profile::Modern2023, Pkcs12Profile::LegacyRC2, Pkcs12Profile::LegacyDES] {
            let store = Keystore::Pkcs12 { profile, password: "s3cret".into() };
            let bytes = store.encode(&material_for(&key, &pem)).unwrap();
            let read = p12_keystore::KeyStore::from_pkcs12(&bytes, "s3cret", p12_keystore::Pkcs12ImportPolicy::Strict)
                .unwrap();
            let (alias, chain) = read.private_key_chain().expect("a key entry");
            assert_eq!(alias, "web", "{profile:?}");
            assert_eq!(chain.key().as_der(), key.as_slice(), "{profile:?}");
            assert_eq!(chain.certs().len(), 1, "a self-signed certificate is its own CA: {profile:?}");
            assert!(p12_keystore::KeyStore::from_pkcs12(&bytes, "wrong", Default::default()).is_err());
        }
    }

    #[test]
    fn jks_keystores_read_back_with_key_and_chain() {
        let (key, pem) = self_signed();
        let bytes = Keystore::Jks { password: "changeit".into() }.encode(&material_for(&key, &pem)).unwrap();
        let mut read = jks::KeyStore::new();
        read.load(bytes.as_slice(), b"changeit").unwrap();
        let entry = read.get_private_key_entry("web", b"changeit").unwrap();
        assert_eq!(entry.private_key, key);
        assert_eq!(entry.certificate_chain.len(), 1);
    }

    #[test]
    fn every_key_algorithm_goes_into_both_keystores() {
        use crate::api::certificate::KeyAlgorithm;
        for algorithm in [KeyAlgorithm::Ecdsa, KeyAlgorithm::Rsa, KeyAlgorithm::Ed25519] {
            let (key, pem) = self_signed_with(algorithm);
            let pkcs12 = Keystore::Pkcs12 { profile: Pkcs12Profile::Modern2023, password: "s3cret".into() };
            let jks = Keystore::Jks { password: "changeit".into() };
            for store in [pkcs12, jks] {
                assert!(store.encode(&material_for(&key, &pem)).is_ok(), "{algorithm:?} in {store:?}");
            }
        }
    }

    #[test]
    fn ca_certificates_follow_the_chain_once() {
        let (key, leaf) = self_signed();
        let (_, ca) = self_signed();
        let material = Material { alias: "web", key_der: &key, chain_pem: &format!("{leaf}{ca}"), ca_pem: &ca };
        assert_eq!(certificates(&material).unwrap().len(), 2);
        let material = Material { ca_pem: "", ..material };
        assert_eq!(certificates(&material).unwrap().len(), 2, "a chain without a CA bundle is still whole");
    }
}
