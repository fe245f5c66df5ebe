//! cert-manager `Issuer`/`ClusterIssuer` → certpilot ones.

use super::{Findings, Problem, source, values};
use crate::api::{
    IssuerSpec, SecretKeySelector,
    issuer::{
        AcmeIssuer, AcmeSolver, CaIssuer, CnameStrategy, Dns01Solver, ExternalAccountBinding, Http01Solver,
        Rfc2136Solver, Route53Solver, SELECTOR_MAX_ENTRIES, SelfSignedIssuer, SolverSelector,
    },
};
use base64::Engine;

/// Where the issuer lives, which decides where its Secrets and Gateways are looked up.
pub enum Scope {
    /// A ClusterIssuer: certpilot reads its Secrets from its own namespace.
    Cluster,
    /// An Issuer, in this namespace when the input says.
    Namespace(Option<String>),
}

/// The converted spec, or `None` when the issuer cannot be converted at all.
pub fn convert(spec: source::IssuerSpec, scope: &Scope, f: &mut Findings) -> Option<IssuerSpec> {
    if let Some(issuer_type) = spec.rest.keys().next() {
        f.left_out(Problem::UnsupportedIssuerType { issuer_type: issuer_type.clone() });
        return None;
    }
    if let Some(self_signed) = spec.self_signed {
        f.rest("spec.selfSigned", &self_signed.rest, ca_extension);
        return Some(IssuerSpec { self_signed: Some(SelfSignedIssuer {}), ..Default::default() });
    }
    if let Some(ca) = spec.ca {
        f.rest("spec.ca", &ca.rest, ca_extension);
        cluster_secret(scope, "spec.ca.secretName", &ca.secret_name, f);
        return Some(IssuerSpec {
            ca: Some(CaIssuer { secret_name: ca.secret_name, crl: None }),
            ..Default::default()
        });
    }
    let Some(acme) = spec.acme else {
        f.left_out(Problem::NoIssuerType);
        return None;
    };
    Some(IssuerSpec { acme: Some(acme_issuer(acme, scope, f)?), ..Default::default() })
}

fn ca_extension(key: &str) -> Problem {
    match key {
        "crlDistributionPoints" | "ocspServers" | "issuingCertificateURLs" => {
            Problem::CaExtension { field: key.into() }
        }
        _ => Problem::NoCounterpartField,
    }
}

/// A ClusterIssuer's Secrets move from cert-manager's namespace to certpilot's.
fn cluster_secret(scope: &Scope, path: &str, secret: &str, f: &mut Findings) {
    if matches!(scope, Scope::Cluster) {
        f.add(path, Problem::ClusterIssuerSecret { secret: secret.into() });
    }
}

fn acme_issuer(acme: source::Acme, scope: &Scope, f: &mut Findings) -> Option<AcmeIssuer> {
    if !acme.server.starts_with("https://") {
        f.add("spec.acme.server", Problem::ServerNotHttps);
        return None;
    }
    f.unmapped("spec.acme", &acme.rest);
    if let Some(secret) = acme.private_key_secret_ref {
        let new_secret = format!("{}-acme-account", f.resource.name);
        f.add("spec.acme.privateKeySecretRef", Problem::AccountKeyNotReused { secret: secret.name, new_secret });
    }
    if acme.skip_tls_verify == Some(true) {
        f.add("spec.acme.skipTLSVerify", Problem::SkipTlsVerify);
    }
    let solvers: Vec<AcmeSolver> = acme
        .solvers
        .into_iter()
        .enumerate()
        .filter_map(|(i, solver)| {
            let path = format!("spec.acme.solvers[{i}]");
            self::solver(solver, &path, scope, f).map(|solver| split(solver, &path, f))
        })
        .flatten()
        .collect();
    if solvers.is_empty() {
        f.add("spec.acme.solvers", Problem::NoSolvers);
    }
    Some(AcmeIssuer {
        server: acme.server,
        email: acme.email.filter(|e| !e.is_empty()).and_then(|email| checked_email(email, f)),
        profile: acme.profile,
        preferred_chain: acme.preferred_chain.filter(|c| !c.is_empty()),
        ca_bundle: acme.ca_bundle.and_then(|bundle| ca_bundle(&bundle, f)),
        external_account_binding: acme.external_account_binding.and_then(|eab| binding(eab, scope, f)),
        // cert-manager's account keys are RSA; certpilot's are ECDSA P-256 (see AccountKeyNotReused).
        account_key_secret_ref: None,
        solvers,
    })
}

fn checked_email(email: String, f: &mut Findings) -> Option<String> {
    if values::is_email(&email) {
        return Some(email);
    }
    f.add("spec.acme.email", Problem::InvalidEmail);
    None
}

/// cert-manager keeps the bundle as base64 (a Go `[]byte`); certpilot as PEM text.
fn ca_bundle(bundle: &str, f: &mut Findings) -> Option<String> {
    let compact: String = bundle.split_whitespace().collect();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|text| text.contains("-----BEGIN CERTIFICATE-----"));
    if pem.is_none() {
        f.add("spec.acme.caBundle", Problem::CaBundleNotBase64);
    }
    pem
}

fn binding(eab: source::ExternalAccountBinding, scope: &Scope, f: &mut Findings) -> Option<ExternalAccountBinding> {
    const PATH: &str = "spec.acme.externalAccountBinding";
    f.unmapped(PATH, &eab.rest);
    let Some(key) = eab.key_secret_ref.key.filter(|k| !k.is_empty()) else {
        f.add(format!("{PATH}.keySecretRef.key"), Problem::EabKeyMissing);
        return None;
    };
    cluster_secret(scope, &format!("{PATH}.keySecretRef"), &eab.key_secret_ref.name, f);
    Some(ExternalAccountBinding {
        key_id: eab.key_id,
        key_secret_ref: SecretKeySelector { name: eab.key_secret_ref.name, key },
    })
}

/// One solver, or `None` when it is left out (each reason reported).
fn solver(solver: source::Solver, path: &str, scope: &Scope, f: &mut Findings) -> Option<AcmeSolver> {
    f.unmapped(path, &solver.rest);
    let mut out = AcmeSolver::default();
    match (solver.http01, solver.dns01) {
        (Some(http01), _) => out.http01 = Some(http01_solver(http01, &format!("{path}.http01"), scope, f)?),
        (None, Some(dns01)) => out.dns01 = Some(dns01_solver(dns01, &format!("{path}.dns01"), scope, f)?),
        (None, None) => {
            f.add(path, Problem::SolverWithoutType);
            return None;
        }
    }
    if let Some(selector) = solver.selector {
        out.selector = self::selector(selector, out.http01.is_some(), &format!("{path}.selector"), f)?;
    }
    Some(out)
}

/// `solver`, as solvers whose selectors list at most `SELECTOR_MAX_ENTRIES` names and zones
/// each: the same settings for every name and zone it selected.
fn split(solver: AcmeSolver, path: &str, f: &mut Findings) -> Vec<AcmeSolver> {
    let Some(selector) = solver.selector.clone() else { return vec![solver] };
    let (names, zones) = (selector.dns_names.unwrap_or_default(), selector.dns_zones.unwrap_or_default());
    if names.len() <= SELECTOR_MAX_ENTRIES && zones.len() <= SELECTOR_MAX_ENTRIES {
        return vec![solver];
    }
    let with = |dns_names: Option<Vec<String>>, dns_zones: Option<Vec<String>>| AcmeSolver {
        selector: Some(SolverSelector { dns_names, dns_zones }),
        ..solver.clone()
    };
    let solvers: Vec<AcmeSolver> = names
        .chunks(SELECTOR_MAX_ENTRIES)
        .map(|chunk| with(Some(chunk.to_vec()), None))
        .chain(zones.chunks(SELECTOR_MAX_ENTRIES).map(|chunk| with(None, Some(chunk.to_vec()))))
        .collect();
    f.add(format!("{path}.selector"), Problem::SelectorSplit { solvers: solvers.len() });
    solvers
}

/// The selector: `Some(None)` when it selects everything, `None` when the solver must be left
/// out because certpilot could only select more names than cert-manager did.
fn selector(selector: source::Selector, http: bool, path: &str, f: &mut Findings) -> Option<Option<SolverSelector>> {
    f.unmapped(path, &selector.rest);
    if !selector.match_labels.is_empty() {
        f.add(format!("{path}.matchLabels"), Problem::MatchLabels);
        return None;
    }
    let narrowed = !selector.dns_names.is_empty() || !selector.dns_zones.is_empty();
    let dns_names = selector_names(&selector.dns_names, http, &format!("{path}.dnsNames"), f);
    let dns_zones = selector_zones(&selector.dns_zones, &format!("{path}.dnsZones"), f);
    if dns_names.is_empty() && dns_zones.is_empty() {
        if !narrowed {
            return Some(None);
        }
        // An empty selector would make the solver answer for every name.
        f.add(path, Problem::SelectorEmptied);
        return None;
    }
    let list = |v: Vec<String>| (!v.is_empty()).then_some(v);
    Some(Some(SolverSelector { dns_names: list(dns_names), dns_zones: list(dns_zones) }))
}

fn selector_names(names: &[String], http: bool, path: &str, f: &mut Findings) -> Vec<String> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = format!("{path}[{i}]");
        match values::dns_name(name) {
            Some((normal, _)) if http && normal.starts_with("*.") => {
                f.add(path, Problem::Http01WildcardSelector { name: name.clone() })
            }
            Some((normal, changed)) => {
                if changed {
                    f.add(path, Problem::Lowercased { from: name.clone(), to: normal.clone() });
                }
                out.push(normal);
            }
            None => f.add(path, Problem::InvalidDnsName { name: name.clone() }),
        }
    }
    out
}

fn selector_zones(zones: &[String], path: &str, f: &mut Findings) -> Vec<String> {
    let mut out = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        let path = format!("{path}[{i}]");
        match values::dns_name(zone).filter(|(normal, _)| !normal.contains('*')) {
            Some((normal, changed)) => {
                if changed {
                    f.add(path, Problem::Lowercased { from: zone.clone(), to: normal.clone() });
                }
                out.push(normal);
            }
            None => f.add(path, Problem::InvalidZone { zone: zone.clone() }),
        }
    }
    out
}

fn http01_solver(http01: source::Http01, path: &str, scope: &Scope, f: &mut Findings) -> Option<Http01Solver> {
    f.unmapped(path, &http01.rest);
    if let Some(gateway) = http01.gateway_http_route {
        return gateway_solver(gateway, &format!("{path}.gatewayHTTPRoute"), scope, f);
    }
    let Some(ingress) = http01.ingress else { return Some(Http01Solver::default()) };
    let path = format!("{path}.ingress");
    f.rest(&path, &ingress.rest, |option| Problem::Http01Option { option: option.into() });
    if ingress.name.is_some() {
        f.add(format!("{path}.name"), Problem::IngressName);
    }
    let class = match (ingress.ingress_class_name, ingress.class) {
        (Some(name), _) => Some(name),
        (None, Some(class)) => {
            f.add(format!("{path}.class"), Problem::IngressClassAnnotation { class: class.clone() });
            Some(class)
        }
        (None, None) => None,
    };
    Some(Http01Solver { ingress_class_name: class, ..Default::default() })
}

/// certpilot attaches its challenge route to one Gateway, named `namespace/name`.
fn gateway_solver(route: source::Http01Gateway, path: &str, scope: &Scope, f: &mut Findings) -> Option<Http01Solver> {
    f.rest(path, &route.rest, |option| Problem::Http01Option { option: option.into() });
    let count = route.parent_refs.len();
    let Some(parent) = route.parent_refs.into_iter().next() else {
        f.add(format!("{path}.parentRefs"), Problem::NoParentRefs);
        return None;
    };
    if count > 1 {
        f.add(format!("{path}.parentRefs"), Problem::ParentRefs { count });
    }
    let parent_path = format!("{path}.parentRefs[0]");
    let kind = parent.kind.unwrap_or_else(|| "Gateway".into());
    let group = parent.group.unwrap_or_else(|| "gateway.networking.k8s.io".into());
    if kind != "Gateway" || group != "gateway.networking.k8s.io" {
        f.add(format!("{parent_path}.kind"), Problem::ParentRefKind { kind });
        return None;
    }
    f.unmapped(&parent_path, &parent.rest);
    let namespace = match (parent.namespace, scope) {
        (Some(namespace), _) => Some(namespace),
        (None, Scope::Namespace(namespace)) => namespace.clone(),
        (None, Scope::Cluster) => None,
    };
    let gateway = match namespace {
        Some(namespace) => format!("{namespace}/{}", parent.name),
        None => {
            f.add(format!("{parent_path}.namespace"), Problem::GatewayNamespace { name: parent.name.clone() });
            parent.name
        }
    };
    f.add(parent_path, Problem::GatewayRoutes { gateway: gateway.clone() });
    Some(Http01Solver { gateway: Some(gateway), ..Default::default() })
}

fn dns01_solver(dns01: source::Dns01, path: &str, scope: &Scope, f: &mut Findings) -> Option<Dns01Solver> {
    let cname_strategy = (dns01.cname_strategy.as_deref() == Some("Follow")).then_some(CnameStrategy::Follow);
    let solver = match (dns01.rfc2136, dns01.route53) {
        (Some(rfc2136), _) => Dns01Solver {
            rfc2136: Some(rfc2136_solver(rfc2136, &format!("{path}.rfc2136"), scope, f)),
            ..Default::default()
        },
        (None, Some(route53)) => Dns01Solver {
            route53: Some(route53_solver(route53, &format!("{path}.route53"), scope, f)),
            ..Default::default()
        },
        (None, None) => {
            let (provider, problem) = match dns01.rest.get("webhook") {
                Some(webhook) => ("webhook".to_string(), Problem::CertManagerWebhook { solver: webhook_name(webhook) }),
                None => {
                    let provider = dns01.rest.keys().next().cloned().unwrap_or_else(|| "(none)".into());
                    (provider.clone(), Problem::NoDnsProvider { provider })
                }
            };
            f.add(format!("{path}.{provider}"), problem);
            return None;
        }
    };
    f.unmapped(path, &dns01.rest);
    Some(Dns01Solver { cname_strategy, ..solver })
}

/// How cert-manager names a webhook solver: `<groupName>/<solverName>`.
fn webhook_name(webhook: &serde_json::Value) -> String {
    let field = |name: &str| webhook.get(name).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    format!("{}/{}", field("groupName"), field("solverName"))
}

/// cert-manager's fields carry over by name; its ServiceAccount tokens become certpilot's own
/// AWS identity (ambient credentials), which then assumes the same role.
fn route53_solver(route53: source::Route53, path: &str, scope: &Scope, f: &mut Findings) -> Route53Solver {
    f.unmapped(path, &route53.rest);
    let mut secret_ref = |field: &str, secret: Option<source::SecretRef>| {
        let secret = secret?;
        let Some(key) = secret.key.filter(|k| !k.is_empty()) else {
            f.add(format!("{path}.{field}.key"), Problem::Route53KeyMissing);
            return None;
        };
        Some(SecretKeySelector { name: secret.name, key })
    };
    let id_ref = secret_ref("accessKeyIDSecretRef", route53.access_key_id_secret_ref);
    let secret_key_ref = secret_ref("secretAccessKeySecretRef", route53.secret_access_key_secret_ref);
    let access_key_id = route53.access_key_id.filter(|_| id_ref.is_none());
    // Keys come in pairs; half a pair is no credentials at all.
    let keys = secret_key_ref.is_some() && (id_ref.is_some() || access_key_id.is_some());
    let role = route53.role;
    let service_account = route53.auth.and_then(|auth| {
        f.unmapped(&format!("{path}.auth"), &auth.rest);
        let kubernetes = auth.kubernetes?;
        f.unmapped(&format!("{path}.auth.kubernetes"), &kubernetes.rest);
        kubernetes.service_account_ref
    });
    match service_account {
        Some(account) => {
            f.unmapped(&format!("{path}.auth.kubernetes.serviceAccountRef"), &account.rest);
            let problem = Problem::Route53ServiceAccount {
                name: account.name,
                role: role.clone(),
                namespaced: matches!(scope, Scope::Namespace(_)),
            };
            f.add(format!("{path}.auth.kubernetes.serviceAccountRef"), problem);
        }
        None if !keys => f.add(path, Problem::Route53Ambient { namespaced: matches!(scope, Scope::Namespace(_)) }),
        None => {}
    }
    let (access_key_id, access_key_id_secret_ref, secret_access_key_secret_ref) =
        if keys { (access_key_id, id_ref, secret_key_ref) } else { (None, None, None) };
    // Only the Secrets the output still names need copying.
    for (field, secret) in [
        ("accessKeyIDSecretRef", &access_key_id_secret_ref),
        ("secretAccessKeySecretRef", &secret_access_key_secret_ref),
    ] {
        if let Some(secret) = secret {
            cluster_secret(scope, &format!("{path}.{field}"), &secret.name, f);
        }
    }
    Route53Solver {
        region: route53.region,
        hosted_zone_id: route53.hosted_zone_id,
        access_key_id,
        access_key_id_secret_ref,
        secret_access_key_secret_ref,
        role,
        endpoint: None,
    }
}

fn rfc2136_solver(rfc2136: source::Rfc2136, path: &str, scope: &Scope, f: &mut Findings) -> Rfc2136Solver {
    f.unmapped(path, &rfc2136.rest);
    if rfc2136.protocol.as_deref() != Some("TCP") {
        f.add(format!("{path}.protocol"), Problem::TcpOnly);
    }
    let secret_ref = rfc2136.tsig_secret_secret_ref.and_then(|secret| {
        let Some(key) = secret.key.filter(|k| !k.is_empty()) else {
            f.add(format!("{path}.tsigSecretSecretRef.key"), Problem::TsigKeyMissing);
            return None;
        };
        cluster_secret(scope, &format!("{path}.tsigSecretSecretRef"), &secret.name, f);
        Some(SecretKeySelector { name: secret.name, key })
    });
    let signed = secret_ref.is_some() && rfc2136.tsig_key_name.is_some();
    // Without TSIG the algorithm means nothing; with it, cert-manager's default is HMACMD5.
    let algorithm = match (signed, rfc2136.tsig_algorithm) {
        (false, _) => None,
        (true, Some(name)) => {
            let known = values::tsig_algorithm(&name);
            if known.is_none() {
                f.add(format!("{path}.tsigAlgorithm"), Problem::TsigAlgorithm { value: Some(name) });
            }
            known.map(String::from)
        }
        (true, None) => {
            f.add(format!("{path}.tsigAlgorithm"), Problem::TsigAlgorithm { value: None });
            None
        }
    };
    Rfc2136Solver {
        nameserver: rfc2136.nameserver,
        tsig_key_name: rfc2136.tsig_key_name,
        tsig_algorithm: algorithm,
        tsig_secret_ref: secret_ref,
    }
}
