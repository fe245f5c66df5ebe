//! Challenge solvers: which solver answers a name, and what the operator's solver servers
//! answer (`answers`).

pub mod answers;
pub mod dns01;
pub mod dns_persist01;
pub mod http01;
pub mod tls_alpn01;

pub use answers::Answers;

use crate::api::issuer::AcmeSolver;

/// The challenge type a solver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    Http01,
    Dns01,
    TlsAlpn01,
    /// draft-ietf-acme-dns-persist: a standing record the domain's owner publishes.
    DnsPersist01,
}

impl ChallengeKind {
    pub fn of(solver: &AcmeSolver) -> Option<Self> {
        if solver.http01.is_some() {
            Some(Self::Http01)
        } else if solver.dns01.is_some() {
            Some(Self::Dns01)
        } else if solver.tls_alpn01.is_some() {
            Some(Self::TlsAlpn01)
        } else if solver.dns_persist01.is_some() {
            Some(Self::DnsPersist01)
        } else {
            None
        }
    }

    pub fn as_acme(self) -> instant_acme::ChallengeType {
        match self {
            Self::Http01 => instant_acme::ChallengeType::Http01,
            Self::Dns01 => instant_acme::ChallengeType::Dns01,
            Self::TlsAlpn01 => instant_acme::ChallengeType::TlsAlpn01,
            // instant-acme has no variant for it: the type as the CA spells it.
            Self::DnsPersist01 => instant_acme::ChallengeType::Unknown(Self::DnsPersist01.name().into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::DnsPersist01 => "dns-persist-01",
        }
    }

    /// Whether it can validate a wildcard name (only DNS-based challenges can).
    pub fn validates_wildcards(self) -> bool {
        matches!(self, Self::Dns01 | Self::DnsPersist01)
    }
}

/// How specifically a solver's selector matches `name` (higher wins), or `None` if it does not.
fn specificity(solver: &AcmeSolver, name: &str) -> Option<usize> {
    let Some(selector) = &solver.selector else { return Some(0) };
    let names = selector.dns_names.as_deref().unwrap_or_default();
    let zones = selector.dns_zones.as_deref().unwrap_or_default();
    if names.is_empty() && zones.is_empty() {
        return Some(0);
    }
    if names.iter().any(|n| n == name) {
        return Some(usize::MAX);
    }
    let bare = name.trim_start_matches("*.");
    zones
        .iter()
        .filter(|zone| bare == zone.as_str() || bare.ends_with(&format!(".{zone}")))
        .map(|zone| zone.len() + 1)
        .max()
}

/// Whether an order for `names` may publish DNS-01 records certpilot must remove afterwards
/// (a name whose solver is dns01; a name no solver matches fails before anything is published).
pub fn publishes_dns01<'a>(solvers: &[AcmeSolver], mut names: impl Iterator<Item = &'a str>) -> bool {
    names.any(|name| matches!(select(solvers, name), Ok((_, ChallengeKind::Dns01))))
}

/// The solver for `name`: an exact name match beats the longest matching zone, which beats a
/// solver without selector; the first of equals wins. Wildcards need dns-01.
pub fn select<'a>(solvers: &'a [AcmeSolver], name: &str) -> Result<(&'a AcmeSolver, ChallengeKind), String> {
    let mut best: Option<(&AcmeSolver, usize)> = None;
    for solver in solvers {
        if let Some(score) = specificity(solver, name)
            && best.is_none_or(|(_, b)| score > b)
        {
            best = Some((solver, score));
        }
    }
    let (solver, _) = best.ok_or_else(|| {
        format!("no solver of the issuer matches {name}; add one without a selector, or one whose selector names it")
    })?;
    let kind = ChallengeKind::of(solver)
        .ok_or_else(|| "the matching solver has no http01, dns01, tlsAlpn01 or dnsPersist01".to_string())?;
    if name.starts_with("*.") && !kind.validates_wildcards() {
        return Err(format!(
            "{name} is a wildcard, which only dns-01 or dns-persist-01 can validate, but the matching solver uses {}",
            kind.name()
        ));
    }
    Ok((solver, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::issuer::{Dns01Solver, Http01Solver, SolverSelector};

    fn http(selector: Option<SolverSelector>) -> AcmeSolver {
        AcmeSolver { selector, http01: Some(Http01Solver::default()), ..Default::default() }
    }

    fn dns(selector: Option<SolverSelector>) -> AcmeSolver {
        AcmeSolver { selector, dns01: Some(Dns01Solver::default()), ..Default::default() }
    }

    fn zones(z: &[&str]) -> Option<SolverSelector> {
        Some(SolverSelector { dns_zones: Some(z.iter().map(|s| s.to_string()).collect()), dns_names: None })
    }

    #[test]
    fn exact_names_beat_zones_beat_defaults() {
        let solvers = vec![
            http(None),
            dns(zones(&["example.com"])),
            dns(zones(&["internal.example.com"])),
            http(Some(SolverSelector { dns_names: Some(vec!["www.internal.example.com".into()]), dns_zones: None })),
        ];
        assert_eq!(select(&solvers, "other.org").unwrap().1, ChallengeKind::Http01);
        assert!(std::ptr::eq(select(&solvers, "a.example.com").unwrap().0, &solvers[1]));
        assert!(std::ptr::eq(select(&solvers, "a.internal.example.com").unwrap().0, &solvers[2]));
        assert!(std::ptr::eq(select(&solvers, "www.internal.example.com").unwrap().0, &solvers[3]));
        assert!(std::ptr::eq(select(&solvers, "example.com").unwrap().0, &solvers[1]));
    }

    #[test]
    fn wildcards_need_dns01_and_unmatched_names_are_explained() {
        assert!(select(&[http(None)], "*.example.com").unwrap_err().contains("only dns-01"));
        assert_eq!(select(&[dns(None)], "*.example.com").unwrap().1, ChallengeKind::Dns01);
        let persist = AcmeSolver { dns_persist01: Some(Default::default()), ..Default::default() };
        assert_eq!(select(&[persist], "*.example.com").unwrap().1, ChallengeKind::DnsPersist01);
        assert!(select(&[dns(zones(&["example.com"]))], "other.org").unwrap_err().contains("no solver"));
        assert!(select(&[], "a.example.com").is_err());
    }
}
