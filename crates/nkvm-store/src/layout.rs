//! The store's layout, a contract: an archive lives at
//! `<cluster>/<namespace>/<pvc>/<backup id><extension>` under the store's root, its manifest
//! beside it as `<backup id>.json`, and work in progress as hidden `.<name>.partial` files that
//! nothing lists. Everything here is a pure function over names; parsing an artifact path back
//! into a [`Location`] is what keeps callers from naming a file outside the store.

use crate::StoreError;
use nkvm_domain::{BackupId, Compression};
use sha2::{Digest, Sha256};

/// The longest path segment accepted: `NAME_MAX` on Linux filesystems.
const MAX_SEGMENT: usize = 255;

/// The longest cluster segment produced, leaving room for the `.` and `.partial` that temp
/// names of later layout levels might add.
const MAX_CLUSTER_SEGMENT: usize = 200;

/// What temp files end with; together with a leading `.` it marks work in progress.
pub(crate) const PARTIAL_SUFFIX: &str = ".partial";

/// A manifest's extension after the backup id.
pub(crate) const MANIFEST_EXTENSION: &str = ".json";

/// What an age-encrypted archive's name ends with, after its compression's extension.
pub const AGE_EXTENSION: &str = ".age";

/// The compressions, in the order their extensions are tried when parsing a file name.
const COMPRESSIONS: [Compression; 3] = [Compression::Zstd, Compression::Gzip, Compression::None];

/// What a new archive is: the claim it holds, its id and how it is compressed. The store
/// derives the archive's place from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveKey {
    /// The cluster id (a uuid, or `server:https://host:port`); mapped to a safe directory name.
    pub cluster: String,
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's name.
    pub pvc: String,
    /// The backup's id, which is also the archive's file name without extension.
    pub id: BackupId,
    /// How the archive is compressed; decides its extension.
    pub compression: Compression,
    /// Whether the stored object is an age file over the compressed tar (`.age` appended).
    /// Set by the encrypting store wrapper; the engine always asks for a plain archive.
    pub encrypted: bool,
}

impl ArchiveKey {
    /// The artifact path the archive will have, relative to the store's root, `/`-separated.
    pub fn artifact(&self) -> Result<String, StoreError> {
        Ok(self.location()?.artifact())
    }

    /// Where the archive goes, refusing names that are not single safe path segments.
    pub(crate) fn location(&self) -> Result<Location, StoreError> {
        Ok(Location {
            cluster: cluster_segment(&self.cluster),
            namespace: checked_segment("namespace", &self.namespace)?,
            pvc: checked_segment("PVC", &self.pvc)?,
            id: self.id.clone(),
            compression: self.compression,
            encrypted: self.encrypted,
        })
    }
}

/// Maps a cluster id to one readable, safe path segment: `[A-Za-z0-9._-]` kept, anything else
/// replaced by `_`, so `server:https://127.0.0.1:6443` becomes `server_https___127.0.0.1_6443`.
///
/// The mapping is lossy on purpose (readable beats reversible); the manifest keeps the real id.
pub fn cluster_segment(cluster: &str) -> String {
    let mut segment: String = cluster
        .chars()
        .map(|c| if is_segment_char(c) { c } else { '_' })
        .collect();
    // A leading dot would hide the directory from listings (and `.`/`..` would leave it).
    if segment.is_empty() || segment.starts_with('.') {
        segment.insert(0, '_');
    }
    if segment.len() > MAX_CLUSTER_SEGMENT {
        // Keep the readable start and tell long ids with a common prefix apart by a hash of
        // the whole id. Every char is ASCII by now, so cutting at a byte index is safe.
        let digest = hex(&Sha256::digest(cluster.as_bytes()));
        segment.truncate(MAX_CLUSTER_SEGMENT - 17);
        segment.push('-');
        segment.push_str(&digest[..16]);
    }
    segment
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Whether `s` can be one directory level of the store: non-empty, only `[A-Za-z0-9._-]`, not
/// hidden (which also rules out `.` and `..`), and short enough for the filesystem.
pub(crate) fn is_safe_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SEGMENT && !s.starts_with('.') && s.chars().all(is_segment_char)
}

fn checked_segment(what: &'static str, value: &str) -> Result<String, StoreError> {
    if is_safe_segment(value) {
        Ok(value.to_string())
    } else {
        Err(StoreError::InvalidKey {
            what,
            value: value.to_string(),
        })
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// One archive's place in the store: three directory segments and the file name's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// The cluster's directory name.
    pub cluster: String,
    /// The namespace's directory name.
    pub namespace: String,
    /// The claim's directory name.
    pub pvc: String,
    /// The backup id, the file names' base.
    pub id: BackupId,
    /// Decides the archive's extension.
    pub compression: Compression,
    /// Whether the archive is an age file (`.age` after the compression's extension).
    pub encrypted: bool,
}

impl Location {
    /// Parses an artifact path as [`ArchiveKey::artifact`] makes them. Anything else is
    /// refused, which is what keeps `..`, absolute paths and stray files out.
    pub fn parse(artifact: &str) -> Result<Self, StoreError> {
        let invalid = |reason| StoreError::InvalidArtifact {
            artifact: artifact.to_string(),
            reason,
        };
        let parts: Vec<&str> = artifact.split('/').collect();
        let [cluster, namespace, pvc, file] = parts.as_slice() else {
            return Err(invalid(
                "it must be CLUSTER/NAMESPACE/PVC/ARCHIVE, relative to the store",
            ));
        };
        if ![cluster, namespace, pvc].iter().all(|s| is_safe_segment(s)) {
            return Err(invalid(
                "its directories must be plain names of letters, digits, '.', '_' or '-'",
            ));
        }
        let (id, compression, encrypted) = parse_archive_name(file).ok_or_else(|| {
            invalid("its file name must be a backup id and .tar.zst, .tar.gz or .tar (then .age when encrypted)")
        })?;
        Ok(Location {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            pvc: pvc.to_string(),
            id,
            compression,
            encrypted,
        })
    }

    /// The directory, relative to the root.
    pub fn dir(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.namespace, self.pvc)
    }

    /// The archive's file name.
    pub fn archive_name(&self) -> String {
        let age = if self.encrypted { AGE_EXTENSION } else { "" };
        format!("{}{}{age}", self.id, self.compression.extension())
    }

    /// The manifest's file name.
    pub fn manifest_name(&self) -> String {
        format!("{}{MANIFEST_EXTENSION}", self.id)
    }

    /// The archive's artifact path.
    pub fn artifact(&self) -> String {
        format!("{}/{}", self.dir(), self.archive_name())
    }

    /// The manifest's path relative to the root.
    pub fn manifest_artifact(&self) -> String {
        format!("{}/{}", self.dir(), self.manifest_name())
    }
}

/// The temp name a file is written under before it is renamed into place: hidden, and with a
/// suffix no archive or manifest has.
pub(crate) fn partial_name(final_name: &str) -> String {
    format!(".{final_name}{PARTIAL_SUFFIX}")
}

/// Whether a file name is one of our temp files.
pub(crate) fn is_partial_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX)
}

/// `<backup id><extension>[.age]` → its id, compression and whether it is encrypted.
pub(crate) fn parse_archive_name(name: &str) -> Option<(BackupId, Compression, bool)> {
    let (id, extension) = split_id(name)?;
    let (extension, encrypted) = match extension.strip_suffix(AGE_EXTENSION) {
        Some(plain) => (plain, true),
        None => (extension, false),
    };
    let compression = COMPRESSIONS
        .into_iter()
        .find(|c| c.extension() == extension)?;
    Some((id, compression, encrypted))
}

/// `<backup id>.json` → its id.
pub(crate) fn parse_manifest_name(name: &str) -> Option<BackupId> {
    match split_id(name)? {
        (id, MANIFEST_EXTENSION) => Some(id),
        _ => None,
    }
}

fn split_id(name: &str) -> Option<(BackupId, &str)> {
    // Backup ids are 25 ASCII characters (`yyyymmddThhmmssZ-xxxxxxxx`).
    let id = name.get(..25)?.parse().ok()?;
    Some((id, name.get(25..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cluster: &str, namespace: &str, pvc: &str) -> ArchiveKey {
        ArchiveKey {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            pvc: pvc.to_string(),
            id: "20261126T010203Z-deadbeef".parse().expect("a valid id"),
            compression: Compression::Zstd,
            encrypted: false,
        }
    }

    #[test]
    fn a_server_url_cluster_id_becomes_one_readable_segment() {
        let segment = cluster_segment("server:https://127.0.0.1:6443");
        assert_eq!(segment, "server_https___127.0.0.1_6443");
        assert!(is_safe_segment(&segment));
        let uuid = "0b5f4c3e-6a1d-4d2e-9a7b-1c2d3e4f5a6b";
        assert_eq!(cluster_segment(uuid), uuid);
    }

    #[test]
    fn cluster_ids_that_would_hide_or_leave_the_directory_are_made_safe() {
        for hostile in ["", ".", "..", ".hidden", "../../etc", "a/b", "ünïcode"] {
            let segment = cluster_segment(hostile);
            assert!(is_safe_segment(&segment), "{hostile:?} -> {segment:?}");
        }
        assert_eq!(cluster_segment(".."), "_..");
    }

    #[test]
    fn very_long_cluster_ids_are_cut_and_told_apart_by_a_hash() {
        let a = cluster_segment(&format!("server:https://{}a", "x".repeat(400)));
        let b = cluster_segment(&format!("server:https://{}b", "x".repeat(400)));
        assert_eq!(a.len(), MAX_CLUSTER_SEGMENT);
        assert!(a.starts_with("server_https___xxx"));
        assert_ne!(a, b);
        assert!(is_safe_segment(&a));
    }

    #[test]
    fn the_artifact_follows_the_contract_layout() {
        let artifact = key("server:https://h:6443", "shop", "data").artifact();
        assert_eq!(
            artifact.expect("a valid key"),
            "server_https___h_6443/shop/data/20261126T010203Z-deadbeef.tar.zst"
        );
    }

    #[test]
    fn namespaces_and_claims_that_are_not_single_segments_are_refused() {
        for (namespace, pvc) in [
            ("..", "data"),
            ("shop", "a/b"),
            ("", "data"),
            ("shop", ".x"),
        ] {
            let err = key("c", namespace, pvc).artifact().expect_err("refused");
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
        }
    }

    #[test]
    fn artifacts_parse_back_and_anything_else_is_refused() {
        let artifact = "c/shop/data/20261126T010203Z-deadbeef.tar.gz";
        let location = Location::parse(artifact).expect("a valid artifact");
        assert_eq!(location.compression, Compression::Gzip);
        assert_eq!(location.artifact(), artifact);
        assert_eq!(
            location.manifest_artifact(),
            "c/shop/data/20261126T010203Z-deadbeef.json"
        );
        for bad in [
            "../x",
            "/etc/passwd",
            "c/shop/../20261126T010203Z-deadbeef.tar",
            "c/shop/data/../../20261126T010203Z-deadbeef.tar",
            "c/shop/data/20261126T010203Z-deadbeef.json",
            "c/shop/data/.20261126T010203Z-deadbeef.tar.partial",
            "c/shop/data/20261126T010203Z-deadbeef.tar.zst/x",
            "c//data/20261126T010203Z-deadbeef.tar",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_encrypted_archive_ends_in_age_and_parses_back() {
        let mut key = key("c", "shop", "data");
        key.encrypted = true;
        let artifact = key.artifact().expect("a valid key");
        assert_eq!(
            artifact,
            "c/shop/data/20261126T010203Z-deadbeef.tar.zst.age"
        );
        let location = Location::parse(&artifact).expect("parses");
        assert!(location.encrypted);
        assert_eq!(location.compression, Compression::Zstd);
        assert_eq!(location.artifact(), artifact);
        assert_eq!(
            location.manifest_artifact(),
            "c/shop/data/20261126T010203Z-deadbeef.json"
        );
        assert!(Location::parse("c/shop/data/20261126T010203Z-deadbeef.age").is_err());
        assert!(Location::parse("c/shop/data/20261126T010203Z-deadbeef.tar.zst.age.age").is_err());
    }

    #[test]
    fn temp_names_are_hidden_and_never_parse_as_archives() {
        let name = partial_name("20261126T010203Z-deadbeef.tar.zst");
        assert_eq!(name, ".20261126T010203Z-deadbeef.tar.zst.partial");
        assert!(is_partial_name(&name));
        assert!(parse_archive_name(&name).is_none());
        assert!(parse_manifest_name("20261126T010203Z-deadbeef.json").is_some());
        assert!(
            parse_archive_name(&partial_name("20261126T010203Z-deadbeef.tar.zst.age")).is_none()
        );
        assert!(parse_manifest_name("20261126T010203Z-deadbeef.json.partial").is_none());
    }
}
