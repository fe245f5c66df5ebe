//! `certpilot sandbox`: certpilot on a machine with no cluster. It serves a Kubernetes-compatible
//! API on loopback (the project's in-process API server, state in memory), installs the CRDs,
//! writes a kubeconfig for `kubectl`, runs the operator in this process and applies the
//! self-signed quickstart, then runs until Ctrl-C.

use super::controller::{ControllerArgs, operate};
use crate::api::{Certificate, CertificatePhase, ClusterIssuer};
use certpilot_test_apiserver::{Options, TestApiServer};
use clap::Parser;
use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::wait::{await_condition, conditions},
};
use serde::de::DeserializeOwned;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// The quickstart the sandbox applies, as in `examples/`.
const QUICKSTART: [&str; 2] =
    [include_str!("../../examples/selfsigned-clusterissuer.yaml"), include_str!("../../examples/certificate.yaml")];

/// How long the quickstart may take before the sandbox says it is stuck.
const QUICKSTART_TIMEOUT: Duration = Duration::from_secs(60);

const FIELD_MANAGER: &str = "certpilot-sandbox";

#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Address of the sandbox's API server.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub address: SocketAddr,
    /// Where to write the kubeconfig for `kubectl` (default: certpilot-sandbox.kubeconfig in the
    /// system's temporary directory). Removed on exit.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Start empty: do not apply the self-signed quickstart.
    #[arg(long)]
    pub no_quickstart: bool,
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    crate::telemetry::init_quiet();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = TestApiServer::start_with(Options { address: args.address, ..Options::default() })
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}; choose another with --address", args.address))?;
    let kubeconfig = args.kubeconfig.unwrap_or_else(|| std::env::temp_dir().join("certpilot-sandbox.kubeconfig"));
    std::fs::write(&kubeconfig, server.kubeconfig_yaml())?;
    let _remove_kubeconfig = RemoveOnDrop(kubeconfig.clone());
    let client = server.client();
    install_crds(&client).await?;
    create_namespace(&client, "certpilot").await?;
    let operator = tokio::spawn(operate(client.clone(), operator_args()?));
    println!("certpilot sandbox: API server at {} (state in memory, gone on exit)", server.url());
    if !args.no_quickstart {
        let ready = quickstart(&client).await?;
        print_ready(&ready);
    }
    println!("\nTry it with kubectl:\n");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get certificates\n");
    println!("Ctrl-C stops the sandbox.");
    // The operator's controllers stop on Ctrl-C themselves, and may do so first.
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped?,
        ended = operator => ended??,
    }
    println!("\ncertpilot sandbox stopped");
    Ok(())
}

/// The operator's settings in the sandbox: its probe and solver ports on free loopback ports,
/// so the sandbox runs beside anything already listening.
fn operator_args() -> anyhow::Result<ControllerArgs> {
    let loopback = "127.0.0.1:0";
    let argv = [
        "certpilot",
        "controller",
        "--probe-address",
        loopback,
        "--solver-http-address",
        loopback,
        "--solver-tls-address",
        loopback,
    ];
    match super::Cli::try_parse_from(argv)?.command {
        super::Command::Controller(args) => Ok(*args),
        _ => unreachable!("parsed as the controller command"),
    }
}

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.name_any();
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd)).await?;
        tokio::time::timeout(QUICKSTART_TIMEOUT, await_condition(api.clone(), &name, conditions::is_crd_established()))
            .await
            .map_err(|_| anyhow::anyhow!("CRD {name} was never established"))??;
    }
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&namespace))
        .await?;
    Ok(())
}

/// Applies the quickstart's ClusterIssuer and Certificate and waits for the Certificate to be
/// Ready.
async fn quickstart(client: &Client) -> anyhow::Result<Certificate> {
    let issuer: ClusterIssuer = from_yaml(QUICKSTART[0])?;
    apply(Api::all(client.clone()), &issuer).await?;
    let certificate: Certificate = from_yaml(QUICKSTART[1])?;
    let namespace = certificate.namespace().unwrap_or_else(|| "default".into());
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &namespace);
    apply(certificates.clone(), &certificate).await?;
    let name = certificate.name_any();
    let is_ready =
        |c: Option<&Certificate>| c.and_then(|c| c.status.as_ref()).is_some_and(|s| s.phase == CertificatePhase::Ready);
    let ready = tokio::time::timeout(QUICKSTART_TIMEOUT, await_condition(certificates, &name, is_ready))
        .await
        .map_err(|_| anyhow::anyhow!("Certificate {namespace}/{name} was not Ready within a minute"))??;
    ready.ok_or_else(|| anyhow::anyhow!("Certificate {namespace}/{name} was deleted"))
}

fn from_yaml<K: DeserializeOwned>(text: &str) -> anyhow::Result<K> {
    Ok(yaml_serde::from_str(text)?)
}

async fn apply<K>(api: Api<K>, object: &K) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.patch(&object.name_any(), &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(object)).await?;
    Ok(())
}

fn print_ready(certificate: &Certificate) {
    let status = certificate.status.clone().unwrap_or_default();
    let at = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string()).unwrap_or_else(|| "-".into())
    };
    println!(
        "\nCertificate {}/{} is Ready: Secret {} holds a certificate for {}, valid until {}, renewed from {}.",
        certificate.namespace().unwrap_or_default(),
        certificate.name_any(),
        certificate.spec.secret_name,
        certificate.spec.dns_names().join(", "),
        at(status.not_after),
        at(status.renewal_time),
    );
}

/// A file removed when the sandbox stops.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
