//! What the operator's readiness says: whether it leads, and whether the CRDs it watches are
//! installed. A missing CRD (a failed or partial install) is named once, in one line that says
//! what to do, and again only when that changes; it is picked up when installed, without a
//! restart (the watch of its kind keeps trying).

use crate::leader::Leadership;
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

/// What `/readyz` answers: ready when leading with every CRD installed.
#[derive(Clone)]
pub struct Readiness {
    pub leadership: Leadership,
    pub crds: Arc<Crds>,
}

impl Readiness {
    /// `Ok` when ready; otherwise why not, for the probe's body.
    pub fn check(&self) -> Result<(), String> {
        let missing = self.crds.missing();
        if !missing.is_empty() {
            return Err(format!("not installed: {}", missing.join(", ")));
        }
        if !self.leadership.is_leader() {
            return Err("standby".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_crd_makes_certpilot_unready_until_it_is_installed() {
        let crds = Arc::new(Crds::default());
        let ready = Readiness { leadership: Leadership::leading(), crds: crds.clone() };
        assert_eq!(ready.check(), Ok(()), "nothing known yet: nothing missing");
        crds.set("certificates.certpilot.dev", CrdState::Installed);
        crds.set("issuers.certpilot.dev", CrdState::Missing);
        crds.set("clusterissuers.certpilot.dev", CrdState::Missing);
        assert_eq!(ready.check(), Err("not installed: clusterissuers.certpilot.dev, issuers.certpilot.dev".into()));
        crds.set("issuers.certpilot.dev", CrdState::Installed);
        crds.set("clusterissuers.certpilot.dev", CrdState::Installed);
        assert_eq!(ready.check(), Ok(()));
        let standby = Readiness { leadership: Leadership::default(), crds };
        assert_eq!(standby.check(), Err("standby".into()));
    }
}
