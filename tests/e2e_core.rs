//! End to end, the issuance core's promises: only certpilot's own attempts run, one decision
//! makes one attempt whatever the faults, renewals never loop, and refusals surface. Runs
//! against the test API server or, with `CERTPILOT_TEST_KUBECONFIG`, a real cluster.

mod support;

use certpilot::api::{
    Certificate, CertificateAttempt, Issuer,
    attempt::{AttemptPhase, AttemptType},
};
use certpilot_test_apiserver::cluster::TestCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use std::time::Duration;
use support::*;

const WAIT: Duration = Duration::from_secs(120);

struct Env {
    cluster: TestCluster,
    operator: Option<Operator>,
}

impl Env {
    async fn start(test: &str, flags: &[&str]) -> Self {
        let mut cluster = TestCluster::start(test).await.expect("cluster");
        install_certpilot_crds(&cluster).await;
        let operator = Some(Operator::start_with(&mut cluster, flags));
        Self { cluster, operator }
    }
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.cluster.client(), self.cluster.namespace())
    }
    async fn apply<K>(&self, doc: Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let params = PatchParams::apply("e2e-test").force();
        // The faults injected for the operator hit the test's own writes too: retry conflicts.
        loop {
            match self.api::<K>().patch(&name, &params, &Patch::Apply(&doc)).await {
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                result => return result.expect("apply"),
            }
        }
    }
    async fn issuer(&self) {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Issuer", "metadata": {"name": "local"}, "spec": {"selfSigned": {}}});
        self.apply::<Issuer>(doc).await;
    }
    async fn certificate(&self, name: &str, spec: Value) -> Certificate {
        let doc = json!({"apiVersion": "certpilot.dev/v1alpha1", "kind": "Certificate", "metadata": {"name": name}, "spec": spec});
        self.apply(doc).await
    }
    /// Certificates `c0`…`c{count-1}`, each for `c{i}.example.com` into Secret `c{i}-tls`.
    async fn numbered_certificates(&self, count: usize) {
        for i in 0..count {
            self.certificate(&format!("c{i}"), spec(&format!("c{i}-tls"), &[&format!("c{i}.example.com")])).await;
        }
    }
    async fn ready(&self, name: &str) -> Certificate {
        wait_for(&self.api(), name, &format!("Certificate {name} to be Ready"), WAIT, is_ready).await
    }
    async fn attempt_phase(&self, name: &str, phase: AttemptPhase) -> CertificateAttempt {
        wait_for(&self.api(), name, &format!("attempt {name} to be {phase:?}"), WAIT, move |a: &CertificateAttempt| {
            a.status.as_ref().is_some_and(|s| s.phase == phase)
        })
        .await
    }
    fn restart(&mut self) {
        if let Some(operator) = self.operator.take() {
            operator.kill();
        }
        self.operator = Some(Operator::start(&mut self.cluster));
    }
}

fn is_ready(cert: &Certificate) -> bool {
    let status = cert.status.as_ref();
    let current = status.and_then(|s| s.observed_generation) == cert.metadata.generation;
    current && status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn spec(secret: &str, names: &[&str]) -> Value {
    json!({"secretName": secret, "dnsNames": names, "issuerRef": {"name": "local"}})
}

/// An attempt as someone other than certpilot would write it, owned by `owner` (if any).
fn forged(name: &str, owner: Option<&Certificate>, spec: Value) -> CertificateAttempt {
    let mut attempt: CertificateAttempt = serde_json::from_value(json!({
        "apiVersion": "certpilot.dev/v1alpha1", "kind": "CertificateAttempt",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    attempt.metadata.owner_references = owner.map(|c| vec![c.controller_owner_ref(&()).unwrap()]);
    attempt
}

fn attempt_spec(certificate: &str, secret: &str, names: &[&str], is_ca: bool) -> Value {
    json!({
        "certificateName": certificate, "type": "Issue", "secretName": secret, "dnsNames": names,
        "isCA": is_ca, "issuerRef": {"kind": "Issuer", "name": "local"},
        "privateKey": {"algorithm": "ECDSA"}, "keyAlgorithm": "ECDSA-256", "certificateGeneration": 1,
    })
}

#[tokio::test]
async fn forged_attempts_are_rejected_and_touch_nothing() {
    let env = Env::start("core-forged", &[]).await;
    env.issuer().await;
    env.certificate("victim", spec("victim-tls", &["victim.example.com"])).await;
    let victim = env.ready("victim").await;
    let before = env.api::<Secret>().get("victim-tls").await.unwrap();
    let attempts: Api<CertificateAttempt> = env.api();
    let create = PostParams::default();
    // Someone else's names, and a CA certificate, under the victim's ownership.
    let evil = forged("victim-7", Some(&victim), attempt_spec("victim", "victim-tls", &["evil.example.com"], false));
    attempts.create(&create, &evil).await.unwrap();
    let sub_ca = forged("victim-8", Some(&victim), attempt_spec("victim", "victim-tls", &["victim.example.com"], true));
    attempts.create(&create, &sub_ca).await.unwrap();
    // An attempt pre-created under the name the next Certificate's first attempt would take.
    let squatter = forged("late-1", None, attempt_spec("late", "late-tls", &["evil.example.com"], false));
    attempts.create(&create, &squatter).await.unwrap();

    let rejected = env.attempt_phase("victim-7", AttemptPhase::Rejected).await;
    let why = rejected.status.unwrap().error_message.unwrap();
    assert!(why.contains("spec.dnsNames") && why.contains("evil.example.com"), "{why}");
    let rejected = env.attempt_phase("victim-8", AttemptPhase::Rejected).await;
    assert!(rejected.status.unwrap().error_message.unwrap().contains("spec.isCA"));
    let rejected = env.attempt_phase("late-1", AttemptPhase::Rejected).await;
    assert!(rejected.status.unwrap().error_message.unwrap().contains("no controlling owner"));

    // The late Certificate gets its own certificate, under its own next attempt.
    env.certificate("late", spec("late-tls", &["late.example.com"])).await;
    let late = env.ready("late").await;
    let last = late.status.unwrap().last_attempt.unwrap();
    assert_ne!(last.name, "late-1");
    let late_secret = env.api::<Secret>().get("late-tls").await.unwrap();
    let leaf = certpilot::pki::parse_chain(&late_secret.data.unwrap()["tls.crt"].0).unwrap();
    assert_eq!(leaf.dns_names, ["late.example.com"]);

    // The victim's Secret is exactly as it was, and the victim stays Ready.
    let after = env.api::<Secret>().get("victim-tls").await.unwrap();
    assert_eq!(after.resource_version(), before.resource_version());
    assert_eq!(after.data, before.data);
    assert!(is_ready(&env.api::<Certificate>().get("victim").await.unwrap()));
    let squatter = attempts.get("late-1").await.unwrap();
    assert_eq!(squatter.status.unwrap().phase, AttemptPhase::Rejected, "the squatter never ran");
}

/// Two Certificates naming one Secret: the second is told which Certificate the Secret belongs
/// to (not that certpilot did not create it), and the Secret stays the first one's.
#[tokio::test]
async fn a_secret_another_certificate_holds_is_named_as_its() {
    let env = Env::start("core-shared-secret", &[]).await;
    env.issuer().await;
    env.certificate("first", spec("shared-tls", &["first.example.com"])).await;
    wait_for(&env.api(), "first", "the first Certificate to be Ready", WAIT, is_ready).await;
    let written = env.api::<Secret>().get("shared-tls").await.unwrap();
    env.certificate("second", spec("shared-tls", &["second.example.com"])).await;
    let blocked =
        wait_for(&env.api(), "second", "the second Certificate to refuse the Secret", WAIT, |c: &Certificate| {
            c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "SecretNotOwned"))
        })
        .await;
    let ready = blocked.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("belongs to Certificate first"), "{}", ready.message);
    assert!(ready.message.contains("another spec.secretName"), "says what to do: {}", ready.message);
    let after = env.api::<Secret>().get("shared-tls").await.unwrap();
    assert_eq!(after.resource_version(), written.resource_version(), "the first Certificate's Secret is untouched");
}

/// A Secret replaced by an Opaque one (adopted, with the same certificate) is not reported
/// Ready: whatever reads it expects a TLS Secret. The condition says what to do, and the
/// Opaque Secret is left as it is.
#[tokio::test]
async fn a_secret_recreated_with_another_type_is_not_ready() {
    let env = Env::start("core-opaque", &[]).await;
    env.issuer().await;
    env.certificate("app", spec("app-tls", &["app.example.com"])).await;
    wait_for(&env.api(), "app", "the Certificate to be Ready", WAIT, is_ready).await;
    let secrets = env.api::<Secret>();
    let original = secrets.get("app-tls").await.unwrap();
    secrets.delete("app-tls", &Default::default()).await.unwrap();
    let mut opaque: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-tls", "annotations": {"certpilot.dev/adopt": "true"}},
        "type": "Opaque",
    }))
    .unwrap();
    opaque.data = original.data.clone();
    let opaque = secrets.create(&PostParams::default(), &opaque).await.unwrap();
    let refused =
        wait_for(&env.api(), "app", "the Certificate to refuse the Opaque Secret", WAIT, |c: &Certificate| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False" && c.message.contains("delete the Secret"))
            })
        })
        .await;
    let ready = refused.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("kubernetes.io/tls"), "says what is wrong: {}", ready.message);
    let after = secrets.get("app-tls").await.unwrap();
    assert_eq!((after.type_.as_deref(), &after.data), (Some("Opaque"), &opaque.data), "nothing is lost");
}

#[tokio::test]
async fn a_secret_with_forged_labels_is_never_written() {
    let env = Env::start("core-forged-labels", &[]).await;
    env.issuer().await;
    let mut decoy: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-tls", "labels": {
            "app.kubernetes.io/managed-by": "certpilot", "certpilot.dev/certificate-name": "app"}},
        "type": "Opaque", "stringData": {"config": "precious"},
    }))
    .unwrap();
    decoy.metadata.namespace = Some(env.cluster.namespace().to_string());
    let decoy = env.api::<Secret>().create(&PostParams::default(), &decoy).await.unwrap();
    env.certificate("app", spec("app-tls", &["app.example.com"])).await;
    let blocked = wait_for(&env.api(), "app", "the Certificate to refuse the Secret", WAIT, |c: &Certificate| {
        c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "SecretNotOwned"))
    })
    .await;
    let ready = blocked.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("certpilot.dev/adopt"), "{}", ready.message);
    let after = env.api::<Secret>().get("app-tls").await.unwrap();
    assert_eq!(after.resource_version(), decoy.resource_version());
    assert_eq!(after.data, decoy.data);
}

#[tokio::test]
async fn secrets_the_api_server_refuses_fail_the_attempt_with_its_words() {
    let env = Env::start("core-refused", &[]).await;
    env.issuer().await;
    let long_value = "v".repeat(64);
    let cases = [
        ("long-label", json!({"labels": {"team": long_value}}), "metadata.labels"),
        ("bad-annotation", json!({"annotations": {"not a key!": "x"}}), "metadata.annotations"),
        ("huge-annotation", json!({"annotations": {"big": "x".repeat(300 * 1024)}}), "metadata.annotations"),
    ];
    for (name, template, _) in &cases {
        let mut spec = spec(&format!("{name}-tls"), &[&format!("{name}.example.com")]);
        spec["secretTemplate"] = template.clone();
        env.certificate(name, spec).await;
    }
    for (name, _, field) in cases {
        let cert = wait_for(&env.api(), name, &format!("{name} to fail"), WAIT, |c: &Certificate| {
            c.status.as_ref().is_some_and(|s| {
                s.last_attempt.as_ref().is_some_and(|a| a.phase == AttemptPhase::Failed)
                    && s.conditions.iter().any(|c| c.type_ == "Ready" && c.message.contains("refused"))
            })
        })
        .await;
        let ready = cert.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(
            ready.message.contains(&format!("the API server refused Secret {name}-tls"))
                && ready.message.contains(field),
            "{name}: {}",
            ready.message
        );
        let attempt = env.api::<CertificateAttempt>().get(&format!("{name}-1")).await.unwrap();
        assert_eq!(attempt.status.unwrap().error_code.as_deref(), Some("APIServerRefused"));
        assert!(env.api::<Secret>().get_opt(&format!("{name}-tls")).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn short_lifetimes_renew_no_more_often_than_the_floor() {
    let floor = jiff::SignedDuration::from_secs(12);
    let env = Env::start("core-floor", &["--min-renewal-interval", "12s"]).await;
    env.issuer().await;
    let spec = json!({"secretName": "hot-tls", "dnsNames": ["hot.example.com"], "issuerRef": {"name": "local"},
        "duration": "1m", "renewBeforePercentage": 99});
    env.certificate("hot", spec).await;
    // While held, the status says why.
    let held = wait_for(&env.api(), "hot", "the floor to hold the renewal", WAIT, |c: &Certificate| {
        c.status.as_ref().is_some_and(|s| s.renewal_held.is_some() && s.next_attempt_time.is_some())
    })
    .await;
    let why = held.status.unwrap().renewal_held.unwrap();
    assert!(why.contains("--min-renewal-interval") && why.contains("12s"), "{why}");
    // Three attempts, each started at least the floor after the previous one succeeded.
    wait_for(&env.api(), "hot-3", "a second renewal", WAIT, |a: &CertificateAttempt| {
        a.status.as_ref().is_some_and(|s| s.phase == AttemptPhase::Succeeded)
    })
    .await;
    let mut attempts = env.api::<CertificateAttempt>().list(&ListParams::default()).await.unwrap().items;
    attempts.sort_by_key(|a| certpilot::policy::trust::attempt_index("hot", &a.name_any()));
    let times: Vec<(jiff::Timestamp, Option<jiff::Timestamp>)> = attempts
        .iter()
        .map(|a| {
            let s = a.status.as_ref().unwrap();
            (s.started_at.as_ref().unwrap().0, s.finished_at.as_ref().map(|t| t.0))
        })
        .collect();
    for pair in times.windows(2) {
        let previous_success = pair[0].1.unwrap();
        assert!(pair[1].0 >= previous_success + floor, "an attempt started before the floor: {times:?}");
    }
    assert_eq!(attempts[1].spec.type_, AttemptType::Renew);
}

#[tokio::test]
async fn one_decision_makes_one_attempt_through_faults_and_restarts() {
    const COUNT: usize = 100;
    let mut env = Env::start("core-exactly-once", &[]).await;
    if let Some(server) = env.cluster.server() {
        server.faults().set_watch_lag(Duration::from_millis(300));
        server.faults().fail_writes_every(7, 409, "certpilot.dev");
    }
    env.issuer().await;
    env.numbered_certificates(COUNT).await;
    let attempts: Api<CertificateAttempt> = env.api();
    for restart_after in [COUNT / 4, COUNT / 2] {
        eventually("attempts to be under way", WAIT, || {
            let attempts = attempts.clone();
            async move { (attempts.list(&ListParams::default()).await.ok()?.items.len() >= restart_after).then_some(()) }
        })
        .await;
        env.restart();
    }
    let certificates: Api<Certificate> = env.api();
    eventually("every Certificate to be Ready", Duration::from_secs(300), || {
        let certificates = certificates.clone();
        async move {
            let list = certificates.list(&ListParams::default()).await.ok()?;
            (list.items.len() == COUNT && list.items.iter().all(is_ready)).then_some(())
        }
    })
    .await;
    eventually("every attempt to have ended", Duration::from_secs(120), || {
        let attempts = attempts.clone();
        async move {
            let list = attempts.list(&ListParams::default()).await.ok()?;
            list.items.iter().all(|a| a.status.as_ref().is_some_and(|s| s.phase.is_terminal())).then_some(())
        }
    })
    .await;
    if let Some(server) = env.cluster.server() {
        server.faults().clear_write_failures();
        server.faults().set_watch_lag(Duration::ZERO);
    }
    let all = attempts.list(&ListParams::default()).await.unwrap().items;
    let issued: Vec<_> = all.iter().filter(|a| a.spec.type_ == AttemptType::Issue).collect();
    assert_eq!(
        all.len(),
        COUNT,
        "one attempt per Certificate: {:?}",
        all.iter().map(|a| a.name_any()).collect::<Vec<_>>()
    );
    assert_eq!(issued.len(), COUNT);
    let unfinished: Vec<_> = all
        .iter()
        .filter(|a| a.status.as_ref().is_none_or(|s| s.phase != AttemptPhase::Succeeded))
        .map(|a| (a.name_any(), a.status.clone()))
        .collect();
    assert!(unfinished.is_empty(), "attempts that did not succeed: {unfinished:#?}");
}

/// Two operators acting at once (a leader that lost its Lease and its successor, for a moment),
/// each deciding from its own lagging cache: the attempt's name is the fence, so every
/// Certificate gets exactly one attempt, `<certificate>-1`, whichever operator created it.
#[tokio::test]
async fn two_operators_deciding_at_once_make_one_attempt() {
    const COUNT: usize = 40;
    let mut env = Env::start("core-two-operators", &[]).await;
    if let Some(server) = env.cluster.server() {
        server.faults().set_watch_lag(Duration::from_millis(300));
    }
    let _second = Operator::start(&mut env.cluster);
    env.issuer().await;
    env.numbered_certificates(COUNT).await;
    for i in 0..COUNT {
        env.ready(&format!("c{i}")).await;
    }
    let attempts: Api<CertificateAttempt> = env.api();
    let mut names: Vec<String> =
        attempts.list(&ListParams::default()).await.unwrap().items.iter().map(|a| a.name_any()).collect();
    names.sort();
    let mut expected: Vec<String> = (0..COUNT).map(|i| format!("c{i}-1")).collect();
    expected.sort();
    assert_eq!(names, expected, "one attempt per Certificate");
    let certificates: Api<Certificate> = env.api();
    for i in 0..COUNT {
        let status = certificates.get(&format!("c{i}")).await.unwrap().status.unwrap();
        assert_eq!(status.attempt_index, Some(1), "Certificate c{i}");
    }
}

/// certpilot's Secrets and its attempts are watched separately, and one watch may be far behind
/// the other: a succeeded attempt beside a Secret not seen yet must not start a second attempt.
#[tokio::test]
async fn a_secret_watch_behind_the_attempt_watch_makes_no_second_attempt() {
    const COUNT: usize = 20;
    let env = Env::start("core-secret-lag", &[]).await;
    if let Some(server) = env.cluster.server() {
        server.faults().set_watch_lag_for("secrets", Duration::from_secs(3));
    }
    env.issuer().await;
    env.numbered_certificates(COUNT).await;
    for i in 0..COUNT {
        env.ready(&format!("c{i}")).await;
    }
    let attempts: Api<CertificateAttempt> = env.api();
    let all = attempts.list(&ListParams::default()).await.unwrap().items;
    let names: Vec<_> = all.iter().map(|a| a.name_any()).collect();
    assert_eq!(all.len(), COUNT, "one attempt per Certificate: {names:?}");
    let secrets: Api<Secret> = env.api();
    for i in 0..COUNT {
        let secret = secrets.get(&format!("c{i}-tls")).await.unwrap();
        let written_by = secret.annotations().get("certpilot.dev/attempt").cloned();
        assert_eq!(written_by.as_deref(), Some(format!("c{i}-1").as_str()), "Secret c{i}-tls");
    }
}

/// The controllers start on stores that fill at different times: a Certificate's reconcile may
/// wait for the attempts' store while the attempt controller waits for it too. Both must go on.
#[tokio::test]
async fn controllers_start_when_one_watch_fills_late() {
    let mut cluster = TestCluster::start("core-late-store").await.expect("cluster");
    install_certpilot_crds(&cluster).await;
    if let Some(server) = cluster.server() {
        // The first lists of attempts fail: that store fills a retry later than the others.
        server.faults().fail_requests(0, 3, 500, "certificateattempts");
    }
    let env = Env { operator: Some(Operator::start(&mut cluster)), cluster };
    env.issuer().await;
    env.certificate("late", spec("late-tls", &["late.example.com"])).await;
    env.ready("late").await;
    let attempt: CertificateAttempt = env.api().get("late-1").await.unwrap();
    assert_eq!(attempt.status.map(|s| s.phase), Some(AttemptPhase::Succeeded));
}

/// A first issuance goes from issuing to Ready, however late the attempts' watch is behind the
/// Secrets': a Secret written by the attempt under way is not reported as a Ready certificate
/// being renewed while that attempt's end is still on its way.
#[tokio::test]
async fn a_first_issuance_is_never_reported_as_a_renewal() {
    use certpilot::api::certificate::CertificatePhase;
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    const COUNT: usize = 10;
    let env = Env::start("core-no-renewing", &[]).await;
    if let Some(server) = env.cluster.server() {
        server.faults().set_watch_lag_for("certificateattempts", Duration::from_secs(2));
    }
    env.issuer().await;
    let certificates: Api<Certificate> = env.api();
    let mut phases = watcher(certificates.clone(), watcher::Config::default()).applied_objects().boxed();
    env.numbered_certificates(COUNT).await;
    let mut ready = std::collections::BTreeSet::new();
    let mut seen = Vec::new();
    while ready.len() < COUNT {
        let cert = tokio::time::timeout(WAIT, phases.next()).await.expect("a change in time").unwrap().unwrap();
        let phase = cert.status.as_ref().map(|s| s.phase);
        seen.push((cert.name_any(), phase));
        if is_ready(&cert) {
            ready.insert(cert.name_any());
        }
    }
    let renewing: Vec<_> = seen.iter().filter(|(_, p)| *p == Some(CertificatePhase::Renewing)).collect();
    assert!(renewing.is_empty(), "first issuances reported as renewals: {renewing:?} (all: {seen:?})");
}

/// Two Certificates applied at once that name the same Secret: exactly one of them gets it
/// and is Ready; the other is told, by name, whose Secret it is, and never writes it. Twenty
/// pairs at once, behind a lagging watch on the test server.
#[tokio::test]
async fn of_two_certificates_naming_one_secret_exactly_one_gets_it() {
    const PAIRS: usize = 20;
    let env = Env::start("core-shared-secret", &[]).await;
    if let Some(server) = env.cluster.server() {
        server.faults().set_watch_lag(Duration::from_millis(300));
    }
    env.issuer().await;
    let pair = |i: usize| (format!("a{i}"), format!("b{i}"), format!("shared{i}-tls"));
    for i in 0..PAIRS {
        let (a, b, secret) = pair(i);
        let names = [format!("{a}.example.com")];
        let other = [format!("{b}.example.com")];
        let a_spec = spec(&secret, &[names[0].as_str()]);
        let b_spec = spec(&secret, &[other[0].as_str()]);
        futures::join!(env.certificate(&a, a_spec), env.certificate(&b, b_spec));
    }
    let certificates: Api<Certificate> = env.api();
    let ready_reason = |c: &Certificate| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|r| (r.reason.clone(), r.message.clone()))
    };
    for i in 0..PAIRS {
        let (a, b, secret) = pair(i);
        let (winner, loser) = eventually(&format!("one of {a} and {b} to hold {secret}"), WAIT, || async {
            let a = certificates.get(&a).await.ok()?;
            let b = certificates.get(&b).await.ok()?;
            let settled = |winner: &Certificate, loser: &Certificate| {
                let (reason, message) = ready_reason(loser)?;
                let told =
                    reason == "SecretNotOwned" && message.contains(&format!("Certificate {}", winner.name_any()));
                (is_ready(winner) && told).then(|| (winner.clone(), loser.clone()))
            };
            settled(&a, &b).or_else(|| settled(&b, &a))
        })
        .await;
        assert!(!is_ready(&loser), "{}", loser.name_any());
        let stored = env.api::<Secret>().get(&secret).await.unwrap();
        assert!(certpilot::secret::written_for(&stored.metadata, &winner.name_any()), "{secret} is the winner's");
        let serial = stored.annotations().get("certpilot.dev/serial-number").cloned();
        assert_eq!(
            serial,
            winner.status.as_ref().and_then(|s| s.serial_number.clone()),
            "{secret} holds the winner's certificate"
        );
        let lost: Vec<_> = env
            .api::<CertificateAttempt>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|a| a.spec.certificate_name == loser.name_any())
            .filter(|a| a.status.as_ref().is_some_and(|s| s.phase == AttemptPhase::Succeeded))
            .map(|a| a.name_any())
            .collect();
        assert!(lost.is_empty(), "{} never stored a certificate: {lost:?}", loser.name_any());
    }
}

/// A Secret deleted right after issuance is repaired at once, whatever the floor; deleted again
/// at once, it waits for the floor, and the Certificate says so and until when.
#[tokio::test]
async fn a_first_repair_is_immediate_and_a_second_waits_for_the_floor() {
    let env = Env::start("core-repair", &["--min-renewal-interval", "5m"]).await;
    env.issuer().await;
    env.certificate("fix", spec("fix-tls", &["fix.example.com"])).await;
    let issued = env.ready("fix").await.status.unwrap();
    let secrets: Api<Secret> = env.api();
    secrets.delete("fix-tls", &Default::default()).await.unwrap();
    // Back within seconds, not after the 5-minute floor: the first repair is not held back.
    let back = Duration::from_secs(10);
    let repaired = wait_for(&env.api(), "fix", "the first repair", back, |c: &Certificate| {
        is_ready(c) && c.status.as_ref().unwrap().serial_number != issued.serial_number
    })
    .await;
    let status = repaired.status.unwrap();
    let last = status.last_attempt.unwrap();
    assert_eq!((last.name.as_str(), last.type_), ("fix-2", AttemptType::Repair));
    let secret = secrets.get("fix-tls").await.unwrap();
    let names = certpilot::pki::cert::parse_chain(&secret.data.unwrap()["tls.crt"].0).unwrap().dns_names;
    assert_eq!(names, ["fix.example.com"], "the same names");
    secrets.delete("fix-tls", &Default::default()).await.unwrap();
    let held = wait_for(&env.api(), "fix", "the second repair to be held", WAIT, |c: &Certificate| {
        c.status.as_ref().is_some_and(|s| s.renewal_held.is_some() && s.next_attempt_time.is_some())
    })
    .await;
    let status = held.status.unwrap();
    let why = status.renewal_held.unwrap();
    let at = status.next_attempt_time.unwrap().0.to_string();
    assert!(why.contains("was deleted") && why.contains("--min-renewal-interval") && why.contains(&at), "{why}");
    let repairs = env.api::<CertificateAttempt>().list(&ListParams::default()).await.unwrap().items;
    let repairs: Vec<_> =
        repairs.iter().filter(|a| a.spec.type_ == AttemptType::Repair).map(|a| a.name_any()).collect();
    assert!(repairs.len() <= 2, "one more repair at most: {repairs:?}");
}
