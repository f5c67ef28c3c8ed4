//! The manifest written beside every archive, a contract: enough to list, verify and
//! restore the backup, and to rebuild the history index, without any database.

use nkvm_domain::{BackupId, Compression};
use serde::{Deserialize, Serialize};

/// The manifest format this nkvm writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a finished archive is, and the manifest that goes beside it: `template` (the
/// backup's facts) stamped with the format version, the archive's path, size and sha256.
pub(crate) fn finished(
    template: &Manifest,
    artifact: String,
    bytes_stored: u64,
    sha256: String,
) -> (crate::StoredArchive, Manifest) {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
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
            format_version: FORMAT_VERSION,
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
}
