//! Workload controllers: Deployment → ReplicaSet → Pod, StatefulSet → Pods + PVCs from
//! volumeClaimTemplates, DaemonSet → one pod per eligible node, Job → Pods until complete.
//! Status fields are kept the way `kubectl rollout status` and `kubectl wait` read them.

use super::owner_status::{
    daemon_set_status, deployment_status, is_job_active, is_ready, is_suspended, is_terminal,
    job_status, replica_set_status, replicas, stateful_set_status,
};
use super::{Scope, list_in};
use crate::api::{create_object, delete_object};
use crate::cluster::Cluster;
use crate::meta;
use crate::resources::{ResourceInfo, known};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// One pass over every workload.
pub fn reconcile(cluster: &Cluster) {
    reconcile_in(cluster, &None);
}

/// One pass over the workloads in `scope`.
pub fn reconcile_in(cluster: &Cluster, scope: &Scope) {
    // Pods and ReplicaSets are read once and grouped by controller: with thousands of owners,
    // listing each owner's namespace again would dominate a pass.
    let (pods, pods_read_at) = list_in(&cluster.store, known::pods(), scope);
    let (sets, sets_read_at) = list_in(&cluster.store, known::replica_sets(), scope);
    let pass = Pass {
        cluster,
        pods: Dependents::new(known::pods(), &pods, pods_read_at),
        replica_sets: Dependents::new(known::replica_sets(), &sets, sets_read_at),
    };
    let owners = |res| active(cluster, res, scope);
    for d in owners(known::deployments()) {
        deployment(&pass, &d);
    }
    for rs in owners(known::replica_sets()) {
        replica_set(&pass, &rs);
    }
    for s in owners(known::stateful_sets()) {
        stateful_set(&pass, &s);
    }
    for ds in owners(known::daemon_sets()) {
        daemon_set(&pass, &ds);
    }
    for j in owners(known::jobs()) {
        job(&pass, &j);
    }
}

/// The cluster and what one pass read up front.
struct Pass<'a> {
    cluster: &'a Cluster,
    pods: Dependents<'a>,
    replica_sets: Dependents<'a>,
}

/// Objects of one kind grouped by the uid of their controller, as read at `read_at`.
struct Dependents<'a> {
    res: &'static ResourceInfo,
    read_at: u64,
    by_controller: HashMap<&'a str, Vec<&'a Arc<Value>>>,
}

impl<'a> Dependents<'a> {
    fn new(res: &'static ResourceInfo, all: &'a [Arc<Value>], read_at: u64) -> Self {
        let mut by_controller: HashMap<&str, Vec<&Arc<Value>>> = HashMap::new();
        for o in all {
            if let Some(uid) = meta::controller_uid(o) {
                by_controller.entry(uid).or_default().push(o);
            }
        }
        Dependents {
            res,
            read_at,
            by_controller,
        }
    }
}

impl Pass<'_> {
    /// Objects of `res` in the owner's namespace that the owner controls, in name order.
    fn owned(&self, res: &'static ResourceInfo, owner: &Value) -> Vec<Arc<Value>> {
        let (ns, uid) = (meta::namespace(owner), meta::uid(owner));
        let grouped = [&self.pods, &self.replica_sets]
            .into_iter()
            .find(|g| std::ptr::eq(g.res, res));
        // The groups hold only while no object of their kind changed (this pass creates and
        // deletes some); then the store is asked, as it always was.
        if let Some(g) = grouped
            && self.cluster.store.last_change(res) <= g.read_at
        {
            return g
                .by_controller
                .get(uid)
                .into_iter()
                .flatten()
                .filter(|o| meta::namespace(o) == ns)
                .map(|o| Arc::clone(o))
                .collect();
        }
        let (all, _) = self.cluster.store.list(res, Some(ns), None);
        all.into_iter()
            .filter(|o| meta::controller_uid(o) == Some(uid))
            .collect()
    }
}

fn active(cluster: &Cluster, res: &'static ResourceInfo, scope: &Scope) -> Vec<Arc<Value>> {
    let (all, _) = list_in(&cluster.store, res, scope);
    all.into_iter().filter(|o| !meta::is_deleting(o)).collect()
}

/// A pod from `template`, controlled by `owner`.
pub(crate) fn pod_from_template(owner: &Value, template: &Value, name: &str) -> Value {
    let mut md = template.get("metadata").cloned().unwrap_or(json!({}));
    md["name"] = json!(name);
    md["namespace"] = json!(meta::namespace(owner));
    md["ownerReferences"] = json!([meta::controller_ref(owner)]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": template["spec"]})
}

fn create_pod(cluster: &Cluster, owner: &Value, pod: Value) {
    let kind = owner["kind"].as_str().unwrap_or("");
    match create_object(
        cluster,
        known::pods(),
        Some(meta::namespace(owner)),
        pod,
        false,
    ) {
        Ok(p) => crate::events::record(
            cluster,
            owner,
            "Normal",
            "SuccessfulCreate",
            &format!("Created pod: {}", meta::name(&p)),
            &controller_name(kind),
        ),
        Err(e) => crate::events::record(
            cluster,
            owner,
            "Warning",
            "FailedCreate",
            &format!("Error creating: {}", e.message),
            &controller_name(kind),
        ),
    }
}

fn controller_name(kind: &str) -> String {
    format!("{}-controller", kind.to_lowercase())
}

/// Merges `status` into the status of `obj` (as read this pass), writing only on a change.
fn set_status(cluster: &Cluster, res: &'static ResourceInfo, obj: &Value, status: Value) {
    // Comparing with what the pass read saves cloning every owner each pass; a write since
    // then wakes another pass, which sees it.
    let current = obj.get("status").and_then(Value::as_object);
    let unchanged = current.is_some_and(|current| {
        status
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| current.get(k) == Some(v))
    });
    if unchanged {
        return;
    }
    let _ = cluster
        .store
        .modify(res, meta::namespace(obj), meta::name(obj), |o| {
            let mut merged = o
                .get("status")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or(json!({}));
            for (k, v) in status.as_object().into_iter().flatten() {
                merged[k] = v.clone();
            }
            o["status"] = merged;
            Ok(())
        });
}

fn deployment(pass: &Pass, d: &Value) {
    let cluster = pass.cluster;
    let ns = meta::namespace(d);
    let empty = json!({});
    let template = meta::at(d, "/spec/template").unwrap_or(&empty);
    let hash = meta::short_hash(template);
    let rs_name = format!("{}-{hash}", meta::name(d));
    let sets = pass.owned(known::replica_sets(), d);
    let want = replicas(d);
    let revision = sets
        .iter()
        .filter_map(|rs| {
            meta::str_at(
                rs,
                "/metadata/annotations/deployment.kubernetes.io~1revision",
            )
            .parse::<i64>()
            .ok()
        })
        .max()
        .unwrap_or(0);
    let current = sets.iter().find(|rs| meta::name(rs) == rs_name).cloned();
    let new_rs = match current {
        Some(rs) => {
            set_replicas(cluster, &rs, want);
            rs
        }
        None => {
            let rs = new_replica_set(d, template, &hash, revision + 1);
            match create_object(cluster, known::replica_sets(), Some(ns), rs, false) {
                Ok(rs) => {
                    crate::events::record(
                        cluster,
                        d,
                        "Normal",
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {rs_name} from 0 to {want}"),
                        "deployment-controller",
                    );
                    rs
                }
                Err(_) => return,
            }
        }
    };
    // Old ReplicaSets go to zero at once (no surge pacing; see the crate docs).
    for old in sets.iter().filter(|rs| meta::name(rs) != rs_name) {
        set_replicas(cluster, old, 0);
    }
    let sets = pass.owned(known::replica_sets(), d);
    let status = deployment_status(d, &rs_name, &new_rs, &sets);
    set_status(cluster, known::deployments(), d, status);
    let rev = json!(meta::str_at(
        &new_rs,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    ));
    if d.pointer("/metadata/annotations/deployment.kubernetes.io~1revision") == Some(&rev)
        && d["metadata"]["annotations"].is_object()
    {
        return;
    }
    let _ = cluster
        .store
        .modify(known::deployments(), ns, meta::name(d), |o| {
            if !o["metadata"]["annotations"].is_object() {
                o["metadata"]["annotations"] = json!({});
            }
            o["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = rev.clone();
            Ok(())
        });
}

/// Sets `spec.replicas` of ReplicaSet `rs` (as read this pass), writing only on a change.
fn set_replicas(cluster: &Cluster, rs: &Value, want: i64) {
    if meta::at(rs, "/spec/replicas") == Some(&json!(want)) {
        return;
    }
    let _ = cluster.store.modify(
        known::replica_sets(),
        meta::namespace(rs),
        meta::name(rs),
        |rs| {
            rs["spec"]["replicas"] = json!(want);
            Ok(())
        },
    );
}

/// The ReplicaSet a Deployment creates for `template` (whose hash is `hash`) at `revision`.
pub(crate) fn new_replica_set(d: &Value, template: &Value, hash: &str, revision: i64) -> Value {
    let want = replicas(d);
    let mut tmpl = template.clone();
    tmpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let mut selector = meta::at(d, "/spec/selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"]["pod-template-hash"] = json!(hash);
    let mut labels = tmpl["metadata"]["labels"].clone();
    labels["pod-template-hash"] = json!(hash);
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{}-{hash}", meta::name(d)), "labels": labels, "ownerReferences": [meta::controller_ref(d)],
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": want.to_string(),
                "deployment.kubernetes.io/max-replicas": want.to_string()}},
        "spec": {"replicas": want, "selector": selector, "template": tmpl},
    })
}

fn replica_set(pass: &Pass, rs: &Value) {
    let cluster = pass.cluster;
    let pods: Vec<Arc<Value>> = pass
        .owned(known::pods(), rs)
        .into_iter()
        .filter(|p| !meta::is_deleting(p) && !is_terminal(p))
        .collect();
    let want = replicas(rs).max(0) as usize;
    if pods.len() < want {
        for _ in pods.len()..want {
            let name = format!("{}-{}", meta::name(rs), meta::random_suffix(5));
            create_pod(
                cluster,
                rs,
                pod_from_template(rs, &rs["spec"]["template"], &name),
            );
        }
    } else if pods.len() > want {
        let mut doomed = pods.clone();
        // Not-ready and newest pods go first, as the ReplicaSet controller ranks them.
        doomed.sort_by_key(|p| {
            (
                is_ready(p),
                std::cmp::Reverse(meta::str_at(p, "/metadata/creationTimestamp").to_string()),
            )
        });
        for p in doomed.iter().take(pods.len() - want) {
            let _ = delete_object(
                cluster,
                known::pods(),
                meta::namespace(p),
                meta::name(p),
                None,
                false,
            );
            crate::events::record(
                cluster,
                rs,
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {}", meta::name(p)),
                "replicaset-controller",
            );
        }
    }
    let pods: Vec<Arc<Value>> = pass
        .owned(known::pods(), rs)
        .into_iter()
        .filter(|p| !meta::is_deleting(p) && !is_terminal(p))
        .collect();
    set_status(
        cluster,
        known::replica_sets(),
        rs,
        replica_set_status(rs, &pods),
    );
}

fn stateful_set(pass: &Pass, sts: &Value) {
    let cluster = pass.cluster;
    let ns = meta::namespace(sts);
    let name = meta::name(sts);
    let want = replicas(sts).max(0);
    let empty = json!({});
    let template = meta::at(sts, "/spec/template").unwrap_or(&empty);
    let revision = stateful_set_revision(sts);
    let parallel = meta::str_at(sts, "/spec/podManagementPolicy") == "Parallel";
    let claim_templates = meta::at(sts, "/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let pods = pass.owned(known::pods(), sts);
    let by_ordinal = |i: i64| {
        pods.iter()
            .find(|p| meta::name(p) == format!("{name}-{i}"))
            .cloned()
    };
    for i in 0..want {
        let pod_name = format!("{name}-{i}");
        match by_ordinal(i) {
            Some(p) if is_terminal(&p) && !meta::is_deleting(&p) => {
                let _ = delete_object(cluster, known::pods(), ns, &pod_name, Some(0), false);
                break;
            }
            Some(p) if !is_ready(&p) && !parallel => break,
            Some(_) => continue,
            None => {
                for t in claim_templates {
                    ensure_claim(cluster, sts, t, i);
                }
                create_pod(
                    cluster,
                    sts,
                    sts_pod(sts, template, claim_templates, i, &revision),
                );
                if !parallel {
                    break;
                }
            }
        }
    }
    for p in pods.iter().filter(|p| !meta::is_deleting(p)) {
        let ordinal = meta::name(p)
            .rsplit('-')
            .next()
            .and_then(|o| o.parse::<i64>().ok())
            .unwrap_or(i64::MAX);
        if ordinal >= want {
            let _ = delete_object(cluster, known::pods(), ns, meta::name(p), None, false);
        }
    }
    let pods: Vec<Arc<Value>> = pass
        .owned(known::pods(), sts)
        .into_iter()
        .filter(|p| !meta::is_deleting(p))
        .collect();
    let all_ready = pods.len() as i64 == want && pods.iter().all(|p| is_ready(p));
    let outdated: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| meta::str_at(p, "/metadata/labels/controller-revision-hash") != revision)
        .collect();
    if all_ready {
        // Rolling update: replace the highest outdated ordinal once everything is ready.
        if let Some(p) = outdated.iter().max_by_key(|p| {
            meta::name(p)
                .rsplit('-')
                .next()
                .and_then(|o| o.parse::<i64>().ok())
        }) {
            let _ = delete_object(cluster, known::pods(), ns, meta::name(p), None, false);
        }
    }
    set_status(
        cluster,
        known::stateful_sets(),
        sts,
        stateful_set_status(sts, &pods, outdated.len(), &revision),
    );
}

/// The revision name a StatefulSet's pods carry in `controller-revision-hash`.
pub(crate) fn stateful_set_revision(sts: &Value) -> String {
    let empty = json!({});
    let template = meta::at(sts, "/spec/template").unwrap_or(&empty);
    format!("{}-{}", meta::name(sts), meta::short_hash(template))
}

/// Creates the claim of template `t` for pod `ordinal` unless it exists.
fn ensure_claim(cluster: &Cluster, sts: &Value, t: &Value, ordinal: i64) {
    let claim = format!("{}-{}-{ordinal}", meta::name(t), meta::name(sts));
    if cluster
        .store
        .get(known::pvcs(), meta::namespace(sts), &claim)
        .is_some()
    {
        return;
    }
    let pvc = claim_from_template(sts, t, ordinal);
    if let Err(e) = create_object(
        cluster,
        known::pvcs(),
        Some(meta::namespace(sts)),
        pvc,
        false,
    ) {
        crate::events::record(
            cluster,
            sts,
            "Warning",
            "FailedCreate",
            &format!("create Claim {claim} failed: {}", e.message),
            "statefulset-controller",
        );
    }
}

/// The claim a StatefulSet makes from volumeClaimTemplate `t` for pod `ordinal`.
pub(crate) fn claim_from_template(sts: &Value, t: &Value, ordinal: i64) -> Value {
    let claim = format!("{}-{}-{ordinal}", meta::name(t), meta::name(sts));
    let mut md = t.get("metadata").cloned().unwrap_or(json!({}));
    md["name"] = json!(claim);
    let mut labels = md
        .get("labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or(json!({}));
    for (k, v) in meta::at(sts, "/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        labels[k] = v.clone();
    }
    md["labels"] = labels;
    if meta::str_at(
        sts,
        "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted",
    ) == "Delete"
    {
        md["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": meta::name(sts), "uid": meta::uid(sts), "controller": true, "blockOwnerDeletion": true}]);
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": md, "spec": t["spec"]})
}

/// The pod of ordinal `ordinal`, with its claims as volumes.
pub(crate) fn sts_pod(
    sts: &Value,
    template: &Value,
    claims: &[Value],
    ordinal: i64,
    revision: &str,
) -> Value {
    let name = format!("{}-{ordinal}", meta::name(sts));
    let mut pod = pod_from_template(sts, template, &name);
    if !pod["metadata"]["labels"].is_object() {
        pod["metadata"]["labels"] = json!({});
    }
    pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
    pod["metadata"]["labels"]["controller-revision-hash"] = json!(revision);
    pod["spec"]["hostname"] = json!(name);
    if let Some(svc) = meta::at(sts, "/spec/serviceName").and_then(Value::as_str) {
        pod["spec"]["subdomain"] = json!(svc);
    }
    if !pod["spec"]["volumes"].is_array() {
        pod["spec"]["volumes"] = json!([]);
    }
    let vols = pod["spec"]["volumes"]
        .as_array_mut()
        .expect("just made an array");
    for t in claims {
        let vname = meta::name(t);
        vols.retain(|v| v["name"] != vname);
        vols.push(json!({"name": vname, "persistentVolumeClaim": {"claimName": format!("{vname}-{}-{ordinal}", meta::name(sts))}}));
    }
    pod
}

fn daemon_set(pass: &Pass, ds: &Value) {
    let cluster = pass.cluster;
    let ns = meta::namespace(ds);
    let (nodes, _) = cluster.store.list(known::nodes(), None, None);
    let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = meta::short_hash(&template);
    let pods: Vec<Arc<Value>> = pass
        .owned(known::pods(), ds)
        .into_iter()
        .filter(|p| !meta::is_deleting(p))
        .collect();
    let probe = json!({"spec": template["spec"]});
    let eligible: Vec<&Arc<Value>> = nodes
        .iter()
        .filter(|n| crate::kubelet::scheduler::node_fits(&probe, n))
        .collect();
    for n in &eligible {
        let node = meta::name(n);
        let existing: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| meta::str_at(p, "/spec/nodeName") == node)
            .collect();
        let outdated = existing
            .iter()
            .find(|p| meta::str_at(p, "/metadata/labels/controller-revision-hash") != hash);
        if let Some(p) = outdated {
            let _ = delete_object(cluster, known::pods(), ns, meta::name(p), None, false);
        }
        if existing.is_empty() {
            let name = format!("{}-{}", meta::name(ds), meta::random_suffix(5));
            create_pod(cluster, ds, daemon_pod(ds, &template, &hash, node, &name));
        }
    }
    let pods: Vec<Arc<Value>> = pass
        .owned(known::pods(), ds)
        .into_iter()
        .filter(|p| !meta::is_deleting(p))
        .collect();
    set_status(
        cluster,
        known::daemon_sets(),
        ds,
        daemon_set_status(ds, &pods, eligible.len(), &hash),
    );
}

/// The pod a DaemonSet runs on `node`, from its `template` (whose hash is `hash`).
pub(crate) fn daemon_pod(
    ds: &Value,
    template: &Value,
    hash: &str,
    node: &str,
    name: &str,
) -> Value {
    let mut pod = pod_from_template(ds, template, name);
    if !pod["metadata"]["labels"].is_object() {
        pod["metadata"]["labels"] = json!({});
    }
    pod["metadata"]["labels"]["controller-revision-hash"] = json!(hash);
    pod["spec"]["nodeName"] = json!(node);
    pod
}

fn job(pass: &Pass, j: &Value) {
    let cluster = pass.cluster;
    let conds = meta::at(j, "/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conds
        .iter()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    {
        return;
    }
    let pods = pass.owned(known::pods(), j);
    let active: Vec<&Arc<Value>> = pods.iter().filter(|p| is_job_active(p)).collect();
    let completions = meta::at(j, "/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let backoff = meta::at(j, "/spec/backoffLimit")
        .and_then(Value::as_i64)
        .unwrap_or(6);
    let suspended = is_suspended(j);
    let now = meta::now();
    let mut status = job_status(j, &pods, &now);
    let succeeded = status["succeeded"].as_i64().unwrap_or(0);
    let failed = status["failed"].as_i64().unwrap_or(0);
    if succeeded >= completions {
        status["completionTime"] = json!(now);
        status["conditions"] = json!([
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
        ]);
        crate::events::record(
            cluster,
            j,
            "Normal",
            "Completed",
            "Job completed",
            "job-controller",
        );
    } else if failed > backoff {
        status["conditions"] = json!([
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
        ]);
        for p in &active {
            let _ = delete_object(
                cluster,
                known::pods(),
                meta::namespace(p),
                meta::name(p),
                Some(0),
                false,
            );
        }
    } else if active.is_empty() && !suspended {
        let name = format!("{}-{}", meta::name(j), meta::random_suffix(5));
        create_pod(
            cluster,
            j,
            pod_from_template(j, &j["spec"]["template"], &name),
        );
    }
    set_status(cluster, known::jobs(), j, status);
}
