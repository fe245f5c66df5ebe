//! A TCP front for several operator replicas, playing the solver Service (kube-proxy) in front
//! of them: each connection goes to the next replica, round-robin, among those whose `/readyz`
//! answers 200 at that moment (a Pod's readiness decides its Service endpoints); with none
//! ready, the connection is closed. One listener for HTTP-01 and one for TLS-ALPN-01, where
//! the CA validates.
#![allow(dead_code)]

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// One replica's ports: its probe server and its two solver servers.
#[derive(Clone, Copy, Debug)]
pub struct Replica {
    pub probe: u16,
    pub http: u16,
    pub tls: u16,
}

impl Replica {
    /// A replica on free loopback ports.
    pub fn on_free_ports() -> Self {
        use super::pebble::free_port;
        Self { probe: free_port(), http: free_port(), tls: free_port() }
    }

    /// The operator's flags to serve on these ports.
    pub fn args(&self) -> Vec<String> {
        [("--probe-address", self.probe), ("--solver-http-address", self.http), ("--solver-tls-address", self.tls)]
            .into_iter()
            .flat_map(|(flag, port)| [flag.to_string(), format!("127.0.0.1:{port}")])
            .collect()
    }
}

pub struct Front {
    /// Where the CA validates HTTP-01 (forwarded to each replica's HTTP-01 port).
    pub http_port: u16,
    /// Where the CA validates TLS-ALPN-01 (forwarded to each replica's TLS-ALPN-01 port).
    pub tls_port: u16,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    replicas: Vec<Replica>,
    /// Where the next pick starts.
    next: AtomicUsize,
    /// For each connection forwarded, in order: the index of the replica it went to.
    forwarded: Mutex<Vec<usize>>,
    /// Replicas taken out of the endpoints.
    removed: Mutex<HashSet<usize>>,
    /// Connections open to each replica.
    open: watch::Sender<Vec<usize>>,
}

impl Front {
    /// Listens on two free ports of 127.0.0.1 (bound here, so no other test takes them), for
    /// HTTP-01 and TLS-ALPN-01.
    pub async fn start(replicas: Vec<Replica>) -> Self {
        let shared = Arc::new(Shared {
            open: watch::Sender::new(vec![0; replicas.len()]),
            replicas,
            next: AtomicUsize::new(0),
            forwarded: Mutex::default(),
            removed: Mutex::default(),
        });
        let mut tasks = Vec::new();
        let mut ports = Vec::new();
        for backend in [(|r: &Replica| r.http) as fn(&Replica) -> u16, |r| r.tls] {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("a free port");
            ports.push(listener.local_addr().unwrap().port());
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let Some((index, mut upstream)) = shared.pick(backend).await else { return };
                        shared.forwarded.lock().unwrap().push(index);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        shared.open.send_modify(|open| open[index] -= 1);
                    });
                }
            }));
        }
        Self { http_port: ports[0], tls_port: ports[1], shared, tasks }
    }

    /// How many connections went to each replica so far.
    pub fn forwarded(&self) -> Vec<usize> {
        self.shared.forwarded.lock().unwrap().clone()
    }

    /// Takes replica `index` out of the endpoints, as Kubernetes does first with a Pod being
    /// deleted, and waits until the connections it was given have ended.
    pub async fn remove(&self, index: usize) {
        self.shared.removed.lock().unwrap().insert(index);
        let _ = self.shared.open.subscribe().wait_for(|open| open[index] == 0).await;
    }
}

impl Shared {
    /// The next ready replica after the last one picked (each pick starts one further, and
    /// tries every replica once from there), connected to at the port `backend` names, and
    /// counted as open.
    async fn pick(&self, backend: fn(&Replica) -> u16) -> Option<(usize, TcpStream)> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.replicas.len() {
            let index = (start + offset) % self.replicas.len();
            let replica = &self.replicas[index];
            // Counted before the check, so that `remove` waits for whatever got past it.
            self.open.send_modify(|open| open[index] += 1);
            let removed = self.removed.lock().unwrap().contains(&index);
            if !removed
                && super::http_status(replica.probe, "/readyz").await == 200
                && let Ok(stream) = TcpStream::connect(("127.0.0.1", backend(replica))).await
            {
                return Some((index, stream));
            }
            self.open.send_modify(|open| open[index] -= 1);
        }
        None
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
