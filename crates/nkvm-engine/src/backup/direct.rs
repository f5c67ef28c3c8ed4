//! The direct data path of a backup: `nkvm agent backup --direct-upload` in the helper pod
//! uploads the compressed archive straight into the S3 store's multipart upload that nkvm
//! opened, and nkvm receives only progress and the trailer over exec. nkvm completes the
//! upload (and so makes the archive visible) only when the trailer proves the archive whole
//! and tar exited cleanly; every other ending aborts the upload. The upload's target and
//! credentials reach the agent on the exec's stdin: never on a command line, never in a
//! Kubernetes object. For an encrypted store the agent seals the archive into an age file
//! for the store's recipients (`--encrypt`) before any byte leaves the pod.

use super::{Pending, agent_backup_command, agent_exit_ok, agent_failed, in_stream};
use crate::App;
use crate::agent::receive::{self, NoData};
use crate::archive::{Archived, CompressionOptions};
use crate::job_helper::RunningHelper;
use crate::lifecycle::{JobFailure, Tracker, fail, joined};
use bytes::Bytes;
use nkvm_domain::{FailureKind, Stage, UserError};
use nkvm_store::{ArchiveKey, ArchiveStore, DirectSent, DirectUpload};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The agent's exit code when the store failed its upload.
const STORE_FAILED: i32 = 3;

/// Opens the direct upload (on a blocking thread: it talks to the bucket) before any helper
/// pod exists; `None` when the store cannot take one after all.
pub(super) async fn begin(
    store: Arc<dyn ArchiveStore>,
    key: &ArchiveKey,
) -> Result<Option<DirectUpload>, JobFailure> {
    let key = key.clone();
    tokio::task::spawn_blocking(move || store.begin_direct(&key))
        .await
        .map_err(|e| {
            fail(
                Stage::Store,
                FailureKind::Internal,
                format!("opening the direct upload panicked: {e}"),
            )
        })?
        .map_err(|e| crate::sink::store_failure(&e))
}

/// Aborts a direct upload that will not make a backup, waiting for the bucket's answer so
/// nothing is left open when the job ends.
pub(super) async fn abort(upload: DirectUpload) {
    let aborted = tokio::task::spawn_blocking(move || upload.abort()).await;
    if let Ok(Err(e)) = aborted {
        tracing::warn!(error = %e, "aborting a direct upload failed; the next start sweeps it");
    }
}

impl App {
    /// Runs the agent with the direct upload and judges its trailer; the upload is aborted
    /// on every failure, and returned for the commit on success.
    pub(super) async fn stream_direct(
        &self,
        helper: &RunningHelper,
        upload: DirectUpload,
        compression: &CompressionOptions,
        tracker: &Tracker,
    ) -> Result<Archived<Pending>, JobFailure> {
        match self.run_direct(helper, &upload, compression, tracker).await {
            Ok(archived) => Ok(archived.map_writer(|trailer| Pending::Direct {
                upload: Box::new(upload),
                sent: DirectSent {
                    parts: trailer.parts,
                    bytes: trailer.bytes,
                    sha256: trailer.sha256,
                    sealed: trailer.sealed,
                },
            })),
            Err(e) => {
                abort(upload).await;
                Err(e)
            }
        }
    }

    async fn run_direct(
        &self,
        helper: &RunningHelper,
        upload: &DirectUpload,
        compression: &CompressionOptions,
        tracker: &Tracker,
    ) -> Result<Archived<crate::agent::wire::Trailer>, JobFailure> {
        let mut target = serde_json::to_vec(&upload.target()).map_err(|e| {
            fail(
                Stage::Stream,
                FailureKind::Internal,
                format!("encoding the upload's target: {e}"),
            )
        })?;
        target.push(b'\n');
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let counter = tracker.bytes().clone();
        let receiving = tokio::task::spawn_blocking(move || receive::receive(rx, NoData, &counter));
        let mut argv = agent_backup_command(compression, self.settings.agent_fault);
        argv.push("--direct-upload".into());
        if upload.sealed() {
            argv.push("--encrypt".into());
        }
        let options = nkvm_kube::exec::ExecOptions {
            // The agent reads one line and never waits for the end of stdin.
            allow_stdin_without_eof: true,
            ..self.stream_options()
        };
        let exec = {
            let _ticker = tracker.ticker();
            let mut stdin = std::io::Cursor::new(target);
            nkvm_kube::exec::exec_stream(
                &self.conn.client,
                &helper.target,
                &argv,
                Some(&mut stdin),
                tx,
                &options,
            )
            .await
        };
        let arrived = joined(receiving, "receiving the agent's trailer").await?;
        let outcome = exec.map_err(|e| fail(Stage::Stream, e.kind(), e.to_string()))?;
        if outcome.exit_code == STORE_FAILED {
            return Err(fail(
                Stage::Store,
                FailureKind::StorageUnavailable,
                format!(
                    "the nkvm agent in the helper pod could not upload to {}: {}",
                    upload.shown(),
                    outcome.stderr.trim()
                ),
            ));
        }
        let arrived = match arrived {
            Ok(a) => a,
            // An agent that failed before its trailer says why on stderr: both go in.
            Err(e) if outcome.exit_code != 0 => {
                let mut failure = agent_failed(&outcome);
                failure.message = format!("{e}; {}", failure.message);
                return Err(failure);
            }
            Err(e) => return Err(in_stream(e)),
        };
        let (archived, trailer) = receive::accept_direct(arrived).map_err(in_stream)?;
        agent_exit_ok(helper, &trailer, &outcome)?;
        Ok(archived.map_writer(|()| trailer))
    }
}
