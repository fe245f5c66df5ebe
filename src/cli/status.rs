//! `certpilot status [CERT]`: one screen per Certificate (phase, why, what to do next, the
//! records the CA checks, the next attempt, expiry and renewal), or a table of many.

use super::output::{Cluster, Palette, Scope, print, relative, table, when};
use crate::api::{
    Certificate, CertificatePhase,
    attempt::ValidationRecord,
    certificate::{AttemptSummary, IssuedBy},
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, api::ListParams};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// A Certificate's name; all of them (in the namespace, or every one with -A) when absent.
    pub certificate: Option<String>,
    /// Only Certificates in this phase (e.g. Failed), chosen by the API server.
    #[arg(long)]
    pub phase: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
}

/// What `status` says about one Certificate.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateReport {
    pub namespace: String,
    pub name: String,
    pub phase: CertificatePhase,
    pub ready: bool,
    /// Why it is in this phase, in certpilot's words.
    pub why: String,
    /// What happens next, or what the user should do.
    pub next: String,
    pub issuer: String,
    /// `fallbackIssuerRefs`, in the order they are tried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback_issuers: Vec<String>,
    /// The issuer of the current certificate, and why a fallback issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<IssuedBy>,
    pub secret_name: String,
    pub names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<AttemptSummary>,
    pub failed_attempts: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_records: Vec<ValidationRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.scope).await?;
    let api = cluster.api::<Certificate>();
    let now = Timestamp::now();
    let palette = Palette::for_stdout();
    if let Some(name) = &args.certificate {
        let namespace = cluster.one_namespace()?;
        let certificate = api
            .get_opt(name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no Certificate {name} in namespace {namespace}"))?;
        let report = report(&certificate);
        return print(args.scope.output, &report, || screen(&report, &palette, now));
    }
    let mut params = ListParams::default();
    if let Some(phase) = &args.phase {
        params = params.fields(&format!("status.phase={phase}"));
    }
    let mut reports: Vec<CertificateReport> = api.list(&params).await?.items.iter().map(report).collect();
    reports.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    print(args.scope.output, &reports, || overview(&reports, args.scope.all_namespaces, &palette, now))
}

/// The report of one Certificate, from its spec and status alone.
pub fn report(certificate: &Certificate) -> CertificateReport {
    let status = certificate.status.clone().unwrap_or_default();
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let ready = condition("Ready").is_some_and(|c| c.is_true());
    // The Issuing condition explains an attempt under way or why the last one failed; when idle,
    // the Ready condition says why the certificate is (not) ready.
    let why = match condition("Issuing") {
        Some(issuing) if issuing.reason != "Idle" && !issuing.message.is_empty() => issuing.message.clone(),
        _ => {
            condition("Ready").map(|c| c.message.clone()).unwrap_or_else(|| "certpilot has not looked at it yet".into())
        }
    };
    let spec = &certificate.spec;
    let mut names = spec.covered_dns_names();
    names.extend(spec.covered_ip_addresses());
    CertificateReport {
        namespace: certificate.namespace().unwrap_or_default(),
        name: certificate.name_any(),
        phase: status.phase,
        ready,
        next: next_step(&certificate.name_any(), &status),
        why,
        issuer: spec.issuer_ref.to_string(),
        fallback_issuers: spec.fallback_issuer_refs.iter().flatten().map(ToString::to_string).collect(),
        issued_by: status.issued_by,
        secret_name: spec.secret_name.clone(),
        names,
        not_after: status.not_after,
        renewal_time: status.renewal_time,
        next_attempt_time: status.next_attempt_time,
        retry_after: status.retry_after,
        last_attempt: status.last_attempt,
        failed_attempts: status.attempts_count,
        validation_records: status.validation_records,
        validation_errors: status.validation_errors,
    }
}

/// What happens next, in one sentence: nothing to do, wait, or act.
fn next_step(name: &str, status: &crate::api::CertificateStatus) -> String {
    let at = |t: &Option<Time>| t.as_ref().map(|t| t.0.to_string()).unwrap_or_else(|| "soon".into());
    match status.phase {
        CertificatePhase::Ready => {
            format!("nothing to do: certpilot renews it at {}", at(&status.renewal_time))
        }
        CertificatePhase::Issuing | CertificatePhase::Renewing => {
            "wait: an attempt is under way (certpilot attempts NAME shows its steps)".replace("NAME", name)
        }
        CertificatePhase::PendingValidation => {
            "wait: the CA is checking the validation records below; each must be reachable by the CA".into()
        }
        CertificatePhase::Failed | CertificatePhase::Expired | CertificatePhase::Pending => {
            match &status.next_attempt_time {
                Some(next) => format!(
                    "fix what the message says; certpilot tries again at {} (or now: certpilot renew {name})",
                    next.0
                ),
                None => "fix what the message says; certpilot tries again as soon as it changes".into(),
            }
        }
    }
}

fn phase_style(phase: CertificatePhase, palette: &Palette) -> anstyle::Style {
    match phase {
        CertificatePhase::Ready => palette.good,
        CertificatePhase::Failed | CertificatePhase::Expired => palette.bad,
        _ => palette.busy,
    }
}

/// One Certificate, for people.
pub fn screen(report: &CertificateReport, palette: &Palette, now: Timestamp) -> String {
    let phase = Palette::paint(phase_style(report.phase, palette), &format!("{:?}", report.phase));
    let title = Palette::paint(palette.strong, &format!("Certificate {}/{}", report.namespace, report.name));
    let mut out = format!("{title}: {phase}\n");
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<14}{value}\n"));
    line("Why", report.why.clone());
    line("Next", report.next.clone());
    line("Names", report.names.join(", "));
    line("Issuer", report.issuer.clone());
    if !report.fallback_issuers.is_empty() {
        line("Fallbacks", report.fallback_issuers.join(", "));
    }
    if let Some(IssuedBy { kind, name, fallback_reason: Some(reason) }) = &report.issued_by {
        line("Issued by", format!("{kind:?}/{name}, a fallback: {reason}"));
    }
    line("Secret", report.secret_name.clone());
    line("Expires", when(report.not_after.as_ref(), now));
    line("Renews", when(report.renewal_time.as_ref(), now));
    if let Some(attempt) = &report.last_attempt {
        line("Last attempt", format!("{} ({:?}, {:?})", attempt.name, attempt.type_, attempt.phase));
    }
    if report.failed_attempts > 0 {
        line("Failures", format!("{} in a row", report.failed_attempts));
    }
    if report.next_attempt_time.is_some() {
        line("Next attempt", when(report.next_attempt_time.as_ref(), now));
    }
    if report.retry_after.is_some() {
        line("CA Retry-After", when(report.retry_after.as_ref(), now));
    }
    if !report.validation_records.is_empty() {
        out.push_str("  Validation records (what the CA checks):\n");
        for record in &report.validation_records {
            out.push_str(&format!("    {}\n", describe_record(record)));
        }
    }
    for error in &report.validation_errors {
        out.push_str(&format!("  {} {error}\n", Palette::paint(palette.bad, "CA error:")));
    }
    out
}

/// `dns-01 web.example.com: TXT _acme-challenge.web.example.com "…" (pending)`.
pub fn describe_record(record: &ValidationRecord) -> String {
    let what = match (&record.record_name, &record.http_url, &record.record_value) {
        (Some(name), _, Some(value)) => match &record.delegated_to {
            Some(target) => format!("TXT {name} \"{value}\" (CNAME to {target}, written there)"),
            None => format!("TXT {name} \"{value}\""),
        },
        (_, Some(url), Some(body)) => format!("GET {url} answers \"{body}\""),
        (_, Some(url), None) => format!("GET {url}"),
        _ => String::new(),
    };
    let error = record.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
    let check = record.dns_check.as_ref().map(|c| format!("; DNS check: {c}")).unwrap_or_default();
    format!("{} {}: {what} ({}){error}{check}", record.type_, record.dns_name, record.status)
}

/// Many Certificates, one row each.
pub fn overview(reports: &[CertificateReport], all_namespaces: bool, palette: &Palette, now: Timestamp) -> String {
    if reports.is_empty() {
        return "No Certificates found.\n".into();
    }
    let mut headers = vec!["NAME", "PHASE", "EXPIRES", "RENEWS", "WHY"];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let in_words = |t: &Option<Time>| t.as_ref().map(|t| relative(t.0, now)).unwrap_or_else(|| "-".into());
            let mut row = vec![
                r.name.clone(),
                format!("{:?}", r.phase),
                in_words(&r.not_after),
                in_words(&r.renewal_time),
                shorten(&r.why, 80),
            ];
            if all_namespaces {
                row.insert(0, r.namespace.clone());
            }
            row
        })
        .collect();
    // Colour after laying out, so escape codes do not count as width.
    let mut out = table(&headers, &rows);
    for report in reports {
        let phase = format!("{:?}", report.phase);
        let painted = Palette::paint(phase_style(report.phase, palette), &phase);
        if painted != phase {
            out = out.replacen(&format!("   {phase} "), &format!("   {painted} "), 1);
        }
    }
    out
}

fn shorten(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AttemptPhase, AttemptType, CertificateStatus, conditions::Condition};
    use serde_json::json;

    fn certificate(status: CertificateStatus) -> Certificate {
        let mut c: Certificate = serde_json::from_value(json!({
            "apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"secretName": "web-tls", "dnsNames": ["web.example.com"], "issuerRef": {"name": "le", "kind": "ClusterIssuer"}}
        }))
        .unwrap();
        c.status = Some(status);
        c
    }

    fn time(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    #[test]
    fn a_certificate_from_a_fallback_issuer_says_so_and_why() {
        let status = CertificateStatus {
            phase: CertificatePhase::Ready,
            issued_by: Some(IssuedBy {
                kind: crate::api::IssuerKind::Issuer,
                name: "zerossl".into(),
                fallback_reason: Some("ClusterIssuer/le failed on the CA's side (CAUnreachable): refused".into()),
            }),
            ..Default::default()
        };
        let mut cert = certificate(status);
        cert.spec.fallback_issuer_refs =
            Some(vec![crate::api::IssuerRef { kind: crate::api::IssuerKind::Issuer, name: "zerossl".into() }]);
        let r = report(&cert);
        assert_eq!(r.fallback_issuers, ["Issuer/zerossl"]);
        let text = screen(&r, &Palette::default(), "2026-11-29T00:00:00Z".parse().unwrap());
        assert!(text.contains("Fallbacks     Issuer/zerossl\n"), "{text}");
        assert!(text.contains("Issued by     Issuer/zerossl, a fallback: ClusterIssuer/le failed"), "{text}");
        let from_issuer_ref = report(&certificate(CertificateStatus::default()));
        let text = screen(&from_issuer_ref, &Palette::default(), "2026-11-29T00:00:00Z".parse().unwrap());
        assert!(!text.contains("Fallbacks") && !text.contains("Issued by"), "{text}");
    }

    #[test]
    fn a_ready_certificate_says_when_it_renews() {
        let status = CertificateStatus {
            phase: CertificatePhase::Ready,
            conditions: vec![Condition::new("Ready", true, "Ready", "valid until 2027-02-27T00:00:00Z")],
            not_after: Some(time("2027-02-27T00:00:00Z")),
            renewal_time: Some(time("2027-01-28T00:00:00Z")),
            ..Default::default()
        };
        let r = report(&certificate(status));
        assert!(r.ready);
        assert_eq!(r.issuer, "ClusterIssuer/le");
        assert_eq!(r.why, "valid until 2027-02-27T00:00:00Z");
        assert_eq!(r.next, "nothing to do: certpilot renews it at 2027-01-28T00:00:00Z");
        let now: Timestamp = "2026-11-29T00:00:00Z".parse().unwrap();
        let text = screen(&r, &Palette::default(), now);
        assert!(text.starts_with("Certificate shop/web: Ready\n"), "{text}");
        assert!(text.contains("Expires       2027-02-27T00:00:00Z (in 90d)"), "{text}");
    }

    #[test]
    fn a_failed_certificate_says_why_and_when_it_tries_again() {
        let status = CertificateStatus {
            phase: CertificatePhase::Failed,
            conditions: vec![
                Condition::new("Ready", false, "Failed", "no certificate"),
                Condition::new("Issuing", false, "RateLimited", "the CA refused: too many certificates; wait"),
            ],
            next_attempt_time: Some(time("2026-11-29T01:00:00Z")),
            attempts_count: 2,
            last_attempt: Some(AttemptSummary {
                name: "web-3".into(),
                type_: AttemptType::Issue,
                phase: AttemptPhase::Failed,
            }),
            validation_records: vec![ValidationRecord {
                dns_name: "web.example.com".into(),
                type_: "dns-01".into(),
                record_name: Some("_acme-challenge.web.example.com".into()),
                record_value: Some("abc".into()),
                status: "invalid".into(),
                error: Some("no TXT record found".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = report(&certificate(status));
        assert!(!r.ready);
        assert_eq!(r.why, "the CA refused: too many certificates; wait");
        assert!(r.next.contains("2026-11-29T01:00:00Z") && r.next.contains("certpilot renew web"), "{}", r.next);
        let now: Timestamp = "2026-11-29T00:00:00Z".parse().unwrap();
        let text = screen(&r, &Palette::default(), now);
        assert!(text.contains("Failures      2 in a row"), "{text}");
        assert!(
            text.contains(
                "dns-01 web.example.com: TXT _acme-challenge.web.example.com \"abc\" (invalid): no TXT record found"
            ),
            "{text}"
        );
        assert!(text.contains("Last attempt  web-3 (Issue, Failed)"), "{text}");
    }

    #[test]
    fn a_delegated_record_and_the_dns_check_are_shown() {
        let record = ValidationRecord {
            dns_name: "www.example.com".into(),
            type_: "dns-01".into(),
            record_name: Some("_acme-challenge.www.example.com".into()),
            record_value: Some("abc".into()),
            delegated_to: Some("www.acme.example.net.".into()),
            dns_check: Some("no nameserver answered".into()),
            status: "pending".into(),
            ..Default::default()
        };
        assert_eq!(
            describe_record(&record),
            "dns-01 www.example.com: TXT _acme-challenge.www.example.com \"abc\" (CNAME to www.acme.example.net., written there) (pending); DNS check: no nameserver answered"
        );
    }

    #[test]
    fn a_certificate_never_reconciled_says_so() {
        let mut c = certificate(CertificateStatus::default());
        c.status = None;
        let r = report(&c);
        assert_eq!(r.phase, CertificatePhase::Pending);
        assert_eq!(r.why, "certpilot has not looked at it yet");
    }

    #[test]
    fn the_overview_lists_one_row_per_certificate() {
        let now: Timestamp = "2026-11-29T00:00:00Z".parse().unwrap();
        let ready = report(&certificate(CertificateStatus {
            phase: CertificatePhase::Ready,
            not_after: Some(time("2027-02-27T00:00:00Z")),
            ..Default::default()
        }));
        let text = overview(&[ready], true, &Palette::default(), now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME   PHASE"), "{text}");
        assert!(lines[1].starts_with("shop        web    Ready   in 90d"), "{text}");
        assert_eq!(overview(&[], false, &Palette::default(), now), "No Certificates found.\n");
    }
}
