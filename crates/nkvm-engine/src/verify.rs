//! Verifying a stored backup without the cluster: the archive is re-read, its sha256 compared
//! with the manifest's and the history's, and it must decompress to a complete tar stream.

use crate::EngineError;
use crate::archive::check_archive;
use crate::archive_safety::{Contents, UnsafeArchive};
use nkvm_domain::{BackupId, Compression, FailureKind};
use nkvm_history::History;
use nkvm_store::Stores;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Backup id.
    pub id: String,
    /// Archive path in the store.
    pub artifact: String,
    /// sha256 of the stored bytes (as recomputed).
    pub sha256: String,
    /// Stored bytes.
    pub bytes_stored: u64,
    /// Tar bytes after decompression.
    pub tar_bytes: u64,
    /// Tar members (files, directories, links...).
    pub entries: u64,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No such backup, or it kept no archive.
    #[error("backup {0} has no archive to verify (see `nkvm backups`)")]
    NoArchive(String),
    /// The stored bytes changed.
    #[error(
        "backup {id} is damaged: its sha256 is {actual}, but {source_name} recorded {expected}"
    )]
    Checksum {
        /// Backup id.
        id: String,
        /// Recomputed.
        actual: String,
        /// Recorded.
        expected: String,
        /// Where it was recorded.
        source_name: &'static str,
    },
    /// The archive does not decompress to a complete tar stream.
    #[error("backup {id} is damaged: {detail}")]
    Content {
        /// Backup id.
        id: String,
        /// What was wrong.
        detail: String,
    },
    /// Reading failed.
    #[error("reading backup {id}: {detail}")]
    Read {
        /// Backup id.
        id: String,
        /// What failed.
        detail: String,
    },
    /// History failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl nkvm_domain::UserError for VerifyError {
    /// The failure kind.
    fn kind(&self) -> FailureKind {
        match self {
            VerifyError::NoArchive(_) => FailureKind::NotFound,
            VerifyError::Checksum { .. } | VerifyError::Content { .. } => {
                FailureKind::CommandFailed
            }
            VerifyError::Read { .. } => FailureKind::StorageUnavailable,
            VerifyError::Engine(e) => e.kind(),
        }
    }
}

/// Hashes (sha256) and counts what is read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Lower-case hex sha256 of what was read.
    pub(crate) fn hex(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Checks the archive in `file` and hashes all of it: the check's result, the bytes read and
/// their sha256.
fn read_through(
    file: impl Read,
    compression: Compression,
) -> std::io::Result<(Result<Contents, UnsafeArchive>, u64, String)> {
    let mut hashing = HashingReader::new(file);
    let checked = check_archive(&mut hashing, compression);
    // Read whatever the check left (padding, trailing frames, or everything after an early
    // failure) so the hash covers the file. Into a sink: after a corrupt header the rest can
    // be gigabytes, which must not be held in memory.
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok((checked, hashing.bytes_read(), hashing.hex()))
}

/// Verifies backup `id` (blocking I/O: call from a blocking thread for large archives).
pub fn verify(
    stores: &Stores,
    history: &History,
    id: &BackupId,
) -> Result<VerifyReport, VerifyError> {
    let row = history.backup(id.as_str()).map_err(EngineError::from)?;
    let store_name = row.as_ref().map(|r| r.store.clone()).unwrap_or_default();
    let artifact = row
        .as_ref()
        .map(|r| r.artifact.clone())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| VerifyError::NoArchive(id.to_string()))?;
    let read_err = |e: &dyn std::fmt::Display| VerifyError::Read {
        id: id.to_string(),
        detail: e.to_string(),
    };
    let store = stores.store(&store_name).map_err(|e| read_err(&e))?;
    let manifest = store.manifest(&artifact).map_err(|e| read_err(&e))?;
    let file = store.open(&artifact).map_err(|e| read_err(&e))?;
    let (checked, bytes_stored, sha256) =
        read_through(file, manifest.compression).map_err(|e| read_err(&e))?;
    for (expected, source_name) in [
        (manifest.sha256.as_str(), "its manifest"),
        (
            row.as_ref().map_or("", |r| r.sha256.as_str()),
            "the history",
        ),
    ] {
        if !expected.is_empty() && expected != sha256 {
            return Err(VerifyError::Checksum {
                id: id.to_string(),
                actual: sha256,
                expected: expected.to_string(),
                source_name,
            });
        }
    }
    let contents = checked.map_err(|e| VerifyError::Content {
        id: id.to_string(),
        detail: e.to_string(),
    })?;
    Ok(VerifyReport {
        id: id.to_string(),
        artifact,
        sha256,
        bytes_stored,
        tar_bytes: contents.tar_bytes,
        entries: contents.members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes a corrupt archive carries after its bad header.
    const TAIL: u64 = 64 << 20;

    /// Serves a corrupt zstd header and then `TAIL` more bytes, remembering the largest buffer
    /// it was asked to fill: what a reader of the archive holds in memory at once.
    struct CorruptArchive {
        data: std::io::Chain<&'static [u8], std::io::Take<std::io::Repeat>>,
        largest_request: usize,
    }

    impl Read for CorruptArchive {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest_request = self.largest_request.max(buf.len());
            self.data.read(buf)
        }
    }

    #[test]
    fn a_corrupt_archive_is_hashed_to_its_end_without_being_held_in_memory() {
        let mut archive = CorruptArchive {
            data: b"this is no zstd frame".chain(std::io::repeat(7).take(TAIL)),
            largest_request: 0,
        };
        let (checked, bytes, sha256) =
            read_through(&mut archive, Compression::Zstd).expect("readable");
        assert!(checked.is_err(), "a corrupt header is reported");
        // Every byte was read and hashed, so a checksum mismatch can still be told apart...
        assert_eq!(bytes, 21 + TAIL);
        assert_eq!(sha256.len(), 64);
        // ...through a bounded buffer: buffering the rest asks for tens of MiB at once.
        assert!(
            archive.largest_request <= 1 << 20,
            "read the rest {} bytes at a time",
            archive.largest_request
        );
    }
}
