//! The workspace of a long-running front-end: what needs no cluster (the history, the archive
//! store and the settings). It serves the history, verification, downloads and readiness even
//! while no cluster is connected, and makes engines for new connections.

use crate::session::connect_app;
use crate::verify::{VerifyError, VerifyReport};
use crate::{App, EngineError, Settings};
use nkvm_domain::{BackupId, FailureKind, JobStatus};
use nkvm_history::{BackupFilter, BackupRow, History};
use nkvm_kube::{ConnectError, ConnectOptions};
use nkvm_store::{ArchiveStore, Manifest, Stores};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A backup's history row with its manifest (when the store can read it).
#[derive(Debug, Clone)]
pub struct BackupDetails {
    /// The history row.
    pub row: BackupRow,
    /// The manifest beside the archive (`None` when the backup kept no archive).
    pub manifest: Option<Manifest>,
    /// Why the manifest could not be read, if it could not.
    pub manifest_error: Option<String>,
    /// Copies of the backup in other stores (`nkvm copy`).
    pub copies: Vec<nkvm_history::BackupCopy>,
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
    stores: Arc<Stores>,
    store_dir: Option<PathBuf>,
    settings: Settings,
}

impl Workspace {
    /// A workspace over an opened history and a store (the `local` store;
    /// [`with_stores`](Self::with_stores) names more).
    pub fn new(history: Arc<History>, store: Arc<dyn ArchiveStore>, settings: Settings) -> Self {
        Workspace {
            history,
            stores: Arc::new(Stores::local(store, "")),
            store_dir: None,
            settings,
        }
    }

    /// The same workspace over these named stores (`local` among them).
    pub fn with_stores(mut self, stores: Arc<Stores>) -> Self {
        self.stores = stores;
        self
    }

    /// The named stores.
    pub fn stores(&self) -> &Arc<Stores> {
        &self.stores
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

    /// The history database.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Connects and returns an engine sharing this workspace's history and store.
    pub async fn connect(&self, opts: ConnectOptions) -> Result<Arc<App>, ConnectError> {
        connect_app(
            opts,
            self.history.clone(),
            self.stores.local_store(),
            self.settings.clone(),
        )
        .await
        .map(|app| Arc::new(app.with_stores(self.stores.clone())))
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
            .find(|r| r.status == JobStatus::Succeeded && r.bytes_read > 0)
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
        let copies = self.history.copies(id.as_str())?;
        if row.artifact.is_empty() {
            return Ok(Some(BackupDetails {
                row,
                manifest: None,
                manifest_error: None,
                copies,
            }));
        }
        let (stores, name, artifact) =
            (self.stores.clone(), row.store.clone(), row.artifact.clone());
        let read = tokio::task::spawn_blocking(move || stores.store(&name)?.manifest(&artifact))
            .await
            .map_err(|e| EngineError::Internal(format!("reading a manifest panicked: {e}")))?;
        Ok(Some(match read {
            Ok(m) => BackupDetails {
                row,
                manifest: Some(m),
                manifest_error: None,
                copies,
            },
            Err(e) => BackupDetails {
                row,
                manifest: None,
                manifest_error: Some(e.to_string()),
                copies,
            },
        }))
    }

    /// Whether the history has backup `id`.
    pub fn has_backup(&self, id: &BackupId) -> Result<bool, EngineError> {
        Ok(self.history.backup(id.as_str())?.is_some())
    }

    /// Re-reads backup `id` on a blocking thread: sha256 and a complete tar stream.
    pub async fn verify(&self, id: &BackupId) -> Result<VerifyReport, VerifyError> {
        let opts = crate::verify::VerifyOptions {
            identity_file: self.settings.age_identity_file.clone(),
            ..Default::default()
        };
        let (stores, history, id) = (self.stores.clone(), self.history.clone(), id.clone());
        tokio::task::spawn_blocking(move || crate::verify::verify(&stores, &history, &id, &opts))
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
        let (stores, history, found) = (self.stores.clone(), self.history.clone(), row.clone());
        // Whichever store holds it: the backup's own, else a copy (`nkvm copy`), served as
        // stored (an encrypted archive stays an age file).
        let (artifact, reader, size) = tokio::task::spawn_blocking(move || {
            let places = crate::located::places(&history, &found)
                .map_err(|e| DownloadError::Store(e.to_string()))?;
            let mut first_error = None;
            for (store, artifact, _) in places {
                match stores.store(&store).and_then(|s| s.open_sized(&artifact)) {
                    Ok((reader, size)) => return Ok((artifact, reader, size)),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            Err(DownloadError::Store(first_error.map_or_else(
                || "no store holds it".into(),
                |e| e.to_string(),
            )))
        })
        .await
        .map_err(|e| DownloadError::Store(format!("opening the archive panicked: {e}")))??;
        let extension = artifact
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

    /// History rows and audit entries that could not be written since start (a metric).
    pub fn history_write_failures(&self) -> u64 {
        self.history.write_failures()
    }

    /// Appends to the audit log (downloads, verifications and logins from the UI); a failure
    /// is logged, not returned: the action itself already happened.
    pub fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) {
        let at = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        if let Err(e) = self.history.audit(&at, actor, action, target, detail) {
            tracing::error!(error = %e, action, "writing the audit log failed");
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
    use std::os::unix::fs::DirBuilderExt;
    let shown = dir.display();
    // A store root made here is private like everything under it (0700).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
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

impl nkvm_domain::UserError for DownloadError {
    /// The failure kind.
    fn kind(&self) -> FailureKind {
        match self {
            DownloadError::NoArchive(_) => FailureKind::NotFound,
            DownloadError::Store(_) => FailureKind::StorageUnavailable,
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
            status: status.parse().unwrap(),
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
            JobStatus::Interrupted
        );
        assert_eq!(
            w.history.backup("2").unwrap().unwrap().status,
            JobStatus::Succeeded
        );
    }
}
