//! The table of kinds the sandbox serves: group, version, names, scope and subresources.
//!
//! Everything that routes, discovers or validates by kind reads this one table, so adding a kind
//! here makes it listable, watchable and visible to `kubectl api-resources`.

/// One served resource type (a "kind" and its REST names).
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Object kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Plural REST name, e.g. `pods`.
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts, e.g. `po`.
    pub short_names: &'static [&'static str],
    /// Whether the kind has a `/status` subresource (updates to the main resource keep status).
    pub has_status: bool,
    /// Whether the kind is only created (reviews): no storage, no list or watch.
    pub virtual_only: bool,
}

impl ResourceInfo {
    /// `apiVersion` as written in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `group/plural` (or just `plural` for core), used in messages like `pods "x" not found`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Singular name, e.g. `pod` (always the lower-cased kind for the built-in kinds).
    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    /// The `kind` of a list of these objects.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Index of this entry in [`RESOURCES`]; the store keys its tables by it.
    pub fn index(&'static self) -> usize {
        RESOURCES
            .iter()
            .position(|r| std::ptr::eq(r, self))
            .expect("resource comes from the table")
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    has_status: bool,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version,
        kind,
        plural,
        namespaced,
        short_names,
        has_status,
        virtual_only: false,
    }
}

/// Every kind the sandbox serves.
pub static RESOURCES: &[ResourceInfo] = &[
    kind("", "v1", "Namespace", "namespaces", false, &["ns"], true),
    kind("", "v1", "Node", "nodes", false, &["no"], true),
    kind(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        &["pv"],
        true,
    ),
    kind(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        true,
    ),
    kind("", "v1", "Pod", "pods", true, &["po"], true),
    kind("", "v1", "Event", "events", true, &["ev"], false),
    kind("", "v1", "Service", "services", true, &["svc"], true),
    kind("", "v1", "Endpoints", "endpoints", true, &["ep"], false),
    kind("", "v1", "ConfigMap", "configmaps", true, &["cm"], false),
    kind("", "v1", "Secret", "secrets", true, &[], false),
    kind(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        false,
    ),
    kind(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        true,
        &["quota"],
        true,
    ),
    kind(
        "",
        "v1",
        "LimitRange",
        "limitranges",
        true,
        &["limits"],
        false,
    ),
    kind(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        true,
    ),
    kind(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        true,
    ),
    kind(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        true,
    ),
    kind("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true),
    kind(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
        &[],
        false,
    ),
    kind("batch", "v1", "Job", "jobs", true, &[], true),
    kind("batch", "v1", "CronJob", "cronjobs", true, &["cj"], true),
    // Stored and served, not enforced: pods in the sandbox share the host's network.
    kind(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
        false,
    ),
    // Leader election: updates carry the resourceVersion read and conflict (409) when stale,
    // as on a real API server.
    kind(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        false,
    ),
    kind(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        &["sc"],
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        false,
    ),
];

/// Looks a kind up by group and plural name.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a kind up by its `kind` name and group.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The groups served, in the order discovery lists them (core first).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The well-known resources.
pub mod known {
    use super::{ResourceInfo, by_plural};

    fn get(group: &str, plural: &str) -> &'static ResourceInfo {
        by_plural(group, "v1", plural).expect("kind is in the table")
    }
    /// Namespaces.
    pub fn namespaces() -> &'static ResourceInfo {
        get("", "namespaces")
    }
    /// Nodes.
    pub fn nodes() -> &'static ResourceInfo {
        get("", "nodes")
    }
    /// Pods.
    pub fn pods() -> &'static ResourceInfo {
        get("", "pods")
    }
    /// PersistentVolumeClaims.
    pub fn pvcs() -> &'static ResourceInfo {
        get("", "persistentvolumeclaims")
    }
    /// PersistentVolumes.
    pub fn pvs() -> &'static ResourceInfo {
        get("", "persistentvolumes")
    }
    /// Events.
    pub fn events() -> &'static ResourceInfo {
        get("", "events")
    }
    /// ServiceAccounts.
    pub fn service_accounts() -> &'static ResourceInfo {
        get("", "serviceaccounts")
    }
    /// ConfigMaps.
    pub fn config_maps() -> &'static ResourceInfo {
        get("", "configmaps")
    }
    /// Secrets.
    pub fn secrets() -> &'static ResourceInfo {
        get("", "secrets")
    }
    /// StorageClasses.
    pub fn storage_classes() -> &'static ResourceInfo {
        get("storage.k8s.io", "storageclasses")
    }
    /// Deployments.
    pub fn deployments() -> &'static ResourceInfo {
        get("apps", "deployments")
    }
    /// ReplicaSets.
    pub fn replica_sets() -> &'static ResourceInfo {
        get("apps", "replicasets")
    }
    /// StatefulSets.
    pub fn stateful_sets() -> &'static ResourceInfo {
        get("apps", "statefulsets")
    }
    /// DaemonSets.
    pub fn daemon_sets() -> &'static ResourceInfo {
        get("apps", "daemonsets")
    }
    /// Jobs.
    pub fn jobs() -> &'static ResourceInfo {
        get("batch", "jobs")
    }
}
