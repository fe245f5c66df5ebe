//! The few fields of a Gateway API `Gateway` (`gateway.networking.k8s.io/v1`) that the gateway
//! shim reads. k8s-openapi has no Gateway API types; these are read-only views, never written
//! (unknown fields are ignored when reading) and never installed: the Gateway API's own CRDs
//! define the resource.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// API group of the Gateway API.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The Gateway API version the shim reads (the storage version of its CRDs).
pub const GATEWAY_VERSION: &str = "v1";

/// The part of a Gateway's spec the shim reads: its listeners.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    plural = "gateways",
    namespaced,
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The listeners (ports, protocols, hostnames, TLS settings) of the Gateway.
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// One listener of a Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// The listener's name, unique within its Gateway.
    #[serde(default)]
    pub name: String,
    /// The host name the listener serves (may be a wildcard such as `*.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// HTTP, HTTPS, TLS, TCP or UDP.
    #[serde(default)]
    pub protocol: String,
    /// TLS settings of an HTTPS or TLS listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsConfig>,
}

/// How a listener terminates TLS.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTlsConfig {
    /// `Terminate` (the default) or `Passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The certificates the listener serves, normally Secrets.
    #[serde(default)]
    pub certificate_refs: Vec<SecretObjectReference>,
}

/// A reference to an object holding a certificate (a Secret unless `group`/`kind` say otherwise).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectReference {
    /// API group of the referent; empty (the default) is the core group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the referent; `Secret` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent; the Gateway's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl GatewayTlsConfig {
    /// Whether the listener terminates TLS (the default mode) rather than passing it through.
    pub fn terminates(&self) -> bool {
        self.mode.as_deref().is_none_or(|mode| mode == "Terminate")
    }
}

impl SecretObjectReference {
    /// Whether it names a Secret (core group, kind `Secret`, the defaults).
    pub fn is_secret(&self) -> bool {
        self.group.as_deref().unwrap_or_default().is_empty() && self.kind.as_deref().unwrap_or("Secret") == "Secret"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_reads_with_unknown_fields_and_defaults() {
        let gateway: Gateway = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "public", "namespace": "infra"},
            "spec": {"gatewayClassName": "example", "listeners": [
                {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "shop.example.com",
                 "tls": {"certificateRefs": [{"name": "shop-tls"}]}, "allowedRoutes": {}},
                {"name": "tls", "port": 8443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
                {"name": "http", "port": 80, "protocol": "HTTP"}
            ]},
            "status": {"conditions": []}
        }))
        .unwrap();
        let listeners = &gateway.spec.listeners;
        assert_eq!(listeners.len(), 3);
        let tls = listeners[0].tls.as_ref().unwrap();
        assert!(tls.terminates());
        assert!(tls.certificate_refs[0].is_secret());
        assert!(!listeners[1].tls.as_ref().unwrap().terminates());
        assert!(listeners[2].tls.is_none());
        use kube::Resource;
        assert_eq!(Gateway::api_version(&()), "gateway.networking.k8s.io/v1");
        assert_eq!(Gateway::plural(&()), "gateways");
    }

    #[test]
    fn references_name_secrets_by_default_only() {
        let reference = |group: Option<&str>, kind: Option<&str>| SecretObjectReference {
            group: group.map(String::from),
            kind: kind.map(String::from),
            name: "x".into(),
            namespace: None,
        };
        assert!(reference(None, None).is_secret());
        assert!(reference(Some(""), Some("Secret")).is_secret());
        assert!(!reference(Some("example.com"), Some("Secret")).is_secret());
        assert!(!reference(None, Some("ConfigMap")).is_secret());
    }
}
