//! Amazon Route 53 through the AWS SDK for Rust: TXT values are read and written as whole
//! record sets (`ChangeResourceRecordSets` with UPSERT, or DELETE of the set as it stands), so a
//! value is added or removed without touching the others at the same name; an added value is
//! waited for until `GetChange` reports the change INSYNC (on all of Route 53's nameservers).
//!
//! Why the SDK (`aws-config`, `aws-sdk-route53`) and not its signing crate (`aws-sigv4`) with
//! hand-written calls: the credentials EKS users rely on (IRSA's web identity token, EKS Pod
//! Identity, the environment, AssumeRole) are `aws-config`'s default chain, with its STS calls,
//! caching and refreshing; with the signing crate alone, certpilot would write and keep that chain
//! and Route 53's XML itself. The SDK rides on the same hyper, rustls and aws-lc-rs as the rest
//! of certpilot. Its cost, measured when it was added: 25 more crates, the release binary
//! 42.6 MB → 52.0 MB, and the SDK's crates about a tenth of a clean build's compile time.

use super::Provider;
use crate::{
    api::{SecretKeySelector, issuer::Route53Solver},
    issuance::{Failure, FailureCode as C, Outcome},
};
use aws_sdk_route53::{
    Client,
    config::http::HttpResponse,
    config::{
        AppName, BehaviorVersion, Credentials, Region, SharedCredentialsProvider, retry::RetryConfig,
        timeout::TimeoutConfig,
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType},
};
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::time::Duration;

const TTL: i64 = 60;
/// Tries of each request: throttling (`Throttling`, `PriorRequestNotComplete`) and transient
/// errors are retried by the SDK with exponential backoff and jitter.
const MAX_ATTEMPTS: u32 = 5;
/// How long a change may stay PENDING before the attempt fails (Route 53 usually takes under a
/// minute).
const INSYNC_LIMIT: Duration = Duration::from_secs(120);
const LONGEST_PAUSE: Duration = Duration::from_secs(8);
/// The region when neither the solver nor the environment names one: Route 53 is global and
/// signs in us-east-1.
const DEFAULT_REGION: &str = "us-east-1";

/// Read-modify-write of a record set is not atomic in the API: certpilot's own writes are
/// serialised so that two attempts sharing a record name do not drop each other's value.
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// certpilot's own AWS configuration (the default credentials chain), loaded once: clients
/// built from it share its credentials cache, so web identity tokens are exchanged once per
/// session, not once per record.
static AMBIENT: tokio::sync::OnceCell<aws_config::SdkConfig> = tokio::sync::OnceCell::const_new();

pub struct Route53 {
    client: Client,
    hosted_zone_id: Option<String>,
    /// Whose credentials sign the requests, for messages.
    identity: String,
}

impl Route53 {
    /// The provider `solver` describes: its keys read from `secrets`, or certpilot's own AWS
    /// identity when it names none and `ambient_allowed`.
    pub async fn new(secrets: &Api<Secret>, solver: &Route53Solver, ambient_allowed: bool) -> Outcome<Self> {
        let keys = keys(secrets, solver).await?;
        if keys.is_none() && !ambient_allowed {
            return Err(ambient_refused().into());
        }
        Ok(Self::connect(solver, keys).await)
    }

    /// A client signing with `keys` (and whose they are), or with certpilot's own identity.
    async fn connect(solver: &Route53Solver, keys: Option<(Credentials, String)>) -> Self {
        let region = Region::new(solver.region.clone().or_else(environment_region).unwrap_or(DEFAULT_REGION.into()));
        let (base, mut identity) = match keys {
            Some((credentials, whose)) => (keyed_config(credentials, &region).await, whose),
            None => (ambient_config().await.clone(), "certpilot's own AWS identity (ambient credentials)".into()),
        };
        let mut config = aws_sdk_route53::config::Builder::from(&base)
            .region(region.clone())
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(Duration::from_secs(15)).build());
        if let Some(role) = &solver.role {
            let assumed = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("certpilot")
                .region(region)
                .configure(&base)
                .build()
                .await;
            config = config.credentials_provider(assumed);
            identity = format!("role {role}, assumed with {identity}");
        }
        if let Some(endpoint) = &solver.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = Client::from_conf(config.build());
        Self { client, hosted_zone_id: solver.hosted_zone_id.clone(), identity }
    }

    /// The hosted zone `fqdn` is written to: the solver's, else the public zone with the longest
    /// name holding it (asked name by name, from the longest, with `ListHostedZonesByName`).
    async fn zone_for(&self, fqdn: &Name) -> std::result::Result<String, Failure> {
        if let Some(id) = &self.hosted_zone_id {
            return Ok(id.clone());
        }
        let candidates = zone_candidates(fqdn);
        for candidate in &candidates {
            let found = self
                .client
                .list_hosted_zones_by_name()
                .dns_name(candidate)
                .max_items(10)
                .send()
                .await
                .map_err(|e| self.failure("ListHostedZonesByName", None, e))?;
            let public = found
                .hosted_zones()
                .iter()
                .find(|zone| same_name(zone.name(), candidate) && !zone.config().is_some_and(|c| c.private_zone()));
            if let Some(zone) = public {
                return Ok(zone.id().trim_start_matches("/hostedzone/").to_string());
            }
        }
        Err(Failure::new(
            C::DnsUpdateRefused,
            format!(
                "Route 53 has no public hosted zone holding {fqdn} for {} (looked for {}): create one, or set hostedZoneID (a private zone is used only when named there)",
                self.identity,
                candidates.join(", ")
            ),
        ))
    }

    /// The TXT record set at `fqdn` in `zone`: its TTL and values (quoted, as Route 53 keeps them).
    async fn txt_set(&self, zone: &str, fqdn: &str) -> std::result::Result<Option<(i64, Vec<String>)>, Failure> {
        let listed = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .start_record_name(fqdn)
            .start_record_type(RrType::Txt)
            .max_items(1)
            .send()
            .await
            .map_err(|e| self.failure("ListResourceRecordSets", Some(zone), e))?;
        Ok(listed
            .resource_record_sets()
            .first()
            .filter(|set| same_name(set.name(), fqdn) && *set.r#type() == RrType::Txt && set.set_identifier().is_none())
            .map(|set| {
                let values = set.resource_records().iter().map(|r| r.value().to_string()).collect();
                (set.ttl().unwrap_or(TTL), values)
            }))
    }

    /// Replaces the TXT set at `fqdn` with what `change` makes of the current one (its TTL kept);
    /// returns the change to wait for, if one was made.
    async fn rewrite(
        &self,
        fqdn: &Name,
        change: impl FnOnce(&mut Vec<String>),
    ) -> std::result::Result<Option<(String, String)>, Failure> {
        let _serialised = WRITES.lock().await;
        let zone = self.zone_for(fqdn).await?;
        let name = fqdn.to_string();
        let (ttl, current) = self.txt_set(&zone, &name).await?.unwrap_or((TTL, Vec::new()));
        let mut values = current.clone();
        change(&mut values);
        if values == current {
            return Ok(None);
        }
        // Route 53 deletes a set only as it stands, values and TTL alike.
        let (action, values) =
            if values.is_empty() { (ChangeAction::Delete, current) } else { (ChangeAction::Upsert, values) };
        let records = values.into_iter().map(|value| ResourceRecord::builder().value(value).build());
        let set = ResourceRecordSet::builder()
            .name(&name)
            .r#type(RrType::Txt)
            .ttl(ttl)
            .set_resource_records(Some(records.collect::<std::result::Result<_, _>>().map_err(invalid)?))
            .build()
            .map_err(invalid)?;
        let batch = ChangeBatch::builder()
            .comment("certpilot: ACME DNS-01 challenge")
            .changes(Change::builder().action(action).resource_record_set(set).build().map_err(invalid)?)
            .build()
            .map_err(invalid)?;
        let changed = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| self.failure("ChangeResourceRecordSets", Some(&zone), e))?;
        // Without a ChangeInfo there is no change to wait for: what was written is taken as out.
        let pending = changed.change_info().filter(|info| *info.status() != ChangeStatus::Insync);
        Ok(pending.map(|info| (info.id().to_string(), zone)))
    }

    /// Waits until Route 53 reports change `id` INSYNC, at most [`INSYNC_LIMIT`].
    async fn wait_in_sync(&self, id: &str, zone: &str, fqdn: &Name) -> std::result::Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + INSYNC_LIMIT;
        let mut pause = Duration::from_millis(500);
        loop {
            let change =
                self.client.get_change().id(id).send().await.map_err(|e| self.failure("GetChange", Some(zone), e))?;
            if change.change_info().is_some_and(|info| *info.status() == ChangeStatus::Insync) {
                return Ok(());
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(Failure::new(
                    C::DnsPropagation,
                    format!(
                        "Route 53 change {id} (the TXT record {fqdn} in hosted zone {zone}) was still PENDING after {}s, so not yet on all of Route 53's nameservers; the CA was not asked, and the attempt is retried later",
                        INSYNC_LIMIT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    /// What a failed call means, naming the action, the zone and the credentials.
    fn failure<E>(&self, action: &str, zone: Option<&str>, error: SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let on = zone.map(|z| format!(" on hosted zone {z}")).unwrap_or_default();
        if let Some(problem) = credentials_problem(&error) {
            return Failure::new(
                C::DnsProviderCredentials,
                format!("no usable AWS credentials for route53:{action}{on} ({}): {problem}", self.identity),
            );
        }
        let Some(status) = error.raw_response().map(|r| r.status().as_u16()) else {
            let why = DisplayErrorContext(&error);
            return Failure::new(C::DnsUpdateFailed, format!("route53:{action}{on} got no answer: {why}"));
        };
        let code = error.code().unwrap_or_default();
        // Route 53 refuses credentials with 403 whatever the body's shape (moto and other
        // AWS-compatible APIs answer some refusals in IAM's shape, which has no code for the SDK).
        let refusal = match classify(code) {
            Refusal::Other if status == 403 => Refusal::Credentials,
            refusal => refusal,
        };
        let said = match (code, error.message()) {
            ("", _) => format!("HTTP {status}"),
            (code, Some(message)) => format!("{code}: {message}"),
            (code, None) => code.to_string(),
        };
        let (failure_code, advice) = self.advice(refusal, &format!("route53:{action}{on}"));
        Failure::new(failure_code, format!("Route 53 refused route53:{action}{on} ({said}): {advice}"))
    }

    /// The failure code for `refusal` of `call`, and what to do about it.
    fn advice(&self, refusal: Refusal, call: &str) -> (C, String) {
        match refusal {
            Refusal::Credentials => (
                C::DnsProviderCredentials,
                format!("allow {call} to {} (the README lists the IAM policy certpilot needs)", self.identity),
            ),
            Refusal::Throttled => (
                C::DnsUpdateFailed,
                format!("Route 53 still throttled it after {MAX_ATTEMPTS} tries; the attempt is retried later"),
            ),
            Refusal::NoZone => (C::DnsUpdateRefused, "check hostedZoneID against the account's hosted zones".into()),
            Refusal::Invalid => (C::DnsUpdateRefused, "Route 53 refused the change as it stands".into()),
            Refusal::Other => (C::DnsUpdateFailed, "the attempt is retried later".into()),
        }
    }
}

impl Provider for Route53 {
    async fn add_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        let content = quoted(value);
        let change = self
            .rewrite(fqdn, |values| {
                if !values.contains(&content) {
                    values.push(content.clone());
                }
            })
            .await?;
        match change {
            Some((id, zone)) => self.wait_in_sync(&id, &zone, fqdn).await,
            None => Ok(()),
        }
    }

    /// Not waited for: nothing depends on the record being gone from every nameserver.
    async fn remove_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        let content = quoted(value);
        self.rewrite(fqdn, |values| values.retain(|v| *v != content)).await.map(|_| ())
    }
}

/// The keys `solver` names, read from `secrets`, and whose they are; `None` when it names none.
async fn keys(secrets: &Api<Secret>, solver: &Route53Solver) -> Outcome<Option<(Credentials, String)>> {
    let Some(secret_ref) = &solver.secret_access_key_secret_ref else { return Ok(None) };
    let secret_key = secret_value(secrets, secret_ref, "secretAccessKeySecretRef").await?;
    let key_id = match (&solver.access_key_id, &solver.access_key_id_secret_ref) {
        (Some(inline), _) => inline.trim().to_string(),
        (None, Some(id_ref)) => secret_value(secrets, id_ref, "accessKeyIDSecretRef").await?,
        (None, None) => {
            return Err(Failure::new(
                C::DnsProviderCredentials,
                "route53 names secretAccessKeySecretRef without an access key id: set accessKeyID or accessKeyIDSecretRef",
            )
            .into());
        }
    };
    let namespace = secrets.namespace().unwrap_or_default();
    let whose = format!("access key {key_id} (secret key in Secret {namespace}/{})", secret_ref.name);
    Ok(Some((Credentials::new(key_id, secret_key, None, None, "certpilot-issuer"), whose)))
}

/// The text at `selector`, trimmed; missing or empty is a failure naming the field.
async fn secret_value(secrets: &Api<Secret>, selector: &SecretKeySelector, field: &str) -> Outcome<String> {
    let namespace = secrets.namespace().unwrap_or_default();
    let data = secrets.get_opt(&selector.name).await?.and_then(|s| s.data?.get(&selector.key).cloned());
    let value = data.map(|d| String::from_utf8_lossy(&d.0).trim().to_string()).filter(|v| !v.is_empty());
    Ok(value.ok_or_else(|| {
        Failure::new(
            C::DnsProviderCredentials,
            format!(
                "the Route 53 credentials are missing: key {:?} of Secret {namespace}/{} ({field}) does not exist or is empty",
                selector.key, selector.name
            ),
        )
    })?)
}

fn ambient_refused() -> Failure {
    Failure::new(
        C::DnsProviderCredentials,
        "route53 names no keys, and certpilot's own AWS identity (ambient credentials) serves ClusterIssuers only unless certpilot runs with --issuer-ambient-credentials: use a ClusterIssuer, name keys (accessKeyIDSecretRef and secretAccessKeySecretRef), or start certpilot with that flag",
    )
}

/// The operator's region from its environment (`AWS_REGION`, `AWS_DEFAULT_REGION`): never
/// EC2's instance metadata, which a region need not cost.
fn environment_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|v| std::env::var(v).ok().filter(|r| !r.trim().is_empty()))
}

fn app_name() -> AppName {
    AppName::new("certpilot").expect("a valid app name")
}

/// A configuration signing with the issuer's keys (and otherwise as the environment says, e.g.
/// where STS is, for `role`).
async fn keyed_config(credentials: Credentials, region: &Region) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .app_name(app_name())
        .http_client(crate::outbound::aws_http_client())
        .region(region.clone())
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .load()
        .await
}

/// certpilot's own AWS configuration: the default credentials chain (environment, profile,
/// web identity token file, ECS and EKS Pod Identity container credentials, EC2 instance
/// metadata), in the environment's region (else us-east-1).
async fn ambient_config() -> &'static aws_config::SdkConfig {
    AMBIENT
        .get_or_init(|| async {
            let region = Region::new(environment_region().unwrap_or(DEFAULT_REGION.into()));
            aws_config::defaults(BehaviorVersion::latest())
                .app_name(app_name())
                .http_client(crate::outbound::aws_http_client())
                .region(region)
                .load()
                .await
        })
        .await
}

/// The credentials provider's own failure, if that is why the call failed.
fn credentials_problem<E, R>(error: &SdkError<E, R>) -> Option<String>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        if let Some(credentials) = error.downcast_ref::<aws_credential_types::provider::error::CredentialsError>() {
            return Some(DisplayErrorContext(credentials).to_string());
        }
        source = error.source();
    }
    None
}

/// How certpilot reads an error code of Route 53 (or of STS behind it).
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Credentials,
    Throttled,
    NoZone,
    Invalid,
    Other,
}

fn classify(code: &str) -> Refusal {
    match code {
        "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidAccessKeyId"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => Refusal::Credentials,
        "Throttling" | "ThrottlingException" | "PriorRequestNotComplete" => Refusal::Throttled,
        "NoSuchHostedZone" => Refusal::NoZone,
        "InvalidChangeBatch" | "InvalidInput" => Refusal::Invalid,
        _ => Refusal::Other,
    }
}

fn invalid(error: impl std::fmt::Display) -> Failure {
    Failure::new(C::Internal, format!("could not build the Route 53 request: {error}"))
}

/// A TXT value as Route 53 keeps it: one quoted string (ACME values need no escaping).
fn quoted(value: &str) -> String {
    format!("\"{value}\"")
}

/// Whether two DNS names are the same, as Route 53 writes them (lowercase, trailing dot).
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// The names a zone holding `fqdn` may have, longest first (the root left out).
fn zone_candidates(fqdn: &Name) -> Vec<String> {
    let name = fqdn.to_string();
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    (0..labels.len()).map(|skip| format!("{}.", labels[skip..].join("."))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_looked_for_from_the_longest_name() {
        let fqdn: Name = "_acme-challenge.www.example.com.".parse().unwrap();
        assert_eq!(
            zone_candidates(&fqdn),
            ["_acme-challenge.www.example.com.", "www.example.com.", "example.com.", "com."]
        );
        assert!(same_name("example.com.", "EXAMPLE.com"));
        assert!(!same_name("ample.com.", "example.com."));
    }

    #[test]
    fn refusals_are_told_apart_by_their_code() {
        for code in ["AccessDenied", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken"] {
            assert_eq!(classify(code), Refusal::Credentials, "{code}");
        }
        assert_eq!(classify("Throttling"), Refusal::Throttled);
        assert_eq!(classify("PriorRequestNotComplete"), Refusal::Throttled);
        assert_eq!(classify("NoSuchHostedZone"), Refusal::NoZone);
        assert_eq!(classify("InvalidChangeBatch"), Refusal::Invalid);
        assert_eq!(classify("ServiceUnavailable"), Refusal::Other);
        assert_eq!(quoted("abc"), "\"abc\"");
    }

    #[tokio::test]
    async fn api_calls_name_certpilot() {
        use crate::outbound::{
            PRODUCT,
            testing::{Recorder, header_values},
        };
        let mut api = Recorder::start(200, |_| "{}".into()).await;
        let solver = Route53Solver {
            endpoint: Some(api.url.clone()),
            hosted_zone_id: Some("ZCERTPILOT".into()),
            ..Default::default()
        };
        let keys = Credentials::new("AKIDTEST", "secret", None, None, "test");
        let provider = Route53::connect(&solver, Some((keys, "test keys".into()))).await;
        let failed = provider.add_txt(&"_acme-challenge.example.com.".parse().unwrap(), "v").await.unwrap_err();
        assert_eq!(failed.code, C::DnsUpdateFailed, "the listener is no Route 53: {failed:?}");
        let head = api.next_head().await;
        assert!(head.starts_with("GET /2013-04-01/hostedzone/ZCERTPILOT/rrset?"), "{head}");
        let agent = header_values(&head, "user-agent");
        assert!(agent[0].starts_with(&format!("{PRODUCT} aws-sdk-rust/")), "{agent:?}");
        assert!(header_values(&head, "x-amz-user-agent")[0].contains("app/certpilot"), "{head}");
        assert!(header_values(&head, "authorization")[0].contains("Credential=AKIDTEST/"), "{head}");
    }

    /// Route 53 refuses credentials with 403; an answer in another error shape (IAM's, as moto
    /// gives) is still a credentials failure naming the action, the zone and the key.
    #[tokio::test]
    async fn a_403_is_a_credentials_failure_whatever_its_body() {
        let iam_shaped =
            "<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code></Error></Errors></ErrorResponse>";
        let api = crate::outbound::testing::Recorder::start(403, |_| iam_shaped.into()).await;
        let solver = Route53Solver {
            endpoint: Some(api.url.clone()),
            hosted_zone_id: Some("ZCERTPILOT".into()),
            ..Default::default()
        };
        let keys = Credentials::new("AKIDTEST", "secret", None, None, "test");
        let provider = Route53::connect(&solver, Some((keys, "access key AKIDTEST".into()))).await;
        let failed = provider.add_txt(&"_acme-challenge.example.com.".parse().unwrap(), "v").await.unwrap_err();
        assert_eq!(failed.code, C::DnsProviderCredentials, "{failed:?}");
        for part in ["route53:ListResourceRecordSets", "ZCERTPILOT", "AKIDTEST", "HTTP 403"] {
            assert!(failed.message.contains(part), "{part}: {}", failed.message);
        }
    }

    #[test]
    fn ambient_credentials_refused_say_how_to_allow_them() {
        let failure = ambient_refused();
        assert_eq!(failure.code, C::DnsProviderCredentials);
        assert!(failure.message.contains("--issuer-ambient-credentials"), "{}", failure.message);
    }
}
