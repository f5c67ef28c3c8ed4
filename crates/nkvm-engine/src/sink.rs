//! Where a backup's compressed bytes go: the named store's writer, checked before any helper
//! pod exists (reachable, credentials accepted, nothing already at the archive's name), and
//! wrapped so that a failure of the store itself is told apart from a failure of the stream
//! feeding it: the first fails the job at stage `store`, the second at stage `stream`.

use crate::lifecycle::{JobFailure, fail};
use nkvm_domain::{FailureKind, Stage, UserError};
use nkvm_store::{ArchiveKey, ArchiveStore, ArchiveWriter, StoreError, Stores};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A store error as a job failure at stage `store`.
pub(crate) fn store_failure(e: &StoreError) -> JobFailure {
    fail(Stage::Store, e.kind(), e.to_string())
}

/// The store named `name`, proven able to take an archive under `key`. Blocks on the store:
/// runs on a blocking thread.
pub(crate) async fn checked_store(
    stores: &Arc<Stores>,
    name: &str,
    key: &ArchiveKey,
) -> Result<Arc<dyn ArchiveStore>, JobFailure> {
    let store = stores.store(name).map_err(|e| store_failure(&e))?;
    let (checked, key) = (store.clone(), key.clone());
    tokio::task::spawn_blocking(move || checked.check_writable(&key))
        .await
        .map_err(|e| {
            fail(
                Stage::Store,
                FailureKind::Internal,
                format!("checking the store panicked: {e}"),
            )
        })?
        .map_err(|e| store_failure(&e))?;
    Ok(store)
}

/// A store's writer that remembers whether the store failed a write.
pub(crate) struct Sink {
    writer: Box<dyn ArchiveWriter>,
    failed: Arc<AtomicBool>,
}

impl Sink {
    /// Begins the archive in `store` (blocking: call from a blocking thread or accept the
    /// short wait of a local file's creation).
    pub(crate) fn begin(
        store: &dyn ArchiveStore,
        key: &ArchiveKey,
    ) -> Result<(Sink, Arc<AtomicBool>), JobFailure> {
        let writer = store.begin(key).map_err(|e| store_failure(&e))?;
        let failed = Arc::new(AtomicBool::new(false));
        Ok((
            Sink {
                writer,
                failed: failed.clone(),
            },
            failed,
        ))
    }

    /// The store's writer, to commit.
    pub(crate) fn into_writer(self) -> Box<dyn ArchiveWriter> {
        self.writer
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf).inspect_err(|_| {
            self.failed.store(true, Ordering::Relaxed);
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().inspect_err(|_| {
            self.failed.store(true, Ordering::Relaxed);
        })
    }
}

/// Discards an archive that will not be committed, on a blocking thread (a remote store
/// aborts its upload there and then, instead of leaving it to the next start's sweep).
pub(crate) async fn discard(sink: Sink) {
    let aborted = tokio::task::spawn_blocking(move || sink.writer.abort()).await;
    if let Ok(Err(e)) = aborted {
        tracing::warn!(error = %e, "discarding an unfinished archive failed; the next start sweeps it");
    }
}

/// The job failure when the store failed a write and so ended the stream: `e` is what the
/// stream's consumer saw of it.
pub(crate) fn failed_store(e: &impl std::fmt::Display) -> JobFailure {
    fail(Stage::Store, FailureKind::StorageUnavailable, e.to_string())
}

/// Whether the store failed, given the flag [`Sink::begin`] returned.
pub(crate) fn store_failed(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}
