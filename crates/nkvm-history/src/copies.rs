//! Copies of a backup in other stores than the one it was made to (`nkvm copy`): which store
//! holds a copy, under which artifact, with the hash checked on arrival.

use crate::{History, HistoryError};
use rusqlite::params;

/// One copy of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupCopy {
    /// The backup's id.
    pub backup_id: String,
    /// The store holding the copy.
    pub store: String,
    /// The copy's artifact path in that store.
    pub artifact: String,
    /// sha256 of the copy as read back.
    pub sha256: String,
    /// RFC 3339 time the copy was made.
    pub copied_at: String,
}

impl History {
    /// Records a copy (replacing an earlier record of the same backup in the same store).
    pub fn record_copy(&self, c: &BackupCopy) -> Result<(), HistoryError> {
        let written = self.conn().execute(
            "INSERT OR REPLACE INTO backup_copies (backup_id, store, artifact, sha256, copied_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.backup_id, c.store, c.artifact, c.sha256, c.copied_at],
        );
        self.counted(written).map(drop)
    }

    /// The copies of a backup, by store name.
    pub fn copies(&self, backup_id: &str) -> Result<Vec<BackupCopy>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT backup_id, store, artifact, sha256, copied_at FROM backup_copies
             WHERE backup_id = ?1 ORDER BY store",
        )?;
        let rows = stmt.query_map(params![backup_id], |r| {
            Ok(BackupCopy {
                backup_id: r.get(0)?,
                store: r.get(1)?,
                artifact: r.get(2)?,
                sha256: r.get(3)?,
                copied_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets the copy of a backup in `store` (after it was deleted there).
    pub fn forget_copy(&self, backup_id: &str, store: &str) -> Result<(), HistoryError> {
        let written = self.conn().execute(
            "DELETE FROM backup_copies WHERE backup_id = ?1 AND store = ?2",
            params![backup_id, store],
        );
        self.counted(written).map(drop)
    }
}
