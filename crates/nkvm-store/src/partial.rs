//! Writing one archive: a hidden temp file that counts and hashes every byte written to it, and
//! a commit that makes the archive appear whole, with its manifest, or not at all. Dropping an
//! uncommitted [`PartialArchive`] deletes the temp file, so a failed or cancelled job never
//! leaves a partial archive behind.
//!
//! Everything the store creates is private to the user nkvm runs as (files 0600, directories
//! 0700): archives hold volume data, and on a shared host any local user could otherwise read
//! them.

use crate::layout::{ArchiveKey, Location, hex, partial_name};
use crate::manifest::{self, Manifest};
use crate::{ArchiveWriter, StoreError, StoredArchive};
use sha2::{Digest, Sha256};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file the store creates (archives, manifests and their temp files).
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of every directory the store creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Write buffer: the engine's compressors write in chunks of tens of KiB; a plain tar of small
/// exec frames would otherwise cost a syscall per frame.
const BUFFER: usize = 256 * 1024;

/// An archive being written: implements [`Write`]; becomes visible only on [`commit`](Self::commit).
#[derive(Debug)]
pub struct PartialArchive {
    file: BufWriter<File>,
    key: ArchiveKey,
    location: Location,
    dir: PathBuf,
    temp: PathBuf,
    hasher: Sha256,
    bytes: u64,
    /// Set once the temp file is known to be gone (committed or aborted), so Drop leaves it be.
    finished: bool,
}

impl PartialArchive {
    /// Creates the claim's directory and the temp file, refusing if the archive, its manifest or
    /// another writer's temp file already exists.
    pub(crate) fn create(root: &Path, key: &ArchiveKey) -> Result<Self, StoreError> {
        let location = key.location()?;
        let dir = root.join(location.dir());
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|e| StoreError::io("creating the archive directory", &dir, e))?;
        // Checked now so a backup that could never be committed fails before streaming a volume.
        refuse_existing(&dir.join(location.archive_name()))?;
        refuse_existing(&dir.join(location.manifest_name()))?;
        let temp = dir.join(partial_name(&location.archive_name()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => StoreError::AlreadyExists { path: temp.clone() },
                _ => StoreError::io("creating the temp archive", &temp, e),
            })?;
        Ok(PartialArchive {
            file: BufWriter::with_capacity(BUFFER, file),
            key: key.clone(),
            location,
            dir,
            temp,
            hasher: Sha256::new(),
            bytes: 0,
            finished: false,
        })
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Makes the archive durable and visible, then writes its manifest beside it.
    ///
    /// The store fills the manifest's `formatVersion`, `artifact`, `bytesStored` and `sha256`
    /// from what it wrote; the caller's values for those are ignored. The manifest's backup id,
    /// cluster, namespace, claim name and compression must match the key given to `begin`.
    pub fn commit(mut self, manifest: &Manifest) -> Result<StoredArchive, StoreError> {
        self.check(manifest)?;
        self.file
            .flush()
            .map_err(|e| StoreError::io("writing the temp archive", &self.temp, e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| StoreError::io("syncing the temp archive to disk", &self.temp, e))?;
        let archive = self.dir.join(self.location.archive_name());
        refuse_existing(&self.dir.join(self.location.manifest_name()))?;
        place(&self.temp, &archive)?;
        self.finished = true;
        let (stored, manifest) = manifest::finished(
            manifest,
            self.location.artifact(),
            self.bytes,
            hex(&std::mem::take(&mut self.hasher).finalize()),
        );
        let written = write_manifest(&self.dir, &self.location, &manifest)
            .and_then(|()| sync_dirs(&self.dir));
        if let Err(e) = written {
            // The job is reported failed, and an archive without a manifest would be invisible
            // to listings: take it back. Best effort; a failure here leaves an orphan that
            // `list_manifests` reports.
            let _ = fs::remove_file(&archive);
            return Err(e);
        }
        Ok(stored)
    }

    /// Deletes the temp file; nothing of this archive remains.
    pub fn abort(mut self) -> Result<(), StoreError> {
        self.finished = true;
        fs::remove_file(&self.temp)
            .map_err(|e| StoreError::io("deleting the temp archive", &self.temp, e))
    }

    /// Refuses a manifest that would describe another archive than this one.
    fn check(&self, manifest: &Manifest) -> Result<(), StoreError> {
        check_manifest(&self.key, manifest)
    }

    /// An I/O error from writing, carrying the store's message (and the [`StoreError`] itself,
    /// for callers that downcast to read its kind).
    fn write_error(&self, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            StoreError::io("writing the temp archive", &self.temp, e),
        )
    }
}

impl Write for PartialArchive {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf).map_err(|e| self.write_error(e))?;
        // `write` never reports more than it was given; hash exactly what was accepted.
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush().map_err(|e| self.write_error(e))
    }
}

impl Drop for PartialArchive {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing to report to: a failure leaves a hidden file that `sweep_partials` removes.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl ArchiveWriter for PartialArchive {
    fn bytes_written(&self) -> u64 {
        self.bytes
    }

    fn commit(self: Box<Self>, manifest: &Manifest) -> Result<StoredArchive, StoreError> {
        PartialArchive::commit(*self, manifest)
    }

    fn abort(self: Box<Self>) -> Result<(), StoreError> {
        PartialArchive::abort(*self)
    }
}

/// Refuses a manifest that would describe another archive than the one begun with `key`.
pub(crate) fn check_manifest(key: &ArchiveKey, manifest: &Manifest) -> Result<(), StoreError> {
    let pairs = [
        ("backupId", manifest.backup_id.as_str(), key.id.as_str()),
        ("cluster", &manifest.cluster, &key.cluster),
        ("namespace", &manifest.namespace, &key.namespace),
        ("pvc.name", &manifest.pvc.name, &key.pvc),
        (
            "compression",
            manifest.compression.as_str(),
            key.compression.as_str(),
        ),
        (
            "encryption",
            if manifest.encryption.is_some() {
                "age"
            } else {
                "none"
            },
            if key.encrypted { "age" } else { "none" },
        ),
    ];
    match pairs.into_iter().find(|(_, m, k)| m != k) {
        Some((field, m, k)) => Err(StoreError::ManifestMismatch {
            field,
            manifest: m.to_string(),
            key: k.to_string(),
        }),
        None => Ok(()),
    }
}

/// Proves `root` writable: creates it if needed, writes, syncs and deletes a hidden probe file
/// (a hidden name, so listings pass over a probe a crash left).
pub(crate) fn probe_dir(root: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(root)
        .map_err(|e| StoreError::io("creating the archive directory", root, e))?;
    let probe = root.join(partial_name(&format!(
        "probe-{:016x}",
        rand::random::<u64>()
    )));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"nkvm probe\n").and_then(|()| f.sync_all()));
    let removed = fs::remove_file(&probe);
    written.map_err(|e| StoreError::io("writing a probe file in", root, e))?;
    removed.map_err(|e| StoreError::io("deleting the probe file", &probe, e))
}

/// Fails with [`StoreError::AlreadyExists`] if anything (even a dangling symlink) is at `path`.
pub(crate) fn refuse_existing(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(StoreError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("checking for an existing file at", path, e)),
    }
}

/// Moves a synced temp file to its final name without ever replacing an existing file.
fn place(temp: &Path, dest: &Path) -> Result<(), StoreError> {
    // A hard link fails atomically if `dest` exists, where `rename` would silently replace it.
    match fs::hard_link(temp, dest) {
        Ok(()) => {
            // Best effort: a temp name left behind is swept on the next start.
            let _ = fs::remove_file(temp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::AlreadyExists {
            path: dest.to_path_buf(),
        }),
        Err(_) => {
            // Some network filesystems have no hard links: check, then rename. That leaves a
            // window only for a second writer of the same backup id, which random ids rule out.
            refuse_existing(dest)?;
            fs::rename(temp, dest)
                .map_err(|e| StoreError::io("renaming the temp file into place at", dest, e))
        }
    }
}

/// Writes the manifest beside its archive: temp file, fsync, then into place.
fn write_manifest(dir: &Path, location: &Location, manifest: &Manifest) -> Result<(), StoreError> {
    let path = dir.join(location.manifest_name());
    let temp = dir.join(partial_name(&location.manifest_name()));
    let result = (|| {
        let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::from)?;
        // Any file at this temp name is a crashed attempt's leftover: replacing it is right
        // (removed first, because truncating would keep a leftover's wider mode).
        remove_if_present(&temp)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(StoreError::io("writing the manifest", &temp, e));
    }
    place(&temp, &path).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}

/// Syncs the claim's directory and its parents up to the root, so the new names (and any
/// directories `begin` created) survive a crash.
fn sync_dirs(dir: &Path) -> Result<(), StoreError> {
    for d in dir.ancestors().take(4) {
        // A relative root's last ancestor is the empty path, which means the current directory.
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io("syncing the archive directory", d, e))?;
    }
    Ok(())
}

/// Removes `path` if it exists.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
