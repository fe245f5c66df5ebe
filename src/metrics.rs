//! Prometheus metrics: reconciles, their errors and durations, per controller.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use std::time::Instant;

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

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    attempts: Family<AttemptLabels, Counter>,
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
        registry.register("reconcile", "Reconciles by controller", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles by controller and error", errors.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration by controller", durations.clone());
        registry.register(
            "attempts_finished",
            "Finished certificate attempts by issuer kind and outcome",
            attempts.clone(),
        );
        Self { registry, reconciles, errors, durations, attempts }
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

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
