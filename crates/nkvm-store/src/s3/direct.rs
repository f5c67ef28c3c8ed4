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
//!
//! For an encrypted store the target also names the age recipients (public keys only), and
//! the agent uploads an age file it sealed itself ([`DirectWriter`]): the compressed tar never
//! leaves the pod in the clear. Its trailer then reports both the compressed tar's and the age
//! file's size and sha256 ([`DirectSent`]), as an encrypted archive's manifest records them.

use super::upload::{OpenUpload, Parts};
use super::{S3Settings, S3Store};
use crate::encrypted::{Sealing, sealed_manifest};
use crate::layout::ArchiveKey;
use crate::{AgeRecipients, Manifest, StoreError, StoredArchive};
use object_store::multipart::PartId;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
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
    /// The age recipients (public keys) of an encrypted store: the agent uploads an age file
    /// for them. Empty: the compressed tar as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub age_recipients: Vec<String>,
}

impl std::fmt::Debug for DirectTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectTarget")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("part_size", &self.part_size)
            .field("age_recipients", &self.age_recipients)
            .finish_non_exhaustive()
    }
}

impl DirectTarget {
    /// A writer of the archive into the target's upload, driving its requests on `rt` (the
    /// agent's side): it seals the bytes into an age file first when the target names
    /// recipients.
    pub fn writer(&self, rt: Handle) -> Result<DirectWriter, StoreError> {
        let parts = self.parts(rt)?;
        if self.age_recipients.is_empty() {
            return Ok(DirectWriter(Destination::Plain(parts)));
        }
        let recipients = AgeRecipients::parse(&self.age_recipients)
            .map_err(|detail| StoreError::Encrypt { detail })?;
        let sealing = Sealing::new(&recipients, parts)?;
        Ok(DirectWriter(Destination::Sealed(sealing)))
    }

    /// A part writer to the target's upload.
    fn parts(&self, rt: Handle) -> Result<Parts, StoreError> {
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

/// The agent's writer of a direct upload: the compressed tar goes into the upload's parts as
/// it is, or sealed into an age file for an encrypted store.
pub struct DirectWriter(Destination);

/// Where a [`DirectWriter`]'s bytes go.
enum Destination {
    Plain(Parts),
    Sealed(Sealing<Parts>),
}

impl Write for DirectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Destination::Plain(parts) => parts.write(buf),
            Destination::Sealed(sealing) => sealing.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Destination::Plain(parts) => parts.flush(),
            Destination::Sealed(sealing) => sealing.flush(),
        }
    }
}

impl DirectWriter {
    /// Uploads the last part (after the age file's last chunk, when sealed) and reports what
    /// went up.
    pub fn finish(self) -> Result<DirectSent, StoreError> {
        let (parts, bytes, sha256, sealed) = match self.0 {
            Destination::Plain(parts) => {
                let (parts, bytes, sha256) = parts.finish()?;
                (parts, bytes, sha256, None)
            }
            Destination::Sealed(sealing) => {
                let (parts, bytes, sha256) = sealing.finish()?;
                let (parts, stored_bytes, stored_sha256) = parts.finish()?;
                let sealed = SealedBytes {
                    bytes: stored_bytes,
                    sha256: stored_sha256,
                };
                (parts, bytes, sha256, Some(sealed))
            }
        };
        Ok(DirectSent {
            parts: parts.into_iter().map(|p| p.content_id).collect(),
            bytes,
            sha256,
            sealed,
        })
    }
}

/// What the agent uploaded, as its trailer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectSent {
    /// The parts' ETags, in order.
    pub parts: Vec<String>,
    /// The compressed tar's size.
    pub bytes: u64,
    /// The compressed tar's sha256 (lower-case hex).
    pub sha256: String,
    /// The age file's size and sha256, when the agent sealed one (what the bucket holds).
    pub sealed: Option<SealedBytes>,
}

/// An age file's size and sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBytes {
    /// Bytes.
    pub bytes: u64,
    /// sha256 (lower-case hex).
    pub sha256: String,
}

/// An upload opened for an agent to fill; see the module docs. Dropping it aborts the upload.
pub struct DirectUpload {
    open: OpenUpload,
    keys: StaticKeys,
    /// An encrypted store's recipients: the agent must upload an age file for them.
    recipients: Option<AgeRecipients>,
}

impl DirectUpload {
    pub(crate) fn begin(store: &S3Store, key: &ArchiveKey) -> Result<Option<Self>, StoreError> {
        let Some(keys) = store.direct.clone() else {
            return Ok(None);
        };
        let open = OpenUpload::begin(store, key)?;
        Ok(Some(DirectUpload {
            open,
            keys,
            recipients: None,
        }))
    }

    /// The same upload for an encrypted store: the agent seals the archive for `recipients`.
    pub(crate) fn sealed_for(self, recipients: AgeRecipients) -> Self {
        DirectUpload {
            recipients: Some(recipients),
            ..self
        }
    }

    /// Whether the agent must seal the archive (an encrypted store).
    pub fn sealed(&self) -> bool {
        self.recipients.is_some()
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
            age_recipients: self
                .recipients
                .as_ref()
                .map_or_else(Vec::new, AgeRecipients::shown),
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

    /// Completes the upload from what the agent reported, then writes the manifest. The
    /// bucket's own size of the completed object must equal the bytes the agent uploaded;
    /// otherwise it is deleted. An encrypted store's upload must be an age file the agent
    /// sealed, and an unencrypted store's must not be: a mismatch aborts the upload.
    pub fn commit(
        self,
        manifest: &Manifest,
        sent: DirectSent,
    ) -> Result<StoredArchive, StoreError> {
        if sent.parts.is_empty() {
            return self.refuse("the agent reported no uploaded parts");
        }
        let (manifest, bytes, sha256) = match (&self.recipients, sent.sealed) {
            (None, None) => (manifest.clone(), sent.bytes, sent.sha256),
            (Some(recipients), Some(sealed)) => (
                sealed_manifest(manifest, recipients.shown(), sent.bytes, sent.sha256),
                sealed.bytes,
                sealed.sha256,
            ),
            (Some(_), None) => {
                return self.refuse(
                    "the store is encrypted, but the agent reported no age file; the upload was aborted",
                );
            }
            (None, Some(_)) => {
                return self.refuse(
                    "the agent sealed an age file for a store that is not encrypted; the upload was aborted",
                );
            }
        };
        let parts = sent
            .parts
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        self.open.complete(&manifest, parts, bytes, sha256)
    }

    /// Aborts the upload and deletes its marker.
    pub fn abort(self) -> Result<(), StoreError> {
        self.open.abort()
    }

    /// Refuses to complete the upload, aborting it at once rather than on drop: nothing of a
    /// refused upload may stay in the bucket.
    fn refuse(self, detail: &str) -> Result<StoredArchive, StoreError> {
        let error = StoreError::Remote {
            store: self.open.store.name.clone(),
            action: "completing the direct upload".into(),
            detail: detail.into(),
        };
        let _ = self.abort();
        Err(error)
    }
}
