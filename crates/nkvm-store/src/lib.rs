//! nkvm's archive store: where the backup engine writes archives, and where verify, restore,
//! retention and the history rebuild find them again. The store is the source of truth for
//! what was backed up; the history database is an index rebuilt from it.
//!
//! An archive only ever becomes visible whole: it is written to a hidden temp file, synced,
//! moved into place without overwriting anything, and given its manifest. [`ArchiveStore`] is
//! the interface the engine holds; [`LocalStore`] implements it over a directory and
//! [`S3Store`] over an S3-compatible bucket, [`SftpStore`] over a directory on an SFTP
//! server; [`EncryptedStore`] wraps any of them so archives are stored as age files.
//! [`Stores`] names them: `local` always, and the entries of the stores file ([`config`]).

pub mod config;
mod encrypted;
mod error;
mod layout;
mod listing;
mod local;
mod manifest;
mod partial;
mod registry;
mod s3;
mod sftp;
#[cfg(test)]
mod store_contract;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use encrypted::{AgeIdentity, AgeRecipients, EncryptedStore};
pub use error::StoreError;
pub use layout::{ArchiveKey, cluster_segment};
pub use local::LocalStore;
pub use manifest::{Encryption, FORMAT_VERSION, Manifest, PvcIdentity};
pub use partial::PartialArchive;
pub use registry::{NamedStore, StoreKind, Stores};
pub use s3::{
    DirectSent, DirectTarget, DirectUpload, DirectWriter, Parts as S3Parts, S3Settings, S3Store,
    SealedBytes,
};
pub use sftp::{SftpSettings, SftpStore, load_key as load_sftp_key};

use std::io::{Read, Write};
use std::path::PathBuf;

/// What a committed archive is, as the history row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArchive {
    /// The archive's path relative to the store's root, `/`-separated.
    pub artifact: String,
    /// Bytes in the archive.
    pub bytes_stored: u64,
    /// Lower-case hex sha256 of the archive's bytes.
    pub sha256: String,
}

/// The result of listing a store: what could be read, and what could not.
#[derive(Debug, Default)]
pub struct Listing {
    /// Each archive's artifact path and manifest, sorted by artifact.
    pub archives: Vec<(String, Manifest)>,
    /// Files and directories that could not be listed, and why.
    pub warnings: Vec<StoreError>,
}

/// Where archives are kept. Blocking: call it from a blocking thread.
pub trait ArchiveStore: Send + Sync {
    /// Starts writing an archive; nothing is visible until the writer commits.
    fn begin(&self, key: &ArchiveKey) -> Result<Box<dyn ArchiveWriter>, StoreError>;

    /// Opens a committed archive for reading.
    fn open(&self, artifact: &str) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Opens a committed archive with its size as stored, when the store can tell (downloads
    /// announce it as their length).
    fn open_sized(
        &self,
        artifact: &str,
    ) -> Result<(Box<dyn Read + Send>, Option<u64>), StoreError> {
        Ok((self.open(artifact)?, None))
    }

    /// Reads the manifest of a committed archive.
    fn manifest(&self, artifact: &str) -> Result<Manifest, StoreError>;

    /// Every archive with its manifest, and warnings for what could not be read.
    fn list_manifests(&self) -> Result<Listing, StoreError>;

    /// Deletes what crashed writers left, returning where it was; only before any `begin`.
    fn sweep_partials(&self) -> Result<Vec<PathBuf>, StoreError>;

    /// Deletes an archive and its manifest.
    fn delete(&self, artifact: &str) -> Result<(), StoreError>;

    /// Refuses, before anything is streamed, a backup that could not be stored under `key`:
    /// the store unreachable, its credentials refused, or an archive already at that name.
    fn check_writable(&self, key: &ArchiveKey) -> Result<(), StoreError>;

    /// Proves the store usable: writes, reads back and deletes a small probe object.
    /// Returns what was probed (a directory or a bucket URL), for `nkvm stores --check`.
    fn probe(&self) -> Result<String, StoreError>;

    /// The age recipients (`age1...`) new archives are encrypted to; empty when archives are
    /// stored plain (every store but an [`EncryptedStore`]).
    fn age_recipients(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the nkvm agent in a helper pod can upload archives to this store itself
    /// ([`DirectUpload`]): an S3 store with static credentials and `directUpload` on.
    fn direct_uploads(&self) -> bool {
        false
    }

    /// Opens an upload for the agent to fill (after refusing an existing archive, as
    /// [`ArchiveStore::check_writable`]); `None` when this store takes archives only through
    /// nkvm.
    fn begin_direct(&self, key: &ArchiveKey) -> Result<Option<DirectUpload>, StoreError> {
        let _ = key;
        Ok(None)
    }
}

/// An archive being written. Dropping it without committing discards it.
pub trait ArchiveWriter: Write + Send {
    /// Bytes written so far.
    fn bytes_written(&self) -> u64;

    /// Makes the archive durable and visible with its manifest; see [`PartialArchive::commit`].
    fn commit(self: Box<Self>, manifest: &Manifest) -> Result<StoredArchive, StoreError>;

    /// Discards the archive.
    fn abort(self: Box<Self>) -> Result<(), StoreError>;
}
