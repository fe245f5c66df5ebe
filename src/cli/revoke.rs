//! `certpilot revoke CERT [--reason R] [--no-reissue]`: asks for the current certificate to be
//! revoked (the `certpilot.dev/revoke` annotation), then waits for the Revoke attempt and, unless
//! `--no-reissue`, the Reissue with a new key that follows it; `--no-wait` returns at once.

use super::attempts::{report, screen};
use super::output::{Cluster, Palette, Scope, print};
use super::renew::{annotate, follow, succeeded};
use crate::{
    api::{AttemptType, REVOKE_ANNOTATION},
    issuance::FailureCode,
    policy::revoke::{RevocationReason, RevokeRequest},
};
use jiff::Timestamp;
use kube::ResourceExt;

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The Certificate whose current certificate is revoked.
    pub certificate: String,
    /// Why (RFC 5280): unspecified, keyCompromise, affiliationChanged, superseded,
    /// cessationOfOperation or privilegeWithdrawn.
    #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
    pub reason: RevocationReason,
    /// Revoke only: leave the Secret as it is instead of issuing a new certificate.
    #[arg(long)]
    pub no_reissue: bool,
    /// Ask and return at once, without waiting for the attempts.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for each attempt to end (a Go duration).
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    #[command(flatten)]
    pub scope: Scope,
}

fn parse_reason(text: &str) -> Result<RevocationReason, String> {
    RevocationReason::parse(text).ok_or_else(|| {
        let known: Vec<&str> = RevocationReason::ALL.iter().map(|r| r.as_str()).collect();
        format!("one of {}", known.join(", "))
    })
}

pub async fn run(args: RevokeArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.scope).await?;
    let name = &args.certificate;
    let request = RevokeRequest { reason: args.reason, reissue: !args.no_reissue, requested_at: Timestamp::now() };
    let value = request.annotation();
    let previous = annotate(&cluster, name, REVOKE_ANNOTATION, &value).await?;
    if args.no_wait {
        let namespace = cluster.one_namespace()?;
        println!("revocation of Certificate {namespace}/{name} requested ({REVOKE_ANNOTATION}={value})");
        return Ok(());
    }
    let mut ended = vec![follow(&cluster, name, previous.as_ref(), AttemptType::Revoke, &args.timeout).await?];
    let revoke = &ended[0];
    let not_possible = || {
        let code = revoke.status.as_ref().and_then(|s| s.error_code.as_deref());
        code == Some(FailureCode::RevocationNotPossible.as_str())
    };
    // The reissue follows a revocation, or a self-signed certificate no CA can revoke.
    if !args.no_reissue && (succeeded(revoke).is_ok() || not_possible()) {
        let after = Some(revoke.name_any());
        ended.push(follow(&cluster, name, after.as_ref(), AttemptType::Reissue, &args.timeout).await?);
    }
    let shown: Vec<_> = ended.iter().map(report).collect();
    let palette = Palette::for_stdout();
    let now = Timestamp::now();
    print(args.scope.output, &shown, || shown.iter().map(|r| screen(r, &palette, now)).collect::<Vec<_>>().join("\n"))?;
    ended.iter().try_for_each(succeeded)
}
