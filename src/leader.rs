//! Leader election through a `coordination.k8s.io` Lease (kube-lease-manager): the controllers
//! run on the leader only; standby replicas wait to take over. Every replica, standby or not,
//! answers HTTP-01 and TLS-ALPN-01 challenges (see `solver::answers`) and is ready; `/readyz`'s
//! body and the `certpilot_leader` gauge say which one leads.

use kube_lease_manager::LeaseManagerBuilder;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Whether this replica leads (and so runs the controllers). True from the start without
/// leader election.
#[derive(Clone, Debug, Default)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    pub fn leading() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, leading: bool) {
        self.0.store(leading, Ordering::Relaxed);
    }
}

/// Settings of the election.
pub struct Election {
    pub client: kube::Client,
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    pub duration_seconds: u64,
}

/// Waits until this replica holds the Lease, then runs `work` while it does. Returns an error
/// when the Lease is lost, so the process restarts as a standby with a clean slate.
pub async fn run_as_leader<F: std::future::Future<Output = ()>>(
    election: Election,
    leadership: Leadership,
    work: F,
) -> anyhow::Result<()> {
    let grace = (election.duration_seconds / 3).max(1);
    let manager = LeaseManagerBuilder::new(election.client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.duration_seconds)
        .with_grace(grace)
        .with_field_manager(format!("certpilot-leader-{}", election.identity))
        .build()
        .await?;
    let (mut state, _task) = manager.watch().await;
    tracing::info!(lease = %election.lease, identity = %election.identity, "waiting to lead");
    while !*state.borrow_and_update() {
        state.changed().await?;
    }
    tracing::info!(identity = %election.identity, "leading");
    leadership.set(true);
    let lost = async {
        loop {
            if state.changed().await.is_err() || !*state.borrow_and_update() {
                return;
            }
        }
    };
    tokio::select! {
        () = work => Ok(()),
        () = lost => {
            leadership.set(false);
            anyhow::bail!("lost the leader Lease {}; exiting so that a restart rejoins as a standby", election.lease)
        }
    }
}
