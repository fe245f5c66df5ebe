//! Installing certpilot for real, as `kubectl apply -f deploy/` or `helm install` would: the
//! objects server-side applied (found through discovery, as kubectl finds kinds), then removed
//! again. The CRDs are shared by every test and stay; everything else goes, admission policy
//! bindings first (a cluster-wide one admits a single ServiceAccount), also when a test fails.

use certpilot_test_apiserver::cluster::TestCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::{Scope, pinned_kind},
};
use serde_json::Value;
use std::time::Duration;

/// The objects of `deploy/`, file by file in order, as `kubectl apply -f deploy/` reads them.
pub fn deploy_objects() -> Vec<Value> {
    let mut files: Vec<_> =
        std::fs::read_dir(super::helm::repo_root().join("deploy")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| super::helm::documents(&f.display().to_string(), &std::fs::read_to_string(f).unwrap()))
        .collect()
}

/// The API of `object`'s kind, found through discovery.
async fn api_for(client: &Client, object: &Value) -> kube::Result<Api<DynamicObject>> {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
    let (resource, capabilities) = pinned_kind(client, &gvk).await?;
    Ok(match capabilities.scope {
        Scope::Namespaced => {
            Api::namespaced_with(client.clone(), object["metadata"]["namespace"].as_str().unwrap(), &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    })
}

/// Server-side applies `object` (for real, or as a dry run).
pub async fn apply_object(client: &Client, object: &Value, dry_run: bool) -> kube::Result<DynamicObject> {
    let api = api_for(client, object).await?;
    let mut params = PatchParams::apply("certpilot-install-test").force();
    params.dry_run = dry_run;
    api.patch(object["metadata"]["name"].as_str().unwrap(), &params, &Patch::Apply(object)).await
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

/// What a test installed; removed by `remove`, or when dropped (a failed test).
pub struct Installation {
    config: kube::Config,
    /// What was applied, in order; the CRDs left out (they stay).
    objects: Vec<Value>,
    removed: bool,
}

impl Installation {
    /// Applies `objects` for real, in order; panics naming the first one refused.
    pub async fn apply(cluster: &TestCluster, what: &str, objects: Vec<Value>) -> Self {
        let mut installation = Self { config: cluster.config(), objects: Vec::new(), removed: false };
        for object in objects {
            let applied = apply_object(&cluster.client(), &object, false).await;
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            applied.unwrap_or_else(|e| panic!("{what}: the API server refuses {} {name}: {e}", kind(&object)));
            if kind(&object) != "CustomResourceDefinition" {
                installation.objects.push(object);
            }
        }
        installation
    }

    /// Removes what was installed: admission policy bindings first, then the rest in reverse;
    /// returns once its namespaces are gone (the next installation may want them again).
    pub async fn remove(mut self) {
        self.removed = true;
        remove_all(self.config.clone(), std::mem::take(&mut self.objects)).await;
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (config, objects) = (self.config.clone(), std::mem::take(&mut self.objects));
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(remove_all(config, objects));
        });
        // A test that failed is unwinding on the thread whose runtime serves the test API
        // server: waiting here for requests to it would hang the test instead of failing it.
        if !std::thread::panicking() {
            let _ = removal.join();
        }
    }
}

async fn remove_all(config: kube::Config, objects: Vec<Value>) {
    let client = Client::try_from(config).unwrap();
    let (bindings, rest): (Vec<Value>, Vec<Value>) =
        objects.into_iter().partition(|o| kind(o) == "ValidatingAdmissionPolicyBinding");
    for object in bindings.iter().chain(rest.iter().rev()) {
        if let Ok(api) = api_for(&client, object).await {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let _ = api.delete(name, &DeleteParams::background()).await;
        }
    }
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client);
    for name in rest.iter().filter(|o| kind(o) == "Namespace").filter_map(|o| o["metadata"]["name"].as_str()) {
        let gone = async {
            while namespaces.get_opt(name).await.is_ok_and(|n| n.is_some()) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(120), gone).await;
    }
}

/// Waits until each CRD in `objects` is Established.
pub async fn await_crds_established(cluster: &TestCluster, objects: &[Value]) {
    let crds = Api::<CustomResourceDefinition>::all(cluster.client());
    for crd in objects.iter().filter(|o| kind(o) == "CustomResourceDefinition") {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let established = kube::runtime::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(crds.clone(), name, established);
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("{name} is Established"))
            .unwrap();
    }
}

/// prometheus-operator's CRDs, installed where the cluster lacks them (a real cluster with
/// prometheus-operator keeps its own, whose schemas then check the chart's objects). Returns
/// the names of those it installed, for removal.
pub async fn ensure_prometheus_operator_crds(cluster: &TestCluster) -> Vec<String> {
    use serde::Deserialize;
    let text = include_str!("../fixtures/prometheus-operator-crds.yaml");
    let api = Api::<CustomResourceDefinition>::all(cluster.client());
    let mut installed = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        let crd = CustomResourceDefinition::deserialize(doc).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        if api.get_opt(&name).await.unwrap().is_none() {
            cluster.install_crd(&crd).await.unwrap();
            installed.push(name);
        }
    }
    installed
}
