//! Listing a bucket's archives with their manifests, the same way the local listing pairs
//! files: an archive and its manifest make a backup; either alone is a warning; keys outside
//! the layout (and nkvm's own `.nkvm/` markers) are passed over.

use super::{S3Store, remote};
use crate::layout::{Location, is_safe_segment, parse_manifest_name};
use crate::local::MAX_MANIFEST_BYTES;
use crate::{Listing, StoreError};
use futures_util::StreamExt;
use object_store::ObjectStore;
use std::collections::BTreeMap;

/// What the listing found of one backup: its archive's artifact, whether a manifest is there.
#[derive(Default)]
struct Found {
    archive: Option<String>,
    manifest: Option<String>,
}

/// Every archive with its manifest, sorted by artifact; see [`crate::ArchiveStore::list_manifests`].
pub(crate) fn list(store: &S3Store) -> Result<Listing, StoreError> {
    let prefix = store.prefix.trim_end_matches('/');
    let prefix_key = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix));
    let metas = store
        .rt
        .block_on(store.s3.list(prefix_key.as_ref()).collect::<Vec<_>>());
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for meta in metas {
        let meta = meta.map_err(|e| remote(&store.name, "listing the bucket", &e))?;
        let key = meta.location.to_string();
        let Some(relative) = key.strip_prefix(store.prefix.as_str()) else {
            continue;
        };
        if let Ok(location) = Location::parse(relative) {
            let slot = found.entry(backup_key(&location.dir(), location.id.as_str()));
            slot.or_default().archive = Some(relative.to_string());
        } else if let Some((dir, id)) = manifest_parts(relative) {
            found.entry(backup_key(dir, &id)).or_default().manifest = Some(relative.to_string());
        }
    }
    let mut listing = Listing::default();
    for (_, entry) in found {
        match (entry.archive, entry.manifest) {
            (Some(artifact), Some(_)) => match read(store, &artifact) {
                Ok(manifest) => listing.archives.push((artifact, manifest)),
                Err(e) => listing.warnings.push(e),
            },
            (Some(alone), None) => listing.warnings.push(orphan(store, &alone, "manifest")),
            (None, Some(alone)) => listing.warnings.push(orphan(store, &alone, "archive")),
            (None, None) => {}
        }
    }
    listing.archives.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

fn backup_key(dir: &str, id: &str) -> String {
    format!("{dir}/{id}")
}

/// `<cluster>/<namespace>/<pvc>/<id>.json` → its directory and id.
fn manifest_parts(relative: &str) -> Option<(&str, String)> {
    let (dir, file) = relative.rsplit_once('/')?;
    let segments: Vec<&str> = dir.split('/').collect();
    if segments.len() != 3 || !segments.iter().all(|s| is_safe_segment(s)) {
        return None;
    }
    Some((dir, parse_manifest_name(file)?.to_string()))
}

fn read(store: &S3Store, artifact: &str) -> Result<crate::Manifest, StoreError> {
    let location = Location::parse(artifact)?;
    let key = store.key(&location.manifest_artifact());
    let bytes = store.get_small(&key, "manifest", MAX_MANIFEST_BYTES)?;
    crate::local::parse_manifest(&bytes, &store.shown(&key), &location.id)
}

fn orphan(store: &S3Store, relative: &str, missing: &'static str) -> StoreError {
    StoreError::Orphan {
        path: store.shown(&store.key(relative)),
        missing,
    }
}
