//! Inventory records: one per PVC, in the JSON shape the CLI contract fixes (kubectl's
//! camelCase).

use serde::{Deserialize, Serialize};

/// The workload that owns a PVC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// `Deployment`, `StatefulSet`, `CronJob`, `Job`, `DaemonSet`, `ReplicaSet`, `Pod`, another
    /// controller's kind, `Multiple` (several workloads mount it) or `Unknown` (none does).
    pub kind: String,
    /// Workload name; for `Multiple`, the owners as `Kind/name`, comma-separated.
    pub name: String,
}

impl Owner {
    /// An owner of a kind and name.
    pub fn new(kind: &str, name: &str) -> Self {
        Owner {
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }

    /// No workload mounts the claim and nothing else names one.
    pub fn unknown() -> Self {
        Owner {
            kind: "Unknown".into(),
            name: String::new(),
        }
    }

    /// Several distinct workloads mount the claim.
    pub fn multiple(owners: &[Owner]) -> Self {
        let names: Vec<String> = owners
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect();
        Owner {
            kind: "Multiple".into(),
            name: names.join(","),
        }
    }

    /// How tables show it: `Deployment/web`, `Multiple[Deployment/a,Job/b]`, `Unknown`.
    pub fn display(&self) -> String {
        match self.kind.as_str() {
            "Unknown" => "Unknown".into(),
            "Multiple" => format!("Multiple[{}]", self.name),
            _ => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// A pod that mounts a PVC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// Pod name.
    pub pod: String,
    /// Node the pod is on ("" while unscheduled).
    pub node: String,
    /// Pod phase.
    pub phase: String,
}

/// One PVC as the inventory shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcRecord {
    /// Namespace.
    pub namespace: String,
    /// Claim name.
    pub name: String,
    /// Claim uid (history is keyed by it).
    pub uid: String,
    /// `Bound`, `Pending`, `Lost`.
    pub phase: String,
    /// Capacity from status (requested size while unbound), as a quantity string.
    pub capacity: String,
    /// StorageClass name ("" for none).
    pub storage_class: String,
    /// Access modes.
    pub access_modes: Vec<String>,
    /// `Filesystem` or `Block`.
    pub volume_mode: String,
    /// Bound PersistentVolume name ("" while unbound).
    pub volume_name: String,
    /// Owning workload.
    pub owner: Owner,
    /// Pods mounting it.
    pub consumers: Vec<Consumer>,
    /// RFC 3339 time of the last successful backup, if any.
    pub last_successful_backup: Option<String>,
    /// RFC 3339 end of the last backup attempt that did not succeed, when it is newer than the
    /// last success (a claim whose backups now fail is not protected, whatever its last
    /// success says).
    #[serde(default)]
    pub last_failed_backup: Option<String>,
    /// Whether nkvm can back it up now.
    pub backupable: bool,
    /// Why not, when not backupable ("" otherwise).
    pub reason: String,
    /// The claim's labels (policies select claims by them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The short form kubectl prints for an access mode (`RWO`, `ROX`, `RWX`, `RWOP`).
pub fn short_access_mode(mode: &str) -> &str {
    match mode {
        "ReadWriteOnce" => "RWO",
        "ReadOnlyMany" => "ROX",
        "ReadWriteMany" => "RWX",
        "ReadWriteOncePod" => "RWOP",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialize_in_kubectl_camel_case() {
        let r = PvcRecord {
            namespace: "shop".into(),
            name: "data".into(),
            uid: "u".into(),
            phase: "Bound".into(),
            capacity: "1Gi".into(),
            storage_class: "standard".into(),
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: "Filesystem".into(),
            volume_name: "pvc-u".into(),
            owner: Owner::new("Deployment", "web"),
            consumers: vec![Consumer {
                pod: "web-1".into(),
                node: "node-a".into(),
                phase: "Running".into(),
            }],
            last_successful_backup: None,
            last_failed_backup: None,
            backupable: true,
            reason: String::new(),
            labels: Default::default(),
        };
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "storageClass",
            "accessModes",
            "volumeMode",
            "volumeName",
            "lastSuccessfulBackup",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["owner"]["kind"], "Deployment");
    }

    #[test]
    fn owners_display_as_tables_show_them() {
        let m = Owner::multiple(&[Owner::new("Deployment", "a"), Owner::new("Job", "b")]);
        assert_eq!(m.display(), "Multiple[Deployment/a,Job/b]");
        assert_eq!(Owner::unknown().display(), "Unknown");
    }
}
