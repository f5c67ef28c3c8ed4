//! The archive store on an SFTP server, through russh and russh-sftp (pure Rust, ring for
//! the crypto). Files follow the local layout under the store's path
//! (`<path>/<cluster>/<namespace>/<pvc>/<id>.tar.zst` and `<id>.json` beside it).
//!
//! Every operation opens its own SSH connection: the server's host key is checked against
//! the store's `known_hosts` file before anything else is sent, then the client
//! authenticates with its key (no other method). An archive is written under a hidden temp
//! name (`.<name>.<random>.partial`), synced with `fsync@openssh.com` where the server
//! offers it, and renamed into place with SFTP's plain rename, which refuses an existing
//! target (OpenSSH links the new name, so it appears whole or not at all).
//!
//! The store's methods block (the engine calls them from blocking threads) and drive the
//! connection on the runtime handle the store was built with.

mod config;
mod connection;
mod known_hosts;
mod listing;
mod upload;

use crate::layout::{ArchiveKey, Location};
use crate::local::{MAX_MANIFEST_BYTES, parse_manifest};
use crate::{ArchiveStore, ArchiveWriter, Listing, Manifest, StoreError};
pub use config::SftpConfig;
use connection::{Connection, is_missing};
use russh::keys::PrivateKey;
use russh_sftp::protocol::FileType;
use std::future::Future;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;

/// How to reach one SFTP server. The private key is held only to authenticate; `Debug`
/// leaves it out.
#[derive(Clone)]
pub struct SftpSettings {
    /// The store's name (for messages).
    pub name: String,
    /// The server's host name or address.
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The client key, decrypted.
    pub key: Arc<PrivateKey>,
    /// Where the key came from (for messages).
    pub key_file: PathBuf,
    /// The OpenSSH `known_hosts` file that vouches for the server's host key.
    pub known_hosts: PathBuf,
    /// The absolute directory on the server that archives go under.
    pub path: String,
}

impl std::fmt::Debug for SftpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpSettings")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("key_file", &self.key_file)
            .field("known_hosts", &self.known_hosts)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Loads an OpenSSH or PEM private key file, with its passphrase if it is encrypted. The
/// error names the file, never its content.
pub fn load_key(
    store: &str,
    path: &std::path::Path,
    passphrase: Option<&str>,
) -> Result<PrivateKey, StoreError> {
    russh::keys::load_secret_key(path, passphrase).map_err(|e| StoreError::Config {
        path: path.to_path_buf(),
        detail: format!(
            "store {store:?}: privateKeyFile cannot be used: {e} (an OpenSSH private key is expected; an encrypted one needs privateKeyPassphraseFile)"
        ),
    })
}

/// An SFTP server's directory as an archive store.
#[derive(Debug, Clone)]
pub struct SftpStore {
    settings: Arc<SftpSettings>,
    url: String,
    rt: Handle,
}

impl SftpStore {
    /// A store on the server in `settings`, driving connections on `rt`. Connects to nothing.
    pub fn new(settings: SftpSettings, rt: Handle) -> Self {
        let url = format!(
            "sftp://{}@{}:{}{}",
            settings.user, settings.host, settings.port, settings.path
        );
        SftpStore {
            settings: Arc::new(settings),
            url,
            rt,
        }
    }

    /// Where the store is: `sftp://user@host:port/path`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The absolute path on the server of a path relative to the store's directory.
    fn remote(&self, relative: &str) -> String {
        let root = self.settings.path.trim_end_matches('/');
        if relative.is_empty() {
            self.settings.path.clone()
        } else {
            format!("{root}/{relative}")
        }
    }

    /// A remote path as messages show it.
    fn shown(&self, remote: &str) -> PathBuf {
        PathBuf::from(format!(
            "sftp://{}:{}{remote}",
            self.settings.host, self.settings.port
        ))
    }

    /// Runs `f` on the store's runtime with a fresh, checked and authenticated connection.
    fn with_connection<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.rt.block_on(async {
            let conn = Arc::new(Connection::open(&self.settings).await?);
            let result = f(conn.clone()).await;
            conn.close().await;
            result
        })
    }

    /// A [`StoreError::Remote`] for an SFTP failure while `action`.
    fn error(&self, action: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Remote {
            store: self.settings.name.clone(),
            action: action.to_string(),
            detail: e.to_string(),
        }
    }

    /// Refuses unless the store's directory exists on the server and is a directory.
    async fn check_root(&self, conn: &Connection) -> Result<(), StoreError> {
        let root = &self.settings.path;
        match conn.sftp.metadata(root.as_str()).await {
            Ok(meta) if meta.file_type() == FileType::Dir => Ok(()),
            Ok(_) => Err(self.error(
                "checking the store's path",
                format!("{root} on the server is not a directory"),
            )),
            Err(e) if is_missing(&e) => Err(self.error(
                "checking the store's path",
                format!(
                    "{root} does not exist on the server: create it, writable by user {:?}",
                    self.settings.user
                ),
            )),
            Err(e) => Err(self.error("checking the store's path", e)),
        }
    }

    /// Whether anything (even a dangling link) is at `remote`.
    async fn exists(&self, conn: &Connection, remote: &str) -> Result<bool, StoreError> {
        match conn.sftp.symlink_metadata(remote).await {
            Ok(_) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(self.error("checking for an existing file", e)),
        }
    }

    /// Refuses if an archive or manifest is already at `location`'s names.
    async fn refuse_existing(
        &self,
        conn: &Connection,
        location: &Location,
    ) -> Result<(), StoreError> {
        for relative in [location.artifact(), location.manifest_artifact()] {
            let remote = self.remote(&relative);
            if self.exists(conn, &remote).await? {
                return Err(StoreError::AlreadyExists {
                    path: self.shown(&remote),
                });
            }
        }
        Ok(())
    }

    /// Reads a whole small file, refusing one larger than `limit` bytes.
    async fn read_small(
        &self,
        conn: &Connection,
        remote: &str,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let file = conn.sftp.open(remote).await.map_err(|e| {
            if is_missing(&e) {
                StoreError::NotFound {
                    what,
                    path: self.shown(remote),
                }
            } else {
                self.error(&format!("opening the {what}"), e)
            }
        })?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| self.error(&format!("reading the {what}"), e))?;
        if bytes.len() as u64 > limit {
            return Err(StoreError::CorruptManifest {
                path: self.shown(remote),
                detail: format!("it is larger than {limit} bytes"),
            });
        }
        Ok(bytes)
    }

    /// Reads and checks the manifest of `location`.
    async fn read_manifest(
        &self,
        conn: &Connection,
        location: &Location,
    ) -> Result<Manifest, StoreError> {
        let remote = self.remote(&location.manifest_artifact());
        let bytes = self
            .read_small(conn, &remote, "manifest", MAX_MANIFEST_BYTES)
            .await?;
        parse_manifest(&bytes, &self.shown(&remote), &location.id)
    }

    /// Removes a file; `Ok(false)` if it was not there.
    async fn remove(&self, conn: &Connection, remote: &str) -> Result<bool, StoreError> {
        match conn.sftp.remove_file(remote).await {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(self.error(&format!("deleting {remote}"), e)),
        }
    }

    /// Writes, reads back and deletes a small probe file in the store's directory.
    async fn probe_on(&self, conn: &Connection) -> Result<(), StoreError> {
        self.check_root(conn).await?;
        let remote = self.remote(&format!(
            ".nkvm-probe-{:016x}.partial",
            rand::random::<u64>()
        ));
        let body = b"nkvm probe\n";
        upload::write_new(self, conn, &remote, body).await?;
        let read = self.read_small(conn, &remote, "probe file", 1024).await;
        let deleted = self.remove(conn, &remote).await;
        if read? != body {
            return Err(self.error(
                "reading the probe file back",
                "it came back different from what was written",
            ));
        }
        deleted.map(|_| ())
    }
}

/// A blocking reader over a remote file, pulling data on the store's runtime. It holds the
/// connection open until dropped.
struct RemoteReader {
    rt: Handle,
    file: russh_sftp::client::fs::File,
    _conn: Arc<Connection>,
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rt.block_on(self.file.read(buf))
    }
}

impl ArchiveStore for SftpStore {
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
        let remote = self.remote(&location.artifact());
        let (file, size, conn) = self.rt.block_on(async {
            let conn = Arc::new(Connection::open(&self.settings).await?);
            let file = conn.sftp.open(remote.as_str()).await.map_err(|e| {
                if is_missing(&e) {
                    StoreError::NotFound {
                        what: "archive",
                        path: self.shown(&remote),
                    }
                } else {
                    self.error("opening the archive", e)
                }
            })?;
            let meta = file
                .metadata()
                .await
                .map_err(|e| self.error("reading the archive's size", e))?;
            if meta.file_type() != FileType::File {
                return Err(StoreError::InvalidArtifact {
                    artifact: artifact.to_string(),
                    reason: "it is not a regular file",
                });
            }
            Ok::<_, StoreError>((file, meta.size, conn))
        })?;
        let reader = RemoteReader {
            rt: self.rt.clone(),
            file,
            _conn: conn,
        };
        Ok((Box::new(reader), size))
    }

    fn manifest(&self, artifact: &str) -> Result<Manifest, StoreError> {
        let location = Location::parse(artifact)?;
        self.with_connection(|conn| async move { self.read_manifest(&conn, &location).await })
    }

    fn list_manifests(&self) -> Result<Listing, StoreError> {
        self.with_connection(|conn| async move { listing::list(self, &conn).await })
    }

    fn sweep_partials(&self) -> Result<Vec<PathBuf>, StoreError> {
        self.with_connection(|conn| async move { listing::sweep(self, &conn).await })
    }

    fn delete(&self, artifact: &str) -> Result<(), StoreError> {
        let location = Location::parse(artifact)?;
        self.with_connection(|conn| async move {
            // The manifest first: an interruption leaves an orphan archive, never a listed
            // backup without its data.
            let manifest = self
                .remove(&conn, &self.remote(&location.manifest_artifact()))
                .await?;
            let archive_path = self.remote(&location.artifact());
            let archive = self.remove(&conn, &archive_path).await?;
            if !manifest && !archive {
                return Err(StoreError::NotFound {
                    what: "archive",
                    path: self.shown(&archive_path),
                });
            }
            Ok(())
        })
    }

    fn check_writable(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        let location = key.location()?;
        self.with_connection(|conn| async move {
            self.check_root(&conn).await?;
            self.refuse_existing(&conn, &location).await
        })
    }

    fn probe(&self) -> Result<String, StoreError> {
        self.with_connection(|conn| async move { self.probe_on(&conn).await })?;
        Ok(self.url.clone())
    }
}

#[cfg(test)]
mod tests;
