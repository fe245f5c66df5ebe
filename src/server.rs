//! The operator's HTTP endpoints: liveness, readiness and Prometheus metrics.

use crate::{health::Readiness, metrics::Metrics};
use axum::{Router, extract::State, http::StatusCode, routing::get};
use std::sync::Arc;

async fn metrics(State(metrics): State<Arc<Metrics>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.encode(),
    )
}

/// Ready means able to answer challenges (leader or standby: every replica answers from the
/// attempts it watches) with every CRD installed; a half-installed certpilot takes no Service
/// traffic. The body says whether this replica leads.
async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, String) {
    match readiness.check() {
        Ok(role) => (StatusCode::OK, format!("ok: {role}")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

pub fn router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz).with_state(readiness))
        .route("/metrics", get(self::metrics).with_state(metrics))
}

/// Serves the endpoints on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router(metrics, readiness)).await
}
