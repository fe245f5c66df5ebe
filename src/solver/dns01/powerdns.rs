//! The PowerDNS Authoritative Server's HTTP API (`/api/v1`): TXT values are read and written as
//! whole record sets (`changetype: REPLACE`), so a value is added or removed without touching
//! the others at the same name.

use super::Provider;
use crate::{
    api::issuer::PowerDnsSolver,
    issuance::{Failure, FailureCode as C, Outcome},
};
use bytes::Bytes;
use hickory_proto::rr::Name;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

const TTL: u32 = 60;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Read-modify-write of a record set is not atomic in the API: certpilot's own writes are
/// serialised so that two attempts sharing a record name do not drop each other's value.
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type HttpClient = crate::outbound::HttpClient<Full<Bytes>>;

pub struct PowerDns {
    client: HttpClient,
    /// `<url>/api/v1/servers/<server id>`.
    base: String,
    api_key: String,
}

#[derive(Deserialize)]
struct Zone {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct ZoneDetail {
    #[serde(default)]
    rrsets: Vec<RecordSet>,
}

#[derive(Deserialize)]
struct RecordSet {
    name: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    content: String,
}

impl PowerDns {
    /// The provider `solver` describes, its API key read from `secrets`.
    pub async fn new(secrets: &Api<Secret>, solver: &PowerDnsSolver) -> Outcome<Self> {
        let reference = &solver.api_key_secret_ref;
        let namespace = secrets.namespace().unwrap_or_default();
        let key = secrets.get_opt(&reference.name).await?.and_then(|s| s.data?.get(&reference.key).cloned());
        let Some(key) = key.map(|k| String::from_utf8_lossy(&k.0).trim().to_string()).filter(|k| !k.is_empty()) else {
            return Err(Failure::new(
                C::DnsProviderCredentials,
                format!(
                    "the PowerDNS API key is missing: key {:?} of Secret {namespace}/{} (create it with the server's api-key)",
                    reference.key, reference.name
                ),
            )
            .into());
        };
        let server = solver.server_id.as_deref().unwrap_or("localhost");
        let base = format!("{}/api/v1/servers/{server}", solver.url.trim_end_matches('/'));
        Ok(Self { client: HttpClient::new(crate::outbound::public_roots()), base, api_key: key })
    }

    /// Sends a request and returns the body of a successful answer.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::result::Result<Bytes, Failure> {
        let url = format!("{}{path}", self.base);
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("X-API-Key", &self.api_key)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|e| Failure::new(C::DnsUpdateFailed, format!("PowerDNS API URL {url}: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| format!("could not reach {url}: {e}"))?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{url} did not answer in {}s", REQUEST_TIMEOUT.as_secs()))
            .and_then(|r| r)
            .map_err(|e| Failure::new(C::DnsUpdateFailed, e))?;
        match status.as_u16() {
            200..=299 => Ok(body),
            401 | 403 => Err(Failure::new(
                C::DnsProviderCredentials,
                format!(
                    "the PowerDNS API at {url} refused the API key ({status}): check apiKeySecretRef against the server's api-key"
                ),
            )),
            _ => Err(Failure::new(
                C::DnsUpdateRefused,
                format!("the PowerDNS API at {url} answered {status}: {}", api_error(&body)),
            )),
        }
    }

    /// The zone (its API id and name) that holds `fqdn`: the longest zone name it ends with.
    async fn zone_for(&self, fqdn: &Name) -> std::result::Result<Zone, Failure> {
        let body = self.call(http::Method::GET, "/zones", None).await?;
        let zones: Vec<Zone> = serde_json::from_slice(&body)
            .map_err(|e| Failure::new(C::DnsUpdateFailed, format!("the PowerDNS zone list is unreadable: {e}")))?;
        let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
        let Some(chosen) = longest_zone(&names, &fqdn.to_string()).map(str::to_string) else {
            let served = names.join(", ");
            let message = format!("PowerDNS at {} serves no zone holding {fqdn} (it serves: {served})", self.base);
            return Err(Failure::new(C::DnsUpdateRefused, message));
        };
        Ok(zones.into_iter().find(|z| z.name == chosen).expect("chosen from this list"))
    }

    /// The TXT contents (quoted, as the API stores them) at `fqdn` in `zone`.
    async fn contents(&self, zone: &Zone, fqdn: &str) -> std::result::Result<Vec<String>, Failure> {
        let body = self.call(http::Method::GET, &format!("/zones/{}", zone.id), None).await?;
        let detail: ZoneDetail = serde_json::from_slice(&body)
            .map_err(|e| Failure::new(C::DnsUpdateFailed, format!("PowerDNS zone {} is unreadable: {e}", zone.name)))?;
        Ok(detail
            .rrsets
            .into_iter()
            .filter(|r| r.type_ == "TXT" && r.name.eq_ignore_ascii_case(fqdn))
            .flat_map(|r| r.records.into_iter().map(|c| c.content))
            .collect())
    }

    /// Replaces the TXT set at `fqdn` with what `change` makes of the current one.
    async fn rewrite(&self, fqdn: &Name, change: impl FnOnce(&mut Vec<String>)) -> std::result::Result<(), Failure> {
        let _serialised = WRITES.lock().await;
        let zone = self.zone_for(fqdn).await?;
        let name = fqdn.to_string();
        let mut contents = self.contents(&zone, &name).await?;
        change(&mut contents);
        let rrset = if contents.is_empty() {
            json!({"name": name, "type": "TXT", "changetype": "DELETE"})
        } else {
            let records: Vec<_> = contents.iter().map(|c| json!({"content": c, "disabled": false})).collect();
            json!({"name": name, "type": "TXT", "ttl": TTL, "changetype": "REPLACE", "records": records})
        };
        self.call(http::Method::PATCH, &format!("/zones/{}", zone.id), Some(json!({"rrsets": [rrset]}))).await?;
        Ok(())
    }
}

impl Provider for PowerDns {
    async fn add_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        let content = quoted(value);
        self.rewrite(fqdn, |contents| {
            if !contents.contains(&content) {
                contents.push(content.clone());
            }
        })
        .await
    }

    async fn remove_txt(&self, fqdn: &Name, value: &str) -> std::result::Result<(), Failure> {
        let content = quoted(value);
        self.rewrite(fqdn, |contents| contents.retain(|c| *c != content)).await
    }
}

/// A TXT value as the API writes it: one quoted string (ACME values need no escaping).
fn quoted(value: &str) -> String {
    format!("\"{value}\"")
}

/// The API's `{"error": "…"}`, or the body as it is.
fn api_error(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// Of `zones` (names with a trailing dot), the longest that `fqdn` is in.
fn longest_zone<'a>(zones: &[&'a str], fqdn: &str) -> Option<&'a str> {
    let fqdn = fqdn.to_ascii_lowercase();
    zones
        .iter()
        .filter(|zone| {
            let zone = zone.to_ascii_lowercase();
            fqdn == zone || fqdn.ends_with(&format!(".{zone}")) || zone == "."
        })
        .max_by_key(|zone| zone.len())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{
        PRODUCT,
        testing::{Recorder, header_values},
    };

    #[test]
    fn the_longest_zone_holding_the_name_is_chosen() {
        let zones = ["example.com.", "acme.example.com.", "other.org.", "ample.com."];
        assert_eq!(longest_zone(&zones, "_acme-challenge.www.acme.example.com."), Some("acme.example.com."));
        assert_eq!(longest_zone(&zones, "_acme-challenge.www.example.com."), Some("example.com."));
        assert_eq!(longest_zone(&zones, "_acme-challenge.EXAMPLE.com."), Some("example.com."));
        assert_eq!(longest_zone(&zones, "_acme-challenge.nope.net."), None);
        assert_eq!(longest_zone(&["ample.com."], "_acme-challenge.example.com."), None, "labels, not suffixes");
    }

    #[test]
    fn api_errors_are_quoted_from_the_answer() {
        assert_eq!(
            api_error(br#"{"error": "RRset x. IN TXT: Conflicts with pre-existing RRset"}"#),
            "RRset x. IN TXT: Conflicts with pre-existing RRset"
        );
        assert_eq!(api_error(b"Not Found"), "Not Found");
        assert_eq!(quoted("abc"), "\"abc\"");
    }

    #[tokio::test]
    async fn api_calls_name_certpilot() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut api = Recorder::start(200, |_| "[]".into()).await;
        let base = format!("{}/api/v1/servers/localhost", api.url);
        let provider = PowerDns { client: HttpClient::new(crate::outbound::public_roots()), base, api_key: "k".into() };
        let refused = provider.add_txt(&"_acme-challenge.example.com.".parse().unwrap(), "v").await.unwrap_err();
        assert_eq!(refused.code, C::DnsUpdateRefused, "the listener serves no zone: {refused:?}");
        let head = api.next_head().await;
        assert!(head.starts_with("GET /api/v1/servers/localhost/zones "), "{head}");
        assert_eq!(header_values(&head, "user-agent"), [PRODUCT]);
        assert_eq!(header_values(&head, "x-api-key"), ["k"]);
    }
}
