//! Retention and deletion of backups: planning a prune (which of each policy's backups its
//! retention keeps, and by which rule), carrying a plan out, and deleting one backup by hand.
//! Deleting removes the archive and its manifest from the store, then marks the history row
//! deleted (kept for audit) and writes the audit log. Retention only ever considers the
//! successful backups a policy made itself (actor `policy:NAME`): backups taken by hand are
//! deleted only by hand.

use crate::EngineError;
use crate::lifecycle::now_rfc3339;
use crate::workspace::Workspace;
use chrono::{DateTime, Utc};
use nkvm_domain::JobStatus;
use nkvm_history::{BackupFilter, BackupRow, DeletedBackup};
use nkvm_policy::{Candidate, Decision, Policy, decide};
use nkvm_store::StoreError;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a prune decides for one backup (the dry run's rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneItem {
    /// Backup id.
    pub id: String,
    /// The policy whose retention decided.
    pub policy: String,
    /// Cluster id.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Claim.
    pub pvc: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// `keep` or `delete`.
    pub decision: String,
    /// The rule that kept it (`keepLast`, `daily`, ..., `newest`); "" for deletions.
    pub rule: String,
}

/// Every decision of a prune, newest first per claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrunePlan {
    /// The decisions.
    pub items: Vec<PruneItem>,
    /// Policies without retention (they keep everything), named so a dry run says why
    /// nothing of theirs is listed.
    pub keeps_everything: Vec<String>,
}

impl PrunePlan {
    /// The backups the plan deletes.
    pub fn deletions(&self) -> impl Iterator<Item = &PruneItem> {
        self.items.iter().filter(|i| i.decision == "delete")
    }
}

/// What carrying out a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Backups deleted.
    pub deleted: Vec<String>,
    /// Backups that could not be deleted, with the reason.
    pub failed: Vec<(String, String)>,
}

/// A backup deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    /// Backup id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Claim.
    pub pvc: String,
    /// The archive removed ("" when the backup kept none).
    pub artifact: String,
    /// Whether the archive was already gone from the store.
    pub archive_was_missing: bool,
}

fn finished(row: &BackupRow) -> Option<DateTime<Utc>> {
    row.finished_at.as_deref()?.parse().ok()
}

/// A claim's backups are grouped by cluster, namespace and name.
type ClaimKey<'a> = (&'a str, &'a str, &'a str);

/// The plan for `policies`' backups among `rows` (pure: the dry run and the prune share it).
pub fn plan_prune(policies: &[Policy], rows: &[BackupRow]) -> PrunePlan {
    let mut plan = PrunePlan::default();
    for policy in policies {
        let Some(retention) = policy.retention else {
            plan.keeps_everything.push(policy.name.clone());
            continue;
        };
        let actor = policy.actor();
        let mut claims: BTreeMap<ClaimKey<'_>, Vec<(&BackupRow, Candidate)>> = BTreeMap::new();
        for row in rows.iter().filter(|r| {
            r.actor == actor && r.status == JobStatus::Succeeded && !r.artifact.is_empty()
        }) {
            let Some(at) = finished(row) else { continue };
            let key = (
                row.cluster.as_str(),
                row.namespace.as_str(),
                row.pvc.as_str(),
            );
            let candidate = Candidate {
                id: row.id.clone(),
                at,
            };
            claims.entry(key).or_default().push((row, candidate));
        }
        for backups in claims.values() {
            let candidates: Vec<Candidate> = backups.iter().map(|(_, c)| c.clone()).collect();
            for (c, d) in decide(&candidates, &retention, policy.schedule.timezone()) {
                let row = backups.iter().find(|(_, b)| b.id == c.id).map(|(r, _)| *r);
                let Some(row) = row else { continue };
                let (decision, rule) = match d {
                    Decision::Keep(rule) => ("keep", rule.as_str()),
                    Decision::Delete => ("delete", ""),
                };
                plan.items.push(PruneItem {
                    id: row.id.clone(),
                    policy: policy.name.clone(),
                    cluster: row.cluster.clone(),
                    namespace: row.namespace.clone(),
                    pvc: row.pvc.clone(),
                    finished_at: row.finished_at.clone().unwrap_or_default(),
                    decision: decision.into(),
                    rule: rule.into(),
                });
            }
        }
    }
    plan
}

impl Workspace {
    /// The prune plan of `policies` over the history's (undeleted) backups.
    pub fn plan_prune(&self, policies: &[Policy]) -> Result<PrunePlan, EngineError> {
        let rows = self.backups(&BackupFilter::default())?;
        Ok(plan_prune(policies, &rows))
    }

    /// Deletes what `plan` says to delete, as `actor`; one failure does not stop the rest.
    pub async fn prune(&self, plan: &PrunePlan, actor: &str) -> PruneReport {
        let mut report = PruneReport::default();
        for item in plan.deletions() {
            let reason = format!("retention of policy {}", item.policy);
            match self.delete_backup(&item.id, actor, &reason).await {
                Ok(_) => report.deleted.push(item.id.clone()),
                Err(e) => report.failed.push((item.id.clone(), e.to_string())),
            }
        }
        report
    }

    /// Deletes backup `id`: its archive and manifest leave the store, its history row is
    /// marked deleted, and the audit log records who did it and why.
    pub async fn delete_backup(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Deleted, EngineError> {
        let row = self.history().backup(id)?.ok_or_else(|| {
            EngineError::NotFound(format!(
                "no backup {id:?} in the history; list them with `nkvm backups`"
            ))
        })?;
        if let Some(mark) = self.history().deleted(id)? {
            return Err(EngineError::NotFound(format!(
                "backup {id} was already deleted at {} by {}",
                mark.deleted_at, mark.actor
            )));
        }
        let target = format!("{}/{}", row.namespace, row.pvc);
        let at = now_rfc3339();
        self.history()
            .audit(&at, actor, "backup.delete.start", &target, id)?;
        let missing = self
            .remove_archive(&row.store, &row.artifact)
            .await
            .inspect_err(|e| {
                let _ = self.history().audit(
                    &now_rfc3339(),
                    actor,
                    "backup.delete.failed",
                    &target,
                    &format!("{id}: {e}"),
                );
            })?;
        self.history().mark_deleted(&DeletedBackup {
            id: id.into(),
            deleted_at: now_rfc3339(),
            actor: actor.into(),
            reason: reason.into(),
        })?;
        let detail = format!("{id} ({reason})");
        self.history().audit(
            &now_rfc3339(),
            actor,
            "backup.delete.succeeded",
            &target,
            &detail,
        )?;
        Ok(Deleted {
            id: id.into(),
            namespace: row.namespace,
            pvc: row.pvc,
            artifact: row.artifact,
            archive_was_missing: missing,
        })
    }

    /// Removes an archive and its manifest; `Ok(true)` when they were already gone (the
    /// deletion then only marks the row).
    async fn remove_archive(&self, store: &str, artifact: &str) -> Result<bool, EngineError> {
        if artifact.is_empty() {
            return Ok(true);
        }
        let store = self
            .stores()
            .store(store)
            .map_err(EngineError::DeleteArchive)?;
        let artifact = artifact.to_string();
        let removed = tokio::task::spawn_blocking(move || store.delete(&artifact))
            .await
            .map_err(|e| EngineError::Internal(format!("deleting an archive panicked: {e}")))?;
        match removed {
            Ok(()) => Ok(false),
            Err(StoreError::NotFound { .. }) => Ok(true),
            Err(e) => Err(EngineError::DeleteArchive(e)),
        }
    }
}

#[cfg(test)]
mod tests;
