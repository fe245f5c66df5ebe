//! Many Certificates at once, for the benches: applied, then asked to renew.

use certpilot::api::{Certificate, RENEW_ANNOTATION};
use futures::{StreamExt, TryStreamExt};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

/// How many requests are kept in flight.
pub const IN_FLIGHT: usize = 32;

/// Applies `n` Certificates named `<prefix><i>` for `<prefix><i>.<domain>` from Issuer `issuer`.
pub async fn apply_certificates(api: &Api<Certificate>, n: usize, prefix: &str, domain: &str, issuer: &str) {
    let params = PatchParams::apply("certpilot-bench").force();
    futures::stream::iter(0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
                "spec": {"secretName": format!("{name}-tls"), "dnsNames": [format!("{name}.{domain}")], "issuerRef": {"name": issuer}}});
            let params = &params;
            async move { api.patch(&name, params, &Patch::Apply(&doc)).await.map(drop) }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
        .expect("Certificates apply");
}

/// Asks Certificates `<prefix><i>` (i < n) to renew, with `value` in the renew annotation.
pub async fn request_renewals(api: &Api<Certificate>, n: usize, prefix: &str, value: &str) {
    let request = json!({"metadata": {"annotations": {RENEW_ANNOTATION: value}}});
    futures::stream::iter(0..n)
        .map(|i| {
            let request = &request;
            async move {
                api.patch(&format!("{prefix}{i}"), &PatchParams::default(), &Patch::Merge(request)).await.map(drop)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await
        .expect("renewals are requested");
}
