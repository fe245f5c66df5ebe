//! A webhook of the user's for any DNS with an API but no provider here, in lego's `httpreq`
//! protocol (its default mode), so that servers written for lego work as they are:
//! `POST <url>/present` and `POST <url>/cleanup` with
//! `{"fqdn": "_acme-challenge.example.com.", "value": "…"}`, any 2xx answer being success.
//! lego's `RAW` mode (`domain`, `token`, `keyAuth`, leaving the record name to the server) is
//! not spoken: certpilot names the record itself, which is what lets `cnameStrategy: Follow`
//! send the name at the end of a CNAME chain.
//!
//! Calls are repeated after a restart or a failed attempt (certpilot is crash-safe by writing
//! ahead, not by remembering what a call did), so a webhook must take a repeated present or
//! cleanup as success, as lego's `httpreq` servers do.

use super::Provider;
use crate::{
    api::{LocalSecretReference, SecretKeySelector, issuer::WebhookSolver},
    error::Result,
    issuance::{Failure, FailureCode as C, Outcome},
    outbound,
};
use base64::Engine;
use bytes::Bytes;
use hickory_proto::rr::Name;
use http::{HeaderValue, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::{collections::BTreeMap, time::Duration};

/// lego's default `HTTPREQ_HTTP_TIMEOUT`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a refusal's body the failure quotes: enough for a reason, not a whole page.
const QUOTED_CHARS: usize = 300;

type HttpClient = outbound::HttpClient<Full<Bytes>>;

pub struct Webhook {
    client: HttpClient,
    present: Uri,
    cleanup: Uri,
    /// The `Authorization` header, when the spec names credentials.
    authorization: Option<HeaderValue>,
    /// Where the credentials come from, for a refusal's message.
    credentials: String,
    timeout: Duration,
}

/// The two calls of the protocol.
#[derive(Clone, Copy)]
enum Call {
    Present,
    Cleanup,
}

impl Call {
    fn path(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Cleanup => "cleanup",
        }
    }
}

/// The `Authorization` header and a description of where it came from.
struct Credentials {
    header: Option<HeaderValue>,
    source: String,
}

impl Webhook {
    /// The webhook `solver` describes, its credentials (if any) read from `secrets`.
    pub async fn new(secrets: &Api<Secret>, solver: &WebhookSolver) -> Outcome<Self> {
        let credentials = credentials(secrets, solver).await?;
        Ok(Self::with_credentials(solver, credentials)?)
    }

    fn with_credentials(solver: &WebhookSolver, credentials: Credentials) -> std::result::Result<Self, Failure> {
        let invalid = |e: String| Failure::new(C::InvalidSpec, format!("webhook.url {:?}: {e}", solver.url));
        let present = endpoint(&solver.url, Call::Present).map_err(invalid)?;
        let cleanup = endpoint(&solver.url, Call::Cleanup).map_err(invalid)?;
        let timeout = match solver.timeout.as_deref() {
            None => DEFAULT_TIMEOUT,
            Some(text) => crate::policy::parse_duration(text)
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Failure::new(C::InvalidSpec, format!("webhook.timeout {text:?} is not a Go duration"))
                })?,
        };
        Ok(Self {
            client: HttpClient::new(roots(solver.ca_bundle.as_deref())?),
            present,
            cleanup,
            authorization: credentials.header,
            credentials: credentials.source,
            timeout,
        })
    }

    /// Posts `{"fqdn", "value"}` to the call's URL and judges the answer.
    async fn call(&self, call: Call, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        let uri = match call {
            Call::Present => &self.present,
            Call::Cleanup => &self.cleanup,
        };
        let mut request = http::Request::post(uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(payload(fqdn, value)))
            .map_err(|e| Failure::new(C::Internal, format!("webhook request to {uri}: {e}")))?;
        if let Some(authorization) = &self.authorization {
            request.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
        }
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| transport_failure(uri, &e))?;
            let status = response.status();
            Ok((status, body_start(response.into_body()).await))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange).await.map_err(|_| {
            let message = format!(
                "the webhook at {uri} did not answer within {}s (webhook.timeout); certpilot tries again",
                self.timeout.as_secs_f64()
            );
            Failure::new(C::DnsProviderUnreachable, message)
        })??;
        self.judge(call, uri, fqdn, status, &body)
    }

    /// Success for a 2xx answer; otherwise what the webhook said and what to do about it.
    fn judge(
        &self,
        call: Call,
        uri: &Uri,
        fqdn: &Name,
        status: StatusCode,
        body: &str,
    ) -> std::result::Result<(), Failure> {
        if status.is_success() {
            return Ok(());
        }
        let answer = if body.is_empty() { status.to_string() } else { format!("{status}: {body}") };
        let failure = match status.as_u16() {
            401 | 403 => Failure::new(
                C::DnsProviderCredentials,
                format!("the webhook at {uri} refused certpilot's credentials ({answer}): {}", self.credentials),
            ),
            502..=504 => Failure::new(
                C::DnsProviderUnreachable,
                format!("the webhook at {uri} is unavailable for now ({answer}); certpilot tries again"),
            ),
            300..=399 => Failure::new(
                C::DnsUpdateRefused,
                format!(
                    "the webhook at {uri} answered {answer}: certpilot does not follow redirects, set webhook.url to where the webhook is"
                ),
            ),
            _ => Failure::new(
                C::DnsUpdateRefused,
                format!(
                    "the webhook at {uri} refused to {} the TXT record at {fqdn}: it answered {answer}",
                    call.path()
                ),
            ),
        };
        Err(failure)
    }
}

impl Provider for Webhook {
    async fn add_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        self.call(Call::Present, fqdn, value).await
    }

    async fn remove_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        self.call(Call::Cleanup, fqdn, value).await
    }
}

/// The body of both calls: lego's `httpreq` message in its default mode.
fn payload(fqdn: &Name, value: &str) -> Bytes {
    Bytes::from(serde_json::json!({"fqdn": fqdn.to_string(), "value": value}).to_string())
}

/// `<url>/present` or `<url>/cleanup`: the call appended to the URL's path (as lego's
/// `JoinPath`), its query kept.
fn endpoint(url: &str, call: Call) -> std::result::Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("not an http:// or https:// URL".into());
    }
    let Some(authority) = uri.authority() else { return Err("no host".into()) };
    if authority.as_str().contains('@') {
        return Err("credentials do not go in the URL: use basicAuthSecretRef".into());
    }
    let mut parts = uri.clone().into_parts();
    let path = uri.path().trim_end_matches('/');
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    parts.path_and_query = Some(format!("{path}/{}{query}", call.path()).parse().map_err(|e| format!("{e}"))?);
    Uri::from_parts(parts).map_err(|e| format!("{e}"))
}

/// `caBundle` alone when it is set (a webhook behind a private CA), else the public roots.
fn roots(ca_bundle: Option<&str>) -> std::result::Result<rustls::RootCertStore, Failure> {
    let Some(bundle) = ca_bundle else { return Ok(outbound::public_roots()) };
    let mut roots = rustls::RootCertStore::empty();
    outbound::add_pem_roots(&mut roots, bundle).map_err(|e| {
        Failure::new(
            C::InvalidCaBundle,
            format!("webhook.{e}: set it to the PEM of the CA that signed the webhook's certificate"),
        )
    })?;
    Ok(roots)
}

/// The `Authorization` header the spec's Secret gives, read only when it names one.
async fn credentials(secrets: &Api<Secret>, solver: &WebhookSolver) -> Outcome<Credentials> {
    if let Some(reference) = &solver.bearer_token_secret_ref {
        return bearer_token(secrets, reference).await;
    }
    if let Some(reference) = &solver.basic_auth_secret_ref {
        return basic_auth(secrets, reference).await;
    }
    let source = "the webhook asks for credentials: set basicAuthSecretRef or bearerTokenSecretRef".to_string();
    Ok(Credentials { header: None, source })
}

/// `Bearer <token>`, the token at `reference`.
async fn bearer_token(secrets: &Api<Secret>, reference: &SecretKeySelector) -> Outcome<Credentials> {
    let namespace = secrets.namespace().unwrap_or_default();
    let place = format!("key {:?} of Secret {namespace}/{} (bearerTokenSecretRef)", reference.key, reference.name);
    let data = secret_data(secrets, &reference.name).await?;
    let header = value(&data, &reference.key)
        .ok_or_else(|| missing(&format!("the webhook's bearer token ({place})")))
        .and_then(|token| sensitive(&format!("Bearer {token}"), &place));
    let source = format!("check that {place} holds the token the webhook expects");
    Ok(Credentials { header: Some(header?), source })
}

/// `Basic <base64(username:password)>`, from the keys of a `kubernetes.io/basic-auth` Secret.
async fn basic_auth(secrets: &Api<Secret>, reference: &LocalSecretReference) -> Outcome<Credentials> {
    let namespace = secrets.namespace().unwrap_or_default();
    let place =
        format!("keys \"username\" and \"password\" of Secret {namespace}/{} (basicAuthSecretRef)", reference.name);
    let data = secret_data(secrets, &reference.name).await?;
    let header = value(&data, "username")
        .zip(value(&data, "password"))
        .ok_or_else(|| missing(&format!("the webhook's username or password ({place})")))
        .and_then(|(username, password)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            sensitive(&format!("Basic {encoded}"), &place)
        });
    let source = format!("check {place} against the webhook's");
    Ok(Credentials { header: Some(header?), source })
}

async fn secret_data(secrets: &Api<Secret>, name: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let secret = secrets.get_opt(name).await?;
    Ok(secret.and_then(|s| s.data).unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// The value of `key`, trimmed; `None` when missing or blank.
fn value(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<String> {
    data.get(key).map(|v| String::from_utf8_lossy(v).trim().to_string()).filter(|v| !v.is_empty())
}

fn missing(what: &str) -> Failure {
    Failure::new(
        C::DnsProviderCredentials,
        format!("{what} is missing or empty: create it, or remove the reference if the webhook needs no credentials"),
    )
}

/// An `Authorization` value, kept out of debug output.
fn sensitive(text: &str, place: &str) -> std::result::Result<HeaderValue, Failure> {
    let mut value = HeaderValue::try_from(text).map_err(|_| {
        Failure::new(C::DnsProviderCredentials, format!("{place} holds characters an HTTP header cannot carry"))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Why the webhook could not be reached: an untrusted certificate ends the attempt (trying
/// again will not help), anything else (refused, unresolved, reset) is tried again.
fn transport_failure(uri: &Uri, error: &hyper_util::client::legacy::Error) -> Failure {
    let causes = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| e.source());
    let mut texts = Vec::new();
    for cause in causes {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>().or_else(|| outbound::io_inner::<rustls::Error>(cause))
        {
            return Failure::new(
                C::DnsUpdateFailed,
                format!(
                    "TLS with the webhook at {uri} failed ({tls}): for a webhook with a private CA, set webhook.caBundle to the PEM of that CA"
                ),
            );
        }
        texts.push(cause.to_string());
    }
    Failure::new(
        C::DnsProviderUnreachable,
        format!("could not reach the webhook at {uri} ({}); certpilot tries again", texts.join(": ")),
    )
}

/// The start of an answer's body on one line: enough to say why a call failed, read no further.
async fn body_start<B: http_body::Body<Data = Bytes> + Unpin>(mut body: B) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < QUOTED_CHARS * 4 {
        match body.frame().await {
            Some(Ok(frame)) => bytes.extend_from_slice(&frame.into_data().unwrap_or_default()),
            _ => break,
        }
    }
    quoted(&String::from_utf8_lossy(&bytes))
}

/// `text` with its whitespace and control characters folded, cut at [`QUOTED_CHARS`].
fn quoted(text: &str) -> String {
    let folded = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if folded.chars().count() <= QUOTED_CHARS {
        return folded;
    }
    let cut: String = folded.chars().take(QUOTED_CHARS).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{
        PRODUCT,
        testing::{Recorder, header_values},
    };

    fn record() -> Name {
        "_acme-challenge.example.com.".parse().unwrap()
    }

    fn webhook(url: &str, timeout: Option<&str>, token: Option<&str>) -> Webhook {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let spec = WebhookSolver { url: url.into(), timeout: timeout.map(str::to_string), ..Default::default() };
        let credentials = Credentials {
            header: token.map(|t| sensitive(&format!("Bearer {t}"), "the test's token").unwrap()),
            source: "check the test's token".into(),
        };
        Webhook::with_credentials(&spec, credentials).unwrap()
    }

    #[test]
    fn calls_are_appended_to_the_urls_path_and_its_query_kept() {
        let joined = |url| endpoint(url, Call::Present).map(|u| u.to_string());
        assert_eq!(joined("https://hook.example:8443").unwrap(), "https://hook.example:8443/present");
        assert_eq!(joined("https://hook.example/acme/").unwrap(), "https://hook.example/acme/present");
        assert_eq!(joined("http://hook.example/acme?zone=a").unwrap(), "http://hook.example/acme/present?zone=a");
        assert_eq!(endpoint("http://h/x", Call::Cleanup).unwrap().path(), "/x/cleanup");
        assert!(joined("ftp://hook.example").is_err());
        assert!(joined("https://user:pass@hook.example").unwrap_err().contains("basicAuthSecretRef"));
    }

    #[test]
    fn the_body_is_httpreqs_default_message() {
        let body: serde_json::Value = serde_json::from_slice(&payload(&record(), "abc")).unwrap();
        assert_eq!(body, serde_json::json!({"fqdn": "_acme-challenge.example.com.", "value": "abc"}));
    }

    #[test]
    fn quoted_answers_are_one_bounded_line() {
        assert_eq!(quoted("  no such\r\nzone\t "), "no such zone");
        let long = quoted(&"x".repeat(1000));
        assert_eq!(long.chars().count(), QUOTED_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_ca_bundle_replaces_the_public_roots() {
        assert!(!roots(None).unwrap().is_empty());
        let refused = roots(Some("not a certificate")).unwrap_err();
        assert_eq!(refused.code, C::InvalidCaBundle);
        assert!(refused.message.starts_with("webhook.caBundle"), "{}", refused.message);
    }

    #[tokio::test]
    async fn present_posts_json_with_the_token_and_certpilots_agent() {
        let mut hook = Recorder::start(204, |_| String::new()).await;
        webhook(&format!("{}/acme/", hook.url), None, Some("t0ken")).add_txt(&record(), "v").await.unwrap();
        let head = hook.next_head().await;
        assert!(head.starts_with("POST /acme/present HTTP/1.1"), "{head}");
        assert_eq!(header_values(&head, "user-agent"), [PRODUCT]);
        assert_eq!(header_values(&head, "authorization"), ["Bearer t0ken"]);
        assert_eq!(header_values(&head, "content-type"), ["application/json"]);
        webhook(&hook.url, None, None).remove_txt(&record(), "v").await.unwrap();
        let head = hook.next_head().await;
        assert!(head.starts_with("POST /cleanup HTTP/1.1"), "{head}");
        assert!(header_values(&head, "authorization").is_empty(), "{head}");
    }

    #[tokio::test]
    async fn refusals_quote_the_answer_and_say_what_to_check() {
        let denied = Recorder::start(401, |_| r#"{"error": "bad token"}"#.into()).await;
        let failure = webhook(&denied.url, None, Some("wrong")).add_txt(&record(), "v").await.unwrap_err();
        assert_eq!(failure.code, C::DnsProviderCredentials);
        assert!(failure.message.contains("401 Unauthorized: {\"error\": \"bad token\"}"), "{}", failure.message);
        assert!(failure.message.contains("check the test's token"), "{}", failure.message);
        let broken = Recorder::start(500, |_| "zone example.com not managed here".into()).await;
        let failure = webhook(&broken.url, None, None).add_txt(&record(), "v").await.unwrap_err();
        assert_eq!(failure.code, C::DnsUpdateRefused);
        assert!(failure.message.contains("refused to present the TXT record at _acme-challenge.example.com."));
        assert!(failure.message.contains("500 Internal Server Error: zone example.com not managed here"));
        let busy = Recorder::start(503, |_| String::new()).await;
        let failure = webhook(&busy.url, None, None).remove_txt(&record(), "v").await.unwrap_err();
        assert!(failure.code.is_transient(), "{failure:?}");
    }

    #[tokio::test]
    async fn an_unreachable_or_silent_webhook_is_tried_again() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let failure = webhook(&format!("http://{closed}"), None, None).add_txt(&record(), "v").await.unwrap_err();
        assert_eq!(failure.code, C::DnsProviderUnreachable, "{failure:?}");
        assert!(failure.code.is_transient());
        // Connections are accepted by the kernel and never answered.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let failure = webhook(&url, Some("1s"), None).add_txt(&record(), "v").await.unwrap_err();
        assert_eq!(failure.code, C::DnsProviderUnreachable);
        assert!(failure.message.contains("did not answer within 1s"), "{}", failure.message);
    }
}
