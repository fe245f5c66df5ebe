//! The cluster a test runs against: a real one when `CERTPILOT_TEST_KUBECONFIG` names a
//! kubeconfig, otherwise a fresh in-process [`TestApiServer`]. Tests written against this run
//! unchanged on both.

use crate::TestApiServer;
use anyhow::Context as _;
use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    config::{AuthInfo, KubeConfigOptions, Kubeconfig, NamedAuthInfo},
};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// Environment variable naming the kubeconfig of a real cluster to test against.
pub const KUBECONFIG_VAR: &str = "CERTPILOT_TEST_KUBECONFIG";

/// rustls needs a process-wide crypto provider before any client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

enum Backend {
    Real { kubeconfig: PathBuf },
    InProcess(TestApiServer),
}

/// A cluster plus one namespace of the test's own, deleted when the cluster value is dropped.
pub struct TestCluster {
    backend: Backend,
    config: Config,
    client: Client,
    namespace: String,
    kubeconfig_file: Option<tempfile_path::TempPath>,
}

mod tempfile_path {
    use std::path::{Path, PathBuf};

    /// A file removed when dropped.
    pub struct TempPath(PathBuf);

    impl TempPath {
        pub fn write(prefix: &str, contents: &str) -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
            std::fs::write(&path, contents)?;
            Ok(Self(path))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl TestCluster {
    /// Connects to the real cluster or starts a server, then creates the test's namespace.
    pub async fn start(test_name: &str) -> anyhow::Result<Self> {
        install_crypto_provider();
        let (backend, config) = match std::env::var_os(KUBECONFIG_VAR) {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(&path)?;
                let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
                (Backend::Real { kubeconfig: PathBuf::from(path) }, config)
            }
            None => {
                let server = TestApiServer::start().await?;
                let config = server.config();
                (Backend::InProcess(server), config)
            }
        };
        let client = Client::try_from(config.clone())?;
        let namespace = unique_name(test_name);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace, "labels": {"certpilot.dev/test": "true"}}
        }))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        Ok(Self { backend, config, client, namespace, kubeconfig_file: None })
    }

    /// The client configuration of this cluster (as the admin), for clients of other runtimes.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client of this cluster that acts as `user` (in `groups`; none lets the server choose),
    /// by impersonation: kube sends `Impersonate-User` and `Impersonate-Group`, which the admin
    /// may; what the impersonated user may do is up to RBAC.
    pub fn impersonating_client(&self, user: &str, groups: &[&str]) -> anyhow::Result<Client> {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups =
            (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
        Ok(Client::try_from(config)?)
    }

    /// A client of this cluster (as the same user) that sends `user_agent` as its `User-Agent`,
    /// so that its requests can be told from another client's in the server's request log.
    pub fn client_with_user_agent(&self, user_agent: &str) -> anyhow::Result<Client> {
        let mut config = self.config.clone();
        config.headers.push((axum::http::header::USER_AGENT, axum::http::HeaderValue::from_str(user_agent)?));
        Ok(Client::try_from(config)?)
    }

    /// The namespace this test owns.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether this is a real cluster (tests of the test server's own faults skip there).
    pub fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Real { .. })
    }

    /// The in-process server, for fault injection and request counting.
    pub fn server(&self) -> Option<&TestApiServer> {
        match &self.backend {
            Backend::InProcess(server) => Some(server),
            Backend::Real { .. } => None,
        }
    }

    /// A kubeconfig file for child processes (the operator binary) to reach this cluster.
    pub fn kubeconfig_path(&mut self) -> anyhow::Result<PathBuf> {
        match &self.backend {
            Backend::Real { kubeconfig } => Ok(kubeconfig.clone()),
            Backend::InProcess(server) => {
                if self.kubeconfig_file.is_none() {
                    self.kubeconfig_file =
                        Some(tempfile_path::TempPath::write("certpilot-kubeconfig", &server.kubeconfig_yaml())?);
                }
                Ok(self.kubeconfig_file.as_ref().expect("just written").path().to_path_buf())
            }
        }
    }

    /// Mints a token for the ServiceAccount `namespace/name` (which must exist) with TokenRequest,
    /// as `kubectl create token` does: valid for `expiration_seconds`, or an hour.
    pub async fn mint_token(
        &self,
        namespace: &str,
        name: &str,
        expiration_seconds: Option<i64>,
    ) -> anyhow::Result<TokenRequest> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds, ..Default::default() }),
            ..Default::default()
        };
        let accounts = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        Ok(accounts.create_token_request(name, &PostParams::default(), &request).await?)
    }

    /// The ServiceAccount `namespace/name` (which must exist) as a client: a token minted for it
    /// (an hour's) in a kubeconfig of its own, whose file child processes such as the operator
    /// binary can be given as `KUBECONFIG`.
    pub async fn service_account_access(&self, namespace: &str, name: &str) -> anyhow::Result<TokenKubeconfig> {
        let minted = self.mint_token(namespace, name, None).await?;
        let token = minted.status.and_then(|s| s.token).context("a TokenRequest answered without a token")?;
        self.token_kubeconfig(&token, namespace)
    }

    /// A kubeconfig of this cluster that authenticates with `token` and defaults to `namespace`.
    pub fn token_kubeconfig(&self, token: &str, namespace: &str) -> anyhow::Result<TokenKubeconfig> {
        let base = match &self.backend {
            Backend::Real { kubeconfig } => Kubeconfig::read_from(kubeconfig)?,
            Backend::InProcess(server) => Kubeconfig::from_yaml(&server.kubeconfig_yaml())?,
        };
        let kubeconfig = with_bearer_token(base, token, namespace)?;
        let file = tempfile_path::TempPath::write("certpilot-token-kubeconfig", &yaml_serde::to_string(&kubeconfig)?)?;
        Ok(TokenKubeconfig { file })
    }

    /// Installs (server-side applies) a CRD and waits until it is established.
    pub async fn install_crd(&self, crd: &CustomResourceDefinition) -> anyhow::Result<()> {
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        let name = crd.metadata.name.clone().unwrap_or_default();
        let params = PatchParams::apply("certpilot-tests").force();
        api.patch(&name, &params, &Patch::Apply(crd)).await?;
        let established = kube::runtime::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(api, &name, established);
        tokio::time::timeout(Duration::from_secs(30), wait).await??;
        Ok(())
    }
}

/// A kubeconfig file that authenticates with a bearer token (removed when dropped).
pub struct TokenKubeconfig {
    file: tempfile_path::TempPath,
}

impl TokenKubeconfig {
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// A client configured from the file, as a process given it would be.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(self.path())?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }
}

/// `kubeconfig` with its current context's user replaced by one holding `token` alone (the
/// cluster and its CA stay), defaulting to `namespace`.
fn with_bearer_token(mut kubeconfig: Kubeconfig, token: &str, namespace: &str) -> anyhow::Result<Kubeconfig> {
    const USER: &str = "bearer-token";
    let current = kubeconfig.current_context.clone().context("the kubeconfig has no current context")?;
    let context = kubeconfig
        .contexts
        .iter_mut()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_mut())
        .with_context(|| format!("the kubeconfig has no context {current:?}"))?;
    context.user = Some(USER.to_string());
    context.namespace = Some(namespace.to_string());
    let auth_info = AuthInfo { token: Some(token.to_string().into()), ..Default::default() };
    kubeconfig.auth_infos =
        vec![NamedAuthInfo { name: USER.to_string(), auth_info: Some(auth_info), ..Default::default() }];
    Ok(kubeconfig)
}

impl Drop for TestCluster {
    /// Deletes the test namespace on a thread of its own (the test's runtime may be ending).
    fn drop(&mut self) {
        if !self.is_real() {
            return;
        }
        let (config, namespace) = (self.config.clone(), self.namespace.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let client = Client::try_from(config).ok()?;
                Api::<Namespace>::all(client).delete(&namespace, &DeleteParams::background()).await.ok()
            })
        });
        let _ = cleanup.join();
    }
}

/// `<prefix>-<random>`: a DNS label unique to this run.
pub fn unique_name(prefix: &str) -> String {
    let clean: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(40).collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{}-{suffix}", clean.trim_matches('-'))
}
