//! The Helm chart (`charts/certpilot`), rendered without Helm (`support::helm`) with several
//! value sets: each set fits `values.schema.json` (and bad ones do not), renders YAML the API
//! server accepts, and installs what `deploy/` installs where the two should agree.
//!
//! Runs unchanged on the test API server and on a real cluster (`CERTPILOT_TEST_KUBECONFIG`):
//! objects are applied as a dry run, which a real cluster checks in full without keeping
//! anything (a cluster-wide admission policy must not land on a shared cluster); the test
//! server, which has no dry run, keeps them in its own throwaway store.

mod support;

use certpilot::{api::Certificate, cli::Cli, metrics::Metrics};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use clap::Parser;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        rbac::v1::{ClusterRole, PolicyRule, Role},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::DynamicObject,
    runtime::{reflector, watcher},
};
use serde_json::{Value, json};
use support::{
    helm::{self, Release},
    install::deploy_objects,
};

const RELEASE: Release = Release { name: "certpilot", namespace: "certpilot" };

use support::helm::value_sets;

fn objects(overrides: Value) -> Vec<Value> {
    helm::objects(&RELEASE, &helm::values(&overrides))
}

fn of_kind<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
    objects.iter().filter(|o| o["kind"] == kind).map(|o| serde_json::from_value(o.clone()).unwrap()).collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects.iter().map(|o| o["kind"].as_str().unwrap()).collect()
}

fn container_args(objects: &[Value]) -> Vec<String> {
    let deployment: Deployment = of_kind(objects, "Deployment").remove(0);
    deployment.spec.template.spec.unwrap().containers[0].args.clone().unwrap()
}

/// The operator's settings that `args` give (flags left out take their defaults).
fn settings(args: &[String]) -> String {
    let cli = Cli::try_parse_from(std::iter::once("certpilot".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("the operator refuses {args:?}: {e}"));
    format!("{cli:?}")
}

#[test]
fn value_sets_fit_the_schema_and_bad_values_do_not() {
    for (what, overrides) in value_sets() {
        let errors = helm::schema_errors(&helm::values(&overrides));
        assert!(errors.is_empty(), "{what}: {errors:#?}");
    }
    for (what, bad) in [
        ("a number as text", json!({"replicaCount": "2"})),
        ("an unknown key", json!({"replicas": 2})),
        ("an unknown nested key", json!({"metrics": {"serviceMonitor": {"enable": true}}})),
        ("a pull policy Kubernetes does not know", json!({"image": {"pullPolicy": "Sometimes"}})),
        ("no concurrency", json!({"concurrency": 0})),
        ("a namespace that is no DNS label", json!({"watchNamespace": "Apps"})),
        ("a label value that is not text", json!({"nodeSelector": {"disk": true}})),
        ("a shim flag that is not a boolean", json!({"shim": {"acceptCertManagerAnnotations": "yes"}})),
    ] {
        assert!(!helm::schema_errors(&helm::values(&bad)).is_empty(), "values.schema.json must refuse {what}");
    }
}

/// Every value in values.yaml has a comment (on its line or above it), and the schema knows it.
#[test]
fn every_value_is_documented_and_in_the_schema() {
    let text = std::fs::read_to_string(helm::chart_dir().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut section = "";
    for (i, line) in lines.iter().enumerate() {
        let key = line.trim_start();
        if key.is_empty() || key.starts_with('#') || key.starts_with('-') {
            continue;
        }
        if !line.starts_with(' ') {
            section = key;
        }
        let commented = line.contains(" # ") || i > 0 && lines[i - 1].trim_start().starts_with('#');
        // Keys that their section's comment covers: `enabled` and `labels`, and Kubernetes'
        // resource names (cpu, memory) in requests and limits.
        let obvious = ["enabled:", "labels:"].iter().any(|k| key.starts_with(k))
            || section == "resources:" && line.starts_with("    ");
        assert!(commented || obvious, "values.yaml line {}: `{key}` has no comment", i + 1);
    }
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(helm::chart_dir().join("values.schema.json")).unwrap()).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    fn covered(values: &Value, schema: &Value, path: &str) {
        let Some(map) = values.as_object() else { return };
        for (key, value) in map {
            let node = &schema["properties"][key];
            assert!(node.is_object(), "values.schema.json does not describe {path}{key}");
            // Maps of names (labels, resource lists) are described as a whole.
            if node["properties"].is_object() {
                covered(value, node, &format!("{path}{key}."));
            }
        }
    }
    covered(&helm::values(&json!({})), &schema, "");
}

#[test]
fn defaults_install_what_deploy_installs() {
    let chart = objects(json!({}));
    let deploy = deploy_objects();
    let mut chart_kinds = kinds(&chart);
    chart_kinds.sort();
    let mut expected = kinds(&deploy);
    expected.retain(|k| !matches!(*k, "Namespace" | "CustomResourceDefinition"));
    expected.sort();
    assert_eq!(chart_kinds, expected, "the chart's objects by kind (the CRDs are in crds/)");
    let rules = |objects: &[Value]| of_kind::<ClusterRole>(objects, "ClusterRole").remove(0).rules;
    assert_eq!(rules(&chart), rules(&deploy), "the chart's ClusterRole grants what deploy/ grants");
    assert_eq!(
        settings(&container_args(&chart)),
        settings(&container_args(&deploy)),
        "the chart starts the operator as deploy/ does"
    );
    let policy = |objects: &[Value]| -> Vec<Value> {
        objects
            .iter()
            .filter(|o| o["apiVersion"] == "admissionregistration.k8s.io/v1")
            .map(|o| o["spec"].clone())
            .collect()
    };
    assert_eq!(policy(&chart), policy(&deploy), "the same admission policy");
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|r| r == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

fn role_in(objects: &[Value], namespace: &str, name: &str) -> Vec<PolicyRule> {
    let roles: Vec<Role> = of_kind(objects, "Role");
    let role = roles
        .iter()
        .find(|r| r.metadata.namespace.as_deref() == Some(namespace) && r.metadata.name.as_deref() == Some(name));
    role.unwrap_or_else(|| panic!("no Role {namespace}/{name}")).rules.clone().unwrap_or_default()
}

/// Watching one namespace, certpilot gets Roles where it works and a ClusterRole for
/// ClusterIssuers only, and together they grant everything deploy/'s ClusterRole grants.
#[test]
fn watch_namespace_gets_roles_and_a_cluster_role_for_cluster_issuers_only() {
    let chart = objects(json!({"watchNamespace": "apps"}));
    let args = container_args(&chart);
    assert!(args.contains(&"--namespace=apps".to_string()), "{args:?}");
    let defaults = container_args(&objects(json!({})));
    assert!(!defaults.iter().any(|a| a.starts_with("--namespace")), "{defaults:?}");
    let cluster_roles: Vec<ClusterRole> = of_kind(&chart, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    let cluster_rules = cluster_roles[0].rules.clone().unwrap();
    for rule in &cluster_rules {
        let resources = rule.resources.clone().unwrap();
        assert!(
            resources.iter().all(|r| r.starts_with("clusterissuers")),
            "cluster-wide only for ClusterIssuers: {rule:?}"
        );
    }
    let watched = role_in(&chart, "apps", "certpilot-watched");
    let own = role_in(&chart, RELEASE.namespace, "certpilot-operator");
    let events = role_in(&chart, "default", "certpilot-clusterissuer-events");
    let deploy_rules = of_kind::<ClusterRole>(&deploy_objects(), "ClusterRole").remove(0).rules.unwrap();
    for rule in &deploy_rules {
        for (group, resource, verb) in triples(rule) {
            let (where_, rules) = match (group, resource, verb) {
                (_, r, _) if r.starts_with("clusterissuers") => ("cluster-wide", &cluster_rules),
                // The shim reads the Ingresses and Gateways of the namespace it watches.
                ("networking.k8s.io", "ingresses", "get" | "list" | "watch")
                | ("gateway.networking.k8s.io", "gateways", _) => ("the watched namespace", &watched),
                ("coordination.k8s.io", ..) | ("networking.k8s.io", ..) | ("gateway.networking.k8s.io", ..) => {
                    ("its own namespace", &own)
                }
                _ => ("the watched namespace", &watched),
            };
            assert!(grants(rules, group, resource, verb), "{where_}: {verb} on {group}/{resource}");
        }
    }
    assert!(grants(&own, "", "secrets", "get"), "ClusterIssuers' Secrets are in certpilot's own namespace");
    for verb in ["get", "list", "create", "patch", "delete"] {
        for (group, resource) in [("networking.k8s.io", "ingresses"), ("gateway.networking.k8s.io", "httproutes")] {
            assert!(grants(&own, group, resource, verb), "HTTP-01 routes are in its own namespace: {verb} {resource}");
        }
    }
    assert!(grants(&events, "events.k8s.io", "events", "create"), "Events about ClusterIssuers go to default");
    let bindings: Vec<Value> =
        chart.iter().filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding").cloned().collect();
    assert_eq!(bindings.len(), 4);
    for binding in bindings {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "certpilot", "namespace": "certpilot"}])
        );
        assert!(chart.iter().any(|o| o["kind"] == binding["roleRef"]["kind"]
            && o["metadata"]["name"] == binding["roleRef"]["name"]
            && o["metadata"]["namespace"] == binding["metadata"]["namespace"]));
    }
}

/// `issuerAmbientCredentials` passes the operator its flag, off by default; the ServiceAccount
/// carries the annotations IRSA reads.
#[test]
fn ambient_credentials_for_issuers_and_the_service_accounts_annotations() {
    let flag = "--issuer-ambient-credentials".to_string();
    assert!(!container_args(&objects(json!({}))).contains(&flag));
    let role = "arn:aws:iam::123456789012:role/certpilot-dns01";
    let objects = objects(json!({"issuerAmbientCredentials": true,
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": role}}}));
    let args = container_args(&objects);
    assert!(settings(&args).contains("issuer_ambient_credentials: true"), "{args:?}");
    let account: k8s_openapi::api::core::v1::ServiceAccount = of_kind(&objects, "ServiceAccount").remove(0);
    assert_eq!(account.metadata.annotations.unwrap()["eks.amazonaws.com/role-arn"], role);
}

/// `shim.acceptCertManagerAnnotations` passes the operator its flag; off by default.
#[test]
fn the_shim_accepts_cert_managers_annotations_only_when_asked() {
    let flag = "--accept-cert-manager-annotations".to_string();
    assert!(!container_args(&objects(json!({}))).contains(&flag));
    let args = container_args(&objects(json!({"shim": {"acceptCertManagerAnnotations": true}})));
    assert!(args.contains(&flag), "{args:?}");
    let parsed = settings(&args);
    assert!(parsed.contains("accept_cert_manager_annotations: true"), "{parsed}");
}

fn triples(rule: &PolicyRule) -> Vec<(&str, &str, &str)> {
    let mut out = Vec::new();
    for group in rule.api_groups.iter().flatten() {
        for resource in rule.resources.iter().flatten() {
            for verb in &rule.verbs {
                out.push((group.as_str(), resource.as_str(), verb.as_str()));
            }
        }
    }
    out
}

#[test]
fn two_replicas_with_a_disruption_budget_and_spread_by_default() {
    let chart = objects(json!({}));
    let deployment = chart.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2, "a standby answers challenges while the leader is down");
    assert!(container_args(&chart).iter().any(|a| a == "--leader-elect"), "replicas stand by rather than race");
    let budget = chart.iter().find(|o| o["kind"] == "PodDisruptionBudget").expect("a budget by default");
    assert_eq!(budget["spec"]["minAvailable"], 1, "an eviction never takes the last replica answering the CA");
    assert_eq!(budget["spec"]["selector"], deployment["spec"]["selector"]);
    let spread = &deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway", "soft: a one-node cluster still runs both");
    assert_eq!(spread["labelSelector"], deployment["spec"]["selector"]);
    // The solver Service selects every replica (readiness, not leadership, decides who gets traffic).
    let solver = chart.iter().find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "certpilot-solver").unwrap();
    assert_eq!(solver["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
}

#[test]
fn a_disruption_budget_and_spread_come_with_replicas_only() {
    let budgets = |overrides| kinds(&objects(overrides)).iter().filter(|k| **k == "PodDisruptionBudget").count();
    assert_eq!(budgets(json!({"replicaCount": 2})), 1);
    assert_eq!(budgets(json!({"replicaCount": 1})), 0, "it would block the only Pod's eviction");
    assert_eq!(budgets(json!({"replicaCount": 3, "podDisruptionBudget": {"enabled": false}})), 0, "switched off");
    let spread = |overrides| {
        let chart = objects(overrides);
        let deployment = chart.iter().find(|o| o["kind"] == "Deployment").unwrap().clone();
        deployment["spec"]["template"]["spec"].get("topologySpreadConstraints").is_some()
    };
    assert!(spread(json!({"replicaCount": 3})));
    assert!(!spread(json!({"replicaCount": 1})));
    assert!(!spread(json!({"replicaCount": 2, "spreadOverNodes": false})));
}

/// The metric names certpilot exports, with one Certificate and one failure recorded.
fn exported_metrics() -> String {
    let (store, mut writer) = reflector::store();
    let certificate: Certificate = serde_json::from_value(json!({
        "apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"secretName": "web", "dnsNames": ["a.example.com"], "issuerRef": {"name": "ca"}},
        "status": {"notAfter": "2030-01-01T00:00:00Z", "conditions": []},
    }))
    .unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(certificate));
    let mut metrics = Metrics::default();
    metrics.watch_certificates(store);
    metrics.attempt_finished("Issuer", "succeeded");
    metrics.attempt_failed("Issuer", "RateLimited");
    metrics.encode()
}

#[test]
fn monitoring_watches_the_operator_by_the_metrics_it_exports() {
    let chart = objects(value_sets()[3].1.clone());
    let find = |kind: &str| chart.iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    let monitor = find("ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let services: Vec<&Value> = chart.iter().filter(|o| o["kind"] == "Service").collect();
    let selected: Vec<&&Value> = services
        .iter()
        .filter(|s| {
            let labels = s["metadata"]["labels"].as_object().unwrap();
            monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    assert_eq!(selected.len(), 1, "the ServiceMonitor selects the metrics Service alone");
    let service = selected[0];
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == port));
    let rule = find("PrometheusRule");
    let exported = exported_metrics();
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        alerts,
        [
            "CertpilotCertificateExpiresSoon",
            "CertpilotCertificateNotReady",
            "CertpilotAttemptsFailing",
            "CertpilotRateLimited",
            "CertpilotDown"
        ]
    );
    for rule in rules {
        let expr = rule["expr"].as_str().unwrap();
        for name in
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("certpilot_"))
        {
            assert!(exported.contains(&format!("\n{name}{{")), "{}: certpilot exports no {name}", rule["alert"]);
        }
        let summary = rule["annotations"]["summary"].as_str().unwrap();
        assert!(!summary.contains("<no value>") && !summary.is_empty());
    }
    let down = rules.iter().find(|r| r["alert"] == "CertpilotDown").unwrap()["expr"].as_str().unwrap();
    let job = format!("job=\"{}\"", service["metadata"]["name"].as_str().unwrap());
    assert!(down.contains(&job), "prometheus-operator names the job after the Service: {down}");
    assert!(exported.contains("error_code=\"RateLimited\""), "the rate-limit alert's label value");
    let expiry = rules.iter().find(|r| r["alert"] == "CertpilotCertificateExpiresSoon").unwrap();
    assert!(
        expiry["annotations"]["description"].as_str().unwrap().contains("{{ $labels.name }}"),
        "Prometheus's templates are kept"
    );
}

#[test]
fn the_network_policy_opens_the_deployments_ports() {
    let chart = objects(value_sets()[3].1.clone());
    let policy = chart.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
    let deployment: Deployment = of_kind(&chart, "Deployment").remove(0);
    let pod = deployment.spec.template;
    let ingress_ports: Vec<i64> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().iter().map(|p| p["port"].as_i64().unwrap()))
        .collect();
    for port in pod.spec.unwrap().containers[0].ports.clone().unwrap() {
        assert!(ingress_ports.contains(&i64::from(port.container_port)), "port {:?} is open", port.name);
    }
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], json!(pod.metadata.unwrap().labels));
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let egress_ports: Vec<i64> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().iter().map(|p| p["port"].as_i64().unwrap()))
        .collect();
    for port in [53, 443, 6443, 14000] {
        assert!(egress_ports.contains(&port), "egress to port {port}: {egress_ports:?}");
    }
    assert!(!kinds(&objects(json!({}))).contains(&"NetworkPolicy"), "off by default");
}

#[test]
fn the_admission_policy_can_be_left_out() {
    let chart = objects(json!({"admissionPolicy": {"enabled": false}}));
    assert!(!chart.iter().any(|o| o["apiVersion"] == "admissionregistration.k8s.io/v1"));
    let defaults = objects(json!({}));
    let policy = defaults.iter().find(|o| o["kind"] == "ValidatingAdmissionPolicy").unwrap();
    let expression = policy["spec"]["validations"][0]["expression"].as_str().unwrap();
    assert!(expression.contains("'system:serviceaccount:certpilot:certpilot'"), "{expression}");
}

/// With watchNamespace, the policy keeps to that namespace, so that releases for other
/// namespaces (each admitting its own ServiceAccount) do not lock each other out; ClusterIssuers,
/// shared by every release, are not in it.
#[test]
fn with_watch_namespace_the_admission_policy_keeps_to_that_namespace() {
    let chart = objects(json!({"watchNamespace": "shop"}));
    let policy = chart.iter().find(|o| o["kind"] == "ValidatingAdmissionPolicy").unwrap();
    let binding = chart.iter().find(|o| o["kind"] == "ValidatingAdmissionPolicyBinding").unwrap();
    let selector = &binding["spec"]["matchResources"]["namespaceSelector"];
    assert_eq!(*selector, json!({"matchLabels": {"kubernetes.io/metadata.name": "shop"}}));
    let resources: Vec<&str> = policy["spec"]["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()))
        .collect();
    assert_eq!(
        resources,
        ["certificateattempts", "certificateattempts/status", "certificates/status", "issuers/status"]
    );
    let defaults = objects(json!({}));
    let binding = defaults.iter().find(|o| o["kind"] == "ValidatingAdmissionPolicyBinding").unwrap();
    assert!(binding["spec"].get("matchResources").is_none(), "a cluster-wide release covers every namespace");
}

/// Server-side applies `object` as a dry run.
async fn apply(cluster: &TestCluster, object: &Value) -> kube::Result<DynamicObject> {
    support::install::apply_object(&cluster.client(), object, true).await
}

/// Every value set's objects are accepted by the API server, with the CRDs they need.
#[tokio::test]
async fn rendered_objects_apply_to_a_cluster() {
    let cluster = TestCluster::start("helm").await.unwrap();
    let installed = support::install::ensure_prometheus_operator_crds(&cluster).await;
    // Cluster-scoped objects are named after the release: unique, on a shared cluster.
    let name = unique_name("certpilot");
    let release = Release { name: &name, namespace: cluster.namespace() };
    for (what, overrides) in value_sets() {
        for object in helm::objects(&release, &helm::values(&overrides)) {
            let (kind, object_name) = (&object["kind"], &object["metadata"]["name"]);
            let applied = apply(&cluster, &object)
                .await
                .unwrap_or_else(|e| panic!("{what}: the API server refuses {kind} {object_name}: {e}"));
            assert_eq!(applied.metadata.name.as_ref(), object_name.as_str().map(String::from).as_ref());
            assert_eq!(json!(applied.types.unwrap().kind), *kind);
        }
    }
    let crds = Api::<CustomResourceDefinition>::all(cluster.client());
    for name in installed {
        crds.delete(&name, &Default::default()).await.unwrap();
    }
}
