//! TLS-ALPN-01 (RFC 8737): for a name under validation, the operator's TLS port presents a
//! self-signed certificate carrying the `acmeIdentifier` extension, over the `acme-tls/1` protocol.

use super::SolverState;
use crate::pki::PkiError;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use std::sync::Arc;

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

/// Picks the validation certificate by SNI, and only for `acme-tls/1` handshakes.
#[derive(Debug)]
struct Resolver(Arc<SolverState>);

impl std::fmt::Debug for SolverState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolverState").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if !acme {
            return None;
        }
        self.0.tls_alpn01(hello.server_name()?)
    }
}

pub fn server_config(state: Arc<SolverState>) -> ServerConfig {
    let mut config = ServerConfig::builder().with_no_client_auth().with_cert_resolver(Arc::new(Resolver(state)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    config
}

/// Accepts TLS connections; the CA only needs the handshake, so each is closed right after it.
pub async fn serve(addr: std::net::SocketAddr, state: Arc<SolverState>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(state)));
    tracing::info!(%addr, "serving TLS-ALPN-01 challenges");
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(mut tls) = acceptor.accept(stream).await {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            }
        });
    }
}
