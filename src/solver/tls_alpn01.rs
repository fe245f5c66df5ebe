//! TLS-ALPN-01 (RFC 8737): for a name under validation, every replica's TLS port presents a
//! self-signed certificate carrying the `acmeIdentifier` extension (the SHA-256 of the key
//! authorisation in the attempt's status), over the `acme-tls/1` protocol.

use super::Answers;
use crate::pki::PkiError;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::{
    ServerConfig,
    server::{Acceptor, ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use std::sync::Arc;
use tokio_rustls::LazyConfigAcceptor;

pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The validation certificate for `name` and the SHA-256 digest of the key authorization.
pub fn certificate(name: &str, key_authorization_digest: &[u8]) -> Result<Arc<CertifiedKey>, PkiError> {
    let key = KeyPair::generate().map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(|e| PkiError::Signing(e.to_string()))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(key_authorization_digest)];
    let cert = params.self_signed(&key).map_err(|e| PkiError::Signing(e.to_string()))?;
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing_key =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(|e| PkiError::Signing(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing_key)))
}

/// Presents one certificate, whatever the handshake asks.
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesServerCert for Presents {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The server side of an `acme-tls/1` handshake presenting `certificate`.
pub fn server_config(certificate: Arc<CertifiedKey>) -> ServerConfig {
    let mut config = ServerConfig::builder().with_no_client_auth().with_cert_resolver(Arc::new(Presents(certificate)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    config
}

/// Accepts TLS connections on `listener` (bound by the caller, which stops at once if it cannot
/// be); the CA only needs the handshake, so each is closed right after it. A connection that
/// cannot be accepted (reset before it was, no file descriptor left for a moment) is passed
/// over: the listener itself goes on.
pub async fn serve(listener: tokio::net::TcpListener, answers: Arc<Answers>) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving TLS-ALPN-01 challenges");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let answers = answers.clone();
                tokio::spawn(async move { handshake(stream, &answers).await });
            }
            Err(error) => {
                tracing::warn!(%error, "could not accept a TLS-ALPN-01 connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the ClientHello first: the certificate depends on the name it asks for, and the
/// answer may take a moment to reach this replica (see `Answers`), which a synchronous
/// certificate resolver could not wait for. Anything but an `acme-tls/1` handshake for a
/// name under validation is dropped.
async fn handshake(stream: tokio::net::TcpStream, answers: &Answers) -> Option<()> {
    let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await.ok()?;
    let hello = start.client_hello();
    let acme = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
    let name = hello.server_name().filter(|_| acme)?.to_string();
    let key_authorization = answers.tls_alpn01(&name).await?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let certificate = certificate(&name, digest.as_ref())
        .inspect_err(|error| tracing::warn!(%error, "could not make the TLS-ALPN-01 certificate"))
        .ok()?;
    let mut tls = start.into_stream(Arc::new(server_config(certificate))).await.ok()?;
    tokio::io::AsyncWriteExt::shutdown(&mut tls).await.ok()
}
