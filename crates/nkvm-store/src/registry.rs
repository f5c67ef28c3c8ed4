//! The named stores: `local` (the directory store) always, and each entry of the stores file.
//! Every backup names the store it went to, and everything that reads an archive again asks
//! this registry for that store by name.

use crate::config::{self, LOCAL, StoreConfig};
use crate::s3::{DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT, S3Settings, S3Store};
use crate::{ArchiveStore, SftpStore, StoreError};
use std::path::Path;
use std::sync::Arc;
use tokio::runtime::Handle;

/// What kind of store a name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A local directory (`NKVM_BACKUP_DIR`).
    Local,
    /// An S3-compatible bucket.
    S3,
    /// A directory on an SFTP server.
    Sftp,
}

impl StoreKind {
    /// The kind's name, as the stores file and `nkvm stores` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Local => "local",
            StoreKind::S3 => "s3",
            StoreKind::Sftp => "sftp",
        }
    }
}

/// One named store.
#[derive(Clone)]
pub struct NamedStore {
    /// Its name (`local`, or the stores file's).
    pub name: String,
    /// Its kind.
    pub kind: StoreKind,
    /// Where it is (a directory, or `s3://bucket/prefix at endpoint`); no credentials.
    pub location: String,
    /// The store.
    pub store: Arc<dyn ArchiveStore>,
}

impl std::fmt::Debug for NamedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedStore")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Every configured store, `local` first.
#[derive(Debug, Clone)]
pub struct Stores {
    stores: Vec<NamedStore>,
}

impl Stores {
    /// Only the local store, at `location` (its directory, for display).
    pub fn local(store: Arc<dyn ArchiveStore>, location: impl Into<String>) -> Self {
        Stores {
            stores: vec![NamedStore {
                name: LOCAL.into(),
                kind: StoreKind::Local,
                location: location.into(),
                store,
            }],
        }
    }

    /// The local directory store at `dir` plus the entries of the stores file `file`, if
    /// given; remote stores drive their requests on `rt`. Makes no network request.
    pub fn open(dir: &Path, file: Option<&Path>, rt: &Handle) -> Result<Self, StoreError> {
        Self::open_with_env(dir, file, rt, &|k| std::env::var(k).ok())
    }

    /// [`open`](Self::open) reading environment variables through `var`.
    pub(crate) fn open_with_env(
        dir: &Path,
        file: Option<&Path>,
        rt: &Handle,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, StoreError> {
        let local = Arc::new(crate::LocalStore::new(dir));
        let mut stores = Stores::local(local, dir.display().to_string());
        if let Some(file) = file {
            for entry in config::load(file)? {
                let mut named = build(&entry.store, rt, var)?;
                if let Some(encryption) = &entry.encryption {
                    named.store = encrypted(named.store, &encryption.age_recipients, file)?;
                }
                stores.stores.push(named);
            }
        }
        Ok(stores)
    }

    /// Adds a store, refusing a name already taken.
    pub fn add(&mut self, store: NamedStore) -> Result<(), StoreError> {
        if self.stores.iter().any(|s| s.name == store.name) {
            return Err(StoreError::Config {
                path: "<stores>".into(),
                detail: format!("store name {:?} is used twice", store.name),
            });
        }
        self.stores.push(store);
        Ok(())
    }

    /// The store named `name`.
    pub fn get(&self, name: &str) -> Result<&NamedStore, StoreError> {
        // Rows written before stores had names have none: they are local.
        let name = if name.is_empty() { LOCAL } else { name };
        self.stores
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| StoreError::UnknownStore {
                name: name.into(),
                known: self.names().join(", "),
            })
    }

    /// The archive store named `name`.
    pub fn store(&self, name: &str) -> Result<Arc<dyn ArchiveStore>, StoreError> {
        Ok(self.get(name)?.store.clone())
    }

    /// The local directory store.
    pub fn local_store(&self) -> Arc<dyn ArchiveStore> {
        self.stores[0].store.clone()
    }

    /// Every store, `local` first.
    pub fn all(&self) -> &[NamedStore] {
        &self.stores
    }

    /// Every store's name.
    pub fn names(&self) -> Vec<String> {
        self.stores.iter().map(|s| s.name.clone()).collect()
    }
}

/// `store` wrapped so its archives are age files for `recipients`.
fn encrypted(
    store: Arc<dyn ArchiveStore>,
    recipients: &[String],
    file: &Path,
) -> Result<Arc<dyn ArchiveStore>, StoreError> {
    let recipients =
        crate::AgeRecipients::parse(recipients).map_err(|detail| StoreError::Config {
            path: file.to_path_buf(),
            detail,
        })?;
    Ok(Arc::new(crate::EncryptedStore::new(store, recipients)))
}

/// A store from its stores-file entry, reading the credential files it names; `var` reads
/// the environment.
fn build(
    entry: &StoreConfig,
    rt: &Handle,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<NamedStore, StoreError> {
    match entry {
        StoreConfig::S3(c) => {
            let mut session_token = match &c.session_token_file {
                Some(p) => Some(config::read_secret(&c.name, "sessionTokenFile", p)?),
                None => None,
            };
            let keys = match (&c.access_key_id_file, &c.secret_access_key_file) {
                (Some(id), Some(secret)) => Some((
                    config::read_secret(&c.name, "accessKeyIdFile", id)?,
                    config::read_secret(&c.name, "secretAccessKeyFile", secret)?,
                )),
                // No files named: the AWS shared files' profile, when the environment has no
                // keys of its own (else object_store reads the environment).
                _ => match crate::s3::profile::keys(var) {
                    Ok(Some(p)) => {
                        session_token = session_token.or(p.token);
                        Some((p.id, p.secret))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        return Err(StoreError::Config {
                            path: e.file,
                            detail: format!("store {:?}: {}", c.name, e.detail),
                        });
                    }
                },
            };
            let settings = S3Settings {
                name: c.name.clone(),
                endpoint: c.endpoint.clone(),
                region: c.region.clone(),
                bucket: c.bucket.clone(),
                prefix: c.prefix.clone(),
                keys,
                session_token,
                sse_kms_key_id: c.sse_kms_key_id.clone(),
                part_size: c.part_size_mib.map_or(DEFAULT_PART_SIZE, |m| m << 20),
                parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
                direct_upload: c.direct_upload.unwrap_or(true),
            };
            let store = S3Store::new(&settings, rt.clone())?;
            Ok(NamedStore {
                name: c.name.clone(),
                kind: StoreKind::S3,
                location: store.url().to_string(),
                store: Arc::new(store),
            })
        }
        StoreConfig::Local(c) => Ok(NamedStore {
            name: c.name.clone(),
            kind: StoreKind::Local,
            location: c.path.display().to_string(),
            store: Arc::new(crate::LocalStore::new(&c.path)),
        }),
        StoreConfig::Sftp(c) => {
            let store = SftpStore::new(c.settings()?, rt.clone());
            Ok(NamedStore {
                name: c.name.clone(),
                kind: StoreKind::Sftp,
                location: store.url().to_string(),
                store: Arc::new(store),
            })
        }
    }
}
