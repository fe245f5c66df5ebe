//! The HTTP-01 routes (`solver::http01`): one per host, made by the first attempt that needs it
//! and kept while a Certificate names the host with an http01 solver, so that renewals write
//! no route and never wait for an ingress controller to pick a new one up (they read it, and
//! put it back if it was deleted or relabelled by hand). A sweep removes the
//! routes no Certificate needs any more (and those an older certpilot made per attempt, once
//! their attempt is over): at start-up, soon after a Certificate is deleted or an attempt that
//! routed ends, and hourly.

use super::{cache::Feeds, context::Context};
use crate::{
    api::{Certificate, CertificateAttempt, IssuerRef, IssuerSpec},
    error::Result,
    secret::label_value,
    solver::{
        self, ChallengeKind,
        http01::{self, Listed, RouteKind, RouteTarget},
    },
};
use futures::StreamExt;
use kube::ResourceExt;
use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};
use tokio::sync::{Notify, OnceCell, RwLock};

/// How long a sweep waits after what asked for it, so that a burst (a namespace deleted, a
/// renewal wave ending) is one sweep.
const SWEEP_DELAY: Duration = Duration::from_secs(2);
/// How often routes are swept when nothing asks (a Certificate that stopped naming a host).
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// A route, by kind and name.
type RouteKey = (RouteKind, String);

/// The routes certpilot has in place, and where each leads.
pub struct Routes {
    pub target: RouteTarget,
    /// Host routes in place and the digest of where each leads; listed once, then kept.
    known: OnceCell<Mutex<HashMap<RouteKey, String>>>,
    /// Routes an older certpilot made per attempt, still in place.
    older: Mutex<Vec<Listed>>,
    /// Read-held while a route is looked up and written, write-held by a sweep: a sweep never
    /// removes a route an attempt has just counted on.
    gate: RwLock<()>,
    sweep_wanted: Notify,
}

impl Routes {
    pub fn new(target: RouteTarget) -> Self {
        Self {
            target,
            known: OnceCell::new(),
            older: Mutex::default(),
            gate: RwLock::new(()),
            sweep_wanted: Notify::new(),
        }
    }

    /// Puts `host`'s route in place for `solver`, unless it is there already, leading where
    /// the solver says. A route certpilot made before is looked at (one read) rather than
    /// written again: it may have been deleted or relabelled by hand since, and the CA would
    /// then meet a failed validation, which counts against the account's limits.
    pub async fn ensure(&self, host: &str, solver: &crate::api::issuer::Http01Solver) -> Result<()> {
        let _gate = self.gate.read().await;
        let known = self.known().await?;
        let route = http01::host_route(&self.target, host, solver);
        let key = (route.kind, route.name.clone());
        if known.lock().expect("routes lock").get(&key) == Some(&route.config) {
            if http01::in_place(&self.target, &route).await? {
                return Ok(());
            }
            tracing::info!(host, route = %route.name, "putting back the HTTP-01 route, deleted or relabelled since it was made");
        }
        http01::apply(&self.target, &route).await?;
        known.lock().expect("routes lock").insert(key, route.config);
        Ok(())
    }

    /// Asks for a sweep soon (an attempt that routed ended).
    pub fn sweep_soon(&self) {
        self.sweep_wanted.notify_one();
    }

    /// Removes the routes an older certpilot made for the attempt `namespace/name`.
    pub async fn remove_older(&self, namespace: &str, name: &str) -> Result<()> {
        let theirs: Vec<Listed> = {
            let older = self.older.lock().expect("routes lock");
            older.iter().filter(|route| made_for(route, namespace, name)).cloned().collect()
        };
        for route in &theirs {
            http01::delete(&self.target, route.kind, &route.name).await?;
        }
        self.older.lock().expect("routes lock").retain(|route| !theirs.contains(route));
        Ok(())
    }

    /// The routes in place, listed the first time they are needed.
    async fn known(&self) -> Result<&Mutex<HashMap<RouteKey, String>>> {
        self.known
            .get_or_try_init(|| async {
                let listed = http01::list(&self.target).await?;
                let (hosts, older): (Vec<Listed>, Vec<Listed>) =
                    listed.into_iter().partition(|route| route.config().is_some());
                *self.older.lock().expect("routes lock") =
                    older.into_iter().filter(|r| r.attempt().is_some()).collect();
                let known =
                    hosts.into_iter().map(|r| ((r.kind, r.name.clone()), r.config().unwrap_or_default().into()));
                Ok(Mutex::new(known.collect()))
            })
            .await
    }

    /// Removes every route nothing needs: host routes no Certificate or attempt under way
    /// needs, and older per-attempt routes whose attempt is over.
    async fn sweep(&self, ctx: &Context) -> Result<()> {
        let _gate = self.gate.write().await;
        let known = self.known().await?;
        let in_place: Vec<RouteKey> = known.lock().expect("routes lock").keys().cloned().collect();
        let older = self.older.lock().expect("routes lock").clone();
        if in_place.is_empty() && older.is_empty() {
            return Ok(());
        }
        let working = ctx.caches.working_attempts.state();
        let needed = needed_routes(
            ctx.caches.certificates.state().iter().map(AsRef::as_ref),
            |issuer, namespace| ctx.caches.issuer(issuer, namespace).map(|(spec, _)| spec),
            working.iter().map(AsRef::as_ref),
        );
        for key in in_place.into_iter().filter(|key| !needed.contains(key)) {
            tracing::info!(kind = ?key.0, route = %key.1, "removing an HTTP-01 route no Certificate needs any more");
            http01::delete(&self.target, key.0, &key.1).await?;
            known.lock().expect("routes lock").remove(&key);
        }
        let under_way =
            |route: &Listed| working.iter().any(|a| made_for(route, &a.namespace().unwrap_or_default(), &a.name_any()));
        for route in older.iter().filter(|route| !under_way(route)) {
            http01::delete(&self.target, route.kind, &route.name).await?;
            self.older.lock().expect("routes lock").retain(|r| r != route);
        }
        Ok(())
    }
}

/// Whether an older certpilot made `route` for the attempt `namespace/name` (the oldest routes
/// name no namespace: they are taken to be).
fn made_for(route: &Listed, namespace: &str, name: &str) -> bool {
    route.attempt().is_some_and(|(their_namespace, attempt)| {
        attempt == label_value(name) && their_namespace.is_none_or(|ns| ns == label_value(namespace))
    })
}

/// The host routes needed: each host a Certificate names whose issuer (or fallback) solves it
/// with http01, of the kind that solver asks for; and both kinds for each name of an attempt
/// under way (it may be routing now, whatever the issuers say since).
pub fn needed_routes<'a>(
    certificates: impl Iterator<Item = &'a Certificate>,
    issuer: impl Fn(&IssuerRef, &str) -> Option<IssuerSpec>,
    working: impl Iterator<Item = &'a CertificateAttempt>,
) -> HashSet<RouteKey> {
    let mut needed = HashSet::new();
    for certificate in certificates {
        let namespace = certificate.namespace().unwrap_or_default();
        for issuer_ref in certificate.spec.issuers() {
            let Some(acme) = issuer(&issuer_ref, &namespace).and_then(|spec| spec.acme) else { continue };
            for name in certificate.spec.covered_dns_names() {
                if let Ok((solver, ChallengeKind::Http01)) = solver::select(&acme.solvers, &name) {
                    let http = solver.http01.clone().unwrap_or_default();
                    needed.insert((http01::route_kind(&http), http01::route_name(&name)));
                }
            }
        }
    }
    for attempt in working {
        for name in &attempt.spec.dns_names {
            let host = name.trim_start_matches("*.");
            for kind in [RouteKind::Ingress, RouteKind::HttpRoute] {
                needed.insert((kind, http01::route_name(host)));
            }
        }
    }
    needed
}

/// Sweeps at start-up, and then whenever asked, a Certificate is deleted, or an hour passed.
pub fn run(ctx: std::sync::Arc<Context>, feeds: &Feeds) -> impl std::future::Future<Output = ()> + use<> {
    let mut deletions = feeds.certificates.deletions();
    async move {
        ctx.caches.wait_until_ready().await;
        loop {
            if let Err(error) = ctx.routes.sweep(&ctx).await {
                tracing::warn!(%error, "could not sweep the HTTP-01 routes; trying again later");
            }
            tokio::select! {
                _ = deletions.next() => {}
                () = ctx.routes.sweep_wanted.notified() => {}
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
            }
            tokio::time::sleep(SWEEP_DELAY).await;
            // What else arrived meanwhile is covered by this sweep.
            while futures::FutureExt::now_or_never(deletions.next()).flatten().is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        CertificateAttemptSpec, IssuerKind,
        issuer::{AcmeIssuer, AcmeSolver, Dns01Solver, Http01Solver, SolverSelector},
    };

    fn certificate(namespace: &str, names: &[&str], issuer: &str) -> Certificate {
        let mut certificate: Certificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "certpilot.dev/v1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"secretName": "web-tls", "dnsNames": names, "issuerRef": {"name": issuer}},
        }))
        .unwrap();
        certificate.spec.issuer_ref.kind = IssuerKind::Issuer;
        certificate
    }

    fn acme(solvers: Vec<AcmeSolver>) -> IssuerSpec {
        let acme = AcmeIssuer {
            solvers,
            ..serde_json::from_value(
                serde_json::json!({"server": "https://ca.test/dir", "privateKeySecretRef": {"name": "k"}}),
            )
            .unwrap()
        };
        IssuerSpec { acme: Some(acme), ..Default::default() }
    }

    fn http(gateway: Option<&str>, zones: Option<&[&str]>) -> AcmeSolver {
        let selector = zones.map(|z| SolverSelector {
            dns_zones: Some(z.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        });
        AcmeSolver {
            http01: Some(Http01Solver { gateway: gateway.map(str::to_string), ..Default::default() }),
            selector,
            ..Default::default()
        }
    }

    fn dns(zones: &[&str]) -> AcmeSolver {
        AcmeSolver {
            dns01: Some(
                serde_json::from_value(serde_json::json!({"webhook": {"url": "https://dns.test"}}))
                    .unwrap_or_else(|_| Dns01Solver::default()),
            ),
            selector: Some(SolverSelector {
                dns_zones: Some(zones.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_route_is_needed_for_each_host_an_http01_solver_answers_for_and_of_its_kind() {
        let issuers = |issuer: &IssuerRef, namespace: &str| match (issuer.name.as_str(), namespace) {
            ("le", "shop") => Some(acme(vec![http(None, None), dns(&["internal.example"])])),
            ("gw", "shop") => Some(acme(vec![http(Some("edge/public"), None)])),
            ("local", _) => Some(IssuerSpec::default()),
            _ => None,
        };
        let certificates = [
            certificate("shop", &["a.example.com", "db.internal.example"], "le"),
            certificate("shop", &["b.example.com"], "gw"),
            certificate("shop", &["c.example.com"], "local"),
            certificate("blog", &["d.example.com"], "le"),
        ];
        let needed = needed_routes(certificates.iter(), issuers, std::iter::empty());
        let expected: HashSet<RouteKey> = [
            (RouteKind::Ingress, http01::route_name("a.example.com")),
            (RouteKind::HttpRoute, http01::route_name("b.example.com")),
        ]
        .into();
        assert_eq!(needed, expected, "dns01 names, local issuers and unknown issuers need no route");
    }

    #[test]
    fn an_attempt_under_way_keeps_both_kinds_of_route_for_its_names() {
        let mut attempt = CertificateAttempt::new("web-1", CertificateAttemptSpec::default());
        attempt.spec.dns_names = vec!["a.example.com".into()];
        let needed = needed_routes(std::iter::empty(), |_, _| None, std::iter::once(&attempt));
        assert!(needed.contains(&(RouteKind::Ingress, http01::route_name("a.example.com"))));
        assert!(needed.contains(&(RouteKind::HttpRoute, http01::route_name("a.example.com"))));
    }

    #[test]
    fn an_older_route_is_its_attempts_only_in_its_namespace() {
        let listed = |labels: &[(&str, &str)]| Listed {
            kind: RouteKind::Ingress,
            name: "old".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let namespaced = listed(&[(http01::ATTEMPT_LABEL, "web-1"), (http01::ATTEMPT_NAMESPACE_LABEL, "shop")]);
        assert!(made_for(&namespaced, "shop", "web-1"));
        assert!(!made_for(&namespaced, "blog", "web-1"), "another namespace's attempt of the same name");
        assert!(!made_for(&namespaced, "shop", "web-2"));
        assert!(
            made_for(&listed(&[(http01::ATTEMPT_LABEL, "web-1")]), "blog", "web-1"),
            "made before routes named the namespace"
        );
        assert!(!made_for(&listed(&[(http01::ROUTE_LABEL, "abc")]), "shop", "web-1"), "a host route is no attempt's");
    }
}
