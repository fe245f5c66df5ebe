//! `certpilot renew CERT`: asks for a renewal now (the `certpilot.dev/renew` annotation), then
//! waits for the attempt it starts and shows it, unless `--no-wait`.

use super::attempts::{report, screen};
use super::output::{Cluster, Palette, Scope, print};
use crate::{
    api::{AttemptType, CERTIFICATE_NAME_LABEL, Certificate, CertificateAttempt, RENEW_ANNOTATION},
    policy::trust::attempt_index,
    secret::label_value,
};
use futures::TryStreamExt;
use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use std::collections::BTreeMap;

/// The field manager of the annotation, so `kubectl get -o yaml --show-managed-fields` shows
/// who asked.
const FIELD_MANAGER: &str = "certpilot-cli";

#[derive(clap::Args, Debug)]
pub struct RenewArgs {
    /// The Certificate to renew.
    pub certificate: String,
    /// Ask and return at once, without waiting for the attempt.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the attempt to end (a Go duration).
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    #[command(flatten)]
    pub scope: Scope,
}

pub async fn run(args: RenewArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.scope).await?;
    let name = &args.certificate;
    let requested = Timestamp::now().to_string();
    let previous = annotate(&cluster, name, RENEW_ANNOTATION, &requested).await?;
    if args.no_wait {
        let namespace = cluster.one_namespace()?;
        println!("renewal of Certificate {namespace}/{name} requested ({RENEW_ANNOTATION}={requested})");
        return Ok(());
    }
    let attempt = follow(&cluster, name, previous.as_ref(), AttemptType::Manual, &args.timeout).await?;
    let shown = report(&attempt);
    let palette = Palette::for_stdout();
    print(args.scope.output, &shown, || screen(&shown, &palette, Timestamp::now()))?;
    succeeded(&attempt)
}

/// Sets `annotation` to `value` on Certificate `name`, as certpilot's CLI; returns the attempt
/// the Certificate named last, which the attempt asked for will follow.
pub(super) async fn annotate(
    cluster: &Cluster,
    name: &str,
    annotation: &str,
    value: &str,
) -> anyhow::Result<Option<String>> {
    let namespace = cluster.one_namespace()?;
    let certificates: Api<Certificate> = cluster.api();
    let before = certificates
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no Certificate {name} in namespace {namespace}"))?;
    let patch = serde_json::json!({"metadata": {"annotations": {annotation: value}}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    certificates.patch(name, &params, &Patch::Merge(&patch)).await?;
    Ok(last_attempt(Some(&before)))
}

/// An error unless `attempt` succeeded.
pub(super) fn succeeded(attempt: &CertificateAttempt) -> anyhow::Result<()> {
    match attempt.status.as_ref().map(|s| s.phase) {
        Some(crate::api::AttemptPhase::Succeeded) => Ok(()),
        phase => anyhow::bail!("the {:?} attempt {} ended {phase:?}", attempt.spec.type_, attempt.name_any()),
    }
}

/// Waits for the attempt of type `type_` that follows `previous` on Certificate `name` to
/// start and end; the attempt as it ended. Followed among the Certificate's attempts, not
/// through its status: an attempt that starts and ends between two status writes (a quick
/// revocation, then the reissue it calls for) never shows there as the latest.
pub(super) async fn follow(
    cluster: &Cluster,
    name: &str,
    previous: Option<&String>,
    type_: AttemptType,
    limit: &str,
) -> anyhow::Result<CertificateAttempt> {
    let timeout = crate::policy::parse_duration(limit)
        .ok_or_else(|| anyhow::anyhow!("--timeout: {limit:?} is not a duration such as 5m"))?
        .unsigned_abs();
    let after = previous.and_then(|p| attempt_index(name, p)).unwrap_or(0);
    let attempts: Api<CertificateAttempt> = cluster.api();
    let config = watcher::Config::default().labels(&format!("{CERTIFICATE_NAME_LABEL}={}", label_value(name)));
    let asked_for = |a: &CertificateAttempt| {
        let index = attempt_index(name, &a.name_any()).filter(|i| *i > after);
        index.filter(|_| a.spec.certificate_name == name && a.spec.type_ == type_)
    };
    // The first such attempt is the one asked for; the watch may show later ones first.
    let mut seen: BTreeMap<u32, CertificateAttempt> = BTreeMap::new();
    let ended = async {
        let mut changes = std::pin::pin!(watcher(attempts, config).applied_objects());
        while let Some(attempt) = changes.try_next().await? {
            if let Some(index) = asked_for(&attempt) {
                seen.insert(index, attempt);
            }
            let first = seen.first_key_value().map(|(_, a)| a);
            if let Some(first) = first.filter(|a| a.status.as_ref().is_some_and(|s| s.phase.is_terminal())) {
                return Ok(first.clone());
            }
        }
        anyhow::bail!("the watch of attempts ended")
    };
    tokio::time::timeout(timeout, ended).await.map_err(|_| match seen_name(&seen) {
        Some(attempt) => anyhow::anyhow!("the {type_:?} attempt {attempt} did not end within {limit}"),
        None => anyhow::anyhow!("no {type_:?} attempt started within {limit}"),
    })?
}

fn seen_name(seen: &BTreeMap<u32, CertificateAttempt>) -> Option<String> {
    seen.first_key_value().map(|(_, a)| a.name_any())
}

pub(super) fn last_attempt(certificate: Option<&Certificate>) -> Option<String> {
    certificate.and_then(|c| c.status.as_ref()?.last_attempt.as_ref()).map(|a| a.name.clone())
}
