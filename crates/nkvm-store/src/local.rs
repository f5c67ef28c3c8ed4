//! The archive store in a local directory (`NKVM_BACKUP_DIR`): where archives are begun, read
//! back, described and deleted. Listing and crash recovery walk the same tree in
//! [`listing`](crate::listing).

use crate::layout::{ArchiveKey, Location};
use crate::listing;
use crate::manifest::{FORMAT_VERSION, Manifest};
use crate::partial::PartialArchive;
use crate::{ArchiveStore, ArchiveWriter, Listing, StoreError};
use nkvm_domain::BackupId;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `O_NONBLOCK`, for opening archives (see [`LocalStore::open`]).
// The flag is a small positive constant on every Unix, so the cast cannot wrap.
const NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;

/// Manifests are a few KiB; anything far larger is not one, and is not read into memory whole.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// The archive store in a directory; the directory is created on the first backup.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`. Touches nothing until used.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    /// The directory archives live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts writing an archive: creates its directory and a hidden temp file.
    pub fn begin(&self, key: &ArchiveKey) -> Result<PartialArchive, StoreError> {
        PartialArchive::create(&self.root, key)
    }

    /// Opens an archive for reading, refusing paths that are not archives of this store, that
    /// resolve (through symlinks) outside it, or that are not regular files.
    pub fn open(&self, artifact: &str) -> Result<File, StoreError> {
        let location = Location::parse(artifact)?;
        let path = self.contained(artifact, "archive", &location.artifact())?;
        let not_regular = || StoreError::InvalidArtifact {
            artifact: artifact.to_string(),
            reason: "it is not a regular file (a directory, FIFO, socket or device is never an archive)",
        };
        // Checked before opening: opening a FIFO for reading waits for a writer, and a device
        // may act on open.
        let before = fs::metadata(&path)
            .map_err(|e| StoreError::io("reading the metadata of the archive", &path, e))?;
        if !before.is_file() {
            return Err(not_regular());
        }
        // Non-blocking, so a FIFO swapped in after that check cannot hold this thread either;
        // the flag changes nothing for reads of a regular file.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(NONBLOCK)
            .open(&path)
            .map_err(|e| StoreError::io("opening the archive", &path, e))?;
        let opened = file
            .metadata()
            .map_err(|e| StoreError::io("reading the metadata of the archive", &path, e))?;
        if !opened.is_file() {
            return Err(not_regular());
        }
        Ok(file)
    }

    /// Reads the manifest beside an archive.
    pub fn manifest(&self, artifact: &str) -> Result<Manifest, StoreError> {
        let location = Location::parse(artifact)?;
        let path = self.contained(artifact, "manifest", &location.manifest_artifact())?;
        read_manifest(&path, &location.id)
    }

    /// Every archive with its manifest, sorted by artifact. Unreadable manifests, manifests
    /// without archives and archives without manifests are reported as warnings, not errors:
    /// this is what rebuilds the history index, and one bad file must not hide the rest.
    pub fn list_manifests(&self) -> Result<Listing, StoreError> {
        listing::list(&self.root)
    }

    /// Deletes the temp files a crash left behind and returns their paths. Run it before any
    /// backup starts: it cannot tell a crashed writer's file from a running one's.
    pub fn sweep_partials(&self) -> Result<Vec<PathBuf>, StoreError> {
        listing::sweep(&self.root)
    }

    /// Removes an archive and its manifest. The manifest goes first, so an interruption leaves
    /// an archive that listings report as an orphan, never a listed backup without its data.
    pub fn delete(&self, artifact: &str) -> Result<(), StoreError> {
        let location = Location::parse(artifact)?;
        // Only the directory needs resolving: removing a symlinked file removes the link.
        let dir = self.contained(artifact, "archive", &location.dir())?;
        let manifest = remove_if_present(&dir.join(location.manifest_name()))?;
        let archive = remove_if_present(&dir.join(location.archive_name()))?;
        if !manifest && !archive {
            return Err(StoreError::NotFound {
                what: "archive",
                path: dir.join(location.archive_name()),
            });
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io("syncing the archive directory", &dir, e))
    }

    /// `relative` under the root with every symlink resolved, refused if that leaves the root.
    fn contained(
        &self,
        artifact: &str,
        what: &'static str,
        relative: &str,
    ) -> Result<PathBuf, StoreError> {
        let path = self.root.join(relative);
        let resolve = |p: &Path| {
            fs::canonicalize(p).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::NotFound {
                    what,
                    path: path.clone(),
                },
                _ => StoreError::io("resolving", p, e),
            })
        };
        let root = resolve(&self.root)?;
        let real = resolve(&path)?;
        if real.starts_with(&root) {
            Ok(real)
        } else {
            Err(StoreError::InvalidArtifact {
                artifact: artifact.to_string(),
                reason: "it resolves to a file outside the store through a symbolic link",
            })
        }
    }
}

/// Reads and checks a manifest: bounded size, valid JSON of a known format, for backup `id`.
pub(crate) fn read_manifest(path: &Path, id: &BackupId) -> Result<Manifest, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound {
                what: "manifest",
                path: path.to_path_buf(),
            },
            _ => StoreError::io("reading the manifest", path, e),
        })?;
    parse_manifest(&bytes, path, id)
}

/// Checks a manifest's bytes (read from `path`, a file or an object key): bounded size, valid
/// JSON of a known format, for backup `id`.
pub(crate) fn parse_manifest(
    bytes: &[u8],
    path: &Path,
    id: &BackupId,
) -> Result<Manifest, StoreError> {
    let corrupt = |detail: String| StoreError::CorruptManifest {
        path: path.to_path_buf(),
        detail,
    };
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(corrupt(format!(
            "it is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if !(1..=FORMAT_VERSION).contains(&manifest.format_version) {
        return Err(corrupt(format!(
            "format version {} is not one this nkvm reads (1 to {FORMAT_VERSION}); a newer nkvm may read it",
            manifest.format_version
        )));
    }
    if manifest.backup_id != *id {
        return Err(corrupt(format!(
            "it describes backup {}",
            manifest.backup_id
        )));
    }
    Ok(manifest)
}

/// Removes a file; `Ok(false)` if it was not there.
fn remove_if_present(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("deleting", path, e)),
    }
}

impl ArchiveStore for LocalStore {
    fn begin(&self, key: &ArchiveKey) -> Result<Box<dyn ArchiveWriter>, StoreError> {
        Ok(Box::new(LocalStore::begin(self, key)?))
    }

    fn open(&self, artifact: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        Ok(Box::new(LocalStore::open(self, artifact)?))
    }

    fn open_sized(
        &self,
        artifact: &str,
    ) -> Result<(Box<dyn Read + Send>, Option<u64>), StoreError> {
        let file = LocalStore::open(self, artifact)?;
        // The opened file's own length: what will be read, whatever the history says.
        let size = file.metadata().ok().map(|m| m.len());
        Ok((Box::new(file), size))
    }

    fn manifest(&self, artifact: &str) -> Result<Manifest, StoreError> {
        LocalStore::manifest(self, artifact)
    }

    fn list_manifests(&self) -> Result<Listing, StoreError> {
        LocalStore::list_manifests(self)
    }

    fn sweep_partials(&self) -> Result<Vec<PathBuf>, StoreError> {
        LocalStore::sweep_partials(self)
    }

    fn delete(&self, artifact: &str) -> Result<(), StoreError> {
        LocalStore::delete(self, artifact)
    }

    fn check_writable(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        let location = key.location()?;
        let dir = self.root.join(location.dir());
        for name in [location.archive_name(), location.manifest_name()] {
            crate::partial::refuse_existing(&dir.join(name))?;
        }
        Ok(())
    }

    fn probe(&self) -> Result<String, StoreError> {
        crate::partial::probe_dir(&self.root)?;
        Ok(self.root.display().to_string())
    }
}
