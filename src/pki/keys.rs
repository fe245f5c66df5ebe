//! Private keys: generation for every supported algorithm, PEM encodings, and matching a key
//! against the settings a Certificate asks for.

use super::PkiError;
use crate::api::certificate::{KeyAlgorithm, KeyEncoding, PrivateKeySpec};
use rcgen::{KeyPair, PublicKeyData, RsaKeySize, SignatureAlgorithm};

/// A private key and the algorithm family/size it was made for.
pub struct PrivateKey {
    pair: KeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey").field("algorithm", &self.describe()).finish_non_exhaustive()
    }
}

/// The size a spec asks for, with the defaults filled in.
pub fn effective_size(spec: &PrivateKeySpec) -> Option<i32> {
    match spec.algorithm {
        KeyAlgorithm::Ecdsa => Some(spec.size.unwrap_or(256)),
        KeyAlgorithm::Rsa => Some(spec.size.unwrap_or(2048)),
        KeyAlgorithm::Ed25519 => None,
    }
}

/// `ECDSA-256`, `RSA-2048`, `Ed25519`: how attempts and status name a key.
pub fn describe_spec(spec: &PrivateKeySpec) -> String {
    match (spec.algorithm, effective_size(spec)) {
        (KeyAlgorithm::Ecdsa, Some(size)) => format!("ECDSA-{size}"),
        (KeyAlgorithm::Rsa, Some(size)) => format!("RSA-{size}"),
        _ => "Ed25519".into(),
    }
}

fn signature_algorithm(spec: &PrivateKeySpec) -> &'static SignatureAlgorithm {
    match (spec.algorithm, effective_size(spec)) {
        (KeyAlgorithm::Ecdsa, Some(384)) => &rcgen::PKCS_ECDSA_P384_SHA384,
        (KeyAlgorithm::Ecdsa, _) => &rcgen::PKCS_ECDSA_P256_SHA256,
        (KeyAlgorithm::Rsa, _) => &rcgen::PKCS_RSA_SHA256,
        (KeyAlgorithm::Ed25519, _) => &rcgen::PKCS_ED25519,
    }
}

impl PrivateKey {
    /// A fresh key as `spec` asks.
    pub fn generate(spec: &PrivateKeySpec) -> Result<Self, PkiError> {
        let alg = signature_algorithm(spec);
        let pair = match (spec.algorithm, effective_size(spec)) {
            (KeyAlgorithm::Rsa, Some(bits)) => {
                let size = match bits {
                    3072 => RsaKeySize::_3072,
                    4096 => RsaKeySize::_4096,
                    _ => RsaKeySize::_2048,
                };
                KeyPair::generate_rsa_for(alg, size)
            }
            _ => KeyPair::generate_for(alg),
        }
        .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
        Ok(Self { pair })
    }

    /// Reads a PEM key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let pair = KeyPair::from_pem(pem).map_err(|e| PkiError::KeyParse(e.to_string()))?;
        Ok(Self { pair })
    }

    /// A second handle on the same key (keys are not `Clone`).
    pub fn clone_pem(&self) -> Result<Self, PkiError> {
        Self::from_pem(&self.pair.serialize_pem())
    }

    pub fn key_pair(&self) -> &KeyPair {
        &self.pair
    }

    /// DER SubjectPublicKeyInfo, as it appears in a certificate.
    pub fn public_key_info(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// PKCS#8 DER, version 1 (RFC 5208). Ed25519 keys come from the crypto library as version 2
    /// (RFC 5958, the public key inside too), which OpenSSL 3.0 and Python's `cryptography`
    /// refuse to read; every common TLS stack reads version 1.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        let der = self.pair.serialize_der();
        without_public_key(&der).unwrap_or(der)
    }

    /// PEM in the requested encoding (PKCS#1 only applies to RSA; other keys stay PKCS#8).
    pub fn to_pem(&self, encoding: KeyEncoding) -> Result<String, PkiError> {
        if encoding == KeyEncoding::Pkcs8 || !self.is_rsa() {
            return Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8_der())));
        }
        let der = self.pkcs8_der();
        let info = <pkcs8::PrivateKeyInfo as pkcs8::der::Decode>::from_der(&der)
            .map_err(|e| PkiError::KeyParse(e.to_string()))?;
        Ok(pem::encode(&pem::Pem::new("RSA PRIVATE KEY", info.private_key.to_vec())))
    }

    fn is_rsa(&self) -> bool {
        self.pair.is_compatible(&rcgen::PKCS_RSA_SHA256)
    }

    /// `ECDSA-256`, `RSA-2048`… of this key.
    pub fn describe(&self) -> String {
        let spki = self.public_key_info();
        if self.pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            "ECDSA-256".into()
        } else if self.pair.is_compatible(&rcgen::PKCS_ECDSA_P384_SHA384) {
            "ECDSA-384".into()
        } else if self.pair.is_compatible(&rcgen::PKCS_ED25519) {
            "Ed25519".into()
        } else {
            format!("RSA-{}", rsa_bits(&spki).unwrap_or(0))
        }
    }

    /// Whether this key is what `spec` asks for (so a `rotationPolicy: Never` renewal may keep it).
    pub fn matches(&self, spec: &PrivateKeySpec) -> bool {
        self.describe() == describe_spec(spec)
    }
}

/// A PKCS#8 version 2 key as version 1 (`None` when it already is, or cannot be read).
fn without_public_key(der: &[u8]) -> Option<Vec<u8>> {
    use pkcs8::der::{Decode, Encode};
    let mut info = pkcs8::PrivateKeyInfo::from_der(der).ok()?;
    info.public_key.take()?;
    info.to_der().ok()
}

/// Modulus size of an RSA SubjectPublicKeyInfo.
pub(crate) fn rsa_bits(spki: &[u8]) -> Option<usize> {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).ok()?;
    match info.parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(rsa) => Some(rsa.key_size()),
        _ => None,
    }
}

/// `ECDSA-256`, `RSA-2048`, `Ed25519`… of a SubjectPublicKeyInfo (a certificate's key), in
/// the words [`PrivateKey::describe`] uses.
pub fn describe_public_key(spki: &[u8]) -> String {
    use x509_parser::{prelude::FromDer, public_key::PublicKey};
    let Ok((_, info)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki) else {
        return "unreadable".into();
    };
    match info.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => format!("ECDSA-{}", point.key_size()),
        _ if info.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => "Ed25519".into(),
        _ => info.algorithm.algorithm.to_id_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_described_as_private_keys_are() {
        for (alg, size) in [
            (KeyAlgorithm::Ecdsa, None),
            (KeyAlgorithm::Ecdsa, Some(384)),
            (KeyAlgorithm::Ed25519, None),
            (KeyAlgorithm::Rsa, Some(2048)),
        ] {
            let key = PrivateKey::generate(&spec(alg, size)).unwrap();
            assert_eq!(describe_public_key(&key.public_key_info()), key.describe());
        }
    }

    fn spec(algorithm: KeyAlgorithm, size: Option<i32>) -> PrivateKeySpec {
        PrivateKeySpec { algorithm, size, ..Default::default() }
    }

    #[test]
    fn every_algorithm_generates_round_trips_and_matches() {
        for (alg, size, name) in [
            (KeyAlgorithm::Ecdsa, None, "ECDSA-256"),
            (KeyAlgorithm::Ecdsa, Some(384), "ECDSA-384"),
            (KeyAlgorithm::Ed25519, None, "Ed25519"),
            (KeyAlgorithm::Rsa, Some(2048), "RSA-2048"),
        ] {
            let s = spec(alg, size);
            let key = PrivateKey::generate(&s).unwrap();
            assert_eq!(key.describe(), name);
            assert!(key.matches(&s));
            let reread = PrivateKey::from_pem(&key.to_pem(KeyEncoding::Pkcs8).unwrap()).unwrap();
            assert_eq!(reread.public_key_info(), key.public_key_info());
        }
        assert!(
            !PrivateKey::generate(&spec(KeyAlgorithm::Ecdsa, None))
                .unwrap()
                .matches(&spec(KeyAlgorithm::Ecdsa, Some(384)))
        );
    }

    #[test]
    fn keys_are_written_as_pkcs8_version_1() {
        use pkcs8::der::Decode;
        for (alg, size) in [(KeyAlgorithm::Ed25519, None), (KeyAlgorithm::Ecdsa, None), (KeyAlgorithm::Rsa, Some(2048))]
        {
            let key = PrivateKey::generate(&spec(alg, size)).unwrap();
            let der = key.pkcs8_der();
            let info = pkcs8::PrivateKeyInfo::from_der(&der).unwrap();
            assert_eq!(info.version(), pkcs8::Version::V1, "{alg:?}");
            let reread = PrivateKey::from_pem(&key.to_pem(KeyEncoding::Pkcs8).unwrap()).unwrap();
            assert_eq!(reread.public_key_info(), key.public_key_info(), "{alg:?} reads back");
        }
    }

    #[test]
    fn rsa_keys_can_be_written_as_pkcs1() {
        let key = PrivateKey::generate(&spec(KeyAlgorithm::Rsa, Some(2048))).unwrap();
        let pem = key.to_pem(KeyEncoding::Pkcs1).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert_eq!(PrivateKey::from_pem(&pem).unwrap().public_key_info(), key.public_key_info());
        let ec = PrivateKey::generate(&spec(KeyAlgorithm::Ecdsa, None)).unwrap();
        assert!(ec.to_pem(KeyEncoding::Pkcs1).unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    }
}
