//! The one lifecycle every job goes through, whatever it does (backup, restore and copy
//! today; prune and delete are meant to slot in the same way):
//!
//! 1. the opening audit entry and the `running` history row: if either cannot be written the
//!    job does not start, because a mutation nobody can later account for is worse than none;
//! 2. the job's own steps, raced against its cancel signal;
//! 3. the helper pod deleted, whatever happened;
//! 4. the outcome settled into a status, stage and error;
//! 5. the closing history row and audit entry (a failure there is logged at error level and
//!    counted by the history's write-failure metric: the job itself already happened);
//! 6. the final result published to whoever follows progress.
//!
//! Steps report what must survive a cancel (the stage, the helper pod, bytes moved) through a
//! [`Tracker`] they share with the lifecycle, and return everything else as values.

use crate::{App, Progress};
use nkvm_domain::{BackupId, FailureKind, JobStatus, Stage};
use nkvm_history::HistoryError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Why a job's step failed: the stage, the failure kind and a message saying what to do.
#[derive(Debug)]
pub(crate) struct JobFailure {
    pub(crate) stage: Stage,
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

/// A step's failure.
pub(crate) fn fail(stage: Stage, kind: FailureKind, message: impl Into<String>) -> JobFailure {
    JobFailure {
        stage,
        kind,
        message: message.into(),
    }
}

/// A blocking step's value, or a stream-stage failure saying that `what` panicked.
pub(crate) async fn joined<T>(
    task: tokio::task::JoinHandle<T>,
    what: &str,
) -> Result<T, JobFailure> {
    task.await.map_err(|e| {
        fail(
            Stage::Stream,
            FailureKind::Internal,
            format!("{what} panicked: {e}"),
        )
    })
}

/// Now, as RFC 3339 in UTC with seconds (what history rows and results carry).
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A fresh job id (backups and restores share the id shape).
pub(crate) fn new_id() -> BackupId {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    BackupId::new(&stamp, rand::random::<u32>()).expect("a generated id has the id shape")
}

/// The helper pod a job made, once it exists.
#[derive(Debug, Clone, Default)]
struct HelperFacts {
    namespace: String,
    name: String,
    node: String,
}

/// What a running job's steps report to the lifecycle and to progress followers. Shared by
/// reference: a cancel drops the steps' future, and what they reported must outlive it.
pub(crate) struct Tracker {
    id: String,
    started_at: String,
    label: String,
    progress: Option<mpsc::UnboundedSender<Progress>>,
    stage: Mutex<Stage>,
    helper: Mutex<HelperFacts>,
    bytes: Arc<AtomicU64>,
}

impl Tracker {
    /// A tracker for job `id` on `label` (`namespace/claim`), starting at `stage`.
    pub(crate) fn new(
        id: String,
        label: String,
        stage: Stage,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Self {
        Tracker {
            id,
            started_at: now_rfc3339(),
            label,
            progress,
            stage: Mutex::new(stage),
            helper: Mutex::new(HelperFacts::default()),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The job's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// When the job started (RFC 3339).
    pub(crate) fn started_at(&self) -> &str {
        &self.started_at
    }

    /// Enters `stage` and tells progress followers.
    pub(crate) fn enter(&self, stage: Stage) {
        *lock(&self.stage) = stage;
        self.publish(Progress::Stage {
            pvc: self.label.clone(),
            id: self.id.clone(),
            stage,
        });
    }

    /// The stage the job is in.
    pub(crate) fn stage(&self) -> Stage {
        *lock(&self.stage)
    }

    /// Records the helper pod the job created, so it is deleted however the job ends.
    pub(crate) fn helper_created(&self, namespace: &str, name: &str) {
        let mut h = lock(&self.helper);
        h.namespace = namespace.into();
        h.name = name.into();
    }

    /// Records the node the helper pod runs on.
    pub(crate) fn helper_on(&self, node: &str) {
        lock(&self.helper).node = node.into();
    }

    /// The counter of bytes moved, for the data path to add to.
    pub(crate) fn bytes(&self) -> &Arc<AtomicU64> {
        &self.bytes
    }

    /// Sends the byte count to progress followers about once a second until dropped.
    pub(crate) fn ticker(&self) -> Option<AbortOnDrop> {
        let (p, pvc, id) = (self.progress.clone()?, self.label.clone(), self.id.clone());
        let counter = self.bytes.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let read = counter.load(Ordering::Relaxed);
                let update = Progress::Bytes {
                    pvc: pvc.clone(),
                    id: id.clone(),
                    read,
                };
                if p.send(update).is_err() {
                    return;
                }
            }
        })))
    }

    fn publish(&self, p: Progress) {
        if let Some(tx) = &self.progress {
            // A follower that went away does not stop the job.
            let _ = tx.send(p);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A spawned task that is aborted when this handle is dropped: a cancelled job drops its
/// future, and a ticker left running would hold a progress sender open forever.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a job ended (or, while it runs, where it is), as every job type records it.
#[derive(Debug, Clone)]
pub(crate) struct JobEnd {
    pub(crate) status: JobStatus,
    pub(crate) stage: Stage,
    pub(crate) failure: Option<FailureKind>,
    pub(crate) error: String,
    pub(crate) started_at: String,
    /// `""` while running.
    pub(crate) finished_at: String,
    pub(crate) helper_pod: String,
    pub(crate) node: String,
    /// Bytes moved, as the tracker counted them (also when the job failed).
    pub(crate) bytes: u64,
}

impl JobEnd {
    /// A running job's state at its start.
    fn running(tracker: &Tracker) -> JobEnd {
        JobEnd {
            status: JobStatus::Running,
            stage: tracker.stage(),
            failure: None,
            error: String::new(),
            started_at: tracker.started_at.clone(),
            finished_at: String::new(),
            helper_pod: String::new(),
            node: String::new(),
            bytes: 0,
        }
    }
}

/// A job type's result: how it is written to the history and published when it ends.
pub(crate) trait JobResult: Clone {
    /// Inserts or replaces the job's history row.
    fn record(&self, app: &App) -> Result<(), HistoryError>;
    /// The progress event that announces the end.
    fn into_progress(self) -> Progress;
}

/// What the lifecycle needs to know of a job besides its steps.
pub(crate) struct JobSpec<'a> {
    /// `backup`, `restore`: the audit actions are `<action>.start` and `<action>.<status>`.
    pub(crate) action: &'static str,
    /// Who asked.
    pub(crate) actor: &'a str,
    /// The audit target (`namespace/claim`).
    pub(crate) target: String,
    /// The opening audit entry's detail.
    pub(crate) detail: String,
    /// What a cancel leaves behind, for the error.
    pub(crate) cancelled: &'static str,
}

impl App {
    /// Runs one job through the lifecycle described in this module's doc. `steps` is the
    /// job's work (not started until the job may start); `result` builds the job's result
    /// from how it ended and, on success, what the steps returned.
    pub(crate) async fn run_job<T, R: JobResult>(
        &self,
        spec: JobSpec<'_>,
        tracker: &Tracker,
        mut cancel: watch::Receiver<bool>,
        steps: impl Future<Output = Result<T, JobFailure>>,
        result: impl Fn(&JobEnd, Option<&T>) -> R,
    ) -> R {
        let mut end = JobEnd::running(tracker);
        if let Err(refused) = self.open_job(&spec, &end, &result) {
            end.finished_at = now_rfc3339();
            apply(&mut end, Err(refused));
            let r = result(&end, None);
            tracker.publish(r.clone().into_progress());
            return r;
        }
        let outcome = tokio::select! {
            r = steps => r,
            _ = cancel.wait_for(|c| *c) => Err(fail(Stage::Cancelled, FailureKind::Cancelled, spec.cancelled)),
        };
        let helper = lock(&tracker.helper).clone();
        let deleted = self
            .delete_job_helper(&helper.namespace, &helper.name)
            .await;
        end.stage = tracker.stage();
        end.helper_pod = helper.name;
        end.node = helper.node;
        end.bytes = tracker.bytes.load(Ordering::Relaxed);
        end.finished_at = now_rfc3339();
        let (outcome, output) = match outcome {
            Ok(output) => (Ok(()), Some(output)),
            Err(f) => (Err(f), None),
        };
        apply(&mut end, outcome);
        append_error(&mut end.error, deleted.err());
        let r = result(&end, output.as_ref());
        self.close_job(&spec, &end, &r, tracker.id());
        tracker.publish(r.clone().into_progress());
        r
    }

    /// Writes the opening audit entry and the `running` row; refuses the job when either
    /// cannot be written.
    fn open_job<T, R: JobResult>(
        &self,
        spec: &JobSpec<'_>,
        running: &JobEnd,
        result: &impl Fn(&JobEnd, Option<&T>) -> R,
    ) -> Result<(), JobFailure> {
        let refuse = |what: &str, e: HistoryError| {
            fail(
                running.stage,
                FailureKind::StorageUnavailable,
                format!(
                    "writing the {what} failed, so the {} was not started: {e}; check that the history database (NKVM_METADATA_DB_PATH) is writable",
                    spec.action
                ),
            )
        };
        let action = format!("{}.start", spec.action);
        self.history
            .audit(
                &running.started_at,
                spec.actor,
                &action,
                &spec.target,
                &spec.detail,
            )
            .map_err(|e| refuse("audit log", e))?;
        result(running, None)
            .record(self)
            .map_err(|e| refuse("history row", e))
    }

    /// Writes the closing row and audit entry. The job already happened: a failure here is
    /// logged and counted (the history's write-failure metric), not turned into a job failure.
    fn close_job<R: JobResult>(&self, spec: &JobSpec<'_>, end: &JobEnd, r: &R, id: &str) {
        if let Err(e) = r.record(self) {
            tracing::error!(error = %e, id, action = spec.action, "recording the job's end in the history failed");
        }
        let action = format!("{}.{}", spec.action, end.status);
        if let Err(e) = self
            .history
            .audit(&end.finished_at, spec.actor, &action, &spec.target, id)
        {
            tracing::error!(error = %e, id, action, "writing the closing audit entry failed");
        }
    }

    /// Deletes a job's helper pod, if it made one; a failure to delete it is returned for the
    /// job's record.
    async fn delete_job_helper(&self, namespace: &str, pod: &str) -> Result<(), String> {
        if pod.is_empty() {
            return Ok(());
        }
        nkvm_kube::helper::delete_helper(&self.conn.client, namespace, pod)
            .await
            .map_err(|e| format!("deleting helper pod {pod} failed: {e}"))
    }
}

/// Applies a step outcome: succeeded, or failed/cancelled at the failing stage with its error.
fn apply(end: &mut JobEnd, outcome: Result<(), JobFailure>) {
    match outcome {
        Ok(()) => end.status = JobStatus::Succeeded,
        Err(f) => {
            end.status = if f.kind == FailureKind::Cancelled {
                JobStatus::Cancelled
            } else {
                JobStatus::Failed
            };
            end.stage = f.stage;
            end.failure = Some(f.kind);
            append_error(&mut end.error, Some(f.message));
        }
    }
}

fn append_error(error: &mut String, more: Option<String>) {
    match more {
        Some(m) if !m.is_empty() && error.is_empty() => *error = m,
        Some(m) if !m.is_empty() => {
            error.push_str("; ");
            error.push_str(&m);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> JobEnd {
        JobEnd {
            status: JobStatus::Running,
            stage: Stage::Stream,
            failure: None,
            error: String::new(),
            started_at: "t".into(),
            finished_at: String::new(),
            helper_pod: String::new(),
            node: String::new(),
            bytes: 0,
        }
    }

    #[test]
    fn a_failure_sets_status_stage_kind_and_joins_the_helper_deletion_error() {
        let mut end = running();
        apply(
            &mut end,
            Err(fail(Stage::HelperPod, FailureKind::Timeout, "not running")),
        );
        append_error(&mut end.error, Some("deleting helper pod p failed".into()));
        assert_eq!(end.status, JobStatus::Failed);
        assert_eq!(end.stage, Stage::HelperPod);
        assert_eq!(end.failure, Some(FailureKind::Timeout));
        assert_eq!(end.error, "not running; deleting helper pod p failed");
    }

    #[test]
    fn a_cancel_is_cancelled_not_failed_and_success_keeps_the_stage() {
        let mut end = running();
        apply(
            &mut end,
            Err(fail(Stage::Cancelled, FailureKind::Cancelled, "stopped")),
        );
        assert_eq!(end.status, JobStatus::Cancelled);
        let mut ok = running();
        apply(&mut ok, Ok(()));
        assert_eq!(
            (ok.status, ok.stage, ok.failure),
            (JobStatus::Succeeded, Stage::Stream, None)
        );
        assert!(ok.error.is_empty());
    }
}
