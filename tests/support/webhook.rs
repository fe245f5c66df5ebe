//! A DNS webhook as a user would run one for certpilot (lego's `httpreq` protocol): it checks
//! the request's credentials and applies `POST /present` and `POST /cleanup` to BIND with RFC
//! 2136 updates signed with BIND's TSIG key (certpilot's own RFC 2136 client). Over plain HTTP,
//! or over HTTPS with a certificate from a CA of its own (the solver's `caBundle`).
#![allow(dead_code)]

use super::bind::{Bind, KEY_NAME};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    routing::post,
};
use certpilot::solver::dns01::{Provider, rfc2136::Rfc2136};
use std::sync::{Arc, Mutex};

/// The credentials the webhook accepts.
#[derive(Clone)]
pub enum Auth {
    Bearer(String),
    Basic { username: String, password: String },
}

impl Auth {
    fn header(&self) -> String {
        use base64::Engine;
        match self {
            Self::Bearer(token) => format!("Bearer {token}"),
            Self::Basic { username, password } => {
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
            }
        }
    }
}

/// A request the webhook answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// `present` or `cleanup`.
    pub call: String,
    pub fqdn: String,
    pub value: String,
    pub status: u16,
}

#[derive(serde::Deserialize)]
struct Message {
    fqdn: String,
    value: String,
}

#[derive(Clone)]
struct Hook {
    auth: Auth,
    nameserver: String,
    tsig_secret: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

pub struct Webhook {
    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    pub url: String,
    /// PEM of the CA that signed the webhook's TLS certificate (HTTPS only).
    pub ca_pem: Option<String>,
    calls: Arc<Mutex<Vec<Call>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// A webhook over HTTP writing to `bind`, accepting `auth`.
    pub async fn start(bind: &Bind, auth: Auth) -> Self {
        let (router, calls) = router(bind, auth);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, ca_pem: None, calls, server }
    }

    /// The same over HTTPS, its certificate (for 127.0.0.1) signed by a CA of its own.
    pub async fn start_tls(bind: &Bind, auth: Auth) -> Self {
        let (router, calls) = router(bind, auth);
        let (config, ca_pem) = tls_config();
        let listener = TlsListener {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        let url = format!("https://{}", listener.tcp.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, ca_pem: Some(ca_pem), calls, server }
    }

    /// Every request answered so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn router(bind: &Bind, auth: Auth) -> (Router, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let hook =
        Hook { auth, nameserver: bind.address.clone(), tsig_secret: bind.tsig_secret.clone(), calls: calls.clone() };
    (Router::new().route("/{call}", post(answer)).with_state(hook), calls)
}

/// Checks the credentials, then adds or removes the TXT value at BIND. RFC 2136 makes both
/// idempotent, as the protocol asks: adding a value already there, or removing one that is
/// not, changes nothing and succeeds.
async fn answer(
    State(hook): State<Hook>,
    Path(call): Path<String>,
    headers: HeaderMap,
    Json(message): Json<Message>,
) -> (StatusCode, String) {
    let (status, body) = apply(&hook, &call, &headers, &message).await;
    let Message { fqdn, value } = message;
    hook.calls.lock().unwrap().push(Call { call, fqdn, value, status: status.as_u16() });
    (status, body)
}

async fn apply(hook: &Hook, call: &str, headers: &HeaderMap, message: &Message) -> (StatusCode, String) {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if given != Some(hook.auth.header().as_str()) {
        return (StatusCode::UNAUTHORIZED, r#"{"error": "invalid credentials"}"#.into());
    }
    let Ok(fqdn) = message.fqdn.parse() else {
        return (StatusCode::BAD_REQUEST, format!("not a DNS name: {}", message.fqdn));
    };
    let bind = Rfc2136::with_key(&hook.nameserver, KEY_NAME, None, &hook.tsig_secret).expect("BIND's TSIG key");
    let written = match call {
        "present" => bind.add_txt(&fqdn, &message.value).await,
        "cleanup" => bind.remove_txt(&fqdn, &message.value).await,
        other => return (StatusCode::NOT_FOUND, format!("no call {other}")),
    };
    match written {
        Ok(()) => (StatusCode::OK, String::new()),
        Err(failure) => (StatusCode::INTERNAL_SERVER_ERROR, failure.message),
    }
}

/// A server config with a certificate for 127.0.0.1 and the PEM of the CA that signed it.
fn tls_config() -> (rustls::ServerConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "certpilot test webhook CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap();
    (config, ca_cert.pem())
}

/// Accepts TLS connections for axum; a client that fails its handshake (one not trusting the
/// CA, say) is dropped and the next one accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else { continue };
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
