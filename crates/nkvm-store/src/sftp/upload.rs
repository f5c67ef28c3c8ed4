//! One archive written over SFTP: streamed into a hidden temp file in the claim's directory
//! (a bounded buffer, and russh-sftp's bounded window of writes in flight), synced where the
//! server offers `fsync@openssh.com`, closed, then renamed to its final name with SFTP's
//! rename, which refuses an existing target. The manifest follows the same way. Anything
//! that fails takes the temp file back; what a killed process leaves is swept on the next
//! start ([`super::listing::sweep`]).

use super::SftpStore;
use super::connection::{Connection, is_missing};
use crate::layout::{ArchiveKey, Location, hex};
use crate::manifest::{self, Manifest};
use crate::{ArchiveWriter, StoreError, StoredArchive};
use russh_sftp::client::fs::File;
use russh_sftp::protocol::OpenFlags;
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Bytes gathered before they are handed to the SFTP session (which sends them as a window of
/// up to 16 writes of 32 KiB).
const BUFFER: usize = 256 << 10;

/// How long taking back a failed write may wait for a server that may be gone; what is left
/// is swept on the next start.
const CLEANUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The hidden temp name a file is written under before the rename: the final name, a random
/// part (two writers never share a temp file), and the `.partial` suffix sweeps look for.
fn temp_name(final_name: &str) -> String {
    format!(".{final_name}.{:016x}.partial", rand::random::<u64>())
}

/// Creates `remote` (which must not exist), writes `bytes`, syncs and closes it.
pub(crate) async fn write_new(
    store: &SftpStore,
    conn: &Connection,
    remote: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let mut file = create(store, conn, remote).await?;
    file.write_all(bytes)
        .await
        .map_err(|e| store.error(&format!("writing {remote}"), e))?;
    finish(store, file, remote).await
}

/// Opens a new file for writing, refusing an existing one.
async fn create(store: &SftpStore, conn: &Connection, remote: &str) -> Result<File, StoreError> {
    let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE;
    conn.sftp
        .open_with_flags(remote, flags)
        .await
        .map_err(|e| store.error(&format!("creating {remote}"), e))
}

/// Waits for every write, syncs (`fsync@openssh.com` where offered: russh-sftp sends it on
/// flush) and closes the file.
async fn finish(store: &SftpStore, mut file: File, remote: &str) -> Result<(), StoreError> {
    file.flush()
        .await
        .map_err(|e| store.error(&format!("syncing {remote}"), e))?;
    file.shutdown()
        .await
        .map_err(|e| store.error(&format!("closing {remote}"), e))
}

/// Renames `from` to `to`, which must not exist; SFTP's rename refuses an existing target,
/// and the check before gives that refusal its own error.
async fn rename_new(
    store: &SftpStore,
    conn: &Connection,
    from: &str,
    to: &str,
) -> Result<(), StoreError> {
    if store.exists(conn, to).await? {
        return Err(StoreError::AlreadyExists {
            path: store.shown(to),
        });
    }
    match conn.sftp.rename(from, to).await {
        Ok(()) => Ok(()),
        // Another writer got there between the check and the rename.
        Err(_) if store.exists(conn, to).await.unwrap_or(false) => Err(StoreError::AlreadyExists {
            path: store.shown(to),
        }),
        Err(e) => Err(store.error(&format!("renaming {from} to {to}"), e)),
    }
}

/// Creates the claim's directories under the store's path, level by level.
async fn create_dirs(
    store: &SftpStore,
    conn: &Connection,
    location: &Location,
) -> Result<String, StoreError> {
    let mut relative = String::new();
    for segment in [&location.cluster, &location.namespace, &location.pvc] {
        if !relative.is_empty() {
            relative.push('/');
        }
        relative.push_str(segment);
        let dir = store.remote(&relative);
        if let Err(e) = conn.sftp.create_dir(dir.as_str()).await {
            // It may exist already (SFTP has no distinct status for that): fine if it is a
            // directory now.
            let is_dir = conn
                .sftp
                .metadata(dir.as_str())
                .await
                .is_ok_and(|m| m.file_type() == russh_sftp::protocol::FileType::Dir);
            if !is_dir {
                return Err(store.error(&format!("creating the directory {dir}"), e));
            }
        }
    }
    Ok(store.remote(&relative))
}

/// An archive being written; see the module docs.
pub(crate) struct Upload {
    store: SftpStore,
    conn: Arc<Connection>,
    file: Option<File>,
    location: Location,
    key: ArchiveKey,
    dir: String,
    temp: String,
    buf: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
    finished: bool,
}

impl Upload {
    /// Connects, refuses an existing archive, creates the directories and the temp file.
    pub(crate) fn begin(store: &SftpStore, key: &ArchiveKey) -> Result<Self, StoreError> {
        let location = key.location()?;
        let (conn, dir, temp, file) = store.rt.block_on(async {
            let conn = Arc::new(Connection::open(&store.settings).await?);
            store.check_root(&conn).await?;
            store.refuse_existing(&conn, &location).await?;
            let dir = create_dirs(store, &conn, &location).await?;
            let temp = format!("{dir}/{}", temp_name(&location.archive_name()));
            let file = create(store, &conn, &temp).await?;
            Ok::<_, StoreError>((conn, dir, temp, file))
        })?;
        Ok(Upload {
            store: store.clone(),
            conn,
            file: Some(file),
            location,
            key: key.clone(),
            dir,
            temp,
            buf: Vec::with_capacity(BUFFER),
            hasher: Sha256::new(),
            bytes: 0,
            finished: false,
        })
    }

    /// Hands the buffered bytes to the SFTP session.
    fn send(&mut self) -> Result<(), StoreError> {
        let Some(file) = self.file.as_mut() else {
            return Err(self
                .store
                .error("writing the archive", "the file is closed"));
        };
        let result = self.store.rt.block_on(file.write_all(&self.buf));
        self.buf.clear();
        result.map_err(|e| self.store.error(&format!("writing {}", self.temp), e))
    }

    /// Syncs, closes and renames the archive, then writes its manifest.
    fn complete(&mut self, manifest: &Manifest) -> Result<StoredArchive, StoreError> {
        crate::partial::check_manifest(&self.key, manifest)?;
        self.send()?;
        let file = self.file.take();
        let (stored, manifest) = manifest::finished(
            manifest,
            self.location.artifact(),
            self.bytes,
            hex(&std::mem::take(&mut self.hasher).finalize()),
        );
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| self.store.error("encoding the manifest", e))?;
        let (store, conn) = (&self.store, &self.conn);
        let archive = format!("{}/{}", self.dir, self.location.archive_name());
        store.rt.block_on(async {
            if let Some(file) = file {
                finish(store, file, &self.temp).await?;
            }
            store.refuse_existing(conn, &self.location).await?;
            rename_new(store, conn, &self.temp, &archive).await
        })?;
        self.finished = true;
        let manifest_path = format!("{}/{}", self.dir, self.location.manifest_name());
        let manifest_temp = format!("{}/{}", self.dir, temp_name(&self.location.manifest_name()));
        store.rt.block_on(async {
            let published = async {
                write_new(store, conn, &manifest_temp, &json).await?;
                rename_new(store, conn, &manifest_temp, &manifest_path).await
            };
            let result = published.await;
            if result.is_err() {
                // An archive without a manifest is invisible to listings: take it back.
                let _ = tokio::time::timeout(CLEANUP_TIMEOUT, async {
                    let _ = store.remove(conn, &manifest_temp).await;
                    let _ = store.remove(conn, &archive).await;
                })
                .await;
            }
            conn.close().await;
            result.map(|()| stored)
        })
    }

    /// Closes and removes the temp file.
    fn discard(&mut self) -> Result<(), StoreError> {
        self.finished = true;
        let file = self.file.take();
        let (store, conn, temp) = (&self.store, &self.conn, &self.temp);
        store.rt.block_on(async {
            drop(file);
            let removing = conn.sftp.remove_file(temp.as_str());
            let removed = match tokio::time::timeout(CLEANUP_TIMEOUT, removing).await {
                Err(_) => Err(store.error(&format!("deleting {temp}"), "timed out")),
                Ok(Err(e)) if !is_missing(&e) => Err(store.error(&format!("deleting {temp}"), e)),
                Ok(_) => Ok(()),
            };
            conn.close().await;
            removed
        })
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (BUFFER - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == BUFFER {
            self.send().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // The buffer goes out when full; durability comes with the commit.
        Ok(())
    }
}

impl ArchiveWriter for Upload {
    fn bytes_written(&self) -> u64 {
        self.bytes
    }

    fn commit(mut self: Box<Self>, manifest: &Manifest) -> Result<StoredArchive, StoreError> {
        let result = self.complete(manifest);
        if result.is_err() && !self.finished {
            let _ = self.discard();
        }
        result
    }

    fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.discard()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        drop(self.file.take());
        let (conn, temp) = (self.conn.clone(), self.temp.clone());
        let remove = async move {
            // Best effort: a temp file left behind is removed by the next start's sweep.
            let _ = tokio::time::timeout(CLEANUP_TIMEOUT, conn.sftp.remove_file(temp)).await;
            conn.close().await;
        };
        // Dropping may happen on the runtime's own threads, where blocking is not allowed.
        match tokio::runtime::Handle::try_current() {
            Ok(_) => drop(self.store.rt.spawn(remove)),
            Err(_) => self.store.rt.block_on(remove),
        }
    }
}
