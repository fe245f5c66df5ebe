//! `certpilot renew CERT`: asks for a renewal now (the `certpilot.dev/renew` annotation), then
//! waits for the attempt it starts and shows it, unless `--no-wait`.

use super::attempts::{report, screen};
use super::output::{Cluster, Palette, Scope, print};
use crate::api::{AttemptType, Certificate, CertificateAttempt, RENEW_ANNOTATION};
use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::wait::await_condition,
};

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
/// start and end; the attempt as it ended.
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
    let certificates: Api<Certificate> = cluster.api();
    let started = |c: Option<&Certificate>| {
        c.and_then(|c| c.status.as_ref()?.last_attempt.as_ref())
            .is_some_and(|a| a.type_ == type_ && Some(&a.name) != previous)
    };
    let within = |what: String| move |_| anyhow::anyhow!("{what} within {limit}");
    let certificate = tokio::time::timeout(timeout, await_condition(certificates, name, started))
        .await
        .map_err(within(format!("no {type_:?} attempt started")))??;
    let attempt_name = last_attempt(certificate.as_ref()).expect("the attempt started");
    let attempts: Api<CertificateAttempt> = cluster.api();
    let ended =
        |a: Option<&CertificateAttempt>| a.and_then(|a| a.status.as_ref()).is_some_and(|s| s.phase.is_terminal());
    tokio::time::timeout(timeout, await_condition(attempts, &attempt_name, ended))
        .await
        .map_err(within(format!("the {type_:?} attempt did not end")))??
        .ok_or_else(|| anyhow::anyhow!("CertificateAttempt {attempt_name} was deleted"))
}

pub(super) fn last_attempt(certificate: Option<&Certificate>) -> Option<String> {
    certificate.and_then(|c| c.status.as_ref()?.last_attempt.as_ref()).map(|a| a.name.clone())
}
