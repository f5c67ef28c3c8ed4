//! Walking the store's tree (`<cluster>/<namespace>/<pvc>/`): listing every archive with its
//! manifest, which is how the history index is rebuilt, and sweeping the temp files a crash
//! left. Anything that is not part of the layout (`lost+found`, symlinks, stray files) is
//! passed over, never followed.

use crate::layout::{
    Location, is_partial_name, is_safe_segment, parse_archive_name, parse_manifest_name,
};
use crate::local::read_manifest;
use crate::{Listing, StoreError};
use nkvm_domain::BackupId;
use std::collections::BTreeSet;
use std::fs::{self, FileType};
use std::io;
use std::path::{Path, PathBuf};

/// One entry of a directory, with a UTF-8 name (the layout has no other kind).
struct Entry {
    name: String,
    path: PathBuf,
    kind: FileType,
}

/// One claim's directory: its three segments and its path.
struct ClaimDir {
    segments: [String; 3],
    path: PathBuf,
}

/// Lists every archive with its manifest; see [`LocalStore::list_manifests`](crate::LocalStore::list_manifests).
pub(crate) fn list(root: &Path) -> Result<Listing, StoreError> {
    let mut listing = Listing::default();
    for claim in claim_dirs(root, &mut listing.warnings)? {
        list_claim(&claim, &mut listing);
    }
    listing.archives.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

/// Deletes every temp file; see [`LocalStore::sweep_partials`](crate::LocalStore::sweep_partials).
/// Keeps going past failures so one bad directory does not keep the rest from being cleaned,
/// then reports the first.
pub(crate) fn sweep(root: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut problems = Vec::new();
    let mut removed = Vec::new();
    for claim in claim_dirs(root, &mut problems)? {
        let Some(entries) = entries(&claim.path, &mut problems) else {
            continue;
        };
        for entry in entries {
            if !(entry.kind.is_file() && is_partial_name(&entry.name)) {
                continue;
            }
            match fs::remove_file(&entry.path) {
                Ok(()) => removed.push(entry.path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => problems.push(StoreError::io(
                    "deleting the leftover temp file",
                    entry.path,
                    e,
                )),
            }
        }
    }
    match problems.into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(removed),
    }
}

/// The claim directories, sorted. A missing root is an empty store; an unreadable root is an
/// error; an unreadable directory below it is a warning.
fn claim_dirs(root: &Path, warnings: &mut Vec<StoreError>) -> Result<Vec<ClaimDir>, StoreError> {
    let clusters = match read_entries(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("listing the archive directory", root, e)),
    };
    let mut claims = Vec::new();
    for cluster in layout_dirs(clusters) {
        let namespaces = entries(&cluster.path, warnings)
            .map(layout_dirs)
            .unwrap_or_default();
        for namespace in namespaces {
            let pvcs = entries(&namespace.path, warnings)
                .map(layout_dirs)
                .unwrap_or_default();
            for pvc in pvcs {
                claims.push(ClaimDir {
                    segments: [cluster.name.clone(), namespace.name.clone(), pvc.name],
                    path: pvc.path,
                });
            }
        }
    }
    Ok(claims)
}

/// Lists one claim's archives into `listing`.
fn list_claim(claim: &ClaimDir, listing: &mut Listing) {
    let Some(entries) = entries(&claim.path, &mut listing.warnings) else {
        return;
    };
    let files: Vec<Entry> = entries.into_iter().filter(|e| e.kind.is_file()).collect();
    let archives: BTreeSet<&str> = files
        .iter()
        .filter(|e| parse_archive_name(&e.name).is_some())
        .map(|e| e.name.as_str())
        .collect();
    let mut described: BTreeSet<BackupId> = BTreeSet::new();
    for file in &files {
        let Some(id) = parse_manifest_name(&file.name) else {
            continue;
        };
        described.insert(id.clone());
        let manifest = match read_manifest(&file.path, &id) {
            Ok(manifest) => manifest,
            Err(e) => {
                listing.warnings.push(e);
                continue;
            }
        };
        let [cluster, namespace, pvc] = claim.segments.clone();
        let location = Location {
            cluster,
            namespace,
            pvc,
            id,
            compression: manifest.compression,
            encrypted: manifest.encryption.is_some(),
        };
        if archives.contains(location.archive_name().as_str()) {
            listing.archives.push((location.artifact(), manifest));
        } else {
            listing.warnings.push(StoreError::Orphan {
                path: file.path.clone(),
                missing: "archive",
            });
        }
    }
    for file in &files {
        if parse_archive_name(&file.name).is_some_and(|(id, _, _)| !described.contains(&id)) {
            listing.warnings.push(StoreError::Orphan {
                path: file.path.clone(),
                missing: "manifest",
            });
        }
    }
}

/// Only real directories (not symlinks) whose names the layout could have made.
fn layout_dirs(entries: Vec<Entry>) -> Vec<Entry> {
    entries
        .into_iter()
        .filter(|e| e.kind.is_dir() && is_safe_segment(&e.name))
        .collect()
}

/// A directory's entries, or `None` with a warning if it cannot be read.
fn entries(dir: &Path, warnings: &mut Vec<StoreError>) -> Option<Vec<Entry>> {
    read_entries(dir)
        .map_err(|e| warnings.push(StoreError::io("listing the archive directory", dir, e)))
        .ok()
}

/// A directory's entries with UTF-8 names, sorted by name; file types are not followed
/// through symlinks.
fn read_entries(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // Names the layout never makes (not UTF-8) are not ours to list or sweep.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        out.push(Entry {
            name,
            path: entry.path(),
            kind: entry.file_type()?,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
