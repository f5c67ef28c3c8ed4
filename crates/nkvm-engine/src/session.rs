//! Connecting at run time, for long-running front-ends (the web UI): the [`Workspace`] holds
//! what needs no cluster (history, archive store, settings) and serves history, verify and
//! downloads even while disconnected; a [`Session`] holds the current cluster connection, made
//! in any of the three auth modes and replaced or dropped at will. A pasted kubeconfig lives
//! only inside the connection's client: nothing here stores its text, and disconnecting drops
//! it.

use crate::verify::{VerifyError, VerifyReport};
use crate::{App, CheckReport, EngineError, Settings};
use nkvm_domain::{BackupId, FailureKind};
use nkvm_history::History;
use nkvm_kube::ConnectError;
use nkvm_kube::kubeconfig::KubeconfigError;
use nkvm_store::{ArchiveStore, Manifest};
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

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

/// A backup's history row with its manifest (when the store can read it).
#[derive(Debug, Clone)]
pub struct BackupDetails {
    /// The history row.
    pub row: BackupRow,
    /// The manifest beside the archive (`None` when the backup kept no archive).
    pub manifest: Option<Manifest>,
    /// Why the manifest could not be read, if it could not.
    pub manifest_error: Option<String>,
}

/// A stored archive opened for download.
pub struct ArchiveDownload {
    /// A file name for it: `<namespace>-<pvc>-<id><extension>`.
    pub file_name: String,
    /// Its size in bytes as stored (`None` when the store cannot tell).
    pub size: Option<u64>,
    /// The archive's bytes (blocking reads: read on a blocking thread).
    pub reader: Box<dyn Read + Send>,
}

/// One readiness check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadinessCheck {
    /// What was checked (`history`, `store`, `cluster`).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// What needs no cluster: the history, the archive store and the settings.
pub struct Workspace {
    history: Arc<History>,
    store: Arc<dyn ArchiveStore>,
    store_dir: Option<PathBuf>,
    settings: Settings,
}

impl Workspace {
    /// A workspace over an opened history and a store.
    pub fn new(history: Arc<History>, store: Arc<dyn ArchiveStore>, settings: Settings) -> Self {
        Workspace {
            history,
            store,
            store_dir: None,
            settings,
        }
    }

    /// Names the store's local directory, so readiness can prove it writable.
    pub fn with_store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store_dir = Some(dir.into());
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Connects and returns an engine sharing this workspace's history and store.
    pub async fn connect(&self, opts: ConnectOptions) -> Result<Arc<App>, ConnectError> {
        connect_app(
            opts,
            self.history.clone(),
            self.store.clone(),
            self.settings.clone(),
        )
        .await
        .map(Arc::new)
    }

    /// History rows matching `filter`, newest first.
    pub fn backups(&self, filter: &BackupFilter) -> Result<Vec<BackupRow>, EngineError> {
        Ok(self.history.list_backups(filter)?)
    }

    /// How many bytes the last successful backup of `namespace/pvc` read (an estimate of the
    /// next one's size, for progress ETAs).
    pub fn last_backup_size(&self, namespace: &str, pvc: &str) -> Option<u64> {
        let filter = BackupFilter {
            namespace: Some(namespace.into()),
            pvc: Some(pvc.into()),
            limit: Some(20),
            ..Default::default()
        };
        let rows = self.history.list_backups(&filter).ok()?;
        rows.into_iter()
            .find(|r| r.status == "succeeded" && r.bytes_read > 0)
            .map(|r| r.bytes_read)
    }

    /// A backup's row and manifest; `None` when the history has no such id.
    pub async fn backup_details(
        &self,
        id: &BackupId,
    ) -> Result<Option<BackupDetails>, EngineError> {
        let Some(row) = self.history.backup(id.as_str())? else {
            return Ok(None);
        };
        if row.artifact.is_empty() {
            return Ok(Some(BackupDetails {
                row,
                manifest: None,
                manifest_error: None,
            }));
        }
        let (store, artifact) = (self.store.clone(), row.artifact.clone());
        let read = tokio::task::spawn_blocking(move || store.manifest(&artifact))
            .await
            .map_err(|e| EngineError::Internal(format!("reading a manifest panicked: {e}")))?;
        Ok(Some(match read {
            Ok(m) => BackupDetails {
                row,
                manifest: Some(m),
                manifest_error: None,
            },
            Err(e) => BackupDetails {
                row,
                manifest: None,
                manifest_error: Some(e.to_string()),
            },
        }))
    }

    /// Whether the history has backup `id`.
    pub fn has_backup(&self, id: &BackupId) -> Result<bool, EngineError> {
        Ok(self.history.backup(id.as_str())?.is_some())
    }

    /// Re-reads backup `id` on a blocking thread: sha256 and a complete tar stream.
    pub async fn verify(&self, id: &BackupId) -> Result<VerifyReport, VerifyError> {
        let (store, history, id) = (self.store.clone(), self.history.clone(), id.clone());
        tokio::task::spawn_blocking(move || crate::verify::verify(store.as_ref(), &history, &id))
            .await
            .map_err(|e| {
                VerifyError::Engine(EngineError::Internal(format!("verify panicked: {e}")))
            })?
    }

    /// Opens backup `id`'s archive for download.
    pub async fn open_archive(&self, id: &BackupId) -> Result<ArchiveDownload, DownloadError> {
        let row = self
            .history
            .backup(id.as_str())
            .map_err(|e| DownloadError::Store(e.to_string()))?
            .filter(|r| !r.artifact.is_empty())
            .ok_or_else(|| DownloadError::NoArchive(id.to_string()))?;
        let (store, artifact) = (self.store.clone(), row.artifact.clone());
        let (reader, size) = tokio::task::spawn_blocking(move || store.open_sized(&artifact))
            .await
            .map_err(|e| DownloadError::Store(format!("opening the archive panicked: {e}")))?
            .map_err(|e| DownloadError::Store(e.to_string()))?;
        let extension = row
            .artifact
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_prefix(row.id.as_str()))
            .unwrap_or(".tar");
        Ok(ArchiveDownload {
            file_name: format!("{}-{}-{}{extension}", row.namespace, row.pvc, row.id),
            size,
            reader,
        })
    }

    /// Whether the history answers and the store directory takes a write.
    pub async fn readiness(&self) -> Vec<ReadinessCheck> {
        let history = match self.history.list_backups(&BackupFilter {
            limit: Some(1),
            ..Default::default()
        }) {
            Ok(_) => ReadinessCheck {
                name: "history",
                ok: true,
                detail: "the history database answers".into(),
            },
            Err(e) => ReadinessCheck {
                name: "history",
                ok: false,
                detail: e.to_string(),
            },
        };
        let store = match self.store_dir.clone() {
            None => ReadinessCheck {
                name: "store",
                ok: true,
                detail: "the store has no local directory to probe".into(),
            },
            Some(dir) => tokio::task::spawn_blocking(move || probe_writable(&dir))
                .await
                .unwrap_or_else(|e| Err(format!("the probe panicked: {e}")))
                .map_or_else(
                    |detail| ReadinessCheck {
                        name: "store",
                        ok: false,
                        detail,
                    },
                    |detail| ReadinessCheck {
                        name: "store",
                        ok: true,
                        detail,
                    },
                ),
        };
        vec![history, store]
    }

    /// Appends to the audit log (downloads, verifications and logins from the UI); a failure
    /// is logged, not returned: the action itself already happened.
    pub fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) {
        let at = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        if let Err(e) = self.history.audit(&at, actor, action, target, detail) {
            tracing::warn!(error = %e, action, "writing the audit log failed");
        }
    }

    /// Marks every history row (backups and restores) still `running` as `interrupted` (jobs
    /// that could not finish before shutdown); returns their ids.
    pub fn interrupt_running(&self) -> Result<Vec<String>, EngineError> {
        let at = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let backups = self
            .history
            .interrupt_running(&at)?
            .into_iter()
            .map(|r| (r.id, r.namespace, r.pvc));
        let restores = self
            .history
            .interrupt_running_restores(&at)?
            .into_iter()
            .map(|r| (r.id, r.namespace, r.pvc));
        let mut ids = Vec::new();
        for (id, namespace, pvc) in backups.chain(restores) {
            let target = format!("{namespace}/{pvc}");
            let _ = self
                .history
                .audit(&at, "serve", "shutdown.interrupted", &target, &id);
            ids.push(id);
        }
        Ok(ids)
    }
}

/// Creates, writes and removes a probe file in `dir` (created if missing).
fn probe_writable(dir: &Path) -> Result<String, String> {
    use std::io::Write;
    let shown = dir.display();
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("creating {shown}: {e}; check NKVM_BACKUP_DIR"))?;
    let probe = dir.join(format!(".nkvm-readyz-{:08x}", rand::random::<u32>()));
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"ok").and_then(|()| f.sync_all()));
    let removed = std::fs::remove_file(&probe);
    written.map_err(|e| format!("{shown} is not writable: {e}; check NKVM_BACKUP_DIR"))?;
    removed.map_err(|e| format!("removing the probe file in {shown}: {e}"))?;
    Ok(format!("{shown} is writable"))
}

/// Why a download could not start.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No such backup, or it kept no archive.
    #[error("backup {0} has no archive to download")]
    NoArchive(String),
    /// The history or the store failed.
    #[error("opening the archive: {0}")]
    Store(String),
}

impl DownloadError {
    /// The failure kind.
    pub fn kind(&self) -> FailureKind {
        match self {
            DownloadError::NoArchive(_) => FailureKind::NotFound,
            DownloadError::Store(_) => FailureKind::StorageUnavailable,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(store_dir: &Path) -> Workspace {
        Workspace::new(
            Arc::new(History::in_memory().unwrap()),
            Arc::new(nkvm_store::LocalStore::new(store_dir)),
            Settings::default(),
        )
        .with_store_dir(store_dir)
    }

    fn row(id: &str, status: &str, bytes_read: u64) -> BackupRow {
        BackupRow {
            id: id.into(),
            cluster: "c".into(),
            namespace: "shop".into(),
            pvc: "data".into(),
            status: status.into(),
            started_at: id.into(),
            bytes_read,
            compression: "zstd".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn readiness_proves_the_store_writable_and_names_the_problem_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let good = workspace(&dir.path().join("backups")).readiness().await;
        assert!(good.iter().all(|c| c.ok), "{good:?}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("backups"))
                .unwrap()
                .count(),
            0
        );
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let bad = workspace(&file.join("backups")).readiness().await;
        let store = bad.iter().find(|c| c.name == "store").unwrap();
        assert!(!store.ok);
        assert!(store.detail.contains("a-file"), "{store:?}");
    }

    #[tokio::test]
    async fn the_size_estimate_is_the_last_successful_backups() {
        let dir = tempfile::tempdir().unwrap();
        let w = workspace(dir.path());
        assert_eq!(w.last_backup_size("shop", "data"), None);
        w.history
            .record_backup(&row("1", "succeeded", 100))
            .unwrap();
        w.history
            .record_backup(&row("2", "succeeded", 300))
            .unwrap();
        w.history.record_backup(&row("3", "failed", 5)).unwrap();
        assert_eq!(w.last_backup_size("shop", "data"), Some(300));
        assert_eq!(w.last_backup_size("shop", "other"), None);
    }

    #[tokio::test]
    async fn interrupting_marks_only_running_rows() {
        let dir = tempfile::tempdir().unwrap();
        let w = workspace(dir.path());
        w.history.record_backup(&row("1", "running", 0)).unwrap();
        w.history.record_backup(&row("2", "succeeded", 1)).unwrap();
        assert_eq!(w.interrupt_running().unwrap(), ["1"]);
        assert_eq!(
            w.history.backup("1").unwrap().unwrap().status,
            "interrupted"
        );
        assert_eq!(w.history.backup("2").unwrap().unwrap().status, "succeeded");
    }
}
