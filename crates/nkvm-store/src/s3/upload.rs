//! One archive's multipart upload: parts of a fixed size uploaded a few at a time while the
//! archive is written (memory stays at a few parts whatever the volume's size), each with its
//! sha256 checksum, and an object that exists only once the upload is completed. A marker
//! object records the open upload until it is completed or aborted; [`sweep`] aborts the uploads
//! of markers a crash left.
//!
//! The pieces are shared with direct uploads ([`super::direct`]): [`OpenUpload`] (the upload
//! and its marker, aborted unless completed) and [`Parts`] (the part writer, which the agent
//! in a helper pod runs on its own).

use super::{S3Store, UPLOADS_DIR, remote};
use crate::layout::{ArchiveKey, Location, hex};
use crate::manifest::{self, Manifest};
use crate::{ArchiveWriter, StoreError, StoredArchive};
use futures_util::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::path::PathBuf;
use tokio::task::JoinSet;

/// What a marker object holds: enough to abort the upload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    key: String,
    upload_id: String,
}

/// An open multipart upload with its marker. Aborted (and the marker deleted) on drop unless
/// completed; see [`OpenUpload::complete`].
pub(crate) struct OpenUpload {
    pub(crate) store: S3Store,
    pub(crate) location: Location,
    pub(crate) key: ArchiveKey,
    pub(crate) object: Key,
    marker: Key,
    pub(crate) upload_id: String,
    finished: bool,
}

impl OpenUpload {
    /// Refuses an existing archive, then opens the multipart upload and records its marker.
    pub(crate) fn begin(store: &S3Store, key: &ArchiveKey) -> Result<Self, StoreError> {
        let location = key.location()?;
        store.refuse_existing(&location)?;
        let object = store.key(&location.artifact());
        let upload_id = store
            .rt
            .block_on(store.s3.create_multipart(&object))
            .map_err(|e| remote(&store.name, "starting the multipart upload", &e))?;
        let marker = store.key(&format!(
            "{UPLOADS_DIR}/{}-{}.json",
            location.id,
            hex(&Sha256::digest(upload_id.as_bytes()))[..16].to_owned()
        ));
        let body = serde_json::to_vec(&Marker {
            key: object.to_string(),
            upload_id: upload_id.clone(),
        })
        .map_err(|e| StoreError::Remote {
            store: store.name.clone(),
            action: "recording the upload".into(),
            detail: e.to_string(),
        })?;
        if let Err(e) = store.put_new(&marker, body) {
            let _ = store
                .rt
                .block_on(store.s3.abort_multipart(&object, &upload_id));
            return Err(e);
        }
        Ok(OpenUpload {
            store: store.clone(),
            location,
            key: key.clone(),
            object,
            marker,
            upload_id,
            finished: false,
        })
    }

    /// A part writer for this upload, in this process.
    pub(crate) fn parts(&self) -> Parts {
        Parts::new(&self.store, self.object.clone(), self.upload_id.clone())
    }

    /// Completes the upload from `parts` (in order) and writes the manifest of an archive of
    /// `bytes` bytes with `sha256`. The object only appears once every part is in; an
    /// existing archive is refused just before. On error the upload is aborted.
    pub(crate) fn complete(
        mut self,
        manifest: &Manifest,
        parts: Vec<PartId>,
        bytes: u64,
        sha256: String,
    ) -> Result<StoredArchive, StoreError> {
        crate::partial::check_manifest(&self.key, manifest)?;
        // Checked again just before the object appears: S3 completes over an existing key.
        self.store.refuse_existing(&self.location)?;
        let (s3, object, id) = (&self.store.s3, &self.object, &self.upload_id);
        self.store
            .rt
            .block_on(s3.complete_multipart(object, id, parts))
            .map_err(|e| remote(&self.store.name, "completing the multipart upload", &e))?;
        self.finished = true;
        // The server's own count of what it holds: parts lost on the way (a list of parts
        // shorter than what was written) never make a backup.
        let held = self.store.rt.block_on(s3.head(object)).map(|m| m.size);
        if held.as_ref().ok() != Some(&bytes) {
            self.take_back();
            return Err(StoreError::Remote {
                store: self.store.name.clone(),
                action: "checking the completed upload".into(),
                detail: match held {
                    Ok(n) => format!(
                        "the bucket holds {n} bytes at {object}, but {bytes} were written; the upload was deleted"
                    ),
                    Err(e) => format!("{e}; the upload was deleted"),
                },
            });
        }
        let (stored, manifest) =
            manifest::finished(manifest, self.location.artifact(), bytes, sha256);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Remote {
            store: self.store.name.clone(),
            action: "encoding the manifest".into(),
            detail: e.to_string(),
        })?;
        let manifest_key = self.store.key(&self.location.manifest_artifact());
        if let Err(e) = self.store.put_new(&manifest_key, json) {
            // An archive without a manifest is invisible to listings: take it back.
            let _ = self.store.rt.block_on(s3.delete(object));
            let _ = self.store.rt.block_on(s3.delete(&self.marker));
            return Err(e);
        }
        // Best effort: a marker of a completed upload is removed by the next sweep.
        let _ = self.store.rt.block_on(s3.delete(&self.marker));
        Ok(stored)
    }

    /// Deletes the completed object again (nothing at its key stays visible), its marker too.
    pub(crate) fn take_back(&self) {
        let _ = self.store.rt.block_on(self.store.s3.delete(&self.object));
        let _ = self.store.rt.block_on(self.store.s3.delete(&self.marker));
    }

    /// Aborts the upload and deletes its marker; a failure leaves the marker for [`sweep`].
    pub(crate) fn abort(mut self) -> Result<(), StoreError> {
        self.finished = true;
        let (s3, object, id) = (&self.store.s3, &self.object, &self.upload_id);
        self.store
            .rt
            .block_on(s3.abort_multipart(object, id))
            .map_err(|e| remote(&self.store.name, "aborting the multipart upload", &e))?;
        self.store
            .rt
            .block_on(s3.delete(&self.marker))
            .map_err(|e| remote(&self.store.name, "deleting the upload's marker", &e))
    }
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (s3, object, id, marker) = (
            self.store.s3.clone(),
            self.object.clone(),
            self.upload_id.clone(),
            self.marker.clone(),
        );
        let abort = async move {
            // Best effort: an upload left open is aborted by the next start's sweep.
            if s3.abort_multipart(&object, &id).await.is_ok() {
                let _ = s3.delete(&marker).await;
            }
        };
        // Dropping may happen on the runtime's own threads, where blocking is not allowed.
        match tokio::runtime::Handle::try_current() {
            Ok(_) => drop(self.store.rt.spawn(abort)),
            Err(_) => self.store.rt.block_on(abort),
        }
    }
}

/// Writes an open upload's parts: full parts go out as they fill, a few at a time, each with
/// its sha256 checksum (the server refuses a part that does not match); counts and hashes
/// every byte.
pub struct Parts {
    store: S3Store,
    object: Key,
    upload_id: String,
    buf: Vec<u8>,
    parts: Vec<Option<PartId>>,
    in_flight: JoinSet<(usize, object_store::Result<PartId>)>,
    hasher: Sha256,
    bytes: u64,
}

impl Parts {
    pub(crate) fn new(store: &S3Store, object: Key, upload_id: String) -> Self {
        Parts {
            store: store.clone(),
            object,
            upload_id,
            buf: Vec::with_capacity(store.part_size),
            parts: Vec::new(),
            in_flight: JoinSet::new(),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Starts uploading the buffered part, waiting first while too many are in flight.
    fn send_part(&mut self) -> Result<(), StoreError> {
        while self.in_flight.len() >= self.store.parts_in_flight {
            self.collect_one()?;
        }
        let payload = PutPayload::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.store.part_size),
        ));
        let idx = self.parts.len();
        self.parts.push(None);
        let (s3, object, id) = (
            self.store.s3.clone(),
            self.object.clone(),
            self.upload_id.clone(),
        );
        self.in_flight.spawn_on(
            async move { (idx, s3.put_part(&object, &id, idx, payload).await) },
            &self.store.rt,
        );
        Ok(())
    }

    /// Waits for one part in flight and records it.
    fn collect_one(&mut self) -> Result<(), StoreError> {
        let Some(joined) = self.store.rt.block_on(self.in_flight.join_next()) else {
            return Ok(());
        };
        let (idx, result) = joined.map_err(|e| StoreError::Remote {
            store: self.store.name.clone(),
            action: "uploading a part".into(),
            detail: e.to_string(),
        })?;
        let part = result.map_err(|e| {
            remote(
                &self.store.name,
                &format!("uploading part {} of {}", idx + 1, self.object),
                &e,
            )
        })?;
        self.parts[idx] = Some(part);
        Ok(())
    }

    /// Uploads what is buffered and waits for every part; returns the parts in order, the
    /// bytes written and their sha256.
    pub fn finish(mut self) -> Result<(Vec<PartId>, u64, String), StoreError> {
        if !self.buf.is_empty() || self.parts.is_empty() {
            // S3 needs at least one part; the last may be smaller than the minimum, even empty.
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one()?;
        }
        let parts = self.parts.iter().flatten().cloned().collect();
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        Ok((parts, self.bytes, sha256))
    }
}

impl Write for Parts {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.store.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == self.store.part_size {
            self.send_part().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts go out when full; a flush must not send a short part in the middle.
        Ok(())
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        self.in_flight.abort_all();
    }
}

/// An archive being uploaded by nkvm itself; see the module docs.
pub(crate) struct Upload {
    // Dropped first: parts in flight stop before the upload is aborted.
    parts: Parts,
    open: OpenUpload,
}

impl Upload {
    /// Refuses an existing archive, then opens the multipart upload and records its marker.
    pub(crate) fn begin(store: &S3Store, key: &ArchiveKey) -> Result<Self, StoreError> {
        let open = OpenUpload::begin(store, key)?;
        let parts = open.parts();
        Ok(Upload { open, parts })
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.parts.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.parts.flush()
    }
}

impl ArchiveWriter for Upload {
    fn bytes_written(&self) -> u64 {
        self.parts.bytes
    }

    fn commit(self: Box<Self>, manifest: &Manifest) -> Result<StoredArchive, StoreError> {
        let Upload { open, parts } = *self;
        // A part failing drops `open`, which aborts the upload.
        let (parts, bytes, sha256) = parts.finish()?;
        open.complete(manifest, parts, bytes, sha256)
    }

    fn abort(self: Box<Self>) -> Result<(), StoreError> {
        let Upload { open, parts } = *self;
        drop(parts);
        open.abort()
    }
}

/// Aborts every upload a marker records and deletes the markers; returns the keys whose
/// uploads were aborted. Run it before any backup to this store starts.
pub(crate) fn sweep(store: &S3Store) -> Result<Vec<PathBuf>, StoreError> {
    let prefix = store.key(UPLOADS_DIR);
    let markers: Vec<Key> = store
        .rt
        .block_on(store.s3.list(Some(&prefix)).collect::<Vec<_>>())
        .into_iter()
        .map(|m| m.map(|m| m.location))
        .collect::<Result<_, _>>()
        .map_err(|e| remote(&store.name, "listing open uploads", &e))?;
    let mut swept = Vec::new();
    for marker in markers {
        let bytes = store.get_small(&marker, "upload marker", 64 * 1024)?;
        if let Ok(m) = serde_json::from_slice::<Marker>(&bytes) {
            let object = Key::from(m.key.as_str());
            match store
                .rt
                .block_on(store.s3.abort_multipart(&object, &m.upload_id))
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(remote(&store.name, "aborting a leftover upload", &e)),
            }
            swept.push(store.shown(&object));
        }
        store
            .rt
            .block_on(store.s3.delete(&marker))
            .map_err(|e| remote(&store.name, "deleting an upload marker", &e))?;
    }
    Ok(swept)
}
