//! Verifying a stored backup without the cluster: the archive is re-read, its sha256 compared
//! with the manifest's and the history's, and it must decompress to a complete tar stream.
//! An age-encrypted archive is checked by its stored hash alone unless verified deep, which
//! decrypts it with the operator's identity and checks what is inside as well.

use crate::EngineError;
use crate::archive::check_archive;
use crate::archive_safety::{Contents, UnsafeArchive};
use crate::located::{Located, locate};
use nkvm_domain::{BackupId, Compression, FailureKind};
use nkvm_history::History;
use nkvm_store::{AgeIdentity, Encryption, Stores};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Decrypt an encrypted archive and check the compressed tar inside (needs
    /// `identity_file`). Plain archives are always checked in full.
    pub deep: bool,
    /// The age identity file (`NKVM_AGE_IDENTITY_FILE` / `--identity`).
    pub identity_file: Option<PathBuf>,
    /// Verify the copy in this store rather than the first store that holds the backup.
    pub store: Option<String>,
}

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
    /// The store read.
    pub store: String,
    /// Whether the stored object is an age file.
    pub encrypted: bool,
    /// Whether the tar inside was checked (always for plain archives; with `--deep` for
    /// encrypted ones).
    pub contents_checked: bool,
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
    /// An encrypted archive without a usable identity.
    #[error("backup {id}: {detail}")]
    Identity {
        /// Backup id.
        id: String,
        /// What is missing or wrong.
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
            VerifyError::Identity { .. } => FailureKind::InvalidInput,
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
fn check_and_hash(
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
    opts: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let row = history.backup(id.as_str()).map_err(EngineError::from)?;
    let row = row
        .filter(|r| !r.artifact.is_empty())
        .ok_or_else(|| VerifyError::NoArchive(id.to_string()))?;
    let read_err = |e: &dyn std::fmt::Display| VerifyError::Read {
        id: id.to_string(),
        detail: e.to_string(),
    };
    // A deep check needs an identity that opens the copy it reads: rank the places by it.
    let opener = opts.identity_file.as_deref().filter(|_| opts.deep);
    let located =
        locate(stores, history, &row, opts.store.as_deref(), opener).map_err(|e| read_err(&e))?;
    let encryption = located.manifest.encryption.clone();
    let identity = match (&encryption, opts.deep) {
        (Some(e), true) => Some(identity_for(id, e, opts.identity_file.as_deref())?),
        _ => None,
    };
    let file = located
        .store
        .open(&located.artifact)
        .map_err(|e| read_err(&e))?;
    let read = match (&encryption, identity) {
        (None, _) => read_through(file, located.manifest.compression),
        (Some(_), None) => hash_only(file),
        (Some(_), Some(identity)) => read_decrypted(file, &identity, located.manifest.compression),
    }
    .map_err(|e| read_err(&e))?;
    check_hashes(id, &located, &read)?;
    let contents = match read.checked {
        Some(checked) => Some(checked.map_err(|e| VerifyError::Content {
            id: id.to_string(),
            detail: e.to_string(),
        })?),
        None => None,
    };
    Ok(VerifyReport {
        id: id.to_string(),
        artifact: located.artifact,
        sha256: read.stored_sha256,
        bytes_stored: read.stored_bytes,
        tar_bytes: contents.as_ref().map_or(0, |c| c.tar_bytes),
        entries: contents.as_ref().map_or(0, |c| c.members),
        store: located.store_name,
        encrypted: encryption.is_some(),
        contents_checked: contents.is_some(),
    })
}

/// The identity that opens an encrypted archive: loaded from `file`, and one of its
/// recipients. Refused before anything is read.
pub(crate) fn identity_for(
    id: &BackupId,
    encryption: &Encryption,
    file: Option<&std::path::Path>,
) -> Result<AgeIdentity, VerifyError> {
    let refuse = |detail: String| VerifyError::Identity {
        id: id.to_string(),
        detail,
    };
    let file = file.ok_or_else(|| {
        refuse(format!(
            "the archive is encrypted with age (for {}); give the identity file with --identity FILE or NKVM_AGE_IDENTITY_FILE",
            encryption.recipients.join(", ")
        ))
    })?;
    let identity = AgeIdentity::load(file).map_err(|e| refuse(e.to_string()))?;
    identity
        .check_opens(encryption)
        .map_err(|e| refuse(e.to_string()))?;
    Ok(identity)
}

/// What reading an archive found: the stored object's hash and size, and, when the tar was
/// read, the compressed tar's hash and the check's result.
struct ReadBack {
    stored_sha256: String,
    stored_bytes: u64,
    /// The compressed tar's sha256, when it was read out of an age file.
    inner_sha256: Option<String>,
    checked: Option<Result<Contents, UnsafeArchive>>,
}

/// A plain archive: checked and hashed in one pass.
fn read_through(file: impl std::io::Read, compression: Compression) -> std::io::Result<ReadBack> {
    let (checked, stored_bytes, stored_sha256) = check_and_hash(file, compression)?;
    Ok(ReadBack {
        stored_sha256,
        stored_bytes,
        inner_sha256: None,
        checked: Some(checked),
    })
}

/// An encrypted archive without its identity: its stored bytes hashed.
fn hash_only(file: impl std::io::Read) -> std::io::Result<ReadBack> {
    let mut hashing = HashingReader::new(file);
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(ReadBack {
        stored_bytes: hashing.bytes_read(),
        stored_sha256: hashing.hex(),
        inner_sha256: None,
        checked: None,
    })
}

/// An encrypted archive with its identity: the stored bytes hashed on their way into age,
/// the compressed tar coming out hashed and checked.
fn read_decrypted(
    file: Box<dyn std::io::Read + Send>,
    identity: &AgeIdentity,
    compression: Compression,
) -> std::io::Result<ReadBack> {
    let outer = SharedHash::default();
    let tapped = Box::new(Tap {
        inner: file,
        hash: outer.clone(),
    });
    let plain = identity.decrypt(tapped).map_err(std::io::Error::other)?;
    let (checked, _, inner_sha256) = check_and_hash(plain, compression)?;
    let (stored_bytes, stored_sha256) = outer.finish();
    Ok(ReadBack {
        stored_sha256,
        stored_bytes,
        inner_sha256: Some(inner_sha256),
        checked: Some(checked),
    })
}

/// Compares what was read with the manifest and the history.
fn check_hashes(id: &BackupId, located: &Located, read: &ReadBack) -> Result<(), VerifyError> {
    let inner_expected = located
        .manifest
        .encryption
        .as_ref()
        .map_or("", |e| e.archive_sha256.as_str());
    let checks = [
        (
            &read.stored_sha256,
            located.manifest.sha256.as_str(),
            "its manifest",
        ),
        (&read.stored_sha256, located.sha256.as_str(), "the history"),
    ];
    let inner = read
        .inner_sha256
        .as_ref()
        .map(|actual| (actual, inner_expected, "its manifest (inside the age file)"));
    for (actual, expected, source_name) in checks.into_iter().chain(inner) {
        if !expected.is_empty() && expected != actual {
            return Err(VerifyError::Checksum {
                id: id.to_string(),
                actual: actual.clone(),
                expected: expected.to_string(),
                source_name,
            });
        }
    }
    Ok(())
}

/// A running sha256 and count shared between a reader and whoever reads the result.
#[derive(Clone, Default)]
struct SharedHash(Arc<Mutex<(Sha256, u64)>>);

impl SharedHash {
    fn update(&self, bytes: &[u8]) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.0.update(bytes);
        state.1 += bytes.len() as u64;
    }

    /// Bytes seen and their lower-case hex sha256.
    fn finish(&self) -> (u64, String) {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let digest = state.0.clone().finalize();
        (state.1, digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Hashes what is read through it into a [`SharedHash`].
struct Tap {
    inner: Box<dyn std::io::Read + Send>,
    hash: SharedHash,
}

impl std::io::Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
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
            check_and_hash(&mut archive, Compression::Zstd).expect("readable");
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
