//! nkvm's history: one row per backup job and an append-only audit log, in SQLite (WAL,
//! versioned migrations, busy timeout). The archive store is the source of truth for what was
//! backed up; this is the index the inventory and the UI read, rebuildable from the store.

use columns::{failure_kind, failure_label, named};
use nkvm_domain::{FailureKind, JobStatus, Stage, Trigger};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod columns;
mod copies;
mod policies;
mod restores;
pub use copies::BackupCopy;
pub use policies::{DeletedBackup, PolicyRunRow, PolicySkipRow, UiPolicyRow};
pub use restores::{RestoreFilter, RestoreRow};

/// Why a history operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database file could not be opened or created.
    #[error(
        "opening the history database {path}: {source}; check NKVM_METADATA_DB_PATH and that its directory is writable"
    )]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// The database's directory could not be created.
    #[error("creating the directory of the history database {path}: {source}")]
    CreateDir {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database file could not be created, or made private to its owner.
    #[error(
        "making the history database {path} readable by its owner only (mode 0600): {source}; check that nkvm's user owns it"
    )]
    Private {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Schema migration failed.
    #[error("migrating the history database {path}: {detail}")]
    Migrate {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// A query failed.
    #[error("history query failed: {0}")]
    Query(#[from] rusqlite::Error),
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE backups (
            id TEXT PRIMARY KEY,
            cluster TEXT NOT NULL,
            namespace TEXT NOT NULL,
            pvc TEXT NOT NULL,
            pvc_uid TEXT NOT NULL,
            trigger TEXT NOT NULL,
            actor TEXT NOT NULL,
            status TEXT NOT NULL,
            stage TEXT NOT NULL DEFAULT '',
            failure_kind TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            started_at TEXT NOT NULL,
            finished_at TEXT,
            bytes_read INTEGER NOT NULL DEFAULT 0,
            bytes_stored INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT NOT NULL DEFAULT '',
            compression TEXT NOT NULL,
            artifact TEXT NOT NULL DEFAULT '',
            helper_pod TEXT NOT NULL DEFAULT '',
            node TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX backups_last_success ON backups (cluster, pvc_uid, status, finished_at);
        CREATE INDEX backups_by_claim ON backups (cluster, namespace, pvc, started_at);
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );",
        ),
        M::up(
            "CREATE TABLE restores (
            id TEXT PRIMARY KEY,
            backup_id TEXT NOT NULL,
            cluster TEXT NOT NULL,
            namespace TEXT NOT NULL,
            pvc TEXT NOT NULL,
            created INTEGER NOT NULL DEFAULT 0,
            cleaned INTEGER NOT NULL DEFAULT 0,
            trigger TEXT NOT NULL,
            actor TEXT NOT NULL,
            status TEXT NOT NULL,
            stage TEXT NOT NULL DEFAULT '',
            failure_kind TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            started_at TEXT NOT NULL,
            finished_at TEXT,
            bytes_written INTEGER NOT NULL DEFAULT 0,
            helper_pod TEXT NOT NULL DEFAULT '',
            node TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX restores_by_target ON restores (cluster, namespace, pvc, started_at);
        CREATE INDEX restores_by_backup ON restores (backup_id);",
        ),
        M::up("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"),
        // 4: the store each backup went to (rows from before stores had names are `local`),
        // and the copies of a backup in other stores.
        M::up(
            "ALTER TABLE backups ADD COLUMN store TEXT NOT NULL DEFAULT 'local';
        CREATE TABLE backup_copies (
            backup_id TEXT NOT NULL,
            store TEXT NOT NULL,
            artifact TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            copied_at TEXT NOT NULL,
            PRIMARY KEY (backup_id, store)
        );",
        ),
        // 5: deletion marks, policy runs and skips, UI-made policies.
        M::up(policies::MIGRATION),
        // 6: the data path a backup took (`agent`, `direct`, `tar`); '' where it is not known (rows
        // from before, and rows the index rebuilt from manifests written before they recorded it).
        M::up("ALTER TABLE backups ADD COLUMN data_path TEXT NOT NULL DEFAULT '';"),
    ])
}

/// One backup job's row; serializes in the CLI/API JSON shape (kubectl's camelCase).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRow {
    /// Backup id.
    pub id: String,
    /// Cluster id.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Claim name.
    pub pvc: String,
    /// Claim uid.
    pub pvc_uid: String,
    /// What started it.
    pub trigger: Trigger,
    /// Who started it.
    pub actor: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Stage reached or failed in.
    pub stage: Stage,
    /// Why it failed, if it did (serialized as its label, `""` for none).
    #[serde(serialize_with = "nkvm_domain::failure::serialize_label")]
    pub failure_kind: Option<FailureKind>,
    /// Error message, if failed.
    pub error: String,
    /// RFC 3339 start.
    pub started_at: String,
    /// RFC 3339 end.
    pub finished_at: Option<String>,
    /// Bytes read from the volume.
    pub bytes_read: u64,
    /// Bytes stored.
    pub bytes_stored: u64,
    /// sha256 of the stored bytes.
    pub sha256: String,
    /// `zstd`, `gzip`, `none`.
    pub compression: String,
    /// Archive path in the store.
    pub artifact: String,
    /// Helper pod name.
    pub helper_pod: String,
    /// Node the helper ran on.
    pub node: String,
    /// The store holding the archive (`local`, or a stores-file name; `""` reads as `local`).
    pub store: String,
    /// How the volume's bytes moved (`agent`, `direct`, `tar`); `""` when not known (older
    /// rows, rows rebuilt from manifests).
    pub data_path: String,
}

/// Which backups to list.
#[derive(Debug, Clone, Default)]
pub struct BackupFilter {
    /// Only this cluster.
    pub cluster: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this claim name.
    pub pvc: Option<String>,
    /// Only claim names containing this text (the UI's search, like the Volumes page's).
    pub pvc_contains: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
    /// Also rows of backups deleted by retention or by hand (kept for audit; hidden by
    /// default, as their archives are gone).
    pub include_deleted: bool,
}

const COLUMNS: &str = "id, cluster, namespace, pvc, pvc_uid, trigger, actor, status, stage, failure_kind, error,
    started_at, finished_at, bytes_read, bytes_stored, sha256, compression, artifact, helper_pod, node, store, data_path";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        id: r.get(0)?,
        cluster: r.get(1)?,
        namespace: r.get(2)?,
        pvc: r.get(3)?,
        pvc_uid: r.get(4)?,
        trigger: named(r, 5)?,
        actor: r.get(6)?,
        status: named(r, 7)?,
        stage: named(r, 8)?,
        failure_kind: failure_kind(r, 9)?,
        error: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        bytes_read: r.get::<_, i64>(13)? as u64,
        bytes_stored: r.get::<_, i64>(14)? as u64,
        sha256: r.get(15)?,
        compression: r.get(16)?,
        artifact: r.get(17)?,
        helper_pod: r.get(18)?,
        node: r.get(19)?,
        store: r.get(20)?,
        data_path: r.get(21)?,
    })
}

/// The store name a row is written with: `local` for rows that name none.
fn store_name(store: &str) -> &str {
    if store.is_empty() { "local" } else { store }
}

/// Mode of the database file; SQLite gives its `-wal`, `-shm` and `-journal` files the same.
const FILE_MODE: u32 = 0o600;
/// Mode of directories created for the database.
const DIR_MODE: u32 = 0o700;

/// Creates the database file 0600 before SQLite opens it (SQLite would create it 0644 and give
/// the WAL and shared-memory files the same mode), or narrows an existing one and the WAL and
/// shared-memory files beside it: the history names every namespace, claim and user.
fn make_private(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::metadata(&file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => std::fs::set_permissions(
                &file,
                std::fs::Permissions::from_mode(m.permissions().mode() & 0o7700),
            )?,
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The history database.
pub struct History {
    conn: Mutex<Connection>,
    /// Writes (rows and audit entries) that failed since this handle was opened.
    write_failures: AtomicU64,
}

impl History {
    /// Opens (creating and migrating) the database at `path`. Directories it creates are
    /// 0700 and the database file 0600 (an existing one is narrowed to 0600).
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|source| HistoryError::CreateDir {
                    path: shown.clone(),
                    source,
                })?;
        }
        make_private(path).map_err(|source| HistoryError::Private {
            path: shown.clone(),
            source,
        })?;
        let conn = Connection::open(path).map_err(|source| HistoryError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::setup(conn, &shown)
    }

    /// An in-memory database (tests, dry runs).
    pub fn in_memory() -> Result<Self, HistoryError> {
        let conn = Connection::open_in_memory().map_err(|source| HistoryError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::setup(conn, ":memory:")
    }

    fn setup(mut conn: Connection, shown: &str) -> Result<Self, HistoryError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL lets the UI read while a backup writes; NORMAL is durable across app crashes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|e| HistoryError::Migrate {
                path: shown.into(),
                detail: e.to_string(),
            })?;
        Ok(History {
            conn: Mutex::new(conn),
            write_failures: AtomicU64::new(0),
        })
    }

    /// This nkvm instance's id: random, made once per history database and kept in it. Helper
    /// pods carry it, so a start-up sweep removes only this instance's leftovers.
    pub fn instance_id(&self) -> Result<String, HistoryError> {
        let conn = self.conn();
        let fresh = format!("{:016x}", rand::random::<u64>());
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('instance', ?1)",
            params![fresh],
        )?;
        Ok(
            conn.query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
                r.get(0)
            })?,
        )
    }

    /// How many row or audit writes failed since this handle was opened (a metric: a failed
    /// write means the record of what nkvm did has a gap).
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    /// Passes a write's result through, counting it when it failed.
    pub(crate) fn counted<T>(&self, r: rusqlite::Result<T>) -> Result<T, HistoryError> {
        if r.is_err() {
            self.write_failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r?)
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or replaces a backup row.
    pub fn record_backup(&self, r: &BackupRow) -> Result<(), HistoryError> {
        let written = self.conn().execute(
            "INSERT OR REPLACE INTO backups (id, cluster, namespace, pvc, pvc_uid, trigger, actor, status, stage,
                failure_kind, error, started_at, finished_at, bytes_read, bytes_stored, sha256, compression,
                artifact, helper_pod, node, store, data_path)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            params![
                r.id, r.cluster, r.namespace, r.pvc, r.pvc_uid, r.trigger.as_str(), r.actor,
                r.status.as_str(), r.stage.as_str(), failure_label(r.failure_kind), r.error, r.started_at, r.finished_at, r.bytes_read as i64, r.bytes_stored as i64,
                r.sha256, r.compression, r.artifact, r.helper_pod, r.node, store_name(&r.store), r.data_path
            ],
        );
        self.counted(written).map(drop)
    }

    /// Inserts each row whose id is not in the history yet, in one transaction, and returns
    /// the ids it inserted; rows already there are left as they are (the index rebuild).
    pub fn insert_missing(&self, rows: &[BackupRow]) -> Result<Vec<String>, HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut inserted = Vec::new();
        {
            let mut stmt = tx.prepare(
                "INSERT OR IGNORE INTO backups (id, cluster, namespace, pvc, pvc_uid, trigger, actor, status, stage,
                    failure_kind, error, started_at, finished_at, bytes_read, bytes_stored, sha256, compression,
                    artifact, helper_pod, node, store, data_path)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            )?;
            for r in rows {
                let changed = stmt.execute(params![
                    r.id,
                    r.cluster,
                    r.namespace,
                    r.pvc,
                    r.pvc_uid,
                    r.trigger.as_str(),
                    r.actor,
                    r.status.as_str(),
                    r.stage.as_str(),
                    failure_label(r.failure_kind),
                    r.error,
                    r.started_at,
                    r.finished_at,
                    r.bytes_read as i64,
                    r.bytes_stored as i64,
                    r.sha256,
                    r.compression,
                    r.artifact,
                    r.helper_pod,
                    r.node,
                    store_name(&r.store),
                    r.data_path
                ])?;
                if changed > 0 {
                    inserted.push(r.id.clone());
                }
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// The finish time of the last successful backup of each claim (by uid) of a cluster.
    pub fn last_successes(&self, cluster: &str) -> Result<HashMap<String, String>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pvc_uid, MAX(finished_at) FROM backups
             WHERE cluster = ?1 AND status = ?2 AND finished_at IS NOT NULL
               AND id NOT IN (SELECT id FROM deleted_backups)
             GROUP BY pvc_uid",
        )?;
        let rows = stmt.query_map(params![cluster, JobStatus::Succeeded.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The end of the last backup that did not succeed (failed, cancelled, interrupted) of
    /// each claim (by uid) of a cluster.
    pub fn last_failures(&self, cluster: &str) -> Result<HashMap<String, String>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pvc_uid, MAX(finished_at) FROM backups
             WHERE cluster = ?1 AND status IN (?2, ?3, ?4) AND finished_at IS NOT NULL
             GROUP BY pvc_uid",
        )?;
        let rows = stmt.query_map(
            params![
                cluster,
                JobStatus::Failed.as_str(),
                JobStatus::Cancelled.as_str(),
                JobStatus::Interrupted.as_str()
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One backup row by id.
    pub fn backup(&self, id: &str) -> Result<Option<BackupRow>, HistoryError> {
        let conn = self.conn();
        let sql = format!("SELECT {COLUMNS} FROM backups WHERE id = ?1");
        Ok(conn.query_row(&sql, params![id], row_from).optional()?)
    }

    /// Backups matching `filter`, newest first.
    pub fn list_backups(&self, filter: &BackupFilter) -> Result<Vec<BackupRow>, HistoryError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {COLUMNS} FROM backups
             WHERE (?1 IS NULL OR cluster = ?1) AND (?2 IS NULL OR namespace = ?2) AND (?3 IS NULL OR pvc = ?3)
               AND (?5 IS NULL OR instr(pvc, ?5) > 0)
               AND (?6 OR id NOT IN (SELECT id FROM deleted_backups))
             ORDER BY started_at DESC, id DESC LIMIT ?4"
        );
        let mut stmt = conn.prepare(&sql)?;
        let limit = filter.limit.map_or(-1, |l| l as i64);
        let rows = stmt.query_map(
            params![
                filter.cluster,
                filter.namespace,
                filter.pvc,
                limit,
                filter.pvc_contains,
                filter.include_deleted
            ],
            row_from,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks every job still `running` as `interrupted` (the process that ran it is gone) and
    /// returns them, so their partial archives and helper pods can be swept.
    pub fn interrupt_running(&self, finished_at: &str) -> Result<Vec<BackupRow>, HistoryError> {
        self.interrupt(
            "backups",
            COLUMNS,
            row_from,
            finished_at,
            "nkvm stopped while this job ran; no archive was kept",
        )
    }

    /// Marks the rows of `table` still running as interrupted with `error`; returns them as
    /// they were.
    fn interrupt<T>(
        &self,
        table: &str,
        columns: &str,
        row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        finished_at: &str,
        error: &str,
    ) -> Result<Vec<T>, HistoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let running = tx
            .prepare(&format!("SELECT {columns} FROM {table} WHERE status = ?1"))?
            .query_map(params![JobStatus::Running.as_str()], row)?
            .collect::<Result<Vec<T>, _>>()?;
        tx.execute(
            &format!(
                "UPDATE {table} SET status = ?1, finished_at = ?2, failure_kind = ?3, error = ?4
                 WHERE status = ?5"
            ),
            params![
                JobStatus::Interrupted.as_str(),
                finished_at,
                FailureKind::Cancelled.label(),
                error,
                JobStatus::Running.as_str()
            ],
        )?;
        tx.commit()?;
        Ok(running)
    }

    /// Appends to the audit log.
    pub fn audit(
        &self,
        at: &str,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), HistoryError> {
        let written = self.conn().execute(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![at, actor, action, target, detail],
        );
        self.counted(written).map(drop)
    }
}

impl nkvm_domain::UserError for HistoryError {
    /// The history database is storage: whatever failed there, it is unavailable.
    fn kind(&self) -> FailureKind {
        FailureKind::StorageUnavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, uid: &str, status: &str, finished: &str) -> BackupRow {
        BackupRow {
            id: id.into(),
            cluster: "c1".into(),
            namespace: "shop".into(),
            pvc: "data".into(),
            pvc_uid: uid.into(),
            trigger: Trigger::Cli,
            actor: "test".into(),
            status: status.parse().unwrap(),
            started_at: "2026-11-26T00:00:00Z".into(),
            finished_at: Some(finished.into()),
            compression: "zstd".into(),
            ..Default::default()
        }
    }

    #[test]
    fn last_success_ignores_failures_and_other_clusters() {
        let h = History::in_memory().unwrap();
        h.record_backup(&row("a", "u1", "succeeded", "2026-11-26T01:00:00Z"))
            .unwrap();
        h.record_backup(&row("b", "u1", "succeeded", "2026-11-26T02:00:00Z"))
            .unwrap();
        h.record_backup(&row("c", "u1", "failed", "2026-11-26T03:00:00Z"))
            .unwrap();
        let mut other = row("d", "u2", "succeeded", "2026-11-26T04:00:00Z");
        other.cluster = "c2".into();
        h.record_backup(&other).unwrap();
        let last = h.last_successes("c1").unwrap();
        assert_eq!(
            last.get("u1").map(String::as_str),
            Some("2026-11-26T02:00:00Z")
        );
        assert!(!last.contains_key("u2"));
        assert_eq!(h.backup("c").unwrap().unwrap().status, JobStatus::Failed);
        let failed = h.last_failures("c1").unwrap();
        assert_eq!(
            failed.get("u1").map(String::as_str),
            Some("2026-11-26T03:00:00Z")
        );
    }

    #[test]
    fn rows_from_before_stores_had_names_read_as_local_and_copies_are_kept() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations().to_version(&mut conn, 3).unwrap();
        conn.execute(
            "INSERT INTO backups (id, cluster, namespace, pvc, pvc_uid, trigger, actor, status, stage, started_at, compression)
             VALUES ('old', 'c1', 'shop', 'data', 'u1', 'cli', 'test', 'succeeded', 'commit', 't0', 'zstd')",
            [],
        )
        .unwrap();
        let h = History::setup(conn, ":memory:").unwrap();
        assert_eq!(h.backup("old").unwrap().unwrap().store, "local");
        let mut new = row("new", "u1", "succeeded", "t1");
        new.store = "offsite".into();
        h.record_backup(&new).unwrap();
        assert_eq!(h.backup("new").unwrap().unwrap().store, "offsite");
        let copy = BackupCopy {
            backup_id: "old".into(),
            store: "offsite".into(),
            artifact: "c/shop/data/x.tar.zst".into(),
            sha256: "ab".into(),
            copied_at: "t2".into(),
        };
        h.record_copy(&copy).unwrap();
        assert_eq!(h.copies("old").unwrap(), [copy]);
        h.forget_copy("old", "offsite").unwrap();
        assert!(h.copies("old").unwrap().is_empty());
    }

    #[test]
    fn the_data_path_is_kept_and_rows_from_before_it_was_recorded_read_empty() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations().to_version(&mut conn, 5).unwrap();
        conn.execute(
            "INSERT INTO backups (id, cluster, namespace, pvc, pvc_uid, trigger, actor, status, stage, started_at, compression)
             VALUES ('old', 'c1', 'shop', 'data', 'u1', 'cli', 'test', 'succeeded', 'commit', 't0', 'zstd')",
            [],
        )
        .unwrap();
        let h = History::setup(conn, ":memory:").unwrap();
        assert_eq!(h.backup("old").unwrap().unwrap().data_path, "");
        let mut new = row("new", "u1", "succeeded", "t1");
        new.data_path = "agent".into();
        h.record_backup(&new).unwrap();
        let mut indexed = row("indexed", "u1", "succeeded", "t2");
        indexed.data_path = "tar".into();
        h.insert_missing(&[indexed]).unwrap();
        assert_eq!(h.backup("new").unwrap().unwrap().data_path, "agent");
        assert_eq!(h.backup("indexed").unwrap().unwrap().data_path, "tar");
        let json = serde_json::to_value(h.backup("new").unwrap().unwrap()).unwrap();
        assert_eq!(json["dataPath"], "agent", "{json}");
    }

    #[test]
    fn missing_rows_are_inserted_and_existing_ones_are_left_alone() {
        let h = History::in_memory().unwrap();
        h.record_backup(&row("a", "u1", "failed", "t1")).unwrap();
        let added = h
            .insert_missing(&[
                row("a", "u1", "succeeded", "t1"),
                row("b", "u1", "succeeded", "t2"),
            ])
            .unwrap();
        assert_eq!(added, ["b"]);
        assert_eq!(h.backup("a").unwrap().unwrap().status, JobStatus::Failed);
        assert_eq!(h.backup("b").unwrap().unwrap().status, JobStatus::Succeeded);
        assert!(
            h.insert_missing(&[row("b", "u1", "succeeded", "t2")])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_database_file_is_created_migrated_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/backups.db");
        History::open(&path)
            .unwrap()
            .record_backup(&row("a", "u", "succeeded", "t"))
            .unwrap();
        let again = History::open(&path).unwrap();
        assert!(again.backup("a").unwrap().is_some());
        again
            .audit("t", "me", "backup.start", "shop/data", "")
            .unwrap();
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_database_its_wal_and_shm_files_and_new_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/backups.db");
        let h = History::open(&path).unwrap();
        h.record_backup(&row("a", "u", "succeeded", "t")).unwrap();
        // The WAL and shared-memory files exist while the connection is open.
        for file in ["backups.db", "backups.db-wal", "backups.db-shm"] {
            assert_eq!(
                mode(&dir.path().join("nested/deeper").join(file)),
                0o600,
                "{file}"
            );
        }
        assert_eq!(mode(&dir.path().join("nested")), 0o700);
        assert_eq!(mode(&dir.path().join("nested/deeper")), 0o700);
    }

    #[test]
    fn an_existing_world_readable_database_is_narrowed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backups.db");
        drop(History::open(&path).unwrap());
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("backups.db{suffix}"));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let h = History::open(&path).unwrap();
        assert!(h.backup("a").unwrap().is_none());
        assert_eq!(mode(&path), 0o600);
        for suffix in ["-wal", "-shm"] {
            let file = dir.path().join(format!("backups.db{suffix}"));
            if file.exists() {
                assert_eq!(mode(&file), 0o600, "{suffix}");
            }
        }
    }

    #[test]
    fn listing_filters_and_orders_newest_first_and_running_jobs_become_interrupted() {
        let h = History::in_memory().unwrap();
        let mut a = row("20261126T000001Z-00000001", "u1", "succeeded", "t1");
        a.started_at = "2026-11-26T00:00:01Z".into();
        let mut b = row("20261126T000002Z-00000002", "u1", "running", "");
        b.started_at = "2026-11-26T00:00:02Z".into();
        b.finished_at = None;
        let mut c = row("20261126T000003Z-00000003", "u2", "failed", "t3");
        c.started_at = "2026-11-26T00:00:03Z".into();
        c.pvc = "other".into();
        for r in [&a, &b, &c] {
            h.record_backup(r).unwrap();
        }
        let all = h.list_backups(&BackupFilter::default()).unwrap();
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [c.id.as_str(), b.id.as_str(), a.id.as_str()]);
        let filter = BackupFilter {
            pvc: Some("data".into()),
            limit: Some(1),
            ..Default::default()
        };
        let data = h.list_backups(&filter).unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].id, b.id);
        let interrupted = h.interrupt_running("2026-11-26T01:00:00Z").unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(
            h.backup(&b.id).unwrap().unwrap().status,
            JobStatus::Interrupted
        );
        assert!(h.interrupt_running("x").unwrap().is_empty());
    }

    #[test]
    fn the_instance_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let first = History::open(&path).unwrap().instance_id().unwrap();
        assert_eq!(first.len(), 16);
        assert_eq!(History::open(&path).unwrap().instance_id().unwrap(), first);
        let other = History::in_memory().unwrap().instance_id().unwrap();
        assert_ne!(other, first);
    }

    #[test]
    fn a_claim_name_search_matches_part_of_the_name() {
        let h = History::in_memory().unwrap();
        let mut a = row("a", "u1", "succeeded", "t1");
        a.pvc = "data-web-0".into();
        let mut b = row("b", "u2", "succeeded", "t2");
        b.pvc = "logs".into();
        h.record_backup(&a).unwrap();
        h.record_backup(&b).unwrap();
        let found = h
            .list_backups(&BackupFilter {
                pvc_contains: Some("web".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    }
}
