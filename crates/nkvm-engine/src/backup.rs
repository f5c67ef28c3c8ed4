//! Backup jobs: for each claim, refuse early when it cannot be read safely, run a read-only
//! helper pod where the claim can be mounted, stream `tar` out of it over exec into the
//! archive pipeline, and keep the archive only when everything proved complete: exit status
//! 0 with a status frame, the tar end-of-archive seen, and the store's commit done. The
//! helper pod is deleted whatever happens; every job leaves a history row and audit entries.

use crate::archive::{self, CompressionOptions};
use crate::{App, EngineError, Scope};
use bytes::Bytes;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use nkvm_domain::{BackupId, FailureKind, PvcRecord, PvcRef};
use nkvm_history::BackupRow;
use nkvm_kube::helper_pod::{self, HelperMode, HelperPodOptions};
use nkvm_store::{ArchiveKey, Manifest, PvcIdentity};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// How to run a batch of backups.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Compression.
    pub compression: CompressionOptions,
    /// Claims backed up at once.
    pub parallel: usize,
    /// `cli`, `ui` or `schedule`.
    pub trigger: String,
    /// Who asked.
    pub actor: String,
}

/// One backup's outcome, in the CLI/API JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    /// Backup id.
    pub id: String,
    /// `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// Cluster id.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Claim name.
    pub pvc: String,
    /// Claim uid.
    pub pvc_uid: String,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// Bytes of tar read from the volume.
    pub bytes_read: u64,
    /// Bytes stored.
    pub bytes_stored: u64,
    /// sha256 of the stored bytes.
    pub sha256: String,
    /// Compression.
    pub compression: String,
    /// Archive path in the store ("" when nothing was kept).
    pub artifact: String,
    /// Last stage reached (the failing one on failure).
    pub stage: String,
    /// Why it failed ("" on success).
    pub error: String,
}

impl BackupResult {
    /// The history row for it.
    fn row(
        &self,
        trigger: &str,
        actor: &str,
        helper_pod: &str,
        node: &str,
        kind: Option<FailureKind>,
    ) -> BackupRow {
        BackupRow {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            namespace: self.namespace.clone(),
            pvc: self.pvc.clone(),
            pvc_uid: self.pvc_uid.clone(),
            trigger: trigger.into(),
            actor: actor.into(),
            status: self.status.clone(),
            stage: self.stage.clone(),
            failure_kind: kind.map(|k| k.label().to_string()).unwrap_or_default(),
            error: self.error.clone(),
            started_at: self.started_at.clone(),
            finished_at: (!self.finished_at.is_empty()).then(|| self.finished_at.clone()),
            bytes_read: self.bytes_read,
            bytes_stored: self.bytes_stored,
            sha256: self.sha256.clone(),
            compression: self.compression.clone(),
            artifact: self.artifact.clone(),
            helper_pod: helper_pod.into(),
            node: node.into(),
        }
    }
}

/// Progress of a running batch, for progress bars and the UI's live view.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A job entered a stage.
    Stage {
        /// Claim.
        pvc: String,
        /// Backup id.
        id: String,
        /// Stage name.
        stage: &'static str,
    },
    /// Tar bytes read so far by a running job (sent about once a second).
    Bytes {
        /// Claim.
        pvc: String,
        /// Backup id.
        id: String,
        /// Bytes read.
        read: u64,
    },
    /// A backup job ended.
    Done(Box<BackupResult>),
    /// A restore job ended.
    RestoreDone(Box<crate::RestoreResult>),
}

/// A spawned task that is aborted when this handle is dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `Progress::Bytes` with `counter`'s value about once a second until dropped.
/// Aborted when dropped: a cancelled job drops its future, and a ticker left running would
/// hold a progress sender open forever.
pub(crate) fn progress_ticker(
    progress: Option<&mpsc::UnboundedSender<Progress>>,
    pvc: String,
    id: &str,
    counter: &Arc<std::sync::atomic::AtomicU64>,
) -> Option<AbortOnDrop> {
    let (p, id, counter) = (progress?.clone(), id.to_string(), counter.clone());
    Some(AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let read = counter.load(std::sync::atomic::Ordering::Relaxed);
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

/// A job failure: the stage it happened in, its kind and message.
pub(crate) struct JobFailure {
    pub(crate) stage: &'static str,
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

impl JobFailure {
    /// The job status it leaves: `cancelled` when asked to stop, else `failed`.
    pub(crate) fn status(&self) -> &'static str {
        if self.kind == FailureKind::Cancelled {
            "cancelled"
        } else {
            "failed"
        }
    }
}

/// Applies a job's outcome to its status, stage and error, after the helper pod's deletion
/// (`deleted`: why it failed, if it did); returns the failure kind, `None` on success.
pub(crate) fn settle(
    outcome: Result<(), JobFailure>,
    deleted: Result<(), String>,
    status: &mut String,
    stage: &mut String,
    error: &mut String,
) -> Option<FailureKind> {
    let (kind, message) = match outcome {
        Ok(()) => {
            *status = "succeeded".into();
            (None, String::new())
        }
        Err(f) => {
            *status = f.status().into();
            *stage = f.stage.into();
            (Some(f.kind), f.message)
        }
    };
    *error = [message, deleted.err().unwrap_or_default()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    kind
}

impl App {
    /// Deletes a job's helper pod, if it made one. The pod goes whatever happened to the job;
    /// a failure to delete it is returned for the job's record.
    pub(crate) async fn delete_job_helper(&self, namespace: &str, pod: &str) -> Result<(), String> {
        if pod.is_empty() {
            return Ok(());
        }
        nkvm_kube::helper::delete_helper(&self.conn.client, namespace, pod)
            .await
            .map_err(|e| format!("deleting helper pod {pod} failed: {e}"))
    }
}

pub(crate) fn fail(
    stage: &'static str,
    kind: FailureKind,
    message: impl Into<String>,
) -> JobFailure {
    JobFailure {
        stage,
        kind,
        message: message.into(),
    }
}

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn new_id() -> BackupId {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    BackupId::new(&stamp, rand::random::<u32>()).expect("a generated id has the id shape")
}

impl App {
    /// Backs up `claims`, `opts.parallel` at a time; one result per claim, in order. Refusals
    /// (allowlist, unbound, Block, ReadWriteOncePod in use) happen before any pod is made.
    pub async fn backup(
        self: &Arc<Self>,
        claims: &[PvcRef],
        opts: &BackupOptions,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        cancel: watch::Receiver<bool>,
    ) -> Result<Vec<BackupResult>, EngineError> {
        for c in claims {
            self.require_allowed(c.namespace.as_str())?;
        }
        let mut inventories: HashMap<String, Vec<PvcRecord>> = HashMap::new();
        for c in claims {
            let ns = c.namespace.to_string();
            if let std::collections::hash_map::Entry::Vacant(slot) = inventories.entry(ns) {
                slot.insert(
                    self.inventory(&Scope::Namespace(c.namespace.clone()))
                        .await?,
                );
            }
        }
        let semaphore = Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
        let mut tasks = Vec::new();
        for c in claims {
            let record = inventories[c.namespace.as_str()]
                .iter()
                .find(|r| r.name == c.name.as_str())
                .cloned();
            let (app, opts, progress, cancel, claim) = (
                self.clone(),
                opts.clone(),
                progress.clone(),
                cancel.clone(),
                c.clone(),
            );
            let semaphore = semaphore.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                app.backup_one(&claim, record, &opts, progress.as_ref(), cancel)
                    .await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(
                t.await
                    .map_err(|e| EngineError::Internal(format!("a backup task panicked: {e}")))?,
            );
        }
        Ok(results)
    }

    async fn backup_one(
        &self,
        claim: &PvcRef,
        record: Option<PvcRecord>,
        opts: &BackupOptions,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        mut cancel: watch::Receiver<bool>,
    ) -> BackupResult {
        let id = new_id();
        let mut result = BackupResult {
            id: id.to_string(),
            status: "running".into(),
            cluster: self.conn.info.id.clone(),
            namespace: claim.namespace.to_string(),
            pvc: claim.name.to_string(),
            pvc_uid: record.as_ref().map(|r| r.uid.clone()).unwrap_or_default(),
            started_at: now_rfc3339(),
            finished_at: String::new(),
            bytes_read: 0,
            bytes_stored: 0,
            sha256: String::new(),
            compression: opts.compression.compression.as_str().into(),
            artifact: String::new(),
            stage: "resolve".into(),
            error: String::new(),
        };
        let _ = self.history.audit(
            &result.started_at,
            &opts.actor,
            "backup.start",
            &claim.to_string(),
            &result.id,
        );
        let mut helper = String::new();
        let mut node = String::new();
        let outcome = {
            let run = self.run_backup(
                claim,
                record,
                &id,
                opts,
                progress,
                &mut result,
                &mut helper,
                &mut node,
            );
            tokio::select! {
                r = run => r,
                _ = cancel.wait_for(|c| *c) => Err(fail("cancelled", FailureKind::Cancelled, "cancelled on request; no archive was kept")),
            }
        };
        let deleted = self
            .delete_job_helper(claim.namespace.as_str(), &helper)
            .await;
        result.finished_at = now_rfc3339();
        let kind = settle(
            outcome,
            deleted,
            &mut result.status,
            &mut result.stage,
            &mut result.error,
        );
        if kind.is_some() {
            result.artifact.clear();
            result.sha256.clear();
            result.bytes_stored = 0;
        }
        if let Err(e) = self.history.record_backup(&result.row(
            &opts.trigger,
            &opts.actor,
            &helper,
            &node,
            kind,
        )) {
            tracing::error!(error = %e, id = %result.id, "recording the backup in history failed");
        }
        let _ = self.history.audit(
            &result.finished_at,
            &opts.actor,
            &format!("backup.{}", result.status),
            &claim.to_string(),
            &result.id,
        );
        if let Some(p) = progress {
            let _ = p.send(Progress::Done(Box::new(result.clone())));
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_backup(
        &self,
        claim: &PvcRef,
        record: Option<PvcRecord>,
        id: &BackupId,
        opts: &BackupOptions,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        result: &mut BackupResult,
        helper: &mut String,
        node_out: &mut String,
    ) -> Result<(), JobFailure> {
        let stage = |result: &mut BackupResult, s: &'static str| {
            result.stage = s.into();
            if let Some(p) = progress {
                let _ = p.send(Progress::Stage {
                    pvc: claim.to_string(),
                    id: result.id.clone(),
                    stage: s,
                });
            }
        };
        let ns = claim.namespace.as_str();
        let record = record.ok_or_else(|| {
            fail(
                "resolve",
                FailureKind::NotFound,
                format!("persistentvolumeclaim {claim} not found"),
            )
        })?;
        if !record.backupable {
            return Err(fail(
                "resolve",
                FailureKind::Conflict,
                format!("{claim} cannot be backed up: {}", record.reason),
            ));
        }
        self.history
            .record_backup(&result.row(&opts.trigger, &opts.actor, "", "", None))
            .map_err(|e| fail("resolve", FailureKind::StorageUnavailable, e.to_string()))?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.conn.client.clone(), ns);
        let pvc = claims.get(claim.name.as_str()).await.map_err(|e| {
            fail(
                "resolve",
                FailureKind::ClusterUnavailable,
                format!("reading {claim}: {e}"),
            )
        })?;
        let mut helper_opts = HelperPodOptions::new(
            id.as_str(),
            claim.clone(),
            HelperMode::Backup,
            &self.settings.helper_image,
        );
        if record.access_modes.iter().any(|m| m == "ReadWriteOnce")
            && let Some(consumer) = record
                .consumers
                .iter()
                .find(|c| c.phase == "Running" && !c.node.is_empty())
        {
            // A ReadWriteOnce volume can only be mounted where it is attached: run beside its consumer.
            helper_opts.node = Some(consumer.node.clone());
            let pods: Api<Pod> = Api::namespaced(self.conn.client.clone(), ns);
            if let Ok(p) = pods.get(&consumer.pod).await {
                helper_opts.tolerations = p.spec.and_then(|s| s.tolerations).unwrap_or_default();
            }
        }
        let pod = helper_pod::helper_pod(&helper_opts);
        let name = pod.metadata.name.clone().unwrap_or_default();
        stage(result, "helper-pod");
        nkvm_kube::helper::create_helper(&self.conn.client, &pod)
            .await
            .map_err(|e| fail("helper-pod", e.kind(), e.to_string()))?;
        *helper = name.clone();
        let running = nkvm_kube::helper::wait_running(
            &self.conn.client,
            ns,
            &name,
            self.settings.helper_pod_timeout,
        )
        .await
        .map_err(|e| fail("helper-pod", e.kind(), e.to_string()))?;
        *node_out = running.node.clone();
        stage(result, "probe-tar");
        let target = nkvm_kube::exec::ExecTarget::new(ns, &name, helper_pod::CONTAINER);
        let probe =
            nkvm_kube::exec::exec_capture(&self.conn.client, &target, &["tar", "--version"])
                .await
                .map_err(|e| fail("probe-tar", e.kind(), e.to_string()))?;
        let flavor = nkvm_kube::tar_command::TarFlavor::detect(
            probe.exit_code,
            &probe.stdout,
            &probe.stderr,
        )
        .map_err(|e| fail("probe-tar", FailureKind::CommandFailed, e.to_string()))?;
        stage(result, "stream");
        let key = ArchiveKey {
            cluster: result.cluster.clone(),
            namespace: ns.into(),
            pvc: claim.name.to_string(),
            id: id.clone(),
            compression: opts.compression.compression,
        };
        let partial = self
            .store
            .begin(&key)
            .map_err(|e| fail("stream", e.kind(), e.to_string()))?;
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let compression = opts.compression;
        let read_so_far = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = read_so_far.clone();
        let pipeline = tokio::task::spawn_blocking(move || {
            archive::archive(rx, partial, &compression, &counter)
        });
        let ticker = progress_ticker(progress, claim.to_string(), &result.id, &read_so_far);
        let argv = flavor.archive_command(helper_pod::DATA_DIR);
        let exec = nkvm_kube::exec::exec_stream(
            &self.conn.client,
            &target,
            &argv,
            None,
            tx,
            &nkvm_kube::exec::ExecOptions::default(),
        )
        .await;
        drop(ticker);
        let archived = pipeline.await.map_err(|e| {
            fail(
                "stream",
                FailureKind::Internal,
                format!("the archive pipeline panicked: {e}"),
            )
        })?;
        let outcome = exec.map_err(|e| fail("stream", e.kind(), e.to_string()))?;
        use nkvm_kube::tar_command::ArchiveExit;
        let stderr = outcome.stderr.trim();
        match flavor.archive_exit(outcome.exit_code) {
            ArchiveExit::Complete => {}
            // Only a complete, consistent read counts: a copy of files changing under tar may
            // not restore to anything the application can use.
            ArchiveExit::ChangedWhileReading => {
                return Err(fail(
                    "stream",
                    FailureKind::CommandFailed,
                    format!(
                        "files changed while tar read them, so the archive is not a consistent copy; pause the writer (or scale it down) and retry. tar said: {stderr}"
                    ),
                ));
            }
            ArchiveExit::Failed => {
                return Err(fail(
                    "stream",
                    FailureKind::CommandFailed,
                    format!(
                        "tar in the helper pod failed with exit code {}: {stderr}",
                        outcome.exit_code
                    ),
                ));
            }
        }
        let archived =
            archived.map_err(|e| fail("stream", FailureKind::CommandFailed, e.to_string()))?;
        result.bytes_read = archived.bytes_read;
        stage(result, "commit");
        let manifest = Manifest {
            format_version: nkvm_store::FORMAT_VERSION,
            backup_id: id.clone(),
            cluster: result.cluster.clone(),
            namespace: ns.into(),
            pvc: PvcIdentity {
                name: claim.name.to_string(),
                uid: result.pvc_uid.clone(),
            },
            pvc_spec: serde_json::to_value(&pvc.spec).unwrap_or_default(),
            node: node_out.clone(),
            started_at: result.started_at.clone(),
            finished_at: now_rfc3339(),
            bytes_read: archived.bytes_read,
            bytes_stored: 0,
            sha256: String::new(),
            compression: opts.compression.compression,
            tool_version: format!("nkvm {}", env!("CARGO_PKG_VERSION")),
            artifact: String::new(),
        };
        let stored = tokio::task::spawn_blocking(move || archived.writer.commit(&manifest))
            .await
            .map_err(|e| {
                fail(
                    "commit",
                    FailureKind::Internal,
                    format!("committing panicked: {e}"),
                )
            })?
            .map_err(|e| fail("commit", e.kind(), e.to_string()))?;
        result.artifact = stored.artifact;
        result.bytes_stored = stored.bytes_stored;
        result.sha256 = stored.sha256;
        Ok(())
    }
}
