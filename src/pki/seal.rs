//! Sealing an ACME attempt's new private key into its status, where a restarted operator finds
//! it (the CA may have the CSR already: a new key would need a second certificate). AES-256-GCM
//! with certpilot's sealing key, the attempt's uid as associated data: a sealed key opens only
//! in the attempt it was sealed for, and a changed byte is refused, never read as another key.
//!
//! Sealed form: `v1.<key id>.<base64 of nonce and ciphertext>`; the key id (the first 8 bytes of
//! the sealing key's SHA-256, in hex) tells a key sealed with another sealing key (the Secret
//! holding it was deleted or replaced) from one that was tampered with.

use super::{PkiError, PrivateKey};
use crate::api::certificate::KeyEncoding;
use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest::{SHA256, digest},
    rand::{SecureRandom, SystemRandom},
};
use base64::{Engine, engine::general_purpose::STANDARD};

const VERSION: &str = "v1";

/// Why a sealed key does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("a sealing key must be {expected} bytes, not {found}")]
    KeyLength { expected: usize, found: usize },
    #[error("it was sealed with another sealing key (id {sealed_with}; the current one is {current})")]
    OtherKey { sealed_with: String, current: String },
    #[error("it is not a sealed key of a form this certpilot reads")]
    Malformed,
    #[error("it does not open: it was changed, or sealed for another attempt")]
    Refused,
    #[error("the system's random number generator failed")]
    Random,
    #[error("the key inside: {0}")]
    Key(String),
}

/// The key keys are sealed with.
pub struct SealingKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SealingKey {
    /// Length of a sealing key in bytes.
    pub const LEN: usize = 32;

    /// Fresh random key material.
    pub fn generate() -> Result<Vec<u8>, SealError> {
        let mut bytes = vec![0u8; Self::LEN];
        SystemRandom::new().fill(&mut bytes).map_err(|_| SealError::Random)?;
        Ok(bytes)
    }

    pub fn new(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != Self::LEN {
            return Err(SealError::KeyLength { expected: Self::LEN, found: bytes.len() });
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::Malformed)?;
        let id = digest(&SHA256, bytes).as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { key: LessSafeKey::new(unbound), id })
    }

    /// Which sealing key this is (not secret: a hash prefix).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `plaintext` sealed for `bound_to` (an attempt's uid).
    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(bound_to.as_bytes()), &mut sealed)
            .map_err(|_| SealError::Malformed)?;
        let mut body = nonce.to_vec();
        body.extend_from_slice(&sealed);
        Ok(format!("{VERSION}.{}.{}", self.id, STANDARD.encode(body)))
    }

    /// What `seal` sealed for `bound_to`.
    pub fn open(&self, sealed: &str, bound_to: &str) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Malformed);
        };
        if id != self.id {
            return Err(SealError::OtherKey { sealed_with: id.to_string(), current: self.id.clone() });
        }
        let mut body = STANDARD.decode(body).map_err(|_| SealError::Malformed)?;
        if body.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let mut ciphertext = body.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&body).map_err(|_| SealError::Malformed)?;
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(bound_to.as_bytes()), &mut ciphertext)
            .map_err(|_| SealError::Refused)?;
        Ok(opened.to_vec())
    }

    /// A private key sealed for `bound_to`.
    pub fn seal_key(&self, key: &PrivateKey, bound_to: &str) -> Result<String, SealError> {
        let pem = key.to_pem(KeyEncoding::Pkcs8).map_err(|e: PkiError| SealError::Key(e.to_string()))?;
        self.seal(pem.as_bytes(), bound_to)
    }

    /// The private key `seal_key` sealed for `bound_to`.
    pub fn open_key(&self, sealed: &str, bound_to: &str) -> Result<PrivateKey, SealError> {
        let pem = String::from_utf8(self.open(sealed, bound_to)?).map_err(|_| SealError::Malformed)?;
        PrivateKey::from_pem(&pem).map_err(|e| SealError::Key(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::certificate::PrivateKeySpec;

    fn sealing_key() -> SealingKey {
        SealingKey::new(&SealingKey::generate().unwrap()).unwrap()
    }

    #[test]
    fn a_sealed_key_opens_in_its_attempt() {
        let sealing = sealing_key();
        let key = PrivateKey::generate(&PrivateKeySpec::default()).unwrap();
        let sealed = sealing.seal_key(&key, "uid-1").unwrap();
        assert!(sealed.starts_with(&format!("v1.{}.", sealing.id())), "{sealed}");
        let opened = sealing.open_key(&sealed, "uid-1").unwrap();
        assert_eq!(opened.public_key_info(), key.public_key_info());
        // A fresh nonce each time: the same key never seals to the same text.
        assert_ne!(sealing.seal_key(&key, "uid-1").unwrap(), sealed);
    }

    #[test]
    fn a_sealed_key_does_not_open_in_another_attempt() {
        let sealing = sealing_key();
        let sealed = sealing.seal(b"secret", "uid-1").unwrap();
        assert_eq!(sealing.open(&sealed, "uid-2"), Err(SealError::Refused));
    }

    #[test]
    fn a_changed_byte_is_refused() {
        let sealing = sealing_key();
        let sealed = sealing.seal(b"secret", "uid-1").unwrap();
        let (head, body) = sealed.rsplit_once('.').unwrap();
        let mut bytes = STANDARD.decode(body).unwrap();
        for at in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[at] ^= 1;
            let changed = format!("{head}.{}", STANDARD.encode(&bytes));
            assert_eq!(sealing.open(&changed, "uid-1"), Err(SealError::Refused), "byte {at}");
            bytes[at] ^= 1;
        }
        assert_eq!(sealing.open(&format!("{head}.{}", STANDARD.encode(&bytes)), "uid-1").unwrap(), b"secret");
    }

    #[test]
    fn another_sealing_key_and_malformed_text_are_told_apart() {
        let sealed = sealing_key().seal(b"secret", "uid-1").unwrap();
        let other = sealing_key();
        assert!(matches!(other.open(&sealed, "uid-1"), Err(SealError::OtherKey { .. })));
        for text in
            ["", "v1", "v2.ab.cd", &format!("v1.{}.not base64!", other.id()), &format!("v1.{}.AAAA", other.id())]
        {
            assert_eq!(other.open(text, "uid-1"), Err(SealError::Malformed), "{text:?}");
        }
        assert_eq!(SealingKey::new(&[0; 16]).unwrap_err(), SealError::KeyLength { expected: 32, found: 16 });
    }
}
