//! Restore jobs' rows: one per restore, written when it starts and again when it ends, so a
//! crash leaves a `running` row that the next start marks `interrupted`.

use crate::columns::{failure_kind, failure_label, named};
use crate::{History, HistoryError};
use nkvm_domain::{FailureKind, JobStatus, Stage, Trigger};
use rusqlite::{OptionalExtension, params};

/// One restore job's row; serializes in the CLI/API JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRow {
    /// Restore id.
    pub id: String,
    /// The backup restored.
    pub backup_id: String,
    /// Cluster id.
    pub cluster: String,
    /// Target namespace.
    pub namespace: String,
    /// Target claim.
    pub pvc: String,
    /// Whether nkvm created the target claim.
    pub created: bool,
    /// Whether the target was emptied first.
    pub cleaned: bool,
    /// What started it.
    pub trigger: Trigger,
    /// Who started it.
    pub actor: String,
    /// Where the restore is.
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
    /// Tar bytes written into the volume.
    pub bytes_written: u64,
    /// Helper pod name.
    pub helper_pod: String,
    /// Node the helper ran on.
    pub node: String,
}

/// Which restores to list.
#[derive(Debug, Clone, Default)]
pub struct RestoreFilter {
    /// Only this target namespace.
    pub namespace: Option<String>,
    /// Only this target claim.
    pub pvc: Option<String>,
    /// Only restores of this backup.
    pub backup_id: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
}

const COLUMNS: &str =
    "id, backup_id, cluster, namespace, pvc, created, cleaned, trigger, actor, status,
    stage, failure_kind, error, started_at, finished_at, bytes_written, helper_pod, node";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<RestoreRow> {
    Ok(RestoreRow {
        id: r.get(0)?,
        backup_id: r.get(1)?,
        cluster: r.get(2)?,
        namespace: r.get(3)?,
        pvc: r.get(4)?,
        created: r.get(5)?,
        cleaned: r.get(6)?,
        trigger: named(r, 7)?,
        actor: r.get(8)?,
        status: named(r, 9)?,
        stage: named(r, 10)?,
        failure_kind: failure_kind(r, 11)?,
        error: r.get(12)?,
        started_at: r.get(13)?,
        finished_at: r.get(14)?,
        bytes_written: r.get::<_, i64>(15)? as u64,
        helper_pod: r.get(16)?,
        node: r.get(17)?,
    })
}

impl History {
    /// Inserts or replaces a restore row.
    pub fn record_restore(&self, r: &RestoreRow) -> Result<(), HistoryError> {
        let written = self.conn().execute(
            &format!(
                "INSERT OR REPLACE INTO restores ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
            ),
            params![
                r.id, r.backup_id, r.cluster, r.namespace, r.pvc, r.created, r.cleaned,
                r.trigger.as_str(), r.actor, r.status.as_str(), r.stage.as_str(),
                failure_label(r.failure_kind), r.error, r.started_at, r.finished_at,
                r.bytes_written as i64, r.helper_pod, r.node
            ],
        );
        self.counted(written).map(drop)
    }

    /// One restore row by id.
    pub fn restore(&self, id: &str) -> Result<Option<RestoreRow>, HistoryError> {
        let sql = format!("SELECT {COLUMNS} FROM restores WHERE id = ?1");
        Ok(self
            .conn()
            .query_row(&sql, params![id], row_from)
            .optional()?)
    }

    /// Restores matching `filter`, newest first.
    pub fn list_restores(&self, filter: &RestoreFilter) -> Result<Vec<RestoreRow>, HistoryError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {COLUMNS} FROM restores
             WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR pvc = ?2) AND (?3 IS NULL OR backup_id = ?3)
             ORDER BY started_at DESC, id DESC LIMIT ?4"
        );
        let mut stmt = conn.prepare(&sql)?;
        let limit = filter.limit.map_or(-1, |l| l as i64);
        let rows = stmt.query_map(
            params![filter.namespace, filter.pvc, filter.backup_id, limit],
            row_from,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks every restore still `running` as `interrupted` and returns them, so their helper
    /// pods can be swept. Their targets may hold part of the data: the error says so.
    pub fn interrupt_running_restores(
        &self,
        finished_at: &str,
    ) -> Result<Vec<RestoreRow>, HistoryError> {
        self.interrupt(
            "restores",
            COLUMNS,
            row_from,
            finished_at,
            "nkvm stopped while this restore ran; the target may hold part of the data: restore again (with --clean)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, backup: &str, status: &str) -> RestoreRow {
        RestoreRow {
            id: id.into(),
            backup_id: backup.into(),
            cluster: "c".into(),
            namespace: "ns".into(),
            pvc: "target".into(),
            status: status.parse().unwrap(),
            started_at: format!("2026-11-26T00:00:0{}Z", id.len()),
            trigger: Trigger::Cli,
            actor: "me".into(),
            ..Default::default()
        }
    }

    #[test]
    fn restores_are_recorded_listed_and_interrupted() {
        let h = History::in_memory().unwrap();
        h.record_restore(&row("r1", "b1", "succeeded")).unwrap();
        h.record_restore(&row("r22", "b1", "running")).unwrap();
        h.record_restore(&row("r333", "b2", "failed")).unwrap();
        let of_b1 = h
            .list_restores(&RestoreFilter {
                backup_id: Some("b1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            of_b1.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r22", "r1"],
            "newest first"
        );
        let interrupted = h
            .interrupt_running_restores("2026-11-26T01:00:00Z")
            .unwrap();
        assert_eq!(interrupted.len(), 1);
        let r = h.restore("r22").unwrap().unwrap();
        assert_eq!(r.status, JobStatus::Interrupted);
        assert!(r.error.contains("--clean"), "{}", r.error);
        assert_eq!(
            h.restore("r1").unwrap().unwrap().status,
            JobStatus::Succeeded
        );
    }
}
