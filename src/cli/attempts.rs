//! `certpilot attempts CERT`: the history of a Certificate's attempts, with each step's timing
//! and the CA's error; attempts whose objects were pruned, from the Certificate's
//! `status.history`, one line each.

use super::output::{Cluster, Palette, Scope, print, relative, took};
use super::status::describe_record;
use crate::api::{
    AttemptPhase, AttemptType, Certificate, CertificateAttempt,
    attempt::{Step, StepPhase, ValidationRecord},
    certificate::AttemptHistoryEntry,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, api::ListParams};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct AttemptsArgs {
    /// The Certificate whose attempts to show, newest last.
    pub certificate: String,
    #[command(flatten)]
    pub scope: Scope,
}

/// One attempt, as `attempts` and `renew` show it.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptReport {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: AttemptType,
    pub phase: AttemptPhase,
    /// Empty for a pruned attempt: the history does not keep it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// `Kind/name`.
    pub issuer: String,
    /// The object is gone; this is what the Certificate's `status.history` kept of it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pruned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub challenges: Vec<ValidationRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
}

pub async fn run(args: AttemptsArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.scope).await?;
    let namespace = cluster.one_namespace()?;
    let objects = list(&cluster, &args.certificate).await?;
    let reports = with_pruned(objects, &recorded_history(&cluster, &args.certificate).await?);
    if reports.is_empty() {
        anyhow::bail!("no CertificateAttempts of Certificate {} in namespace {namespace}", args.certificate);
    }
    let palette = Palette::for_stdout();
    let now = Timestamp::now();
    print(args.scope.output, &reports, || {
        reports.iter().map(|r| screen(r, &palette, now)).collect::<Vec<_>>().join("\n")
    })
}

/// The attempts of `certificate`, oldest first (chosen by the API server's field selector).
pub async fn list(cluster: &Cluster, certificate: &str) -> anyhow::Result<Vec<AttemptReport>> {
    let params = ListParams::default().fields(&format!("spec.certificateName={certificate}"));
    let mut attempts = cluster.api::<CertificateAttempt>().list(&params).await?.items;
    attempts.sort_by_key(|a| (index(a), a.name_any()));
    Ok(attempts.iter().map(report).collect())
}

/// `web-12` → 12: attempts are numbered, and names sort `web-10` before `web-9`.
fn index(attempt: &CertificateAttempt) -> u64 {
    index_of(&attempt.name_any())
}

fn index_of(name: &str) -> u64 {
    name.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The Certificate's `status.history` (none when the Certificate is gone).
async fn recorded_history(cluster: &Cluster, certificate: &str) -> anyhow::Result<Vec<AttemptHistoryEntry>> {
    let found = cluster.api::<Certificate>().get_opt(certificate).await?;
    Ok(found.and_then(|c| c.status).map(|s| s.history).unwrap_or_default())
}

/// The attempts that have objects, and those the history remembers whose objects were pruned,
/// oldest first.
pub fn with_pruned(mut reports: Vec<AttemptReport>, history: &[AttemptHistoryEntry]) -> Vec<AttemptReport> {
    let pruned: Vec<AttemptReport> =
        history.iter().filter(|e| !reports.iter().any(|r| r.name == e.name)).map(pruned_report).collect();
    reports.extend(pruned);
    reports.sort_by(|a, b| (index_of(&a.name), &a.name).cmp(&(index_of(&b.name), &b.name)));
    reports
}

fn pruned_report(entry: &AttemptHistoryEntry) -> AttemptReport {
    AttemptReport {
        name: entry.name.clone(),
        type_: entry.type_,
        phase: entry.phase,
        reason: String::new(),
        issuer: entry.issuer.clone(),
        pruned: true,
        started_at: entry.started_at.clone(),
        finished_at: entry.finished_at.clone(),
        steps: Vec::new(),
        challenges: Vec::new(),
        error_code: entry.error_code.clone(),
        error_message: None,
        retry_after: None,
        serial_number: entry.serial.clone(),
    }
}

pub fn report(attempt: &CertificateAttempt) -> AttemptReport {
    let status = attempt.status.clone().unwrap_or_default();
    AttemptReport {
        name: attempt.name_any(),
        type_: attempt.spec.type_,
        phase: status.phase,
        reason: attempt.spec.reason.clone(),
        issuer: attempt.spec.issuer_ref.to_string(),
        pruned: false,
        started_at: status.started_at,
        finished_at: status.finished_at,
        steps: status.steps,
        challenges: status.challenges,
        error_code: status.error_code,
        error_message: status.error_message,
        retry_after: status.retry_after,
        serial_number: status.issued.map(|i| i.serial_number),
    }
}

/// One attempt, for people: a heading, its steps with timings, and how it ended; a pruned
/// one in a line.
pub fn screen(report: &AttemptReport, palette: &Palette, now: Timestamp) -> String {
    let heading = heading(report, palette, now);
    if report.pruned {
        let serial = report.serial_number.as_ref().map(|s| format!(", serial {s}")).unwrap_or_default();
        let code =
            report.error_code.as_ref().map(|c| format!(", {}", Palette::paint(palette.bad, c))).unwrap_or_default();
        return format!(
            "{heading}, {}{serial}{code} (pruned: kept in the Certificate's status.history)\n",
            report.issuer
        );
    }
    let mut out = format!("{heading}\n");
    out.push_str(&format!("  why: {}\n", report.reason));
    for step in &report.steps {
        let timing = match (&step.started_at, &step.finished_at) {
            (Some(from), Some(to)) => took(from, to),
            _ => "…".into(),
        };
        let mark = match step.phase {
            StepPhase::Succeeded => Palette::paint(palette.good, "ok"),
            StepPhase::Failed => Palette::paint(palette.bad, "failed"),
            StepPhase::Running => Palette::paint(palette.busy, "running"),
        };
        out.push_str(&format!("  {:<22}{mark:<8} {timing:>7}  {}\n", step.name, step.message));
    }
    for record in &report.challenges {
        out.push_str(&format!("  record: {}\n", describe_record(record)));
    }
    if let Some(serial) = &report.serial_number {
        out.push_str(&format!("  issued: serial {serial}\n"));
    }
    if let Some(message) = &report.error_message {
        let code = report.error_code.as_deref().unwrap_or("Error");
        out.push_str(&format!("  {} {message}\n", Palette::paint(palette.bad, &format!("{code}:"))));
    }
    if let Some(retry) = &report.retry_after {
        out.push_str(&format!("  the CA asks to wait until {} ({})\n", retry.0, relative(retry.0, now)));
    }
    out
}

/// `web-2  Renew  Failed, started 60m ago, took 3.00s`
fn heading(report: &AttemptReport, palette: &Palette, now: Timestamp) -> String {
    let style = match report.phase {
        AttemptPhase::Succeeded => palette.good,
        AttemptPhase::Failed | AttemptPhase::Rejected => palette.bad,
        _ => palette.busy,
    };
    let phase = Palette::paint(style, &format!("{:?}", report.phase));
    let started = report.started_at.as_ref().map(|t| format!(", started {}", relative(t.0, now))).unwrap_or_default();
    let duration = match (&report.started_at, &report.finished_at) {
        (Some(from), Some(to)) => format!(", took {}", took(from, to)),
        _ => String::new(),
    };
    let name = Palette::paint(palette.strong, &report.name);
    format!("{name}  {:?}  {phase}{started}{duration}", report.type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attempt(name: &str, status: serde_json::Value) -> CertificateAttempt {
        serde_json::from_value(json!({
            "apiVersion": "certpilot.dev/v1alpha1", "kind": "CertificateAttempt",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"certificateName": "web", "type": "Renew", "reason": "renewal time reached", "secretName": "web-tls",
                     "dnsNames": ["web.example.com"], "issuerRef": {"name": "le"}, "privateKey": {"algorithm": "ECDSA"},
                     "keyAlgorithm": "ECDSA-256", "certificateGeneration": 1},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_failed_attempt_shows_its_steps_and_the_cas_error() {
        let failed = attempt(
            "web-2",
            json!({"phase": "Failed", "startedAt": "2026-11-29T00:00:00Z", "finishedAt": "2026-11-29T00:00:03Z",
                   "steps": [{"name": "GenerateKey", "phase": "Succeeded", "startedAt": "2026-11-29T00:00:00Z", "finishedAt": "2026-11-29T00:00:00.250Z", "message": "ECDSA-256"},
                             {"name": "Order", "phase": "Failed", "startedAt": "2026-11-29T00:00:00.250Z", "finishedAt": "2026-11-29T00:00:03Z", "message": "refused"}],
                   "errorCode": "RateLimited", "errorMessage": "too many certificates already issued",
                   "retryAfter": "2026-11-29T03:00:00Z"}),
        );
        let now: Timestamp = "2026-11-29T01:00:00Z".parse().unwrap();
        let text = screen(&report(&failed), &Palette::default(), now);
        assert!(text.starts_with("web-2  Renew  Failed, started 60m ago, took 3.00s\n"), "{text}");
        assert!(text.contains("  why: renewal time reached\n"), "{text}");
        assert!(text.contains("GenerateKey           ok         0.25s  ECDSA-256"), "{text}");
        assert!(text.contains("Order                 failed     2.75s  refused"), "{text}");
        assert!(text.contains("RateLimited: too many certificates already issued"), "{text}");
        assert!(text.contains("wait until 2026-11-29T03:00:00Z (in 2h)"), "{text}");
    }

    fn entry(name: &str, phase: AttemptPhase) -> AttemptHistoryEntry {
        serde_json::from_value(json!({"name": name, "type": "Manual", "phase": phase, "issuer": "Issuer/le",
            "startedAt": "2026-11-29T00:00:00Z", "finishedAt": "2026-11-29T00:00:02Z", "serial": "0ABC",
            "errorCode": (phase == AttemptPhase::Failed).then_some("RateLimited")}))
        .unwrap()
    }

    #[test]
    fn pruned_attempts_from_the_history_join_the_objects_in_order() {
        let objects =
            vec![report(&attempt("web-9", json!({"phase": "Succeeded"}))), report(&attempt("web-10", json!({})))];
        let history = [
            entry("web-10", AttemptPhase::Pending),
            entry("web-9", AttemptPhase::Succeeded),
            entry("web-8", AttemptPhase::Failed),
            entry("web-7", AttemptPhase::Succeeded),
        ];
        let reports = with_pruned(objects, &history);
        let listed: Vec<(&str, bool)> = reports.iter().map(|r| (r.name.as_str(), r.pruned)).collect();
        assert_eq!(listed, [("web-7", true), ("web-8", true), ("web-9", false), ("web-10", false)]);
        assert_eq!(reports[3].phase, AttemptPhase::Pending, "an object is shown as it is, not as the history saw it");
        let json = serde_json::to_value(&reports[1]).unwrap();
        assert_eq!(json["pruned"], json!(true));
        assert_eq!(json["issuer"], json!("Issuer/le"));
        assert_eq!(json["errorCode"], json!("RateLimited"));
        assert_eq!(json.get("reason"), None);
        assert_eq!(serde_json::to_value(&reports[2]).unwrap().get("pruned"), None);
    }

    #[test]
    fn a_pruned_attempt_is_one_line() {
        let now: Timestamp = "2026-11-29T01:00:00Z".parse().unwrap();
        let text = screen(&pruned_report(&entry("web-8", AttemptPhase::Failed)), &Palette::default(), now);
        assert_eq!(
            text,
            "web-8  Manual  Failed, started 60m ago, took 2.00s, Issuer/le, serial 0ABC, RateLimited (pruned: kept in the Certificate's status.history)\n"
        );
    }

    #[test]
    fn attempts_are_ordered_by_their_number() {
        let names = ["web-10", "web-9", "web-1"];
        let mut attempts: Vec<CertificateAttempt> = names.iter().map(|n| attempt(n, json!({}))).collect();
        attempts.sort_by_key(|a| (index(a), a.name_any()));
        let sorted: Vec<String> = attempts.iter().map(ResourceExt::name_any).collect();
        assert_eq!(sorted, ["web-1", "web-9", "web-10"]);
    }
}
