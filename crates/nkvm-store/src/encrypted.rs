//! Client-side encryption with age (X25519 recipients): [`EncryptedStore`] wraps any store so
//! that what it keeps under an archive's name is an age file over the compressed tar
//! (`<id>.tar.zst.age`), while the manifest beside it stays plaintext and says what is inside
//! (the recipients' public keys, the compressed tar's size and sha256). Reading gives the
//! stored bytes as they are; [`AgeIdentity::decrypt`] turns them back into the compressed tar.
//!
//! The identity (private key) never passes through here on the way in: only public keys are
//! configured for a store, so a store that writes encrypted archives cannot read them back.
//!
//! [`Sealing`] (the age stream with the plaintext's count and hash) is shared with direct
//! uploads, where the agent in the helper pod seals the archive itself (`s3::direct`).

use crate::layout::{ArchiveKey, hex};
use crate::manifest::{Encryption, Manifest};
use crate::{ArchiveStore, ArchiveWriter, DirectUpload, Listing, StoreError, StoredArchive};
use age::stream::StreamWriter;
use age::x25519;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `scheme` of an age-encrypted archive's manifest.
pub const SCHEME: &str = "age";

/// The largest identity file read: age-keygen writes about 200 bytes per key.
const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// The X25519 recipients (public keys) archives are encrypted to.
#[derive(Clone)]
pub struct AgeRecipients {
    keys: Vec<x25519::Recipient>,
}

impl AgeRecipients {
    /// Parses `age1...` public keys; at least one. The error names the key that is wrong.
    pub fn parse(keys: &[String]) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("ageRecipients must list at least one age1... public key".into());
        }
        let keys = keys
            .iter()
            .map(|k| {
                k.trim().parse::<x25519::Recipient>().map_err(|e| {
                    format!("ageRecipients: {k:?} is not an age X25519 public key (age1...): {e}")
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(AgeRecipients { keys })
    }

    /// The public keys, as `age1...` strings (what manifests record).
    pub fn shown(&self) -> Vec<String> {
        self.keys.iter().map(ToString::to_string).collect()
    }
}

impl std::fmt::Debug for AgeRecipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.shown()).finish()
    }
}

/// An age identity file's X25519 keys. Never displayed: `Debug` shows only the file's path.
pub struct AgeIdentity {
    path: PathBuf,
    keys: Vec<x25519::Identity>,
}

impl std::fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeIdentity")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AgeIdentity {
    /// Reads an identity file as `age-keygen` writes it: `AGE-SECRET-KEY-1...` lines, `#`
    /// comments and blank lines. Errors name the file and the line number, never its text.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let error = |detail: String| StoreError::Identity {
            path: path.to_path_buf(),
            detail,
        };
        let file = std::fs::File::open(path).map_err(|e| error(format!("cannot be read: {e}")))?;
        let mut text = String::new();
        file.take(MAX_IDENTITY_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| error(format!("cannot be read as text: {e}")))?;
        if text.len() as u64 > MAX_IDENTITY_FILE {
            return Err(error(format!(
                "is larger than {MAX_IDENTITY_FILE} bytes, so it is no age identity file"
            )));
        }
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.parse::<x25519::Identity>().map_err(|_| {
                error(format!(
                    "line {} is not an age X25519 identity (AGE-SECRET-KEY-1...), as age-keygen writes them",
                    n + 1
                ))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(error(
                "holds no AGE-SECRET-KEY-1... line; create one with age-keygen".into(),
            ));
        }
        Ok(AgeIdentity {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The file it was read from (safe to show).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses, before anything is read, an archive none of this identity's keys can open:
    /// its public keys must be among the archive's recipients.
    pub fn check_opens(&self, encryption: &Encryption) -> Result<(), StoreError> {
        let public: Vec<String> = self
            .keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect();
        if public.iter().any(|p| encryption.recipients.contains(p)) {
            return Ok(());
        }
        Err(StoreError::Identity {
            path: self.path.clone(),
            detail: format!(
                "matches none of the archive's recipients ({}); its public key is {}: use the identity of one of those recipients",
                encryption.recipients.join(", "),
                public.join(", ")
            ),
        })
    }

    /// The compressed tar inside an age file read from `stored`.
    pub fn decrypt(
        &self,
        stored: Box<dyn Read + Send>,
    ) -> Result<Box<dyn Read + Send>, StoreError> {
        let failed = |e: age::DecryptError| StoreError::Decrypt {
            detail: e.to_string(),
        };
        let decryptor = age::Decryptor::new(stored).map_err(failed)?;
        let reader = decryptor
            .decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
            .map_err(failed)?;
        Ok(Box::new(reader))
    }
}

/// A store whose archives are age files for `recipients`; everything else is `inner`'s.
pub struct EncryptedStore {
    inner: Arc<dyn ArchiveStore>,
    recipients: AgeRecipients,
}

impl EncryptedStore {
    /// Wraps `inner`: archives begun from now on are encrypted to `recipients`.
    pub fn new(inner: Arc<dyn ArchiveStore>, recipients: AgeRecipients) -> Self {
        EncryptedStore { inner, recipients }
    }
}

/// The key under which the inner store keeps the age file.
fn encrypted_key(key: &ArchiveKey) -> ArchiveKey {
    ArchiveKey {
        encrypted: true,
        ..key.clone()
    }
}

impl ArchiveStore for EncryptedStore {
    fn begin(&self, key: &ArchiveKey) -> Result<Box<dyn ArchiveWriter>, StoreError> {
        let inner = self.inner.begin(&encrypted_key(key))?;
        Ok(Box::new(EncryptingWriter {
            sealing: Sealing::new(&self.recipients, inner)?,
            recipients: self.recipients.shown(),
        }))
    }

    fn open(&self, artifact: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        self.inner.open(artifact)
    }

    fn open_sized(
        &self,
        artifact: &str,
    ) -> Result<(Box<dyn Read + Send>, Option<u64>), StoreError> {
        self.inner.open_sized(artifact)
    }

    fn manifest(&self, artifact: &str) -> Result<Manifest, StoreError> {
        self.inner.manifest(artifact)
    }

    fn list_manifests(&self) -> Result<Listing, StoreError> {
        self.inner.list_manifests()
    }

    fn sweep_partials(&self) -> Result<Vec<PathBuf>, StoreError> {
        self.inner.sweep_partials()
    }

    fn delete(&self, artifact: &str) -> Result<(), StoreError> {
        self.inner.delete(artifact)
    }

    fn check_writable(&self, key: &ArchiveKey) -> Result<(), StoreError> {
        self.inner.check_writable(&encrypted_key(key))
    }

    fn probe(&self) -> Result<String, StoreError> {
        self.inner.probe()
    }

    fn age_recipients(&self) -> Vec<String> {
        self.recipients.shown()
    }

    fn direct_uploads(&self) -> bool {
        self.inner.direct_uploads()
    }

    fn begin_direct(&self, key: &ArchiveKey) -> Result<Option<DirectUpload>, StoreError> {
        Ok(self
            .inner
            .begin_direct(&encrypted_key(key))?
            .map(|upload| upload.sealed_for(self.recipients.clone())))
    }
}

/// An age file for some recipients written into `inner`, with the plaintext (the compressed
/// tar) counted and hashed on the way: the figures an encrypted archive's manifest records
/// beside the age file's own.
pub(crate) struct Sealing<W: Write> {
    stream: StreamWriter<W>,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Sealing<W> {
    /// Starts the age file (its header) in `inner`.
    pub(crate) fn new(recipients: &AgeRecipients, inner: W) -> Result<Self, StoreError> {
        let keys = recipients.keys.iter().map(|k| k as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(keys).map_err(|e| StoreError::Encrypt {
            detail: e.to_string(),
        })?;
        let stream = encryptor
            .wrap_output(inner)
            .map_err(|e| StoreError::Encrypt {
                detail: format!("writing the age header: {e}"),
            })?;
        Ok(Sealing {
            stream,
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    /// Ends the age file (the last chunk and its tag; without them it would not decrypt) and
    /// hands `inner` back, with the plaintext's size and sha256.
    pub(crate) fn finish(self) -> Result<(W, u64, String), StoreError> {
        let inner = self.stream.finish().map_err(|e| StoreError::Encrypt {
            detail: format!("finishing the age file: {e}"),
        })?;
        Ok((inner, self.bytes, hex(&self.hasher.finalize())))
    }
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// The manifest of an age file for `recipients` over a compressed tar of `bytes` bytes with
/// `sha256`.
pub(crate) fn sealed_manifest(
    manifest: &Manifest,
    recipients: Vec<String>,
    bytes: u64,
    sha256: String,
) -> Manifest {
    Manifest {
        encryption: Some(Encryption {
            scheme: SCHEME.into(),
            recipients,
            archive_bytes: bytes,
            archive_sha256: sha256,
        }),
        ..manifest.clone()
    }
}

/// Encrypts what is written into the inner store's writer; the inner writer hashes the age
/// file it stores.
struct EncryptingWriter {
    sealing: Sealing<Box<dyn ArchiveWriter>>,
    recipients: Vec<String>,
}

impl Write for EncryptingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sealing.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sealing.flush()
    }
}

impl ArchiveWriter for EncryptingWriter {
    fn bytes_written(&self) -> u64 {
        self.sealing.bytes
    }

    fn commit(self: Box<Self>, manifest: &Manifest) -> Result<StoredArchive, StoreError> {
        let EncryptingWriter {
            sealing,
            recipients,
        } = *self;
        // A failure drops the inner writer, which discards the archive.
        let (inner, bytes, sha256) = sealing.finish()?;
        inner.commit(&sealed_manifest(manifest, recipients, bytes, sha256))
    }

    fn abort(self: Box<Self>) -> Result<(), StoreError> {
        // The stream hands its writer back only when finished; if even that fails, dropping
        // the inner writer discards the archive all the same.
        match self.sealing.finish() {
            Ok((inner, _, _)) => inner.abort(),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::LocalStore;
    use crate::manifest::tests::sample;
    use age::secrecy::ExposeSecret;
    use nkvm_domain::Compression;

    const ID: &str = "20261126T010203Z-deadbeef";

    fn key() -> ArchiveKey {
        ArchiveKey {
            cluster: "server:https://127.0.0.1:6443".into(),
            namespace: "shop".into(),
            pvc: "data".into(),
            id: ID.parse().expect("a valid id"),
            compression: Compression::Zstd,
            encrypted: false,
        }
    }

    /// A fresh identity written to `dir` as age-keygen would, and its public key.
    pub(crate) fn identity_file(dir: &Path, name: &str) -> (PathBuf, String) {
        let identity = x25519::Identity::generate();
        let public = identity.to_public().to_string();
        let path = dir.join(name);
        let text = format!(
            "# created: 2026-12-07T00:00:00Z\n# public key: {public}\n{}\n",
            identity.to_string().expose_secret()
        );
        std::fs::write(&path, text).expect("write the identity");
        (path, public)
    }

    #[test]
    fn an_archive_is_stored_as_an_age_file_that_the_identity_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (identity_path, public) = identity_file(dir.path(), "key.txt");
        let inner = Arc::new(LocalStore::new(dir.path().join("store")));
        let recipients = AgeRecipients::parse(std::slice::from_ref(&public)).expect("valid");
        let store = EncryptedStore::new(inner.clone(), recipients);
        assert_eq!(store.age_recipients(), std::slice::from_ref(&public));
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut writer = store.begin(&key()).expect("begin");
        writer.write_all(&plain).expect("write");
        let stored = writer.commit(&sample(ID)).expect("commit");
        assert!(stored.artifact.ends_with(&format!("{ID}.tar.zst.age")));

        let mut raw = Vec::new();
        store
            .open(&stored.artifact)
            .expect("open")
            .read_to_end(&mut raw)
            .expect("read");
        assert!(raw.starts_with(b"age-encryption.org/v1\n"));
        assert_eq!(stored.sha256, hex(&Sha256::digest(&raw)));
        let manifest = inner.manifest(&stored.artifact).expect("a plain manifest");
        assert_eq!(manifest.format_version, 2);
        assert_eq!(
            (manifest.bytes_stored, &manifest.sha256),
            (raw.len() as u64, &stored.sha256)
        );
        let encryption = manifest.encryption.clone().expect("says it is encrypted");
        assert_eq!(encryption.recipients, [public]);
        assert_eq!(encryption.archive_bytes, plain.len() as u64);
        assert_eq!(encryption.archive_sha256, hex(&Sha256::digest(&plain)));

        let identity = AgeIdentity::load(&identity_path).expect("loads");
        identity
            .check_opens(&encryption)
            .expect("its own recipient");
        let mut opened = Vec::new();
        identity
            .decrypt(store.open(&stored.artifact).expect("open"))
            .expect("decrypts")
            .read_to_end(&mut opened)
            .expect("read");
        assert_eq!(opened, plain);
        let listed = store.list_manifests().expect("lists");
        assert_eq!(listed.archives.len(), 1, "{:?}", listed.warnings);
        assert_eq!(listed.archives[0].0, stored.artifact);
    }

    #[test]
    fn an_identity_of_another_recipient_is_refused_naming_the_file_not_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, public) = identity_file(dir.path(), "theirs.txt");
        let (other, _) = identity_file(dir.path(), "mine.txt");
        let identity = AgeIdentity::load(&other).expect("loads");
        let encryption = Encryption {
            scheme: SCHEME.into(),
            recipients: vec![public.clone()],
            archive_bytes: 0,
            archive_sha256: String::new(),
        };
        let e = identity
            .check_opens(&encryption)
            .expect_err("not a recipient");
        let text = e.to_string();
        assert!(
            text.contains("mine.txt") && text.contains(&public),
            "{text}"
        );
        let secret = std::fs::read_to_string(&other).expect("read");
        let secret = secret.lines().last().expect("a key line");
        assert!(!text.contains(secret) && !format!("{identity:?}").contains(secret));
    }

    #[test]
    fn a_file_that_is_no_identity_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.txt");
        std::fs::write(&path, "# comment\nAGE-SECRET-KEY-1NOTAKEY\n").expect("write");
        let text = AgeIdentity::load(&path).expect_err("refused").to_string();
        assert!(
            text.contains("line 2") && !text.contains("NOTAKEY"),
            "{text}"
        );
        std::fs::write(&path, "# only comments\n").expect("write");
        let text = AgeIdentity::load(&path).expect_err("refused").to_string();
        assert!(text.contains("age-keygen"), "{text}");
        let missing = AgeIdentity::load(&dir.path().join("absent")).expect_err("refused");
        assert!(missing.to_string().contains("absent"), "{missing}");
    }

    #[test]
    fn an_aborted_encrypted_archive_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, public) = identity_file(dir.path(), "key.txt");
        let inner = Arc::new(LocalStore::new(dir.path().join("store")));
        let store = EncryptedStore::new(inner, AgeRecipients::parse(&[public]).expect("valid"));
        let mut writer = store.begin(&key()).expect("begin");
        writer.write_all(b"partial").expect("write");
        writer.abort().expect("abort");
        assert!(store.list_manifests().expect("lists").archives.is_empty());
        assert!(
            store.sweep_partials().expect("sweeps").is_empty(),
            "nothing left to sweep"
        );
    }
}
