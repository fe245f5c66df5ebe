//! Every private key certpilot writes, in every encoding, is read by OpenSSL (the `openssl`
//! binary of the machine: 3.0 on Debian 12, the version that refuses PKCS#8 version 2) as the
//! same key.

use certpilot::{
    api::request::{KeyAlgorithm, KeyEncoding, PrivateKeySpec},
    pki::keys::PrivateKey,
};
use std::process::Command;

/// The DER SubjectPublicKeyInfo OpenSSL reads from `pem`, or its complaint.
fn openssl_public_key(pem: &str) -> Result<Vec<u8>, String> {
    let dir = std::env::temp_dir().join(format!("certpilot-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{:x}.pem", digest_of(pem)));
    std::fs::write(&path, pem).unwrap();
    let out = Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(&path)
        .args(["-pubout", "-outform", "DER"])
        .output()
        .expect("openssl runs");
    let _ = std::fs::remove_file(&path);
    if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

fn digest_of(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[test]
fn openssl_reads_every_key_type_in_every_encoding() {
    let kinds = [
        (KeyAlgorithm::Ecdsa, None, "ECDSA-256"),
        (KeyAlgorithm::Ecdsa, Some(384), "ECDSA-384"),
        (KeyAlgorithm::Rsa, Some(2048), "RSA-2048"),
        (KeyAlgorithm::Rsa, Some(3072), "RSA-3072"),
        (KeyAlgorithm::Ed25519, None, "Ed25519"),
    ];
    for (algorithm, size, name) in kinds {
        let key = PrivateKey::generate(&PrivateKeySpec { algorithm, size, ..Default::default() }).unwrap();
        assert_eq!(key.describe(), name);
        for encoding in [KeyEncoding::Pkcs8, KeyEncoding::Pkcs1] {
            let pem = key.to_pem(encoding).unwrap();
            let read = openssl_public_key(&pem).unwrap_or_else(|e| panic!("{name} as {encoding:?}: {e}"));
            assert_eq!(read, key.public_key_info(), "{name} as {encoding:?}: OpenSSL read another key");
        }
    }
}
