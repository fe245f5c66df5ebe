//! What the operator's readiness says: whether its solver servers can answer (the watch they
//! answer from has listed the attempts), and whether the CRDs it watches are installed.
//! Leadership is not part of it: every replica answers challenges, so the solver Service routes
//! to every ready one; the body says whether the replica leads. A missing CRD (a failed or partial install) is named once, in one line that says
//! what to do, and again only when that changes; it is picked up when installed, without a
//! restart (the watch of its kind keeps trying).

use crate::{leader::Leadership, solver::Answers};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// Whether a CRD's kind was found, as far as its watch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrdState {
    /// The watch listed its objects.
    Installed,
    /// The API server does not serve the kind (404): the CRD is not installed (or not yet
    /// established).
    Missing,
}

/// The CRDs certpilot's watches found or missed, by name (`issuers.certpilot.dev`).
#[derive(Debug, Default)]
pub struct Crds(Mutex<BTreeMap<String, CrdState>>);

impl Crds {
    /// Records what a watch found of `crd`, and says so when it changed.
    pub fn set(&self, crd: &str, state: CrdState) {
        let previous = self.0.lock().expect("crds lock").insert(crd.to_string(), state);
        match (previous, state) {
            (Some(same), now) if same == now => {}
            (_, CrdState::Missing) => tracing::error!(
                crd,
                "{crd} is not installed: kubectl apply -f crds/ (or deploy/01-crds.yaml); certpilot picks it up once it is, without a restart"
            ),
            (Some(CrdState::Missing), CrdState::Installed) => tracing::info!(crd, "{crd} is installed now"),
            (_, CrdState::Installed) => {}
        }
    }

    /// The CRDs found missing, by name.
    pub fn missing(&self) -> Vec<String> {
        let crds = self.0.lock().expect("crds lock");
        crds.iter().filter(|(_, state)| **state == CrdState::Missing).map(|(name, _)| name.clone()).collect()
    }

    /// Every CRD a watch has reported on, with its state.
    pub fn states(&self) -> Vec<(String, CrdState)> {
        self.0.lock().expect("crds lock").iter().map(|(name, state)| (name.clone(), *state)).collect()
    }
}

/// What `/readyz` answers: ready once the solvers' watch has listed the attempts, with every
/// CRD installed, leader or not.
#[derive(Clone)]
pub struct Readiness {
    pub leadership: Leadership,
    pub crds: Arc<Crds>,
    pub answers: Arc<Answers>,
}

impl Readiness {
    /// The role when ready (`leader` or `standby`, for the probe's body); otherwise why not.
    pub fn check(&self) -> Result<&'static str, String> {
        let missing = self.crds.missing();
        if !missing.is_empty() {
            return Err(format!("not installed: {}", missing.join(", ")));
        }
        if !self.answers.synced() {
            return Err("the solvers' watch of CertificateAttempts has not listed them yet".into());
        }
        Ok(if self.leadership.is_leader() { "leader" } else { "standby" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced_answers() -> Arc<Answers> {
        let answers = Arc::new(Answers::default());
        answers.apply(&kube::runtime::watcher::Event::InitDone);
        answers
    }

    #[test]
    fn a_missing_crd_makes_certpilot_unready_until_it_is_installed() {
        let crds = Arc::new(Crds::default());
        let ready = Readiness { leadership: Leadership::leading(), crds: crds.clone(), answers: synced_answers() };
        assert_eq!(ready.check(), Ok("leader"), "nothing known yet: nothing missing");
        crds.set("certificates.certpilot.dev", CrdState::Installed);
        crds.set("issuers.certpilot.dev", CrdState::Missing);
        crds.set("clusterissuers.certpilot.dev", CrdState::Missing);
        assert_eq!(ready.check(), Err("not installed: clusterissuers.certpilot.dev, issuers.certpilot.dev".into()));
        crds.set("issuers.certpilot.dev", CrdState::Installed);
        crds.set("clusterissuers.certpilot.dev", CrdState::Installed);
        assert_eq!(ready.check(), Ok("leader"));
    }

    #[test]
    fn a_standby_is_ready_once_it_can_answer_challenges() {
        let answers = Arc::new(Answers::default());
        let standby =
            Readiness { leadership: Leadership::default(), crds: Default::default(), answers: answers.clone() };
        assert!(standby.check().unwrap_err().contains("not listed them yet"));
        answers.apply(&kube::runtime::watcher::Event::Init);
        assert!(standby.check().is_err(), "listing, not listed");
        answers.apply(&kube::runtime::watcher::Event::InitDone);
        assert_eq!(standby.check(), Ok("standby"));
    }
}
