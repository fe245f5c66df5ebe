//! Local signing: self-signed certificates and certificates signed by a CA key pair.

use super::{NameRequest, PkiError, PrivateKey};
use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, SanType, SerialNumber,
};

/// What to sign.
pub struct SignRequest<'a> {
    pub names: &'a NameRequest,
    pub key: &'a PrivateKey,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Make a CA certificate (for bootstrapping a private CA with a self-signed issuer).
    pub is_ca: bool,
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|e| PkiError::Signing(e.to_string()))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    bytes[0] &= 0x7f; // a positive INTEGER
    SerialNumber::from_slice(&bytes)
}

fn params(req: &SignRequest) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = req
        .names
        .dns_names
        .iter()
        .map(|n| rcgen::string::Ia5String::try_from(n.as_str()).map(SanType::DnsName))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Signing(e.to_string()))?;
    params.subject_alt_names.extend(req.names.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut dn = DistinguishedName::new();
    let cn = req
        .names
        .common_name
        .clone()
        .or_else(|| req.names.dns_names.first().cloned())
        .or_else(|| req.names.ip_addresses.first().map(|ip| ip.to_string()));
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    params.not_before = offset(req.not_before)?;
    params.not_after = offset(req.not_after)?;
    params.serial_number = Some(random_serial());
    if req.is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    } else {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A certificate signed by its own key. Returns the PEM certificate.
pub fn self_signed(req: &SignRequest) -> Result<String, PkiError> {
    let cert = params(req)?.self_signed(req.key.key_pair()).map_err(|e| PkiError::Signing(e.to_string()))?;
    Ok(cert.pem())
}

/// A CA able to sign.
pub struct CertificateAuthority {
    pub cert_pem: String,
    pub key: PrivateKey,
    pub info: super::CertInfo,
    /// What names the CA may issue for: a certificate outside them would not verify.
    pub constraints: super::cert::NameConstraints,
}

impl CertificateAuthority {
    /// Loads and checks a CA from the PEM of its certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str, now: Timestamp) -> Result<Self, PkiError> {
        let info = super::parse_chain(cert_pem.as_bytes())?;
        let key = PrivateKey::from_pem(key_pem).map_err(|e| match super::keys::rsa_bits(&info.public_key_info) {
            Some(bits) if bits < 2048 => PkiError::Mismatch(format!(
                "the CA's key is RSA-{bits}: certpilot signs only with RSA keys of at least 2048 bits (or ECDSA, Ed25519); give the CA a stronger key"
            )),
            _ => e,
        })?;
        if info.public_key_info != key.public_key_info() {
            return Err(PkiError::Mismatch("tls.key is not the private key of the certificate in tls.crt".into()));
        }
        if !info.is_ca {
            return Err(PkiError::Mismatch(format!(
                "{} is not a CA certificate (basicConstraints CA:TRUE is missing)",
                info.subject
            )));
        }
        if now >= info.not_after {
            return Err(PkiError::Mismatch(format!(
                "the CA certificate {} expired at {}",
                info.subject, info.not_after
            )));
        }
        if now < info.not_before {
            return Err(PkiError::Mismatch(format!(
                "the CA certificate {} is not valid before {}: certificates it signed now would not verify",
                info.subject, info.not_before
            )));
        }
        let first = super::cert::pem_certificates(cert_pem.as_bytes())?.remove(0);
        if !super::cert::may_sign_certificates(&first) {
            return Err(PkiError::Mismatch(format!(
                "{} may not sign certificates: its keyUsage lacks keyCertSign",
                info.subject
            )));
        }
        let constraints = super::cert::name_constraints(&first);
        let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", first));
        Ok(Self { cert_pem, key, info, constraints })
    }

    /// Signs `req`; the certificate never outlives the CA. Returns the PEM certificate.
    pub fn sign(&self, req: &SignRequest) -> Result<String, PkiError> {
        if let Some(why) = self.constraints.violation(req.names) {
            return Err(PkiError::Mismatch(format!(
                "the CA {} may not issue this certificate: {why}; ask for names it permits, or use another issuer",
                self.info.subject
            )));
        }
        let mut params = params(req)?;
        let ca_end = offset(self.info.not_after)?;
        if params.not_after > ca_end {
            params.not_after = ca_end;
        }
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, self.key.key_pair())
            .map_err(|e| PkiError::Signing(e.to_string()))?;
        let cert = params.signed_by(req.key.key_pair(), &issuer).map_err(|e| PkiError::Signing(e.to_string()))?;
        Ok(cert.pem())
    }
}

/// One certificate a CRL lists.
pub struct CrlEntry<'a> {
    /// Serial number (hex).
    pub serial_hex: &'a str,
    pub revoked_at: Timestamp,
    /// RFC 5280 CRLReason code.
    pub reason_code: u8,
}

/// How long a CRL is current (its nextUpdate): certpilot writes a new one with each revocation.
pub const CRL_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 30);

impl CertificateAuthority {
    /// The CA's certificate revocation list (PEM) listing `entries`, numbered `number`.
    pub fn crl(&self, entries: &[CrlEntry], number: u64, now: Timestamp) -> Result<String, PkiError> {
        let revoked_certs = entries.iter().map(revoked_cert).collect::<Result<Vec<_>, _>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: offset(now)?,
            next_update: offset(now + CRL_VALIDITY)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, self.key.key_pair())
            .map_err(|e| PkiError::Signing(e.to_string()))?;
        let crl = params.signed_by(&issuer).map_err(|e| match e {
            rcgen::Error::IssuerNotCrlSigner => PkiError::Signing(format!(
                "the CA certificate {} does not allow signing CRLs (its keyUsage lacks cRLSign); reissue the CA with cRLSign to publish a CRL",
                self.info.subject
            )),
            other => PkiError::Signing(other.to_string()),
        })?;
        crl.pem().map_err(|e| PkiError::Signing(e.to_string()))
    }
}

fn revoked_cert(entry: &CrlEntry) -> Result<rcgen::RevokedCertParams, PkiError> {
    use rcgen::RevocationReason as R;
    let bytes = (0..entry.serial_hex.len())
        .step_by(2)
        .map(|i| entry.serial_hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| PkiError::Signing(format!("serial {:?} is not hex", entry.serial_hex)))?;
    let reason = match entry.reason_code {
        1 => R::KeyCompromise,
        3 => R::AffiliationChanged,
        4 => R::Superseded,
        5 => R::CessationOfOperation,
        9 => R::PrivilegeWithdrawn,
        _ => R::Unspecified,
    };
    Ok(rcgen::RevokedCertParams {
        serial_number: SerialNumber::from_slice(&bytes),
        revocation_time: offset(entry.revoked_at)?,
        reason_code: Some(reason),
        invalidity_date: None,
    })
}

/// Default lifetime of locally signed certificates: 90 days.
pub const DEFAULT_DURATION: SignedDuration = SignedDuration::from_hours(2160);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::certificate::PrivateKeySpec, pki::cert::verify_issued};

    fn names() -> NameRequest {
        NameRequest {
            dns_names: vec!["a.example.com".into(), "b.example.com".into()],
            ip_addresses: vec!["10.0.0.1".parse().unwrap()],
            common_name: None,
        }
    }

    #[test]
    fn self_signed_certificates_verify_against_their_key_and_names() {
        let key = PrivateKey::generate(&PrivateKeySpec::default()).unwrap();
        let now = Timestamp::now();
        let n = names();
        let req = SignRequest {
            names: &n,
            key: &key,
            not_before: now,
            not_after: now + SignedDuration::from_hours(1),
            is_ca: false,
        };
        let pem = self_signed(&req).unwrap();
        let info = verify_issued(pem.as_bytes(), &key, &n, now).unwrap();
        assert_eq!(info.dns_names, n.dns_names);
        assert_eq!(info.common_name.as_deref(), Some("a.example.com"));
        let other = PrivateKey::generate(&PrivateKeySpec::default()).unwrap();
        assert!(verify_issued(pem.as_bytes(), &other, &n, now).is_err(), "wrong key is refused");
        let fewer = NameRequest { dns_names: vec!["a.example.com".into()], ..n.clone() };
        assert!(verify_issued(pem.as_bytes(), &key, &fewer, now).is_err(), "extra names are refused");
        assert!(
            verify_issued(pem.as_bytes(), &key, &n, now + SignedDuration::from_hours(2)).is_err(),
            "expired is refused"
        );
    }

    #[test]
    fn ca_signed_chains_verify_and_never_outlive_the_ca() {
        let now = Timestamp::now();
        let ca_key = PrivateKey::generate(&PrivateKeySpec::default()).unwrap();
        let ca_names = NameRequest { common_name: Some("certpilot test CA".into()), ..Default::default() };
        let ca_pem = self_signed(&SignRequest {
            names: &ca_names,
            key: &ca_key,
            not_before: now,
            not_after: now + SignedDuration::from_hours(10),
            is_ca: true,
        })
        .unwrap();
        let ca = CertificateAuthority::load(&ca_pem, &ca_key.to_pem(Default::default()).unwrap(), now).unwrap();
        let key = PrivateKey::generate(&PrivateKeySpec::default()).unwrap();
        let n = names();
        let leaf = ca
            .sign(&SignRequest {
                names: &n,
                key: &key,
                not_before: now,
                not_after: now + SignedDuration::from_hours(100),
                is_ca: false,
            })
            .unwrap();
        let chain = format!("{leaf}{}", ca.cert_pem);
        let info = verify_issued(chain.as_bytes(), &key, &n, now).unwrap();
        assert_eq!(info.not_after, ca.info.not_after);
        assert!(info.issuer.contains("certpilot test CA"));
        let forged = format!(
            "{leaf}{}",
            self_signed(&SignRequest {
                names: &ca_names,
                key: &key,
                not_before: now,
                not_after: now + SignedDuration::from_hours(1),
                is_ca: true
            })
            .unwrap()
        );
        assert!(
            verify_issued(forged.as_bytes(), &key, &n, now).is_err(),
            "a chain not signed by its parent is refused"
        );
        let not_ca = self_signed(&SignRequest {
            names: &n,
            key: &key,
            not_before: now,
            not_after: now + SignedDuration::from_hours(1),
            is_ca: false,
        })
        .unwrap();
        assert!(CertificateAuthority::load(&not_ca, &key.to_pem(Default::default()).unwrap(), now).is_err());
        let not_yet = self_signed(&SignRequest {
            names: &ca_names,
            key: &ca_key,
            not_before: now + SignedDuration::from_hours(1),
            not_after: now + SignedDuration::from_hours(10),
            is_ca: true,
        })
        .unwrap();
        let early = CertificateAuthority::load(&not_yet, &ca_key.to_pem(Default::default()).unwrap(), now);
        assert!(matches!(early, Err(PkiError::Mismatch(why)) if why.contains("is not valid before")));
    }

    /// CAs made with openssl (`tests/fixtures/ca`): what is wrong with each is said exactly.
    #[test]
    fn unusable_cas_say_what_is_wrong() {
        let fixture = |name: &str| {
            std::fs::read_to_string(format!("{}/tests/fixtures/ca/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
        };
        let now = Timestamp::now();
        let weak = CertificateAuthority::load(&fixture("rsa1024.crt"), &fixture("rsa1024.key"), now);
        assert!(
            matches!(&weak, Err(PkiError::Mismatch(why)) if why.contains("RSA-1024") && why.contains("2048")),
            "{:?}",
            weak.err()
        );
        let constrained =
            CertificateAuthority::load(&fixture("constrained.crt"), &fixture("constrained.key"), now).unwrap();
        let key = PrivateKey::generate(&PrivateKeySpec::default()).unwrap();
        let sign = |dns: &[&str], ips: &[&str]| {
            let names = NameRequest {
                dns_names: dns.iter().map(|n| n.to_string()).collect(),
                ip_addresses: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                common_name: None,
            };
            let until = now + SignedDuration::from_hours(1);
            constrained.sign(&SignRequest { names: &names, key: &key, not_before: now, not_after: until, is_ca: false })
        };
        assert!(sign(&["example.com", "www.example.com", "*.example.com"], &["10.1.2.3"]).is_ok());
        let (permitted, excluded) = constrained.constraints.describe();
        assert_eq!(
            (permitted.as_slice(), excluded.as_slice()),
            (["example.com", "10.0.0.0/8"].map(String::from).as_slice(), ["secret.example.com".to_string()].as_slice())
        );
        assert_eq!(
            super::super::cert::NameConstraints::from_described(&permitted, &excluded),
            constrained.constraints,
            "status round-trips"
        );
        let outside = sign(&["evil.com"], &[]);
        assert!(
            matches!(&outside, Err(PkiError::Mismatch(why)) if why.contains("evil.com is outside") && why.contains("example.com")),
            "{:?}",
            outside.err()
        );
        assert!(matches!(sign(&["notexample.com"], &[]), Err(PkiError::Mismatch(_))), "a suffix is not a zone");
        assert!(
            matches!(sign(&["a.secret.example.com"], &[]), Err(PkiError::Mismatch(why)) if why.contains("exclude"))
        );
        assert!(
            matches!(sign(&["www.example.com"], &["192.168.1.1"]), Err(PkiError::Mismatch(why)) if why.contains("192.168.1.1"))
        );
        let no_sign = CertificateAuthority::load(&fixture("nosign.crt"), &fixture("nosign.key"), now);
        assert!(matches!(&no_sign, Err(PkiError::Mismatch(why)) if why.contains("keyCertSign")), "{:?}", no_sign.err());
    }

    #[test]
    fn a_crl_lists_the_revoked_serials_with_their_reasons() {
        let ca_key = PrivateKey::generate(&PrivateKeySpec::default()).unwrap();
        let now = Timestamp::now();
        let names = NameRequest { common_name: Some("Test CA".into()), ..Default::default() };
        let req = SignRequest {
            names: &names,
            key: &ca_key,
            not_before: now,
            not_after: now + DEFAULT_DURATION,
            is_ca: true,
        };
        let ca_pem = self_signed(&req).unwrap();
        let ca = CertificateAuthority::load(
            &ca_pem,
            &ca_key.to_pem(crate::api::certificate::KeyEncoding::Pkcs8).unwrap(),
            now,
        )
        .unwrap();
        let entries = [CrlEntry { serial_hex: "0A1B", revoked_at: now, reason_code: 1 }];
        let pem = ca.crl(&entries, 7, now).unwrap();
        let der = pem::parse(&pem).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(der.contents()).unwrap();
        let revoked: Vec<_> = crl.iter_revoked_certificates().collect();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].raw_serial(), [0x0a, 0x1b]);
        assert_eq!(revoked[0].reason_code().map(|(_, r)| r.0), Some(1));
        assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("7".into()));
    }
}
