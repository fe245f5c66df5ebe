//! The HTTP client of an ACME account: public roots plus the issuer's `caBundle`, certpilot's
//! `User-Agent` before instant-acme's on every request (`crate::outbound`), and a note of the
//! last `Retry-After` the CA sent with an error (instant-acme's problem type drops headers).
//! A request the CA does not answer, body and all, within [`ANSWER_WITHIN`] fails as
//! [`Unanswered`].

use crate::outbound;
use bytes::Bytes;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use jiff::Timestamp;
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

/// How long a request waits for the CA's whole answer, its body read to the end. A CA (or a
/// proxy on the way) that takes the connection and never answers, or stops half-way through
/// the body, would otherwise hold the pass that asked, and with it one of the attempt
/// controller's concurrent reconciles, for good: a few of those stop every issuer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The CA did not answer a request in time: a transient failure (`Timeout`), tried again.
#[derive(Debug)]
pub struct Unanswered {
    url: String,
    waited: Duration,
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the ACME server did not answer {} within {} s", self.url, self.waited.as_secs_f64())
    }
}

impl std::error::Error for Unanswered {}

/// Where the client leaves the last Retry-After of a failed request.
#[derive(Clone, Default)]
pub struct RetryAfter(Arc<Mutex<Option<Timestamp>>>);

impl RetryAfter {
    pub fn take(&self) -> Option<Timestamp> {
        self.0.lock().expect("retry-after lock").take()
    }
}

/// What the client noticed in responses: alternate certificate chains offered in `Link`
/// headers, and the raw body of one chosen URL (instant-acme parses every POST-as-GET answer as
/// JSON, so a PEM alternate chain is only reachable here).
#[derive(Clone, Default)]
pub struct Observer(Arc<Mutex<Observed>>);

#[derive(Default)]
struct Observed {
    alternates: Vec<String>,
    /// Responses wanted (None until they came), by URL: attempts share an account.
    captures: std::collections::HashMap<String, Option<Captured>>,
}

/// A response kept whole: its body, and the next page of a paginated list (RFC 8555 §7.1.2.1).
pub struct Captured {
    pub body: Bytes,
    pub next: Option<String>,
}

impl Observer {
    /// URLs of alternate chains the CA offered so far.
    pub fn alternates(&self) -> Vec<String> {
        self.0.lock().expect("observer lock").alternates.clone()
    }
    /// Keep the body of the next response from `url`.
    pub fn capture(&self, url: &str) {
        self.0.lock().expect("observer lock").captures.insert(url.to_string(), None);
    }
    /// The response kept for `url`, if it came.
    pub fn captured(&self, url: &str) -> Option<Captured> {
        self.0.lock().expect("observer lock").captures.remove(url).flatten()
    }
    /// Records alternate links; says whether the body of this response is to be kept.
    fn note(&self, links: Vec<String>, url: &str) -> bool {
        let mut observed = self.0.lock().expect("observer lock");
        for link in links {
            if !observed.alternates.contains(&link) {
                observed.alternates.push(link);
            }
        }
        observed.captures.contains_key(url)
    }
    fn keep(&self, url: &str, captured: Captured) {
        self.0.lock().expect("observer lock").captures.insert(url.to_string(), Some(captured));
    }
}

/// The URLs of the `<url>;rel="…"` entries of a `Link` header value with relation `rel`.
pub fn links(value: &str, rel: &str) -> Vec<String> {
    let quoted = format!("rel=\"{rel}\"");
    let bare = format!("rel={rel}");
    value
        .split(',')
        .filter(|link| link.split(';').skip(1).any(|p| p.trim() == quoted || p.trim() == bare))
        .filter_map(|link| link.trim().strip_prefix('<')?.split_once('>').map(|(url, _)| url.to_string()))
        .collect()
}

pub struct AcmeHttpClient {
    inner: outbound::HttpClient<BodyWrapper<Bytes>>,
    retry_after: RetryAfter,
    observer: Observer,
    answer_within: Duration,
}

impl AcmeHttpClient {
    /// A client trusting the public web roots and, for private ACME servers, `ca_bundle` (PEM).
    pub fn new(ca_bundle: Option<&str>) -> Result<(Self, RetryAfter, Observer), String> {
        let mut roots = outbound::public_roots();
        if let Some(bundle) = ca_bundle {
            outbound::add_pem_roots(&mut roots, bundle)?;
        }
        let retry_after = RetryAfter::default();
        let observer = Observer::default();
        let inner = outbound::HttpClient::new(roots);
        let client =
            Self { inner, retry_after: retry_after.clone(), observer: observer.clone(), answer_within: ANSWER_WITHIN };
        Ok((client, retry_after, observer))
    }
}

impl HttpClient for AcmeHttpClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let url = req.uri().to_string();
        let response = self.inner.request(req);
        let slot = self.retry_after.clone();
        let observer = self.observer.clone();
        let waited = self.answer_within;
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + waited;
            let unanswered = || Error::Other(Box::new(Unanswered { url: url.clone(), waited }));
            // Errors as instant-acme's own client gives them (`problem` tells them apart).
            let answered = tokio::time::timeout_at(deadline, response).await.map_err(|_| unanswered())?;
            let mut response = BytesResponse::from(answered.map_err(|e| Error::Other(Box::new(e)))?);
            // ACME answers are small: read whole here, under the same deadline, instead of by
            // instant-acme after this returns, where nothing bounds the wait.
            let body = tokio::time::timeout_at(deadline, response.body.into_bytes())
                .await
                .map_err(|_| unanswered())?
                .map_err(Error::Other)?;
            let failed = response.parts.status.is_client_error() || response.parts.status.is_server_error();
            let header = response.parts.headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
            if let (true, Some(value)) = (failed, header) {
                *slot.0.lock().expect("retry-after lock") =
                    crate::policy::backoff::parse_retry_after(value, Timestamp::now());
            }
            let headers = || response.parts.headers.get_all(http::header::LINK).iter().filter_map(|v| v.to_str().ok());
            let alternates: Vec<String> = headers().flat_map(|v| links(v, "alternate")).collect();
            let next = headers().flat_map(|v| links(v, "next")).next();
            if observer.note(alternates, &url) {
                observer.keep(&url, Captured { body: body.clone(), next });
            }
            response.body = Box::new(body);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::testing::{Recorder, header_values};

    #[test]
    fn links_by_relation() {
        let header = r#"<https://ca.example/dir>;rel="index", <https://ca.example/cert/1/1>;rel="alternate", <https://ca.example/cert/1/2>; rel=alternate"#;
        assert_eq!(links(header, "alternate"), ["https://ca.example/cert/1/1", "https://ca.example/cert/1/2"]);
        assert_eq!(links(header, "index"), ["https://ca.example/dir"]);
        assert!(links(header, "next").is_empty());
        assert_eq!(
            links(r#"<https://ca.example/orders?cursor=2>;rel="next""#, "next"),
            ["https://ca.example/orders?cursor=2"]
        );
    }

    /// The version of instant-acme this build uses, as Cargo.lock pins it.
    fn instant_acme_version() -> String {
        let lock = include_str!("../../../Cargo.lock");
        let mut lines = lock.lines().skip_while(|line| *line != r#"name = "instant-acme""#).skip(1);
        let version = lines.next().and_then(|l| l.strip_prefix("version = \"")?.strip_suffix('"'));
        version.expect("Cargo.lock pins instant-acme").to_string()
    }

    /// A CA that takes the connection and never answers fails the request as `Timeout` (tried
    /// again), instead of holding the pass forever.
    #[tokio::test]
    async fn a_ca_that_never_answers_fails_the_request_as_a_timeout() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/directory", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let (mut client, _, _) = AcmeHttpClient::new(None).unwrap();
        client.answer_within = Duration::from_millis(200);
        let request = http::Request::get(&url).body(BodyWrapper::from(Vec::new())).unwrap();
        let error = client.request(request).await.err().expect("no answer is an error");
        let failure = super::super::problem::failure(&error);
        assert_eq!(failure.code, crate::issuance::FailureCode::Timeout, "{failure:?}");
        assert!(failure.code.is_transient());
        assert!(failure.message.contains("did not answer") && failure.message.contains(&url), "{}", failure.message);
        silent.abort();
    }

    /// A CA that sends the head of its answer and stops half-way through the body fails the
    /// request as `Timeout` too: the body is read under the same deadline.
    #[tokio::test]
    async fn a_ca_that_stops_in_the_middle_of_its_body_fails_the_request_as_a_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/directory", listener.local_addr().unwrap());
        let (head_sent, sent) = tokio::sync::oneshot::channel();
        let stalling = tokio::spawn(async move {
            let (mut connection, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = connection.read(&mut request).await.unwrap();
            connection.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"newNonce\":").await.unwrap();
            head_sent.send(()).unwrap();
            std::future::pending::<()>().await;
            drop(connection);
        });
        let (mut client, _, _) = AcmeHttpClient::new(None).unwrap();
        client.answer_within = Duration::from_millis(500);
        let request = http::Request::get(&url).body(BodyWrapper::from(Vec::new())).unwrap();
        let error = client.request(request).await.err().expect("half a body is an error");
        sent.await.expect("the head was sent before the request failed");
        let failure = super::super::problem::failure(&error);
        assert_eq!(failure.code, crate::issuance::FailureCode::Timeout, "{failure:?}");
        assert!(failure.message.contains("did not answer") && failure.message.contains(&url), "{}", failure.message);
        stalling.abort();
    }

    /// Each kind of request instant-acme makes (the directory, a nonce, a signed POST) names
    /// certpilot first, then instant-acme.
    #[tokio::test]
    async fn every_acme_request_names_certpilot_then_instant_acme() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut ca = Recorder::start(200, |url| {
            serde_json::json!({"newNonce": format!("{url}/nonce"), "newAccount": format!("{url}/account"),
                "newOrder": format!("{url}/order"), "revokeCert": format!("{url}/revoke"), "keyChange": format!("{url}/key")})
            .to_string()
        })
        .await;
        let (client, _, _) = AcmeHttpClient::new(None).unwrap();
        let new_account =
            instant_acme::NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
        let created = instant_acme::Account::builder_with_http(Box::new(client))
            .create(&new_account, format!("{}/directory", ca.url), None)
            .await;
        assert!(created.is_err(), "the listener answers no account");
        let agent = format!("{} instant-acme/{}", crate::outbound::PRODUCT, instant_acme_version());
        for request in ["GET /directory ", "HEAD /nonce ", "POST /account "] {
            let head = ca.next_head().await;
            assert!(head.starts_with(request), "expected {request}: {head}");
            assert_eq!(header_values(&head, "user-agent"), std::slice::from_ref(&agent), "{head}");
        }
    }
}
