//! The job registry of long-running front-ends: backups (and restores) run in tasks owned
//! here, not in the request that asked for them, so closing a browser or clicking elsewhere
//! never stops one. Each job is a batch of items (one per claim) run `parallel` at a time; the
//! registry keeps each item's live state (stage, bytes, rate, ETA when the size is known, the
//! final result with a next-step hint), cancels per item or per job, publishes every change on
//! a broadcast channel (the UI's SSE stream), and shuts down gracefully: running items get a
//! grace period, are then cancelled, and what still runs is marked interrupted in the history.

use crate::lifecycle::now_rfc3339;
use crate::session::{Workspace, detached};
use crate::{
    App, BackupOptions, BackupResult, CopyOptions, CopyResult, Progress, RestoreOptions,
    RestorePlan, RestoreResult,
};
use nkvm_domain::UserError;
use nkvm_domain::{FailureKind, JobStatus, PvcRef, Stage};
use serde::Serialize;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};

/// A job's number, unique within this process.
pub type JobId = u64;

/// Finished jobs kept for the jobs page; older ones are forgotten (the history keeps them).
const KEPT_JOBS: usize = 200;

/// Buffered events per subscriber; a slower subscriber skips ahead (and should re-read state).
const EVENT_BUFFER: usize = 4096;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum JobKind {
    /// Backs claims up.
    Backup,
    /// Restores a backup into a claim.
    Restore,
    /// Copies a backup to another store.
    Copy,
}

impl JobKind {
    /// Lower-case name (`backup`, `restore`), also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::Copy => "copy",
        }
    }
}

/// One claim's part of a job, as the jobs page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemState {
    /// The job it belongs to.
    pub job: JobId,
    /// What the job does.
    pub kind: JobKind,
    /// Its position in the job.
    pub index: usize,
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub pvc: String,
    /// Backup (or restore) id, once the engine assigned one.
    pub id: String,
    /// Where it is.
    pub status: JobStatus,
    /// The engine's stage.
    pub stage: Stage,
    /// Bytes moved so far (tar bytes read, or written on restore).
    pub bytes: u64,
    /// Bytes per second while streaming (average since streaming began).
    pub rate: Option<f64>,
    /// Expected total bytes, when known (the last backup's size, the archive's on restore).
    pub expected_bytes: Option<u64>,
    /// Seconds left at the current rate, when the size is known.
    pub eta_seconds: Option<u64>,
    /// What kind of failure ended it, if one did.
    #[serde(serialize_with = "nkvm_domain::failure::serialize_label")]
    pub failure_kind: Option<FailureKind>,
    /// Why it failed ("" otherwise).
    pub error: String,
    /// What to do about the failure ("" otherwise).
    pub hint: String,
    /// The archive written (backups that succeeded).
    pub artifact: String,
    /// RFC 3339 time it left the queue ("" while queued).
    pub started_at: String,
    /// RFC 3339 time it ended ("" while running).
    pub finished_at: String,
}

/// A job, as the jobs page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobState {
    /// Its number.
    pub id: JobId,
    /// Backup or restore.
    pub kind: JobKind,
    /// Who asked.
    pub actor: String,
    /// RFC 3339 time it was submitted.
    pub submitted_at: String,
    /// How it runs (`zstd, 2 at a time`).
    pub summary: String,
    /// One per claim.
    pub items: Vec<ItemState>,
}

impl JobState {
    /// Whether every item has ended.
    pub fn finished(&self) -> bool {
        self.items.iter().all(|i| i.status.is_final())
    }
}

/// A change, published to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A job was submitted (its items are queued).
    Submitted(JobId),
    /// An item changed.
    Item(Box<ItemState>),
}

/// Told about every item that ends (metrics, caches).
pub trait JobObserver: Send + Sync {
    /// `item` of a `kind` job ended after running for `elapsed`.
    fn item_finished(&self, kind: JobKind, item: &ItemState, elapsed: Duration);
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// nkvm is shutting down.
    #[error("nkvm is shutting down and accepts no new jobs")]
    ShuttingDown,
    /// Nothing to do.
    #[error("select at least one volume")]
    Empty,
}

/// What graceful shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Items still running when the grace period ended, then cancelled.
    pub cancelled: usize,
    /// History rows marked interrupted because they did not stop in time.
    pub interrupted: Vec<String>,
}

/// What the engine returned for an item.
struct ItemEnd {
    status: JobStatus,
    id: String,
    stage: Stage,
    failure_kind: Option<FailureKind>,
    bytes: u64,
    error: String,
    artifact: String,
}

impl ItemEnd {
    fn from_backup(r: &BackupResult) -> ItemEnd {
        ItemEnd {
            status: r.status,
            id: r.id.clone(),
            stage: r.stage,
            failure_kind: r.failure_kind,
            bytes: r.bytes_read,
            error: r.error.clone(),
            artifact: r.artifact.clone(),
        }
    }

    fn from_restore(r: &RestoreResult) -> ItemEnd {
        ItemEnd {
            status: r.status,
            id: r.id.clone(),
            stage: r.stage,
            failure_kind: r.failure_kind,
            bytes: r.bytes_written,
            error: r.error.clone(),
            artifact: String::new(),
        }
    }

    fn from_copy(r: &CopyResult) -> ItemEnd {
        ItemEnd {
            status: r.status,
            id: r.backup_id.clone(),
            stage: r.stage,
            failure_kind: r.failure_kind,
            bytes: r.bytes,
            error: r.error.clone(),
            artifact: r.artifact.clone(),
        }
    }

    fn refused(stage: Stage, kind: FailureKind, error: String) -> ItemEnd {
        ItemEnd {
            status: JobStatus::Failed,
            id: String::new(),
            stage,
            failure_kind: Some(kind),
            bytes: 0,
            error,
            artifact: String::new(),
        }
    }
}

/// The next step an operator can take after an item ended in `status` at `stage`.
pub fn next_step(status: JobStatus, stage: Stage) -> &'static str {
    match (status, stage) {
        (JobStatus::Succeeded | JobStatus::Queued | JobStatus::Running, _) => "",
        (JobStatus::Cancelled, Stage::Queued) => {
            "Cancelled before it started; nothing ran. Start it again from the Volumes page."
        }
        (JobStatus::Cancelled, _) => {
            "Cancelled on request; nothing was kept and the helper pod, if one was made, was removed. Start it again from the Volumes page."
        }
        (JobStatus::Interrupted, _) => {
            "nkvm stopped while this ran; nothing was kept. Start it again from the Volumes page."
        }
        (JobStatus::Failed, Stage::Plan) => {
            "Plan the restore again from the backup's page: the target or the archive changed since it was planned."
        }
        (JobStatus::Failed, Stage::CreatePvc) => {
            "Creating the target claim failed: check the storage class, the size and the namespace's quota, then plan again."
        }
        (JobStatus::Failed, Stage::Clean) => {
            "Emptying the target failed; nothing was extracted. Check the helper pod's permissions on the volume and retry."
        }
        (JobStatus::Failed, Stage::Resolve) => {
            "Refresh the Volumes page: the claim must exist, be Bound, use volumeMode Filesystem, sit in an allowed namespace and not be held by a ReadWriteOncePod pod."
        }
        (JobStatus::Failed, Stage::HelperPod) => {
            "Look at the namespace's events (kubectl get events -n NAMESPACE) for scheduling, image-pull or Multi-Attach problems; NKVM_HELPER_IMAGE and NKVM_HELPER_POD_TIMEOUT_SECONDS may need changing."
        }
        (JobStatus::Failed, Stage::ProbeTar) => {
            "The helper image needs GNU tar or BusyBox tar: set NKVM_HELPER_IMAGE to one that has it."
        }
        (JobStatus::Failed, Stage::Stream) => {
            "Retry; if files changed while tar read them, pause or scale down the writer first. A broken stream points at the network or the API server; a failed restore may have left the target partly written."
        }
        (JobStatus::Failed, Stage::Commit) => {
            "Writing the archive failed: check free space and permissions of NKVM_BACKUP_DIR, then retry."
        }
        (JobStatus::Failed, _) => "Check the error above, fix the cause and retry.",
    }
}

struct JobEntry {
    state: JobState,
    cancels: Vec<watch::Sender<bool>>,
    /// When each item left the queue (for durations).
    started: Vec<Option<Instant>>,
    /// When each item began streaming (for rates).
    streaming: Vec<Option<Instant>>,
}

struct Inner {
    jobs: Mutex<VecDeque<JobEntry>>,
    next_id: AtomicU64,
    events: broadcast::Sender<JobEvent>,
    in_flight: watch::Sender<usize>,
    accepting: AtomicBool,
    observer: Option<Arc<dyn JobObserver>>,
}

/// Decrements the in-flight count when an item task ends, however it ends.
struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The job registry; clones share it.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs::new(None)
    }
}

impl Jobs {
    /// An empty registry; `observer` hears about every item that ends.
    pub fn new(observer: Option<Arc<dyn JobObserver>>) -> Self {
        Jobs {
            inner: Arc::new(Inner {
                jobs: Mutex::new(VecDeque::new()),
                next_id: AtomicU64::new(1),
                events: broadcast::channel(EVENT_BUFFER).0,
                in_flight: watch::channel(0).0,
                accepting: AtomicBool::new(true),
                observer,
            }),
        }
    }

    /// Starts backing up `claims` with `app`, `opts.parallel` at a time, each claim with its own
    /// cancel. `expected_bytes[i]` (if given) is claim i's expected size, for ETAs.
    pub fn submit_backup(
        &self,
        app: Arc<App>,
        claims: Vec<PvcRef>,
        opts: BackupOptions,
        expected_bytes: Vec<Option<u64>>,
    ) -> Result<JobId, SubmitError> {
        let targets: Vec<(String, String, Option<u64>)> = claims
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let expected = expected_bytes.get(i).copied().flatten();
                (c.namespace.to_string(), c.name.to_string(), expected)
            })
            .collect();
        let summary = format!(
            "{}, {} at a time",
            opts.compression.compression.as_str(),
            opts.parallel.max(1)
        );
        let (job, cancels) = self.register(JobKind::Backup, &opts.actor, summary, targets)?;
        let slots = Arc::new(Semaphore::new(opts.parallel.max(1)));
        let single = BackupOptions {
            parallel: 1,
            ..opts
        };
        for (index, (claim, cancel)) in claims.into_iter().zip(cancels).enumerate() {
            let (app, opts) = (app.clone(), single.clone());
            self.spawn_item(
                job,
                index,
                slots.clone(),
                cancel,
                move |progress, cancel| {
                    let run = detached(move || async move {
                        app.backup(std::slice::from_ref(&claim), &opts, Some(progress), cancel)
                            .await
                    });
                    async move {
                        match run.await {
                            Ok(Ok(results)) => match results.first() {
                                Some(r) => ItemEnd::from_backup(r),
                                None => ItemEnd::refused(
                                    Stage::Resolve,
                                    FailureKind::Internal,
                                    "the engine returned no result".into(),
                                ),
                            },
                            Ok(Err(e)) => ItemEnd::refused(Stage::Resolve, e.kind(), e.to_string()),
                            Err(e) => ItemEnd::refused(Stage::Resolve, e.kind(), e.to_string()),
                        }
                    }
                },
            );
        }
        Ok(job)
    }

    /// Starts running a restore `plan` (planned and shown to the operator beforehand).
    pub fn submit_restore(
        &self,
        app: Arc<App>,
        plan: RestorePlan,
        opts: RestoreOptions,
    ) -> Result<JobId, SubmitError> {
        let target = (
            plan.target.namespace.clone(),
            plan.target.pvc.clone(),
            Some(plan.source.tar_bytes).filter(|&b| b > 0),
        );
        let summary = format!("from backup {}", plan.backup_id);
        let (job, mut cancels) =
            self.register(JobKind::Restore, &opts.actor, summary, vec![target])?;
        let cancel = cancels.remove(0);
        let slots = Arc::new(Semaphore::new(1));
        self.spawn_item(job, 0, slots, cancel, move |progress, cancel| {
            let run = detached(move || async move {
                app.run_restore(&plan, &opts, Some(progress), cancel).await
            });
            async move {
                match run.await {
                    Ok(r) => ItemEnd::from_restore(&r),
                    Err(e) => ItemEnd::refused(Stage::Plan, e.kind(), e.to_string()),
                }
            }
        });
        Ok(job)
    }

    /// Starts copying a backup to another store ([`App::copy_backup`]); the item is the
    /// backup's claim, the summary names the destination.
    pub fn submit_copy(&self, app: Arc<App>, opts: CopyOptions) -> Result<JobId, SubmitError> {
        let row = app.history.backup(&opts.backup_id).ok().flatten();
        let target = row.map_or_else(
            || (String::new(), opts.backup_id.clone(), None),
            |r| (r.namespace, r.pvc, Some(r.bytes_stored).filter(|&b| b > 0)),
        );
        let summary = format!("backup {} to store {}", opts.backup_id, opts.to);
        let (job, mut cancels) =
            self.register(JobKind::Copy, &opts.actor, summary, vec![target])?;
        let cancel = cancels.remove(0);
        let slots = Arc::new(Semaphore::new(1));
        self.spawn_item(job, 0, slots, cancel, move |progress, cancel| {
            let run =
                detached(
                    move || async move { app.copy_backup(&opts, Some(progress), cancel).await },
                );
            async move {
                match run.await {
                    Ok(r) => ItemEnd::from_copy(&r),
                    Err(e) => ItemEnd::refused(Stage::Resolve, e.kind(), e.to_string()),
                }
            }
        });
        Ok(job)
    }

    /// Creates a job with queued items; returns its id and each item's cancel receiver.
    fn register(
        &self,
        kind: JobKind,
        actor: &str,
        summary: String,
        targets: Vec<(String, String, Option<u64>)>,
    ) -> Result<(JobId, Vec<watch::Receiver<bool>>), SubmitError> {
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if targets.is_empty() {
            return Err(SubmitError::Empty);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        let n = targets.len();
        let items = targets
            .into_iter()
            .enumerate()
            .map(|(index, (namespace, pvc, expected_bytes))| ItemState {
                job: id,
                kind,
                index,
                namespace,
                pvc,
                id: String::new(),
                status: JobStatus::Queued,
                stage: Stage::Queued,
                bytes: 0,
                rate: None,
                expected_bytes,
                eta_seconds: None,
                failure_kind: None,
                error: String::new(),
                hint: String::new(),
                artifact: String::new(),
                started_at: String::new(),
                finished_at: String::new(),
            })
            .collect();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| watch::channel(false)).unzip();
        let entry = JobEntry {
            state: JobState {
                id,
                kind,
                actor: actor.into(),
                submitted_at: now_rfc3339(),
                summary,
                items,
            },
            cancels: senders,
            started: vec![None; n],
            streaming: vec![None; n],
        };
        {
            let mut jobs = self.lock();
            jobs.push_back(entry);
            while jobs.len() > KEPT_JOBS {
                match jobs.iter().position(|j| j.state.finished()) {
                    Some(oldest_finished) => drop(jobs.remove(oldest_finished)),
                    None => break,
                }
            }
        }
        self.inner.in_flight.send_modify(|c| *c += n);
        let _ = self.inner.events.send(JobEvent::Submitted(id));
        Ok((id, receivers))
    }

    /// Runs one item: waits for a slot (or a cancel), then runs `work` while applying its
    /// progress, then records its end.
    fn spawn_item<F, Fut>(
        &self,
        job: JobId,
        index: usize,
        slots: Arc<Semaphore>,
        mut cancel: watch::Receiver<bool>,
        work: F,
    ) where
        F: FnOnce(mpsc::UnboundedSender<Progress>, watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ItemEnd> + Send + 'static,
    {
        let jobs = self.clone();
        let guard = InFlight(self.inner.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let _slot = tokio::select! {
                slot = slots.acquire_owned() => slot,
                _ = cancel.wait_for(|c| *c) => {
                    jobs.end(job, index, ItemEnd { status: JobStatus::Cancelled, ..ItemEnd::refused(Stage::Queued, FailureKind::Cancelled, "cancelled before it started".into()) });
                    return;
                }
            };
            jobs.update(job, index, |item, entry_started, _| {
                item.status = JobStatus::Running;
                item.stage = Stage::Resolve;
                item.started_at = now_rfc3339();
                *entry_started = Some(Instant::now());
            });
            let (tx, mut rx) = mpsc::unbounded_channel();
            let run = work(tx, cancel);
            tokio::pin!(run);
            let end = loop {
                tokio::select! {
                    Some(p) = rx.recv() => jobs.progress(job, index, p),
                    end = &mut run => break end,
                }
            };
            while let Ok(p) = rx.try_recv() {
                jobs.progress(job, index, p);
            }
            jobs.end(job, index, end);
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<JobEntry>> {
        self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to an item and publishes the result.
    fn update(
        &self,
        job: JobId,
        index: usize,
        change: impl FnOnce(&mut ItemState, &mut Option<Instant>, &mut Option<Instant>),
    ) -> Option<(JobKind, ItemState, Option<Instant>)> {
        let changed = {
            let mut jobs = self.lock();
            let entry = jobs.iter_mut().find(|j| j.state.id == job)?;
            let item = entry.state.items.get_mut(index)?;
            change(item, &mut entry.started[index], &mut entry.streaming[index]);
            (entry.state.kind, item.clone(), entry.started[index])
        };
        let _ = self
            .inner
            .events
            .send(JobEvent::Item(Box::new(changed.1.clone())));
        Some(changed)
    }

    fn progress(&self, job: JobId, index: usize, p: Progress) {
        match p {
            Progress::Stage { id, stage, .. } => {
                self.update(job, index, |item, _, streaming| {
                    item.id = id;
                    item.stage = stage;
                    if stage == Stage::Stream {
                        *streaming = Some(Instant::now());
                    }
                });
            }
            Progress::Bytes { read, .. } => {
                self.update(job, index, |item, _, streaming| {
                    item.bytes = read;
                    let since = streaming.get_or_insert_with(Instant::now);
                    let secs = since.elapsed().as_secs_f64();
                    if secs > 0.0 {
                        let rate = read as f64 / secs;
                        item.rate = Some(rate);
                        item.eta_seconds = item
                            .expected_bytes
                            .filter(|&total| total > read && rate > 0.0)
                            .map(|total| ((total - read) as f64 / rate).ceil() as u64);
                    }
                });
            }
            // Done is handled from the engine's return value, which carries the same result.
            _ => {}
        }
    }

    fn end(&self, job: JobId, index: usize, end: ItemEnd) {
        let updated = self.update(job, index, |item, _, streaming| {
            item.status = end.status;
            item.stage = end.stage;
            if !end.id.is_empty() {
                item.id = end.id.clone();
            }
            if end.bytes > 0 || end.status == JobStatus::Succeeded {
                item.bytes = end.bytes;
            }
            if let Some(since) = streaming.take() {
                let secs = since.elapsed().as_secs_f64();
                item.rate = (secs > 0.0).then(|| item.bytes as f64 / secs);
            }
            item.eta_seconds = None;
            item.failure_kind = end.failure_kind;
            item.error = end.error.clone();
            item.hint = next_step(end.status, end.stage).into();
            item.artifact = end.artifact.clone();
            item.finished_at = now_rfc3339();
        });
        if let (Some(observer), Some((kind, item, started))) = (&self.inner.observer, updated) {
            let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
            observer.item_finished(kind, &item, elapsed);
        }
    }

    /// Cancels one item (`Some(index)`) or every item of a job; false when there is no such
    /// job or item.
    pub fn cancel(&self, job: JobId, item: Option<usize>) -> bool {
        let jobs = self.lock();
        let Some(entry) = jobs.iter().find(|j| j.state.id == job) else {
            return false;
        };
        match item {
            Some(i) => entry.cancels.get(i).map(|c| c.send_replace(true)).is_some(),
            None => {
                for c in &entry.cancels {
                    c.send_replace(true);
                }
                true
            }
        }
    }

    /// Every kept job, newest first.
    pub fn list(&self) -> Vec<JobState> {
        self.lock().iter().rev().map(|j| j.state.clone()).collect()
    }

    /// One job.
    pub fn get(&self, job: JobId) -> Option<JobState> {
        self.lock()
            .iter()
            .find(|j| j.state.id == job)
            .map(|j| j.state.clone())
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// Items queued or running.
    pub fn in_flight(&self) -> usize {
        *self.inner.in_flight.borrow()
    }

    /// Stops accepting jobs; waits up to `grace` for running items, then cancels them and waits
    /// up to `cancel_grace` for their clean-up; marks the history rows still running then as
    /// interrupted.
    pub async fn shutdown(
        &self,
        grace: Duration,
        cancel_grace: Duration,
        workspace: &Workspace,
    ) -> ShutdownReport {
        self.inner.accepting.store(false, Ordering::SeqCst);
        let mut report = ShutdownReport::default();
        let mut idle = self.inner.in_flight.subscribe();
        if tokio::time::timeout(grace, idle.wait_for(|n| *n == 0))
            .await
            .is_ok()
        {
            return report;
        }
        report.cancelled = self.in_flight();
        for job in self.lock().iter() {
            for c in &job.cancels {
                c.send_replace(true);
            }
        }
        if tokio::time::timeout(cancel_grace, idle.wait_for(|n| *n == 0))
            .await
            .is_ok()
        {
            return report;
        }
        match workspace.interrupt_running() {
            Ok(ids) => report.interrupted = ids,
            Err(e) => tracing::error!(error = %e, "marking unfinished jobs interrupted failed"),
        }
        let stuck: Vec<(JobId, usize)> = self
            .lock()
            .iter()
            .flat_map(|j| {
                j.state
                    .items
                    .iter()
                    .filter(|i| !i.status.is_final())
                    .map(|i| (i.job, i.index))
            })
            .collect();
        for (job, index) in stuck {
            self.end(
                job,
                index,
                ItemEnd {
                    status: JobStatus::Interrupted,
                    ..ItemEnd::refused(
                        Stage::Shutdown,
                        FailureKind::Cancelled,
                        "nkvm shut down before this finished".into(),
                    )
                },
            );
        }
        report
    }
}

impl nkvm_domain::UserError for SubmitError {
    fn kind(&self) -> FailureKind {
        match self {
            SubmitError::ShuttingDown => FailureKind::Conflict,
            SubmitError::Empty => FailureKind::InvalidInput,
        }
    }
}

#[cfg(test)]
mod tests;
