//! certpilot's admission policy (`deploy/04-admission-policy.yaml`): only certpilot's
//! ServiceAccount makes CertificateAttempts and writes the status of certpilot's resources.
//!
//! Runs unchanged on the test API server and on a real cluster (`CERTPILOT_TEST_KUBECONFIG`).
//! The policy is installed under a unique name with its binding narrowed to the test's
//! namespace, so that it cannot disturb other tests, and removed at the end. Requests are made
//! as an ordinary user and as certpilot's ServiceAccount by impersonation.

mod support;

use certpilot::api::{Certificate, CertificateAttempt};
use certpilot_test_apiserver::cluster::{TestCluster, unique_name};
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{future::Future, path::Path, time::Duration};
use support::{helm, *};

/// certpilot's ServiceAccount, as the deploy manifests install it.
const OPERATOR: &str = "system:serviceaccount:certpilot:certpilot";
/// An ordinary user.
const USER: &str = "certpilot-test-user";
/// Words of the policy's message.
const POLICY_WORDS: &str = "CertificateAttempts are made by certpilot alone and are read-only";
/// How long policies and RBAC may take to reach a real API server's caches.
const WAIT: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_documents(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

/// The policy and its binding from `deploy/04-admission-policy.yaml`.
fn deploy_policy() -> (Value, Value) {
    let docs = yaml_documents(&std::fs::read_to_string(root().join("deploy/04-admission-policy.yaml")).unwrap());
    let of_kind = |kind: &str| docs.iter().find(|d| d["kind"] == kind).cloned().unwrap();
    (of_kind("ValidatingAdmissionPolicy"), of_kind("ValidatingAdmissionPolicyBinding"))
}

/// Installs the deploy policy under a unique name, bound to the test's namespace only; returns the name.
async fn install_policy(cluster: &TestCluster) -> String {
    let (mut policy, mut binding) = deploy_policy();
    let name = unique_name("certpilot-owned-objects");
    policy["metadata"]["name"] = json!(name);
    binding["metadata"]["name"] = json!(name);
    binding["spec"]["policyName"] = json!(name);
    binding["spec"]["matchResources"] = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.namespace()}},
        // A namespace selector never exempts cluster-scoped objects (ClusterIssuers): keep to
        // namespaced ones.
        "resourceRules": [{"apiGroups": ["certpilot.dev"], "apiVersions": ["*"], "operations": ["*"],
            "resources": ["*/*"], "scope": "Namespaced"}],
    });
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(policy).unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(binding).unwrap();
    Api::<ValidatingAdmissionPolicy>::all(cluster.client()).create(&PostParams::default(), &policy).await.unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(cluster.client())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    name
}

async fn remove_policy(cluster: &TestCluster, name: &str) {
    let dp = DeleteParams::default();
    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(cluster.client()).delete(name, &dp).await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(cluster.client()).delete(name, &dp).await;
}

/// RBAC for the user and the ServiceAccount in the test's namespace, so that only the policy
/// can refuse them.
async fn grant_access(cluster: &TestCluster) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "certpilot-admission-test"},
        "rules": [{"apiGroups": ["certpilot.dev"],
            "resources": ["certificates", "certificates/status", "certificateattempts", "certificateattempts/status"],
            "verbs": ["get", "create", "update", "patch", "delete"]}],
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "certpilot-admission-test"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "certpilot-admission-test"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER},
            {"kind": "ServiceAccount", "name": "certpilot", "namespace": "certpilot"},
        ],
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<Role>::namespaced(cluster.client(), cluster.namespace()).create(&pp, &role).await.unwrap();
    Api::<RoleBinding>::namespaced(cluster.client(), cluster.namespace()).create(&pp, &binding).await.unwrap();
}

fn certificate(name: &str) -> Certificate {
    serde_json::from_value(json!({
        "apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
        "spec": {"secretName": format!("{name}-tls"), "dnsNames": ["web.example.com"],
            "issuerRef": {"kind": "ClusterIssuer", "name": "selfsigned"}},
    }))
    .unwrap()
}

fn attempt(name: &str, certificate: &str) -> CertificateAttempt {
    serde_json::from_value(json!({
        "apiVersion": "certpilot.dev/v1alpha1", "kind": "CertificateAttempt", "metadata": {"name": name},
        "spec": {"certificateName": certificate, "type": "Manual", "reason": "test", "secretName": format!("{certificate}-tls"),
            "dnsNames": ["web.example.com"], "issuerRef": {"kind": "ClusterIssuer", "name": "selfsigned"},
            "privateKey": {"algorithm": "ECDSA", "size": 256}, "keyAlgorithm": "ECDSA-256", "certificateGeneration": 1},
    }))
    .unwrap()
}

fn refused_by_policy(status: &kube::core::Status, policy: &str) -> bool {
    status.message.contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
}

/// Sends `request` until the policy refuses it; an earlier success is undone with `undo`
/// (policies and RBAC reach a real API server asynchronously). Returns the refusal.
async fn until_refused<T, R, Fut, U, UFut>(what: &str, policy: &str, mut request: R, mut undo: U) -> kube::core::Status
where
    R: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
    U: FnMut() -> UFut,
    UFut: Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = match request().await {
            Err(kube::Error::Api(status)) if refused_by_policy(&status, policy) => return *status,
            Ok(_) => {
                undo().await;
                "it succeeded".to_string()
            }
            Err(other) => other.to_string(),
        };
        assert!(tokio::time::Instant::now() < deadline, "{what} was never refused by the policy; last: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `request` until it succeeds (RBAC may lag on a real cluster); the policy must not refuse it.
async fn until_allowed<T, R, Fut>(what: &str, policy: &str, mut request: R) -> T
where
    R: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match request().await {
            Ok(value) => return value,
            Err(kube::Error::Api(status)) if refused_by_policy(&status, policy) => {
                panic!("{what} was refused by the policy: {}", status.message)
            }
            Err(other) => {
                assert!(tokio::time::Instant::now() < deadline, "{what} never succeeded: {other}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_refusal(status: &kube::core::Status, policy: &str, resource: &str, name: &str) {
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"), "{}", status.message);
    let prefix = format!(
        "{resource}.certpilot.dev \"{name}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: "
    );
    assert!(status.message.starts_with(&prefix), "{}", status.message);
    assert!(status.message.contains(POLICY_WORDS), "{}", status.message);
    assert!(status.message.contains("certpilot.dev/renew="), "{}", status.message);
}

#[tokio::test]
async fn only_certpilot_writes_attempts_and_status() {
    let cluster = TestCluster::start("admission").await.unwrap();
    install_certpilot_crds(&cluster).await;
    grant_access(&cluster).await;
    let policy = install_policy(&cluster).await;
    let ns = cluster.namespace().to_string();
    // The admin (the test's own client) creates the Certificate: the policy does not cover that.
    let admin_certs: Api<Certificate> = Api::namespaced(cluster.client(), &ns);
    admin_certs.create(&PostParams::default(), &certificate("web")).await.unwrap();
    let admin_attempts: Api<CertificateAttempt> = Api::namespaced(cluster.client(), &ns);
    let user = cluster.impersonating_client(USER, &[]).unwrap();
    let user_attempts: Api<CertificateAttempt> = Api::namespaced(user.clone(), &ns);
    let user_certs: Api<Certificate> = Api::namespaced(user, &ns);

    let (pp, patch_params) = (PostParams::default(), PatchParams::default());
    // An ordinary user may not make an attempt…
    let first = attempt("web-1", "web");
    let refusal = until_refused(
        "creating an attempt as a user",
        &policy,
        || user_attempts.create(&pp, &first),
        || async {
            let _ = admin_attempts.delete("web-1", &DeleteParams::default()).await;
        },
    )
    .await;
    assert_refusal(&refusal, &policy, "certificateattempts", "web-1");
    // …nor write a Certificate's status…
    let status = Patch::Merge(json!({"status": {"phase": "Ready"}}));
    let refusal = until_refused(
        "patching a Certificate's status as a user",
        &policy,
        || user_certs.patch_status("web", &patch_params, &status),
        || async {},
    )
    .await;
    assert_refusal(&refusal, &policy, "certificates", "web");
    // …but may ask for a renewal through the Certificate itself.
    let renew = Patch::Merge(json!({"metadata": {"annotations": {"certpilot.dev/renew": "1"}}}));
    until_allowed("annotating the Certificate as a user", &policy, || user_certs.patch("web", &patch_params, &renew))
        .await;

    // certpilot's ServiceAccount makes the attempt and writes its status.
    let operator = cluster.impersonating_client(OPERATOR, &[]).unwrap();
    let operator_attempts: Api<CertificateAttempt> = Api::namespaced(operator, &ns);
    let second = attempt("web-2", "web");
    until_allowed("creating an attempt as certpilot", &policy, || operator_attempts.create(&pp, &second)).await;
    let phase = json!({"status": {"phase": "Ordering"}});
    operator_attempts.patch_status("web-2", &PatchParams::default(), &Patch::Merge(&phase)).await.unwrap();

    // The user may not change it, but may delete it.
    let label = json!({"metadata": {"labels": {"edited": "yes"}}});
    let refusal = user_attempts.patch("web-2", &PatchParams::default(), &Patch::Merge(&label)).await;
    match refusal {
        Err(kube::Error::Api(status)) => assert_refusal(&status, &policy, "certificateattempts", "web-2"),
        other => panic!("a user's update of an attempt must be refused, got {other:?}"),
    }
    user_attempts.delete("web-2", &DeleteParams::default()).await.unwrap();
    remove_policy(&cluster, &policy).await;
}

/// The chart renders the same policy as `deploy/`, for certpilot's own ServiceAccount.
#[test]
fn chart_and_deploy_policies_agree() {
    let render = |name, namespace| {
        let objects = helm::objects(&helm::Release { name, namespace }, &helm::values(&json!({})));
        objects.into_iter().filter(|o| o["apiVersion"] == "admissionregistration.k8s.io/v1").collect::<Vec<_>>()
    };
    let chart = render("certpilot", "certpilot");
    let (policy, binding) = deploy_policy();
    assert_eq!(chart.len(), 2);
    assert_eq!(chart[0]["spec"], policy["spec"]);
    assert_eq!(chart[1]["spec"], binding["spec"]);
    assert_eq!(chart[0]["metadata"]["name"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    // Another release allows its own ServiceAccount.
    let other = render("tls", "tools");
    let expression = other[0]["spec"]["validations"][0]["expression"].as_str().unwrap();
    assert!(expression.contains("'system:serviceaccount:tools:tls'"), "{expression}");
    assert_eq!(other[1]["spec"]["policyName"], "tls-owned-objects");
    let values: Value =
        yaml_serde::from_str(&std::fs::read_to_string(root().join("charts/certpilot/values.yaml")).unwrap()).unwrap();
    assert_eq!(values["admissionPolicy"]["enabled"], true, "on by default");
    // The policy names the ServiceAccount that deploy/02-rbac.yaml installs.
    let rbac = yaml_documents(&std::fs::read_to_string(root().join("deploy/02-rbac.yaml")).unwrap());
    let account = rbac.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    let username = format!(
        "system:serviceaccount:{}:{}",
        account["metadata"]["namespace"].as_str().unwrap(),
        account["metadata"]["name"].as_str().unwrap()
    );
    assert_eq!(username, OPERATOR);
    assert!(policy["spec"]["validations"][0]["expression"].as_str().unwrap().contains(&format!("'{OPERATOR}'")));
}

/// certpilot run as someone other than its ServiceAccount (from a workstation, say) with the
/// policy in place: every write is refused, and certpilot says why once, with what to do,
/// instead of repeating the policy's advice to users at every write.
#[tokio::test]
async fn certpilot_as_another_identity_says_once_why_the_policy_refuses_it() {
    let mut cluster = TestCluster::start("admission-identity").await.unwrap();
    install_certpilot_crds(&cluster).await;
    let policy = install_policy(&cluster).await;
    let ns = cluster.namespace().to_string();
    let issuers: Api<certpilot::api::Issuer> = Api::namespaced(cluster.client(), &ns);
    let issuer = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "local"},
        "spec": {"selfSigned": {}}});
    issuers.create(&PostParams::default(), &serde_json::from_value(issuer).unwrap()).await.unwrap();
    let mut web = certificate("web");
    web.spec.issuer_ref = serde_json::from_value(json!({"kind": "Issuer", "name": "local"})).unwrap();
    let certificates = Api::<Certificate>::namespaced(cluster.client(), &ns);
    certificates.create(&PostParams::default(), &web).await.unwrap();
    // A real API server applies a new policy a moment later: certpilot starts once it does.
    let (status, params) = (Patch::Merge(json!({"status": {"phase": "Pending"}})), PatchParams::default());
    until_refused("the policy to apply", &policy, || certificates.patch_status("web", &params, &status), || async {})
        .await;
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("certpilot-identity")));
    let probe = support::pebble::free_port();
    let kubeconfig = cluster.kubeconfig_path().unwrap();
    let file = std::fs::File::create(&log).unwrap();
    let _operator = Operator::spawn(
        &kubeconfig,
        &ns,
        &["--probe-address", &format!("127.0.0.1:{probe}")],
        std::process::Stdio::from(file),
    );
    // Refused more than once: the Issuer's status, the Certificate's.
    let refusals = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("certpilot_reconcile_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    eventually("certpilot's writes to be refused twice", WAIT, || async {
        (refusals(&http_get(probe, "/metrics").await.1) >= 2.0).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let explained: Vec<_> = text
        .lines()
        .filter(|l| l.contains(&format!("the admission policy {policy} refuses certpilot's writes")))
        .collect();
    assert_eq!(explained.len(), 1, "said once: {text}");
    assert!(
        explained[0].contains("admits only certpilot's ServiceAccount")
            && explained[0].contains("create token certpilot"),
        "{}",
        explained[0]
    );
    assert!(!text.contains("certpilot.dev/renew="), "the policy's advice to users is not certpilot's: {text}");
    remove_policy(&cluster, &policy).await;
    std::fs::remove_file(&log).ok();
}
