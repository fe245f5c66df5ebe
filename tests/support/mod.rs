//! Helpers shared by the integration tests: the widget CRD, polling, and small builders.
#![allow(dead_code)]

use certpilot_test_apiserver::cluster::TestCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, CustomResource,
    api::{DynamicObject, GroupVersionKind},
    core::ApiResource,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{future::Future, time::Duration};

/// The conformance suite's own custom resource (see `tests/fixtures/widgets-crd.yaml`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "conformance.certpilot.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
pub struct WidgetStatus {
    #[serde(rename = "observedGeneration", skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<WidgetCondition>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
pub struct WidgetCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn widget_crd() -> CustomResourceDefinition {
    serde_yaml::from_str(include_str!("../fixtures/widgets-crd.yaml")).expect("fixture CRD parses")
}

/// A cluster with the widget CRD installed.
pub async fn cluster_with_widgets(test: &str) -> TestCluster {
    let cluster = TestCluster::start(test).await.expect("test cluster starts");
    cluster
        .install_crd(&widget_crd())
        .await
        .expect("widget CRD installs");
    cluster
}

pub fn widgets(cluster: &TestCluster) -> Api<Widget> {
    Api::namespaced(cluster.client(), cluster.namespace())
}

/// A dynamic API for widgets, to send documents the typed struct cannot express.
pub fn raw_widgets(cluster: &TestCluster) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("conformance.certpilot.dev", "v1", "Widget");
    Api::namespaced_with(
        cluster.client(),
        cluster.namespace(),
        &ApiResource::from_gvk(&gvk),
    )
}

pub fn widget(name: &str, size: i64) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            size,
            ..Default::default()
        },
    )
}

/// Polls `check` until it yields a value or `timeout` passes; panics with `what` on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API error of a result, or a panic naming what was expected to fail.
pub fn api_error<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    what: &str,
) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("{what}: expected an API error, got {other:?}"),
    }
}
