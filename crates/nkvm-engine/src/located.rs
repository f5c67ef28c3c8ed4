//! Finding a backup's archive in whichever store holds it: the store it was made to first,
//! then the stores it was copied to (`nkvm copy`), each proven by reading its manifest.

use nkvm_history::{BackupRow, History};
use nkvm_store::{ArchiveStore, Manifest, StoreError, Stores};
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
/// reads; otherwise the first reason none did.
pub(crate) fn locate(
    stores: &Stores,
    history: &History,
    row: &BackupRow,
    only: Option<&str>,
) -> Result<Located, StoreError> {
    let places = places(history, row).map_err(|e| StoreError::Remote {
        store: "history".into(),
        action: "reading the copies of the backup".into(),
        detail: e.to_string(),
    })?;
    let mut first_error = None;
    for (store_name, artifact, sha256) in places {
        if only.is_some_and(|o| o != store_name) {
            continue;
        }
        let found = stores
            .store(&store_name)
            .and_then(|store| Ok((store.manifest(&artifact)?, store)));
        match found {
            Ok((manifest, store)) => {
                return Ok(Located {
                    store_name,
                    store,
                    artifact,
                    sha256,
                    manifest,
                });
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| StoreError::UnknownStore {
        name: only.unwrap_or_default().to_string(),
        known: format!("none holding backup {}", row.id),
    }))
}
