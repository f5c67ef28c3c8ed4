//! Finding a backup's archive in whichever store holds it: the store it was made to first,
//! then the stores it was copied to (`nkvm copy`), each proven by reading its manifest. With
//! an age identity at hand, a place the identity can open wins over an earlier one it cannot
//! (a copy re-encrypted for another store's recipients is opened with that store's key).

use nkvm_history::{BackupRow, History};
use nkvm_store::{AgeIdentity, ArchiveStore, Manifest, StoreError, Stores};
use std::path::Path;
use std::sync::Arc;

/// One store's copy of a backup, with its manifest read.
pub(crate) struct Located {
    /// The store's name.
    pub store_name: String,
    /// The store.
    pub store: Arc<dyn ArchiveStore>,
    /// The archive's path in that store.
    pub artifact: String,
    /// The sha256 the history recorded for this copy.
    pub sha256: String,
    /// The copy's manifest.
    pub manifest: Manifest,
}

/// Where a backup's archive may be: `(store, artifact, sha256)`, the original first.
pub(crate) fn places(
    history: &History,
    row: &BackupRow,
) -> Result<Vec<(String, String, String)>, nkvm_history::HistoryError> {
    let store = if row.store.is_empty() {
        nkvm_store::config::LOCAL.to_string()
    } else {
        row.store.clone()
    };
    let mut places = vec![(store, row.artifact.clone(), row.sha256.clone())];
    for copy in history.copies(&row.id)? {
        places.push((copy.store, copy.artifact, copy.sha256));
    }
    Ok(places)
}

/// The first place (of `only`, when given) whose store is configured and whose manifest
/// reads, preferring one that `identity_file` opens (plain, or encrypted for one of its keys)
/// when that is given and loads; otherwise the first reason none did.
pub(crate) fn locate(
    stores: &Stores,
    history: &History,
    row: &BackupRow,
    only: Option<&str>,
    identity_file: Option<&Path>,
) -> Result<Located, StoreError> {
    let places = places(history, row).map_err(|e| StoreError::Remote {
        store: "history".into(),
        action: "reading the copies of the backup".into(),
        detail: e.to_string(),
    })?;
    // An identity that does not load is refused with its reason by whoever needs it; here it
    // only ranks the places.
    let identity = identity_file.and_then(|p| AgeIdentity::load(p).ok());
    let mut first_error = None;
    let mut unopenable = None;
    for (store_name, artifact, sha256) in places {
        if only.is_some_and(|o| o != store_name) {
            continue;
        }
        let found = stores
            .store(&store_name)
            .and_then(|store| Ok((store.manifest(&artifact)?, store)));
        match found {
            Ok((manifest, store)) => {
                let located = Located {
                    store_name,
                    store,
                    artifact,
                    sha256,
                    manifest,
                };
                if opens(identity.as_ref(), &located.manifest) {
                    return Ok(located);
                }
                unopenable.get_or_insert(located);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(located) = unopenable {
        return Ok(located);
    }
    Err(first_error.unwrap_or_else(|| StoreError::UnknownStore {
        name: only.unwrap_or_default().to_string(),
        known: format!("none holding backup {}", row.id),
    }))
}

/// Whether `identity` (when there is one) can read the archive `manifest` describes.
fn opens(identity: Option<&AgeIdentity>, manifest: &Manifest) -> bool {
    match (identity, &manifest.encryption) {
        (Some(identity), Some(encryption)) => identity.check_opens(encryption).is_ok(),
        _ => true,
    }
}
