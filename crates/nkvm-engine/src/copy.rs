//! Copying a backup's archive and manifest to another store (3-2-1: a local backup copied
//! off-site), as a job through the lifecycle so it is audited and shown with the other jobs.
//!
//! The compressed archive is read from whichever store holds the backup (decrypted first when
//! it is an age file, which needs the identity), hashed on its way into the destination's
//! writer, and committed only when that hash is the one the manifest recorded: a mismatch
//! aborts the write, and nothing becomes visible. A destination with `encryption:` encrypts
//! what it receives. An encrypted archive is never copied into a plain store: that would
//! store in the clear what the operator chose to encrypt.

use crate::lifecycle::{JobEnd, JobFailure, JobResult, JobSpec, Tracker, fail, joined};
use crate::located::{Located, locate, places};
use crate::sink::store_failure;
use crate::verify::HashingReader;
use crate::{App, Progress};
use nkvm_domain::{FailureKind, JobStatus, Stage, UserError};
use nkvm_history::{BackupCopy, BackupRow, HistoryError};
use nkvm_store::{AgeIdentity, ArchiveKey, ArchiveStore, Manifest, StoredArchive};
use serde::Serialize;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};

/// What to copy where.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The backup's id.
    pub backup_id: String,
    /// The destination store's name.
    pub to: String,
    /// Who asked (history, audit log).
    pub actor: String,
}

/// One copy's outcome, in the CLI/API JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyResult {
    /// The backup copied.
    pub backup_id: String,
    /// `succeeded`, `failed`, `cancelled`.
    pub status: JobStatus,
    /// The store read from ("" when refused before one was found).
    pub from_store: String,
    /// The destination store.
    pub to_store: String,
    /// The copy's path in the destination ("" when nothing was kept).
    pub artifact: String,
    /// sha256 of the copy as the destination stored it.
    pub sha256: String,
    /// Bytes of compressed archive copied.
    pub bytes: u64,
    /// Whether the destination holds it as an age file.
    pub encrypted: bool,
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
}

/// What a successful copy's steps return.
struct Copied {
    from_store: String,
    stored: StoredArchive,
    bytes: u64,
    encrypted: bool,
}

/// A copy's result; its history record is the `backup_copies` row, written on success.
#[derive(Clone)]
struct CopyJob(CopyResult);

impl JobResult for CopyJob {
    fn record(&self, app: &App) -> Result<(), HistoryError> {
        let r = &self.0;
        if r.status != JobStatus::Succeeded {
            return Ok(());
        }
        app.history.record_copy(&BackupCopy {
            backup_id: r.backup_id.clone(),
            store: r.to_store.clone(),
            artifact: r.artifact.clone(),
            sha256: r.sha256.clone(),
            copied_at: r.finished_at.clone(),
        })
    }

    fn into_progress(self) -> Progress {
        Progress::CopyDone(Box::new(self.0))
    }
}

impl App {
    /// Copies backup `opts.backup_id` to store `opts.to` as a job (audited as `copy.*`, the
    /// copy recorded in the history's copies of the backup). Refusals (unknown backup or
    /// store, already there, an encrypted archive into a plain store, no identity to read an
    /// encrypted one) end the job at stage `resolve` before anything is written.
    pub async fn copy_backup(
        self: &Arc<Self>,
        opts: &CopyOptions,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        cancel: watch::Receiver<bool>,
    ) -> CopyResult {
        let row = self.history.backup(&opts.backup_id).ok().flatten();
        let label = row
            .as_ref()
            .map_or_else(String::new, |r| format!("{}/{}", r.namespace, r.pvc));
        let tracker = Tracker::new(opts.backup_id.clone(), label, Stage::Resolve, progress);
        let spec = JobSpec {
            action: "copy",
            actor: &opts.actor,
            target: opts.backup_id.clone(),
            detail: format!("to store {}", opts.to),
            cancelled: "cancelled on request; nothing was stored",
        };
        let steps = self.copy_steps(opts, row, &tracker);
        self.run_job(spec, &tracker, cancel, steps, |end, copied| {
            CopyJob(copy_result(opts, end, copied))
        })
        .await
        .0
    }

    /// The copy's steps: find the source, check the destination, stream, commit.
    async fn copy_steps(
        &self,
        opts: &CopyOptions,
        row: Option<BackupRow>,
        tracker: &Tracker,
    ) -> Result<Copied, JobFailure> {
        let row = copyable(&opts.backup_id, row)?;
        let (stores, history) = (self.stores.clone(), self.history.clone());
        let (to, identity_file) = (opts.to.clone(), self.settings.age_identity_file.clone());
        let (source, dest, identity) = joined(
            tokio::task::spawn_blocking(move || {
                let already = places(&history, &row).map_err(|e| {
                    fail(
                        Stage::Resolve,
                        FailureKind::StorageUnavailable,
                        e.to_string(),
                    )
                })?;
                if let Some((_, artifact, _)) = already.iter().find(|(s, _, _)| *s == to) {
                    return Err(fail(
                        Stage::Resolve,
                        FailureKind::Conflict,
                        format!("store {to:?} already holds backup {} ({artifact})", row.id),
                    ));
                }
                let dest = stores.store(&to).map_err(|e| resolve_failure(&e))?;
                let source = locate(&stores, &history, &row, None, identity_file.as_deref())
                    .map_err(|e| resolve_failure(&e))?;
                let identity =
                    source_identity(&source, dest.as_ref(), identity_file.as_deref(), &to)?;
                dest.check_writable(&key_of(&source.manifest))
                    .map_err(|e| store_failure(&e))?;
                Ok((source, dest, identity))
            }),
            "checking the stores",
        )
        .await??;
        tracker.enter(Stage::Stream);
        let encrypted = !dest.age_recipients().is_empty();
        let from_store = source.store_name.clone();
        let (sent, _ticker) = (tracker.bytes().clone(), tracker.ticker());
        let (stored, bytes) = joined(
            tokio::task::spawn_blocking(move || {
                transfer(&source, dest.as_ref(), identity.as_ref(), &sent)
            }),
            "the copy",
        )
        .await??;
        Ok(Copied {
            from_store,
            stored,
            bytes,
            encrypted,
        })
    }
}

/// The backup's row, when it kept an archive to copy.
fn copyable(id: &str, row: Option<BackupRow>) -> Result<BackupRow, JobFailure> {
    let row = row.ok_or_else(|| {
        fail(
            Stage::Resolve,
            FailureKind::NotFound,
            format!("backup {id} is not in the history; list backups with `nkvm backups`"),
        )
    })?;
    if row.status != JobStatus::Succeeded || row.artifact.is_empty() {
        return Err(fail(
            Stage::Resolve,
            FailureKind::Conflict,
            format!("backup {id} is {} and kept no archive to copy", row.status),
        ));
    }
    Ok(row)
}

fn resolve_failure(e: &nkvm_store::StoreError) -> JobFailure {
    fail(Stage::Resolve, e.kind(), e.to_string())
}

/// The identity that decrypts an encrypted source: required, since what goes into the
/// destination is the compressed tar (encrypted again there for its own recipients).
/// Refuses an encrypted source for a plain destination.
fn source_identity(
    source: &Located,
    dest: &dyn ArchiveStore,
    identity_file: Option<&std::path::Path>,
    to: &str,
) -> Result<Option<AgeIdentity>, JobFailure> {
    let Some(encryption) = &source.manifest.encryption else {
        return Ok(None);
    };
    if dest.age_recipients().is_empty() {
        return Err(fail(
            Stage::Resolve,
            FailureKind::InvalidInput,
            format!(
                "backup {} is encrypted with age and store {to:?} stores archives in the clear; copy it to a store with encryption: (or decrypt it by hand, see docs/stores.md)",
                source.manifest.backup_id
            ),
        ));
    }
    let id = &source.manifest.backup_id;
    crate::verify::identity_for(id, encryption, identity_file)
        .map(Some)
        .map_err(|e| fail(Stage::Resolve, e.kind(), e.to_string()))
}

/// The destination's key for the backup the manifest describes (plain: the destination
/// decides whether it encrypts).
fn key_of(m: &Manifest) -> ArchiveKey {
    ArchiveKey {
        cluster: m.cluster.clone(),
        namespace: m.namespace.clone(),
        pvc: m.pvc.name.clone(),
        id: m.backup_id.clone(),
        compression: m.compression,
        encrypted: false,
    }
}

/// Streams the compressed archive into the destination and commits it only when what the
/// destination received hashes to what the manifest recorded.
fn transfer(
    source: &Located,
    dest: &dyn ArchiveStore,
    identity: Option<&AgeIdentity>,
    sent: &AtomicU64,
) -> Result<(StoredArchive, u64), JobFailure> {
    let stream_failure = |e: &dyn std::fmt::Display| {
        fail(
            Stage::Stream,
            FailureKind::StorageUnavailable,
            format!(
                "reading {} in store {}: {e}",
                source.artifact, source.store_name
            ),
        )
    };
    let (expected, expected_bytes) = match &source.manifest.encryption {
        Some(e) => (e.archive_sha256.clone(), e.archive_bytes),
        None => (source.manifest.sha256.clone(), source.manifest.bytes_stored),
    };
    let stored = source
        .store
        .open(&source.artifact)
        .map_err(|e| stream_failure(&e))?;
    let plain = match identity {
        Some(identity) => identity.decrypt(stored).map_err(|e| stream_failure(&e))?,
        None => stored,
    };
    let mut reading = HashingReader::new(plain);
    let mut writer = dest
        .begin(&key_of(&source.manifest))
        .map_err(|e| store_failure(&e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reading.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort();
                return Err(stream_failure(&e));
            }
        };
        if let Err(e) = writer.write_all(&buf[..n]) {
            let _ = writer.abort();
            return Err(fail(
                Stage::Store,
                FailureKind::StorageUnavailable,
                e.to_string(),
            ));
        }
        sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    let bytes = reading.bytes_read();
    let actual = reading.hex();
    if actual != expected || bytes != expected_bytes {
        let _ = writer.abort();
        return Err(fail(
            Stage::Stream,
            FailureKind::CommandFailed,
            format!(
                "the archive read from store {} does not match its manifest (sha256 {actual}, {bytes} bytes; the manifest recorded {expected}, {expected_bytes} bytes): nothing was copied; run `nkvm verify {}`",
                source.store_name, source.manifest.backup_id
            ),
        ));
    }
    let stored = writer
        .commit(&source.manifest)
        .map_err(|e| fail(Stage::Commit, e.kind(), e.to_string()))?;
    Ok((stored, bytes))
}

/// The result of a copy that ended as `end`.
fn copy_result(opts: &CopyOptions, end: &JobEnd, copied: Option<&Copied>) -> CopyResult {
    CopyResult {
        backup_id: opts.backup_id.clone(),
        status: end.status,
        from_store: copied.map_or_else(String::new, |c| c.from_store.clone()),
        to_store: opts.to.clone(),
        artifact: copied.map_or_else(String::new, |c| c.stored.artifact.clone()),
        sha256: copied.map_or_else(String::new, |c| c.stored.sha256.clone()),
        bytes: copied.map_or(end.bytes, |c| c.bytes),
        encrypted: copied.is_some_and(|c| c.encrypted),
        started_at: end.started_at.clone(),
        finished_at: end.finished_at.clone(),
        stage: end.stage,
        failure_kind: end.failure,
        error: end.error.clone(),
    }
}
