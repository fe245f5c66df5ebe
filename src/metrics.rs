//! Prometheus metrics: reconciles, their errors and durations, per controller; finished and
//! failed attempts; and each Certificate's expiry and readiness, read from the watch cache.

use crate::{
    api::Certificate,
    health::{CrdState, Crds},
    leader::Leadership,
};
use kube::{ResourceExt, runtime::reflector::Store};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::Counter, family::Family, gauge::ConstGauge, histogram::Histogram},
    registry::Registry,
};
use std::{sync::Arc, time::Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub issuer_kind: &'static str,
    pub outcome: &'static str,
}

/// A failed attempt's issuer kind and `errorCode` (a fixed set: `FailureCode`), so that alerts
/// can tell a CA's rate limit from a broken solver.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub issuer_kind: &'static str,
    pub error_code: &'static str,
}

/// A revocation's issuer kind and reason (a fixed set: `policy::revoke::RevocationReason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevocationLabels {
    pub issuer_kind: &'static str,
    pub reason: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    attempts: Family<AttemptLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    revocations: Family<RevocationLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("certpilot");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0])
        });
        let attempts = Family::<AttemptLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let revocations = Family::<RevocationLabels, Counter>::default();
        registry.register("reconcile", "Reconciles by controller", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles by controller and error", errors.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration by controller", durations.clone());
        registry.register(
            "attempts_finished",
            "Finished certificate attempts by issuer kind and outcome",
            attempts.clone(),
        );
        registry.register(
            "attempt_failures",
            "Failed certificate attempts by issuer kind and error code",
            failures.clone(),
        );
        registry.register(
            "revocations",
            "Certificates revoked by Revoke attempts, by issuer kind and reason",
            revocations.clone(),
        );
        Self { registry, reconciles, errors, durations, attempts, failures, revocations }
    }
}

/// Measures one reconcile; recorded when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let label = ControllerLabel { controller: self.controller };
        self.metrics.durations.get_or_create(&label).observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&ControllerLabel { controller }).inc();
        ReconcileTimer { metrics: self, controller, started: Instant::now() }
    }

    pub fn error(&self, controller: &'static str, error: &crate::error::Error) {
        self.errors.get_or_create(&ErrorLabels { controller, error: error.metric_label() }).inc();
    }

    pub fn attempt_finished(&self, issuer_kind: &'static str, outcome: &'static str) {
        self.attempts.get_or_create(&AttemptLabels { issuer_kind, outcome }).inc();
    }

    /// A Revoke attempt revoked a certificate (or found it revoked already).
    pub fn revoked(&self, issuer_kind: &'static str, reason: &str) {
        let reason = crate::policy::revoke::RevocationReason::parse(reason).map_or("unspecified", |r| r.as_str());
        self.revocations.get_or_create(&RevocationLabels { issuer_kind, reason }).inc();
    }

    pub fn attempt_failed(&self, issuer_kind: &'static str, error_code: &'static str) {
        self.failures.get_or_create(&FailureLabels { issuer_kind, error_code }).inc();
    }

    /// Exports each Certificate's expiry and readiness from the watch cache `certificates`.
    pub fn watch_certificates(&mut self, certificates: Store<Certificate>) {
        self.registry.register_collector(Box::new(CertificateCollector(certificates)));
    }

    /// Exports whether each CRD certpilot watches is installed (1) or missing (0).
    pub fn watch_crds(&mut self, crds: Arc<Crds>) {
        self.registry.register_collector(Box::new(CrdCollector(crds)));
    }

    /// `certpilot_leader`: whether this replica leads (every replica is ready, so readiness
    /// no longer says).
    pub fn watch_leadership(&mut self, leadership: Leadership) {
        self.registry.register_collector(Box::new(LeaderCollector(leadership)));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    namespace: String,
    name: String,
}

/// Per-Certificate gauges, computed at each scrape from the watch cache: a deleted
/// Certificate's series goes with it, which a gauge set during reconciles would not do.
#[derive(Debug)]
struct CertificateCollector(Store<Certificate>);

impl Collector for CertificateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let certificates = self.0.state();
        let labels =
            |c: &Certificate| CertificateLabels { namespace: c.namespace().unwrap_or_default(), name: c.name_any() };
        let expiry = certificates.iter().filter_map(|c| {
            let not_after = c.status.as_ref()?.not_after.as_ref()?;
            Some((labels(c), not_after.0.as_second()))
        });
        gauges(
            &mut encoder,
            "certificate_expiration_timestamp_seconds",
            "When the certificate in each Certificate's Secret expires (Unix seconds)",
            expiry,
        )?;
        let ready = certificates.iter().map(|c| (labels(c), i64::from(is_ready(c))));
        gauges(
            &mut encoder,
            "certificate_ready",
            "Whether each Certificate's Ready condition is True (1) or not (0)",
            ready,
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrdLabels {
    crd: String,
}

/// Per-CRD gauges, computed at each scrape: a CRD no watch has reported on yet has no series.
#[derive(Debug)]
struct CrdCollector(Arc<Crds>);

impl Collector for CrdCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let help = "Whether each CRD certpilot watches is installed (1) or missing (0)";
        let mut family = encoder.encode_descriptor("crd_installed", help, None, MetricType::Gauge)?;
        for (crd, state) in self.0.states() {
            let value = i64::from(state == CrdState::Installed);
            ConstGauge::new(value).encode(family.encode_family(&CrdLabels { crd })?)?;
        }
        Ok(())
    }
}

/// Whether this replica leads, read at each scrape.
#[derive(Debug)]
struct LeaderCollector(Leadership);

impl Collector for LeaderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let help = "Whether this replica holds the leader Lease and runs the controllers (1) or stands by (0)";
        let gauge = encoder.encode_descriptor("leader", help, None, MetricType::Gauge)?;
        ConstGauge::new(i64::from(self.0.is_leader())).encode(gauge)
    }
}

fn is_ready(certificate: &Certificate) -> bool {
    let conditions = certificate.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// One gauge family, written series by series.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (CertificateLabels, i64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Condition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::{reflector, watcher};

    fn certificate(name: &str, ready: bool, not_after: Option<i64>) -> Certificate {
        let mut certificate: Certificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "certpilot.dev/v1alpha1",
            "kind": "Certificate",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"secretName": name, "dnsNames": ["a.example.com"], "issuerRef": {"name": "ca"}},
        }))
        .unwrap();
        let status = certificate.status.get_or_insert_default();
        status.conditions = vec![Condition::new("Ready", ready, "Test", String::new())];
        status.not_after = not_after.map(|s| Time(jiff::Timestamp::from_second(s).unwrap()));
        certificate
    }

    #[test]
    fn certificates_are_exported_from_the_cache_and_leave_with_it() {
        let (store, mut writer) = reflector::store();
        let web = certificate("web", true, Some(1_900_000_000));
        writer.apply_watcher_event(&watcher::Event::Apply(web.clone()));
        writer.apply_watcher_event(&watcher::Event::Apply(certificate("new", false, None)));
        let mut metrics = Metrics::default();
        metrics.watch_certificates(store);
        let text = metrics.encode();
        assert!(text.contains(
            "certpilot_certificate_expiration_timestamp_seconds{namespace=\"apps\",name=\"web\"} 1900000000"
        ));
        assert!(!text.contains("expiration_timestamp_seconds{namespace=\"apps\",name=\"new\"}"), "no certificate yet");
        assert!(text.contains("certpilot_certificate_ready{namespace=\"apps\",name=\"web\"} 1"));
        assert!(text.contains("certpilot_certificate_ready{namespace=\"apps\",name=\"new\"} 0"));
        writer.apply_watcher_event(&watcher::Event::Delete(web));
        assert!(!metrics.encode().contains("name=\"web\""), "a deleted Certificate's series goes");
    }

    #[test]
    fn leadership_is_exported() {
        let leadership = Leadership::default();
        let mut metrics = Metrics::default();
        metrics.watch_leadership(leadership.clone());
        assert!(metrics.encode().contains("\ncertpilot_leader 0\n"), "{}", metrics.encode());
        let leading = Leadership::leading();
        let mut metrics = Metrics::default();
        metrics.watch_leadership(leading);
        assert!(metrics.encode().contains("\ncertpilot_leader 1\n"));
    }

    #[test]
    fn crds_are_exported_as_installed_or_missing() {
        let crds = Arc::new(Crds::default());
        let mut metrics = Metrics::default();
        metrics.watch_crds(crds.clone());
        assert!(!metrics.encode().contains("certpilot_crd_installed{"), "nothing reported yet");
        crds.set("issuers.certpilot.dev", CrdState::Missing);
        crds.set("certificates.certpilot.dev", CrdState::Installed);
        let text = metrics.encode();
        assert!(text.contains("certpilot_crd_installed{crd=\"issuers.certpilot.dev\"} 0"), "{text}");
        assert!(text.contains("certpilot_crd_installed{crd=\"certificates.certpilot.dev\"} 1"), "{text}");
    }

    #[test]
    fn failures_are_counted_by_error_code() {
        let metrics = Metrics::default();
        metrics.attempt_failed("ClusterIssuer", "RateLimited");
        metrics.attempt_failed("ClusterIssuer", "RateLimited");
        let text = metrics.encode();
        assert!(
            text.contains(
                "certpilot_attempt_failures_total{issuer_kind=\"ClusterIssuer\",error_code=\"RateLimited\"} 2"
            )
        );
    }

    #[test]
    fn revocations_are_counted_by_reason() {
        let metrics = Metrics::default();
        metrics.revoked("Issuer", "keyCompromise");
        metrics.revoked("Issuer", "no such reason");
        let text = metrics.encode();
        assert!(
            text.contains("certpilot_revocations_total{issuer_kind=\"Issuer\",reason=\"keyCompromise\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("certpilot_revocations_total{issuer_kind=\"Issuer\",reason=\"unspecified\"} 1"),
            "{text}"
        );
    }
}
