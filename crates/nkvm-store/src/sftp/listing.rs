//! Walking the store's directory on the server (`<cluster>/<namespace>/<pvc>/`) the way the
//! local listing walks its tree: an archive and its manifest make a backup, either alone is a
//! warning, anything outside the layout (symlinks, stray files, hidden names) is passed over.
//! The sweep removes the hidden `.partial` temp files writers and probes left.

use super::SftpStore;
use super::connection::{Connection, is_missing};
use crate::layout::{
    Location, is_partial_name, is_safe_segment, parse_archive_name, parse_manifest_name,
};
use crate::{Listing, StoreError};
use russh_sftp::protocol::FileType;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The entries of a remote directory: names and types; a missing directory is empty.
async fn entries(
    store: &SftpStore,
    conn: &Connection,
    relative: &str,
) -> Result<Vec<(String, FileType)>, StoreError> {
    let remote = store.remote(relative);
    match conn.sftp.read_dir(remote.as_str()).await {
        Ok(dir) => Ok(dir.map(|e| (e.file_name(), e.file_type())).collect()),
        Err(e) if is_missing(&e) => Ok(Vec::new()),
        Err(e) => Err(store.error(&format!("listing {remote}"), e)),
    }
}

/// The claim directories (`<cluster>/<namespace>/<pvc>`, relative), sorted.
async fn claim_dirs(store: &SftpStore, conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut level = vec![String::new()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for parent in &level {
            for (name, kind) in entries(store, conn, parent).await? {
                if kind == FileType::Dir && is_safe_segment(&name) {
                    next.push(if parent.is_empty() {
                        name
                    } else {
                        format!("{parent}/{name}")
                    });
                }
            }
        }
        level = next;
    }
    level.sort();
    Ok(level)
}

/// Every archive with its manifest, sorted by artifact; see
/// [`crate::ArchiveStore::list_manifests`].
pub(crate) async fn list(store: &SftpStore, conn: &Connection) -> Result<Listing, StoreError> {
    store.check_root(conn).await?;
    let mut listing = Listing::default();
    for dir in claim_dirs(store, conn).await? {
        let files: Vec<String> = entries(store, conn, &dir)
            .await?
            .into_iter()
            .filter(|(_, kind)| *kind == FileType::File)
            .map(|(name, _)| name)
            .collect();
        let manifests: BTreeSet<String> = files
            .iter()
            .filter_map(|f| parse_manifest_name(f).map(|id| id.to_string()))
            .collect();
        let mut archived = BTreeSet::new();
        for file in &files {
            let Some((id, _, _)) = parse_archive_name(file) else {
                continue;
            };
            let artifact = format!("{dir}/{file}");
            archived.insert(id.to_string());
            if !manifests.contains(&id.to_string()) {
                listing.warnings.push(orphan(store, &artifact, "manifest"));
                continue;
            }
            let location = Location::parse(&artifact)?;
            match store.read_manifest(conn, &location).await {
                Ok(manifest) => listing.archives.push((artifact, manifest)),
                Err(e) => listing.warnings.push(e),
            }
        }
        for id in manifests.difference(&archived) {
            let alone = format!("{dir}/{id}{}", crate::layout::MANIFEST_EXTENSION);
            listing.warnings.push(orphan(store, &alone, "archive"));
        }
    }
    listing.archives.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

fn orphan(store: &SftpStore, relative: &str, missing: &'static str) -> StoreError {
    StoreError::Orphan {
        path: store.shown(&store.remote(relative)),
        missing,
    }
}

/// Removes the temp files in the store's directory (probes) and in every claim directory
/// (archives and manifests being written); returns where they were. Run it before any backup
/// to this store starts: it cannot tell a crashed writer's file from a running one's.
pub(crate) async fn sweep(
    store: &SftpStore,
    conn: &Connection,
) -> Result<Vec<PathBuf>, StoreError> {
    let mut swept = Vec::new();
    let mut dirs = vec![String::new()];
    dirs.extend(claim_dirs(store, conn).await?);
    for dir in dirs {
        for (name, kind) in entries(store, conn, &dir).await? {
            if kind != FileType::File || !is_partial_name(&name) {
                continue;
            }
            let relative = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let remote = store.remote(&relative);
            store.remove(conn, &remote).await?;
            swept.push(store.shown(&remote));
        }
    }
    Ok(swept)
}
