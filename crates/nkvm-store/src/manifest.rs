//! The manifest written beside every archive, a contract: enough to list, verify and
//! restore the backup, and to rebuild the history index, without any database.
//!
//! Compatibility: a manifest carries the oldest format version that describes it, so an older
//! nkvm keeps reading what it can: version 1 for plain archives, version 2 for archives that
//! are age files (the `encryption` object, which version 1 readers do not know). A reader
//! accepts every version up to [`FORMAT_VERSION`].

use nkvm_domain::{BackupId, Compression};
use serde::{Deserialize, Serialize};

/// The newest manifest format this nkvm writes and reads.
pub const FORMAT_VERSION: u32 = 2;

/// The format of manifests without encryption, which every nkvm reads.
const PLAIN_FORMAT_VERSION: u32 = 1;

/// What a finished archive is, and the manifest that goes beside it: `template` (the
/// backup's facts) stamped with the format version, the archive's path, size and sha256.
pub(crate) fn finished(
    template: &Manifest,
    artifact: String,
    bytes_stored: u64,
    sha256: String,
) -> (crate::StoredArchive, Manifest) {
    let format_version = if template.encryption.is_some() {
        FORMAT_VERSION
    } else {
        PLAIN_FORMAT_VERSION
    };
    let manifest = Manifest {
        format_version,
        artifact: artifact.clone(),
        bytes_stored,
        sha256: sha256.clone(),
        ..template.clone()
    };
    let stored = crate::StoredArchive {
        artifact,
        bytes_stored,
        sha256,
    };
    (stored, manifest)
}

/// What the store records about one archive, as camelCase JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The manifest format; set by the store on commit.
    pub format_version: u32,
    /// The backup's id, also the archive's file name.
    pub backup_id: BackupId,
    /// The cluster id, unmapped (the directory holds a path-safe form of it).
    pub cluster: String,
    /// The claim's namespace.
    pub namespace: String,
    /// The claim backed up.
    pub pvc: PvcIdentity,
    /// The claim's spec, as needed to recreate it on restore.
    pub pvc_spec: serde_json::Value,
    /// The node the helper pod ran on.
    pub node: String,
    /// RFC 3339 start of the backup.
    pub started_at: String,
    /// RFC 3339 end of the backup.
    pub finished_at: String,
    /// Bytes of tar stream read from the volume.
    pub bytes_read: u64,
    /// Bytes in the archive file; set by the store on commit.
    pub bytes_stored: u64,
    /// Lower-case hex sha256 of the archive file; set by the store on commit.
    pub sha256: String,
    /// How the archive is compressed.
    pub compression: Compression,
    /// The nkvm version that wrote it.
    pub tool_version: String,
    /// The archive's path relative to the store's root; set by the store on commit.
    pub artifact: String,
    /// Set when the stored object is an age file over the compressed tar: then `bytesStored`
    /// and `sha256` describe the age file, and this the compressed tar inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// How the archive left the volume (`agent`, `direct` or `tar`), so a history rebuilt
    /// from manifests shows it; empty in manifests written before it was recorded. Readers
    /// of either format version that do not know it pass over it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_path: String,
}

/// How an archive is encrypted, and what is inside the age file (all of it public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// `age` (an age v1 file).
    pub scheme: String,
    /// The X25519 recipients (`age1...` public keys) the file key was wrapped for.
    pub recipients: Vec<String>,
    /// Bytes of the compressed tar inside the age file.
    pub archive_bytes: u64,
    /// Lower-case hex sha256 of the compressed tar inside the age file.
    pub archive_sha256: String,
}

/// A claim by name and uid; the uid tells a recreated claim of the same name apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcIdentity {
    /// The claim's name.
    pub name: String,
    /// The claim's `metadata.uid`.
    pub uid: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A manifest as the engine would hand it to commit.
    pub(crate) fn sample(id: &str) -> Manifest {
        Manifest {
            format_version: 1,
            backup_id: id.parse().expect("a valid id"),
            cluster: "server:https://127.0.0.1:6443".to_string(),
            namespace: "shop".to_string(),
            pvc: PvcIdentity {
                name: "data".to_string(),
                uid: "5e0c9a52-0000-4000-8000-000000000001".to_string(),
            },
            pvc_spec: json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
            node: "node-a".to_string(),
            started_at: "2026-11-26T01:02:03Z".to_string(),
            finished_at: "2026-11-26T01:02:09Z".to_string(),
            bytes_read: 10240,
            bytes_stored: 0,
            sha256: String::new(),
            compression: Compression::Zstd,
            tool_version: "0.1.0".to_string(),
            artifact: String::new(),
            encryption: None,
            data_path: String::new(),
        }
    }

    #[test]
    fn the_json_uses_the_contract_field_names() {
        let value = serde_json::to_value(sample("20261126T010203Z-deadbeef")).expect("serializes");
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "artifact",
                "backupId",
                "bytesRead",
                "bytesStored",
                "cluster",
                "compression",
                "finishedAt",
                "formatVersion",
                "namespace",
                "node",
                "pvc",
                "pvcSpec",
                "sha256",
                "startedAt",
                "toolVersion"
            ]
        );
        assert_eq!(
            value["pvc"],
            json!({"name": "data", "uid": "5e0c9a52-0000-4000-8000-000000000001"})
        );
        assert_eq!(value["compression"], "zstd");
        assert_eq!(value["formatVersion"], 1);
    }

    #[test]
    fn an_encrypted_manifest_is_format_2_and_says_what_the_age_file_holds() {
        let mut template = sample("20261126T010203Z-deadbeef");
        template.encryption = Some(Encryption {
            scheme: "age".into(),
            recipients: vec!["age1example".into()],
            archive_bytes: 100,
            archive_sha256: "ab".repeat(32),
        });
        let (_, manifest) = finished(&template, "a".into(), 300, "cd".repeat(32));
        assert_eq!(manifest.format_version, 2);
        let value = serde_json::to_value(&manifest).expect("serializes");
        assert_eq!(
            value["encryption"],
            json!({"scheme": "age", "recipients": ["age1example"], "archiveBytes": 100, "archiveSha256": "ab".repeat(32)})
        );
        let (_, plain) = finished(
            &sample("20261126T010203Z-deadbeef"),
            "a".into(),
            1,
            "e".into(),
        );
        assert_eq!(
            plain.format_version, 1,
            "plain archives stay readable by older nkvm"
        );
        let old = serde_json::to_value(&plain).expect("serializes");
        assert!(old.get("encryption").is_none());
        let back: Manifest = serde_json::from_value(old).expect("a version 1 manifest reads");
        assert!(back.encryption.is_none());
    }
}
