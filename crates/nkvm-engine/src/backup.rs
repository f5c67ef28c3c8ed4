//! Backup jobs: for each claim, refuse early when it cannot be read safely, run a read-only
//! helper pod where the claim can be mounted, stream `tar` out of it over exec into the
//! archive pipeline, and keep the archive only when everything proved complete: exit status
//! 0 with a status frame, the tar end-of-archive seen, and the store's commit done. The job
//! lifecycle ([`crate::lifecycle`]) deletes the helper pod whatever happens and writes the
//! history row and audit entries. With an S3 store that allows it, the agent uploads the
//! archive itself ([`direct`]).

mod direct;

use crate::agent::{self, DataPath, receive};
use crate::archive::{self, Archived, CompressionOptions};
use crate::job_helper::RunningHelper;
use crate::lifecycle::{
    JobEnd, JobFailure, JobResult, JobSpec, Tracker, fail, joined, new_id, now_rfc3339,
};
use crate::sink::{self, Sink};
use crate::{App, EngineError, Scope};
use bytes::Bytes;
use nkvm_domain::UserError;
use nkvm_domain::{BackupId, FailureKind, JobStatus, PvcRecord, PvcRef, Stage, Trigger};
use nkvm_history::{BackupRow, HistoryError};
use nkvm_kube::helper::{self, HelperMode, HelperPodOptions};
use nkvm_kube::tar_command::ArchiveExit;
use nkvm_store::{
    ArchiveKey, ArchiveStore, ArchiveWriter, DirectSent, DirectUpload, Manifest, PvcIdentity,
    StoredArchive,
};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::{mpsc, watch};

/// How to run a batch of backups.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Compression.
    pub compression: CompressionOptions,
    /// Claims backed up at once.
    pub parallel: usize,
    /// What started it.
    pub trigger: Trigger,
    /// Who asked.
    pub actor: String,
    /// The store the archives go to (`local`, or a stores-file name; `""` is `local`).
    pub store: String,
}

/// One backup's outcome, in the CLI/API JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    /// Backup id.
    pub id: String,
    /// `succeeded`, `failed`, `cancelled`.
    pub status: JobStatus,
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
    /// How the bytes moved: `agent` (compressed in the helper pod), `direct` (compressed
    /// and uploaded to the store by the helper pod) or `tar` (generic image).
    pub data_path: DataPath,
    /// Archive path in the store ("" when nothing was kept).
    pub artifact: String,
    /// The store the archive went to.
    pub store: String,
    /// Last stage reached (the failing one on failure).
    pub stage: Stage,
    /// What kind of failure it was (`""` on success).
    #[serde(serialize_with = "nkvm_domain::failure::serialize_label")]
    pub failure_kind: Option<FailureKind>,
    /// Why it failed ("" on success).
    pub error: String,
    /// What the operator should know about a backup that succeeded (device nodes that a
    /// restore will refuse).
    pub warnings: Vec<String>,
}

/// What a backup job knows before it starts, to build its result and row however it ends.
struct BackupFacts {
    id: BackupId,
    cluster: String,
    claim: PvcRef,
    pvc_uid: String,
    compression: &'static str,
    data_path: DataPath,
    trigger: Trigger,
    actor: String,
    store: String,
}

/// An archive every byte of which is in the store, not yet visible: committing writes the
/// manifest and makes it so.
enum Pending {
    /// Written by nkvm through the store's writer.
    Writer(Box<dyn ArchiveWriter>),
    /// Uploaded by the agent into an open upload, with what its trailer reported.
    Direct {
        upload: Box<DirectUpload>,
        sent: DirectSent,
    },
}

impl Pending {
    /// Makes the archive visible with `manifest` (blocking: call from a blocking thread).
    fn commit(self, manifest: &Manifest) -> Result<StoredArchive, nkvm_store::StoreError> {
        match self {
            Pending::Writer(writer) => writer.commit(manifest),
            Pending::Direct { upload, sent } => upload.commit(manifest, sent),
        }
    }
}

/// What a backup's steps return on success.
struct Kept {
    bytes_read: u64,
    stored: StoredArchive,
    warnings: Vec<String>,
}

/// A backup's result with the history row it leaves.
#[derive(Clone)]
struct BackupJob {
    result: BackupResult,
    row: BackupRow,
}

impl JobResult for BackupJob {
    fn record(&self, app: &App) -> Result<(), HistoryError> {
        app.history.record_backup(&self.row)
    }

    fn into_progress(self) -> Progress {
        Progress::Done(Box::new(self.result))
    }
}

impl BackupFacts {
    /// The result and row of a job that ended as `end` (`kept` on success only).
    fn job(&self, end: &JobEnd, kept: Option<&Kept>) -> BackupJob {
        let result = BackupResult {
            id: self.id.to_string(),
            status: end.status,
            cluster: self.cluster.clone(),
            namespace: self.claim.namespace.to_string(),
            pvc: self.claim.name.to_string(),
            pvc_uid: self.pvc_uid.clone(),
            started_at: end.started_at.clone(),
            finished_at: end.finished_at.clone(),
            bytes_read: kept.map_or(end.bytes, |k| k.bytes_read),
            bytes_stored: kept.map_or(0, |k| k.stored.bytes_stored),
            sha256: kept.map(|k| k.stored.sha256.clone()).unwrap_or_default(),
            compression: self.compression.into(),
            data_path: self.data_path,
            artifact: kept.map(|k| k.stored.artifact.clone()).unwrap_or_default(),
            store: self.store.clone(),
            stage: end.stage,
            failure_kind: end.failure,
            error: end.error.clone(),
            warnings: kept.map(|k| k.warnings.clone()).unwrap_or_default(),
        };
        let row = BackupRow {
            id: result.id.clone(),
            cluster: result.cluster.clone(),
            namespace: result.namespace.clone(),
            pvc: result.pvc.clone(),
            pvc_uid: result.pvc_uid.clone(),
            trigger: self.trigger,
            actor: self.actor.clone(),
            status: result.status,
            stage: result.stage,
            failure_kind: end.failure,
            error: result.error.clone(),
            started_at: result.started_at.clone(),
            finished_at: (!result.finished_at.is_empty()).then(|| result.finished_at.clone()),
            bytes_read: result.bytes_read,
            bytes_stored: result.bytes_stored,
            sha256: result.sha256.clone(),
            compression: result.compression.clone(),
            artifact: result.artifact.clone(),
            helper_pod: end.helper_pod.clone(),
            node: end.node.clone(),
            store: self.store.clone(),
            data_path: result.data_path.as_str().into(),
        };
        BackupJob { result, row }
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
        /// The stage entered.
        stage: Stage,
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
    /// A copy job ended.
    CopyDone(Box<crate::CopyResult>),
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
        cancel: watch::Receiver<bool>,
    ) -> BackupResult {
        let store = if opts.store.is_empty() {
            nkvm_store::config::LOCAL.to_string()
        } else {
            opts.store.clone()
        };
        let data_path = match self.settings.data_path() {
            DataPath::Agent if self.stores.store(&store).is_ok_and(|s| s.direct_uploads()) => {
                DataPath::Direct
            }
            path => path,
        };
        let facts = BackupFacts {
            id: new_id(),
            cluster: self.conn.info.id.clone(),
            claim: claim.clone(),
            pvc_uid: record.as_ref().map(|r| r.uid.clone()).unwrap_or_default(),
            compression: opts.compression.compression.as_str(),
            data_path,
            trigger: opts.trigger,
            actor: opts.actor.clone(),
            store,
        };
        let tracker = Tracker::new(
            facts.id.to_string(),
            claim.to_string(),
            Stage::Resolve,
            progress.cloned(),
        );
        let spec = JobSpec {
            action: "backup",
            actor: &opts.actor,
            target: claim.to_string(),
            detail: facts.id.to_string(),
            cancelled: "cancelled on request; no archive was kept",
        };
        let steps = self.backup_steps(&facts, record, opts, &tracker);
        self.run_job(spec, &tracker, cancel, steps, |end, kept| {
            facts.job(end, kept)
        })
        .await
        .result
    }

    /// The backup's steps: resolve, helper pod, stream, commit.
    async fn backup_steps(
        &self,
        facts: &BackupFacts,
        record: Option<PvcRecord>,
        opts: &BackupOptions,
        tracker: &Tracker,
    ) -> Result<Kept, JobFailure> {
        let claim = &facts.claim;
        let record = backupable(claim, record)?;
        let pvc = self.read_claim(claim, Stage::Resolve).await?;
        let key = archive_key(facts, &opts.compression);
        // Before any helper pod: a store that is unreachable, refuses the credentials or
        // already holds this name fails the job with nothing to clean up.
        let store = crate::sink::checked_store(&self.stores, &facts.store, &key).await?;
        let upload = match facts.data_path {
            DataPath::Direct => direct::begin(store.clone(), &key).await?,
            _ => None,
        };
        let helper_opts = self.backup_helper_options(&facts.id, claim, &record).await;
        let helper = match self.start_helper(tracker, &helper_opts).await {
            Ok(helper) => helper,
            Err(e) => {
                if let Some(upload) = upload {
                    direct::abort(upload).await;
                }
                return Err(e);
            }
        };
        tracker.enter(Stage::Stream);
        let archived = match upload {
            Some(upload) => {
                self.stream_direct(&helper, upload, &opts.compression, tracker)
                    .await?
            }
            None => {
                self.stream_backup(store, &key, &helper, &opts.compression, tracker)
                    .await?
            }
        };
        tracker.enter(Stage::Commit);
        let bytes_read = archived.bytes_read;
        let warnings = device_warning(claim, archived.devices)
            .into_iter()
            .collect();
        let manifest = Manifest {
            format_version: nkvm_store::FORMAT_VERSION,
            backup_id: facts.id.clone(),
            cluster: facts.cluster.clone(),
            namespace: claim.namespace.to_string(),
            pvc: PvcIdentity {
                name: claim.name.to_string(),
                uid: facts.pvc_uid.clone(),
            },
            pvc_spec: serde_json::to_value(&pvc.spec).unwrap_or_default(),
            node: helper.node.clone(),
            started_at: tracker.started_at().into(),
            finished_at: now_rfc3339(),
            bytes_read,
            bytes_stored: 0,
            sha256: String::new(),
            compression: opts.compression.compression,
            tool_version: format!("nkvm {}", env!("CARGO_PKG_VERSION")),
            artifact: String::new(),
            encryption: None,
            data_path: facts.data_path.as_str().into(),
        };
        let stored = commit(archived.writer, manifest).await?;
        Ok(Kept {
            bytes_read,
            stored,
            warnings,
        })
    }

    /// The helper pod for backing `claim` up: read-only, and for a ReadWriteOnce claim in use
    /// on the node of its running consumer, with that pod's tolerations.
    async fn backup_helper_options(
        &self,
        id: &BackupId,
        claim: &PvcRef,
        record: &PvcRecord,
    ) -> HelperPodOptions {
        let mut opts = HelperPodOptions::new(
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
            opts.node = Some(consumer.node.clone());
            opts.tolerations = self
                .consumer_tolerations(claim.namespace.as_str(), &consumer.pod)
                .await;
        }
        opts
    }

    /// Streams the volume out of the helper into the store's partial archive; returns the
    /// archive (not yet committed) only when it proved whole.
    async fn stream_backup(
        &self,
        store: Arc<dyn ArchiveStore>,
        key: &ArchiveKey,
        helper: &RunningHelper,
        compression: &CompressionOptions,
        tracker: &Tracker,
    ) -> Result<Archived<Pending>, JobFailure> {
        let (partial, store_failed) = {
            let key = key.clone();
            tokio::task::spawn_blocking(move || Sink::begin(store.as_ref(), &key))
                .await
                .map_err(|e| {
                    fail(
                        Stage::Store,
                        FailureKind::Internal,
                        format!("beginning the archive panicked: {e}"),
                    )
                })??
        };
        let archived = match helper.path {
            DataPath::Agent | DataPath::Direct => {
                self.stream_from_agent(helper, partial, &store_failed, compression, tracker)
                    .await
            }
            DataPath::Tar => {
                self.stream_from_tar(helper, partial, &store_failed, compression, tracker)
                    .await
            }
        };
        archived.map(|a| a.map_writer(Pending::Writer))
    }

    /// Runs `argv` in the helper with its stdout sent to `tx`, the job's progress ticking
    /// meanwhile.
    async fn exec_out(
        &self,
        helper: &RunningHelper,
        argv: &[String],
        tx: mpsc::Sender<Bytes>,
        tracker: &Tracker,
    ) -> Result<nkvm_kube::exec::ExecOutcome, nkvm_kube::exec::ExecError> {
        let _ticker = tracker.ticker();
        nkvm_kube::exec::exec_stream(
            &self.conn.client,
            &helper.target,
            argv,
            None,
            tx,
            &self.stream_options(),
        )
        .await
    }

    /// The generic path: tar's output crosses the exec stream uncompressed, and nkvm checks,
    /// compresses and hashes it; kept only when tar exited cleanly and the stream was a
    /// complete tar.
    async fn stream_from_tar(
        &self,
        helper: &RunningHelper,
        partial: Sink,
        store_failed: &AtomicBool,
        compression: &CompressionOptions,
        tracker: &Tracker,
    ) -> Result<Archived<Box<dyn ArchiveWriter>>, JobFailure> {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let (compression, counter) = (*compression, tracker.bytes().clone());
        let pipeline = tokio::task::spawn_blocking(move || {
            archive::archive(rx, partial, &compression, &counter)
        });
        let argv = helper.flavor.archive_command(helper::DATA_DIR);
        let exec = self.exec_out(helper, &argv, tx, tracker).await;
        let archived = joined(pipeline, "the archive pipeline").await?;
        let checked = exec
            .map_err(|e| fail(Stage::Stream, e.kind(), e.to_string()))
            .and_then(|outcome| tar_exit_ok(helper, outcome.exit_code, outcome.stderr.trim()));
        match (archived, checked) {
            // The store failing ends the stream too: its error is the cause, whatever exec saw.
            (Err(e), _) if sink::store_failed(store_failed) => Err(sink::failed_store(&e)),
            (Ok(archived), Ok(())) => Ok(archived.map_writer(Sink::into_writer)),
            (Ok(archived), Err(e)) => {
                sink::discard(archived.writer).await;
                Err(e)
            }
            // A broken exec or a failed tar explains a truncated stream better than the tar check.
            (Err(_), Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(fail(
                Stage::Stream,
                FailureKind::CommandFailed,
                e.to_string(),
            )),
        }
    }

    /// The agent path: `nkvm agent backup` in the helper sends compressed bytes and a
    /// trailer; nkvm hashes and counts what arrives and keeps the archive only when the exec
    /// ended with a status, the trailer arrived and matches, and tar exited cleanly.
    async fn stream_from_agent(
        &self,
        helper: &RunningHelper,
        partial: Sink,
        store_failed: &AtomicBool,
        compression: &CompressionOptions,
        tracker: &Tracker,
    ) -> Result<Archived<Box<dyn ArchiveWriter>>, JobFailure> {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let counter = tracker.bytes().clone();
        let receiving =
            tokio::task::spawn_blocking(move || receive::receive(rx, partial, &counter));
        let argv = agent_backup_command(compression, self.settings.agent_fault);
        let exec = self.exec_out(helper, &argv, tx, tracker).await;
        let arrived = joined(receiving, "receiving the agent's archive").await?;
        // The store failing ends the stream too (the exec is then abandoned): its error is
        // the cause, whatever exec saw.
        if let Err(e) = &arrived
            && sink::store_failed(store_failed)
        {
            return Err(sink::failed_store(e));
        }
        let (arrived, outcome) = match (arrived, exec) {
            (Ok(arrived), Ok(outcome)) => (arrived, outcome),
            // Otherwise a cut or stalled exec explains a broken agent stream best.
            (arrived, Err(e)) => {
                if let Ok(a) = arrived {
                    sink::discard(a.writer).await;
                }
                return Err(fail(Stage::Stream, e.kind(), e.to_string()));
            }
            // An agent that failed before its trailer says why on stderr: both go in.
            (Err(e), Ok(outcome)) if outcome.exit_code != 0 => {
                let mut failure = agent_failed(&outcome);
                failure.message = format!("{e}; {}", failure.message);
                return Err(failure);
            }
            (Err(e), Ok(_)) => return Err(in_stream(e)),
        };
        // From here the store holds every byte: a refusal aborts that write at once rather
        // than leaving it to the writer's drop.
        let (archived, trailer) = match receive::accept(arrived) {
            Ok(accepted) => accepted,
            Err(refused) => {
                sink::discard(refused.writer).await;
                return Err(in_stream(refused.error));
            }
        };
        if let Err(e) = agent_exit_ok(helper, &trailer, &outcome) {
            sink::discard(archived.writer).await;
            return Err(e);
        }
        Ok(archived.map_writer(Sink::into_writer))
    }
}

/// A refused agent stream, as a job failure at stage `stream`.
fn in_stream(e: receive::ReceiveError) -> JobFailure {
    fail(Stage::Stream, e.kind(), e.to_string())
}

/// The failure of an agent that exited with a non-zero code, with what it said.
fn agent_failed(outcome: &nkvm_kube::exec::ExecOutcome) -> JobFailure {
    fail(
        Stage::Stream,
        FailureKind::CommandFailed,
        format!(
            "the nkvm agent in the helper pod exited with code {}: {}",
            outcome.exit_code,
            outcome.stderr.trim()
        ),
    )
}

/// Whether tar (per the trailer) and then the agent itself exited cleanly.
fn agent_exit_ok(
    helper: &RunningHelper,
    trailer: &agent::wire::Trailer,
    outcome: &nkvm_kube::exec::ExecOutcome,
) -> Result<(), JobFailure> {
    let Some(tar_exit) = trailer.tar_exit else {
        return Err(fail(
            Stage::Stream,
            FailureKind::CommandFailed,
            format!(
                "tar in the helper pod did not exit normally: {}",
                trailer.tar_stderr
            ),
        ));
    };
    tar_exit_ok(helper, tar_exit, trailer.tar_stderr.trim())?;
    if outcome.exit_code != 0 {
        return Err(agent_failed(outcome));
    }
    Ok(())
}

/// Where a backup's archive goes in its store.
fn archive_key(facts: &BackupFacts, compression: &CompressionOptions) -> ArchiveKey {
    ArchiveKey {
        cluster: facts.cluster.clone(),
        namespace: facts.claim.namespace.to_string(),
        pvc: facts.claim.name.to_string(),
        id: facts.id.clone(),
        compression: compression.compression,
        encrypted: false,
    }
}

/// `nkvm agent backup` with the job's compression (zstd workers: the agent's cores).
fn agent_backup_command(
    compression: &CompressionOptions,
    fault: Option<agent::Fault>,
) -> Vec<String> {
    let mut argv: Vec<String> = [
        agent::AGENT_PATH,
        "agent",
        "backup",
        "--dir",
        helper::DATA_DIR,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    argv.extend([
        "--compression".into(),
        compression.compression.as_str().into(),
    ]);
    if let Some(level) = compression.level {
        argv.extend(["--level".into(), level.to_string()]);
    }
    if let Some(fault) = fault {
        argv.extend(["--fault".into(), fault.to_string()]);
    }
    argv
}

/// A warning for a volume holding device nodes: they are kept in the archive, but a restore
/// refuses archives with devices, so the operator should know before they need one.
fn device_warning(claim: &PvcRef, devices: u64) -> Option<String> {
    (devices > 0).then(|| {
        tracing::warn!(claim = %claim, devices, "the volume holds device nodes");
        format!(
            "{claim} holds {devices} device node(s); nkvm keeps them in the archive but refuses to restore archives with devices (extract such an archive by hand, or remove the device nodes from the volume)"
        )
    })
}

/// The claim's inventory record, when it can be backed up safely.
fn backupable(claim: &PvcRef, record: Option<PvcRecord>) -> Result<PvcRecord, JobFailure> {
    let record = record.ok_or_else(|| {
        fail(
            Stage::Resolve,
            FailureKind::NotFound,
            format!("persistentvolumeclaim {claim} not found"),
        )
    })?;
    if !record.backupable {
        return Err(fail(
            Stage::Resolve,
            FailureKind::Conflict,
            format!("{claim} cannot be backed up: {}", record.reason),
        ));
    }
    Ok(record)
}

/// Refuses a tar exit status that does not prove a complete, consistent read.
fn tar_exit_ok(helper: &RunningHelper, exit_code: i32, stderr: &str) -> Result<(), JobFailure> {
    match helper.flavor.archive_exit(exit_code) {
        ArchiveExit::Complete => Ok(()),
        // Only a complete, consistent read counts: a copy of files changing under tar may
        // not restore to anything the application can use.
        ArchiveExit::ChangedWhileReading => Err(fail(
            Stage::Stream,
            FailureKind::CommandFailed,
            format!(
                "files changed while tar read them, so the archive is not a consistent copy; pause the writer (or scale it down) and retry. tar said: {stderr}"
            ),
        )),
        ArchiveExit::Failed => Err(fail(
            Stage::Stream,
            FailureKind::CommandFailed,
            format!("tar in the helper pod failed with exit code {exit_code}: {stderr}"),
        )),
    }
}

/// Makes the archive and its manifest visible in the store (on a blocking thread: it fsyncs).
async fn commit(pending: Pending, manifest: Manifest) -> Result<StoredArchive, JobFailure> {
    tokio::task::spawn_blocking(move || pending.commit(&manifest))
        .await
        .map_err(|e| {
            fail(
                Stage::Commit,
                FailureKind::Internal,
                format!("committing panicked: {e}"),
            )
        })?
        .map_err(|e| fail(Stage::Commit, e.kind(), e.to_string()))
}
