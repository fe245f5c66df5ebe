//! The install manifests (`deploy/`, the Helm chart) and the examples the README applies.

mod support;

use certpilot::api::{Certificate, ClusterIssuer, Issuer};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule},
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::Value;
use std::{path::Path, time::Duration};
use support::{helm, *};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn deploy_documents() -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(root().join("deploy")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().flat_map(|f| documents(f.strip_prefix(root()).unwrap().to_str().unwrap())).collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> Vec<T> {
    docs.iter().filter(|d| d["kind"] == kind).map(|d| serde_json::from_value(d.clone()).unwrap()).collect()
}

#[test]
fn deploy_and_chart_carry_the_current_crds() {
    let bundle = std::fs::read_to_string(root().join("deploy/01-crds.yaml")).unwrap();
    assert!(
        bundle == certpilot::cli::crd_bundle().unwrap(),
        "deploy/01-crds.yaml is stale: run `cargo run -- crdgen --out crds --bundle deploy/01-crds.yaml`"
    );
    for (name, yaml) in certpilot::cli::crd_files().unwrap() {
        let chart = std::fs::read_to_string(root().join("charts/certpilot/crds").join(&name)).unwrap_or_default();
        assert!(chart == yaml, "charts/certpilot/crds/{name} is stale: copy it from crds/");
    }
}

/// Every (API group, resource, verb) the operator's code calls.
const NEEDED: &[(&str, &str, &str)] = &[
    ("certpilot.dev", "certificates", "watch"),
    ("certpilot.dev", "certificates/status", "patch"),
    // The Ingress/Gateway shim: its own Certificates (get before creating one).
    ("certpilot.dev", "certificates", "get"),
    ("certpilot.dev", "certificates", "patch"),
    ("certpilot.dev", "certificates", "delete"),
    ("certpilot.dev", "certificateattempts", "list"),
    ("certpilot.dev", "certificateattempts", "watch"),
    ("certpilot.dev", "certificateattempts", "create"),
    ("certpilot.dev", "certificateattempts", "delete"),
    ("certpilot.dev", "certificateattempts/status", "patch"),
    ("certpilot.dev", "issuers", "get"),
    ("certpilot.dev", "issuers", "watch"),
    ("certpilot.dev", "issuers/status", "patch"),
    ("certpilot.dev", "clusterissuers", "get"),
    ("certpilot.dev", "clusterissuers/status", "patch"),
    ("", "secrets", "get"),
    ("", "secrets", "watch"),
    ("", "secrets", "create"),
    ("", "secrets", "patch"),
    ("", "secrets", "delete"),
    ("networking.k8s.io", "ingresses", "list"),
    ("networking.k8s.io", "ingresses", "patch"),
    ("networking.k8s.io", "ingresses", "delete"),
    ("networking.k8s.io", "ingresses", "watch"),
    ("gateway.networking.k8s.io", "gateways", "list"),
    ("gateway.networking.k8s.io", "gateways", "watch"),
    ("gateway.networking.k8s.io", "httproutes", "list"),
    ("gateway.networking.k8s.io", "httproutes", "patch"),
    ("gateway.networking.k8s.io", "httproutes", "delete"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.as_ref().is_some_and(|g| g.iter().any(|g| g == group))
            && r.resources.as_ref().is_some_and(|rs| rs.iter().any(|r| r == resource))
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn deploy_manifests_fit_together_with_least_privilege() {
    let docs = deploy_documents();
    let deployment: Deployment = of_kind(&docs, "Deployment").remove(0);
    let account: ServiceAccount = of_kind(&docs, "ServiceAccount").remove(0);
    let role: ClusterRole = of_kind(&docs, "ClusterRole").remove(0);
    let binding: ClusterRoleBinding = of_kind(&docs, "ClusterRoleBinding").remove(0);
    let pod = deployment.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name, account.metadata.name);
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (Some(&subject.name), subject.namespace.as_ref()),
        (account.metadata.name.as_ref(), account.metadata.namespace.as_ref())
    );
    let rules = role.rules.unwrap();
    for (group, resource, verb) in NEEDED {
        assert!(grants(&rules, group, resource, verb), "the ClusterRole must grant {verb} on {group}/{resource}");
    }
    assert!(
        !grants(&rules, "certpilot.dev", "certificates", "update"),
        "the operator never replaces a Certificate's spec (the shim server-side applies only its own)"
    );
    assert!(rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*")), "no wildcard verbs");
    let container = &pod.containers[0];
    let args = container.args.as_ref().unwrap();
    assert_eq!(args[0], "controller");
    assert!(args.iter().any(|a| a == "--leader-elect"), "replicas stand by rather than race");
    for (group, resource, verb) in [
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "patch"),
        ("coordination.k8s.io", "leases", "get"),
    ] {
        assert!(grants(&rules, group, resource, verb), "leader election needs {verb} on {resource}");
    }
    // The Helm chart grants exactly the same rules.
    let release = helm::Release { name: "certpilot", namespace: "certpilot" };
    let chart = helm::objects(&release, &helm::values(&serde_json::json!({})));
    let chart_role: ClusterRole = of_kind(&chart, "ClusterRole").remove(0);
    assert_eq!(chart_role.rules.unwrap(), rules);
}

/// The README quickstart: the examples apply and, with the operator running, become Ready.
#[tokio::test]
async fn examples_apply_and_become_ready() {
    let mut cluster = TestCluster::start("examples").await.unwrap();
    install_certpilot_crds(&cluster).await;
    let _operator = Operator::start(&mut cluster);
    let ns = cluster.namespace().to_string();
    let issuer_name = unique_name("selfsigned");
    let params = PatchParams::apply("examples-test").force();
    let mut certificates = Vec::new();
    for file in ["examples/selfsigned-clusterissuer.yaml", "examples/certificate.yaml", "examples/ca-issuer.yaml"] {
        for mut doc in documents(file) {
            if doc["metadata"]["namespace"].is_string() {
                doc["metadata"]["namespace"] = Value::String(ns.clone());
            }
            // The example ClusterIssuer gets a unique name so tests on a shared cluster do not collide.
            if doc["spec"]["issuerRef"]["kind"] == "ClusterIssuer" {
                doc["spec"]["issuerRef"]["name"] = Value::String(issuer_name.clone());
            }
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            match doc["kind"].as_str().unwrap() {
                "ClusterIssuer" => {
                    doc["metadata"]["name"] = Value::String(issuer_name.clone());
                    Api::<ClusterIssuer>::all(cluster.client())
                        .patch(&issuer_name, &params, &Patch::Apply(&doc))
                        .await
                        .unwrap();
                }
                "Issuer" => {
                    Api::<Issuer>::namespaced(cluster.client(), &ns)
                        .patch(&name, &params, &Patch::Apply(&doc))
                        .await
                        .unwrap();
                }
                "Certificate" => {
                    Api::<Certificate>::namespaced(cluster.client(), &ns)
                        .patch(&name, &params, &Patch::Apply(&doc))
                        .await
                        .unwrap();
                    certificates.push(name);
                }
                other => panic!("unexpected kind {other} in {file}"),
            }
        }
    }
    let api: Api<Certificate> = Api::namespaced(cluster.client(), &ns);
    for name in certificates {
        wait_for(
            &api,
            &name,
            &format!("example Certificate {name} Ready"),
            Duration::from_secs(90),
            |c: &Certificate| {
                c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            },
        )
        .await;
    }
    Api::<ClusterIssuer>::all(cluster.client()).delete(&issuer_name, &Default::default()).await.unwrap();
}

/// Every example, including those that need a public CA, passes the CRDs' schemas and rules.
#[tokio::test]
async fn every_example_is_accepted_by_the_crds() {
    let cluster = TestCluster::start("examples-schema").await.unwrap();
    install_certpilot_crds(&cluster).await;
    let params = PatchParams::apply("examples-test").force();
    let suffix = unique_name("x");
    let mut files: Vec<_> = std::fs::read_dir(root().join("examples")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 4);
    for path in files {
        let file = path.strip_prefix(root()).unwrap().to_str().unwrap().to_string();
        for mut doc in documents(&file) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            if kind == "ClusterIssuer" {
                let unique = format!("{}-{suffix}", doc["metadata"]["name"].as_str().unwrap());
                doc["metadata"]["name"] = Value::String(unique);
            } else {
                doc["metadata"]["namespace"] = Value::String(cluster.namespace().to_string());
            }
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            let result = match kind.as_str() {
                "ClusterIssuer" => {
                    let api = Api::<ClusterIssuer>::all(cluster.client());
                    let applied = api.patch(&name, &params, &Patch::Apply(&doc)).await.map(|_| ());
                    let _ = api.delete(&name, &Default::default()).await;
                    applied
                }
                "Issuer" => Api::<Issuer>::namespaced(cluster.client(), cluster.namespace())
                    .patch(&name, &params, &Patch::Apply(&doc))
                    .await
                    .map(|_| ()),
                "Certificate" => Api::<Certificate>::namespaced(cluster.client(), cluster.namespace())
                    .patch(&name, &params, &Patch::Apply(&doc))
                    .await
                    .map(|_| ()),
                other => panic!("unexpected kind {other} in {file}"),
            };
            result.unwrap_or_else(|e| panic!("{file}: {kind} {name} was refused: {e}"));
        }
    }
}
