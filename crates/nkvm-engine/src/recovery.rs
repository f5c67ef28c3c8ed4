//! Recovering from a crash and from a lost index. [`App::recover`] cleans up what a process
//! that stopped mid-backup left behind: history rows still `running` become `interrupted`,
//! hidden partial archives are deleted, and helper pods are deleted. [`rebuild_index`] puts
//! every archive the store holds but the history does not list back into the history: the
//! store is the source of truth and the history only indexes it. A backup found in a second
//! store (same backup id) is recorded as a copy there, as `nkvm copy` would have.

use crate::lifecycle::now_rfc3339;
use crate::{App, EngineError};
use nkvm_domain::{FailureKind, JobStatus, Stage, Trigger};
use nkvm_history::{BackupCopy, BackupRow, History, HistoryError};
use nkvm_store::{ArchiveStore, Manifest, StoreError};
use serde::Serialize;

/// The actor recovery's audit entries name.
const RECOVERY_ACTOR: &str = "recovery";
/// The actor of the rows and audit entry an index rebuild writes.
pub const INDEX_ACTOR: &str = "index-rebuild";

/// What [`App::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryReport {
    /// Backup and restore ids found `running` and marked `interrupted`.
    pub interrupted: Vec<String>,
    /// Partial archives deleted (paths in the store).
    pub partials_deleted: Vec<String>,
    /// Helper pods deleted (`namespace/name`).
    pub helper_pods_deleted: Vec<String>,
    /// What could not be cleaned up, each with what to do about it.
    pub failures: Vec<String>,
}

/// What [`rebuild_index`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexReport {
    /// Archives the store lists.
    pub archives: usize,
    /// History rows added.
    pub added: usize,
    /// The backup ids of the rows added.
    pub added_ids: Vec<String>,
    /// Copies recorded: archives of backups the history already lists in another store.
    pub copies_added: usize,
    /// The backup ids of the copies recorded.
    pub copy_ids: Vec<String>,
    /// Store entries that were not listed (orphans, unreadable manifests), and why.
    pub warnings: Vec<String>,
}

/// Why an index rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The store could not be listed at all.
    #[error("rebuilding the history index: {0}")]
    ListStore(#[source] StoreError),
    /// The history could not be written.
    #[error("rebuilding the history index: {0}")]
    History(#[source] HistoryError),
}

impl nkvm_domain::UserError for IndexError {
    /// The failure kind.
    fn kind(&self) -> FailureKind {
        match self {
            IndexError::ListStore(e) => e.kind(),
            IndexError::History(_) => FailureKind::StorageUnavailable,
        }
    }
}

/// Appends an audit entry; a failure is logged at error level (and counted by the history's
/// write-failure metric), not fatal, because the cleanup it records has already happened.
fn audit(history: &History, at: &str, actor: &str, action: &str, target: &str, detail: &str) {
    if let Err(e) = history.audit(at, actor, action, target, detail) {
        tracing::error!(error = %e, action, target, "writing an audit entry failed");
    }
}

impl App {
    /// Cleans up after nkvm processes that stopped while backing up: marks every `running`
    /// history row `interrupted`, deletes the store's partial archives, and deletes the helper
    /// pods (labelled `app.kubernetes.io/managed-by=nkvm` with a job id) in the allowed
    /// namespaces, or every namespace the credentials can list when the allowlist is empty.
    ///
    /// Every job is taken to be dead: call it before this process starts any job, and never
    /// while another nkvm process backs up with the same database or store.
    pub async fn recover(&self) -> Result<RecoveryReport, EngineError> {
        let at = now_rfc3339();
        let mut report = RecoveryReport::default();
        for row in self.history.interrupt_running(&at)? {
            let target = format!("{}/{}", row.namespace, row.pvc);
            audit(
                &self.history,
                &at,
                RECOVERY_ACTOR,
                "recover.interrupted",
                &target,
                &row.id,
            );
            report.interrupted.push(row.id);
        }
        for row in self.history.interrupt_running_restores(&at)? {
            let target = format!("{}/{}", row.namespace, row.pvc);
            audit(
                &self.history,
                &at,
                RECOVERY_ACTOR,
                "recover.restore-interrupted",
                &target,
                &row.id,
            );
            report.interrupted.push(row.id);
        }
        for named in self.stores.all() {
            self.sweep_store(named, &at, &mut report).await?;
        }
        self.sweep_own_helpers(&at, &mut report).await?;
        Ok(report)
    }

    /// Deletes what crashed writers left in one store (temp files, open uploads).
    async fn sweep_store(
        &self,
        named: &nkvm_store::NamedStore,
        at: &str,
        report: &mut RecoveryReport,
    ) -> Result<(), EngineError> {
        let store = named.store.clone();
        let swept = tokio::task::spawn_blocking(move || store.sweep_partials())
            .await
            .map_err(|e| {
                EngineError::Internal(format!("sweeping partial archives panicked: {e}"))
            })?;
        match swept {
            Ok(paths) => {
                for path in paths {
                    let path = path.display().to_string();
                    audit(
                        &self.history,
                        at,
                        RECOVERY_ACTOR,
                        "recover.partial-deleted",
                        &path,
                        "",
                    );
                    report.partials_deleted.push(path);
                }
            }
            Err(e) => report.failures.push(format!(
                "deleting leftover partial archives in store {:?}: {e}",
                named.name
            )),
        }
        Ok(())
    }

    /// Deletes this instance's helper pods. This process runs no job yet (recovery comes
    /// first), so none is kept; another instance's (another history database's) are not ours.
    async fn sweep_own_helpers(
        &self,
        at: &str,
        report: &mut RecoveryReport,
    ) -> Result<(), EngineError> {
        let namespaces: Vec<String> = self
            .settings
            .allowlist
            .namespaces()
            .iter()
            .map(ToString::to_string)
            .collect();
        let instance = self.history.instance_id()?;
        let sweep =
            nkvm_kube::helper::sweep_helpers(&self.conn.client, &namespaces, &instance, |_| false)
                .await;
        for pod in sweep.deleted {
            audit(
                &self.history,
                at,
                RECOVERY_ACTOR,
                "recover.helper-deleted",
                &pod,
                "",
            );
            report.helper_pods_deleted.push(pod);
        }
        report
            .failures
            .extend(sweep.failures.iter().map(ToString::to_string));
        Ok(())
    }
}

/// The history row a manifest stands for: a succeeded backup, found by the index rebuild.
/// `artifact` is where the listing found the archive, which wins over the manifest's copy.
pub fn row_from_manifest(store: &str, artifact: &str, m: &Manifest) -> BackupRow {
    BackupRow {
        id: m.backup_id.to_string(),
        cluster: m.cluster.clone(),
        namespace: m.namespace.clone(),
        pvc: m.pvc.name.clone(),
        pvc_uid: m.pvc.uid.clone(),
        trigger: Trigger::Index,
        actor: INDEX_ACTOR.into(),
        status: JobStatus::Succeeded,
        // The last stage of a backup that kept its archive.
        stage: Stage::Commit,
        failure_kind: None,
        error: String::new(),
        started_at: m.started_at.clone(),
        finished_at: Some(m.finished_at.clone()),
        bytes_read: m.bytes_read,
        bytes_stored: m.bytes_stored,
        sha256: m.sha256.clone(),
        compression: m.compression.as_str().into(),
        artifact: artifact.into(),
        helper_pod: String::new(),
        node: m.node.clone(),
        store: store.into(),
        // Empty for manifests written before they recorded it.
        data_path: m.data_path.clone(),
    }
}

/// Records as copies in `store_name` the archives of backups the history already lists with
/// a kept archive in another store (their primary), unless that copy is recorded already.
/// Returns the ids recorded. `copied_at` is the rebuild's time: manifests do not say when a
/// copy was made.
fn record_found_copies(
    store_name: &str,
    archives: &[(String, Manifest)],
    added: &[String],
    history: &History,
) -> Result<Vec<String>, HistoryError> {
    let at = now_rfc3339();
    let mut recorded = Vec::new();
    for (artifact, m) in archives {
        let id = m.backup_id.to_string();
        if added.contains(&id) {
            continue;
        }
        let Some(row) = history.backup(&id)? else {
            continue;
        };
        let primary = if row.store.is_empty() {
            nkvm_store::config::LOCAL
        } else {
            row.store.as_str()
        };
        let kept = row.status == JobStatus::Succeeded && !row.artifact.is_empty();
        if !kept || primary == store_name {
            continue;
        }
        if history.copies(&id)?.iter().any(|c| c.store == store_name) {
            continue;
        }
        history.record_copy(&BackupCopy {
            backup_id: id.clone(),
            store: store_name.into(),
            artifact: artifact.clone(),
            sha256: m.sha256.clone(),
            copied_at: at.clone(),
        })?;
        recorded.push(id);
    }
    Ok(recorded)
}

/// Adds a `succeeded` history row for every archive in the store whose backup id the history
/// does not hold; rows already there are left alone. An archive whose backup the history
/// already lists in another store is recorded as a copy in this one: the first store rebuilt
/// holds a backup's row, later ones its copies. Needs no cluster. Blocking: call it from a
/// blocking thread.
pub fn rebuild_index(
    store_name: &str,
    store: &dyn ArchiveStore,
    history: &History,
) -> Result<IndexReport, IndexError> {
    let listing = store.list_manifests().map_err(IndexError::ListStore)?;
    let rows: Vec<BackupRow> = listing
        .archives
        .iter()
        .map(|(artifact, manifest)| row_from_manifest(store_name, artifact, manifest))
        .collect();
    let added_ids = history.insert_missing(&rows).map_err(IndexError::History)?;
    let copy_ids = record_found_copies(store_name, &listing.archives, &added_ids, history)
        .map_err(IndexError::History)?;
    let report = IndexReport {
        archives: rows.len(),
        added: added_ids.len(),
        added_ids,
        copies_added: copy_ids.len(),
        copy_ids,
        warnings: listing.warnings.iter().map(ToString::to_string).collect(),
    };
    audit(
        history,
        &now_rfc3339(),
        INDEX_ACTOR,
        "index.rebuild",
        store_name,
        &format!(
            "added {} of {} archives, {} copies, {} warnings",
            report.added,
            report.archives,
            report.copies_added,
            report.warnings.len()
        ),
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkvm_domain::Compression;
    use nkvm_store::{ArchiveKey, FORMAT_VERSION, LocalStore, PvcIdentity};
    use std::io::Write;

    const ID: &str = "20261126T010203Z-deadbeef";

    fn manifest(id: &str) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            backup_id: id.parse().expect("a valid id"),
            cluster: "c1".into(),
            namespace: "shop".into(),
            pvc: PvcIdentity {
                name: "data".into(),
                uid: "uid-1".into(),
            },
            pvc_spec: serde_json::json!({}),
            node: "node-a".into(),
            started_at: "2026-11-26T01:02:03Z".into(),
            finished_at: "2026-11-26T01:02:09Z".into(),
            bytes_read: 10240,
            bytes_stored: 0,
            sha256: String::new(),
            compression: Compression::Zstd,
            tool_version: "test".into(),
            artifact: String::new(),
            encryption: None,
            data_path: String::new(),
        }
    }

    fn store_one(store: &LocalStore, id: &str) {
        let key = ArchiveKey {
            cluster: "c1".into(),
            namespace: "shop".into(),
            pvc: "data".into(),
            id: id.parse().expect("a valid id"),
            compression: Compression::Zstd,
            encrypted: false,
        };
        let mut writer = store.begin(&key).expect("begin");
        writer.write_all(b"not really zstd").expect("write");
        writer.commit(&manifest(id)).expect("commit");
    }

    #[test]
    fn a_manifest_becomes_a_succeeded_row_found_by_the_index() {
        let row = row_from_manifest("local", "c1/shop/data/x.tar.zst", &manifest(ID));
        assert_eq!(row.id, ID);
        assert_eq!((row.namespace.as_str(), row.pvc.as_str()), ("shop", "data"));
        assert_eq!(row.pvc_uid, "uid-1");
        assert_eq!(row.status, JobStatus::Succeeded);
        assert_eq!(
            (row.trigger.as_str(), row.actor.as_str()),
            ("index", "index-rebuild")
        );
        assert_eq!(row.finished_at.as_deref(), Some("2026-11-26T01:02:09Z"));
        assert_eq!(row.compression, "zstd");
        assert_eq!(row.artifact, "c1/shop/data/x.tar.zst");
        assert_eq!(row.node, "node-a");
    }

    #[test]
    fn rebuild_adds_missing_archives_once_and_keeps_existing_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::new(dir.path());
        let other = "20261126T010204Z-0000beef";
        store_one(&store, ID);
        store_one(&store, other);
        let history = History::in_memory().expect("history");
        let failed = BackupRow {
            status: JobStatus::Failed,
            ..row_from_manifest("local", "", &manifest(other))
        };
        history.record_backup(&failed).expect("record");

        let report = rebuild_index("local", &store, &history).expect("rebuild");
        assert_eq!((report.archives, report.added), (2, 1));
        assert_eq!(report.added_ids, [ID]);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let row = history.backup(ID).expect("query").expect("row added");
        assert_eq!(row.artifact, format!("c1/shop/data/{ID}.tar.zst"));
        assert_eq!(row.sha256.len(), 64, "the committed sha256 comes along");
        assert_eq!(
            history.backup(other).expect("query").expect("row").status,
            JobStatus::Failed
        );

        let again = rebuild_index("local", &store, &history).expect("rebuild again");
        assert_eq!(again.added, 0);
    }

    #[test]
    fn a_backup_found_in_a_second_store_is_recorded_as_a_copy_there_once() {
        let (a, b) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (local, offsite) = (LocalStore::new(a.path()), LocalStore::new(b.path()));
        let only_offsite = "20261126T010204Z-0000beef";
        store_one(&local, ID);
        store_one(&offsite, ID);
        store_one(&offsite, only_offsite);
        let history = History::in_memory().expect("history");

        let first = rebuild_index("local", &local, &history).expect("rebuild local");
        assert_eq!((first.added, first.copies_added), (1, 0));
        let second = rebuild_index("offsite", &offsite, &history).expect("rebuild offsite");
        assert_eq!((second.archives, second.added), (2, 1));
        assert_eq!(second.added_ids, [only_offsite]);
        assert_eq!(second.copy_ids, [ID]);
        assert_eq!(
            history.backup(ID).expect("query").expect("row").store,
            "local"
        );
        let copies = history.copies(ID).expect("copies");
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(copies[0].store, "offsite");
        assert_eq!(copies[0].artifact, format!("c1/shop/data/{ID}.tar.zst"));
        assert_eq!(copies[0].sha256.len(), 64, "the copy's committed sha256");
        assert!(history.copies(only_offsite).expect("copies").is_empty());

        let again = rebuild_index("offsite", &offsite, &history).expect("again");
        assert_eq!((again.added, again.copies_added), (0, 0));
        let local_again = rebuild_index("local", &local, &history).expect("local again");
        assert_eq!(
            local_again.copies_added, 0,
            "the row's own store is no copy"
        );
    }

    #[test]
    fn an_archive_of_a_backup_the_history_lists_as_failed_is_no_copy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::new(dir.path());
        store_one(&store, ID);
        let history = History::in_memory().expect("history");
        let failed = BackupRow {
            status: JobStatus::Failed,
            artifact: String::new(),
            ..row_from_manifest("local", "", &manifest(ID))
        };
        history.record_backup(&failed).expect("record");
        let report = rebuild_index("offsite", &store, &history).expect("rebuild");
        assert_eq!((report.added, report.copies_added), (0, 0));
        assert!(history.copies(ID).expect("copies").is_empty());
    }

    #[test]
    fn an_orphan_archive_is_a_warning_not_a_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::new(dir.path());
        store_one(&store, ID);
        std::fs::remove_file(dir.path().join(format!("c1/shop/data/{ID}.json"))).expect("rm");
        let history = History::in_memory().expect("history");
        let report = rebuild_index("local", &store, &history).expect("rebuild");
        assert_eq!((report.archives, report.added), (0, 0));
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(
            report.warnings[0].contains("manifest"),
            "{:?}",
            report.warnings
        );
    }
}
