//! The HTTP client of an ACME account: public roots plus the issuer's `caBundle`, and a note of
//! the last `Retry-After` the CA sent with an error (instant-acme's problem type drops headers).

use bytes::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use jiff::Timestamp;
use rustls_pki_types::{CertificateDer, pem::PemObject};
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

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
    capture_url: Option<String>,
    captured: Option<Bytes>,
}

impl Observer {
    /// URLs of alternate chains the CA offered so far.
    pub fn alternates(&self) -> Vec<String> {
        self.0.lock().expect("observer lock").alternates.clone()
    }
    /// Keep the body of the next response from `url`.
    pub fn capture(&self, url: &str) {
        let mut observed = self.0.lock().expect("observer lock");
        observed.capture_url = Some(url.to_string());
        observed.captured = None;
    }
    pub fn captured(&self) -> Option<Bytes> {
        self.0.lock().expect("observer lock").captured.take()
    }
    /// Records alternate links; says whether the body of this response is to be kept.
    fn note(&self, links: Vec<String>, url: &str) -> bool {
        let mut observed = self.0.lock().expect("observer lock");
        for link in links {
            if !observed.alternates.contains(&link) {
                observed.alternates.push(link);
            }
        }
        observed.capture_url.as_deref() == Some(url)
    }
    fn keep(&self, body: Bytes) {
        let mut observed = self.0.lock().expect("observer lock");
        observed.captured = Some(body);
        observed.capture_url = None;
    }
}

/// `<url>;rel="alternate"` entries of a `Link` header value.
pub fn alternate_links(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|link| link.split(';').skip(1).any(|p| matches!(p.trim(), "rel=\"alternate\"" | "rel=alternate")))
        .filter_map(|link| link.trim().strip_prefix('<')?.split_once('>').map(|(url, _)| url.to_string()))
        .collect()
}

pub struct AcmeHttpClient {
    inner: Inner,
    retry_after: RetryAfter,
    observer: Observer,
}

impl AcmeHttpClient {
    /// A client trusting the public web roots and, for private ACME servers, `ca_bundle` (PEM).
    pub fn new(ca_bundle: Option<&str>) -> Result<(Self, RetryAfter, Observer), String> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(bundle) = ca_bundle {
            let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(bundle.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("caBundle is not PEM: {e}"))?;
            if certs.is_empty() {
                return Err("caBundle holds no PEM CERTIFICATE".into());
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
            }
        }
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let retry_after = RetryAfter::default();
        let observer = Observer::default();
        let inner = Client::builder(TokioExecutor::new()).build(connector);
        let client = Self { inner, retry_after: retry_after.clone(), observer: observer.clone() };
        Ok((client, retry_after, observer))
    }
}

impl HttpClient for AcmeHttpClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let url = req.uri().to_string();
        let response = HttpClient::request(&self.inner, req);
        let slot = self.retry_after.clone();
        let observer = self.observer.clone();
        Box::pin(async move {
            let mut response = response.await?;
            let failed = response.parts.status.is_client_error() || response.parts.status.is_server_error();
            let header = response.parts.headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
            if let (true, Some(value)) = (failed, header) {
                *slot.0.lock().expect("retry-after lock") =
                    crate::policy::backoff::parse_retry_after(value, Timestamp::now());
            }
            let links: Vec<String> = response
                .parts
                .headers
                .get_all(http::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(alternate_links)
                .collect();
            if observer.note(links, &url) {
                let body = response.body.into_bytes().await.map_err(Error::Other)?;
                observer.keep(body.clone());
                response.body = Box::new(body);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_chain_links() {
        let header = r#"<https://ca.example/dir>;rel="index", <https://ca.example/cert/1/1>;rel="alternate", <https://ca.example/cert/1/2>; rel=alternate"#;
        assert_eq!(alternate_links(header), ["https://ca.example/cert/1/1", "https://ca.example/cert/1/2"]);
        assert!(alternate_links("<https://ca.example/dir>;rel=\"index\"").is_empty());
    }
}
