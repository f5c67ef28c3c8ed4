//! Connecting at run time, for long-running front-ends (the web UI): a [`Session`] holds the
//! current cluster connection, made in any of the three auth modes and replaced or dropped at
//! will, over a [`Workspace`] (history, store, settings) that outlives it. A pasted kubeconfig
//! lives only inside the connection's client: nothing here stores its text, and disconnecting
//! drops it.

use crate::{App, CheckReport, EngineError, Settings};
use nkvm_history::History;
use nkvm_kube::ConnectError;
use nkvm_kube::kubeconfig::KubeconfigError;
use nkvm_store::ArchiveStore;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, RwLock};

pub use crate::workspace::{
    ArchiveDownload, BackupDetails, DownloadError, ReadinessCheck, Workspace,
};
pub use nkvm_history::{BackupFilter, BackupRow};
pub use nkvm_kube::kubeconfig::ContextSummary;
pub use nkvm_kube::{AuthMode, ConnectOptions};

/// Runs an engine operation as its own task and awaits it: the operation goes on even if
/// the caller (a web request) is dropped, and a panic in it becomes an error.
pub fn detached<F, Fut, T>(make: F) -> impl Future<Output = Result<T, EngineError>> + Send
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let run = tokio::spawn(make());
    async move {
        run.await
            .map_err(|e| EngineError::Internal(format!("an engine task failed: {e}")))
    }
}

/// Connects with `opts` and builds an engine over `history` and `store`. The permission probe
/// runs where the allowlist says nkvm will work.
pub async fn connect_app(
    mut opts: ConnectOptions,
    history: Arc<History>,
    store: Arc<dyn ArchiveStore>,
    settings: Settings,
) -> Result<App, ConnectError> {
    opts.probe_namespaces = settings
        .allowlist
        .namespaces()
        .iter()
        .map(ToString::to_string)
        .collect();
    let conn = nkvm_kube::connect(&opts).await?;
    Ok(App::new(conn, history, store, settings))
}

/// The contexts of a kubeconfig file (`None`: `$KUBECONFIG`, then `~/.kube/config`), for a
/// context drop-down; reading a file connects to nothing.
pub fn kubeconfig_contexts(path: Option<&Path>) -> Result<Vec<ContextSummary>, KubeconfigError> {
    let (kc, _) = nkvm_kube::kubeconfig::read(path)?;
    Ok(nkvm_kube::kubeconfig::contexts(&kc))
}

/// Whether this process runs in a pod with a ServiceAccount (in-cluster mode is available).
pub fn in_cluster_available() -> bool {
    AuthMode::detect() == AuthMode::InCluster
}

/// What a session is connected to, as the connection page shows it.
#[derive(Clone)]
pub struct Connected {
    /// The engine over this connection.
    pub app: Arc<App>,
    /// What `check` found right after connecting.
    pub report: Result<CheckReport, String>,
    /// Whether the credentials were pasted (held in memory only).
    pub pasted: bool,
}

/// A snapshot of a session.
#[derive(Clone, Default)]
pub struct SessionStatus {
    /// The live connection, if any.
    pub connected: Option<Connected>,
    /// The last failed connection attempt's message (cleared by a success).
    pub last_error: Option<String>,
    /// Bumped on every connect and disconnect, so caches can tell their data is stale.
    pub generation: u64,
}

/// The current cluster connection of a long-running front-end; cheap to read.
pub struct Session {
    workspace: Arc<Workspace>,
    state: RwLock<SessionStatus>,
}

impl Session {
    /// A disconnected session over `workspace`.
    pub fn new(workspace: Arc<Workspace>) -> Self {
        Session {
            workspace,
            state: RwLock::new(SessionStatus::default()),
        }
    }

    /// The workspace (history, store, settings).
    pub fn workspace(&self) -> &Arc<Workspace> {
        &self.workspace
    }

    /// The engine of the live connection, if any.
    pub fn app(&self) -> Option<Arc<App>> {
        self.status().connected.map(|c| c.app)
    }

    /// A snapshot of the session.
    pub fn status(&self) -> SessionStatus {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connects for real (then runs `check`) and makes it the live connection. On failure the
    /// previous connection, if any, stays, and the error is kept for the connection page.
    pub async fn connect(&self, opts: ConnectOptions) -> Result<Connected, ConnectError> {
        let pasted = opts.mode == AuthMode::Paste;
        match self.workspace.connect(opts).await {
            Ok(app) => {
                let report = app.check().await.map_err(|e| e.to_string());
                let connected = Connected {
                    app,
                    report,
                    pasted,
                };
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                state.connected = Some(connected.clone());
                state.last_error = None;
                state.generation += 1;
                Ok(connected)
            }
            Err(e) => {
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                state.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Drops the live connection (and with it a pasted kubeconfig's credentials). Jobs already
    /// running keep their own handle on the engine and finish.
    pub fn disconnect(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.connected = None;
        state.last_error = None;
        state.generation += 1;
    }

    /// Whether the live connection still answers (for readiness), with what was found.
    pub async fn cluster_readiness(&self) -> ReadinessCheck {
        match self.app() {
            None => ReadinessCheck {
                name: "cluster",
                ok: false,
                detail: self
                    .status()
                    .last_error
                    .unwrap_or_else(|| "not connected".into()),
            },
            Some(app) => match app.reachable().await {
                Ok(version) => ReadinessCheck {
                    name: "cluster",
                    ok: true,
                    detail: format!("{} answers ({version})", app.cluster().server),
                },
                Err(e) => ReadinessCheck {
                    name: "cluster",
                    ok: false,
                    detail: e,
                },
            },
        }
    }
}

impl App {
    /// Asks the API server for its version (bounded by the discovery timeout): whether the
    /// cluster is reachable with these credentials now.
    pub async fn reachable(&self) -> Result<String, String> {
        let limit = self
            .settings
            .discovery_timeout
            .min(std::time::Duration::from_secs(5));
        match tokio::time::timeout(limit, self.conn.client.apiserver_version()).await {
            Ok(Ok(v)) => Ok(v.git_version),
            Ok(Err(e)) => {
                Err(
                    nkvm_kube::connect::classify(e, &self.conn.info.server, self.conn.info.mode)
                        .to_string(),
                )
            }
            Err(_) => Err(format!(
                "the Kubernetes API at {} did not answer within {} s",
                self.conn.info.server,
                limit.as_secs()
            )),
        }
    }
}
