//! Bulk seeding of a large, settled cluster for scale tests and benchmarks (`--seed-scale`).
//!
//! [`seed`] spreads a [`ScaleSpec`]'s PVCs and pods over namespaces `scale-0000`, `scale-0001`…
//! as a real cluster holds them: Deployments with their ReplicaSet and pods (one sharing a
//! ReadWriteMany claim), StatefulSets with a claim per replica, a node-agent DaemonSet (in the
//! first namespace), CronJob → Job → pod chains, bare pods with their own claim, bound claims no
//! pod uses and WaitForFirstConsumer claims still Pending. Every object is stored in the state
//! its controllers would bring it to: pods Running and Ready on `node-a`/`node-b` with
//! container statuses, claims Bound to their PVs with the protection finalizers, owners with
//! `controller: true` references and current statuses, ReplicaSets named `<deployment>-<hash>`
//! as the deployment controller names them. The controllers find nothing to write. Objects go
//! through admission, so they carry the API server's defaults (pods are created as the API
//! server creates them, ServiceAccount token volume included, then given their status).
//!
//! Seeding drops the store's event history (see [`crate::store::Store::drop_history`]): a
//! watch from a resourceVersion before the seed gets 410 Gone.
//!
//! What seeded objects lack:
//! - Processes: seeded pods are Running without having been started (the kubelet only starts
//!   Pending pods), so `exec` into them fails with "container not found" and their logs are
//!   empty. Pods created later, for instance helper pods mounting a seeded claim, run normally.
//! - Events: none are recorded for seeded objects.

use crate::api::create_object;
use crate::cluster::Cluster;
use crate::controllers::{namespaces, owner_status, provisioner, workloads};
use crate::error::ApiError;
use crate::kubelet::scheduler::node_fits;
use crate::meta;
use crate::resources::{ResourceInfo, by_plural, known};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest namespace count [`ScaleSpec::parse`] accepts (names keep four digits).
const MAX_NAMESPACES: usize = 10_000;
/// The largest PVC or pod count [`ScaleSpec::parse`] accepts: ten times the benchmark size,
/// a few GiB of memory.
const MAX_OBJECTS: usize = 200_000;

/// How big a cluster to seed: `namespaces=500,pvcs=10000,pods=20000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleSpec {
    /// Namespaces the objects are spread over.
    pub namespaces: usize,
    /// PersistentVolumeClaims in all namespaces together.
    pub pvcs: usize,
    /// Pods in all namespaces together.
    pub pods: usize,
}

/// A scale spec that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scale {input:?}: {reason}; expected namespaces=N,pvcs=N,pods=N")]
pub struct ScaleSpecError {
    input: String,
    reason: String,
}

impl ScaleSpec {
    /// Parses `namespaces=N,pvcs=N,pods=N` (each key once, in any order).
    pub fn parse(s: &str) -> Result<ScaleSpec, ScaleSpecError> {
        let fail = |reason: String| ScaleSpecError {
            input: s.to_string(),
            reason,
        };
        let (mut namespaces, mut pvcs, mut pods) = (None, None, None);
        for part in s.split(',').map(str::trim) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| fail(format!("{part:?} is not key=value")))?;
            let (slot, max) = match key.trim() {
                "namespaces" => (&mut namespaces, MAX_NAMESPACES),
                "pvcs" => (&mut pvcs, MAX_OBJECTS),
                "pods" => (&mut pods, MAX_OBJECTS),
                other => {
                    return Err(fail(format!(
                        "unknown key {other:?} (the keys are namespaces, pvcs and pods)"
                    )));
                }
            };
            if slot.is_some() {
                return Err(fail(format!("{} is given twice", key.trim())));
            }
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| fail(format!("{part:?}: {value:?} is not a whole number")))?;
            if n > max {
                return Err(fail(format!("{part:?}: at most {max} is supported")));
            }
            *slot = Some(n);
        }
        let required =
            |v: Option<usize>, key: &str| v.ok_or_else(|| fail(format!("{key} is missing")));
        let spec = ScaleSpec {
            namespaces: required(namespaces, "namespaces")?,
            pvcs: required(pvcs, "pvcs")?,
            pods: required(pods, "pods")?,
        };
        if spec.namespaces == 0 {
            return Err(fail("namespaces must be at least 1".into()));
        }
        Ok(spec)
    }

    /// The name of namespace `i`.
    pub fn namespace_name(i: usize) -> String {
        format!("scale-{i:04}")
    }

    /// `total` spread over the namespaces: namespace `i`'s share.
    fn share(&self, total: usize, i: usize) -> usize {
        total / self.namespaces + usize::from(i < total % self.namespaces)
    }
}

impl std::str::FromStr for ScaleSpec {
    type Err = ScaleSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScaleSpec::parse(s)
    }
}

impl fmt::Display for ScaleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "namespaces={},pvcs={},pods={}",
            self.namespaces, self.pvcs, self.pods
        )
    }
}

/// What [`seed`] created, and how long it took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeedReport {
    /// Namespaces.
    pub namespaces: usize,
    /// Deployments (each with one ReplicaSet).
    pub deployments: usize,
    /// ReplicaSets.
    pub replica_sets: usize,
    /// StatefulSets.
    pub stateful_sets: usize,
    /// DaemonSets.
    pub daemon_sets: usize,
    /// CronJobs (each with one running Job).
    pub cron_jobs: usize,
    /// Jobs.
    pub jobs: usize,
    /// Pods, all Running.
    pub pods: usize,
    /// PersistentVolumeClaims.
    pub pvcs: usize,
    /// Claims left Pending (WaitForFirstConsumer, no consumer).
    pub pending_pvcs: usize,
    /// Bound claims no pod uses.
    pub unused_pvcs: usize,
    /// PersistentVolumes (one per bound claim).
    pub pvs: usize,
    /// Wall-clock time of the seeding.
    pub elapsed: Duration,
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} namespaces, {} pods, {} PVCs ({} Pending, {} bound but unused), {} PVs, \
             {} Deployments, {} ReplicaSets, {} StatefulSets, {} DaemonSets, {} CronJobs, {} Jobs \
             in {:.2} s",
            self.namespaces,
            self.pods,
            self.pvcs,
            self.pending_pvcs,
            self.unused_pvcs,
            self.pvs,
            self.deployments,
            self.replica_sets,
            self.stateful_sets,
            self.daemon_sets,
            self.cron_jobs,
            self.jobs,
            self.elapsed.as_secs_f64()
        )
    }
}

/// An object [`seed`] could not store (typically: the namespace was seeded already).
#[derive(Debug, thiserror::Error)]
#[error("seeding {kind} {name:?}: {source}")]
pub struct SeedError {
    kind: &'static str,
    name: String,
    source: ApiError,
}

/// What one namespace holds; claims and pods add up to the namespace's share.
#[derive(Debug, Default, PartialEq, Eq)]
struct NamespacePlan {
    /// The node-agent DaemonSet (one pod per node).
    daemon_set: bool,
    /// Replicas of Deployment `web`, whose pods share one ReadWriteMany claim (0: none).
    web_replicas: usize,
    /// CronJob `backup` with a running Job whose pod has a claim.
    cron_job: bool,
    /// Bare pods `tool-<i>`, each with its own claim.
    tools: usize,
    /// StatefulSets' replicas, one claim per replica.
    stateful_sets: Vec<usize>,
    /// Stateless Deployments' replicas.
    deployments: Vec<usize>,
    /// Bound claims no pod uses.
    unused_claims: usize,
    /// WaitForFirstConsumer claims with no consumer, so Pending.
    pending_claims: usize,
}

/// Largest StatefulSet and Deployment the plan makes (more replicas make more of them).
const MAX_STS_REPLICAS: usize = 3;
const MAX_DEPLOYMENT_REPLICAS: usize = 8;

impl NamespacePlan {
    /// Splits `claims` and `pods` over the workloads; `daemon_pods` go first when set.
    fn new(claims: usize, pods: usize, daemon_pods: usize) -> NamespacePlan {
        let mut plan = NamespacePlan::default();
        // One in twenty claims Pending and one in twenty unused, at least one of each.
        let few = if claims >= 3 { (claims / 20).max(1) } else { 0 };
        plan.pending_claims = few;
        plan.unused_claims = few;
        let (mut claims, mut pods) = (claims - 2 * few, pods);
        if daemon_pods > 0 && pods >= daemon_pods {
            plan.daemon_set = true;
            pods -= daemon_pods;
        }
        if claims > 0 && pods > 0 {
            plan.web_replicas = pods.min(3);
            claims -= 1;
            pods -= plan.web_replicas;
        }
        if claims > 0 && pods > 0 {
            plan.cron_job = true;
            claims -= 1;
            pods -= 1;
        }
        plan.tools = claims.min(pods).min(2);
        claims -= plan.tools;
        pods -= plan.tools;
        while claims > 0 && pods > 0 {
            let replicas = claims.min(pods).min(MAX_STS_REPLICAS);
            plan.stateful_sets.push(replicas);
            claims -= replicas;
            pods -= replicas;
        }
        plan.unused_claims += claims;
        while pods > 0 {
            let replicas = pods.min(MAX_DEPLOYMENT_REPLICAS);
            plan.deployments.push(replicas);
            pods -= replicas;
        }
        plan
    }
}

/// Seeds `spec` into `cluster`; meant for a sandbox about to serve (no watcher sees the flood,
/// the controllers' first pass looks at everything).
pub fn seed(cluster: &Cluster, spec: &ScaleSpec) -> Result<SeedReport, SeedError> {
    let started = Instant::now();
    let mut seeder = Seeder::new(cluster)?;
    let agent = daemon_set_manifest();
    let agent_nodes = seeder.nodes_fitting(&json!({"spec": agent["spec"]["template"]["spec"]}));
    for i in 0..spec.namespaces {
        let daemon_pods = if i == 0 { agent_nodes.len() } else { 0 };
        let plan = NamespacePlan::new(
            spec.share(spec.pvcs, i),
            spec.share(spec.pods, i),
            daemon_pods,
        );
        seeder.namespace(&ScaleSpec::namespace_name(i), &plan, &agent, &agent_nodes)?;
        // Each pod is written twice (created, then Running); the event log would keep the
        // first versions alive, doubling the memory a large seed needs.
        cluster.store.drop_history();
    }
    seeder.report.elapsed = started.elapsed();
    Ok(seeder.report)
}

/// Storage sizes claims cycle through.
const SIZES: [&str; 5] = ["1Gi", "2Gi", "5Gi", "10Gi", "20Gi"];
const STS_NAMES: [&str; 6] = ["db", "queue", "search", "cache", "ledger", "metrics"];
const DEPLOYMENT_NAMES: [&str; 6] = ["api", "worker", "frontend", "auth", "billing", "gateway"];

fn nth_name(names: &[&str], i: usize, fallback: &str) -> String {
    names
        .get(i)
        .map_or_else(|| format!("{fallback}-{i}"), |n| n.to_string())
}

fn container(name: &str, image: &str, mounts: &[(&str, &str)]) -> Value {
    let mounts: Vec<Value> = mounts
        .iter()
        .map(|(volume, path)| json!({"name": volume, "mountPath": path}))
        .collect();
    json!({"name": name, "image": image, "ports": [{"containerPort": 8080}], "volumeMounts": mounts})
}

fn claim_volume(volume: &str, claim: &str) -> Value {
    json!({"name": volume, "persistentVolumeClaim": {"claimName": claim}})
}

fn claim_manifest(name: &str, mode: &str, size: &str, class: Option<&str>) -> Value {
    let mut pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "scale"}},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": size}}},
    });
    if let Some(c) = class {
        pvc["spec"]["storageClassName"] = json!(c);
    }
    pvc
}

fn deployment_manifest(name: &str, replicas: usize, pod_spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    })
}

fn daemon_set_manifest() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "node-agent", "labels": {"app": "node-agent"}},
        "spec": {
            "selector": {"matchLabels": {"app": "node-agent"}},
            "template": {"metadata": {"labels": {"app": "node-agent"}}, "spec": {
                "containers": [container("agent", "busybox:1.36", &[])],
                // Node agents run everywhere, tainted nodes included.
                "tolerations": [{"operator": "Exists"}],
            }},
        },
    })
}

/// The running status the kubelet gives a pod whose containers all started.
fn running_status(pod: &Value, now: &str) -> Value {
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c["name"], "image": c["image"],
                "imageID": format!("docker.io/library/{}@sha256:{}", c["image"].as_str().unwrap_or(""), "0".repeat(64)),
                "containerID": format!("containerd://{}", meta::new_uid().replace('-', "")),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}}, "lastState": {},
            })
        })
        .collect();
    let mut status = json!({});
    for (k, v) in [
        ("phase", json!("Running")),
        ("hostIP", json!("127.0.0.1")),
        ("hostIPs", json!([{"ip": "127.0.0.1"}])),
        ("podIP", json!("127.0.0.1")),
        ("podIPs", json!([{"ip": "127.0.0.1"}])),
        ("startTime", json!(now)),
        (
            "conditions",
            json!([
                condition("PodReadyToStartContainers"),
                condition("Initialized"),
                condition("Ready"),
                condition("ContainersReady"),
                condition("PodScheduled"),
            ]),
        ),
        ("containerStatuses", json!(statuses)),
    ] {
        status[k] = v;
    }
    status
}

/// Object-building state of one [`seed`] run.
struct Seeder<'a> {
    cluster: &'a Cluster,
    now: String,
    /// The StorageClass bound claims use (the default one).
    class: Arc<Value>,
    /// Nodes a pod without tolerations may run on; pods take them in turn.
    nodes: Vec<String>,
    next_node: usize,
    report: SeedReport,
}

impl<'a> Seeder<'a> {
    fn new(cluster: &'a Cluster) -> Result<Self, SeedError> {
        let class_name = crate::api::default_storage_class(cluster).unwrap_or_default();
        let class = cluster
            .store
            .get(known::storage_classes(), "", &class_name)
            .ok_or_else(|| SeedError {
                kind: "StorageClass",
                name: class_name.clone(),
                source: ApiError::not_found("storageclasses.storage.k8s.io", "(default)"),
            })?;
        let mut seeder = Seeder {
            cluster,
            now: meta::now(),
            class,
            nodes: Vec::new(),
            next_node: 0,
            report: SeedReport::default(),
        };
        seeder.nodes = seeder.nodes_fitting(&json!({"spec": {}}));
        if seeder.nodes.is_empty() {
            seeder.nodes = vec!["node-a".into()];
        }
        Ok(seeder)
    }

    /// Schedulable nodes `probe` (a pod) fits on.
    fn nodes_fitting(&self, probe: &Value) -> Vec<String> {
        let (nodes, _) = self.cluster.store.list(known::nodes(), None, None);
        nodes
            .iter()
            .filter(|n| n.pointer("/spec/unschedulable").and_then(Value::as_bool) != Some(true))
            .filter(|n| node_fits(probe, n))
            .map(|n| meta::name(n).to_string())
            .collect()
    }

    fn next_node(&mut self) -> String {
        let node = self.nodes[self.next_node % self.nodes.len()].clone();
        self.next_node += 1;
        node
    }

    /// `obj` validated and defaulted by admission, not stored; with a uid, so dependents can
    /// reference it before it is stored.
    fn admit(
        &self,
        res: &'static ResourceInfo,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<Value, SeedError> {
        let name = meta::name(&obj).to_string();
        let admitted =
            create_object(self.cluster, res, ns, obj, true).map_err(|source| SeedError {
                kind: res.kind,
                name,
                source,
            })?;
        let mut obj = Arc::unwrap_or_clone(admitted);
        // Jobs get their uid from admission (their selector uses it); others here.
        if meta::uid(&obj).is_empty() {
            obj["metadata"]["uid"] = json!(meta::new_uid());
        }
        Ok(obj)
    }

    fn store(&mut self, res: &'static ResourceInfo, obj: Value) -> Result<Arc<Value>, SeedError> {
        let name = format!("{}/{}", meta::namespace(&obj), meta::name(&obj));
        let stored = self
            .cluster
            .store
            .create(res, obj)
            .map_err(|source| SeedError {
                kind: res.kind,
                name,
                source,
            })?;
        self.count(res);
        Ok(stored)
    }

    /// Stores a pod made by [`Seeder::running_pod`]: created as the API server creates pods
    /// (ServiceAccount admission adds the token volume), then given its Running status.
    fn store_pod(&mut self, mut pod: Value) -> Result<(), SeedError> {
        let (ns, name) = (
            meta::namespace(&pod).to_string(),
            meta::name(&pod).to_string(),
        );
        let fail = |source| SeedError {
            kind: "Pod",
            name: format!("{ns}/{name}"),
            source,
        };
        let status = pod["status"].take();
        let created =
            create_object(self.cluster, known::pods(), Some(&ns), pod, false).map_err(fail)?;
        let rv = meta::str_at(&created, "/metadata/resourceVersion").to_string();
        let mut running = Arc::unwrap_or_clone(created);
        // Over what admission set (qosClass).
        for (k, v) in status.as_object().into_iter().flatten() {
            running["status"][k] = v.clone();
        }
        self.cluster
            .store
            .update(known::pods(), running, Some(&rv))
            .map_err(fail)?;
        self.count(known::pods());
        Ok(())
    }

    fn count(&mut self, res: &'static ResourceInfo) {
        let r = &mut self.report;
        let counter = match res.plural {
            "namespaces" => &mut r.namespaces,
            "deployments" => &mut r.deployments,
            "replicasets" => &mut r.replica_sets,
            "statefulsets" => &mut r.stateful_sets,
            "daemonsets" => &mut r.daemon_sets,
            "cronjobs" => &mut r.cron_jobs,
            "jobs" => &mut r.jobs,
            "pods" => &mut r.pods,
            "persistentvolumeclaims" => &mut r.pvcs,
            "persistentvolumes" => &mut r.pvs,
            _ => return,
        };
        *counter += 1;
    }

    /// `pod` in namespace `ns`, bound to `node` (the next one when `None`) and Running: what
    /// its owner's status is computed from, and what [`Seeder::store_pod`] stores (admission
    /// happens there).
    fn running_pod(&mut self, ns: &str, mut pod: Value, node: Option<&str>) -> Value {
        let node = match node {
            Some(n) => n.to_string(),
            None => self.next_node(),
        };
        pod["metadata"]["namespace"] = json!(ns);
        pod["spec"]["nodeName"] = json!(node);
        pod["status"] = running_status(&pod, &self.now);
        pod
    }

    /// Stores `pvc` Bound to a freshly provisioned PV, as the provisioner leaves them.
    fn bound_claim(&mut self, ns: &str, pvc: Value) -> Result<(), SeedError> {
        let mut pvc = self.admit(known::pvcs(), Some(ns), pvc)?;
        pvc["metadata"]["finalizers"] = json!([provisioner::PVC_PROTECTION]);
        let pv_name = format!("pvc-{}", meta::uid(&pvc));
        let draft =
            provisioner::provisioned_volume(&pvc, &self.class, &self.cluster.pv_dir(&pv_name), "");
        provisioner::mark_claim_bound(&mut pvc, &draft, true);
        let pvc = self.store(known::pvcs(), pvc)?;
        // The claim reference carries the stored claim's resourceVersion.
        let pv =
            provisioner::provisioned_volume(&pvc, &self.class, &self.cluster.pv_dir(&pv_name), "");
        let mut pv = self.admit(known::pvs(), None, pv)?;
        pv["metadata"]["finalizers"] = json!([provisioner::PV_PROTECTION]);
        pv["status"] = json!({"phase": "Bound", "lastPhaseTransitionTime": self.now});
        self.store(known::pvs(), pv)?;
        Ok(())
    }

    fn namespace(
        &mut self,
        ns: &str,
        plan: &NamespacePlan,
        agent: &Value,
        agent_nodes: &[String],
    ) -> Result<(), SeedError> {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let namespace = self.admit(known::namespaces(), None, namespace)?;
        self.store(known::namespaces(), namespace)?;
        // Pods need the namespace's default ServiceAccount.
        namespaces::populate(self.cluster, ns);
        if plan.daemon_set {
            self.daemon_set(ns, agent.clone(), agent_nodes)?;
        }
        if plan.web_replicas > 0 {
            self.bound_claim(
                ns,
                claim_manifest("web-shared", "ReadWriteMany", "5Gi", None),
            )?;
            let spec = json!({
                "containers": [container("web", "nginx:1.27", &[("content", "/usr/share/nginx/html")])],
                "volumes": [claim_volume("content", "web-shared")],
            });
            self.deployment(ns, deployment_manifest("web", plan.web_replicas, spec))?;
        }
        if plan.cron_job {
            self.cron_job(ns)?;
        }
        for i in 0..plan.tools {
            self.tool_pod(ns, i)?;
        }
        for (i, replicas) in plan.stateful_sets.iter().enumerate() {
            self.stateful_set(ns, &nth_name(&STS_NAMES, i, "store"), *replicas)?;
        }
        for (i, replicas) in plan.deployments.iter().enumerate() {
            let name = nth_name(&DEPLOYMENT_NAMES, i, "app");
            let spec = json!({"containers": [container(&name, "nginx:1.27", &[])]});
            self.deployment(ns, deployment_manifest(&name, *replicas, spec))?;
        }
        for i in 0..plan.unused_claims {
            let size = SIZES[i % SIZES.len()];
            self.bound_claim(
                ns,
                claim_manifest(&format!("archive-{i}"), "ReadWriteOnce", size, None),
            )?;
            self.report.unused_pvcs += 1;
        }
        for i in 0..plan.pending_claims {
            let mut pvc = claim_manifest(
                &format!("reserved-{i}"),
                "ReadWriteOnce",
                "1Gi",
                Some("wffc"),
            );
            pvc = self.admit(known::pvcs(), Some(ns), pvc)?;
            pvc["metadata"]["finalizers"] = json!([provisioner::PVC_PROTECTION]);
            self.store(known::pvcs(), pvc)?;
            self.report.pending_pvcs += 1;
        }
        Ok(())
    }

    /// A Deployment with its ReplicaSet and Running pods.
    fn deployment(&mut self, ns: &str, manifest: Value) -> Result<(), SeedError> {
        let mut d = self.admit(known::deployments(), Some(ns), manifest)?;
        let template = d["spec"]["template"].clone();
        let hash = meta::short_hash(&template);
        let rs = workloads::new_replica_set(&d, &template, &hash, 1);
        let mut rs = self.admit(known::replica_sets(), Some(ns), rs)?;
        let replicas = rs["spec"]["replicas"].as_u64().unwrap_or(0);
        let mut names = HashSet::new();
        let mut pods = Vec::new();
        while (pods.len() as u64) < replicas {
            let name = format!("{}-{}", meta::name(&rs), meta::random_suffix(5));
            if names.insert(name.clone()) {
                let pod = workloads::pod_from_template(&rs, &rs["spec"]["template"], &name);
                pods.push(Arc::new(self.running_pod(ns, pod, None)));
            }
        }
        rs["status"] = owner_status::replica_set_status(&rs, &pods);
        let rs_name = meta::name(&rs).to_string();
        d["status"] = owner_status::deployment_status(&d, &rs_name, &rs, &[Arc::new(rs.clone())]);
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
        self.store(known::deployments(), d)?;
        self.store(known::replica_sets(), rs)?;
        for pod in pods {
            self.store_pod(Arc::unwrap_or_clone(pod))?;
        }
        Ok(())
    }

    /// A StatefulSet with its headless Service, a Bound claim and a Running pod per replica.
    fn stateful_set(&mut self, ns: &str, name: &str, replicas: usize) -> Result<(), SeedError> {
        let size = SIZES[replicas % SIZES.len()];
        let manifest = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {
                    "containers": [container(name, "postgres:16", &[("data", "/var/lib/data")])],
                }},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
                }}],
            },
        });
        let mut sts = self.admit(known::stateful_sets(), Some(ns), manifest)?;
        let revision = workloads::stateful_set_revision(&sts);
        let template = sts["spec"]["template"].clone();
        let claim_templates = sts["spec"]["volumeClaimTemplates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut pods = Vec::new();
        for ordinal in 0..replicas as i64 {
            let pod = workloads::sts_pod(&sts, &template, &claim_templates, ordinal, &revision);
            pods.push(Arc::new(self.running_pod(ns, pod, None)));
        }
        sts["status"] = owner_status::stateful_set_status(&sts, &pods, 0, &revision);
        let sts = self.store(known::stateful_sets(), sts)?;
        let services = by_plural("", "v1", "services").expect("services are served");
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"clusterIP": "None", "selector": {"app": name}, "ports": [{"name": "db", "port": 5432}]},
        });
        let service = self.admit(services, Some(ns), service)?;
        self.store(services, service)?;
        for ordinal in 0..replicas as i64 {
            for t in &claim_templates {
                self.bound_claim(ns, workloads::claim_from_template(&sts, t, ordinal))?;
            }
        }
        for pod in pods {
            self.store_pod(Arc::unwrap_or_clone(pod))?;
        }
        Ok(())
    }

    /// The node agent: one Running pod per node it tolerates.
    fn daemon_set(&mut self, ns: &str, manifest: Value, nodes: &[String]) -> Result<(), SeedError> {
        let mut ds = self.admit(known::daemon_sets(), Some(ns), manifest)?;
        let template = ds["spec"]["template"].clone();
        let hash = meta::short_hash(&template);
        let mut pods = Vec::new();
        for node in nodes {
            let name = format!("{}-{}", meta::name(&ds), meta::random_suffix(5));
            let pod = workloads::daemon_pod(&ds, &template, &hash, node, &name);
            pods.push(Arc::new(self.running_pod(ns, pod, Some(node))));
        }
        ds["status"] = owner_status::daemon_set_status(&ds, &pods, nodes.len(), &hash);
        self.store(known::daemon_sets(), ds)?;
        for pod in pods {
            self.store_pod(Arc::unwrap_or_clone(pod))?;
        }
        Ok(())
    }

    /// CronJob `backup` with the Job it last started, whose pod is still running.
    fn cron_job(&mut self, ns: &str) -> Result<(), SeedError> {
        let cron_jobs = by_plural("batch", "v1", "cronjobs").expect("cronjobs are served");
        self.bound_claim(
            ns,
            claim_manifest("backup-cache", "ReadWriteOnce", "2Gi", None),
        )?;
        let job_spec = json!({"template": {"spec": {
            "containers": [container("backup", "busybox:1.36", &[("cache", "/cache")])],
            "volumes": [claim_volume("cache", "backup-cache")],
            "restartPolicy": "OnFailure",
        }}});
        let manifest = json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "backup"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": job_spec}},
        });
        let mut cj = self.admit(cron_jobs, Some(ns), manifest)?;
        // The CronJob controller names a Job after its scheduled minute.
        let minute = meta::parse_time(&self.now).unwrap_or(0) / 60;
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": format!("backup-{minute}"), "ownerReferences": [meta::controller_ref(&cj)],
                "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": self.now}},
            "spec": cj["spec"]["jobTemplate"]["spec"],
        });
        let mut job = self.admit(known::jobs(), Some(ns), job)?;
        let pod_name = format!("{}-{}", meta::name(&job), meta::random_suffix(5));
        let pod = workloads::pod_from_template(&job, &job["spec"]["template"], &pod_name);
        let pod = self.running_pod(ns, pod, None);
        job["status"] = owner_status::job_status(&job, &[Arc::new(pod.clone())], &self.now);
        cj["status"] = json!({
            "active": [{"apiVersion": "batch/v1", "kind": "Job", "namespace": ns,
                "name": meta::name(&job), "uid": meta::uid(&job)}],
            "lastScheduleTime": self.now,
        });
        self.store(cron_jobs, cj)?;
        self.store(known::jobs(), job)?;
        self.store_pod(pod)?;
        Ok(())
    }

    /// Bare pod `tool-<i>` (no owner) with its own claim.
    fn tool_pod(&mut self, ns: &str, i: usize) -> Result<(), SeedError> {
        let claim = format!("tool-{i}-data");
        let size = SIZES[i % SIZES.len()];
        self.bound_claim(ns, claim_manifest(&claim, "ReadWriteOnce", size, None))?;
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("tool-{i}"), "labels": {"app": "tool"}},
            "spec": {
                "containers": [container("tool", "busybox:1.36", &[("data", "/data")])],
                "volumes": [claim_volume("data", &claim)],
            },
        });
        let pod = self.running_pod(ns, pod, None);
        self.store_pod(pod)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_spec_parses_in_any_order() {
        let spec = ScaleSpec::parse("pods=20000, namespaces=500,pvcs=10000").unwrap();
        assert_eq!(
            spec,
            ScaleSpec {
                namespaces: 500,
                pvcs: 10_000,
                pods: 20_000
            }
        );
        assert_eq!(spec.to_string().parse::<ScaleSpec>().unwrap(), spec);
    }

    #[test]
    fn scale_spec_errors_name_the_bad_part() {
        let cases = [
            (
                "namespaces=5,pvcs=x,pods=1",
                "\"pvcs=x\": \"x\" is not a whole number",
            ),
            ("namespaces=5,pvc=1,pods=1", "unknown key \"pvc\""),
            ("namespaces=5,pods=1", "pvcs is missing"),
            ("namespaces=5,pvcs=1,pods=1,pods=2", "pods is given twice"),
            ("namespaces=5,pvcs,pods=1", "\"pvcs\" is not key=value"),
            (
                "namespaces=0,pvcs=1,pods=1",
                "namespaces must be at least 1",
            ),
            ("namespaces=5,pvcs=1,pods=9999999", "at most 200000"),
        ];
        for (input, reason) in cases {
            let err = ScaleSpec::parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input}: {err}");
            assert!(err.contains("expected namespaces=N,pvcs=N,pods=N"), "{err}");
        }
    }

    fn totals(plan: &NamespacePlan, daemon_pods: usize) -> (usize, usize) {
        let sts: usize = plan.stateful_sets.iter().sum();
        let claims = usize::from(plan.web_replicas > 0)
            + usize::from(plan.cron_job)
            + plan.tools
            + sts
            + plan.unused_claims
            + plan.pending_claims;
        let pods = if plan.daemon_set { daemon_pods } else { 0 }
            + plan.web_replicas
            + usize::from(plan.cron_job)
            + plan.tools
            + sts
            + plan.deployments.iter().sum::<usize>();
        (claims, pods)
    }

    #[test]
    fn a_namespace_plan_uses_exactly_its_share() {
        for claims in 0..45 {
            for pods in 0..90 {
                for daemon_pods in [0, 2] {
                    let plan = NamespacePlan::new(claims, pods, daemon_pods);
                    assert_eq!(totals(&plan, daemon_pods), (claims, pods), "{plan:?}");
                    assert!(plan.stateful_sets.iter().all(|r| *r <= MAX_STS_REPLICAS));
                }
            }
        }
    }

    #[test]
    fn the_benchmark_namespace_mixes_every_workload() {
        let plan = NamespacePlan::new(20, 40, 0);
        assert_eq!(
            plan,
            NamespacePlan {
                daemon_set: false,
                web_replicas: 3,
                cron_job: true,
                tools: 2,
                stateful_sets: vec![3, 3, 3, 3, 2],
                deployments: vec![8, 8, 4],
                unused_claims: 1,
                pending_claims: 1,
            }
        );
    }

    #[test]
    fn shares_add_up_to_the_total() {
        let spec = ScaleSpec {
            namespaces: 7,
            pvcs: 50,
            pods: 3,
        };
        assert_eq!((0..7).map(|i| spec.share(spec.pvcs, i)).sum::<usize>(), 50);
        assert_eq!((0..7).map(|i| spec.share(spec.pods, i)).sum::<usize>(), 3);
    }
}
