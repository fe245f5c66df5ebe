//! The CA's directory (RFC 8555 §7.1.1), read for what instant-acme does not expose:
//! `meta.caaIdentities`, the issuer domain names DNS-PERSIST-01 records must name.

use super::client::AcmeHttpClient;
use crate::{
    api::issuer::AcmeIssuer,
    issuance::{Failure, FailureCode as C},
};
use instant_acme::{BodyWrapper, HttpClient};

/// The CA's `meta.caaIdentities` (empty when it lists none), fetched with the issuer's
/// HTTP client (which trusts its `caBundle`).
pub async fn caa_identities(spec: &AcmeIssuer) -> Result<Vec<String>, Failure> {
    let (client, _, _) =
        AcmeHttpClient::new(spec.ca_bundle.as_deref()).map_err(|e| Failure::new(C::InvalidCaBundle, e))?;
    let request = http::Request::get(&spec.server)
        .body(BodyWrapper::from(Vec::new()))
        .map_err(|e| Failure::new(C::InvalidSpec, format!("server {}: {e}", spec.server)))?;
    let unreadable =
        |why: String| Failure::new(C::CaUnreachable, format!("could not read the directory {}: {why}", spec.server));
    let mut response = client.request(request).await.map_err(|e| super::problem::failure(&e))?;
    if !response.parts.status.is_success() {
        return Err(unreadable(format!("HTTP {}", response.parts.status)));
    }
    let body = response.body.into_bytes().await.map_err(|e| unreadable(e.to_string()))?;
    parse_caa_identities(&body).map_err(unreadable)
}

/// The issuer domain names DNS-PERSIST-01 records must name: `known` (the issuer's status)
/// when it lists any, else the CA's directory; none at all is a failure that says why.
pub async fn issuer_domain_names(spec: &AcmeIssuer, known: Vec<String>) -> Result<Vec<String>, Failure> {
    let names = if known.is_empty() { caa_identities(spec).await? } else { known };
    if names.is_empty() {
        return Err(Failure::new(
            C::DnsPersistUnsupported,
            format!(
                "the CA at {} lists no caaIdentities in its directory, so dns-persist-01 cannot be used with this CA (a record must name one of them); use another solver or CA",
                spec.server
            ),
        ));
    }
    Ok(names)
}

/// `meta.caaIdentities` of a directory object, lowercased.
pub fn parse_caa_identities(json: &[u8]) -> Result<Vec<String>, String> {
    let directory: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let listed = directory.pointer("/meta/caaIdentities").and_then(|v| v.as_array()).cloned().unwrap_or_default();
    Ok(listed.iter().filter_map(|v| v.as_str()).map(str::to_ascii_lowercase).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{
        PRODUCT,
        testing::{Recorder, header_values},
    };

    #[test]
    fn caa_identities_come_from_the_directorys_meta() {
        let listed = br#"{"newNonce": "x", "meta": {"caaIdentities": ["CA.example", "other.example"]}}"#;
        assert_eq!(parse_caa_identities(listed).unwrap(), ["ca.example", "other.example"]);
        assert!(parse_caa_identities(br#"{"meta": {}}"#).unwrap().is_empty());
        assert!(parse_caa_identities(b"<html>").is_err());
    }

    #[tokio::test]
    async fn the_directory_read_names_certpilot() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut ca = Recorder::start(200, |_| r#"{"meta": {"caaIdentities": ["CA.example"]}}"#.into()).await;
        let spec = AcmeIssuer { server: format!("{}/directory", ca.url), ..Default::default() };
        assert_eq!(caa_identities(&spec).await.unwrap(), ["ca.example"]);
        let head = ca.next_head().await;
        assert!(head.starts_with("GET /directory "), "{head}");
        assert_eq!(header_values(&head, "user-agent"), [PRODUCT]);
    }
}
