//! Direct uploads: the nkvm agent in a helper pod uploads an archive's parts to the bucket
//! itself, so the compressed bytes never pass through nkvm's own pod. nkvm opens the multipart
//! upload (after refusing an existing archive) and records its marker as for any upload, hands
//! the agent a [`DirectTarget`] (where to upload, and the store's static credentials), and
//! completes the upload from the parts the agent reports only when the agent's trailer proved
//! the archive whole. Until then nothing is visible under the archive's key; a failed or
//! refused job aborts the upload, and a crash leaves a marker the next sweep aborts.
//!
//! Only stores with static credentials (key files, an AWS profile's keys, or keys in nkvm's
//! environment) can hand them on; web identity and instance metadata stay with nkvm's pod.

use super::upload::{OpenUpload, Parts};
use super::{S3Settings, S3Store};
use crate::layout::ArchiveKey;
use crate::{Manifest, StoreError, StoredArchive};
use object_store::multipart::PartId;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

/// The static credentials a store may hand to a helper pod's agent.
#[derive(Clone)]
pub(crate) struct StaticKeys {
    pub(crate) id: String,
    pub(crate) secret: String,
    pub(crate) token: Option<String>,
}

/// Everything the agent needs to upload one archive's parts, credentials included. It goes to
/// the agent on the exec's stdin, never on its command line (which API server audit logs
/// record) and never into a Kubernetes object. `Debug` leaves the credentials out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectTarget {
    /// The endpoint URL; `None`: AWS for the region.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The object key of the archive.
    pub key: String,
    /// The multipart upload nkvm opened.
    pub upload_id: String,
    /// Bytes per part.
    pub part_size: usize,
    /// Parts uploaded at once.
    pub parts_in_flight: usize,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, with temporary keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for DirectTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectTarget")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl DirectTarget {
    /// A part writer to the target's upload, driving its requests on `rt` (the agent's side).
    pub fn parts(&self, rt: Handle) -> Result<Parts, StoreError> {
        let settings = S3Settings {
            name: format!("s3://{}", self.bucket),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            prefix: String::new(),
            keys: Some((self.access_key_id.clone(), self.secret_access_key.clone())),
            session_token: self.session_token.clone(),
            sse_kms_key_id: None,
            part_size: self.part_size,
            parts_in_flight: self.parts_in_flight,
            direct_upload: false,
        };
        let store = S3Store::new(&settings, rt)?;
        Ok(Parts::new(
            &store,
            object_store::path::Path::from(self.key.as_str()),
            self.upload_id.clone(),
        ))
    }
}

/// An upload opened for an agent to fill; see the module docs. Dropping it aborts the upload.
pub struct DirectUpload {
    open: OpenUpload,
    keys: StaticKeys,
}

impl DirectUpload {
    pub(crate) fn begin(store: &S3Store, key: &ArchiveKey) -> Result<Option<Self>, StoreError> {
        let Some(keys) = store.direct.clone() else {
            return Ok(None);
        };
        let open = OpenUpload::begin(store, key)?;
        Ok(Some(DirectUpload { open, keys }))
    }

    /// What the agent needs (credentials included: hand it to the agent only).
    pub fn target(&self) -> DirectTarget {
        let store = &self.open.store;
        DirectTarget {
            endpoint: store.endpoint.clone(),
            region: store.region.clone(),
            bucket: store.bucket.clone(),
            key: self.open.object.to_string(),
            upload_id: self.open.upload_id.clone(),
            part_size: store.part_size,
            parts_in_flight: store.parts_in_flight,
            access_key_id: self.keys.id.clone(),
            secret_access_key: self.keys.secret.clone(),
            session_token: self.keys.token.clone(),
        }
    }

    /// Where the archive will be, as messages show it.
    pub fn shown(&self) -> String {
        self.open
            .store
            .shown(&self.open.object)
            .display()
            .to_string()
    }

    /// Completes the upload from the agent's parts (their ETags, in order) for an archive of
    /// `bytes` bytes with `sha256` as the agent counted them, then writes the manifest. The
    /// bucket's own size of the completed object must equal `bytes`; otherwise it is deleted.
    pub fn commit(
        self,
        manifest: &Manifest,
        etags: Vec<String>,
        bytes: u64,
        sha256: String,
    ) -> Result<StoredArchive, StoreError> {
        if etags.is_empty() {
            return Err(StoreError::Remote {
                store: self.open.store.name.clone(),
                action: "completing the direct upload".into(),
                detail: "the agent reported no uploaded parts".into(),
            });
        }
        let parts = etags
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        self.open.complete(manifest, parts, bytes, sha256)
    }

    /// Aborts the upload and deletes its marker.
    pub fn abort(self) -> Result<(), StoreError> {
        self.open.abort()
    }
}
