use super::{report::DurationProblem, *};
use crate::api::{
    CertificateSpec, IssuerKind, IssuerSpec, SecretKeySelector,
    certificate::{KeyAlgorithm, KeyEncoding, OutputFormat, OutputFormatType, Pkcs12Profile, RotationPolicy},
    issuer::{AcmeIssuer, AcmeSolver, CnameStrategy, SELECTOR_MAX_ENTRIES, SolverSelector},
};
use base64::Engine;
use kube::CustomResourceExt;
use serde_json::json;

fn run(documents: &[Value]) -> Conversion {
    let text: String = documents.iter().map(|d| format!("---\n{}", yaml_serde::to_string(d).unwrap())).collect();
    convert(&text).unwrap()
}

fn certificate_doc(spec: Value) -> Value {
    json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
           "metadata": {"name": "web", "namespace": "apps"}, "spec": spec})
}

/// A minimal valid cert-manager Certificate spec with `extra` merged in.
fn cert_spec(extra: Value) -> Value {
    let mut spec = json!({"secretName": "web-tls", "dnsNames": ["web.example.com"],
                          "issuerRef": {"name": "le", "kind": "ClusterIssuer"}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// The converted spec (if any) and the findings as (path, problem).
fn certificate(extra: Value) -> (Option<CertificateSpec>, Vec<(String, Problem)>) {
    let conversion = run(&[certificate_doc(cert_spec(extra))]);
    let spec = conversion.resources.iter().find_map(|r| match r {
        Resource::Certificate(c) => Some(c.spec.clone()),
        _ => None,
    });
    (spec, findings(&conversion))
}

fn findings(conversion: &Conversion) -> Vec<(String, Problem)> {
    conversion.findings.iter().map(|f| (f.path.clone(), f.problem.clone())).collect()
}

fn issuer_doc(kind: &str, spec: Value) -> Value {
    let mut metadata = json!({"name": "le"});
    if kind == "Issuer" {
        metadata["namespace"] = json!("apps");
    }
    json!({"apiVersion": "cert-manager.io/v1", "kind": kind, "metadata": metadata, "spec": spec})
}

fn issuer(kind: &str, spec: Value) -> (Option<IssuerSpec>, Vec<(String, Problem)>) {
    let conversion = run(&[issuer_doc(kind, spec)]);
    let spec = conversion.resources.iter().find_map(|r| match r {
        Resource::Issuer(i) => Some(i.spec.clone()),
        Resource::ClusterIssuer(i) => Some(i.spec.issuer.clone()),
        _ => None,
    });
    (spec, findings(&conversion))
}

fn acme(solvers: Value) -> Value {
    json!({"acme": {"server": "https://acme-staging-v02.api.letsencrypt.org/directory", "solvers": solvers}})
}

fn acme_issuer(kind: &str, spec: Value) -> (Option<AcmeIssuer>, Vec<(String, Problem)>) {
    let (spec, findings) = issuer(kind, spec);
    (spec.and_then(|s| s.acme), findings)
}

fn solvers(kind: &str, solvers: Value) -> (Vec<AcmeSolver>, Vec<(String, Problem)>) {
    let (acme, findings) = acme_issuer(kind, acme(solvers));
    (acme.unwrap().solvers, findings)
}

fn has(findings: &[(String, Problem)], path: &str, problem: &Problem) -> bool {
    findings.iter().any(|(p, pr)| p == path && pr == problem)
}

// Certificates.

#[test]
fn a_plain_certificate_converts_without_findings() {
    let (spec, findings) = certificate(json!({"commonName": "web.example.com"}));
    let spec = spec.unwrap();
    assert_eq!(findings, []);
    assert_eq!(spec.secret_name, "web-tls");
    assert_eq!(spec.dns_names.as_deref(), Some(&["web.example.com".to_string()][..]));
    assert_eq!(spec.common_name.as_deref(), Some("web.example.com"));
    assert_eq!(spec.issuer_ref.kind, IssuerKind::ClusterIssuer);
    assert_eq!(spec.issuer_ref.name, "le");
}

#[test]
fn cert_manager_key_defaults_are_written_out() {
    let key = certificate(json!({})).0.unwrap().private_key.unwrap();
    assert_eq!((key.algorithm, key.size, key.encoding), (KeyAlgorithm::Rsa, None, KeyEncoding::Pkcs1));
    assert_eq!(key.rotation_policy, RotationPolicy::Always);
}

#[test]
fn private_keys_map_and_sizes_certpilot_lacks_are_reported() {
    let key = |k: Value| certificate(json!({"privateKey": k}));
    let (spec, findings) =
        key(json!({"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Never"}));
    let k = spec.unwrap().private_key.unwrap();
    assert_eq!(
        (k.algorithm, k.size, k.encoding, k.rotation_policy),
        (KeyAlgorithm::Ecdsa, Some(256), KeyEncoding::Pkcs8, RotationPolicy::Never)
    );
    assert_eq!(findings, []);
    let (spec, findings) = key(json!({"algorithm": "RSA", "size": 8192}));
    assert_eq!(spec.unwrap().private_key.unwrap().size, Some(4096));
    assert!(has(
        &findings,
        "spec.privateKey.size",
        &Problem::KeySize { algorithm: "RSA".into(), size: 8192, used: 4096 }
    ));
    let (spec, findings) = key(json!({"algorithm": "ECDSA", "size": 521}));
    assert_eq!(spec.unwrap().private_key.unwrap().size, Some(384));
    assert!(findings.iter().any(|(p, _)| p == "spec.privateKey.size"));
    let (spec, findings) = key(json!({"algorithm": "Ed25519", "size": 256}));
    assert_eq!(spec.unwrap().private_key.unwrap().size, None, "cert-manager ignores a size for Ed25519");
    assert_eq!(findings, []);
    let (spec, findings) = key(json!({"algorithm": "ECDSA"}));
    assert_eq!(spec.unwrap().private_key.unwrap().encoding, KeyEncoding::Pkcs8);
    assert!(has(&findings, "spec.privateKey.encoding", &Problem::Pkcs1NotRsa));
    let (_, findings) = key(json!({"algorithm": "DSA", "encoding": "PEM", "rotationPolicy": "Sometimes"}));
    assert!(has(&findings, "spec.privateKey.algorithm", &Problem::KeyAlgorithm { value: "DSA".into() }));
    assert!(has(&findings, "spec.privateKey.encoding", &Problem::KeyEncoding { value: "PEM".into() }));
    assert!(has(&findings, "spec.privateKey.rotationPolicy", &Problem::RotationPolicy { value: "Sometimes".into() }));
}

#[test]
fn durations_become_canonical_and_those_certpilot_refuses_are_reported() {
    let (spec, findings) = certificate(json!({"duration": "2160h0m0s", "renewBefore": "360h0m0s"}));
    let spec = spec.unwrap();
    assert_eq!((spec.duration.as_deref(), spec.renew_before.as_deref()), (Some("2160h"), Some("360h")));
    assert_eq!(findings, []);
    let (spec, findings) = certificate(json!({"duration": "30s"}));
    assert_eq!(spec.unwrap().duration, None);
    assert!(has(
        &findings,
        "spec.duration",
        &Problem::Duration { value: "30s".into(), why: DurationProblem::TooShort }
    ));
    let (spec, findings) = certificate(json!({"duration": "1h", "renewBefore": "2h"}));
    let spec = spec.unwrap();
    assert_eq!((spec.duration.as_deref(), spec.renew_before), (Some("1h"), None));
    let why = DurationProblem::RenewBeforeNotShorter;
    assert!(has(&findings, "spec.renewBefore", &Problem::Duration { value: "2h".into(), why }));
    let (_, findings) = certificate(json!({"duration": "1h", "renewBefore": "59m50s"}));
    let why = DurationProblem::RenewBeforeTooClose;
    assert!(has(&findings, "spec.renewBefore", &Problem::Duration { value: "59m50s".into(), why }));
    let (_, findings) = certificate(json!({"duration": "90d"}));
    assert!(findings.iter().any(|(p, _)| p == "spec.duration"));
}

#[test]
fn renew_before_percentage_carries_over() {
    let (spec, findings) = certificate(json!({"renewBeforePercentage": 25}));
    assert_eq!(spec.unwrap().renew_before_percentage, Some(25));
    assert_eq!(findings, []);
    let (spec, findings) = certificate(json!({"renewBeforePercentage": 100}));
    assert_eq!(spec.unwrap().renew_before_percentage, None);
    assert!(has(&findings, "spec.renewBeforePercentage", &Problem::RenewBeforePercentage { value: 100 }));
}

#[test]
fn names_are_lowercased_deduplicated_and_invalid_ones_reported() {
    let (spec, findings) = certificate(json!({
        "dnsNames": ["Web.Example.com", "web.example.com", "bad_name.example.com", "*.example.com"],
        "ipAddresses": ["10.0.0.1", "2001:DB8::1", "not-an-ip"],
    }));
    let spec = spec.unwrap();
    assert_eq!(spec.dns_names.unwrap(), ["web.example.com", "*.example.com"]);
    assert_eq!(spec.ip_addresses.unwrap(), ["10.0.0.1", "2001:db8::1"]);
    let lowered = Problem::Lowercased { from: "Web.Example.com".into(), to: "web.example.com".into() };
    assert!(has(&findings, "spec.dnsNames[0]", &lowered));
    assert!(has(&findings, "spec.dnsNames[2]", &Problem::InvalidDnsName { name: "bad_name.example.com".into() }));
    assert!(has(&findings, "spec.ipAddresses[2]", &Problem::InvalidIpAddress { address: "not-an-ip".into() }));
}

#[test]
fn a_certificate_without_names_certpilot_can_certify_is_left_out() {
    let (spec, findings) =
        certificate(json!({"dnsNames": null, "commonName": "My Service", "emailAddresses": ["a@example.com"]}));
    assert!(spec.is_none());
    assert!(has(&findings, "", &Problem::NoNamesLeft));
    assert!(has(&findings, "spec.emailAddresses", &Problem::NoUriOrEmailSans));
    // A CA's common name is free text.
    let (spec, _) = certificate(json!({"dnsNames": null, "commonName": "Internal CA", "isCA": true}));
    assert_eq!(spec.unwrap().common_name.as_deref(), Some("Internal CA"));
    // Without SANs an upper-case common name is certified, so it is lowercased.
    let (spec, _) = certificate(json!({"dnsNames": null, "commonName": "API.example.com"}));
    assert_eq!(spec.unwrap().common_name.as_deref(), Some("api.example.com"));
}

#[test]
fn more_than_a_hundred_names_is_left_out() {
    let names: Vec<String> = (0..101).map(|i| format!("n{i}.example.com")).collect();
    let (spec, findings) = certificate(json!({"dnsNames": names}));
    assert!(spec.is_none());
    assert!(has(&findings, "", &Problem::TooManyNames { count: 101 }));
}

#[test]
fn a_long_common_name_is_dropped() {
    let (spec, findings) = certificate(json!({"commonName": "a".repeat(65)}));
    assert_eq!(spec.unwrap().common_name, None);
    assert!(has(&findings, "spec.commonName", &Problem::CommonNameTooLong));
}

#[test]
fn issuer_references() {
    let (spec, _) = certificate(json!({"issuerRef": {"name": "ca", "group": "cert-manager.io"}}));
    assert_eq!(spec.unwrap().issuer_ref.kind, IssuerKind::Issuer);
    let (spec, findings) = certificate(
        json!({"issuerRef": {"name": "aws", "kind": "AWSPCAClusterIssuer", "group": "awspca.cert-manager.io"}}),
    );
    assert!(spec.is_none());
    assert!(has(&findings, "", &Problem::ExternalIssuer { group: "awspca.cert-manager.io".into() }));
    let (spec, findings) = certificate(json!({"issuerRef": {"name": "x", "kind": "Signer"}}));
    assert!(spec.is_none());
    assert!(has(&findings, "", &Problem::UnknownIssuerKind { kind: "Signer".into() }));
    let (spec, findings) = certificate(json!({"secretName": null}));
    assert!(spec.is_none());
    assert!(has(&findings, "", &Problem::MissingSecretName));
}

#[test]
fn secret_template_output_formats_and_history_limit() {
    let (spec, findings) = certificate(json!({
        "secretTemplate": {"labels": {"team": "web"}, "annotations": {"reflector/enabled": "true"}},
        "additionalOutputFormats": [{"type": "CombinedPEM"}, {"type": "DER"}, {"type": "PKCS7"}],
        "revisionHistoryLimit": 5,
        "isCA": false,
    }));
    let spec = spec.unwrap();
    let template = spec.secret_template.unwrap();
    assert_eq!(template.labels["team"], "web");
    assert_eq!(template.annotations["reflector/enabled"], "true");
    let formats: Vec<_> = spec.additional_output_formats.unwrap().iter().map(|f| f.type_).collect();
    assert_eq!(formats, [OutputFormatType::CombinedPEM, OutputFormatType::DER]);
    assert!(has(&findings, "spec.additionalOutputFormats[2]", &Problem::OutputFormat { format: "PKCS7".into() }));
    assert_eq!(spec.attempt_history_limit, Some(5));
    assert_eq!(spec.is_ca, Some(false));
    let (spec, findings) = certificate(json!({"revisionHistoryLimit": 500}));
    assert_eq!(spec.unwrap().attempt_history_limit, Some(100));
    assert!(has(&findings, "spec.revisionHistoryLimit", &Problem::HistoryLimit { value: 500, used: 100 }));
}

#[test]
fn subject_uris_and_unknown_fields_are_reported() {
    let (spec, findings) = certificate(json!({
        "subject": {"organizations": ["Example"]},
        "uris": ["spiffe://cluster.local/ns/apps/sa/web"],
        "nameConstraints": {"critical": true},
    }));
    assert!(spec.is_some(), "the rest converts");
    assert!(has(&findings, "spec.subject", &Problem::NoSubject));
    assert!(has(&findings, "spec.uris", &Problem::NoUriOrEmailSans));
    assert!(has(&findings, "spec.nameConstraints", &Problem::NoCounterpartField));
}

fn password(name: &str) -> Value {
    json!({"name": name, "key": "password"})
}

#[test]
fn keystores_become_output_formats_with_their_password_secret() {
    let (spec, findings) = certificate(json!({
        "keystores": {
            "pkcs12": {"create": true, "passwordSecretRef": password("p12"), "profile": "Modern2023"},
            "jks": {"create": true, "passwordSecretRef": password("jks"), "alias": "server"},
        },
        "additionalOutputFormats": [{"type": "DER"}],
    }));
    let formats = spec.unwrap().additional_output_formats.unwrap();
    let reference = |name: &str| Some(SecretKeySelector { name: name.into(), key: "password".into() });
    assert_eq!(
        formats,
        [
            OutputFormat {
                type_: OutputFormatType::PKCS12,
                password_secret_ref: reference("p12"),
                profile: Some(Pkcs12Profile::Modern2023)
            },
            OutputFormat { type_: OutputFormatType::JKS, password_secret_ref: reference("jks"), profile: None },
            OutputFormat::of(OutputFormatType::DER),
        ]
    );
    assert!(has(&findings, "spec.keystores.jks.alias", &Problem::KeystoreAlias));
    assert!(has(&findings, "spec.keystores.jks", &Problem::NoTruststore { file: "truststore.jks".into() }));
    assert!(has(&findings, "spec.keystores.pkcs12", &Problem::NoTruststore { file: "truststore.p12".into() }));
    assert!(findings.iter().all(|(_, p)| p.is_note()), "{findings:?}");
}

#[test]
fn an_unset_pkcs12_profile_keeps_cert_managers_legacy_default() {
    let profile_of = |store: Value| {
        let (spec, findings) = certificate(json!({"keystores": {"pkcs12": store}}));
        (spec.unwrap().additional_output_formats.unwrap()[0].profile, findings)
    };
    let (profile, findings) = profile_of(json!({"create": true, "passwordSecretRef": password("p")}));
    assert_eq!(profile, Some(Pkcs12Profile::LegacyRC2));
    assert!(has(&findings, "spec.keystores.pkcs12.profile", &Problem::Pkcs12LegacyDefault));
    let (profile, _) = profile_of(json!({"create": true, "passwordSecretRef": password("p"), "profile": "LegacyDES"}));
    assert_eq!(profile, Some(Pkcs12Profile::LegacyDES));
    let (profile, findings) =
        profile_of(json!({"create": true, "passwordSecretRef": password("p"), "profile": "Weird"}));
    assert_eq!(profile, Some(Pkcs12Profile::LegacyRC2));
    assert!(has(&findings, "spec.keystores.pkcs12.profile", &Problem::Pkcs12Profile { value: "Weird".into() }));
}

#[test]
fn keystores_without_a_password_secret_are_left_out_and_create_false_asks_for_nothing() {
    let (spec, findings) = certificate(json!({"keystores": {
        "jks": {"create": true, "password": "changeit"},
        "pkcs12": {"create": true, "passwordSecretRef": {"name": "p"}},
    }}));
    assert_eq!(spec.unwrap().additional_output_formats, None);
    assert!(has(&findings, "spec.keystores.jks", &Problem::KeystoreLiteralPassword));
    assert!(has(&findings, "spec.keystores.pkcs12", &Problem::KeystoreNoPassword));
    let (spec, findings) = certificate(json!({"keystores": {"jks": {"create": false}}}));
    assert_eq!(spec.unwrap().additional_output_formats, None);
    assert_eq!(findings, []);
}

#[test]
fn usages_certpilot_sets_anyway_pass_and_others_are_reported() {
    let (_, findings) =
        certificate(json!({"usages": ["digital signature", "key encipherment", "server auth", "client auth"]}));
    assert_eq!(findings, []);
    let (_, findings) = certificate(json!({"usages": ["server auth"]}));
    assert!(findings.iter().all(|(_, p)| p.is_note()), "{findings:?}");
    assert!(
        findings
            .iter()
            .any(|(_, p)| matches!(p, Problem::UsagesWidened { added } if added.contains(&"client auth".to_string())))
    );
    let (_, findings) = certificate(json!({"usages": ["code signing", "server auth"]}));
    assert!(has(&findings, "spec.usages", &Problem::Usages { unsupported: vec!["code signing".into()] }));
}

#[test]
fn metadata_keeps_labels_and_reports_cert_manager_annotations() {
    let mut doc = certificate_doc(cert_spec(json!({})));
    doc["metadata"]["labels"] = json!({"app": "web"});
    doc["metadata"]["annotations"] = json!({
        "cert-manager.io/issue-temporary-certificate": "true",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        "team": "web",
    });
    doc["metadata"]["uid"] = json!("1234");
    doc["status"] = json!({"conditions": []});
    let conversion = run(&[doc]);
    let Resource::Certificate(cert) = &conversion.resources[0] else { panic!() };
    assert_eq!(cert.metadata.labels.as_ref().unwrap()["app"], "web");
    let annotations = cert.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
    assert_eq!(cert.metadata.uid, None);
    assert_eq!(cert.metadata.namespace.as_deref(), Some("apps"));
    let path = "metadata.annotations.cert-manager.io/issue-temporary-certificate";
    assert!(has(&findings(&conversion), path, &Problem::CertManagerAnnotation));
}

// Issuers.

#[test]
fn self_signed_and_ca_issuers() {
    let (spec, findings) = issuer("Issuer", json!({"selfSigned": {}}));
    assert!(spec.unwrap().self_signed.is_some());
    assert_eq!(findings, []);
    let (spec, findings) = issuer(
        "Issuer",
        json!({"ca": {"secretName": "root-ca", "crlDistributionPoints": ["http://crl.example.com/ca.crl"], "ocspServers": ["http://ocsp.example.com"]}}),
    );
    assert_eq!(spec.unwrap().ca.unwrap().secret_name, "root-ca");
    assert!(has(
        &findings,
        "spec.ca.crlDistributionPoints",
        &Problem::CaExtension { field: "crlDistributionPoints".into() }
    ));
    assert!(has(&findings, "spec.ca.ocspServers", &Problem::CaExtension { field: "ocspServers".into() }));
    let (_, findings) = issuer("ClusterIssuer", json!({"ca": {"secretName": "root-ca"}}));
    assert!(has(&findings, "spec.ca.secretName", &Problem::ClusterIssuerSecret { secret: "root-ca".into() }));
}

#[test]
fn vault_venafi_and_empty_issuers_are_left_out() {
    for issuer_type in ["vault", "venafi"] {
        let (spec, findings) = issuer("ClusterIssuer", json!({issuer_type: {"server": "https://x"}}));
        assert!(spec.is_none());
        assert!(has(&findings, "", &Problem::UnsupportedIssuerType { issuer_type: issuer_type.into() }));
    }
    let (spec, findings) = issuer("Issuer", json!({}));
    assert!(spec.is_none());
    assert!(has(&findings, "", &Problem::NoIssuerType));
}

#[test]
fn acme_account_settings() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca);
    let (acme, findings) = acme_issuer(
        "ClusterIssuer",
        json!({"acme": {
            "server": "https://acme.zerossl.com/v2/DV90", "email": "ops@example.com",
            "privateKeySecretRef": {"name": "zerossl-account"}, "preferredChain": "ISRG Root X1",
            "profile": "tlsserver", "caBundle": encoded, "skipTLSVerify": true,
            "externalAccountBinding": {"keyID": "kid-1", "keySecretRef": {"name": "zerossl-eab", "key": "secret"}, "keyAlgorithm": "HS256"},
            "disableAccountKeyGeneration": true,
            "solvers": [{"http01": {"ingress": {"ingressClassName": "nginx"}}}],
        }}),
    );
    let acme = acme.unwrap();
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.preferred_chain.as_deref(), Some("ISRG Root X1"));
    assert_eq!(acme.profile.as_deref(), Some("tlsserver"));
    assert_eq!(acme.ca_bundle.as_deref(), Some(ca));
    assert_eq!(acme.account_key_secret_ref, None);
    let eab = acme.external_account_binding.unwrap();
    assert_eq!(
        (eab.key_id.as_str(), eab.key_secret_ref.name.as_str(), eab.key_secret_ref.key.as_str()),
        ("kid-1", "zerossl-eab", "secret")
    );
    assert!(has(&findings, "spec.acme.skipTLSVerify", &Problem::SkipTlsVerify));
    let not_reused =
        Problem::AccountKeyNotReused { secret: "zerossl-account".into(), new_secret: "le-acme-account".into() };
    assert!(has(&findings, "spec.acme.privateKeySecretRef", &not_reused));
    assert!(has(
        &findings,
        "spec.acme.externalAccountBinding.keySecretRef",
        &Problem::ClusterIssuerSecret { secret: "zerossl-eab".into() }
    ));
    assert!(has(&findings, "spec.acme.disableAccountKeyGeneration", &Problem::NoCounterpartField));
    assert!(!findings.iter().any(|(p, _)| p.contains("keyAlgorithm")), "deprecated and ignored by cert-manager too");
}

#[test]
fn acme_values_certpilot_refuses() {
    let (acme, findings) = acme_issuer(
        "Issuer",
        json!({"acme": {"server": "https://ca.internal/acme", "email": "mailto:ops@example.com", "caBundle": "not base64!",
                        "externalAccountBinding": {"keyID": "k", "keySecretRef": {"name": "eab"}}, "solvers": []}}),
    );
    let acme = acme.unwrap();
    assert_eq!((acme.email, acme.ca_bundle, acme.external_account_binding), (None, None, None));
    assert!(has(&findings, "spec.acme.email", &Problem::InvalidEmail));
    assert!(has(&findings, "spec.acme.caBundle", &Problem::CaBundleNotBase64));
    assert!(has(&findings, "spec.acme.externalAccountBinding.keySecretRef.key", &Problem::EabKeyMissing));
    assert!(has(&findings, "spec.acme.solvers", &Problem::NoSolvers));
    let (acme, findings) = acme_issuer("Issuer", json!({"acme": {"server": "http://ca.internal/acme"}}));
    assert!(acme.is_none());
    assert!(has(&findings, "spec.acme.server", &Problem::ServerNotHttps));
}

#[test]
fn http01_ingress_solvers() {
    let (solvers, findings) = self::solvers(
        "ClusterIssuer",
        json!([
            {"http01": {"ingress": {"class": "nginx", "serviceType": "ClusterIP", "podTemplate": {"spec": {}}}}},
            {"http01": {"ingress": {"name": "web-ingress"}}},
        ]),
    );
    assert_eq!(solvers[0].http01.as_ref().unwrap().ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(solvers[1].http01.as_ref().unwrap().ingress_class_name, None);
    let path = "spec.acme.solvers[0].http01.ingress";
    assert!(has(&findings, &format!("{path}.class"), &Problem::IngressClassAnnotation { class: "nginx".into() }));
    assert!(has(&findings, &format!("{path}.serviceType"), &Problem::Http01Option { option: "serviceType".into() }));
    assert!(has(&findings, &format!("{path}.podTemplate"), &Problem::Http01Option { option: "podTemplate".into() }));
    assert!(has(&findings, "spec.acme.solvers[1].http01.ingress.name", &Problem::IngressName));
}

#[test]
fn http01_gateway_solvers() {
    let route = |parent_refs: Value| json!([{"http01": {"gatewayHTTPRoute": {"parentRefs": parent_refs}}}]);
    let (solvers, findings) = self::solvers(
        "ClusterIssuer",
        route(json!([{"name": "public", "namespace": "gateways", "sectionName": "http"}, {"name": "other"}])),
    );
    assert_eq!(solvers[0].http01.as_ref().unwrap().gateway.as_deref(), Some("gateways/public"));
    let path = "spec.acme.solvers[0].http01.gatewayHTTPRoute.parentRefs";
    assert!(has(&findings, path, &Problem::ParentRefs { count: 2 }));
    assert!(has(&findings, &format!("{path}[0].sectionName"), &Problem::NoCounterpartField));
    assert!(has(&findings, &format!("{path}[0]"), &Problem::GatewayRoutes { gateway: "gateways/public".into() }));
    // An Issuer's Gateway without namespace is in the Issuer's namespace.
    let (solvers, _) = self::solvers("Issuer", route(json!([{"name": "public"}])));
    assert_eq!(solvers[0].http01.as_ref().unwrap().gateway.as_deref(), Some("apps/public"));
    // A ClusterIssuer's is in each Certificate's, which certpilot cannot say.
    let (solvers, findings) = self::solvers("ClusterIssuer", route(json!([{"name": "public"}])));
    assert_eq!(solvers[0].http01.as_ref().unwrap().gateway.as_deref(), Some("public"));
    assert!(has(&findings, &format!("{path}[0].namespace"), &Problem::GatewayNamespace { name: "public".into() }));
    let (solvers, findings) = self::solvers("Issuer", route(json!([{"name": "ls", "kind": "ListenerSet"}])));
    assert!(solvers.is_empty());
    assert!(has(&findings, &format!("{path}[0].kind"), &Problem::ParentRefKind { kind: "ListenerSet".into() }));
    let (solvers, findings) = self::solvers("Issuer", route(json!([])));
    assert!(solvers.is_empty());
    assert!(has(&findings, path, &Problem::NoParentRefs));
}

#[test]
fn dns01_rfc2136_solvers() {
    let (solvers, findings) = self::solvers(
        "ClusterIssuer",
        json!([{"dns01": {"cnameStrategy": "Follow", "rfc2136": {
            "nameserver": "10.0.0.53:53", "tsigKeyName": "certpilot.", "tsigAlgorithm": "HMACSHA512",
            "tsigSecretSecretRef": {"name": "tsig", "key": "secret"}}}}]),
    );
    let rfc2136 = solvers[0].dns01.as_ref().unwrap().rfc2136.as_ref().unwrap();
    assert_eq!(rfc2136.nameserver, "10.0.0.53:53");
    assert_eq!(rfc2136.tsig_key_name.as_deref(), Some("certpilot."));
    assert_eq!(rfc2136.tsig_algorithm.as_deref(), Some("hmac-sha512"));
    let secret = rfc2136.tsig_secret_ref.as_ref().unwrap();
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("tsig", "secret"));
    let path = "spec.acme.solvers[0].dns01";
    assert_eq!(solvers[0].dns01.as_ref().unwrap().cname_strategy, Some(CnameStrategy::Follow));
    assert!(!findings.iter().any(|(p, _)| p.ends_with("cnameStrategy")), "{findings:?}");
    assert!(has(&findings, &format!("{path}.rfc2136.protocol"), &Problem::TcpOnly));
    assert!(has(
        &findings,
        &format!("{path}.rfc2136.tsigSecretSecretRef"),
        &Problem::ClusterIssuerSecret { secret: "tsig".into() }
    ));
}

#[test]
fn tsig_algorithms_certpilot_does_not_sign_with() {
    let signed = |algorithm: Option<&str>| {
        let mut rfc2136 = json!({"nameserver": "ns1.example.com", "protocol": "TCP", "tsigKeyName": "k",
                                  "tsigSecretSecretRef": {"name": "tsig", "key": "secret"}});
        if let Some(a) = algorithm {
            rfc2136["tsigAlgorithm"] = json!(a);
        }
        self::solvers("Issuer", json!([{"dns01": {"rfc2136": rfc2136}}]))
    };
    let path = "spec.acme.solvers[0].dns01.rfc2136.tsigAlgorithm";
    let (solvers, findings) = signed(None);
    assert_eq!(solvers[0].dns01.as_ref().unwrap().rfc2136.as_ref().unwrap().tsig_algorithm, None);
    assert!(has(&findings, path, &Problem::TsigAlgorithm { value: None }), "cert-manager's default is HMACMD5");
    let (_, findings) = signed(Some("HMACSHA1"));
    assert!(has(&findings, path, &Problem::TsigAlgorithm { value: Some("HMACSHA1".into()) }));
    let (_, findings) = signed(Some("HMACSHA256"));
    assert_eq!(findings, []);
    let (_, findings) = self::solvers(
        "Issuer",
        json!([{"dns01": {"rfc2136": {"nameserver": "ns1", "protocol": "TCP", "tsigKeyName": "k", "tsigSecretSecretRef": {"name": "tsig"}}}}]),
    );
    assert!(has(&findings, "spec.acme.solvers[0].dns01.rfc2136.tsigSecretSecretRef.key", &Problem::TsigKeyMissing));
}

#[test]
fn dns01_route53_solvers_with_keys() {
    let route53 = json!({"region": "eu-west-1", "hostedZoneID": "Z2ABCDEFGHIJKL", "accessKeyID": "AKIDEXAMPLE",
        "secretAccessKeySecretRef": {"name": "aws", "key": "secret-access-key"},
        "role": "arn:aws:iam::123456789012:role/dns"});
    let (solvers, findings) =
        self::solvers("Issuer", json!([{"dns01": {"cnameStrategy": "Follow", "route53": route53}}]));
    assert_eq!(findings, [], "keys, role, region and zone carry over as they are");
    let dns01 = solvers[0].dns01.as_ref().unwrap();
    assert_eq!(dns01.cname_strategy, Some(CnameStrategy::Follow));
    let route53 = dns01.route53.as_ref().unwrap();
    assert_eq!(route53.region.as_deref(), Some("eu-west-1"));
    assert_eq!(route53.hosted_zone_id.as_deref(), Some("Z2ABCDEFGHIJKL"));
    assert_eq!(route53.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
    assert_eq!(route53.role.as_deref(), Some("arn:aws:iam::123456789012:role/dns"));
    let secret = route53.secret_access_key_secret_ref.as_ref().unwrap();
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("aws", "secret-access-key"));
    assert_eq!(route53.endpoint, None);

    let path = "spec.acme.solvers[0].dns01.route53";
    let (solvers, findings) = self::solvers(
        "ClusterIssuer",
        json!([{"dns01": {"route53": {"accessKeyIDSecretRef": {"name": "aws", "key": "id"},
                                      "secretAccessKeySecretRef": {"name": "aws", "key": "secret"}}}}]),
    );
    let route53 = solvers[0].dns01.as_ref().unwrap().route53.as_ref().unwrap();
    assert_eq!(route53.access_key_id_secret_ref.as_ref().unwrap().key, "id");
    let copy = Problem::ClusterIssuerSecret { secret: "aws".into() };
    assert!(has(&findings, &format!("{path}.accessKeyIDSecretRef"), &copy), "{findings:?}");
    assert!(has(&findings, &format!("{path}.secretAccessKeySecretRef"), &copy), "{findings:?}");
    let (_, findings) = self::solvers(
        "ClusterIssuer",
        json!([{"dns01": {"route53": {"accessKeyIDSecretRef": {"name": "aws", "key": "id"},
                                      "secretAccessKeySecretRef": {"name": "aws"}}}}]),
    );
    assert!(!findings.iter().any(|(_, p)| *p == copy), "half a pair is left out, so no Secret to copy: {findings:?}");

    let (solvers, findings) = self::solvers(
        "Issuer",
        json!([{"dns01": {"route53": {"accessKeyID": "AKIDEXAMPLE", "secretAccessKeySecretRef": {"name": "aws"}}}}]),
    );
    let route53 = solvers[0].dns01.as_ref().unwrap().route53.as_ref().unwrap();
    assert_eq!((route53.access_key_id.as_ref(), route53.secret_access_key_secret_ref.as_ref()), (None, None));
    assert!(has(&findings, &format!("{path}.secretAccessKeySecretRef.key"), &Problem::Route53KeyMissing));
    assert!(findings.iter().all(|(_, p)| p.is_note() || *p == Problem::Route53KeyMissing), "{findings:?}");
}

/// cert-manager's ServiceAccount tokens (and its own identity) become certpilot's own AWS
/// identity: converted, with a note saying what to give certpilot's ServiceAccount.
#[test]
fn dns01_route53_without_keys_uses_certpilots_own_identity() {
    let role = "arn:aws:iam::123456789012:role/dns";
    let path = "spec.acme.solvers[0].dns01.route53";
    let irsa = json!({"region": "us-east-1", "role": role,
        "auth": {"kubernetes": {"serviceAccountRef": {"name": "cert-manager-route53", "audiences": ["sts.amazonaws.com"]}}}});
    let (solvers, findings) = self::solvers("ClusterIssuer", json!([{"dns01": {"route53": irsa}}]));
    let route53 = solvers[0].dns01.as_ref().unwrap().route53.as_ref().unwrap();
    assert_eq!(route53.role.as_deref(), Some(role));
    assert_eq!(route53.secret_access_key_secret_ref, None);
    let account = Problem::Route53ServiceAccount {
        name: "cert-manager-route53".into(),
        role: Some(role.into()),
        namespaced: false,
    };
    assert_eq!(findings, [(format!("{path}.auth.kubernetes.serviceAccountRef"), account.clone())]);
    assert!(account.is_note());
    assert!(account.to_string().contains("eks.amazonaws.com/role-arn"), "{account}");

    let (_, findings) = self::solvers("Issuer", json!([{"dns01": {"route53": {"region": "us-east-1"}}}]));
    let ambient = Problem::Route53Ambient { namespaced: true };
    assert_eq!(findings, [(path.to_string(), ambient.clone())]);
    assert!(ambient.to_string().contains("--issuer-ambient-credentials"), "{ambient}");
}

#[test]
fn dns01_providers_certpilot_lacks_leave_the_solver_out() {
    for provider in ["cloudflare", "azureDNS"] {
        let (solvers, findings) = self::solvers(
            "ClusterIssuer",
            json!([{"dns01": {provider: {}}}, {"http01": {"ingress": {"ingressClassName": "nginx"}}}]),
        );
        assert_eq!(solvers.len(), 1, "the http01 solver stays");
        let path = format!("spec.acme.solvers[0].dns01.{provider}");
        assert!(has(&findings, &path, &Problem::NoDnsProvider { provider: provider.into() }));
    }
    let webhook = json!({"groupName": "acme.example.com", "solverName": "gandi", "config": {}});
    let (solvers, findings) = self::solvers("ClusterIssuer", json!([{"dns01": {"webhook": webhook}}]));
    assert!(solvers.is_empty());
    let own = Problem::CertManagerWebhook { solver: "acme.example.com/gandi".into() };
    assert!(has(&findings, "spec.acme.solvers[0].dns01.webhook", &own), "{findings:?}");
    assert!(own.to_string().contains("lego's httpreq protocol"), "{own}");
    let (solvers, findings) = self::solvers("Issuer", json!([{"selector": {"dnsZones": ["example.com"]}}]));
    assert!(solvers.is_empty());
    assert!(has(&findings, "spec.acme.solvers[0]", &Problem::SolverWithoutType));
    assert!(has(&findings, "spec.acme.solvers", &Problem::NoSolvers));
}

#[test]
fn selectors() {
    let http = json!({"ingress": {"ingressClassName": "nginx"}});
    let (solvers, findings) = self::solvers(
        "Issuer",
        json!([
            {"selector": {"dnsNames": ["WWW.example.com", "*.example.com"], "dnsZones": ["Example.org."]}, "http01": http},
            {"selector": {"matchLabels": {"use-dns": "true"}}, "http01": http},
            {"selector": {"dnsNames": ["*.example.net"]}, "http01": http},
            {"selector": {"dnsZones": ["*.example.com"]}, "dns01": {"rfc2136": {"nameserver": "ns1", "protocol": "TCP"}}},
            {"selector": {}, "http01": http},
        ]),
    );
    assert_eq!(solvers.len(), 2, "{findings:?}");
    let selector = solvers[0].selector.as_ref().unwrap();
    assert_eq!(selector.dns_names.as_deref().unwrap(), ["www.example.com"]);
    assert_eq!(selector.dns_zones.as_deref().unwrap(), ["example.org"]);
    assert_eq!(solvers[1].selector, None, "an empty selector selects everything in both");
    let path = "spec.acme.solvers";
    let wildcard = Problem::Http01WildcardSelector { name: "*.example.com".into() };
    assert!(has(&findings, &format!("{path}[0].selector.dnsNames[1]"), &wildcard));
    assert!(has(&findings, &format!("{path}[1].selector.matchLabels"), &Problem::MatchLabels));
    assert!(has(&findings, &format!("{path}[2].selector"), &Problem::SelectorEmptied));
    let zone = Problem::InvalidZone { zone: "*.example.com".into() };
    assert!(has(&findings, &format!("{path}[3].selector.dnsZones[0]"), &zone));
}

/// A selector longer than certpilot's CRD allows becomes several solvers with the same
/// settings, together selecting what it selected; the limit is the CRD's own.
#[test]
fn long_selectors_are_split_over_solvers() {
    let names: Vec<String> = (0..120).map(|i| format!("h{i}.example.com")).collect();
    let zones: Vec<String> = (0..60).map(|i| format!("z{i}.example.org")).collect();
    let http = json!({"ingress": {"ingressClassName": "nginx"}});
    let (solvers, findings) = self::solvers(
        "ClusterIssuer",
        json!([{"selector": {"dnsNames": names, "dnsZones": zones}, "http01": http}, {"http01": http}]),
    );
    assert_eq!(solvers.len(), 3 + 2 + 1, "names in 3 parts, zones in 2, then the catch-all");
    let listed = |f: fn(&SolverSelector) -> Option<&Vec<String>>| -> Vec<String> {
        solvers.iter().filter_map(|s| s.selector.as_ref()).filter_map(f).flatten().cloned().collect()
    };
    assert_eq!(listed(|s| s.dns_names.as_ref()), names);
    assert_eq!(listed(|s| s.dns_zones.as_ref()), zones);
    assert!(solvers[..5].iter().all(|s| s.http01 == solvers[0].http01 && s.http01.is_some()));
    assert_eq!(solvers[5].selector, None);
    assert!(has(&findings, "spec.acme.solvers[0].selector", &Problem::SelectorSplit { solvers: 5 }));
    assert!(findings.iter().all(|(_, problem)| problem.is_note()), "nothing lost: {findings:?}");
    let crd = serde_json::to_value(crate::api::ClusterIssuer::crd()).unwrap();
    let selector = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["acme"]
        ["properties"]["solvers"]["items"]["properties"]["selector"]["properties"];
    for list in ["dnsNames", "dnsZones"] {
        assert_eq!(selector[list]["maxItems"], SELECTOR_MAX_ENTRIES, "{list}");
    }
}

// Documents.

#[test]
fn lists_and_documents_of_other_kinds() {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        certificate_doc(cert_spec(json!({}))),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "apps"}},
    ]});
    let others = [
        json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "metadata": {"name": "web-1", "namespace": "apps"}}),
        json!({"apiVersion": "acme.cert-manager.io/v1", "kind": "Order", "metadata": {"name": "web-1-1", "namespace": "apps"}}),
        json!({"apiVersion": "cert-manager.io/v1alpha2", "kind": "Certificate", "metadata": {"name": "old", "namespace": "apps"}}),
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"namespace": "apps"}, "spec": {}}),
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "bad"}, "spec": {"dnsNames": "web.example.com"}}),
    ];
    let mut docs = vec![list];
    docs.extend(others);
    let conversion = run(&docs);
    assert_eq!(conversion.resources.len(), 1);
    assert!(!conversion.is_complete());
    let lines: Vec<String> = conversion.findings.iter().map(|f| f.to_string()).collect();
    assert!(lines[0].starts_with("# not converted: Secret/apps/s: not a cert-manager resource (v1)"), "{lines:?}");
    assert!(lines[1].starts_with("# not converted: CertificateRequest/apps/web-1: cert-manager's record"), "{lines:?}");
    assert!(lines[2].starts_with("# not converted: Order/apps/web-1-1: cert-manager's record"), "{lines:?}");
    assert!(lines[3].contains("cert-manager.io/v1alpha2 is an old cert-manager API"), "{lines:?}");
    assert!(
        lines[4]
            .contains("Certificate/apps/(document 6): not a valid cert-manager resource (metadata.name is missing)"),
        "{lines:?}"
    );
    assert!(
        lines[5].starts_with("# not converted: Certificate/bad: not a valid cert-manager resource (spec: "),
        "{lines:?}"
    );
}

#[test]
fn yaml_that_does_not_parse_is_an_error() {
    assert!(convert("kind: [unclosed").is_err());
    assert_eq!(convert("").unwrap().resources.len(), 0);
}

#[test]
fn the_output_is_certpilot_yaml_and_the_report_sums_up() {
    let conversion = run(&[
        issuer_doc("ClusterIssuer", json!({"selfSigned": {}})),
        certificate_doc(cert_spec(json!({"subject": {"countries": ["NL"]}}))),
    ]);
    let manifests = conversion.manifests().unwrap();
    let docs: Vec<Value> =
        yaml_serde::Deserializer::from_str(&manifests).map(|d| Value::deserialize(d).unwrap()).collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["apiVersion"], "certpilot.dev/v1alpha1");
    assert_eq!(docs[0]["kind"], "ClusterIssuer");
    assert_eq!(docs[0]["spec"], json!({"selfSigned": {}}));
    assert_eq!(docs[1]["kind"], "Certificate");
    assert!(docs[1].get("status").is_none());
    let report = conversion.report();
    assert!(
        report.contains("# not converted: Certificate/apps/web spec.subject: certpilot sets only the common name"),
        "{report}"
    );
    assert!(report.ends_with("# converted 2 resource(s); 1 thing(s) not converted, 0 note(s)\n"), "{report}");
}
