//! Running a planned restore: create the target claim when planned, start a read-write helper
//! pod where the claim can be mounted, optionally empty it, and stream the archive from the
//! store (hashed and decompressed on a blocking thread) into `tar -x` over exec stdin, ending
//! it with the v5 stdin close, or on v4 with a command that reads the exact length. Success
//! needs tar's exit status 0, the archive's sha256 equal to the plan's, and every tar byte
//! sent. The job lifecycle ([`crate::lifecycle`]) deletes the helper pod whatever happens and
//! writes the history row and audit entries.

use super::plan::{RestorePlan, RestoreTarget, claim_to_create, recheck};
use crate::agent::{self, DataPath, wire};
use crate::archive::decoder;
use crate::archive_safety::release_safe_members;
use crate::job_helper::RunningHelper;
use crate::lifecycle::{JobEnd, JobFailure, JobResult, JobSpec, Tracker, fail, joined, new_id};
use crate::verify::HashingReader;
use crate::{App, Progress};
use bytes::Bytes;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use nkvm_domain::UserError;
use nkvm_domain::{Compression, FailureKind, JobStatus, PvcRef, ResourceName, Stage, Trigger};
use nkvm_history::{HistoryError, RestoreRow};
use nkvm_kube::exec::{ExecError, ExecOptions, ExecOutcome, ExecTarget, exec_capture, exec_stream};
use nkvm_kube::helper::{self, HelperMode, HelperPodOptions};
use nkvm_store::{AgeIdentity, ArchiveStore};
use serde::Serialize;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};

/// Who runs a restore, for the history and the audit log.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// What started it.
    pub trigger: Trigger,
    /// Who asked.
    pub actor: String,
}

/// One restore's outcome, in the CLI/API JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    /// Restore id.
    pub id: String,
    /// The backup restored.
    pub backup_id: String,
    /// `succeeded`, `failed`, `cancelled`.
    pub status: JobStatus,
    /// Where it went.
    pub target: RestoreTarget,
    /// Whether the target claim was created by this restore.
    pub created: bool,
    /// Whether the target was emptied first.
    pub cleaned: bool,
    /// Tar bytes sent into the helper (on the agent path: extracted by it).
    pub bytes_written: u64,
    /// How the bytes moved: `agent` (compressed, checked in the helper pod) or `tar`.
    pub data_path: DataPath,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// Last stage reached (the failing one on failure).
    pub stage: Stage,
    /// What kind of failure it was (`""` on success).
    #[serde(serialize_with = "nkvm_domain::failure::serialize_label")]
    pub failure_kind: Option<FailureKind>,
    /// Why it failed ("" on success).
    pub error: String,
    /// The helper pod.
    pub helper_pod: String,
    /// The node it ran on.
    pub node: String,
}

/// What a restore did to its target, kept however the restore ends.
#[derive(Default)]
struct TargetChanges {
    created: AtomicBool,
    cleaned: AtomicBool,
}

/// What a restore job knows before it starts, to build its result and row however it ends.
struct RestoreFacts<'a> {
    id: String,
    cluster: String,
    plan: &'a RestorePlan,
    opts: &'a RestoreOptions,
    changes: TargetChanges,
}

/// A restore's result with the history row it leaves.
#[derive(Clone)]
struct RestoreJob {
    result: RestoreResult,
    row: RestoreRow,
}

impl JobResult for RestoreJob {
    fn record(&self, app: &App) -> Result<(), HistoryError> {
        app.history.record_restore(&self.row)
    }

    fn into_progress(self) -> Progress {
        Progress::RestoreDone(Box::new(self.result))
    }
}

impl RestoreFacts<'_> {
    /// The result and row of a restore that ended as `end`.
    fn job(&self, end: &JobEnd) -> RestoreJob {
        let result = RestoreResult {
            id: self.id.clone(),
            backup_id: self.plan.backup_id.clone(),
            status: end.status,
            target: self.plan.target.clone(),
            created: self.changes.created.load(Ordering::Relaxed),
            cleaned: self.changes.cleaned.load(Ordering::Relaxed),
            bytes_written: end.bytes,
            data_path: self.plan.data_path,
            started_at: end.started_at.clone(),
            finished_at: end.finished_at.clone(),
            stage: end.stage,
            failure_kind: end.failure,
            error: end.error.clone(),
            helper_pod: end.helper_pod.clone(),
            node: end.node.clone(),
        };
        let row = RestoreRow {
            id: result.id.clone(),
            backup_id: result.backup_id.clone(),
            cluster: self.cluster.clone(),
            namespace: result.target.namespace.clone(),
            pvc: result.target.pvc.clone(),
            created: result.created,
            cleaned: result.cleaned,
            trigger: self.opts.trigger,
            actor: self.opts.actor.clone(),
            status: result.status,
            stage: result.stage,
            failure_kind: end.failure,
            error: result.error.clone(),
            started_at: result.started_at.clone(),
            finished_at: (!result.finished_at.is_empty()).then(|| result.finished_at.clone()),
            bytes_written: result.bytes_written,
            helper_pod: result.helper_pod.clone(),
            node: result.node.clone(),
        };
        RestoreJob { result, row }
    }
}

/// What the archive feeder read.
#[derive(Debug)]
struct Fed {
    /// Tar bytes decompressed (all of them sent, but for trailing zero padding).
    tar_bytes: u64,
}

/// Why feeding the archive stopped.
#[derive(Debug)]
enum FeedError {
    /// The exec stream stopped taking stdin (tar exited, or the connection ended): the exec's
    /// own outcome says why.
    Stopped,
    /// Reading, decompressing or checking the archive failed.
    Archive(String),
}

/// Streams the archive into `tx` as tar bytes, checking its sha256 against `expected` and its
/// tar structure. The last chunk is held back until the whole file is hashed, so a changed
/// archive usually fails before tar sees its end; the result decides either way. When the
/// archive fails, the error goes into the stream too, so the exec ends with an error instead
/// of closing stdin on a short archive.
fn feed_archive(
    source: &Source<'_>,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    sent: &AtomicU64,
) -> Result<Fed, FeedError> {
    let fed = feed(source, tx, sent);
    if let Err(FeedError::Archive(why)) = &fed {
        let _ = tx.blocking_send(Err(std::io::Error::other(why.clone())));
    }
    fed
}

/// The archive a restore feeds, and how.
struct Source<'a> {
    store: &'a dyn ArchiveStore,
    /// Decrypts the stored age file, when the archive is one.
    identity: Option<&'a AgeIdentity>,
    artifact: &'a str,
    compression: Compression,
    /// The sha256 the plan verified.
    expected: &'a str,
    /// Clear setuid/setgid bits of every member (restores outside the backup's namespace).
    strip_set_id: bool,
}

fn feed(
    source: &Source<'_>,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    sent: &AtomicU64,
) -> Result<Fed, FeedError> {
    let (artifact, expected) = (source.artifact, source.expected);
    let archive =
        |e: &dyn std::fmt::Display| FeedError::Archive(format!("reading {artifact}: {e}"));
    let file = open_source(source.store, artifact, source.identity).map_err(|e| archive(&e))?;
    let mut hashing = HashingReader::new(file);
    let mut out = HeldBack::new(tx, sent);
    let checked = {
        let tar = decoder(&mut hashing, source.compression).map_err(|e| archive(&e))?;
        // The archive's safety rules apply to what is sent, not only to what was planned: a
        // file swapped in the store since then fails here before its hostile member is sent.
        release_safe_members(tar, source.strip_set_id, |bytes| out.push(bytes))
    };
    if out.stopped {
        return Err(FeedError::Stopped);
    }
    let contents = checked.map_err(|e| archive(&e))?;
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| archive(&e))?;
    let actual = hashing.hex();
    if actual != expected {
        return Err(FeedError::Archive(format!(
            "the archive changed after it was planned: its sha256 is now {actual}, the plan verified {expected}"
        )));
    }
    out.finish()?;
    Ok(Fed {
        tar_bytes: contents.tar_bytes,
    })
}

/// Sends tar bytes in batches of about a MiB, always holding the last batch back until the
/// whole archive is hashed, so a changed archive usually fails before tar sees its end.
struct HeldBack<'a> {
    tx: &'a mpsc::Sender<std::io::Result<Bytes>>,
    sent: &'a AtomicU64,
    batch: Vec<u8>,
    held: Option<Bytes>,
    stopped: bool,
}

impl<'a> HeldBack<'a> {
    const BATCH: usize = 1 << 20;

    fn new(tx: &'a mpsc::Sender<std::io::Result<Bytes>>, sent: &'a AtomicU64) -> Self {
        HeldBack {
            tx,
            sent,
            batch: Vec::with_capacity(Self::BATCH),
            held: None,
            stopped: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.batch.extend_from_slice(bytes);
        if self.batch.len() >= Self::BATCH {
            self.rotate()?;
        }
        Ok(())
    }

    /// Holds the current batch back and sends the one held before it.
    fn rotate(&mut self) -> std::io::Result<()> {
        let batch = Bytes::from(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(Self::BATCH),
        ));
        match self.held.replace(batch) {
            Some(previous) => self.send(previous),
            None => Ok(()),
        }
    }

    fn send(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let n = chunk.len() as u64;
        if self.tx.blocking_send(Ok(chunk)).is_err() {
            self.stopped = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the helper stopped reading",
            ));
        }
        self.sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Sends what is left, once the archive proved whole.
    fn finish(mut self) -> Result<(), FeedError> {
        if !self.batch.is_empty() {
            self.rotate().map_err(|_| FeedError::Stopped)?;
        }
        let Some(last) = self.held.take() else {
            return Ok(());
        };
        // A tar that stops reading after its end-of-archive blocks may not take the zero
        // padding that follows them; it has everything it needs. The data before them must
        // go in.
        let data_end = last.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        let mut last = last;
        let padding = last.split_off(data_end);
        if !last.is_empty() {
            self.send(last).map_err(|_| FeedError::Stopped)?;
        }
        if !padding.is_empty() {
            let _ = self.send(padding);
        }
        Ok(())
    }
}

impl App {
    /// Runs a plan made by [`App::plan_restore`]. A plan with refusals fails at once, before
    /// anything changes in the cluster.
    pub async fn run_restore(
        self: &Arc<Self>,
        plan: &RestorePlan,
        opts: &RestoreOptions,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        cancel: watch::Receiver<bool>,
    ) -> RestoreResult {
        let facts = RestoreFacts {
            id: new_id().to_string(),
            cluster: self.conn.info.id.clone(),
            plan,
            opts,
            changes: TargetChanges::default(),
        };
        let target = format!("{}/{}", plan.target.namespace, plan.target.pvc);
        let tracker = Tracker::new(facts.id.clone(), target.clone(), Stage::Plan, progress);
        let spec = JobSpec {
            action: "restore",
            actor: &opts.actor,
            target,
            detail: format!("{} from {}", facts.id, plan.backup_id),
            cancelled: "cancelled on request; the target may hold part of the data: restore again (with --clean)",
        };
        let steps = self.restore_steps(plan, &tracker, &facts.changes);
        self.run_job(spec, &tracker, cancel, steps, |end, _| facts.job(end))
            .await
            .result
    }

    /// The restore's steps: plan check, target claim, helper pod, clean, stream.
    async fn restore_steps(
        &self,
        plan: &RestorePlan,
        tracker: &Tracker,
        changes: &TargetChanges,
    ) -> Result<(), JobFailure> {
        if !plan.runnable() {
            return Err(fail(
                Stage::Plan,
                plan.refusal_kind.unwrap_or(FailureKind::Conflict),
                plan.refusals.join("; "),
            ));
        }
        self.require_allowed(&plan.target.namespace)
            .map_err(|e| fail(Stage::Plan, e.kind(), e.to_string()))?;
        self.recheck_plan(plan).await?;
        let identity = self.plan_identity(plan)?;
        if let Some(pvc) = claim_to_create(plan) {
            tracker.enter(Stage::CreatePvc);
            self.create_target(plan, &pvc).await?;
            changes.created.store(true, Ordering::Relaxed);
        }
        let helper_opts = self.restore_helper_options(plan, tracker.id()).await?;
        let as_root = helper_opts.profile.is_root();
        let helper = self.start_helper(tracker, &helper_opts).await?;
        if plan.clean {
            tracker.enter(Stage::Clean);
            self.empty_volume(&helper.target).await?;
            changes.cleaned.store(true, Ordering::Relaxed);
        }
        tracker.enter(Stage::Stream);
        self.stream_archive(plan, &helper, as_root, tracker, identity)
            .await
    }

    /// The age identity that opens the plan's archive when it is encrypted, read before
    /// anything changes in the cluster (the plan proved it one of the recipients').
    fn plan_identity(&self, plan: &RestorePlan) -> Result<Option<Arc<AgeIdentity>>, JobFailure> {
        if !plan.source.encrypted {
            return Ok(None);
        }
        let file = self.settings.age_identity_file.as_deref().ok_or_else(|| {
            fail(
                Stage::Plan,
                FailureKind::InvalidInput,
                format!(
                    "backup {} is encrypted with age; give the identity file with --identity FILE or NKVM_AGE_IDENTITY_FILE",
                    plan.backup_id
                ),
            )
        })?;
        let identity =
            AgeIdentity::load(file).map_err(|e| fail(Stage::Plan, e.kind(), e.to_string()))?;
        Ok(Some(Arc::new(identity)))
    }

    /// Refuses a plan that no longer holds: made against another cluster, or a target that
    /// changed since (see [`recheck`]).
    async fn recheck_plan(&self, plan: &RestorePlan) -> Result<(), JobFailure> {
        let namespace = ResourceName::namespace(&plan.target.namespace)
            .map_err(|e| fail(Stage::Plan, FailureKind::InvalidInput, e.to_string()))?;
        let now = self
            .inventory(&crate::Scope::Namespace(namespace))
            .await
            .map_err(|e| fail(Stage::Plan, e.kind(), e.to_string()))?
            .into_iter()
            .find(|r| r.name == plan.target.pvc);
        recheck(plan, &self.conn.info.id, now.as_ref())
            .map_err(|why| fail(Stage::Plan, FailureKind::Conflict, why))
    }

    /// Creates the claim the plan restores into.
    async fn create_target(
        &self,
        plan: &RestorePlan,
        pvc: &PersistentVolumeClaim,
    ) -> Result<(), JobFailure> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.conn.client.clone(), &plan.target.namespace);
        let Err(e) = claims.create(&Default::default(), pvc).await else {
            return Ok(());
        };
        let kind = nkvm_kube::failure_kind(&e);
        let hint = match kind {
            FailureKind::Forbidden => {
                "; grant this identity create on persistentvolumeclaims in that namespace (a RoleBinding to nkvm's runtime role)"
            }
            FailureKind::Conflict => "; it appeared after the plan: plan again without --create",
            _ => "",
        };
        Err(fail(
            Stage::CreatePvc,
            kind,
            format!(
                "creating {}/{}: {}{hint}",
                plan.target.namespace,
                plan.target.pvc,
                nkvm_kube::api_message(&e)
            ),
        ))
    }

    /// The read-write helper pod for the plan's target, placed on the planned node with the
    /// consumer's tolerations when the plan names one.
    async fn restore_helper_options(
        &self,
        plan: &RestorePlan,
        id: &str,
    ) -> Result<HelperPodOptions, JobFailure> {
        let claim = PvcRef::parse(&format!("{}/{}", plan.target.namespace, plan.target.pvc))
            .map_err(|e| fail(Stage::HelperPod, FailureKind::InvalidInput, e.to_string()))?;
        let mut opts =
            HelperPodOptions::new(id, claim, HelperMode::Restore, &self.settings.helper_image);
        if !plan.node.is_empty() {
            opts.node = Some(plan.node.clone());
            if let Some(consumer) = &plan.consumer_pod {
                opts.tolerations = self
                    .consumer_tolerations(&plan.target.namespace, consumer)
                    .await;
            }
        }
        Ok(opts)
    }

    /// Deletes everything in the mounted volume (its top-level entries, hidden ones too).
    async fn empty_volume(&self, target: &ExecTarget) -> Result<(), JobFailure> {
        let script = format!(
            "find {dir} -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} + && test -z \"$(ls -A {dir})\"",
            dir = helper::DATA_DIR
        );
        let out = exec_capture(&self.conn.client, target, &["sh", "-c", &script])
            .await
            .map_err(|e| fail(Stage::Clean, e.kind(), e.to_string()))?;
        if out.exit_code != 0 {
            return Err(fail(
                Stage::Clean,
                FailureKind::CommandFailed,
                format!(
                    "emptying the target failed (exit code {}): {}",
                    out.exit_code,
                    out.stderr.trim()
                ),
            ));
        }
        Ok(())
    }

    /// Feeds the archive into `tar -x` in the helper and checks that all of it went in.
    async fn stream_archive(
        &self,
        plan: &RestorePlan,
        helper: &RunningHelper,
        as_root: bool,
        tracker: &Tracker,
        identity: Option<Arc<AgeIdentity>>,
    ) -> Result<(), JobFailure> {
        let compression: Compression = plan
            .source
            .compression
            .parse()
            .map_err(|e: String| fail(Stage::Stream, FailureKind::Internal, e))?;
        let store = self
            .stores
            .store(&plan.source.store)
            .map_err(|e| crate::sink::store_failure(&e))?;
        if helper.path == DataPath::Agent {
            return self
                .stream_to_agent(
                    plan,
                    helper,
                    (store, identity),
                    compression,
                    as_root,
                    tracker,
                )
                .await;
        }
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let feeder = {
            let (store, artifact, expected, sent) = (
                store,
                plan.source.artifact.clone(),
                plan.source.sha256.clone(),
                tracker.bytes().clone(),
            );
            let strip_set_id = !plan.privileged;
            tokio::task::spawn_blocking(move || {
                let source = Source {
                    store: store.as_ref(),
                    identity: identity.as_deref(),
                    artifact: &artifact,
                    compression,
                    expected: &expected,
                    strip_set_id,
                };
                feed_archive(&source, &tx, &sent)
            })
        };
        let ticker = tracker.ticker();
        let exec = self.exec_extract(plan, helper, as_root, rx).await;
        drop(ticker);
        let fed = joined(feeder, "the archive reader").await?;
        extracted_whole(plan, fed, exec)
    }

    /// Runs `tar -x` in the helper with the archive's tar bytes from `rx` as its stdin; on an
    /// exec protocol without a stdin close (v4), a command that reads exactly the tar's length.
    async fn exec_extract(
        &self,
        plan: &RestorePlan,
        helper: &RunningHelper,
        as_root: bool,
        rx: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<ExecOutcome, ExecError> {
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut stdin = tokio_util::io::StreamReader::new(Box::pin(chunks));
        let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(4);
        // tar -x writes nothing to stdout; drain it anyway so a chatty tar cannot block.
        let drain = tokio::spawn(async move { while out_rx.recv().await.is_some() {} });
        let (client, target) = (&self.conn.client, &helper.target);
        let argv = helper
            .flavor
            .extract_command(helper::DATA_DIR, as_root, plan.privileged);
        let opts = self.stream_options();
        let mut exec = exec_stream(
            client,
            target,
            &argv,
            Some(&mut stdin),
            out_tx.clone(),
            &opts,
        )
        .await;
        if matches!(exec, Err(ExecError::StdinNeedsV5 { .. })) {
            let argv = helper.flavor.extract_exact_length_command(
                helper::DATA_DIR,
                as_root,
                plan.privileged,
                plan.source.tar_bytes,
            );
            let opts = ExecOptions {
                allow_stdin_without_eof: true,
                ..self.stream_options()
            };
            exec = exec_stream(client, target, &argv, Some(&mut stdin), out_tx, &opts).await;
        } else {
            drop(out_tx);
        }
        drop(stdin);
        let _ = drain.await;
        exec
    }
}

impl App {
    /// The agent path: the compressed archive goes as it is stored into `nkvm agent restore`,
    /// which checks its sha256 against the plan's before tar sees its end and applies the
    /// archive safety rules in the pod. The agent's trailer says how it ended.
    async fn stream_to_agent(
        &self,
        plan: &RestorePlan,
        helper: &RunningHelper,
        (store, identity): (Arc<dyn ArchiveStore>, Option<Arc<AgeIdentity>>),
        compression: Compression,
        as_root: bool,
        tracker: &Tracker,
    ) -> Result<(), JobFailure> {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let feeder = {
            let (store, artifact, sent) =
                (store, plan.source.artifact.clone(), tracker.bytes().clone());
            tokio::task::spawn_blocking(move || {
                let file = open_source(store.as_ref(), &artifact, identity.as_deref());
                feed_stored(file, &artifact, &tx, &sent)
            })
        };
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut stdin = tokio_util::io::StreamReader::new(Box::pin(chunks));
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(4);
        let collect = tokio::spawn(collect_trailer(out_rx));
        let argv = agent_restore_command(plan, compression, as_root, self.settings.agent_fault);
        // The agent reads exactly the archive's length, so no stdin end-of-file is needed.
        let opts = ExecOptions {
            allow_stdin_without_eof: true,
            ..self.stream_options()
        };
        let exec = exec_stream(
            &self.conn.client,
            &helper.target,
            &argv,
            Some(&mut stdin),
            out_tx,
            &opts,
        )
        .await;
        drop(stdin);
        let fed = joined(feeder, "the archive reader").await?;
        let trailer = joined(collect, "reading the agent's trailer").await?;
        let trailer = agent_restored(plan, fed, exec, trailer)?;
        tracker.bytes().store(trailer.tar_bytes, Ordering::Relaxed);
        Ok(())
    }
}

/// The compressed archive as stored, or decrypted out of its age file with `identity`.
fn open_source(
    store: &dyn ArchiveStore,
    artifact: &str,
    identity: Option<&AgeIdentity>,
) -> Result<Box<dyn std::io::Read + Send>, nkvm_store::StoreError> {
    let stored = store.open(artifact)?;
    match identity {
        Some(identity) => identity.decrypt(stored),
        None => Ok(stored),
    }
}

/// Sends the compressed archive as it is (decrypted, when stored as an age file), counting
/// and hashing it.
fn feed_stored(
    file: Result<Box<dyn std::io::Read + Send>, nkvm_store::StoreError>,
    artifact: &str,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    sent: &AtomicU64,
) -> Result<String, FeedError> {
    use std::io::Read;
    let archive =
        |e: &dyn std::fmt::Display| FeedError::Archive(format!("reading {artifact}: {e}"));
    let file = file.map_err(|e| archive(&e))?;
    let mut hashing = HashingReader::new(file);
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = match hashing.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return Err(archive(&e));
            }
        };
        if n == 0 {
            return Ok(hashing.hex());
        }
        buf.truncate(n);
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Err(FeedError::Stopped);
        }
        sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Reads the agent's stdout: an agent stream holding only a trailer.
async fn collect_trailer(mut rx: mpsc::Receiver<Bytes>) -> Result<wire::Trailer, String> {
    let mut reader = wire::FrameReader::new();
    let mut broken = None;
    while let Some(chunk) = rx.recv().await {
        if broken.is_none()
            && let Err(e) = reader.feed(&chunk, &mut |_: &[u8]| {
                Err::<(), wire::WireError>(wire::WireError::BadTrailer(
                    "the restoring agent sent data frames".into(),
                ))
            })
        {
            broken = Some(e.to_string());
        }
    }
    match broken {
        Some(e) => Err(e),
        None => reader.finish().map_err(|e| e.to_string()),
    }
}

/// `nkvm agent restore` for the plan.
fn agent_restore_command(
    plan: &RestorePlan,
    compression: Compression,
    as_root: bool,
    fault: Option<agent::Fault>,
) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        agent::AGENT_PATH.into(),
        "agent".into(),
        "restore".into(),
        "--dir".into(),
        helper::DATA_DIR.into(),
        "--compression".into(),
        compression.as_str().into(),
        "--bytes".into(),
        plan.source.bytes_stored.to_string(),
        "--sha256".into(),
        plan.source.sha256.clone(),
    ];
    for (on, flag) in [
        (as_root, "--as-root"),
        (plan.privileged, "--privileged"),
        (!plan.privileged, "--strip-set-id"),
    ] {
        if on {
            argv.push(flag.into());
        }
    }
    if let Some(fault) = fault {
        argv.extend(["--fault".into(), fault.to_string()]);
    }
    argv
}

/// Success only when the exec ended with a status, the agent's trailer arrived, names no
/// error, tar exited 0, and the archive it took is the planned one (sha256, tar bytes).
fn agent_restored(
    plan: &RestorePlan,
    fed: Result<String, FeedError>,
    exec: Result<ExecOutcome, ExecError>,
    trailer: Result<wire::Trailer, String>,
) -> Result<wire::Trailer, JobFailure> {
    let failed = |message: String| {
        fail(
            Stage::Stream,
            FailureKind::CommandFailed,
            format!("{message}; the target may hold part of the data"),
        )
    };
    if let Err(FeedError::Archive(why)) = &fed {
        return Err(failed(why.clone()));
    }
    let outcome = exec.map_err(|e| fail(Stage::Stream, e.kind(), e.to_string()))?;
    let t = trailer.map_err(|e| failed(format!("the nkvm agent's answer: {e}")))?;
    // tar exiting on its own with an error explains whatever the agent saw after it.
    if let Some(code) = t.tar_exit.filter(|c| *c != 0) {
        let agent = t
            .error
            .as_deref()
            .map_or(String::new(), |e| format!(" (the agent: {e})"));
        return Err(failed(format!(
            "tar in the helper pod failed with exit code {code}: {}{agent}",
            t.tar_stderr
        )));
    }
    if let Some(e) = &t.error {
        return Err(failed(format!("the nkvm agent refused the archive: {e}")));
    }
    if t.tar_exit.is_none() || outcome.exit_code != 0 {
        return Err(failed(format!(
            "the nkvm agent in the helper pod exited with code {} (tar: {}): {}",
            outcome.exit_code,
            t.tar_stderr,
            outcome.stderr.trim()
        )));
    }
    let sent =
        fed.map_err(|_| failed("the helper stopped reading before the archive's end".into()))?;
    if t.sha256 != plan.source.sha256 || sent != plan.source.sha256 {
        return Err(failed(format!(
            "the archive changed after it was planned: sent sha256 {sent}, the agent read {}, the plan verified {}",
            t.sha256, plan.source.sha256
        )));
    }
    if t.tar_bytes != plan.source.tar_bytes {
        return Err(failed(format!(
            "the archive holds {} tar bytes but the plan verified {}",
            t.tar_bytes, plan.source.tar_bytes
        )));
    }
    Ok(t)
}

/// Success only when the archive was whole, tar exited 0 and took every tar byte the plan
/// verified. A failing archive is reported first: it is the cause of whatever the exec saw.
fn extracted_whole(
    plan: &RestorePlan,
    fed: Result<Fed, FeedError>,
    exec: Result<ExecOutcome, ExecError>,
) -> Result<(), JobFailure> {
    let failed = |message: String| fail(Stage::Stream, FailureKind::CommandFailed, message);
    if let Err(FeedError::Archive(why)) = &fed {
        return Err(failed(format!(
            "{why}; the target may hold part of the data"
        )));
    }
    let outcome = exec.map_err(|e| fail(Stage::Stream, e.kind(), e.to_string()))?;
    if outcome.exit_code != 0 {
        return Err(failed(format!(
            "tar in the helper pod failed with exit code {}: {}; the target may hold part of the data",
            outcome.exit_code,
            outcome.stderr.trim()
        )));
    }
    let fed = fed.map_err(|_| {
        failed(
            "tar in the helper pod exited before reading the whole archive; the target may hold part of the data".into(),
        )
    })?;
    if fed.tar_bytes != plan.source.tar_bytes {
        return Err(failed(format!(
            "the archive holds {} tar bytes but the plan verified {}",
            fed.tar_bytes, plan.source.tar_bytes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkvm_store::LocalStore;

    const ARTIFACT: &str = "c/ns/data/20261126T000000Z-0000abcd.tar.zst";

    /// A store holding one zstd archive of a small tree; returns it with the archive's sha256.
    fn stored() -> (tempfile::TempDir, LocalStore, Vec<u8>, String) {
        let mut tar = tar::Builder::new(Vec::new());
        let data = vec![7u8; 3 << 20];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "big.bin", &data[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        let compressed = zstd::encode_all(&tar[..], 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ARTIFACT);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &compressed).unwrap();
        let mut hashing = HashingReader::new(&compressed[..]);
        std::io::copy(&mut hashing, &mut std::io::sink()).unwrap();
        let store = LocalStore::new(dir.path());
        (dir, store, tar, hashing.hex())
    }

    /// Runs the feeder against a reader thread; returns its result and what was received.
    fn run(store: &LocalStore, expected: &str) -> (Result<Fed, FeedError>, Vec<u8>, bool) {
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(2);
        let reader = std::thread::spawn(move || {
            let (mut got, mut errored) = (Vec::<u8>::new(), false);
            while let Some(item) = rx.blocking_recv() {
                match item {
                    Ok(chunk) => got.extend_from_slice(&chunk),
                    Err(_) => errored = true,
                }
            }
            (got, errored)
        });
        let source = Source {
            store,
            identity: None,
            artifact: ARTIFACT,
            compression: Compression::Zstd,
            expected,
            strip_set_id: false,
        };
        let fed = feed_archive(&source, &tx, &AtomicU64::new(0));
        drop(tx);
        let (got, errored) = reader.join().unwrap();
        (fed, got, errored)
    }

    #[test]
    fn the_whole_tar_stream_is_fed_when_the_archive_is_unchanged() {
        let (_dir, store, tar, sha) = stored();
        let (fed, got, errored) = run(&store, &sha);
        assert_eq!(fed.unwrap().tar_bytes, tar.len() as u64);
        assert!(!errored);
        assert_eq!(got, tar);
    }

    #[test]
    fn an_archive_changed_since_the_plan_ends_the_stream_with_an_error_before_its_end() {
        let (_dir, store, tar, _) = stored();
        let (fed, got, errored) = run(&store, &"0".repeat(64));
        match fed {
            Err(FeedError::Archive(why)) => assert!(why.contains("changed after it was planned")),
            other => panic!("{other:?}"),
        }
        assert!(errored, "the exec sees an error, not a clean end of stdin");
        assert!(got.len() < tar.len(), "the last chunk was held back");
    }
}
