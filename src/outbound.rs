//! certpilot's outbound HTTP: the clients it calls CAs, DNS providers' APIs (AWS's among them)
//! and the Kubernetes API with are built here, and each names certpilot in `User-Agent`.
//! RFC 8555 §6.1 requires one of every ACME client (Let's Encrypt's Pebble refuses requests
//! without it), and a provider's or API server's logs then say who called. A new provider gets
//! it by building its client here.

use http::{
    HeaderMap, HeaderValue, Request,
    header::{InvalidHeaderValue, USER_AGENT},
};
use hyper_util::{
    client::legacy::{Client, ResponseFuture, connect::HttpConnector},
    rt::TokioExecutor,
};

/// certpilot's product token (RFC 9110 §10.1.5): the `User-Agent` of the requests it makes
/// itself, and the first token of those a library makes on its behalf.
pub const PRODUCT: &str = concat!("certpilot/", env!("CARGO_PKG_VERSION"));

/// Puts certpilot's product token first in a request's `User-Agent`. A library that set its own
/// (instant-acme sends `instant-acme/<version>` with each ACME request) stays named after it,
/// as RFC 8555 §6.1 asks for the ACME software and the client library beneath it; without one,
/// the header is certpilot's token alone.
pub fn identify(headers: &mut HeaderMap) {
    let library = headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
    let Some(agent) = named(library) else { return };
    headers.insert(
        USER_AGENT,
        HeaderValue::try_from(agent).unwrap_or_else(|_: InvalidHeaderValue| HeaderValue::from_static(PRODUCT)),
    );
}

/// The `User-Agent` that names certpilot before `library`'s, or `None` when it already does.
fn named(library: Option<&str>) -> Option<String> {
    match library.map(str::trim).filter(|v| !v.is_empty()) {
        Some(agent) if agent.starts_with(PRODUCT) => None,
        Some(library) => Some(format!("{PRODUCT} {library}")),
        None => Some(PRODUCT.to_string()),
    }
}

/// The AWS SDK's HTTP client (hyper 1 and rustls on aws-lc-rs, as the SDK builds it), with
/// certpilot's product token put first in each request's `User-Agent`, before the SDK's own. It
/// carries every AWS request: Route 53's, and those of the credential providers behind it (STS
/// for web identity tokens and roles, EKS Pod Identity). SigV4 leaves `User-Agent` unsigned, so
/// naming certpilot after signing is safe.
pub fn aws_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let sdk = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::AwsLc)).build_https();
    aws_smithy_runtime_api::client::http::SharedHttpClient::new(aws::Named(sdk))
}

mod aws {
    use aws_smithy_runtime_api::client::{
        http::{
            HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
            SharedHttpConnector,
        },
        orchestrator::HttpRequest,
        runtime_components::RuntimeComponents,
    };

    #[derive(Debug)]
    pub(super) struct Named(pub(super) SharedHttpClient);

    impl HttpClient for Named {
        fn http_connector(
            &self,
            settings: &HttpConnectorSettings,
            components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(NamedConnector(self.0.http_connector(settings, components)))
        }
    }

    #[derive(Debug)]
    struct NamedConnector(SharedHttpConnector);

    impl HttpConnector for NamedConnector {
        fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
            if let Some(agent) = super::named(request.headers().get("user-agent")) {
                request.headers_mut().insert("user-agent", agent);
            }
            self.0.call(request)
        }
    }
}

/// The public web roots: what a client trusts when the resource names no CA of its own.
pub fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// Adds the certificates of `bundle` (a resource's `caBundle`, PEM) to `roots`.
pub fn add_pem_roots(roots: &mut rustls::RootCertStore, bundle: &str) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(bundle.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("caBundle is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("caBundle holds no PEM CERTIFICATE".into());
    }
    for cert in certs {
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    Ok(())
}

/// An `E` wrapped in I/O errors under a failed request (rustls' errors come wrapped twice),
/// which `source()` does not see through.
pub fn io_inner<'a, E: std::error::Error + 'static>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut current: &(dyn std::error::Error + 'static) = cause;
    loop {
        let inner: &(dyn std::error::Error + 'static) = current.downcast_ref::<std::io::Error>()?.get_ref()?;
        if let Some(found) = inner.downcast_ref::<E>() {
            return Some(found);
        }
        current = inner;
    }
}

/// An HTTP/1.1 client over `http://` or `https://` (trusting the roots it was given) whose
/// every request carries certpilot's `User-Agent`. `B` is the request body type.
pub struct HttpClient<B> {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, B>,
}

impl<B> HttpClient<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(roots: rustls::RootCertStore) -> Self {
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Self { inner: Client::builder(TokioExecutor::new()).build(connector) }
    }

    pub fn request(&self, mut request: Request<B>) -> ResponseFuture {
        identify(request.headers_mut());
        self.inner.request(request)
    }
}

/// A client of the Kubernetes API that `config` names, saying it is certpilot: the API server's
/// audit log and request metrics then name it.
pub fn kube_client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    config.headers.push((USER_AGENT, HeaderValue::from_static(PRODUCT)));
    kube::Client::try_from(config)
}

#[cfg(test)]
pub mod testing {
    //! A loopback listener that answers every request alike and keeps each request's head: how
    //! the tests of each client see what it really sends.

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
        sync::mpsc,
    };

    pub struct Recorder {
        /// `http://127.0.0.1:<port>`.
        pub url: String,
        heads: mpsc::UnboundedReceiver<String>,
        server: tokio::task::JoinHandle<()>,
    }

    impl Recorder {
        /// Answers each request with `status` and the JSON body `body` makes of the listener's
        /// URL, then closes the connection.
        pub async fn start(status: u16, body: impl FnOnce(&str) -> String) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
            let url = format!("http://{}", listener.local_addr().expect("bound"));
            let body: std::sync::Arc<str> = body(&url).into();
            let (sender, heads) = mpsc::unbounded_channel();
            let server = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, status, body.clone(), sender.clone()));
                }
            });
            Self { url, heads, server }
        }

        /// The head (request line and headers) of the next request received.
        pub async fn next_head(&mut self) -> String {
            let wait = std::time::Duration::from_secs(10);
            tokio::time::timeout(wait, self.heads.recv()).await.expect("a request within 10s").expect("listening")
        }
    }

    impl Drop for Recorder {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    async fn answer(
        mut stream: TcpStream,
        status: u16,
        body: std::sync::Arc<str>,
        heads: mpsc::UnboundedSender<String>,
    ) {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
        let text = String::from_utf8_lossy(&received);
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_string();
        let _ = heads.send(head);
        // A nonce in every answer, so that an ACME client goes on to its signed requests.
        let response = format!(
            "HTTP/1.1 {status} Recorded\r\nContent-Type: application/json\r\nReplay-Nonce: recorded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    /// The values of header `name` in a request head, in order.
    pub fn header_values(head: &str, name: &str) -> Vec<String> {
        head.lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(field, _)| field.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};
    use bytes::Bytes;
    use http_body_util::Empty;

    /// The `User-Agent` values after `identify`, given the one a request was built with.
    fn identified(existing: Option<&str>) -> Vec<String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = existing {
            headers.insert(USER_AGENT, HeaderValue::try_from(value).unwrap());
        }
        identify(&mut headers);
        headers.get_all(USER_AGENT).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }

    #[test]
    fn a_librarys_agent_follows_certpilots() {
        assert_eq!(PRODUCT, format!("certpilot/{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(identified(None), [PRODUCT]);
        assert_eq!(identified(Some("  ")), [PRODUCT], "a blank header names nobody");
        let composed = format!("{PRODUCT} instant-acme/0.8.5");
        assert_eq!(identified(Some("instant-acme/0.8.5")), std::slice::from_ref(&composed));
        assert_eq!(identified(Some(&composed)), [composed], "identified once only");
    }

    #[tokio::test]
    async fn the_http_client_sends_certpilots_agent() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut recorder = Recorder::start(204, |_| String::new()).await;
        let client = HttpClient::new(public_roots());
        let request = Request::get(format!("{}/anything", recorder.url)).body(Empty::<Bytes>::new()).unwrap();
        let response = client.request(request).await.expect("the listener answers");
        assert_eq!(response.status(), 204);
        assert_eq!(header_values(&recorder.next_head().await, "user-agent"), [PRODUCT]);
    }

    #[tokio::test]
    async fn the_kubernetes_client_sends_certpilots_agent() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut recorder =
            Recorder::start(200, |_| r#"{"major": "1", "minor": "36", "gitVersion": "v1.36.2"}"#.into()).await;
        let client = kube_client(kube::Config::new(recorder.url.parse().unwrap())).unwrap();
        let version = client.apiserver_version().await.expect("the listener's version");
        assert_eq!(version.git_version, "v1.36.2");
        let head = recorder.next_head().await;
        assert!(head.starts_with("GET /version "), "{head}");
        assert_eq!(header_values(&head, "user-agent"), [PRODUCT]);
    }
}
