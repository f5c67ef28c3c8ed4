//! One run of a policy: select the claims it covers (namespaces and labels), record the ones
//! that cannot be backed up as skipped with the reason (unbound, Block, ReadWriteOncePod in
//! use, or a previous backup of the claim still running), back the rest up as one job of the
//! job registry (trigger `schedule`, actor `policy:NAME`, live on the Jobs page), wait for
//! it, then apply the policy's retention.

use crate::jobs::{JobEvent, JobKind, Jobs};
use crate::lifecycle::now_rfc3339;
use crate::retention::PruneReport;
use crate::workspace::Workspace;
use crate::{App, BackupOptions, EngineError, Scope};
use nkvm_domain::{JobStatus, PvcRecord, PvcRef, ResourceName, Stage, Trigger};
use nkvm_history::PolicySkipRow;
use nkvm_policy::Policy;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Claims one policy job backs up at once.
const PARALLEL: usize = 2;

/// One claim's outcome in a policy run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimOutcome {
    /// Namespace.
    pub namespace: String,
    /// Claim.
    pub pvc: String,
    /// `succeeded`, `failed`, `cancelled`, `interrupted` or `skipped`.
    pub result: String,
    /// The stage it ended in ("" when skipped).
    pub stage: String,
    /// Why it failed or was skipped ("" otherwise).
    pub error: String,
    /// The backup's id ("" when skipped or refused before one was made).
    pub backup_id: String,
    /// Bytes stored.
    pub bytes_stored: u64,
}

/// What a policy run did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRunReport {
    /// Policy name.
    pub policy: String,
    /// The slot it ran for (RFC 3339; the start time for a run by hand).
    pub slot: String,
    /// The job it ran as (absent when nothing was to back up).
    pub job: Option<u64>,
    /// One per covered claim.
    pub claims: Vec<ClaimOutcome>,
    /// What retention deleted afterwards.
    pub pruned: PruneReport,
    /// When the run began (RFC 3339).
    pub started_at: String,
    /// When it ended, retention included (RFC 3339).
    pub finished_at: String,
}

impl PolicyRunReport {
    /// Whether every claim that was backed up succeeded (skips are not failures).
    pub fn succeeded(&self) -> bool {
        self.claims
            .iter()
            .all(|c| c.result == "succeeded" || c.result == "skipped")
    }
}

fn skipped(namespace: &str, pvc: &str, reason: String) -> ClaimOutcome {
    ClaimOutcome {
        namespace: namespace.into(),
        pvc: pvc.into(),
        result: "skipped".into(),
        stage: String::new(),
        error: reason,
        backup_id: String::new(),
        bytes_stored: 0,
    }
}

/// The claims of `policy` among `records`, split into those to back up and those skipped.
pub fn select(
    policy: &Policy,
    records: &[PvcRecord],
    busy: &[(String, String)],
) -> (Vec<PvcRecord>, Vec<ClaimOutcome>) {
    let mut run = Vec::new();
    let mut skips = Vec::new();
    for r in records
        .iter()
        .filter(|r| policy.covers(&r.namespace, &r.labels))
    {
        if !r.backupable {
            skips.push(skipped(&r.namespace, &r.name, r.reason.clone()));
        } else if busy
            .iter()
            .any(|(ns, n)| *ns == r.namespace && *n == r.name)
        {
            skips.push(skipped(
                &r.namespace,
                &r.name,
                "its previous backup is still running".into(),
            ));
        } else {
            run.push(r.clone());
        }
    }
    (run, skips)
}

/// Claims with a backup queued or running in `jobs`.
fn busy_claims(jobs: &Jobs) -> Vec<(String, String)> {
    jobs.list()
        .into_iter()
        .filter(|j| j.kind == JobKind::Backup)
        .flat_map(|j| j.items)
        .filter(|i| !i.status.is_final())
        .map(|i| (i.namespace, i.pvc))
        .collect()
}

impl App {
    /// Runs `policy` for `slot` as a job of `jobs`, waits for it, records skips, then applies
    /// retention. The run's claims are those of the policy's namespaces and selector now.
    pub async fn run_policy(
        self: &Arc<Self>,
        jobs: &Jobs,
        policy: &Policy,
        slot: &str,
    ) -> Result<PolicyRunReport, EngineError> {
        let started_at = now_rfc3339();
        let mut records = Vec::new();
        for ns in &policy.namespaces {
            let name = ResourceName::namespace(ns)
                .map_err(|e| EngineError::Internal(format!("policy {}: {e}", policy.name)))?;
            records.extend(self.inventory(&Scope::Namespace(name)).await?);
        }
        let (to_run, skips) = select(policy, &records, &busy_claims(jobs));
        let actor = policy.actor();
        for s in &skips {
            self.record_skip(policy, slot, s, &actor);
        }
        let mut report = PolicyRunReport {
            policy: policy.name.clone(),
            slot: slot.into(),
            claims: skips,
            started_at,
            ..Default::default()
        };
        if !to_run.is_empty() {
            let (job, outcomes) = self
                .run_policy_job(jobs, &to_run, &policy.store, &actor)
                .await?;
            report.job = Some(job);
            report.claims.extend(outcomes);
        }
        if policy.retention.is_some() {
            let ws = Workspace::new(
                self.history.clone(),
                self.stores.local_store(),
                self.settings.clone(),
            )
            .with_stores(self.stores.clone());
            let plan = ws.plan_prune(std::slice::from_ref(policy))?;
            report.pruned = ws.prune(&plan, &actor).await;
        }
        report.finished_at = now_rfc3339();
        Ok(report)
    }

    fn record_skip(&self, policy: &Policy, slot: &str, s: &ClaimOutcome, actor: &str) {
        let at = now_rfc3339();
        let row = PolicySkipRow {
            policy: policy.name.clone(),
            slot: slot.into(),
            at: at.clone(),
            namespace: s.namespace.clone(),
            pvc: s.pvc.clone(),
            reason: s.error.clone(),
        };
        let target = format!("{}/{}", s.namespace, s.pvc);
        if let Err(e) = self.history.record_policy_skip(&row).and_then(|()| {
            self.history
                .audit(&at, actor, "policy.skip", &target, &s.error)
        }) {
            tracing::error!(error = %e, policy = policy.name, "recording a skipped claim failed");
        }
    }

    /// Submits the backups as one job and waits for every item to end.
    async fn run_policy_job(
        self: &Arc<Self>,
        jobs: &Jobs,
        claims: &[PvcRecord],
        store: &str,
        actor: &str,
    ) -> Result<(u64, Vec<ClaimOutcome>), EngineError> {
        let refs = claims
            .iter()
            .map(|r| PvcRef::parse(&format!("{}/{}", r.namespace, r.name)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let opts = BackupOptions {
            compression: Default::default(),
            parallel: PARALLEL,
            trigger: Trigger::Schedule,
            actor: actor.into(),
            store: store.into(),
        };
        let mut events = jobs.subscribe();
        let expected = vec![None; refs.len()];
        let job = jobs
            .submit_backup(self.clone(), refs, opts, expected)
            .map_err(|e| EngineError::Internal(format!("submitting the policy's job: {e}")))?;
        loop {
            match jobs.get(job) {
                Some(state) if state.finished() => {
                    let outcomes = state
                        .items
                        .into_iter()
                        .map(|i| ClaimOutcome {
                            namespace: i.namespace,
                            pvc: i.pvc,
                            result: i.status.to_string(),
                            stage: if i.status == JobStatus::Succeeded {
                                Stage::Commit.to_string()
                            } else {
                                i.stage.to_string()
                            },
                            error: i.error,
                            backup_id: i.id,
                            bytes_stored: 0,
                        })
                        .collect();
                    return Ok((job, self.with_sizes(outcomes)));
                }
                Some(_) => {}
                None => {
                    return Err(EngineError::Internal(format!(
                        "job {job} left the job registry before it ended"
                    )));
                }
            }
            // Woken by any job event; the timeout re-reads the state should events be missed.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(e) = events.recv().await {
                    if matches!(e, JobEvent::Item(ref i) if i.job == job) {
                        return;
                    }
                }
            })
            .await;
        }
    }

    /// Fills in each succeeded backup's stored size from the history.
    fn with_sizes(&self, mut outcomes: Vec<ClaimOutcome>) -> Vec<ClaimOutcome> {
        for o in outcomes.iter_mut().filter(|o| !o.backup_id.is_empty()) {
            if let Ok(Some(row)) = self.history.backup(&o.backup_id) {
                o.bytes_stored = row.bytes_stored;
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkvm_domain::{Allowlist, Owner};
    use nkvm_policy::file::{Context, PolicySource, PolicySpec, Selector, validate};

    fn record(ns: &str, name: &str, labels: &[(&str, &str)], reason: &str) -> PvcRecord {
        PvcRecord {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("{ns}-{name}"),
            phase: "Bound".into(),
            capacity: "1Gi".into(),
            storage_class: String::new(),
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: "Filesystem".into(),
            volume_name: String::new(),
            owner: Owner::unknown(),
            consumers: vec![],
            last_successful_backup: None,
            last_failed_backup: None,
            backupable: reason.is_empty(),
            reason: reason.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn selection_follows_namespaces_and_labels_and_skips_with_reasons() {
        let allow = Allowlist::default();
        let stores = vec!["local".to_string()];
        let policy = validate(
            PolicySpec {
                name: "nightly".into(),
                schedule: "0 2 * * *".into(),
                namespaces: vec!["shop".into()],
                selector: Some(Selector {
                    match_labels: [("backup".to_string(), "nightly".to_string())].into(),
                }),
                ..Default::default()
            },
            PolicySource::File,
            &Context {
                allowlist: &allow,
                stores: &stores,
            },
        )
        .unwrap();
        let nightly = [("backup", "nightly")];
        let records = [
            record("shop", "data", &nightly, ""),
            record(
                "shop",
                "raw",
                &nightly,
                "volumeMode Block: nkvm archives filesystems only",
            ),
            record("shop", "busy", &nightly, ""),
            record("shop", "unlabelled", &[], ""),
            record("web", "data", &nightly, ""),
        ];
        let busy = [("shop".to_string(), "busy".to_string())];
        let (run, skips) = select(&policy, &records, &busy);
        assert_eq!(
            run.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["data"]
        );
        let reasons: Vec<(&str, &str)> = skips
            .iter()
            .map(|s| (s.pvc.as_str(), s.error.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("raw", "volumeMode Block: nkvm archives filesystems only"),
                ("busy", "its previous backup is still running"),
            ]
        );
        assert!(skips.iter().all(|s| s.result == "skipped"));
    }
}
