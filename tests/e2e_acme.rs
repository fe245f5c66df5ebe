//! End to end with a real ACME server: Pebble (Debian's `pebble`, or v2.10.1 from
//! `../shared/pebble`), acme2certifier, the operator binary, and the test API server (or a real
//! cluster with `CERTPILOT_TEST_KUBECONFIG`).

mod support;

use certpilot::{
    api::{
        Certificate, CertificateAttempt, Issuer,
        attempt::{AttemptPhase, AttemptType},
        certificate::CertificatePhase,
    },
    pki::{
        PrivateKey,
        cert::{parse_chain, pem_certificates},
    },
};
use certpilot_test_apiserver::cluster::TestCluster;
use k8s_openapi::api::{core::v1::Secret, networking::v1::Ingress};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use std::time::Duration;
use support::{bind::*, pebble::*, *};

const WAIT: Duration = Duration::from_secs(120);

struct Env {
    cluster: TestCluster,
    pebble: Pebble,
    operator: Option<Operator>,
    solver_args: Vec<String>,
}

impl Env {
    async fn start(test: &str, configure: impl FnOnce(&mut PebbleOptions)) -> Self {
        Self::start_with_args(test, configure, &[]).await
    }

    /// `start`, with `operator_args` added to the operator's command line.
    async fn start_with_args(test: &str, configure: impl FnOnce(&mut PebbleOptions), operator_args: &[&str]) -> Self {
        let mut cluster = TestCluster::start(test).await.expect("cluster");
        install_certpilot_crds(&cluster).await;
        let mut options = PebbleOptions::on_free_ports();
        // The operator serves where Pebble would connect, unless `configure` moves Pebble.
        let mut solver_args = options.solver_args();
        solver_args.extend(operator_args.iter().map(|a| a.to_string()));
        configure(&mut options);
        let pebble = Pebble::start(options);
        let args: Vec<&str> = solver_args.iter().map(String::as_str).collect();
        let operator = Operator::start_with(&mut cluster, &args);
        Self { cluster, pebble, operator: Some(operator), solver_args }
    }

    fn restart_operator(&mut self) {
        if let Some(operator) = self.operator.take() {
            operator.kill();
        }
        let args: Vec<&str> = self.solver_args.iter().map(String::as_str).collect();
        self.operator = Some(Operator::start_with(&mut self.cluster, &args));
    }

    /// Replaces the operator with one behind a proxy that never answers its PATCH of a path
    /// containing `fragment` whose body contains `body` (it stalls there), and makes issuer
    /// `pebble` with its account registered. The proxy and the stalled operator are returned.
    async fn stall_operator_at(&mut self, fragment: &str, body: &str) -> (support::proxy::ApiProxy, Operator) {
        let proxy = support::proxy::ApiProxy::start(&self.cluster).await;
        proxy.hang_with_body(http::Method::PATCH, fragment, body);
        self.operator.take().unwrap().kill();
        let args: Vec<&str> = self.solver_args.iter().map(String::as_str).collect();
        let stalled =
            Operator::spawn(proxy.kubeconfig(), self.cluster.namespace(), &args, std::process::Stdio::inherit());
        self.acme_issuer("pebble", json!({})).await;
        self.issuer_condition("pebble", |r| r == "AccountRegistered").await;
        (proxy, stalled)
    }
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.cluster.client(), self.cluster.namespace())
    }

    async fn apply<K>(&self, doc: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let params = PatchParams::apply("e2e-test").force();
        // Faults injected for the operator hit the test's own writes too: retry conflicts.
        loop {
            match self.api::<K>().patch(&name, &params, &Patch::Apply(&doc)).await {
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                result => return result.expect("apply"),
            }
        }
    }

    /// Creates Secret `name` holding `value` under `key`.
    async fn secret(&self, name: &str, key: &str, value: &str) {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.string_data = Some([(key.to_string(), value.to_string())].into());
        self.api::<Secret>().create(&Default::default(), &secret).await.unwrap();
    }

    /// Asks for a manual renewal of Certificate `name` (`token`: the annotation's value) and
    /// waits until it succeeded.
    async fn renew_now(&self, name: &str, token: &str) -> Certificate {
        let request = json!({"metadata": {"annotations": {"certpilot.dev/renew": token}}});
        self.api::<Certificate>().patch(name, &PatchParams::default(), &Patch::Merge(&request)).await.unwrap();
        wait_for(&self.api::<Certificate>(), name, "a manual renewal", WAIT, |c: &Certificate| {
            c.status.as_ref().is_some_and(|s| {
                s.phase == CertificatePhase::Ready
                    && s.last_attempt.as_ref().is_some_and(|a| {
                        a.phase == AttemptPhase::Succeeded && a.type_ == certpilot::api::attempt::AttemptType::Manual
                    })
            })
        })
        .await
    }

    async fn acme_issuer(&self, name: &str, extra: Value) -> Issuer {
        assert!(extra.is_object(), "extra fields of spec.acme: {extra}");
        self.apply(self.pebble.acme_issuer(name, extra)).await
    }

    async fn issuer_condition(&self, name: &str, reason_is: impl Fn(&str) -> bool) -> Issuer {
        wait_for(&self.api::<Issuer>(), name, "issuer condition", WAIT, |i: &Issuer| {
            i.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && reason_is(&c.reason)))
        })
        .await
    }

    async fn certificate(&self, name: &str, dns_names: &[&str], issuer: &str) {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
            "spec": {"secretName": format!("{name}-tls"), "dnsNames": dns_names, "issuerRef": {"name": issuer}}});
        self.apply::<Certificate>(doc).await;
    }

    /// Ready, with the CA's renewal window in status.
    async fn ready_with_renewal_window(&self, name: &str) -> Certificate {
        wait_for(
            &self.api::<Certificate>(),
            name,
            &format!("Certificate {name} with renewal information"),
            WAIT,
            |c: &Certificate| {
                c.status.as_ref().is_some_and(|s| {
                    s.phase == CertificatePhase::Ready
                        && s.renewal_info.as_ref().is_some_and(|r| r.window_start.is_some())
                })
            },
        )
        .await
    }

    async fn ready(&self, name: &str) -> Certificate {
        wait_for(&self.api::<Certificate>(), name, &format!("Certificate {name} Ready"), WAIT, |c: &Certificate| {
            c.status.as_ref().is_some_and(|s| {
                s.phase == CertificatePhase::Ready
                    && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await
    }
}

#[tokio::test]
async fn issues_with_http01_served_by_the_operator() {
    let env = Env::start("acme-http01", |_| {}).await;
    let issuer = env.acme_issuer("pebble", json!({})).await;
    let issuer = env.issuer_condition(&issuer.name_any(), |r| r == "AccountRegistered").await;
    let account = issuer.status.unwrap().account_uri.unwrap();
    assert!(account.starts_with("https://127.0.0.1:"), "{account}");
    env.certificate("web", &["web.certpilot.test", "www.certpilot.test"], "pebble").await;
    let cert = env.ready("web").await;
    let secret = env.api::<Secret>().get("web-tls").await.unwrap();
    assert_acme_secret(&secret, &["web.certpilot.test", "www.certpilot.test"]);
    let attempt = env.api::<CertificateAttempt>().get(&cert.status.unwrap().last_attempt.unwrap().name).await.unwrap();
    let status = attempt.status.unwrap();
    assert_eq!(status.phase, AttemptPhase::Succeeded);
    assert!(status.order.unwrap().url.starts_with("https://127.0.0.1:"));
    assert_eq!(status.challenges.len(), 2);
    for record in &status.challenges {
        assert_eq!(record.type_, "http-01");
        assert!(
            record
                .http_url
                .as_deref()
                .unwrap()
                .starts_with(&format!("http://{}/.well-known/acme-challenge/", record.dns_name))
        );
        assert!(record.record_value.as_deref().unwrap().contains('.'), "key authorization is token.thumbprint");
    }
    let steps: Vec<&str> = status.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        steps,
        ["GenerateKey", "PlaceOrder", "Present", "Validate", "Finalize", "Download", "Verify", "WriteSecret"]
    );
    assert_eq!(env.pebble.new_orders(), 1);
    // One Ingress rule per host routes the host's whole challenge path to the operator, and
    // stays: a renewal is validated through the same routes, writing none.
    let routes = host_routes(&env).await;
    let hosts: Vec<&str> = routes.iter().map(|r| r.annotations()["certpilot.dev/host"].as_str()).collect();
    assert_eq!(hosts.len(), 2);
    assert!(hosts.contains(&"web.certpilot.test") && hosts.contains(&"www.certpilot.test"), "{hosts:?}");
    for route in &routes {
        let rule = &route.spec.as_ref().unwrap().rules.as_ref().unwrap()[0];
        let path = &rule.http.as_ref().unwrap().paths[0];
        assert_eq!((path.path.as_deref(), path.path_type.as_str()), (Some("/.well-known/acme-challenge/"), "Prefix"));
        assert_eq!(path.backend.service.as_ref().unwrap().name, "certpilot-solver");
    }
    env.renew_now("web", "again").await;
    assert_eq!(env.pebble.new_orders(), 2);
    let versions = |routes: &[Ingress]| routes.iter().map(|r| r.resource_version()).collect::<Vec<_>>();
    assert_eq!(versions(&host_routes(&env).await), versions(&routes), "the renewal wrote no route");
    // Without the Certificate, its hosts' routes go.
    env.api::<Certificate>().delete("web", &Default::default()).await.unwrap();
    eventually("the routes to be removed with the Certificate", WAIT, || async {
        host_routes_listed(&env).await?.is_empty().then_some(())
    })
    .await;
}

/// A host route deleted by hand, and one whose label was changed by hand, are put back by the
/// next renewal before the CA is asked to validate (a renewal reads the route it counts on),
/// where before it went on to a validation the CA would fail.
#[tokio::test]
async fn a_renewal_puts_back_a_route_deleted_or_relabelled_by_hand() {
    let env = Env::start("acme-route-back", |_| {}).await;
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("web", &["gone.certpilot.test", "changed.certpilot.test"], "pebble").await;
    env.ready("web").await;
    let ingresses: Api<Ingress> = env.api();
    let by_host = |routes: &[Ingress], host: &str| {
        routes.iter().find(|r| r.annotations()["certpilot.dev/host"] == host).cloned().expect("a route for the host")
    };
    let made = host_routes(&env).await;
    let (gone, changed) = (by_host(&made, "gone.certpilot.test"), by_host(&made, "changed.certpilot.test"));
    let config = changed.labels()["certpilot.dev/http01-route"].clone();
    ingresses.delete(&gone.name_any(), &Default::default()).await.unwrap();
    let tampered = json!({"metadata": {"labels": {"certpilot.dev/http01-route": "tampered"}}});
    ingresses.patch(&changed.name_any(), &PatchParams::default(), &Patch::Merge(&tampered)).await.unwrap();
    env.renew_now("web", "again").await;
    assert_eq!(env.pebble.new_orders(), 2, "one order per issuance");
    let back = host_routes(&env).await;
    assert_eq!(back.len(), 2, "{back:?}");
    assert_eq!(by_host(&back, "gone.certpilot.test").name_any(), gone.name_any(), "the deleted route is back");
    assert_eq!(by_host(&back, "changed.certpilot.test").labels()["certpilot.dev/http01-route"], config);
    // Routes as certpilot made them are read, not written again.
    let versions = |routes: &[Ingress]| routes.iter().map(|r| r.resource_version()).collect::<Vec<_>>();
    env.renew_now("web", "once-more").await;
    assert_eq!(versions(&host_routes(&env).await), versions(&back), "the renewal wrote no route");
}

/// At start-up the operator removes the routes nothing needs: a host route for a host no
/// Certificate names, and a route an older certpilot made per challenge for an attempt that is
/// over. The route of a Certificate's host stays as it was, and so does an Ingress certpilot
/// did not make.
#[tokio::test]
async fn routes_nothing_needs_are_removed_at_start_up() {
    let mut env = Env::start("acme-route-sweep", |_| {}).await;
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("kept", &["kept.certpilot.test"], "pebble").await;
    env.ready("kept").await;
    let kept = host_routes(&env).await;
    assert_eq!(kept.len(), 1);
    let ingress = |name: &str, labels: Value, host: &str| -> Ingress {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "labels": labels, "annotations": {"certpilot.dev/host": host}},
            "spec": {"rules": [{"host": host, "http": {"paths": [{
                "path": "/.well-known/acme-challenge/", "pathType": "Prefix",
                "backend": {"service": {"name": "certpilot-solver", "port": {"number": 8089}}},
            }]}}]},
        }))
        .unwrap()
    };
    let ingresses: Api<Ingress> = env.api();
    let ours = |more: Value| {
        let mut labels = json!({"app.kubernetes.io/managed-by": "certpilot"});
        labels.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
        labels
    };
    let made = [
        ingress(
            "certpilot-http01-0123456789abcdef",
            ours(json!({"certpilot.dev/http01-route": "abc"})),
            "gone.certpilot.test",
        ),
        ingress(
            "certpilot-http01-older",
            ours(
                json!({"certpilot.dev/attempt": "gone-1", "certpilot.dev/attempt-namespace": env.cluster.namespace()}),
            ),
            "older.certpilot.test",
        ),
        ingress("the-users-own", json!({"app": "shop"}), "shop.certpilot.test"),
    ];
    for route in &made {
        ingresses.create(&Default::default(), route).await.unwrap();
    }
    env.restart_operator();
    eventually("the routes nothing needs to be removed", WAIT, || async {
        let left = ingresses.list(&ListParams::default()).await.ok()?.items;
        let names: Vec<String> = left.iter().map(|i| i.name_any()).collect();
        (!names.iter().any(|n| n == "certpilot-http01-0123456789abcdef" || n == "certpilot-http01-older"))
            .then_some(names)
    })
    .await;
    assert!(ingresses.get_opt("the-users-own").await.unwrap().is_some(), "an Ingress certpilot did not make stays");
    let versions = |routes: &[Ingress]| routes.iter().map(|r| r.resource_version()).collect::<Vec<_>>();
    assert_eq!(versions(&host_routes(&env).await), versions(&kept), "the route a Certificate needs stays as it was");
}

/// The HTTP-01 routes certpilot keeps per host.
async fn host_routes(env: &Env) -> Vec<Ingress> {
    let mut routes = host_routes_listed(env).await.unwrap();
    routes.sort_by_key(|r| r.name_any());
    routes
}

async fn host_routes_listed(env: &Env) -> Option<Vec<Ingress>> {
    let selector = ListParams::default().labels("certpilot.dev/http01-route");
    Some(env.api::<Ingress>().list(&selector).await.ok()?.items)
}

#[tokio::test]
async fn issues_with_tls_alpn01() {
    let env = Env::start("acme-tlsalpn", |_| {}).await;
    env.acme_issuer("pebble", json!({"solvers": [{"tlsAlpn01": {}}]})).await;
    env.certificate("alpn", &["alpn.certpilot.test"], "pebble").await;
    let cert = env.ready("alpn").await;
    assert_acme_secret(&env.api::<Secret>().get("alpn-tls").await.unwrap(), &["alpn.certpilot.test"]);
    let attempt = env.api::<CertificateAttempt>().get(&cert.status.unwrap().last_attempt.unwrap().name).await.unwrap();
    assert_eq!(attempt.status.unwrap().challenges[0].type_, "tls-alpn-01");
}

#[tokio::test]
async fn a_failed_challenge_fails_the_attempt_with_the_cas_error() {
    // Pebble validates HTTP-01 on a port where nothing listens.
    let env = Env::start("acme-invalid", |o| o.http_port = free_port()).await;
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("broken", &["broken.certpilot.test"], "pebble").await;
    let cert = wait_for(&env.api::<Certificate>(), "broken", "a failed attempt", WAIT, |c: &Certificate| {
        c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Failed)
    })
    .await;
    let status = cert.status.unwrap();
    assert_eq!(status.attempts_count, 1);
    assert!(status.next_attempt_time.is_some());
    let attempt =
        env.api::<CertificateAttempt>().get(&status.last_attempt.unwrap().name).await.unwrap().status.unwrap();
    assert_eq!(attempt.phase, AttemptPhase::Failed);
    assert_eq!(attempt.error_code.as_deref(), Some("Connection"), "{attempt:#?}");
    let message = attempt.error_message.unwrap();
    assert!(message.contains("broken.certpilot.test"), "{message}");
    assert_eq!(attempt.challenges[0].status, "invalid");
    assert!(attempt.challenges[0].error.is_some());
    let events: Api<k8s_openapi::api::events::v1::Event> = env.api();
    let warned = eventually("an AttemptFailed warning", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("AttemptFailed"))
    })
    .await;
    assert_eq!(warned.type_.as_deref(), Some("Warning"));
    assert!(warned.note.unwrap().contains("Connection"));
    let issuing = status.conditions.iter().find(|c| c.type_ == "Issuing").unwrap();
    assert_eq!(issuing.reason, "Connection");
    assert!(status.validation_errors.iter().any(|e| e.contains("broken.certpilot.test")));
    // The Certificate itself shows the record the CA checked and its error.
    let record = &status.validation_records[0];
    assert_eq!(
        (record.dns_name.as_str(), record.type_.as_str(), record.status.as_str()),
        ("broken.certpilot.test", "http-01", "invalid")
    );
    assert!(
        record.http_url.as_deref().unwrap().starts_with("http://broken.certpilot.test/.well-known/acme-challenge/")
    );
    assert!(record.error.is_some());
}

#[tokio::test]
async fn external_account_binding_is_required_and_checked() {
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let env = Env::start("acme-eab", |o| o.eab_keys = vec![("kid-1".into(), key.into())]).await;
    env.acme_issuer("no-eab", json!({})).await;
    let refused = env.issuer_condition("no-eab", |r| r != "AccountRegistered").await;
    let ready = refused.status.unwrap().conditions.remove(0);
    assert_eq!(ready.reason, "ExternalAccountRequired", "{ready:?}");
    let mut hmac = Secret::default();
    hmac.metadata.name = Some("eab".into());
    hmac.string_data =
        Some([("good".to_string(), key.to_string()), ("bad".to_string(), "bm90LXRoZS1rZXk".to_string())].into());
    env.api::<Secret>().create(&Default::default(), &hmac).await.unwrap();
    env.acme_issuer(
        "wrong-eab",
        json!({"externalAccountBinding": {"keyId": "kid-1", "keySecretRef": {"name": "eab", "key": "bad"}}}),
    )
    .await;
    let wrong = env.issuer_condition("wrong-eab", |r| r != "AccountRegistered").await;
    assert!(!wrong.status.unwrap().conditions[0].message.is_empty());
    env.acme_issuer(
        "with-eab",
        json!({"externalAccountBinding": {"keyId": "kid-1", "keySecretRef": {"name": "eab", "key": "good"}}}),
    )
    .await;
    env.issuer_condition("with-eab", |r| r == "AccountRegistered").await;
    env.certificate("bound", &["bound.certpilot.test"], "with-eab").await;
    env.ready("bound").await;
}

#[tokio::test]
async fn still_issues_when_the_ca_rejects_nonces() {
    let env = Env::start("acme-nonces", |o| o.nonce_reject = 40).await;
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("nonce", &["nonce.certpilot.test"], "pebble").await;
    let cert = env.ready("nonce").await;
    let status = cert.status.unwrap();
    assert_eq!(status.last_attempt.unwrap().name, "nonce-1", "rejected nonces are retried within the attempt");
    assert_eq!(status.attempts_count, 0);
}

#[tokio::test]
async fn a_restarted_operator_completes_the_same_order() {
    let mut env = Env::start("acme-restart", |_| {}).await;
    // The operator goes through a proxy that never passes on the attempt's first status write
    // (the order's URL with the sealed key and the challenge records), which comes after the
    // order is placed and before the CA is told to check anything: it is stopped mid-order,
    // with no validation under way and nothing recorded.
    let (_proxy, stalled) = env.stall_operator_at("/certificateattempts/", "\"challenges\"").await;
    env.certificate("resume", &["resume.certpilot.test"], "pebble").await;
    let attempts: Api<CertificateAttempt> = env.api();
    let placed = eventually("an order to be placed", WAIT, || async {
        let list = attempts.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().next().filter(|_| env.pebble.new_orders() == 1)
    })
    .await;
    stalled.kill();
    let status = attempts.get(&placed.name_any()).await.unwrap().status.unwrap_or_default();
    assert_eq!(status, Default::default(), "nothing was recorded before the order's URL");
    env.restart_operator();
    env.ready("resume").await;
    let finished = attempts.get(&placed.name_any()).await.unwrap().status.unwrap();
    assert_eq!(finished.phase, AttemptPhase::Succeeded);
    let found = finished.steps.iter().find(|s| s.name == "PlaceOrder").unwrap();
    assert!(found.message.contains("stopped before recording it"), "the same order was completed: {found:?}");
    assert_eq!(env.pebble.new_orders(), 1, "Pebble saw no second order");
    assert_eq!(attempts.list(&ListParams::default()).await.unwrap().items.len(), 1);
}

/// Two Certificates name the same host: one attempt's order is placed but not recorded when
/// the operator stops, the other's is placed later and recorded. The restarted operator takes
/// up the first attempt's own order, not the newer open order for the same name (which is the
/// other attempt's).
#[tokio::test]
async fn a_restarted_attempt_takes_up_its_own_order_not_another_attempts_for_the_same_names() {
    let (port, held) = black_hole().await;
    let mut env = Env::start("acme-twins", |o| o.http_port = port).await;
    let (_proxy, stalled) = env.stall_operator_at("/certificateattempts/older-1/", "\"challenges\"").await;
    let attempts: Api<CertificateAttempt> = env.api();
    env.certificate("older", &["twin.certpilot.test"], "pebble").await;
    eventually("the first order to be placed", WAIT, || async { (env.pebble.new_orders() == 1).then_some(()) }).await;
    env.certificate("newer", &["twin.certpilot.test"], "pebble").await;
    let newer = wait_for(&attempts, "newer-1", "the newer order to be recorded", WAIT, |a: &CertificateAttempt| {
        a.status.as_ref().is_some_and(|s| s.order.is_some())
    })
    .await;
    let newer_order = newer.status.unwrap().order.unwrap().url;
    stalled.kill();
    assert!(attempts.get("older-1").await.unwrap().status.is_none(), "the older attempt recorded nothing");
    env.restart_operator();
    let older = wait_for(&attempts, "older-1", "the older attempt's order to be recorded", WAIT, |a| {
        a.status.as_ref().is_some_and(|s| s.order.is_some())
    })
    .await
    .status
    .unwrap();
    assert_ne!(older.order.unwrap().url, newer_order, "the newer attempt's order is the newer attempt's");
    let found = older.steps.iter().find(|s| s.name == "PlaceOrder").unwrap();
    assert!(found.message.contains("stopped before recording it"), "its own order was taken up: {found:?}");
    assert_eq!(env.pebble.new_orders(), 2, "no third order");
    held.abort();
}

/// The operator stopped after the CA issued and before the Secret is written (that write never
/// answered): the restarted operator downloads the same certificate and stores it with the key
/// the attempt sealed before the CSR, so there is one order, one CSR and one certificate.
#[tokio::test]
async fn an_operator_stopped_between_the_csr_and_the_secret_write_stores_the_same_certificate() {
    let mut env = Env::start("acme-stopped-storing", |_| {}).await;
    let (_proxy, stalled) = env.stall_operator_at("/secrets/stored-tls", "tls.crt").await;
    env.certificate("stored", &["stored.certpilot.test"], "pebble").await;
    eventually("the certificate to be issued and downloaded", WAIT, || async {
        (env.pebble.downloads() > 0).then_some(())
    })
    .await;
    stalled.kill();
    assert!(env.api::<Secret>().get_opt("stored-tls").await.unwrap().is_none(), "the Secret was never written");
    let attempts: Api<CertificateAttempt> = env.api();
    let stopped = attempts.get("stored-1").await.unwrap().status.unwrap();
    assert_ne!(stopped.phase, AttemptPhase::Succeeded);
    assert!(stopped.sealed_key.is_some(), "the key was sealed before the CSR");
    env.restart_operator();
    env.ready("stored").await;
    let finished = attempts.get("stored-1").await.unwrap().status.unwrap();
    assert_eq!(finished.phase, AttemptPhase::Succeeded, "{finished:#?}");
    assert!(finished.sealed_key.is_none(), "the final status keeps no sealed key");
    assert_eq!(attempts.list(&ListParams::default()).await.unwrap().items.len(), 1, "no second attempt");
    assert_eq!((env.pebble.new_orders(), env.pebble.finalized()), (1, 1), "one order, one CSR");
    let secret = env.api::<Secret>().get("stored-tls").await.unwrap();
    assert_acme_secret(&secret, &["stored.certpilot.test"]);
    let pem = &secret.data.as_ref().unwrap()["tls.crt"].0;
    let stored = parse_chain(pem).unwrap();
    assert_eq!(Some(stored.serial_hex), finished.issued.map(|i| i.serial_number), "the certificate the CA issued");
}

/// certpilot's sealing key replaced while an attempt is under way (its Secret deleted, or
/// restored from another install's backup): the key the attempt sealed into its status cannot
/// be opened, so the attempt fails at once saying so; the next attempt starts afresh with a new
/// key and order, and issues through the same route.
#[tokio::test]
async fn a_replaced_sealing_key_fails_the_attempt_under_way_and_the_next_one_issues() {
    let mut env = Env::start("acme-sealing", |_| {}).await;
    // Stopped after the CA issued, before the Secret is written: the key is sealed in status.
    let (_proxy, stalled) = env.stall_operator_at("/secrets/sealed-tls", "tls.crt").await;
    env.certificate("sealed", &["sealed.certpilot.test"], "pebble").await;
    let attempts: Api<CertificateAttempt> = env.api();
    eventually("the certificate to be issued with the key sealed", WAIT, || async {
        let sealed = attempts.get_opt("sealed-1").await.ok()??.status?.sealed_key?;
        (env.pebble.downloads() > 0).then_some(sealed)
    })
    .await;
    stalled.kill();
    let routes = host_routes(&env).await;
    assert_eq!(routes.len(), 1, "the host is routed");
    let secrets: Api<Secret> = env.api();
    let sealing = secrets.get("certpilot-sealing").await.unwrap();
    let mut replaced = Secret::default();
    replaced.metadata.name = Some("certpilot-sealing".into());
    replaced.metadata.labels = sealing.metadata.labels.clone();
    let other_key = certpilot::pki::seal::SealingKey::generate().unwrap();
    replaced.data = Some([("key".to_string(), k8s_openapi::ByteString(other_key))].into());
    secrets.delete("certpilot-sealing", &Default::default()).await.unwrap();
    secrets.create(&Default::default(), &replaced).await.unwrap();
    env.restart_operator();
    let failed = wait_for(&attempts, "sealed-1", "the attempt to fail", WAIT, |a: &CertificateAttempt| {
        a.status.as_ref().is_some_and(|s| s.phase == AttemptPhase::Failed)
    })
    .await
    .status
    .unwrap();
    assert_eq!(failed.error_code.as_deref(), Some("SealedKeyUnusable"), "{failed:#?}");
    let message = failed.error_message.unwrap();
    assert!(message.contains("certpilot-sealing") && message.contains("another sealing key"), "{message}");
    assert!(failed.sealed_key.is_none(), "an ended attempt keeps no sealed key");
    env.ready("sealed").await;
    let issued = attempts.get("sealed-2").await.unwrap().status.unwrap();
    assert_eq!(issued.phase, AttemptPhase::Succeeded, "{issued:#?}");
    assert_eq!(env.pebble.new_orders(), 2, "one order for each attempt");
    let versions = |routes: &[Ingress]| routes.iter().map(|r| r.resource_version()).collect::<Vec<_>>();
    assert_eq!(versions(&host_routes(&env).await), versions(&routes), "the next attempt used the same route");
}

/// An ACME issuer named `bind` solving DNS-01 with TSIG-signed updates to `bind`.
async fn bind_issuer(env: &Env, bind: &Bind) {
    env.secret("tsig", "secret", &bind.tsig_secret).await;
    let rfc2136 = json!({"nameserver": bind.address, "tsigKeyName": KEY_NAME, "tsigAlgorithm": "hmac-sha256", "tsigSecretRef": {"name": "tsig", "key": "secret"}});
    env.acme_issuer("bind", json!({"solvers": [{"dns01": {"rfc2136": rfc2136}}]})).await;
}

#[tokio::test]
async fn issues_a_wildcard_with_dns01_through_rfc2136() {
    let bind = Bind::start();
    let dns = bind.address.clone();
    let env = Env::start("acme-dns01", |o| o.dns_server = Some(dns)).await;
    bind_issuer(&env, &bind).await;
    env.certificate("wild", &["*.certpilot.test", "certpilot.test"], "bind").await;
    let cert = env.ready("wild").await;
    assert_acme_secret(&env.api::<Secret>().get("wild-tls").await.unwrap(), &["*.certpilot.test", "certpilot.test"]);
    let attempt = env
        .api::<CertificateAttempt>()
        .get(&cert.status.unwrap().last_attempt.unwrap().name)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(attempt.challenges.len(), 2);
    for record in &attempt.challenges {
        assert_eq!(record.type_, "dns-01");
        assert_eq!(record.record_name.as_deref(), Some("_acme-challenge.certpilot.test"));
    }
    txt_removed(&bind.address, "_acme-challenge.certpilot.test.").await;
}

/// Waits until `server` publishes no TXT value at `name`. An attempt removes its records right
/// after its status says it ended, so the Certificate can be Ready a moment before.
async fn txt_removed(server: &str, name: &str) {
    eventually(&format!("the TXT values at {name} to be removed"), WAIT, || async {
        certpilot::solver::dns01::txt_values(server, name).await.ok().filter(|left| left.is_empty()).map(|_| ())
    })
    .await;
}

/// The last attempt of Certificate `name`, once it is Ready.
async fn ready_attempt(env: &Env, name: &str) -> certpilot::api::attempt::CertificateAttemptStatus {
    let cert = env.ready(name).await;
    let attempt = env.api::<CertificateAttempt>().get(&cert.status.unwrap().last_attempt.unwrap().name).await.unwrap();
    attempt.status.unwrap()
}

#[tokio::test]
async fn dns01_follows_a_cname_to_the_zone_it_delegates_to() {
    // `_acme-challenge.www.certpilot.test` is a CNAME into another zone: BIND ignores a TXT
    // written beside a CNAME, so the CA only sees the record if certpilot wrote it at the end.
    let bind = Bind::start_with(&[("delegated.test", "")], "_acme-challenge.www IN CNAME www.delegated.test.");
    let dns = bind.address.clone();
    let env = Env::start("acme-dns01-cname", |o| o.dns_server = Some(dns)).await;
    env.secret("tsig", "secret", &bind.tsig_secret).await;
    let rfc2136 = json!({"nameserver": bind.address, "tsigKeyName": KEY_NAME, "tsigSecretRef": {"name": "tsig", "key": "secret"}});
    let dns01 = json!({"cnameStrategy": "Follow", "rfc2136": rfc2136});
    env.acme_issuer("bind", json!({"solvers": [{"dns01": dns01}]})).await;
    env.certificate("delegated", &["www.certpilot.test"], "bind").await;
    let attempt = ready_attempt(&env, "delegated").await;
    let record = &attempt.challenges[0];
    assert_eq!(record.record_name.as_deref(), Some("_acme-challenge.www.certpilot.test"));
    assert_eq!(record.delegated_to.as_deref(), Some("www.delegated.test."), "status shows both names");
    assert_acme_secret(&env.api::<Secret>().get("delegated-tls").await.unwrap(), &["www.certpilot.test"]);
    txt_removed(&bind.address, "www.delegated.test.").await;
}

#[tokio::test]
async fn dns01_through_the_powerdns_api() {
    let pdns = support::pdns::PowerDns::start();
    let dns = pdns.dns_address.clone();
    let env = Env::start("acme-powerdns", |o| o.dns_server = Some(dns)).await;
    env.secret("pdns", "api-key", &pdns.api_key).await;
    let powerdns = json!({"url": pdns.api_url, "apiKeySecretRef": {"name": "pdns", "key": "api-key"}, "nameserver": pdns.dns_address});
    env.acme_issuer("pdns", json!({"solvers": [{"dns01": {"powerdns": powerdns}}]})).await;
    env.certificate("pdns", &["*.pdns.test", "pdns.test"], "pdns").await;
    let attempt = ready_attempt(&env, "pdns").await;
    assert_eq!(attempt.challenges.len(), 2, "a wildcard and its base share one record name");
    assert_acme_secret(&env.api::<Secret>().get("pdns-tls").await.unwrap(), &["*.pdns.test", "pdns.test"]);
    txt_removed(&pdns.dns_address, "_acme-challenge.pdns.test.").await;
}

#[tokio::test]
async fn a_wrong_powerdns_api_key_is_reported() {
    let pdns = support::pdns::PowerDns::start();
    let dns = pdns.dns_address.clone();
    let env = Env::start("acme-powerdns-badkey", |o| o.dns_server = Some(dns)).await;
    env.secret("pdns", "api-key", "not-the-key").await;
    let powerdns = json!({"url": pdns.api_url, "apiKeySecretRef": {"name": "pdns", "key": "api-key"}});
    env.acme_issuer("pdns", json!({"solvers": [{"dns01": {"powerdns": powerdns}}]})).await;
    env.certificate("refused", &["refused.pdns.test"], "pdns").await;
    let cert = wait_for(&env.api::<Certificate>(), "refused", "a failed attempt", WAIT, |c: &Certificate| {
        c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Failed)
    })
    .await;
    let name = cert.status.unwrap().last_attempt.unwrap().name;
    let attempt = env.api::<CertificateAttempt>().get(&name).await.unwrap().status.unwrap();
    assert_eq!(attempt.error_code.as_deref(), Some("DNSProviderCredentials"), "{attempt:#?}");
    assert!(attempt.error_message.unwrap().contains("apiKeySecretRef"));
}

/// An ACME issuer named `hook` whose dns01 solver calls `hook`, with `extra` fields (credentials).
async fn webhook_issuer(env: &Env, hook: &support::webhook::Webhook, bind: &Bind, extra: Value) {
    let mut webhook = json!({"url": hook.url, "nameserver": bind.address, "timeout": "10s"});
    if let Some(ca) = &hook.ca_pem {
        webhook["caBundle"] = json!(ca);
    }
    webhook.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    env.acme_issuer("hook", json!({"solvers": [{"dns01": {"webhook": webhook}}]})).await;
}

#[tokio::test]
async fn dns01_through_a_webhook_over_https_that_writes_to_bind() {
    use support::webhook::{Auth, Webhook};
    let bind = Bind::start();
    let (username, password) = ("certpilot".to_string(), "s3cret".to_string());
    let hook = Webhook::start_tls(&bind, Auth::Basic { username: username.clone(), password: password.clone() }).await;
    let dns = bind.address.clone();
    let env = Env::start("acme-webhook", |o| o.dns_server = Some(dns)).await;
    let mut secret = Secret::default();
    secret.metadata.name = Some("hook-auth".into());
    secret.type_ = Some("kubernetes.io/basic-auth".into());
    secret.string_data = Some([("username".to_string(), username), ("password".to_string(), password)].into());
    env.api::<Secret>().create(&Default::default(), &secret).await.unwrap();
    webhook_issuer(&env, &hook, &bind, json!({"basicAuthSecretRef": {"name": "hook-auth"}})).await;
    env.certificate("hooked", &["*.certpilot.test", "certpilot.test"], "hook").await;
    let attempt = ready_attempt(&env, "hooked").await;
    assert_eq!(attempt.challenges.len(), 2, "a wildcard and its base name share one record name");
    assert_acme_secret(&env.api::<Secret>().get("hooked-tls").await.unwrap(), &["*.certpilot.test", "certpilot.test"]);
    txt_removed(&bind.address, "_acme-challenge.certpilot.test.").await;
    let values: Vec<String> = attempt.challenges.iter().map(|c| c.record_value.clone().unwrap()).collect();
    // The webhook notes a call once BIND has answered it, a moment after BIND serves the change.
    eventually("the webhook to have presented and cleaned up both values", WAIT, || {
        let calls = hook.calls();
        let answered = |call: &str, value: &String| {
            calls.iter().any(|c| {
                c.call == call && c.fqdn == "_acme-challenge.certpilot.test." && &c.value == value && c.status == 200
            })
        };
        let done = values.iter().all(|v| answered("present", v) && answered("cleanup", v));
        async move { done.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_webhook_refusing_the_token_fails_the_attempt_and_nothing_reaches_bind() {
    use support::webhook::{Auth, Webhook};
    let bind = Bind::start();
    let hook = Webhook::start(&bind, Auth::Bearer("the-right-token".into())).await;
    let dns = bind.address.clone();
    let env = Env::start("acme-webhook-badtoken", |o| o.dns_server = Some(dns)).await;
    env.secret("hook-token", "token", "a-wrong-token").await;
    webhook_issuer(&env, &hook, &bind, json!({"bearerTokenSecretRef": {"name": "hook-token", "key": "token"}})).await;
    let serial = soa_serial(&bind).await;
    env.certificate("refused", &["refused.certpilot.test"], "hook").await;
    let attempt = failed_attempt(&env, "refused").await;
    assert_eq!(attempt.error_code.as_deref(), Some("DNSProviderCredentials"), "{attempt:#?}");
    let message = attempt.error_message.unwrap();
    let secret = format!("Secret {}/hook-token (bearerTokenSecretRef)", env.cluster.namespace());
    assert!(message.contains("401 Unauthorized: {\"error\": \"invalid credentials\"}"), "{message}");
    assert!(message.contains(&secret), "{message}");
    let cert = env.api::<Certificate>().get("refused").await.unwrap();
    let issuing = cert.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Issuing").unwrap();
    assert_eq!(issuing.reason, "DNSProviderCredentials");
    assert!(issuing.message.contains(&secret), "{issuing:?}");
    let calls = hook.calls();
    assert!(
        calls.iter().any(|c| c.call == "present" && c.fqdn == "_acme-challenge.refused.certpilot.test."),
        "{calls:#?}"
    );
    assert!(calls.iter().all(|c| c.status == 401), "{calls:#?}");
    assert_eq!(soa_serial(&bind).await, serial, "nothing reached BIND");
}

#[tokio::test]
async fn a_webhook_whose_ca_is_not_in_ca_bundle_is_not_trusted() {
    use support::webhook::{Auth, Webhook};
    let bind = Bind::start();
    let hook = Webhook::start_tls(&bind, Auth::Bearer("token".into())).await;
    let dns = bind.address.clone();
    let env = Env::start("acme-webhook-untrusted", |o| o.dns_server = Some(dns)).await;
    env.secret("hook-token", "token", "token").await;
    // No caBundle: the webhook's private CA is not among the public roots.
    let webhook = json!({"url": hook.url, "bearerTokenSecretRef": {"name": "hook-token", "key": "token"}});
    env.acme_issuer("hook", json!({"solvers": [{"dns01": {"webhook": webhook}}]})).await;
    let serial = soa_serial(&bind).await;
    env.certificate("untrusted", &["untrusted.certpilot.test"], "hook").await;
    let attempt = failed_attempt(&env, "untrusted").await;
    assert_eq!(attempt.error_code.as_deref(), Some("DNSUpdateFailed"), "{attempt:#?}");
    let message = attempt.error_message.unwrap();
    assert!(message.contains(&format!("TLS with the webhook at {}/present failed", hook.url)), "{message}");
    assert!(message.contains("set webhook.caBundle"), "{message}");
    assert!(hook.calls().is_empty(), "no request got through: {:#?}", hook.calls());
    assert_eq!(soa_serial(&bind).await, serial, "nothing reached BIND");
}

#[tokio::test]
async fn dns_check_nameservers_replace_the_providers_and_silence_is_reported_not_waited_on() {
    let bind = Bind::start();
    let dns = bind.address.clone();
    // The checks ask only a server that refuses connections: certpilot says so and asks the CA
    // at once; the CA (resolving through BIND) finds the record.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let env =
        Env::start_with_args("acme-dns-check", |o| o.dns_server = Some(dns), &["--dns-check-nameservers", &closed])
            .await;
    bind_issuer(&env, &bind).await;
    env.certificate("checked", &["checked.certpilot.test"], "bind").await;
    let attempt = ready_attempt(&env, "checked").await;
    let check = attempt.challenges[0].dns_check.as_deref().unwrap_or_default();
    assert!(check.contains("no nameserver answered") && check.contains(&closed), "{attempt:#?}");
}

#[tokio::test]
async fn a_wrong_tsig_key_is_reported() {
    let bind = Bind::start();
    let dns = bind.address.clone();
    let env = Env::start("acme-dns01-badkey", |o| o.dns_server = Some(dns)).await;
    env.secret("tsig", "secret", "d3JvbmcgLS0gbm90IHRoZSBrZXkgYXQgYWxsIQ==").await;
    let rfc2136 = json!({"nameserver": bind.address, "tsigKeyName": KEY_NAME, "tsigSecretRef": {"name": "tsig", "key": "secret"}});
    env.acme_issuer("bind", json!({"solvers": [{"dns01": {"rfc2136": rfc2136}}]})).await;
    env.certificate("denied", &["denied.certpilot.test"], "bind").await;
    let cert = wait_for(&env.api::<Certificate>(), "denied", "a failed attempt", WAIT, |c: &Certificate| {
        c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Failed)
    })
    .await;
    let attempt = env
        .api::<CertificateAttempt>()
        .get(&cert.status.unwrap().last_attempt.unwrap().name)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(attempt.error_code.as_deref(), Some("DNSUpdateRefused"), "{attempt:#?}");
    assert!(attempt.error_message.unwrap().contains("TSIG"));
}

/// An issuer on acme2certifier, which offers renewal information and profiles.
async fn a2c_env(test: &str, retry_after: u32) -> (Env, support::a2c::A2c) {
    let a2c = support::a2c::A2c::start(retry_after);
    let env = Env::start(test, |_| {}).await;
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "a2c"},
        "spec": {"acme": {"server": a2c.directory, "caBundle": a2c.ca_pem, "email": "ops@example.com", "profile": "shortlived", "solvers": [{"http01": {}}]}}});
    env.apply::<Issuer>(doc).await;
    (env, a2c)
}

#[tokio::test]
async fn renewal_information_sets_the_renewal_time_and_profiles_reach_the_ca() {
    let (env, a2c) = a2c_env("acme-ari", 120).await;
    env.certificate("ari", &["ari.certpilot.test"], "a2c").await;
    let cert = env.ready_with_renewal_window("ari").await;
    let status = cert.status.unwrap();
    let info = status.renewal_info.clone().unwrap();
    let (start, end) = (info.window_start.unwrap().0, info.window_end.unwrap().0);
    assert_eq!(status.renewal_source, Some(certpilot::api::certificate::RenewalSource::Ari));
    let renew_at = status.renewal_time.unwrap().0;
    assert!(renew_at >= start && renew_at <= end, "{renew_at} not in [{start}, {end}]");
    assert_eq!(end, status.not_after.unwrap().0, "acme2certifier's window ends at expiry");
    // The CA's Retry-After (120 s) sets when the window is asked for again: 120 s after the
    // window was fetched, which happened after the attempt finished and before now (bounds that
    // hold however slow the test runs; the fallbacks are an hour or a day).
    let attempts: Api<CertificateAttempt> = env.api();
    let last = status.last_attempt.as_ref().unwrap();
    let finished = attempts.get(&last.name).await.unwrap().status.unwrap().finished_at.unwrap().0;
    let retry_after = jiff::SignedDuration::from_secs(120);
    let second = jiff::SignedDuration::from_secs(1);
    let next_check = info.next_check.0;
    assert!(next_check >= finished + retry_after - second, "next check {next_check}, attempt finished {finished}");
    assert!(
        next_check <= jiff::Timestamp::now() + retry_after + second,
        "next check {next_check} is more than 120 s away"
    );
    // The issuer's profile reached the CA with the order.
    assert_eq!(a2c.query("select profile from orders"), ["shortlived"]);
}

#[tokio::test]
async fn a_revocation_at_acme2certifier_reaches_its_crl() {
    let (env, a2c) = a2c_env("acme-a2c-revoke", 3600).await;
    env.certificate("gone", &["gone.certpilot.test"], "a2c").await;
    let serial = env.ready("gone").await.status.unwrap().serial_number.unwrap();
    // As openssl prints it: upper case, without the DER sign byte certpilot's hex may keep.
    let printed = serial.to_uppercase().trim_start_matches("00").to_string();
    assert!(!a2c.crl_text().contains(&printed));
    let request = "keyCompromise@2026-06-01T12:00:00Z";
    let reissued = revoke(&env, "gone", request, AttemptType::Reissue).await.status.unwrap();
    assert_ne!(reissued.serial_number.as_deref(), Some(serial.as_str()));
    let crl = a2c.crl_text();
    let entry = crl.split("Serial Number:").find(|e| e.trim().starts_with(&printed));
    let entry = entry.unwrap_or_else(|| panic!("serial {serial} not in the CRL:\n{crl}"));
    assert!(entry.contains("Revocation Date"), "{entry}");
    // acme2certifier checks the reason (it refuses one it does not know) but its OpenSSL
    // handler writes no reason into the CRL: the reason is checked at Pebble instead.
}

#[tokio::test]
async fn renewals_name_the_certificate_they_replace() {
    let (env, a2c) = a2c_env("acme-replaces", 3600).await;
    env.certificate("repl", &["repl.certpilot.test"], "a2c").await;
    let cert = env.ready_with_renewal_window("repl").await;
    let replaced = cert.status.unwrap().renewal_info.unwrap().certificate_id;
    let renewed = env.renew_now("repl", "now").await;
    let first_renewal = env.api::<CertificateAttempt>().get("repl-2").await.unwrap();
    assert_eq!(first_renewal.spec.replaces.as_deref(), Some(replaced.as_str()));
    // acme2certifier does not confirm `replaces` in the order (RFC 9773 says the CA must): the
    // attempt says so, and the next one orders without it and succeeds.
    let status = first_renewal.status.unwrap();
    assert_eq!(
        (status.phase, status.error_code.as_deref()),
        (AttemptPhase::Failed, Some("ReplacesNotReflected")),
        "{status:#?}"
    );
    assert!(status.error_message.unwrap().contains("orders without"));
    let renewed = renewed.status.unwrap();
    assert_ne!(renewed.renewal_info.unwrap().certificate_id, replaced);
    assert_eq!(renewed.attempts_count, 0);
    assert_eq!(
        a2c.query("select count(*) from orders"),
        ["3"],
        "the first order, the one naming the replaced certificate, the one without"
    );
}

/// A minimal Gateway API HTTPRoute CRD for clusters without the Gateway API (a real one, when
/// installed, is left alone).
async fn ensure_http_route_crd(cluster: &TestCluster) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    if crds.get_opt("httproutes.gateway.networking.k8s.io").await.unwrap().is_some() {
        // Installed already, perhaps a moment ago by another test: used once established.
        let established = kube::runtime::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(crds, "httproutes.gateway.networking.k8s.io", established);
        tokio::time::timeout(Duration::from_secs(30), wait).await.expect("established in time").unwrap();
        return;
    }
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        // Groups under k8s.io need their API review's URL, as the Gateway API's CRDs carry it.
        "metadata": {"name": "httproutes.gateway.networking.k8s.io",
            "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/3328"}},
        "spec": {"group": "gateway.networking.k8s.io", "scope": "Namespaced",
            "names": {"plural": "httproutes", "singular": "httproute", "kind": "HTTPRoute", "listKind": "HTTPRouteList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object",
                "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}
    }))
    .unwrap();
    cluster.install_crd(&crd).await.unwrap();
}

#[tokio::test]
async fn http01_can_route_through_a_gateway() {
    use kube::{
        api::{DynamicObject, WatchEvent},
        core::{ApiResource, GroupVersionKind},
    };
    let env = Env::start("acme-gateway", |_| {}).await;
    ensure_http_route_crd(&env.cluster).await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    );
    let routes: Api<DynamicObject> = Api::namespaced_with(env.cluster.client(), env.cluster.namespace(), &resource);
    // Every change from here on is watched for afterwards. A real API server answers 429 while
    // it first fills a new kind's cache.
    let since = eventually("the HTTPRoutes to be listed", WAIT, || async {
        routes.list_metadata(&ListParams::default().limit(1)).await.ok()?.metadata.resource_version
    })
    .await;
    env.acme_issuer("pebble", json!({"solvers": [{"http01": {"gateway": "infra/public"}}]})).await;
    env.certificate("gw", &["gw.certpilot.test"], "pebble").await;
    env.ready("gw").await;
    let changes = changes_since(&routes, &since, "", Duration::from_secs(1)).await;
    let route = changes
        .iter()
        .find_map(|c| if let WatchEvent::Added(route) = c { Some(route) } else { None })
        .expect("an HTTPRoute was created for the challenge");
    let spec = &route.data["spec"];
    assert_eq!(spec["parentRefs"][0], json!({"name": "public", "namespace": "infra"}));
    assert_eq!(spec["hostnames"], json!(["gw.certpilot.test"]));
    assert_eq!(
        spec["rules"][0]["matches"][0]["path"],
        json!({"type": "PathPrefix", "value": "/.well-known/acme-challenge/"})
    );
    assert_eq!(spec["rules"][0]["backendRefs"][0]["name"], "certpilot-solver");
    assert!(host_routes_listed(&env).await.unwrap().is_empty(), "no Ingress beside the HTTPRoute");
    env.api::<Certificate>().delete("gw", &Default::default()).await.unwrap();
    eventually("the route to be removed with its Certificate", WAIT, || async {
        routes.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn each_issuer_has_a_bounded_number_of_orders_in_flight() {
    let mut env = Env::start("acme-concurrency", |_| {}).await;
    // Restart the operator allowing one order at a time per issuer.
    env.solver_args.extend(["--max-orders-per-issuer".to_string(), "1".to_string()]);
    env.restart_operator();
    env.acme_issuer("pebble", json!({})).await;
    for name in ["one", "two", "three"] {
        env.certificate(name, &[&format!("{name}.certpilot.test")], "pebble").await;
    }
    for name in ["one", "two", "three"] {
        env.ready(name).await;
    }
    // Every order ran alone: no two attempts' PlaceOrder…Download spans overlap.
    let attempts = env.api::<CertificateAttempt>().list(&ListParams::default()).await.unwrap().items;
    let mut spans: Vec<(jiff::Timestamp, jiff::Timestamp)> = attempts
        .iter()
        .map(|a| {
            let steps = &a.status.as_ref().unwrap().steps;
            let start = steps.iter().find(|s| s.name == "PlaceOrder").unwrap().started_at.clone().unwrap().0;
            let end = steps.iter().find(|s| s.name == "Download").unwrap().finished_at.clone().unwrap().0;
            (start, end)
        })
        .collect();
    spans.sort();
    assert_eq!(spans.len(), 3);
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "orders overlapped: {pair:?}");
    }
}

#[tokio::test]
async fn an_unreachable_ca_is_reported_on_the_issuer() {
    let env = Env::start("acme-unreachable", |_| {}).await;
    let closed = format!("https://127.0.0.1:{}/dir", free_port());
    env.acme_issuer("nowhere", json!({"server": closed})).await;
    let issuer = env.issuer_condition("nowhere", |r| r != "AccountRegistered").await;
    let ready = issuer.status.unwrap().conditions.remove(0);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "CAUnreachable"), "{ready:?}");
    assert!(ready.message.contains(&closed), "{}", ready.message);
}

#[tokio::test]
async fn the_preferred_chain_is_chosen_among_the_alternates() {
    let env = Env::start("acme-chain", |o| o.alternate_roots = 2).await;
    let alternate = env.pebble.root_subject(2).await;
    let preferred = alternate.trim_start_matches("CN=").to_string();
    env.acme_issuer("pebble", json!({"preferredChain": preferred})).await;
    env.acme_issuer("other", json!({"preferredChain": "Some Other Root"})).await;
    env.certificate("chain", &["chain.certpilot.test"], "pebble").await;
    env.certificate("fallback", &["fallback.certpilot.test"], "other").await;
    env.ready("chain").await;
    let data = env.api::<Secret>().get("chain-tls").await.unwrap().data.unwrap();
    let chain = pem_certificates(&data["tls.crt"].0).unwrap();
    let top = certpilot::pki::cert::info(chain.last().unwrap()).unwrap();
    assert!(top.issuer.contains(&preferred), "chain leads to {}, not {preferred}", top.issuer);
    // A preferred chain the CA does not offer: the default chain, and the step says so.
    let cert = env.ready("fallback").await;
    let attempt = env.api::<CertificateAttempt>().get(&cert.status.unwrap().last_attempt.unwrap().name).await.unwrap();
    let download = attempt.status.unwrap().steps.into_iter().find(|s| s.name == "Download").unwrap();
    assert!(download.message.contains("offers none leading to \"Some Other Root\""), "{}", download.message);
}

#[tokio::test]
async fn a_spec_change_cancels_the_attempt_under_way_and_cleans_up() {
    // Pebble's HTTP-01 requests go to a port that accepts and never answers: validation hangs.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            connections.push(stream);
        }
    });
    let env = Env::start("acme-cancel", |o| o.http_port = port).await;
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("moving", &["old.certpilot.test"], "pebble").await;
    let attempts: Api<CertificateAttempt> = env.api();
    wait_for(&attempts, "moving-1", "the first attempt to validate", WAIT, |a: &CertificateAttempt| {
        a.status.as_ref().is_some_and(|s| s.phase == AttemptPhase::Validating && !s.challenges.is_empty())
    })
    .await;
    env.certificate("moving", &["new.certpilot.test"], "pebble").await;
    let cancelled = wait_for(
        &attempts,
        "moving-1",
        "the first attempt to be cancelled and cleaned up",
        WAIT,
        |a: &CertificateAttempt| {
            a.status.as_ref().is_some_and(|s| {
                s.phase == AttemptPhase::Cancelled && s.steps.iter().any(|step| step.name == "Cleanup")
            })
        },
    )
    .await;
    let cancelled_status = cancelled.status.unwrap();
    assert!(cancelled_status.error_message.as_deref().unwrap().contains("superseded"));
    let next = wait_for(&attempts, "moving-2", "a reissue for the new name", WAIT, |_| true).await;
    assert_eq!(next.spec.dns_names, ["new.certpilot.test"]);
    assert_eq!(next.spec.type_, certpilot::api::attempt::AttemptType::Issue);
    // The cancelled attempt's sealed key is gone, and so is the route of the name no longer
    // asked for, once the new one is routed.
    assert!(cancelled_status.sealed_key.is_none(), "{cancelled_status:?}");
    eventually("only the new name to be routed", WAIT, || async {
        let routes = host_routes_listed(&env).await?;
        let hosts: Vec<&str> = routes.iter().map(|r| r.annotations()["certpilot.dev/host"].as_str()).collect();
        (hosts == ["new.certpilot.test"]).then_some(())
    })
    .await;
    held.abort();
}

#[tokio::test]
async fn foreign_account_secrets_and_invalid_account_names_are_refused_on_the_issuer() {
    let env = Env::start("acme-foreign-account", |_| {}).await;
    let mut mine = Secret::default();
    mine.metadata.name = Some("pebble-acme-account".into());
    mine.string_data = Some([("note".to_string(), "mine, not certpilot's".to_string())].into());
    let mine = env.api::<Secret>().create(&Default::default(), &mine).await.unwrap();
    env.acme_issuer("pebble", json!({})).await;
    let issuer = env.issuer_condition("pebble", |r| r == "SecretNotOwned").await;
    let ready = issuer.status.unwrap().conditions.remove(0);
    assert!(ready.message.contains("pebble-acme-account") && ready.message.contains("not created by certpilot"));
    let after = env.api::<Secret>().get("pebble-acme-account").await.unwrap();
    assert_eq!((after.resource_version(), &after.data), (mine.resource_version(), &mine.data), "left untouched");

    // An issuer whose name leaves no room for `-acme-account` in a Secret name says so.
    let long = "a".repeat(241);
    env.acme_issuer(&long, json!({})).await;
    let issuer = env.issuer_condition(&long, |r| r == "InvalidSpec").await;
    let ready = issuer.status.unwrap().conditions.remove(0);
    assert!(ready.message.contains("not a valid Secret name"), "{}", ready.message);
    assert_eq!(env.pebble.new_accounts(), 0, "nothing was registered that could not be saved");
}

#[tokio::test]
async fn a_ca_that_forgot_the_account_gets_it_registered_again() {
    let mut env = Env::start("acme-forgotten", |_| {}).await;
    env.acme_issuer("pebble", json!({})).await;
    let before = env.issuer_condition("pebble", |r| r == "AccountRegistered").await;
    let old_account = before.status.unwrap().account_uri.unwrap();
    env.certificate("before", &["before.certpilot.test"], "pebble").await;
    env.ready("before").await;
    env.pebble.restart();
    env.certificate("after", &["after.certpilot.test"], "pebble").await;
    env.ready("after").await;
    let attempt = env.api::<CertificateAttempt>().get("after-1").await.unwrap().status.unwrap();
    assert_eq!(attempt.phase, AttemptPhase::Succeeded);
    let registered = attempt.steps.iter().find(|s| s.name == "RegisterAccount").expect("a RegisterAccount step");
    assert!(registered.message.contains(&old_account), "{}", registered.message);
    let issuer = env.issuer_condition("pebble", |r| r == "AccountReregistered").await;
    let status = issuer.status.unwrap();
    assert_ne!(status.account_uri.as_deref(), Some(old_account.as_str()));
    assert!(status.conditions[0].message.contains("no longer knew"), "{}", status.conditions[0].message);
}

/// A port that accepts connections and never answers: Pebble's HTTP-01 validation hangs.
async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.push(stream);
        }
    });
    (port, held)
}

#[tokio::test]
async fn deleting_a_certificate_mid_order_cleans_up_and_frees_its_order_slot() {
    let (port, held) = black_hole().await;
    let mut env = Env::start("acme-delete", |o| o.http_port = port).await;
    env.solver_args.extend(["--max-orders-per-issuer".to_string(), "1".to_string()]);
    env.restart_operator();
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("doomed", &["doomed.certpilot.test"], "pebble").await;
    let attempts: Api<CertificateAttempt> = env.api();
    let validating = wait_for(&attempts, "doomed-1", "the attempt to validate", WAIT, |a: &CertificateAttempt| {
        a.status.as_ref().is_some_and(|s| s.phase == AttemptPhase::Validating)
    })
    .await;
    assert_eq!(host_routes(&env).await.len(), 1, "the host is routed while it validates");
    assert!(validating.status.unwrap().sealed_key.is_some(), "the key is sealed into the status while it validates");
    env.api::<Certificate>().delete("doomed", &Default::default()).await.unwrap();
    eventually("the attempt to be cleaned up and gone", WAIT, || async {
        attempts.get_opt("doomed-1").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("the host's route to go with its Certificate", WAIT, || async {
        host_routes_listed(&env).await?.is_empty().then_some(())
    })
    .await;
    // The issuer's only order slot is free again: the next order starts.
    env.certificate("next", &["next.certpilot.test"], "pebble").await;
    wait_for(&attempts, "next-1", "the next order to be placed", WAIT, |a: &CertificateAttempt| {
        a.status.as_ref().is_some_and(|s| s.order.is_some())
    })
    .await;
    held.abort();
}

#[tokio::test]
async fn deleting_a_certificate_mid_dns01_validation_removes_its_txt_records() {
    let bind = Bind::start();
    // The CA resolves through a server that never answers: validation stays under way.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_address = silent.local_addr().unwrap().to_string();
    let env = Env::start("acme-delete-dns01", |o| o.dns_server = Some(silent_address)).await;
    bind_issuer(&env, &bind).await;
    env.certificate("doomed", &["doomed.certpilot.test"], "bind").await;
    let attempts: Api<CertificateAttempt> = env.api();
    wait_for(&attempts, "doomed-1", "the attempt to validate", WAIT, |a: &CertificateAttempt| {
        a.status.as_ref().is_some_and(|s| s.phase == AttemptPhase::Validating)
    })
    .await;
    let record = "_acme-challenge.doomed.certpilot.test.";
    let published = certpilot::solver::dns01::txt_values(&bind.address, record).await.unwrap();
    assert_eq!(published.len(), 1, "the TXT record is published while the CA validates");
    env.api::<Certificate>().delete("doomed", &Default::default()).await.unwrap();
    eventually("the attempt to be cleaned up and gone", WAIT, || async {
        attempts.get_opt("doomed-1").await.ok()?.is_none().then_some(())
    })
    .await;
    let left = certpilot::solver::dns01::txt_values(&bind.address, record).await.unwrap();
    assert!(left.is_empty(), "no TXT record is left behind: {left:?}");
    drop(silent);
}

#[tokio::test]
async fn issuance_survives_the_operator_being_killed_at_random() {
    const CERTIFICATES: usize = 100;
    const KILLS: usize = 100;
    let mut env = Env::start("acme-chaos", |_| {}).await;
    env.acme_issuer("pebble", json!({})).await;
    for i in 0..CERTIFICATES {
        env.certificate(&format!("c{i}"), &[&format!("c{i}.certpilot.test")], "pebble").await;
    }
    let certificates: Api<Certificate> = env.api();
    let all_ready = || async {
        let list = certificates.list(&ListParams::default()).await.ok()?;
        (list.items.len() == CERTIFICATES
            && list.items.iter().all(|c| c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Ready)))
        .then_some(())
    };
    // SIGKILL at random moments: the points in the issuance where they land are what varies.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("kill schedule seed: {seed}");
    let mut state = seed | 1;
    let mut kills = 0;
    while kills < KILLS && all_ready().await.is_none() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        tokio::time::sleep(Duration::from_millis(20 + state % 160)).await;
        env.restart_operator();
        kills += 1;
    }
    eventually("every Certificate to be Ready", Duration::from_secs(300), all_ready).await;
    let attempts: Api<CertificateAttempt> = env.api();
    eventually("every attempt to have ended", WAIT, || async {
        let list = attempts.list(&ListParams::default()).await.ok()?;
        list.items.iter().all(|a| a.status.as_ref().is_some_and(|s| s.phase.is_terminal())).then_some(())
    })
    .await;
    let made = attempts.list(&ListParams::default()).await.unwrap().items.len();
    let orders = env.pebble.new_orders();
    eprintln!("{kills} kills: {made} attempts, {orders} orders for {CERTIFICATES} certificates");
    assert!(orders <= made, "{orders} orders for {made} attempts");
    assert!(kills > 0, "the operator was killed during the run");
    // Nothing is left behind: one route per host, no temporary keys.
    eventually("routes and keys to be cleaned up", WAIT, || async {
        let routes = host_routes_listed(&env).await?;
        let secrets = env.api::<Secret>().list(&ListParams::default()).await.ok()?;
        let keys = secrets.items.iter().filter(|s| s.name_any().ends_with("-key")).count();
        (routes.len() == CERTIFICATES && keys == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_order_per_certificate_through_faults_and_restarts() {
    const CERTIFICATES: usize = 100;
    let mut env = Env::start("acme-exactly-once", |_| {}).await;
    if let Some(server) = env.cluster.server() {
        server.faults().set_watch_lag(Duration::from_millis(300));
        server.faults().fail_writes_every(7, 409, "certpilot.dev");
    }
    env.acme_issuer("pebble", json!({})).await;
    for i in 0..CERTIFICATES {
        env.certificate(&format!("c{i}"), &[&format!("c{i}.certpilot.test")], "pebble").await;
    }
    let attempts: Api<CertificateAttempt> = env.api();
    for placed in [CERTIFICATES / 4, CERTIFICATES / 2] {
        eventually("orders to be under way", WAIT, || async {
            let list = attempts.list(&ListParams::default()).await.ok()?;
            (list.items.iter().filter(|a| a.status.as_ref().is_some_and(|s| s.order.is_some())).count() >= placed)
                .then_some(())
        })
        .await;
        env.restart_operator();
    }
    let certificates: Api<Certificate> = env.api();
    eventually("every Certificate to be Ready", Duration::from_secs(300), || async {
        let list = certificates.list(&ListParams::default()).await.ok()?;
        (list.items.len() == CERTIFICATES
            && list.items.iter().all(|c| c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Ready)))
        .then_some(())
    })
    .await;
    if let Some(server) = env.cluster.server() {
        server.faults().clear_write_failures();
    }
    let all = attempts.list(&ListParams::default()).await.unwrap().items;
    // One decision, one attempt: a Certificate gets another attempt only once the one before
    // failed, never beside it nor after a success. The only failure a restart may cause is a
    // validation the CA made while the operator (the only process answering HTTP-01) was down.
    for i in 0..CERTIFICATES {
        let name = format!("c{i}");
        let mut own: Vec<_> = all.iter().filter(|a| a.spec.certificate_name == name).collect();
        own.sort_by_key(|a| certpilot::policy::trust::attempt_index(&name, &a.name_any()));
        let outcome = |a: &CertificateAttempt| {
            let s = a.status.clone().unwrap_or_default();
            (a.name_any(), s.phase, s.error_code, s.error_message)
        };
        let (last, earlier) = own.split_last().expect("an attempt");
        assert_eq!(last.status.as_ref().map(|s| s.phase), Some(AttemptPhase::Succeeded), "{:?}", outcome(last));
        for failed in earlier {
            let (attempt, phase, code, message) = outcome(failed);
            let solver_away = matches!(code.as_deref(), Some("Connection" | "Unauthorized" | "IncorrectResponse"));
            assert!(phase == AttemptPhase::Failed && solver_away, "{attempt}: {phase:?} {code:?} {message:?}");
        }
    }
    assert_eq!(env.pebble.new_orders(), all.len(), "exactly one order per attempt");
}

/// Why an ACME server cannot be reached is told apart: an untrusted TLS certificate (a wrong
/// caBundle), a name that does not resolve, a refused connection. Each says what to check.
#[tokio::test]
async fn unreachable_acme_servers_say_why() {
    let env = Env::start("acme-unreachable", |_| {}).await;
    let other_ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "not the CA behind Pebble");
        params.self_signed(&key).unwrap().pem()
    };
    env.acme_issuer("untrusted", json!({"caBundle": other_ca})).await;
    env.acme_issuer("unresolved", json!({"server": "https://acme.certpilot.invalid/dir"})).await;
    env.acme_issuer("refused", json!({"server": "https://127.0.0.1:1/dir"})).await;
    let cases = [
        ("untrusted", "CATLSUntrusted", "set caBundle"),
        ("unresolved", "CANameUnresolved", "could not be resolved"),
        ("refused", "CAUnreachable", "refused the connection"),
    ];
    for (issuer, reason, says) in cases {
        let found = env.issuer_condition(issuer, |r| r == reason).await;
        let ready = found.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.message.contains(says), "{issuer}: {}", ready.message);
    }
}

/// An issuer named `persist` answering with dns-persist-01 on acme2certifier, which validates
/// it against BIND (on port 53 of an address of its own, as dnspython asks only there), once
/// the issuer's status lists the records to publish.
async fn persist_env(test: &str, records: &str) -> (Env, support::a2c::A2c, Bind, Issuer) {
    persist_env_with(test, records, false).await
}

/// `persist_env`; with `publish_itself`, the solver may publish the record through BIND.
async fn persist_env_with(test: &str, records: &str, publish_itself: bool) -> (Env, support::a2c::A2c, Bind, Issuer) {
    let bind = Bind::start_on_port_53(records);
    let a2c = support::a2c::A2c::start_with(support::a2c::A2cOptions {
        validate: true,
        caa_identities: vec!["ca.certpilot.test".into()],
        dns_servers: vec![bind.ip().into()],
        ..Default::default()
    });
    let env = Env::start(test, |_| {}).await;
    let mut solver = json!({"dnsPersist01": {"nameservers": [bind.address]}});
    if publish_itself {
        env.secret("tsig", "secret", &bind.tsig_secret).await;
        solver["dnsPersist01"]["rfc2136"] = json!({"nameserver": bind.address, "tsigKeyName": KEY_NAME, "tsigSecretRef": {"name": "tsig", "key": "secret"}});
    }
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "persist"},
        "spec": {"acme": {"server": a2c.directory, "caBundle": a2c.ca_pem, "email": "ops@example.com", "solvers": [solver]}}});
    env.apply::<Issuer>(doc).await;
    let issuer = wait_for(&env.api::<Issuer>(), "persist", "the records to publish", WAIT, |i: &Issuer| {
        i.status.as_ref().is_some_and(|s| !s.persist_records.is_empty())
    })
    .await;
    (env, a2c, bind, issuer)
}

/// The Secret holds a certificate from acme2certifier for `names`, matching its key.
fn assert_a2c_secret(secret: &Secret, names: &[&str]) {
    let data = secret.data.as_ref().unwrap();
    let key = PrivateKey::from_pem(std::str::from_utf8(&data["tls.key"].0).unwrap()).unwrap();
    let leaf = parse_chain(&data["tls.crt"].0).unwrap();
    assert_eq!(leaf.public_key_info, key.public_key_info());
    assert!(leaf.issuer.contains("acme2certifier"), "{}", leaf.issuer);
    let mut got = leaf.dns_names.clone();
    got.sort();
    assert_eq!(got, names);
}

/// Publishes TXT `value` at `name` (as the domain's owner would; certpilot never does).
async fn publish(bind: &Bind, name: &str, value: &str) {
    use certpilot::solver::dns01::{Provider, rfc2136::Rfc2136};
    let provider = Rfc2136::with_key(&bind.address, KEY_NAME, None, &bind.tsig_secret).unwrap();
    provider.add_txt(&format!("{name}.").parse().unwrap(), value).await.unwrap();
}

/// The zone's SOA serial: it moves with every change to the zone.
async fn soa_serial(bind: &Bind) -> u32 {
    use certpilot::solver::dns01::wire::{exchange, query};
    use hickory_proto::rr::{RData, RecordType};
    let answer = exchange(&bind.address, &query(&format!("{ZONE}.").parse().unwrap(), RecordType::SOA)).await.unwrap();
    answer.answers.iter().find_map(|r| if let RData::SOA(soa) = &r.data { Some(soa.serial) } else { None }).unwrap()
}

/// The statuses acme2certifier has for its dns-persist-01 challenges.
fn persist_challenge_states(a2c: &support::a2c::A2c) -> Vec<String> {
    a2c.query("select s.name from challenge c join status s on c.status_id = s.id where c.type = 'dns-persist-01'")
}

async fn failed_attempt(env: &Env, name: &str) -> certpilot::api::attempt::CertificateAttemptStatus {
    let cert = wait_for(&env.api::<Certificate>(), name, "a failed attempt", WAIT, |c: &Certificate| {
        c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Failed)
    })
    .await;
    let attempt = env.api::<CertificateAttempt>().get(&cert.status.unwrap().last_attempt.unwrap().name).await.unwrap();
    attempt.status.unwrap()
}

#[tokio::test]
async fn dns_persist01_issues_plain_and_wildcard_names_and_renews_without_writing_dns() {
    let (env, _a2c, bind, issuer) = persist_env("acme-persist", "").await;
    let status = issuer.status.unwrap();
    let account = status.account_uri.clone().unwrap();
    assert_eq!(status.issuer_domain_names, ["ca.certpilot.test"]);
    let record = &status.persist_records[0];
    assert_eq!((record.name.as_str(), record.record_name.as_str()), ("*", "_validation-persist.<name>"));
    assert_eq!(record.value, format!("ca.certpilot.test; accounturi={account}"));
    assert_eq!(record.wildcard_value, format!("ca.certpilot.test; accounturi={account}; policy=wildcard"));
    // The owner publishes exactly what the status says.
    publish(&bind, "_validation-persist.plain.certpilot.test", &record.value).await;
    publish(&bind, "_validation-persist.wild.certpilot.test", &record.wildcard_value).await;

    env.certificate("plain", &["plain.certpilot.test"], "persist").await;
    env.certificate("wild", &["*.wild.certpilot.test", "wild.certpilot.test"], "persist").await;
    let attempt = ready_attempt(&env, "plain").await;
    assert_a2c_secret(&env.api::<Secret>().get("plain-tls").await.unwrap(), &["plain.certpilot.test"]);
    let challenge = &attempt.challenges[0];
    assert_eq!(challenge.type_, "dns-persist-01");
    assert_eq!(challenge.record_name.as_deref(), Some("_validation-persist.plain.certpilot.test"));
    assert_eq!(challenge.record_value.as_deref(), Some(record.value.as_str()));
    let attempt = ready_attempt(&env, "wild").await;
    assert_a2c_secret(
        &env.api::<Secret>().get("wild-tls").await.unwrap(),
        &["*.wild.certpilot.test", "wild.certpilot.test"],
    );
    assert!(attempt.challenges.iter().all(|c| c.type_ == "dns-persist-01"), "{attempt:#?}");
    let wildcard = attempt.challenges.iter().find(|c| c.dns_name == "*.wild.certpilot.test").unwrap();
    assert_eq!(wildcard.record_value.as_deref(), Some(record.wildcard_value.as_str()));

    // A renewal writes nothing to DNS: the zone's serial and the record stay as they were.
    let serial = soa_serial(&bind).await;
    let published = "_validation-persist.plain.certpilot.test.";
    let before = certpilot::solver::dns01::txt_values(&bind.address, published).await.unwrap();
    env.renew_now("plain", "persist").await;
    assert_eq!(soa_serial(&bind).await, serial, "the zone changed during the renewal");
    assert_eq!(certpilot::solver::dns01::txt_values(&bind.address, published).await.unwrap(), before);
}

#[tokio::test]
async fn dns_persist01_with_rfc2136_publishes_the_record_once_and_then_reuses_it() {
    let (env, _a2c, bind, issuer) = persist_env_with("acme-persist-publish", "", true).await;
    let record = issuer.status.unwrap().persist_records[0].clone();
    let published = "_validation-persist.self.certpilot.test.";
    assert!(certpilot::solver::dns01::txt_values(&bind.address, published).await.unwrap().is_empty());
    env.certificate("self", &["self.certpilot.test"], "persist").await;
    let attempt = ready_attempt(&env, "self").await;
    let check = attempt.challenges[0].dns_check.clone().unwrap_or_default();
    assert!(check.contains("certpilot published"), "{attempt:#?}");
    let values = certpilot::solver::dns01::txt_values(&bind.address, published).await.unwrap();
    assert_eq!(values.as_slice(), std::slice::from_ref(&record.value), "exactly the record the issuer's status names");
    // The next issuance finds it and writes nothing.
    let serial = soa_serial(&bind).await;
    env.renew_now("self", "again").await;
    assert_eq!(soa_serial(&bind).await, serial, "the renewal wrote to the zone");
}

#[tokio::test]
async fn dns_persist01_warns_before_the_record_lapses() {
    let (env, _a2c, bind, issuer) = persist_env("acme-persist-lapsing", "").await;
    let record = issuer.status.unwrap().persist_records[0].clone();
    let lapses = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let value = format!("{}; persistUntil={}", record.value, lapses.as_second());
    publish(&bind, "_validation-persist.lapsing.certpilot.test", &value).await;
    env.certificate("lapsing", &["lapsing.certpilot.test"], "persist").await;
    let attempt = ready_attempt(&env, "lapsing").await;
    let check = attempt.challenges[0].dns_check.clone().unwrap_or_default();
    assert!(check.contains("lapses at") && check.contains("publish a new one"), "{attempt:#?}");
    let events: Api<k8s_openapi::api::events::v1::Event> = env.api();
    let warning = eventually("a PersistRecordExpiring Event on the Certificate", WAIT, || async {
        let listed = events.list(&ListParams::default()).await.ok()?;
        listed.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("PersistRecordExpiring")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("lapsing")
        })
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(warning.note.unwrap_or_default().contains("_validation-persist.lapsing.certpilot.test"));
}

#[tokio::test]
async fn dns_persist01_refuses_a_wrong_record_before_asking_the_ca() {
    let other_account = "https://127.0.0.1:1/acme/acct/7";
    let records = format!("_validation-persist.other IN TXT \"ca.certpilot.test; accounturi={other_account}\"");
    let (env, a2c, bind, issuer) = persist_env("acme-persist-wrong", &records).await;
    let status = issuer.status.unwrap();
    let record = status.persist_records[0].clone();
    // For a wildcard, without policy=wildcard; and one that has expired.
    publish(&bind, "_validation-persist.nopolicy.certpilot.test", &record.value).await;
    publish(&bind, "_validation-persist.old.certpilot.test", &format!("{}; persistUntil=1700000000", record.value))
        .await;
    env.certificate("other", &["other.certpilot.test"], "persist").await;
    env.certificate("nopolicy", &["*.nopolicy.certpilot.test"], "persist").await;
    env.certificate("old", &["old.certpilot.test"], "persist").await;
    let cases = [
        ("other", format!("the record names account {other_account}, not certpilot's account"), &record.value),
        ("nopolicy", "lacks \"policy=wildcard\"".to_string(), &record.wildcard_value),
        ("old", "persistUntil passed at 2023-11-14T22:13:20Z".to_string(), &record.value),
    ];
    for (name, problem, publish) in cases {
        let attempt = failed_attempt(&env, name).await;
        assert_eq!(attempt.error_code.as_deref(), Some("DNSPersistRecord"), "{attempt:#?}");
        let message = attempt.error_message.unwrap();
        let record_name = format!("_validation-persist.{name}.certpilot.test");
        assert!(message.starts_with(&format!("{record_name}: ")), "{message}");
        assert!(message.contains(&problem), "{message}");
        assert!(message.ends_with(&format!("; publish TXT \"{publish}\"")), "{message}");
        let check = attempt.challenges[0].dns_check.clone().unwrap_or_default();
        assert!(check.contains(&problem), "{check}");
    }
    // The CA was never asked to validate: each dns-persist-01 challenge is still pending.
    let states = persist_challenge_states(&a2c);
    assert!(!states.is_empty() && states.iter().all(|s| s == "pending"), "{states:?}");
}

/// What the real `openssl` binary prints when run with `args` and `input` on its stdin.
fn openssl(args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs (apt-get install openssl)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// OpenSSL reads the Secret's certificate as one for exactly `names`, issued by Pebble's
/// intermediate, and its key as the certificate's.
fn assert_openssl_reads(secret: &Secret, names: &[&str]) {
    let data = secret.data.as_ref().unwrap();
    let (chain, key) = (&data["tls.crt"].0, &data["tls.key"].0);
    let issuer = openssl(&["x509", "-noout", "-issuer"], chain);
    assert!(issuer.contains("Pebble Intermediate CA"), "{issuer}");
    let extension = openssl(&["x509", "-noout", "-ext", "subjectAltName"], chain);
    let mut sans: Vec<&str> = extension.split([',', '\n']).filter_map(|s| s.trim().strip_prefix("DNS:")).collect();
    sans.sort();
    assert_eq!(sans, names, "{extension}");
    assert_eq!(openssl(&["x509", "-noout", "-pubkey"], chain), openssl(&["pkey", "-pubout"], key));
}

/// Pebble v2.10.1 refuses every request without a User-Agent: an issuance through it shows that
/// each of the ACME client's requests (directory, nonces, signed POSTs, downloads) carries one.
/// That the header names certpilot first, the client's own tests show (`issuance::acme::client`).
#[tokio::test]
async fn issues_with_http01_on_pebble_2_10_which_requires_a_user_agent() {
    let env = Env::start("acme-pebble-2-10", |o| o.release = Release::V2_10).await;
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("web", &["web.certpilot.test"], "pebble").await;
    let attempt = ready_attempt(&env, "web").await;
    assert_eq!(attempt.challenges[0].type_, "http-01");
    let secret = env.api::<Secret>().get("web-tls").await.unwrap();
    assert_acme_secret(&secret, &["web.certpilot.test"]);
    assert_openssl_reads(&secret, &["web.certpilot.test"]);
}

/// dns-persist-01 against Pebble v2.10.1, which validates it against its pebble-challtestsrv:
/// the issuer lists the CA's issuer domain name (read from the directory, with certpilot's
/// User-Agent), the owner publishes the records its status names, and both a plain and a
/// wildcard name are issued.
#[tokio::test]
async fn dns_persist01_issues_on_pebble_2_10() {
    let env = Env::start("acme-persist-pebble", |o| o.release = Release::V2_10).await;
    let dns = env.pebble.dns_address.clone().expect("Pebble's DNS");
    env.acme_issuer("persist", json!({"solvers": [{"dnsPersist01": {"nameservers": [dns]}}]})).await;
    let issuer = wait_for(&env.api::<Issuer>(), "persist", "a Ready issuer with records", WAIT, |i: &Issuer| {
        i.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") && !s.persist_records.is_empty()
        })
    })
    .await;
    let status = issuer.status.unwrap();
    let account = status.account_uri.clone().unwrap();
    assert_eq!(status.issuer_domain_names, ["pebble.letsencrypt.org"]);
    let record = &status.persist_records[0];
    assert_eq!(record.value, format!("pebble.letsencrypt.org; accounturi={account}"));
    assert_eq!(record.wildcard_value, format!("{}; policy=wildcard", record.value));
    env.pebble.set_txt("_validation-persist.plain.certpilot.test", &record.value).await;
    env.pebble.set_txt("_validation-persist.wild.certpilot.test", &record.wildcard_value).await;

    env.certificate("plain", &["plain.certpilot.test"], "persist").await;
    env.certificate("wild", &["*.wild.certpilot.test", "wild.certpilot.test"], "persist").await;
    let attempt = ready_attempt(&env, "plain").await;
    let challenge = &attempt.challenges[0];
    assert_eq!(challenge.type_, "dns-persist-01");
    assert_eq!(challenge.record_name.as_deref(), Some("_validation-persist.plain.certpilot.test"));
    assert_eq!(challenge.record_value.as_deref(), Some(record.value.as_str()));
    assert_openssl_reads(&env.api::<Secret>().get("plain-tls").await.unwrap(), &["plain.certpilot.test"]);
    let attempt = ready_attempt(&env, "wild").await;
    assert!(attempt.challenges.iter().all(|c| c.type_ == "dns-persist-01"), "{attempt:#?}");
    let names = ["*.wild.certpilot.test", "wild.certpilot.test"];
    assert_openssl_reads(&env.api::<Secret>().get("wild-tls").await.unwrap(), &names);
}

/// A Certificate of `issuer` with the fallback issuers `fallbacks`.
async fn certificate_with_fallbacks(env: &Env, name: &str, issuer: &str, fallbacks: &[&str]) {
    let fallbacks: Vec<Value> = fallbacks.iter().map(|f| json!({"name": f})).collect();
    let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
        "spec": {"secretName": format!("{name}-tls"), "dnsNames": [format!("{name}.certpilot.test")],
                 "issuerRef": {"name": issuer}, "fallbackIssuerRefs": fallbacks}});
    env.apply::<Certificate>(doc).await;
}

/// The attempts of Certificate `name`, oldest first.
async fn attempts_of(env: &Env, name: &str) -> Vec<CertificateAttempt> {
    let mut attempts = env.api::<CertificateAttempt>().list(&ListParams::default()).await.unwrap().items;
    attempts.retain(|a| a.spec.certificate_name == name);
    attempts.sort_by_key(|a| a.metadata.creation_timestamp.clone().map(|t| t.0));
    attempts
}

/// The issue's first test: the primary CA stopped, the Certificate is issued by the fallback
/// after exactly one failed attempt; the primary back, the next renewal goes to it. The backoff
/// is ten minutes, so the fallback's attempt is Ready within the wait only if it came at once.
#[tokio::test]
async fn a_ca_that_is_down_hands_over_to_the_fallback_and_the_next_renewal_goes_back() {
    let mut env = Env::start_with_args("acme-fallback", |_| {}, &["--retry-base", "10m", "--retry-max", "10m"]).await;
    let fallback = Pebble::start(env.pebble.same_solvers());
    env.acme_issuer("primary", json!({})).await;
    env.apply::<Issuer>(fallback.acme_issuer("fallback", json!({}))).await;
    env.issuer_condition("primary", |r| r == "AccountRegistered").await;
    env.issuer_condition("fallback", |r| r == "AccountRegistered").await;
    env.pebble.stop();

    certificate_with_fallbacks(&env, "web", "primary", &["fallback"]).await;
    let status = env.ready("web").await.status.unwrap();
    let issued_by = status.issued_by.expect("status.issuedBy");
    assert_eq!(issued_by.name, "fallback");
    let reason = issued_by.fallback_reason.expect("why the fallback issued it");
    assert!(reason.contains("Issuer/primary") && reason.contains("CAUnreachable"), "{reason}");
    let attempts = attempts_of(&env, "web").await;
    let outcome: Vec<(&str, AttemptPhase)> =
        attempts.iter().map(|a| (a.spec.issuer_ref.name.as_str(), a.status.as_ref().unwrap().phase)).collect();
    assert_eq!(outcome, [("primary", AttemptPhase::Failed), ("fallback", AttemptPhase::Succeeded)]);
    assert_eq!(attempts[0].status.as_ref().unwrap().error_code.as_deref(), Some("CAUnreachable"));
    assert_eq!(attempts[1].spec.fallback_reason.as_deref(), Some(reason.as_str()));
    assert_eq!(fallback.new_orders(), 1);
    assert_acme_secret(&env.api::<Secret>().get("web-tls").await.unwrap(), &["web.certpilot.test"]);

    env.pebble.start_again();
    let status = env.renew_now("web", "primary-is-back").await.status.unwrap();
    let issued_by = status.issued_by.expect("status.issuedBy");
    assert_eq!((issued_by.name.as_str(), issued_by.fallback_reason), ("primary", None));
    let renewal = attempts_of(&env, "web").await.pop().unwrap();
    assert_eq!((renewal.spec.issuer_ref.name.as_str(), renewal.spec.fallback_reason), ("primary", None));
    // The primary, restarted, forgot the account: its first order is refused, the second
    // follows the account's registration anew. The fallback is not asked again.
    assert_eq!((env.pebble.new_orders(), fallback.new_orders()), (2, 1));
}

/// The issue's second test: the CA cannot validate the name (Pebble checks HTTP-01 on a port
/// where nothing listens), a failure any CA would meet: the next attempt, after the backoff,
/// goes to the same issuer, and the fallback is never asked.
#[tokio::test]
async fn a_validation_failure_the_user_caused_keeps_the_issuer_and_never_asks_the_fallback() {
    let env = Env::start("acme-fallback-user", |o| o.http_port = free_port()).await;
    let fallback = Pebble::start(env.pebble.same_solvers());
    env.acme_issuer("primary", json!({})).await;
    env.apply::<Issuer>(fallback.acme_issuer("fallback", json!({}))).await;
    certificate_with_fallbacks(&env, "broken", "primary", &["fallback"]).await;
    let status = wait_for(&env.api::<Certificate>(), "broken", "two failed attempts", WAIT, |c: &Certificate| {
        c.status.as_ref().is_some_and(|s| s.attempts_count >= 2 && s.phase == CertificatePhase::Failed)
    })
    .await
    .status
    .unwrap();
    assert_eq!(status.issued_by, None);
    let attempts = attempts_of(&env, "broken").await;
    assert!(attempts.len() >= 2, "{attempts:#?}");
    for attempt in &attempts {
        assert_eq!(attempt.spec.issuer_ref.name, "primary", "{attempt:#?}");
        assert_eq!(attempt.spec.fallback_reason, None);
    }
    let failed = attempts.iter().filter_map(|a| a.status.as_ref()).filter(|s| s.phase == AttemptPhase::Failed);
    assert!(failed.clone().count() >= 2 && failed.clone().all(|s| s.error_code.as_deref() == Some("Connection")));
    assert_eq!(fallback.new_orders(), 0);
}

/// Asks for the revocation of Certificate `name` with annotation value `request`, and waits
/// for the attempt of type `last` that ends it (the Revoke attempt, or the Reissue after it)
/// to succeed.
async fn revoke(env: &Env, name: &str, request: &str, last: AttemptType) -> Certificate {
    revoke_until(env, name, request, last, AttemptPhase::Succeeded).await
}

/// `revoke`, until the attempt of type `last` ends in `phase`, the Certificate still Ready.
async fn revoke_until(env: &Env, name: &str, request: &str, last: AttemptType, phase: AttemptPhase) -> Certificate {
    let before = env.api::<Certificate>().get(name).await.unwrap();
    let previous = before.status.and_then(|s| s.last_attempt).map(|a| a.name);
    let patch = json!({"metadata": {"annotations": {"certpilot.dev/revoke": request}}});
    env.api::<Certificate>().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for(
        &env.api::<Certificate>(),
        name,
        &format!("the {last:?} attempt after a revocation"),
        WAIT,
        |c: &Certificate| {
            c.status.as_ref().is_some_and(|s| {
                s.phase == CertificatePhase::Ready
                    && s.last_attempt
                        .as_ref()
                        .is_some_and(|a| a.phase == phase && a.type_ == last && Some(&a.name) != previous.as_ref())
            })
        },
    )
    .await
}

/// The Revoke attempt of Certificate `name` that answered `request`.
async fn revoke_attempt(env: &Env, request: &str) -> CertificateAttempt {
    let attempts = env.api::<CertificateAttempt>().list(&ListParams::default()).await.unwrap().items;
    attempts
        .into_iter()
        .find(|a| a.spec.type_ == AttemptType::Revoke && a.spec.revoke_request.as_deref() == Some(request))
        .expect("a Revoke attempt for the request")
}

fn tls(secret: &Secret, key: &str) -> Vec<u8> {
    secret.data.as_ref().unwrap()[key].0.clone()
}

#[tokio::test]
async fn revocation_revokes_at_the_ca_with_the_reason_then_reissues_with_a_new_key() {
    let env = Env::start("acme-revoke", |_| {}).await;
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("web", &["web.certpilot.test"], "pebble").await;
    let serial = env.ready("web").await.status.unwrap().serial_number.unwrap();
    let before = env.api::<Secret>().get("web-tls").await.unwrap();
    assert_eq!(env.pebble.cert_status(&serial).await["Status"], "Valid");

    let request = "keyCompromise@2026-06-01T12:00:00Z";
    let reissued = revoke(&env, "web", request, AttemptType::Reissue).await.status.unwrap();
    let revoked = env.pebble.cert_status(&serial).await;
    assert_eq!(revoked["Status"], "Revoked", "{revoked}");
    assert_eq!(revoked["Reason"], 1, "keyCompromise: {revoked}");
    let attempt = revoke_attempt(&env, request).await;
    let status = attempt.status.unwrap();
    assert_eq!(status.phase, AttemptPhase::Succeeded);
    let record = status.revoked.unwrap();
    assert!(record.serial_number.eq_ignore_ascii_case(&serial) && record.reason == "keyCompromise");
    assert!(!record.already_revoked);
    let steps: Vec<&str> = status.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["Revoke"]);
    assert_ne!(reissued.serial_number.as_deref(), Some(serial.as_str()));
    let after = env.api::<Secret>().get("web-tls").await.unwrap();
    assert_acme_secret(&after, &["web.certpilot.test"]);
    assert_ne!(tls(&after, "tls.key"), tls(&before, "tls.key"), "the reissue has a new key");

    // --no-reissue: the new certificate is revoked and the Secret keeps it.
    let new_serial = reissued.serial_number.unwrap();
    let only = "superseded,no-reissue@2026-06-01T13:00:00Z";
    revoke(&env, "web", only, AttemptType::Revoke).await;
    let revoked = env.pebble.cert_status(&new_serial).await;
    assert_eq!((revoked["Status"].as_str(), revoked["Reason"].as_u64()), (Some("Revoked"), Some(4)), "{revoked}");
    let kept = env.api::<Secret>().get("web-tls").await.unwrap();
    assert_eq!(tls(&kept, "tls.crt"), tls(&after, "tls.crt"));

    // Revoking twice does nothing more, and says so.
    let again = "keyCompromise,no-reissue@2026-06-01T14:00:00Z";
    revoke(&env, "web", again, AttemptType::Revoke).await;
    let status = revoke_attempt(&env, again).await.status.unwrap();
    assert!(status.revoked.unwrap().already_revoked);
    assert!(status.steps[0].message.contains("already revoked"), "{:?}", status.steps);
    assert_eq!(env.pebble.cert_status(&new_serial).await["Reason"], 4, "the first reason stands");
}

#[tokio::test]
async fn revoking_a_certificate_the_ca_no_longer_knows_says_so() {
    let mut env = Env::start("acme-revoke-unknown", |_| {}).await;
    env.acme_issuer("pebble", json!({})).await;
    env.certificate("web", &["web.certpilot.test"], "pebble").await;
    let serial = env.ready("web").await.status.unwrap().serial_number.unwrap();
    // Pebble forgets every account and certificate.
    env.pebble.restart();
    let request = "keyCompromise@2026-06-01T12:00:00Z";
    revoke_until(&env, "web", request, AttemptType::Revoke, AttemptPhase::Failed).await;
    let status = revoke_attempt(&env, request).await.status.unwrap();
    assert_eq!(status.error_code.as_deref(), Some("CertificateUnknown"), "{status:?}");
    let message = status.error_message.unwrap();
    assert!(message.contains("does not know this certificate"), "{message}");
    let steps: Vec<&str> = status.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["Revoke", "RegisterAccount"], "the forgotten account was registered again first");
    // A failed revocation is answered: no reissue follows, the certificate stays.
    let cert = env.ready("web").await.status.unwrap();
    assert_eq!(cert.serial_number.as_deref(), Some(serial.as_str()));
}

/// Issue 22: a leader that dies while the CA validates costs no failed validation. Two
/// replicas with leader election behind a front that routes to ready ones (the solver
/// Service); Pebble takes up to 15 s before each validation. The leader is SIGKILLed once every
/// attempt has told the CA and while challenges are pending (taken out of the front first, so
/// that no request is in flight to it as it dies): the standby answers them, then takes over,
/// and every Certificate gets exactly one order.
#[tokio::test]
async fn a_leader_killed_mid_validation_costs_no_failed_validation() {
    const HTTP01: usize = 50;
    const TLS_ALPN01: usize = 10;
    let mut cluster = TestCluster::start("acme-ha").await.expect("cluster");
    install_certpilot_crds(&cluster).await;
    let replicas = [support::front::Replica::on_free_ports(), support::front::Replica::on_free_ports()];
    let front = support::front::Front::start(replicas.to_vec()).await;
    let (http_port, tls_port) = (front.http_port, front.tls_port);
    let pebble = Pebble::start(PebbleOptions {
        http_port,
        tls_port,
        validation_delay_below: 15,
        ..PebbleOptions::on_free_ports()
    });
    let mut operators: Vec<Option<Operator>> = replicas
        .iter()
        .map(|replica| {
            let mut args = replica.args();
            args.extend(
                ["--leader-elect", "--leader-lease-seconds", "3", "--max-orders-per-issuer", "100"].map(String::from),
            );
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Some(Operator::start_with(&mut cluster, &args))
        })
        .collect();
    let role = |i: usize| async move { http_get(replicas[i].probe, "/readyz").await };
    let leader = eventually("one leader and one ready standby", WAIT, || async {
        let roles = [role(0).await, role(1).await];
        let said = |i: usize, body: &str| roles[i] == (200, body.to_string());
        if said(0, "ok: leader") && said(1, "ok: standby") {
            Some(0)
        } else if said(0, "ok: standby") && said(1, "ok: leader") {
            Some(1)
        } else {
            None
        }
    })
    .await;
    let issuers: Api<Issuer> = Api::namespaced(cluster.client(), cluster.namespace());
    let params = PatchParams::apply("e2e-test").force();
    let solvers =
        json!({"solvers": [{"http01": {}}, {"tlsAlpn01": {}, "selector": {"dnsZones": ["alpn.certpilot.test"]}}]});
    issuers.patch("pebble", &params, &Patch::Apply(pebble.acme_issuer("pebble", solvers))).await.unwrap();
    let certificates: Api<Certificate> = Api::namespaced(cluster.client(), cluster.namespace());
    let names: Vec<(String, String)> = (0..HTTP01)
        .map(|i| (format!("h{i}"), format!("h{i}.certpilot.test")))
        .chain((0..TLS_ALPN01).map(|i| (format!("t{i}"), format!("t{i}.alpn.certpilot.test"))))
        .collect();
    for (name, dns_name) in &names {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name},
            "spec": {"secretName": format!("{name}-tls"), "dnsNames": [dns_name], "issuerRef": {"name": "pebble"}}});
        certificates.patch(name, &params, &Patch::Apply(doc)).await.unwrap();
    }
    // Every attempt has told the CA (its challenges' answers are in its status); how many of
    // each type the CA has yet to validate.
    let attempts: Api<CertificateAttempt> = Api::namespaced(cluster.client(), cluster.namespace());
    let pending = eventually("every attempt to have told the CA", Duration::from_secs(150), || async {
        let list = attempts.list(&ListParams::default()).await.ok()?;
        let told = |a: &CertificateAttempt| {
            a.status.as_ref().is_some_and(|s| {
                !matches!(
                    s.phase,
                    AttemptPhase::Pending | AttemptPhase::Keying | AttemptPhase::Ordering | AttemptPhase::Presenting
                )
            })
        };
        if list.items.len() < names.len() || !list.items.iter().all(told) {
            return None;
        }
        let waiting = |type_: &str| {
            list.items
                .iter()
                .filter(|a| a.status.as_ref().is_some_and(|s| s.phase == AttemptPhase::Validating))
                .flat_map(|a| a.status.as_ref().unwrap().challenges.iter())
                .filter(|r| r.type_ == type_ && r.status != "valid")
                .count()
        };
        Some((waiting("http-01"), waiting("tls-alpn-01")))
    })
    .await;
    eprintln!(
        "{} killing the leader with {} http-01 and {} tls-alpn-01 challenges pending",
        jiff::Timestamp::now(),
        pending.0,
        pending.1
    );
    assert!(pending.0 > 0 && pending.1 > 0, "the CA had validated nearly everything already: {pending:?}");
    // Out of the Service's endpoints first, with its connections done: the CA's requests in
    // flight to a process as it dies are lost whatever serves them; the issue is the
    // validations the CA makes afterwards.
    front.remove(leader).await;
    let before_kill = front.forwarded().len();
    operators[leader].take().unwrap().kill();
    let standby = 1 - leader;
    eventually("every Certificate to be Ready", Duration::from_secs(150), || async {
        let list = certificates.list(&ListParams::default()).await.ok()?;
        (list.items.len() == names.len()
            && list.items.iter().all(|c| c.status.as_ref().is_some_and(|s| s.phase == CertificatePhase::Ready)))
        .then_some(())
    })
    .await;
    assert_eq!(role(standby).await, (200, "ok: leader".to_string()), "the standby took over");
    let answered_by_standby = front.forwarded()[before_kill..].iter().filter(|i| **i == standby).count();
    assert!(answered_by_standby > 0, "the standby answered the validations the dead leader left");
    // Every validation succeeded: one attempt per Certificate, succeeded, every challenge
    // valid, and exactly one order each.
    let all = attempts.list(&ListParams::default()).await.unwrap().items;
    for (name, _) in &names {
        let own: Vec<_> = all.iter().filter(|a| &a.spec.certificate_name == name).collect();
        let outcomes: Vec<_> = own
            .iter()
            .map(|a| {
                let s = a.status.clone().unwrap_or_default();
                (a.name_any(), s.phase, s.error_code, s.error_message)
            })
            .collect();
        assert_eq!(own.len(), 1, "{name}: one attempt, not {outcomes:?}");
        let status = own[0].status.clone().unwrap_or_default();
        assert_eq!(status.phase, AttemptPhase::Succeeded, "{name}: {:?} {:?}", status.error_code, status.error_message);
        assert!(
            status.challenges.iter().all(|r| r.status == "valid" && r.error.is_none()),
            "{name}: {:?}",
            status.challenges
        );
    }
    assert_eq!(pebble.new_orders(), names.len(), "exactly one order per Certificate");
}
