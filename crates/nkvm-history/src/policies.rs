//! What policies leave in the history: deletion marks (a deleted backup's row stays, for
//! audit, but no longer counts as a backup), each scheduled slot's outcome (ran or missed),
//! claims a run skipped and why, and the policies made in the UI.

use crate::{History, HistoryError};
use rusqlite::{OptionalExtension, params};

/// The schema these tables need.
pub(crate) const MIGRATION: &str = "
CREATE TABLE deleted_backups (
    id TEXT PRIMARY KEY,
    deleted_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE policy_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    policy TEXT NOT NULL,
    slot TEXT NOT NULL,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX policy_runs_by_policy ON policy_runs (policy, slot);
CREATE TABLE policy_skips (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    policy TEXT NOT NULL,
    slot TEXT NOT NULL,
    at TEXT NOT NULL,
    namespace TEXT NOT NULL,
    pvc TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX policy_skips_by_at ON policy_skips (at);
CREATE TABLE ui_policies (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);";

/// A backup marked deleted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedBackup {
    /// Backup id.
    pub id: String,
    /// RFC 3339 time of the deletion.
    pub deleted_at: String,
    /// Who deleted it (`policy:NAME` for retention).
    pub actor: String,
    /// Why (`retention`, `by hand`).
    pub reason: String,
}

/// One scheduled slot of a policy and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRunRow {
    /// Policy name.
    pub policy: String,
    /// RFC 3339 slot time.
    pub slot: String,
    /// RFC 3339 time it was recorded.
    pub at: String,
    /// `ran`, `missed`, `manual`.
    pub outcome: String,
    /// What happened, in words.
    pub detail: String,
}

/// A claim a policy run did not back up, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySkipRow {
    /// Policy name.
    pub policy: String,
    /// RFC 3339 slot time of the run.
    pub slot: String,
    /// RFC 3339 time it was recorded.
    pub at: String,
    /// Namespace.
    pub namespace: String,
    /// Claim.
    pub pvc: String,
    /// Why it was skipped.
    pub reason: String,
}

/// A policy made in the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiPolicyRow {
    /// Name.
    pub name: String,
    /// The policy's spec as JSON.
    pub spec: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
    /// Who changed it last.
    pub updated_by: String,
}

impl History {
    /// Marks backup `id` deleted; false when it already was.
    pub fn mark_deleted(&self, d: &DeletedBackup) -> Result<bool, HistoryError> {
        let written = self.conn().execute(
            "INSERT OR IGNORE INTO deleted_backups (id, deleted_at, actor, reason) VALUES (?1, ?2, ?3, ?4)",
            params![d.id, d.deleted_at, d.actor, d.reason],
        );
        self.counted(written).map(|n| n > 0)
    }

    /// The deletion mark of backup `id`, if it has one.
    pub fn deleted(&self, id: &str) -> Result<Option<DeletedBackup>, HistoryError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, deleted_at, actor, reason FROM deleted_backups WHERE id = ?1",
                params![id],
                |r| {
                    Ok(DeletedBackup {
                        id: r.get(0)?,
                        deleted_at: r.get(1)?,
                        actor: r.get(2)?,
                        reason: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records what became of a policy's slot.
    pub fn record_policy_run(&self, r: &PolicyRunRow) -> Result<(), HistoryError> {
        let written = self.conn().execute(
            "INSERT INTO policy_runs (policy, slot, at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![r.policy, r.slot, r.at, r.outcome, r.detail],
        );
        self.counted(written).map(drop)
    }

    /// The newest slot of `policy` that was run or recorded missed (manual runs excluded).
    pub fn last_policy_slot(&self, policy: &str) -> Result<Option<String>, HistoryError> {
        Ok(self.conn().query_row(
            "SELECT MAX(slot) FROM policy_runs WHERE policy = ?1 AND outcome IN ('ran', 'missed')",
            params![policy],
            |r| r.get(0),
        )?)
    }

    /// The newest `limit` slot records, newest first (optionally of one policy).
    pub fn policy_runs(
        &self,
        policy: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PolicyRunRow>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT policy, slot, at, outcome, detail FROM policy_runs
             WHERE (?1 IS NULL OR policy = ?1) ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![policy, limit], |r| {
            Ok(PolicyRunRow {
                policy: r.get(0)?,
                slot: r.get(1)?,
                at: r.get(2)?,
                outcome: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a claim a run skipped.
    pub fn record_policy_skip(&self, r: &PolicySkipRow) -> Result<(), HistoryError> {
        let written = self.conn().execute(
            "INSERT INTO policy_skips (policy, slot, at, namespace, pvc, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![r.policy, r.slot, r.at, r.namespace, r.pvc, r.reason],
        );
        self.counted(written).map(drop)
    }

    /// Skips recorded at or after `since` (RFC 3339), newest first.
    pub fn policy_skips_since(&self, since: &str) -> Result<Vec<PolicySkipRow>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT policy, slot, at, namespace, pvc, reason FROM policy_skips
             WHERE at >= ?1 ORDER BY seq DESC LIMIT 1000",
        )?;
        let rows = stmt.query_map(params![since], |r| {
            Ok(PolicySkipRow {
                policy: r.get(0)?,
                slot: r.get(1)?,
                at: r.get(2)?,
                namespace: r.get(3)?,
                pvc: r.get(4)?,
                reason: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` audit entries as `(action, target, detail)`, newest first.
    pub fn recent_audit(&self, limit: u32) -> Result<Vec<(String, String, String)>, HistoryError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT action, target, detail FROM audit ORDER BY seq DESC LIMIT ?1")?;
        let rows = stmt.query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Creates or replaces a UI-made policy.
    pub fn save_ui_policy(&self, p: &UiPolicyRow) -> Result<(), HistoryError> {
        let written = self.conn().execute(
            "INSERT OR REPLACE INTO ui_policies (name, spec, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4)",
            params![p.name, p.spec, p.updated_at, p.updated_by],
        );
        self.counted(written).map(drop)
    }

    /// Deletes a UI-made policy; false when there was none of that name.
    pub fn delete_ui_policy(&self, name: &str) -> Result<bool, HistoryError> {
        let written = self
            .conn()
            .execute("DELETE FROM ui_policies WHERE name = ?1", params![name]);
        self.counted(written).map(|n| n > 0)
    }

    /// Every UI-made policy, by name.
    pub fn ui_policies(&self) -> Result<Vec<UiPolicyRow>, HistoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, spec, updated_at, updated_by FROM ui_policies ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(UiPolicyRow {
                name: r.get(0)?,
                spec: r.get(1)?,
                updated_at: r.get(2)?,
                updated_by: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackupFilter, BackupRow};
    use nkvm_domain::{JobStatus, Trigger};

    fn ok_row(id: &str, finished: &str) -> BackupRow {
        BackupRow {
            id: id.into(),
            cluster: "c".into(),
            namespace: "shop".into(),
            pvc: "data".into(),
            pvc_uid: "u".into(),
            trigger: Trigger::Schedule,
            actor: "policy:p".into(),
            status: JobStatus::Succeeded,
            started_at: finished.into(),
            finished_at: Some(finished.into()),
            compression: "zstd".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_deleted_backup_keeps_its_row_but_no_longer_counts() {
        let h = History::in_memory().unwrap();
        h.record_backup(&ok_row("a", "2026-01-01T00:00:00Z"))
            .unwrap();
        h.record_backup(&ok_row("b", "2026-01-02T00:00:00Z"))
            .unwrap();
        let mark = DeletedBackup {
            id: "b".into(),
            deleted_at: "2026-01-03T00:00:00Z".into(),
            actor: "cli:me".into(),
            reason: "by hand".into(),
        };
        assert!(h.mark_deleted(&mark).unwrap());
        assert!(
            !h.mark_deleted(&mark).unwrap(),
            "a second mark changes nothing"
        );
        assert_eq!(
            h.last_successes("c").unwrap().get("u").map(String::as_str),
            Some("2026-01-01T00:00:00Z")
        );
        let listed = h.list_backups(&BackupFilter::default()).unwrap();
        assert_eq!(listed.iter().map(|r| &r.id[..]).collect::<Vec<_>>(), ["a"]);
        let all = h
            .list_backups(&BackupFilter {
                include_deleted: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 2);
        assert!(
            h.backup("b").unwrap().is_some(),
            "the row is kept for audit"
        );
        assert_eq!(h.deleted("b").unwrap(), Some(mark));
    }

    #[test]
    fn the_last_slot_ignores_manual_runs_and_skips_are_listed_since_a_time() {
        let h = History::in_memory().unwrap();
        assert_eq!(h.last_policy_slot("p").unwrap(), None);
        for (slot, outcome) in [
            ("2026-01-01T02:00:00Z", "ran"),
            ("2026-01-02T02:00:00Z", "missed"),
            ("2026-01-03T09:00:00Z", "manual"),
        ] {
            h.record_policy_run(&PolicyRunRow {
                policy: "p".into(),
                slot: slot.into(),
                at: slot.into(),
                outcome: outcome.into(),
                detail: String::new(),
            })
            .unwrap();
        }
        assert_eq!(
            h.last_policy_slot("p").unwrap().as_deref(),
            Some("2026-01-02T02:00:00Z")
        );
        assert_eq!(h.policy_runs(Some("p"), 10).unwrap()[0].outcome, "manual");
        h.record_policy_skip(&PolicySkipRow {
            policy: "p".into(),
            slot: "s".into(),
            at: "2026-01-03T02:00:00Z".into(),
            namespace: "shop".into(),
            pvc: "raw".into(),
            reason: "volumeMode Block".into(),
        })
        .unwrap();
        assert_eq!(
            h.policy_skips_since("2026-01-03T00:00:00Z").unwrap().len(),
            1
        );
        assert!(
            h.policy_skips_since("2026-01-04T00:00:00Z")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn ui_policies_are_saved_replaced_listed_and_deleted() {
        let h = History::in_memory().unwrap();
        let mut p = UiPolicyRow {
            name: "hourly".into(),
            spec: "{}".into(),
            updated_at: "t1".into(),
            updated_by: "admin".into(),
        };
        h.save_ui_policy(&p).unwrap();
        p.spec = "{\"a\":1}".into();
        h.save_ui_policy(&p).unwrap();
        assert_eq!(h.ui_policies().unwrap(), [p]);
        assert!(h.delete_ui_policy("hourly").unwrap());
        assert!(!h.delete_ui_policy("hourly").unwrap());
    }
}
