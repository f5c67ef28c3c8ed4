//! The archive store in an S3-compatible bucket, through `object_store`. Keys follow the local
//! layout under the store's prefix (`<prefix><cluster>/<namespace>/<pvc>/<id>.tar.zst` and
//! `<id>.json` beside it). An archive is uploaded as a multipart upload that only becomes an
//! object when completed, after every part arrived; each open upload is recorded by a marker
//! object under `<prefix>.nkvm/uploads/` so a later start can abort what a crash left open
//! (S3's own listing of open uploads is not in `object_store`'s API).
//!
//! The store's methods block (the engine calls them from blocking threads) and drive the
//! requests on the runtime handle the store was built with.

mod direct;
mod listing;
pub(crate) mod profile;
mod upload;

pub use direct::{DirectSent, DirectTarget, DirectUpload, DirectWriter, SealedBytes};
pub use upload::Parts;

use crate::layout::{ArchiveKey, Location};
use crate::local::{MAX_MANIFEST_BYTES, parse_manifest};
use crate::{ArchiveStore, ArchiveWriter, Listing, Manifest, StoreError};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// Where marker objects of open multipart uploads live, under the prefix.
const UPLOADS_DIR: &str = ".nkvm/uploads";

/// How to reach one bucket. Secrets are held only to hand them to the client; `Debug` leaves
/// them out.
#[derive(Clone, Default)]
pub struct S3Settings {
    /// The store's name (for messages).
    pub name: String,
    /// The endpoint URL (`https://s3.example`); `None`: AWS for the region.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when not set).
    pub region: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// Prefix of every key, `""` or ending in `/`.
    pub prefix: String,
    /// Access key id and secret; `None`: the standard AWS environment (keys, web identity,
    /// metadata endpoints).
    pub keys: Option<(String, String)>,
    /// A session token to go with `keys`.
    pub session_token: Option<String>,
    /// A KMS key id for server-side encryption, passed through to the bucket.
    pub sse_kms_key_id: Option<String>,
    /// Bytes per uploaded part (at least 5 MiB, S3's minimum for all but the last part).
    pub part_size: usize,
    /// Parts uploaded at once; memory held is about `part_size * (parts_in_flight + 1)`.
    pub parts_in_flight: usize,
    /// Whether the nkvm agent in a helper pod may upload archives itself, with the store's
    /// static credentials handed to it for the job (see [`DirectUpload`]).
    pub direct_upload: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("keys", &self.keys.as_ref().map(|_| "<from files>"))
            .field("direct_upload", &self.direct_upload)
            .finish_non_exhaustive()
    }
}

/// Default part size: large enough for few requests, small enough to bound memory.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// Default parts in flight.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;

/// An S3-compatible bucket as an archive store.
#[derive(Clone)]
pub struct S3Store {
    name: String,
    url: String,
    endpoint: Option<String>,
    region: Option<String>,
    bucket: String,
    prefix: String,
    part_size: usize,
    parts_in_flight: usize,
    /// The credentials a direct upload hands on; `None`: archives go through nkvm only.
    direct: Option<direct::StaticKeys>,
    s3: Arc<AmazonS3>,
    rt: Handle,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("direct_upload", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

/// The static keys a direct upload may hand on: the entry's (files or profile), else keys in
/// nkvm's environment; none for web identity or instance metadata, which stay with nkvm.
fn static_keys(settings: &S3Settings) -> Option<direct::StaticKeys> {
    if !settings.direct_upload {
        return None;
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (id, secret, token) = match &settings.keys {
        Some((id, secret)) => (id.clone(), secret.clone(), settings.session_token.clone()),
        None => (
            env("AWS_ACCESS_KEY_ID")?,
            env("AWS_SECRET_ACCESS_KEY")?,
            env("AWS_SESSION_TOKEN"),
        ),
    };
    Some(direct::StaticKeys { id, secret, token })
}

impl S3Store {
    /// A store over the bucket in `settings`, driving requests on `rt`. Makes no request.
    pub fn new(settings: &S3Settings, rt: Handle) -> Result<Self, StoreError> {
        let mut builder = match &settings.keys {
            Some((id, secret)) => AmazonS3Builder::new()
                .with_access_key_id(id)
                .with_secret_access_key(secret),
            // The AWS environment: keys, session token, web identity (IRSA), ECS/EC2 metadata.
            None => AmazonS3Builder::from_env(),
        };
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token);
        }
        let mut client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
            client = client.with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(kms) = &settings.sse_kms_key_id {
            builder = builder.with_sse_kms_encryption(kms);
        }
        let region = settings.region.as_deref().unwrap_or("us-east-1");
        let s3 = builder
            .with_region(region)
            .with_bucket_name(&settings.bucket)
            .with_checksum_algorithm(Checksum::SHA256)
            .with_client_options(client)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| remote(&settings.name, "configuring the S3 client", &e))?;
        let endpoint = settings.endpoint.as_deref().unwrap_or("aws");
        Ok(S3Store {
            name: settings.name.clone(),
            url: format!("s3://{}/{} at {endpoint}", settings.bucket, settings.prefix),
            endpoint: settings.endpoint.clone(),
            region: Some(region.to_string()),
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            direct: static_keys(settings),
            part_size: settings.part_size.max(5 << 20),
            parts_in_flight: settings.parts_in_flight.max(1),
            s3: Arc::new(s3),
            rt,
        })
    }

    /// Where the store is: `s3://bucket/prefix at endpoint`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object key of a path relative to the prefix.
    fn key(&self, relative: &str) -> Key {
        Key::from(format!("{}{relative}", self.prefix))
    }

    /// A key as messages show it.
    fn shown(&self, key: &Key) -> PathBuf {
        PathBuf::from(format!("s3://{}", key.as_ref()))
    }

    /// Whether an object exists at `key`.
    fn exists(&self, key: &Key, action: &str) -> Result<bool, StoreError> {
        match self.rt.block_on(self.s3.head(key)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote(&self.name, action, &e)),
        }
    }

    /// Refuses if an archive or manifest is already at `location`'s keys.
    fn refuse_existing(&self, location: &Location) -> Result<(), StoreError> {
        for relative in [location.artifact(), location.manifest_artifact()] {
            let key = self.key(&relative);
            if self.exists(&key, "checking for an existing object")? {
                return Err(StoreError::AlreadyExists {
                    path: self.shown(&key),
                });
            }
        }
        Ok(())
    }

    /// Reads a whole small object, refusing one larger than `limit` bytes.
    fn get_small(&self, key: &Key, what: &'static str, limit: u64) -> Result<Bytes, StoreError> {
        let result = self.rt.block_on(async {
            let got = self.s3.get(key).await?;
            if got.meta.size > limit {
                return Ok(None);
            }
            got.bytes().await.map(Some)
        });
        match result {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(StoreError::CorruptManifest {
                path: self.shown(key),
                detail: format!("it is larger than {limit} bytes"),
            }),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound {
                what,
                path: self.shown(key),
            }),
            Err(e) => Err(remote(&self.name, "reading", &e)),
        }
    }

    /// Writes a small object, never over an existing one (conditional put where the server
    /// supports it, after a check that refuses an existing key on servers that do not).
    fn put_new(&self, key: &Key, bytes: Vec<u8>) -> Result<(), StoreError> {
        if self.exists(key, "checking for an existing object")? {
            return Err(StoreError::AlreadyExists {
                path: self.shown(key),
            });
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .rt
            .block_on(self.s3.put_opts(key, PutPayload::from(bytes), opts))
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StoreError::AlreadyExists {
                path: self.shown(key),
            }),
            Err(e) => Err(remote(&self.name, "writing", &e)),
        }
    }

    /// Deletes an object; `Ok(false)` if it was not there.
    fn delete_key(&self, key: &Key) -> Result<bool, StoreError> {
        if !self.exists(key, "checking an object before deleting it")? {
            return Ok(false);
        }
        self.rt
            .block_on(self.s3.delete(key))
            .map_err(|e| remote(&self.name, "deleting", &e))?;
        Ok(true)
    }
}

/// A [`StoreError::Remote`] from an `object_store` error. Its text names the request and the
/// server's answer, never the credentials.
fn remote(store: &str, action: &str, e: &object_store::Error) -> StoreError {
    StoreError::Remote {
        store: store.to_string(),
        action: action.to_string(),
        detail: e.to_string(),
    }
}

/// A blocking reader over an object's body, pulling chunks on the store's runtime.
struct BodyReader {
    rt: Handle,
    body: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rt.block_on(self.body.next()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl ArchiveStore for S3Store {
    fn begin(&self, key: &ArchiveKey) -> Result<Box<dyn ArchiveWriter>, StoreError> {
        Ok(Box::new(upload::Upload::begin(self, key)?))
    }

    fn open(&self, artifact: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        Ok(self.open_sized(artifact)?.0)
    }

    fn open_sized(
        &self,
        artifact: &str,
    ) -> Result<(Box<dyn Read + Send>, Option<u64>), StoreError> {
        let location = Location::parse(artifact)?;
        let key = self.key(&location.artifact());
        let got = self.rt.block_on(self.s3.get(&key)).map_err(|e| match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                what: "archive",
                path: self.shown(&key),
            },
            e => remote(&self.name, "reading the archive", &e),
        })?;
        let size = got.meta.size;
        let reader = BodyReader {
            rt: self.rt.clone(),
            body: got.into_stream(),
            chunk: Bytes::new(),
        };
        Ok((Box::new(reader), Some(size)))
    }

    fn manifest(&self, artifact: &str) -> Result<Manifest, StoreError> {
        let location = Location::parse(artifact)?;
        let key = self.key(&location.manifest_artifact());
        let bytes = self.get_small(&key, "manifest", MAX_MANIFEST_BYTES)?;
        parse_manifest(&bytes, &self.shown(&key), &location.id)
    }

    fn list_manifests(&self) -> Result<Listing, StoreError> {
        listing::list(self)
    }

    fn sweep_partials(&self) -> Result<Vec<PathBuf>, StoreError> {
        upload::sweep(self)
    }

    fn delete(&self, artifact: &str) -> Result<(), StoreError> {
        let location = Location::parse(artifact)?;
        // The manifest first: an interruption leaves an orphan archive, never a listed backup
        // without its data.
        let manifest = self.delete_key(&self.key(&location.manifest_artifact()))?;
        let archive = self.delete_key(&self.key(&location.artifact()))?;
        if !manifest && !archive {
            return Err(StoreError::NotFound {
                what: "archive",
                path: self.shown(&self.key(&location.artifact())),
            });
        }
        Ok(())
    }

    fn check_writable(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        self.refuse_existing(&key.location()?)
    }

    fn direct_uploads(&self) -> bool {
        self.direct.is_some()
    }

    fn begin_direct(&self, key: &ArchiveKey) -> Result<Option<DirectUpload>, StoreError> {
        DirectUpload::begin(self, key)
    }

    fn probe(&self) -> Result<String, StoreError> {
        let key = self.key(&format!(".nkvm/probe-{:016x}", rand::random::<u64>()));
        let body = b"nkvm probe\n".to_vec();
        self.put_new(&key, body.clone())?;
        let read = self.get_small(&key, "probe object", 1024);
        let deleted = self
            .rt
            .block_on(self.s3.delete(&key))
            .map_err(|e| remote(&self.name, "deleting the probe object", &e));
        if read?.as_ref() != body.as_slice() {
            return Err(StoreError::Remote {
                store: self.name.clone(),
                action: "reading the probe object back".into(),
                detail: "it came back different from what was written".into(),
            });
        }
        deleted?;
        Ok(self.url.clone())
    }
}

#[cfg(test)]
mod tests;
