//! PVC discovery: lists claims, pods and the owner kinds (ReplicaSets, Jobs, StatefulSets)
//! page by page with bounded concurrency, keeping only the fields the inventory needs, then
//! resolves every claim's consumers and owner workload in memory.
//!
//! Scope follows the allowlist: everything the credentials can list cluster-wide when it is
//! empty, else namespace by namespace (so namespace-scoped RBAC is enough). Memory stays
//! bounded by a cap on objects in scope; the caller bounds time.

use futures_util::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::ListParams;
use kube::core::{ObjectList, Request};
use nkvm_domain::{Consumer, FailureKind, Owner};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// How to discover.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// Namespaces to look in; empty = all (cluster-wide lists).
    pub namespaces: Vec<String>,
    /// Objects per page.
    pub page_size: u32,
    /// Namespaces listed at once.
    pub concurrency: usize,
    /// Most pods + claims + owners held; more is an error, not an out-of-memory.
    pub max_objects: usize,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            namespaces: Vec::new(),
            page_size: 500,
            concurrency: 8,
            max_objects: 500_000,
        }
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A list was refused.
    #[error(
        "listing {resource} {scope} is forbidden: {message}; grant list on {resource} (the nkvm-cluster-discovery ClusterRole{hint})"
    )]
    Forbidden {
        /// What was listed.
        resource: String,
        /// `across all namespaces` or `in namespace X`.
        scope: String,
        /// The server's message.
        message: String,
        /// Extra advice.
        hint: String,
    },
    /// The cluster holds more than the configured cap.
    #[error(
        "the cluster has more than {limit} objects in scope (claims, pods, owners); narrow --namespaces or raise NKVM_DISCOVERY_MAX_OBJECTS"
    )]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// Any other API failure.
    #[error("listing {resource}: {source}")]
    List {
        /// What was listed.
        resource: String,
        /// Why.
        source: kube::Error,
    },
}

impl nkvm_domain::UserError for DiscoveryError {
    /// The failure kind.
    fn kind(&self) -> FailureKind {
        match self {
            DiscoveryError::Forbidden { .. } => FailureKind::Forbidden,
            DiscoveryError::TooLarge { .. } => FailureKind::InvalidInput,
            DiscoveryError::List { .. } => FailureKind::ClusterUnavailable,
        }
    }
}

/// An ownerReference.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OwnerRef {
    /// Owner kind.
    pub kind: String,
    /// Owner name.
    pub name: String,
    /// Whether it is the controller.
    #[serde(default)]
    pub controller: Option<bool>,
}

/// The metadata the inventory reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Uid.
    #[serde(default)]
    pub uid: String,
    /// Owners.
    #[serde(default)]
    pub owner_references: Vec<OwnerRef>,
    /// Labels (policies select claims by them).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Meta {
    fn controller(&self) -> Option<&OwnerRef> {
        self.owner_references
            .iter()
            .find(|o| o.controller == Some(true))
    }
}

/// A PVC, slimmed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Claim {
    /// Metadata.
    pub metadata: Meta,
    /// Spec fields.
    #[serde(default)]
    pub spec: ClaimSpec,
    /// Status fields.
    #[serde(default)]
    pub status: ClaimStatus,
}

/// PVC spec fields the inventory reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    /// Access modes.
    #[serde(default)]
    pub access_modes: Vec<String>,
    /// StorageClass.
    #[serde(default)]
    pub storage_class_name: Option<String>,
    /// `Filesystem` or `Block`.
    #[serde(default)]
    pub volume_mode: Option<String>,
    /// Bound PV.
    #[serde(default)]
    pub volume_name: Option<String>,
    /// Requested resources.
    #[serde(default)]
    pub resources: Resources,
}

/// `resources.requests`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Resources {
    /// Requests by resource name.
    #[serde(default)]
    pub requests: BTreeMap<String, serde_json::Value>,
}

/// PVC status fields the inventory reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ClaimStatus {
    /// Phase.
    #[serde(default)]
    pub phase: Option<String>,
    /// Capacity by resource name.
    #[serde(default)]
    pub capacity: BTreeMap<String, serde_json::Value>,
}

/// A pod, slimmed to what links it to claims.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PodSlim {
    /// Metadata.
    pub metadata: Meta,
    /// Spec fields.
    #[serde(default)]
    pub spec: PodSpecSlim,
    /// Status fields.
    #[serde(default)]
    pub status: PodStatusSlim,
}

/// Pod spec fields the inventory reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecSlim {
    /// Node.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeSlim>,
}

/// A pod volume, as far as claims go.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSlim {
    /// Volume name.
    pub name: String,
    /// `persistentVolumeClaim.claimName`.
    #[serde(default)]
    pub persistent_volume_claim: Option<ClaimSource>,
    /// A generic ephemeral volume (its claim is `<pod>-<volume>`).
    #[serde(default)]
    pub ephemeral: Option<serde_json::Value>,
}

/// `persistentVolumeClaim` volume source.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSource {
    /// Claim name.
    pub claim_name: String,
}

/// Pod status fields the inventory reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PodStatusSlim {
    /// Phase.
    #[serde(default)]
    pub phase: Option<String>,
}

/// An owner object (ReplicaSet, Job): only its own controller matters.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OwnerObject {
    /// Metadata.
    pub metadata: Meta,
}

/// A StatefulSet with its claim template names.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct StatefulSetSlim {
    /// Metadata.
    pub metadata: Meta,
    /// Spec fields.
    #[serde(default)]
    pub spec: StatefulSetSpecSlim,
}

/// StatefulSet spec fields the inventory reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetSpecSlim {
    /// Claim templates (only their names are read).
    #[serde(default)]
    pub volume_claim_templates: Vec<OwnerObject>,
}

/// Everything discovery listed.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Claims.
    pub claims: Vec<Claim>,
    /// Pods.
    pub pods: Vec<PodSlim>,
    /// ReplicaSets.
    pub replica_sets: Vec<OwnerObject>,
    /// Jobs.
    pub jobs: Vec<OwnerObject>,
    /// StatefulSets.
    pub stateful_sets: Vec<StatefulSetSlim>,
}

fn path(group: &str, resource: &str, namespace: Option<&str>) -> String {
    let base = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}/v1")
    };
    match namespace {
        Some(ns) => format!("{base}/namespaces/{ns}/{resource}"),
        None => format!("{base}/{resource}"),
    }
}

/// Lists one kind in one scope, page by page.
async fn list_all<T: serde::de::DeserializeOwned + Clone>(
    client: &Client,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    opts: &DiscoveryOptions,
) -> Result<Vec<T>, DiscoveryError> {
    let request = Request::new(path(group, resource, namespace));
    let mut params = ListParams::default().limit(opts.page_size);
    let mut items = Vec::new();
    loop {
        let req = request.list(&params).map_err(|e| DiscoveryError::List {
            resource: resource.into(),
            source: kube::Error::BuildRequest(e),
        })?;
        let page: ObjectList<T> = client.request(req).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => DiscoveryError::Forbidden {
                resource: resource.into(),
                scope: namespace.map_or("across all namespaces".into(), |n| {
                    format!("in namespace {n}")
                }),
                message: s.message.clone(),
                hint: if namespace.is_none() {
                    ", or set --namespaces to the namespaces nkvm may use".into()
                } else {
                    String::new()
                },
            },
            other => DiscoveryError::List {
                resource: resource.into(),
                source: other,
            },
        })?;
        items.extend(page.items);
        if items.len() > opts.max_objects {
            return Err(DiscoveryError::TooLarge {
                limit: opts.max_objects,
            });
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

/// Lists one kind in every scope the options name.
async fn list_scoped<T: serde::de::DeserializeOwned + Clone + Send + 'static>(
    client: &Client,
    group: &str,
    resource: &str,
    opts: &DiscoveryOptions,
) -> Result<Vec<T>, DiscoveryError> {
    if opts.namespaces.is_empty() {
        return list_all(client, group, resource, None, opts).await;
    }
    // The futures are made before they enter the stream: a closure inside the stream's type
    // hides their Send-ness from rustc (rust-lang/rust#102211), and callers spawn this.
    let lists: Vec<_> = opts
        .namespaces
        .iter()
        .map(|ns| list_all::<T>(client, group, resource, Some(ns), opts))
        .collect();
    let pages: Vec<Vec<T>> = futures_util::stream::iter(lists)
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect()
        .await?;
    Ok(pages.into_iter().flatten().collect())
}

/// Lists claims, pods and owners in scope.
pub async fn snapshot(
    client: &Client,
    opts: &DiscoveryOptions,
) -> Result<Snapshot, DiscoveryError> {
    let (claims, pods, replica_sets, jobs, stateful_sets) = tokio::try_join!(
        list_scoped::<Claim>(client, "", "persistentvolumeclaims", opts),
        list_scoped::<PodSlim>(client, "", "pods", opts),
        list_scoped::<OwnerObject>(client, "apps", "replicasets", opts),
        list_scoped::<OwnerObject>(client, "batch", "jobs", opts),
        list_scoped::<StatefulSetSlim>(client, "apps", "statefulsets", opts),
    )?;
    let total = claims.len() + pods.len() + replica_sets.len() + jobs.len() + stateful_sets.len();
    if total > opts.max_objects {
        return Err(DiscoveryError::TooLarge {
            limit: opts.max_objects,
        });
    }
    Ok(Snapshot {
        claims,
        pods,
        replica_sets,
        jobs,
        stateful_sets,
    })
}

/// A claim with what the snapshot says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedClaim {
    /// The claim.
    pub claim: Claim,
    /// Pods mounting it.
    pub consumers: Vec<Consumer>,
    /// Owning workload.
    pub owner: Owner,
}

type Key = (String, String);

/// Resolves consumers and owners for every claim of the snapshot (pure; cached per call).
pub fn resolve(snapshot: Snapshot) -> Vec<ResolvedClaim> {
    let workloads = Workloads::new(&snapshot);
    let workload_of = |pod: &Meta| workloads.owner_of(pod);
    let pods_by_key: HashMap<Key, &PodSlim> = snapshot
        .pods
        .iter()
        .map(|p| ((p.metadata.namespace.clone(), p.metadata.name.clone()), p))
        .collect();
    let mut users = claim_users(&snapshot.pods, &workloads);
    let mut resolved = Vec::with_capacity(snapshot.claims.len());
    for claim in &snapshot.claims {
        let key = (
            claim.metadata.namespace.clone(),
            claim.metadata.name.clone(),
        );
        let mounted = users.remove(&key).unwrap_or_default();
        let consumers = mounted
            .iter()
            .map(|(p, _)| Consumer {
                pod: p.metadata.name.clone(),
                node: p.spec.node_name.clone().unwrap_or_default(),
                phase: p.status.phase.clone().unwrap_or_default(),
            })
            .collect();
        let mut owners: Vec<Owner> = mounted.into_iter().map(|(_, o)| o).collect();
        owners.sort();
        owners.dedup();
        let owner = match owners.len() {
            1 => owners.remove(0),
            0 => claim_owner(&claim.metadata, &pods_by_key, &workload_of)
                .or_else(|| template_owner(&snapshot.stateful_sets, &claim.metadata))
                .unwrap_or_else(Owner::unknown),
            _ => Owner::multiple(&owners),
        };
        resolved.push((consumers, owner));
    }
    snapshot
        .claims
        .into_iter()
        .zip(resolved)
        .map(|(claim, (consumers, owner))| ResolvedClaim {
            claim,
            consumers,
            owner,
        })
        .collect()
}

/// The ReplicaSets and Jobs of a snapshot, to name the workload behind a pod.
struct Workloads {
    replica_sets: HashMap<Key, Meta>,
    jobs: HashMap<Key, Meta>,
}

impl Workloads {
    fn new(snapshot: &Snapshot) -> Self {
        let index = |objs: &[OwnerObject]| -> HashMap<Key, Meta> {
            objs.iter()
                .map(|o| {
                    (
                        (o.metadata.namespace.clone(), o.metadata.name.clone()),
                        o.metadata.clone(),
                    )
                })
                .collect()
        };
        Workloads {
            replica_sets: index(&snapshot.replica_sets),
            jobs: index(&snapshot.jobs),
        }
    }

    /// The workload a pod belongs to: its Deployment or CronJob through the ReplicaSet or Job
    /// in between, else its direct controller, else the pod itself.
    fn owner_of(&self, pod: &Meta) -> Owner {
        let Some(c) = pod.controller() else {
            return Owner::new("Pod", &pod.name);
        };
        let key = (pod.namespace.clone(), c.name.clone());
        let parent = match c.kind.as_str() {
            "ReplicaSet" => self.replica_sets.get(&key),
            "Job" => self.jobs.get(&key),
            _ => None,
        };
        match parent.and_then(Meta::controller) {
            Some(grand)
                if matches!(
                    (c.kind.as_str(), grand.kind.as_str()),
                    ("ReplicaSet", "Deployment") | ("Job", "CronJob")
                ) =>
            {
                Owner::new(&grand.kind, &grand.name)
            }
            _ => Owner::new(&c.kind, &c.name),
        }
    }
}

/// Every pod that mounts each claim (directly, or as a generic ephemeral volume), with the
/// pod's workload.
fn claim_users<'a>(
    pods: &'a [PodSlim],
    workloads: &Workloads,
) -> HashMap<Key, Vec<(&'a PodSlim, Owner)>> {
    let mut users: HashMap<Key, Vec<(&PodSlim, Owner)>> = HashMap::new();
    for pod in pods {
        let owner = workloads.owner_of(&pod.metadata);
        for v in &pod.spec.volumes {
            let claim = match (&v.persistent_volume_claim, &v.ephemeral) {
                (Some(src), _) => src.claim_name.clone(),
                (None, Some(_)) => format!("{}-{}", pod.metadata.name, v.name),
                _ => continue,
            };
            users
                .entry((pod.metadata.namespace.clone(), claim))
                .or_default()
                .push((pod, owner.clone()));
        }
    }
    users
}

/// The StatefulSet whose claim template made `claim`. A claim from a template is named
/// `<template>-<set>-<ordinal>`; with the set scaled to zero no pod names it, but the set
/// still owns it.
fn template_owner(stateful_sets: &[StatefulSetSlim], claim: &Meta) -> Option<Owner> {
    stateful_sets
        .iter()
        .filter(|s| s.metadata.namespace == claim.namespace)
        .find_map(|s| {
            s.spec.volume_claim_templates.iter().find_map(|t| {
                let rest = claim
                    .name
                    .strip_prefix(&format!("{}-{}-", t.metadata.name, s.metadata.name))?;
                rest.parse::<u32>()
                    .ok()
                    .map(|_| Owner::new("StatefulSet", &s.metadata.name))
            })
        })
}

/// The owner a claim names itself: a pod (generic ephemeral volumes) resolved to its workload,
/// or a StatefulSet (retention policy Delete).
fn claim_owner(
    claim: &Meta,
    pods: &HashMap<Key, &PodSlim>,
    workload_of: &dyn Fn(&Meta) -> Owner,
) -> Option<Owner> {
    let c = claim
        .controller()
        .or_else(|| claim.owner_references.first())?;
    if c.kind == "Pod" {
        return Some(match pods.get(&(claim.namespace.clone(), c.name.clone())) {
            Some(p) => workload_of(&p.metadata),
            None => Owner::new("Pod", &c.name),
        });
    }
    Some(Owner::new(&c.kind, &c.name))
}

#[cfg(test)]
mod tests;
