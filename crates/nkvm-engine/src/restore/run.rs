//! Running a planned restore: create the target claim when planned, start a read-write helper
//! pod where the claim can be mounted, optionally empty it, and stream the archive from the
//! store (hashed and decompressed on a blocking thread) into `tar -x` over exec stdin, ending
//! it with the v5 stdin close, or on v4 with a command that reads the exact length. Success
//! needs tar's exit status 0, the archive's sha256 equal to the plan's, and every tar byte
//! sent. The helper pod is deleted whatever happens; every restore leaves a history row and
//! audit entries.

use super::plan::{RestorePlan, RestoreTarget, claim_to_create};
use crate::archive::decoder;
use crate::backup::{JobFailure, fail, new_id, now_rfc3339, progress_ticker, settle};
use crate::tar_check::TarCheck;
use crate::verify::HashingReader;
use crate::{App, Progress};
use bytes::Bytes;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use nkvm_domain::{Compression, FailureKind, PvcRef};
use nkvm_history::RestoreRow;
use nkvm_kube::exec::{ExecError, ExecOptions, ExecTarget, exec_capture, exec_stream};
use nkvm_kube::helper_pod::{self, HelperMode, HelperPodOptions};
use nkvm_kube::tar_command::TarFlavor;
use nkvm_store::ArchiveStore;
use serde::Serialize;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};

/// Who runs a restore, for the history and the audit log.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `cli` or `ui`.
    pub trigger: String,
    /// Who asked.
    pub actor: String,
}

/// One restore's outcome, in the CLI/API JSON shape (design §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    /// Restore id.
    pub id: String,
    /// The backup restored.
    pub backup_id: String,
    /// `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// Where it went.
    pub target: RestoreTarget,
    /// Whether the target claim was created by this restore.
    pub created: bool,
    /// Whether the target was emptied first.
    pub cleaned: bool,
    /// Tar bytes sent into the helper.
    pub bytes_written: u64,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// Last stage reached (the failing one on failure).
    pub stage: String,
    /// Why it failed ("" on success).
    pub error: String,
    /// The helper pod.
    pub helper_pod: String,
    /// The node it ran on.
    pub node: String,
}

impl RestoreResult {
    fn row(&self, opts: &RestoreOptions, cluster: &str, kind: Option<FailureKind>) -> RestoreRow {
        RestoreRow {
            id: self.id.clone(),
            backup_id: self.backup_id.clone(),
            cluster: cluster.into(),
            namespace: self.target.namespace.clone(),
            pvc: self.target.pvc.clone(),
            created: self.created,
            cleaned: self.cleaned,
            trigger: opts.trigger.clone(),
            actor: opts.actor.clone(),
            status: self.status.clone(),
            stage: self.stage.clone(),
            failure_kind: kind.map(|k| k.label().to_string()).unwrap_or_default(),
            error: self.error.clone(),
            started_at: self.started_at.clone(),
            finished_at: (!self.finished_at.is_empty()).then(|| self.finished_at.clone()),
            bytes_written: self.bytes_written,
            helper_pod: self.helper_pod.clone(),
            node: self.node.clone(),
        }
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
    store: &dyn ArchiveStore,
    artifact: &str,
    compression: Compression,
    expected: &str,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    sent: &AtomicU64,
) -> Result<Fed, FeedError> {
    let fed = feed(store, artifact, compression, expected, tx, sent);
    if let Err(FeedError::Archive(why)) = &fed {
        let _ = tx.blocking_send(Err(std::io::Error::other(why.clone())));
    }
    fed
}

fn feed(
    store: &dyn ArchiveStore,
    artifact: &str,
    compression: Compression,
    expected: &str,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    sent: &AtomicU64,
) -> Result<Fed, FeedError> {
    let archive =
        |e: &dyn std::fmt::Display| FeedError::Archive(format!("reading {artifact}: {e}"));
    let file = store.open(artifact).map_err(|e| archive(&e))?;
    let mut hashing = HashingReader::new(file);
    let mut check = TarCheck::new();
    let mut held: Option<Bytes> = None;
    let mut total = 0u64;
    let send = |chunk: Bytes| {
        let n = chunk.len() as u64;
        tx.blocking_send(Ok(chunk))
            .map_err(|_| FeedError::Stopped)?;
        sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    };
    {
        let mut tar = decoder(&mut hashing, compression).map_err(|e| archive(&e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = tar.read(&mut buf).map_err(|e| archive(&e))?;
            if n == 0 {
                break;
            }
            check.feed(&buf[..n]).map_err(|e| archive(&e))?;
            total += n as u64;
            if let Some(previous) = held.replace(Bytes::copy_from_slice(&buf[..n])) {
                send(previous)?;
            }
        }
    }
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| archive(&e))?;
    let actual = hashing.hex();
    if actual != expected {
        return Err(FeedError::Archive(format!(
            "the archive changed after it was planned: its sha256 is now {actual}, the plan verified {expected}"
        )));
    }
    check.finish().map_err(|e| archive(&e))?;
    if let Some(last) = held {
        // A tar that stops reading after its end-of-archive blocks may not take the zero
        // padding that follows them; it has everything it needs.
        if last.iter().all(|b| *b == 0) {
            let _ = send(last);
        } else {
            send(last)?;
        }
    }
    Ok(Fed { tar_bytes: total })
}

impl App {
    /// Runs a plan made by [`App::plan_restore`]. A plan with refusals fails at once, before
    /// anything changes in the cluster.
    pub async fn run_restore(
        self: &Arc<Self>,
        plan: &RestorePlan,
        opts: &RestoreOptions,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        mut cancel: watch::Receiver<bool>,
    ) -> RestoreResult {
        let mut result = RestoreResult {
            id: new_id().to_string(),
            backup_id: plan.backup_id.clone(),
            status: "running".into(),
            target: plan.target.clone(),
            created: false,
            cleaned: false,
            bytes_written: 0,
            started_at: now_rfc3339(),
            finished_at: String::new(),
            stage: "plan".into(),
            error: String::new(),
            helper_pod: String::new(),
            node: String::new(),
        };
        let target = format!("{}/{}", plan.target.namespace, plan.target.pvc);
        let cluster = self.conn.info.id.clone();
        let _ = self.history.audit(
            &result.started_at,
            &opts.actor,
            "restore.start",
            &target,
            &format!("{} from {}", result.id, plan.backup_id),
        );
        if let Err(e) = self
            .history
            .record_restore(&result.row(opts, &cluster, None))
        {
            tracing::error!(error = %e, id = %result.id, "recording the restore in history failed");
        }
        let outcome = {
            let run = self.restore_steps(plan, progress.as_ref(), &mut result);
            tokio::select! {
                r = run => r,
                _ = cancel.wait_for(|c| *c) => Err(fail("cancelled", FailureKind::Cancelled,
                    "cancelled on request; the target may hold part of the data: restore again (with --clean)")),
            }
        };
        let deleted = self
            .delete_job_helper(&plan.target.namespace, &result.helper_pod)
            .await;
        result.finished_at = now_rfc3339();
        let kind = settle(
            outcome,
            deleted,
            &mut result.status,
            &mut result.stage,
            &mut result.error,
        );
        if let Err(e) = self
            .history
            .record_restore(&result.row(opts, &cluster, kind))
        {
            tracing::error!(error = %e, id = %result.id, "recording the restore in history failed");
        }
        let _ = self.history.audit(
            &result.finished_at,
            &opts.actor,
            &format!("restore.{}", result.status),
            &target,
            &result.id,
        );
        if let Some(p) = progress {
            let _ = p.send(Progress::RestoreDone(Box::new(result.clone())));
        }
        result
    }

    async fn restore_steps(
        &self,
        plan: &RestorePlan,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        result: &mut RestoreResult,
    ) -> Result<(), JobFailure> {
        let target_name = format!("{}/{}", plan.target.namespace, plan.target.pvc);
        let stage = |result: &mut RestoreResult, s: &'static str| {
            result.stage = s.into();
            if let Some(p) = progress {
                let _ = p.send(Progress::Stage {
                    pvc: target_name.clone(),
                    id: result.id.clone(),
                    stage: s,
                });
            }
        };
        if !plan.runnable() {
            return Err(fail(
                "plan",
                plan.refusal_kind.unwrap_or(FailureKind::Conflict),
                plan.refusals.join("; "),
            ));
        }
        self.require_allowed(&plan.target.namespace)
            .map_err(|e| fail("plan", e.kind(), e.to_string()))?;
        let ns = plan.target.namespace.as_str();
        if let Some(pvc) = claim_to_create(plan) {
            stage(result, "create-pvc");
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.conn.client.clone(), ns);
            claims
                .create(&Default::default(), &pvc)
                .await
                .map_err(|e| {
                    let kind = nkvm_kube::failure_kind(&e);
                    let (message, hint) = match (&e, kind) {
                        (kube::Error::Api(s), FailureKind::Forbidden) => (
                            s.message.clone(),
                            "; grant this identity create on persistentvolumeclaims in that namespace (a RoleBinding to nkvm's runtime role)",
                        ),
                        (kube::Error::Api(s), FailureKind::Conflict) => (
                            s.message.clone(),
                            "; it appeared after the plan: plan again without --create",
                        ),
                        (kube::Error::Api(s), _) => (s.message.clone(), ""),
                        (other, _) => (other.to_string(), ""),
                    };
                    fail(
                        "create-pvc",
                        kind,
                        format!("creating {target_name}: {message}{hint}"),
                    )
                })?;
            result.created = true;
        }
        stage(result, "helper-pod");
        let claim = PvcRef::parse(&target_name)
            .map_err(|e| fail("helper-pod", FailureKind::InvalidInput, e.to_string()))?;
        let mut helper_opts = HelperPodOptions::new(
            &result.id,
            claim,
            HelperMode::Restore,
            &self.settings.helper_image,
        );
        if !plan.node.is_empty() {
            helper_opts.node = Some(plan.node.clone());
            if let Some(consumer) = &plan.consumer_pod {
                let pods: Api<Pod> = Api::namespaced(self.conn.client.clone(), ns);
                if let Ok(p) = pods.get(consumer).await {
                    helper_opts.tolerations =
                        p.spec.and_then(|s| s.tolerations).unwrap_or_default();
                }
            }
        }
        let as_root = helper_opts.profile.is_root();
        let pod = helper_pod::helper_pod(&helper_opts);
        let name = pod.metadata.name.clone().unwrap_or_default();
        nkvm_kube::helper::create_helper(&self.conn.client, &pod)
            .await
            .map_err(|e| fail("helper-pod", e.kind(), e.to_string()))?;
        result.helper_pod = name.clone();
        let running = nkvm_kube::helper::wait_running(
            &self.conn.client,
            ns,
            &name,
            self.settings.helper_pod_timeout,
        )
        .await
        .map_err(|e| fail("helper-pod", e.kind(), e.to_string()))?;
        result.node = running.node;
        stage(result, "probe-tar");
        let exec_target = ExecTarget::new(ns, &name, helper_pod::CONTAINER);
        let probe = exec_capture(&self.conn.client, &exec_target, &["tar", "--version"])
            .await
            .map_err(|e| fail("probe-tar", e.kind(), e.to_string()))?;
        let flavor = TarFlavor::detect(probe.exit_code, &probe.stdout, &probe.stderr)
            .map_err(|e| fail("probe-tar", FailureKind::CommandFailed, e.to_string()))?;
        if plan.clean {
            stage(result, "clean");
            self.empty_volume(&exec_target).await?;
            result.cleaned = true;
        }
        stage(result, "stream");
        self.stream_archive(plan, &exec_target, &flavor, as_root, progress, result)
            .await
    }

    /// Deletes everything in the mounted volume (its top-level entries, hidden ones too).
    async fn empty_volume(&self, target: &ExecTarget) -> Result<(), JobFailure> {
        let script = format!(
            "find {dir} -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} + && test -z \"$(ls -A {dir})\"",
            dir = helper_pod::DATA_DIR
        );
        let out = exec_capture(&self.conn.client, target, &["sh", "-c", &script])
            .await
            .map_err(|e| fail("clean", e.kind(), e.to_string()))?;
        if out.exit_code != 0 {
            return Err(fail(
                "clean",
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

    async fn stream_archive(
        &self,
        plan: &RestorePlan,
        target: &ExecTarget,
        flavor: &TarFlavor,
        as_root: bool,
        progress: Option<&mpsc::UnboundedSender<Progress>>,
        result: &mut RestoreResult,
    ) -> Result<(), JobFailure> {
        let compression: Compression = plan
            .source
            .compression
            .parse()
            .map_err(|e: String| fail("stream", FailureKind::Internal, e))?;
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let sent = Arc::new(AtomicU64::new(0));
        let feeder = {
            let (store, artifact, expected, sent) = (
                self.store.clone(),
                plan.source.artifact.clone(),
                plan.source.sha256.clone(),
                sent.clone(),
            );
            tokio::task::spawn_blocking(move || {
                feed_archive(
                    store.as_ref(),
                    &artifact,
                    compression,
                    &expected,
                    &tx,
                    &sent,
                )
            })
        };
        let ticker = progress_ticker(
            progress,
            format!("{}/{}", plan.target.namespace, plan.target.pvc),
            &result.id,
            &sent,
        );
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut stdin = tokio_util::io::StreamReader::new(Box::pin(chunks));
        let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(4);
        // tar -x writes nothing to stdout; drain it anyway so a chatty tar cannot block.
        let drain = tokio::spawn(async move { while out_rx.recv().await.is_some() {} });
        let argv = flavor.extract_command(helper_pod::DATA_DIR, as_root);
        let mut exec = exec_stream(
            &self.conn.client,
            target,
            &argv,
            Some(&mut stdin),
            out_tx.clone(),
            &ExecOptions::default(),
        )
        .await;
        if matches!(exec, Err(ExecError::StdinNeedsV5 { .. })) {
            // v4 cannot end stdin: let the command read exactly the archive's length.
            let argv = flavor.extract_exact_length_command(
                helper_pod::DATA_DIR,
                as_root,
                plan.source.tar_bytes,
            );
            let opts = ExecOptions {
                allow_stdin_without_eof: true,
                ..Default::default()
            };
            exec = exec_stream(
                &self.conn.client,
                target,
                &argv,
                Some(&mut stdin),
                out_tx,
                &opts,
            )
            .await;
        } else {
            drop(out_tx);
        }
        drop(stdin);
        drop(ticker);
        let _ = drain.await;
        let fed = feeder.await.map_err(|e| {
            fail(
                "stream",
                FailureKind::Internal,
                format!("the archive reader panicked: {e}"),
            )
        })?;
        result.bytes_written = sent.load(Ordering::Relaxed);
        // A failing archive is the cause of whatever the exec then saw.
        if let Err(FeedError::Archive(why)) = &fed {
            return Err(fail(
                "stream",
                FailureKind::CommandFailed,
                format!("{why}; the target may hold part of the data"),
            ));
        }
        let outcome = exec.map_err(|e| fail("stream", e.kind(), e.to_string()))?;
        if outcome.exit_code != 0 {
            return Err(fail(
                "stream",
                FailureKind::CommandFailed,
                format!(
                    "tar in the helper pod failed with exit code {}: {}; the target may hold part of the data",
                    outcome.exit_code,
                    outcome.stderr.trim()
                ),
            ));
        }
        let fed = fed.map_err(|_| {
            fail(
                "stream",
                FailureKind::CommandFailed,
                "tar in the helper pod exited before reading the whole archive; the target may hold part of the data",
            )
        })?;
        if fed.tar_bytes != plan.source.tar_bytes {
            return Err(fail(
                "stream",
                FailureKind::CommandFailed,
                format!(
                    "the archive holds {} tar bytes but the plan verified {}",
                    fed.tar_bytes, plan.source.tar_bytes
                ),
            ));
        }
        Ok(())
    }
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
        let fed = feed_archive(
            store,
            ARTIFACT,
            Compression::Zstd,
            expected,
            &tx,
            &AtomicU64::new(0),
        );
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
