//! `certpilot controller`: the operator against the cluster the kubeconfig (or the Pod's service
//! account) names.

use crate::{
    controller::{
        self,
        context::{Context, Settings},
    },
    health::Readiness,
    leader::{Election, Leadership, run_as_leader},
    metrics::Metrics,
    policy::{backoff::BackoffPolicy, parse_duration},
    solver::{self, Answers},
};
use anyhow::Context as _;
use std::{future::Future, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;

#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Only manage Certificates, Issuers and Secrets in this namespace (default: all namespaces).
    #[arg(long, env = "CERTPILOT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the Secrets that ClusterIssuers name (normally the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "certpilot")]
    pub cluster_resource_namespace: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub probe_address: SocketAddr,
    /// How many objects each controller reconciles at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
    /// Delay after a first failed attempt (doubling up to --retry-max), as a Go duration.
    #[arg(long, default_value = "1m")]
    pub retry_base: String,
    /// Longest delay between failed attempts, as a Go duration.
    #[arg(long, default_value = "6h")]
    pub retry_max: String,
    /// Log JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Address where the operator answers HTTP-01 challenges.
    #[arg(long, default_value = "0.0.0.0:8089")]
    pub solver_http_address: SocketAddr,
    /// Address where the operator answers TLS-ALPN-01 challenges.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub solver_tls_address: SocketAddr,
    /// Service in the operator's namespace that HTTP-01 Ingress rules point at.
    #[arg(long, default_value = "certpilot-solver")]
    pub solver_service: String,
    /// Port of that Service.
    #[arg(long, default_value_t = 8089)]
    pub solver_service_port: u16,
    /// How many ACME orders one issuer may have in flight at once.
    #[arg(long, default_value_t = 10)]
    pub max_orders_per_issuer: usize,
    /// A Certificate is never renewed more often than this (Go duration), whatever its spec
    /// says: a guard against renewal loops that would burn through a CA's rate limits.
    #[arg(long, default_value = "5m")]
    pub min_renewal_interval: String,
    /// DNS servers (`host:port`, comma-separated) that DNS-01 checks and CNAME look-ups ask,
    /// instead of each provider's own server: for split-horizon DNS, or a resolver that sees
    /// what the CA sees.
    #[arg(long, env = "CERTPILOT_DNS_CHECK_NAMESERVERS", value_delimiter = ',')]
    pub dns_check_nameservers: Vec<String>,
    /// Run only while holding a Lease in the operator's namespace, so replicas can stand by.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of that Lease.
    #[arg(long, default_value = "certpilot-leader")]
    pub leader_lease: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, default_value_t = 15)]
    pub leader_lease_seconds: u64,
    /// Let Ingresses and Gateways ask for Certificates with cert-manager's annotations too
    /// (`cert-manager.io/cluster-issuer`, `cert-manager.io/issuer`, ...); certpilot's own
    /// (`certpilot.dev/cluster-issuer`, ...) win where both are set. Stop cert-manager's
    /// controller first, or both act on the same Ingresses.
    #[arg(long, env = "CERTPILOT_ACCEPT_CERT_MANAGER_ANNOTATIONS")]
    pub accept_cert_manager_annotations: bool,
    /// Let namespaced Issuers use certpilot's own cloud identity (ambient credentials: IRSA,
    /// EKS Pod Identity, the environment) when their DNS-01 solver names no keys.
    /// ClusterIssuers always may; an Issuer could otherwise write, with certpilot's rights, to
    /// zones its namespace was never given.
    #[arg(long, env = "CERTPILOT_ISSUER_AMBIENT_CREDENTIALS")]
    pub issuer_ambient_credentials: bool,
}

/// A client for the cluster the kubeconfig (or the Pod's service account) names, which tells
/// the API server who it is.
async fn client() -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer().await.map_err(|_| no_cluster())?;
    Ok(crate::outbound::kube_client(config)?)
}

/// What a newcomer without a cluster reads, in one line: which kubeconfig was tried and what to do.
pub fn no_cluster() -> anyhow::Error {
    let kubeconfig = match std::env::var_os("KUBECONFIG") {
        Some(path) => format!("KUBECONFIG={}", path.to_string_lossy()),
        None => {
            let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
            home.join(".kube").join("config").display().to_string()
        }
    };
    anyhow::anyhow!(
        "no Kubernetes cluster found: not running in a cluster, and no usable kubeconfig at {kubeconfig}; \
         set KUBECONFIG to a cluster's kubeconfig (or run certpilot in the cluster), \
         or try certpilot without one: `certpilot sandbox`"
    )
}

/// How long work under way may take to finish after SIGTERM or SIGINT. certpilot resumes
/// whatever a stop cuts short (it is proven against SIGKILL at any point), so the grace only
/// spares a redo; it is short enough that a rollout never waits for the kubelet's SIGKILL.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    crate::telemetry::init(args.log_json);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let operator = operate(client().await?, args);
    futures::pin_mut!(operator);
    tokio::select! {
        result = &mut operator => return result,
        () = stop_signal() => {}
    }
    tracing::info!(grace = ?SHUTDOWN_GRACE, "stopping: finishing the work under way");
    match tokio::time::timeout(SHUTDOWN_GRACE, operator).await {
        Ok(result) => result,
        Err(_) => {
            tracing::info!("stopped with work under way; it resumes where it stopped at the next start");
            Ok(())
        }
    }
}

/// The first SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the operator with `client` until it stops (or, leader-elected, loses the Lease).
pub async fn operate(client: kube::Client, args: ControllerArgs) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&args).await?;
    let duration = |flag: &str, text: &str| {
        parse_duration(text).ok_or_else(|| anyhow::anyhow!("--{flag}: {text:?} is not a duration such as 1m"))
    };
    let backoff =
        BackoffPolicy { base: duration("retry-base", &args.retry_base)?, cap: duration("retry-max", &args.retry_max)? };
    let resource_namespace = args.cluster_resource_namespace.clone();
    let settings = Settings {
        watch_namespace: args.namespace,
        cluster_resource_namespace: args.cluster_resource_namespace,
        backoff,
        concurrency: args.concurrency.max(1),
        solver_service: args.solver_service,
        solver_service_port: args.solver_service_port,
        max_orders_per_issuer: args.max_orders_per_issuer.max(1),
        min_renewal_interval: duration("min-renewal-interval", &args.min_renewal_interval)?,
        dns_check_nameservers: args
            .dns_check_nameservers
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        accept_cert_manager_annotations: args.accept_cert_manager_annotations,
        issuer_ambient_credentials: args.issuer_ambient_credentials,
    };
    tracing::info!(namespace = ?settings.watch_namespace, "starting certpilot");
    let answers = watch_answers(&client, &settings);
    let (caches, feeds) = controller::cache::Feeds::new(&client, settings.watch_namespace.as_deref());
    let leadership = if args.leader_elect { Leadership::default() } else { Leadership::leading() };
    let mut metrics = Metrics::default();
    metrics.watch_certificates(caches.certificates.clone());
    metrics.watch_crds(caches.crds.clone());
    metrics.watch_leadership(leadership.clone());
    let metrics = Arc::new(metrics);
    let readiness = Readiness { leadership: leadership.clone(), crds: caches.crds.clone(), answers: answers.clone() };
    let ctx = Context::new(client.clone(), caches, settings, metrics.clone());
    let servers = listeners.serve(metrics, readiness, answers);
    let controllers = async {
        if args.leader_elect {
            let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("certpilot-{}", std::process::id()));
            let election = Election {
                client,
                namespace: resource_namespace,
                lease: args.leader_lease,
                identity,
                duration_seconds: args.leader_lease_seconds.max(2),
            };
            run_as_leader(election, leadership, controller::run_all(ctx, feeds)).await
        } else {
            controller::run_all(ctx, feeds).await;
            Ok(())
        }
    };
    tokio::select! {
        done = controllers => done?,
        stopped = servers => return Err(stopped),
    }
    tracing::info!("certpilot stopped");
    Ok(())
}

/// The operator's listeners, bound before anything starts: an address that is taken (by
/// another process, or a wrong flag) stops the operator at once, saying which, instead of
/// leaving a replica that looks ready and cannot answer the CA.
struct Listeners {
    probe: TcpListener,
    http01: TcpListener,
    tls_alpn01: TcpListener,
}

impl Listeners {
    async fn bind(args: &ControllerArgs) -> anyhow::Result<Self> {
        let listen = |address: SocketAddr, what: &'static str| async move {
            TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address} for {what}"))
        };
        Ok(Self {
            probe: listen(args.probe_address, "/healthz, /readyz and /metrics").await?,
            http01: listen(args.solver_http_address, "HTTP-01 challenges").await?,
            tls_alpn01: listen(args.solver_tls_address, "TLS-ALPN-01 challenges").await?,
        })
    }

    /// Serves on each listener; ends only if one of the servers stops, saying which and why
    /// (the operator then exits, to be restarted, rather than run on without it).
    async fn serve(self, metrics: Arc<Metrics>, readiness: Readiness, answers: Arc<Answers>) -> anyhow::Error {
        async fn named(what: &'static str, server: impl Future<Output = std::io::Result<()>>) -> anyhow::Error {
            match server.await {
                Ok(()) => anyhow::anyhow!("the {what} server stopped"),
                Err(error) => anyhow::anyhow!("the {what} server stopped: {error}"),
            }
        }
        let servers = [
            tokio::spawn(named("probe", crate::server::serve(self.probe, metrics, readiness))),
            tokio::spawn(named("HTTP-01 solver", solver::http01::serve(self.http01, answers.clone()))),
            tokio::spawn(named("TLS-ALPN-01 solver", solver::tls_alpn01::serve(self.tls_alpn01, answers))),
        ];
        let (stopped, _, _) = futures::future::select_all(servers).await;
        stopped.unwrap_or_else(|failed| anyhow::anyhow!("a server task failed: {failed}"))
    }
}

/// Every replica, leader or standby, answers HTTP-01 and TLS-ALPN-01 challenges from its own
/// watch of the attempts in progress: started before the election, so that a standby answers
/// for a leader that died after telling the CA to validate.
fn watch_answers(client: &kube::Client, settings: &Settings) -> Arc<Answers> {
    let answers = Arc::new(Answers::default());
    let attempts = match settings.watch_namespace.as_deref() {
        Some(namespace) => kube::Api::namespaced(client.clone(), namespace),
        None => kube::Api::all(client.clone()),
    };
    tokio::spawn(solver::answers::watch(attempts, answers.clone()));
    answers
}
