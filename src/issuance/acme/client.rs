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

pub struct AcmeHttpClient {
    inner: Inner,
    retry_after: RetryAfter,
}

impl AcmeHttpClient {
    /// A client trusting the public web roots and, for private ACME servers, `ca_bundle` (PEM).
    pub fn new(ca_bundle: Option<&str>) -> Result<(Self, RetryAfter), String> {
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
        let client =
            Self { inner: Client::builder(TokioExecutor::new()).build(connector), retry_after: retry_after.clone() };
        Ok((client, retry_after))
    }
}

impl HttpClient for AcmeHttpClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let response = HttpClient::request(&self.inner, req);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let response = response.await?;
            let failed = response.parts.status.is_client_error() || response.parts.status.is_server_error();
            let header = response.parts.headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
            if let (true, Some(value)) = (failed, header) {
                *slot.0.lock().expect("retry-after lock") =
                    crate::policy::backoff::parse_retry_after(value, Timestamp::now());
            }
            Ok(response)
        })
    }
}
