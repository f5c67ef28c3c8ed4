//! Workload controllers: Deployment → ReplicaSet → Pod, StatefulSet → Pods + PVCs from
//! volumeClaimTemplates, DaemonSet → one pod per eligible node, Job → Pods until complete.
//! Status fields are kept the way `kubectl rollout status` and `kubectl wait` read them.

use crate::api::{create_object, delete_object};
use crate::cluster::Cluster;
use crate::meta;
use crate::resources::{ResourceInfo, known};
use crate::selector::LabelSelector;
use serde_json::{Value, json};
use std::sync::Arc;

/// One pass over every workload kind.
pub fn reconcile(cluster: &Cluster) {
    for d in active(cluster, known::deployments()) {
        deployment(cluster, &d);
    }
    for rs in active(cluster, known::replica_sets()) {
        replica_set(cluster, &rs);
    }
    for s in active(cluster, known::stateful_sets()) {
        stateful_set(cluster, &s);
    }
    for ds in active(cluster, known::daemon_sets()) {
        daemon_set(cluster, &ds);
    }
    for j in active(cluster, known::jobs()) {
        job(cluster, &j);
    }
}

fn active(cluster: &Cluster, res: &'static ResourceInfo) -> Vec<Arc<Value>> {
    let (all, _) = cluster.store.list(res, None, None);
    all.into_iter().filter(|o| !meta::is_deleting(o)).collect()
}

/// Objects of `res` in the owner's namespace that the owner controls.
fn owned(cluster: &Cluster, res: &'static ResourceInfo, owner: &Value) -> Vec<Arc<Value>> {
    let (all, _) = cluster.store.list(res, Some(meta::namespace(owner)), None);
    all.into_iter()
        .filter(|o| meta::controller_uid(o) == Some(meta::uid(owner)))
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn is_terminal(pod: &Value) -> bool {
    matches!(meta::str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn generation(obj: &Value) -> Value {
    obj.pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1))
}

/// A pod from `template`, controlled by `owner`.
fn pod_from_template(owner: &Value, template: &Value, name: &str) -> Value {
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

fn set_status(cluster: &Cluster, res: &'static ResourceInfo, obj: &Value, status: Value) {
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

fn condition(kind: &str, status: bool, reason: &str, message: &str, previous: &Value) -> Value {
    let s = if status { "True" } else { "False" };
    let now = meta::now();
    let old = previous
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind));
    let transition = old
        .filter(|c| c["status"] == s)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or(json!(now));
    let update = old
        .filter(|c| c["status"] == s && c["reason"] == reason)
        .map(|c| c["lastUpdateTime"].clone())
        .unwrap_or(json!(now));
    json!({"type": kind, "status": s, "reason": reason, "message": message, "lastTransitionTime": transition, "lastUpdateTime": update})
}

fn deployment(cluster: &Cluster, d: &Value) {
    let ns = meta::namespace(d);
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = meta::short_hash(&template);
    let rs_name = format!("{}-{hash}", meta::name(d));
    let sets = owned(cluster, known::replica_sets(), d);
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
            let _ = cluster
                .store
                .modify(known::replica_sets(), ns, &rs_name, |rs| {
                    rs["spec"]["replicas"] = json!(want);
                    Ok(())
                });
            rs
        }
        None => {
            let mut tmpl = template.clone();
            tmpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let mut labels = tmpl["metadata"]["labels"].clone();
            labels["pod-template-hash"] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "labels": labels, "ownerReferences": [meta::controller_ref(d)],
                    "annotations": {"deployment.kubernetes.io/revision": (revision + 1).to_string(),
                        "deployment.kubernetes.io/desired-replicas": want.to_string(),
                        "deployment.kubernetes.io/max-replicas": want.to_string()}},
                "spec": {"replicas": want, "selector": selector, "template": tmpl},
            });
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
        let _ = cluster
            .store
            .modify(known::replica_sets(), ns, meta::name(old), |rs| {
                rs["spec"]["replicas"] = json!(0);
                Ok(())
            });
    }
    let sets = owned(cluster, known::replica_sets(), d);
    let sum = |f: &str| {
        sets.iter()
            .map(|rs| {
                rs.pointer(&format!("/status/{f}"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            })
            .sum::<i64>()
    };
    let updated = new_rs
        .pointer("/status/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let new_available = new_rs
        .pointer("/status/availableReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let (total, ready, available) = (
        sum("replicas"),
        sum("readyReplicas"),
        sum("availableReplicas"),
    );
    let conds = d
        .pointer("/status/conditions")
        .cloned()
        .unwrap_or(json!([]));
    let complete = updated == want && total == want && new_available == want;
    let available_cond = condition(
        "Available",
        available >= want,
        if available >= want {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available >= want {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        &conds,
    );
    let progressing = condition(
        "Progressing",
        true,
        if complete {
            "NewReplicaSetAvailable"
        } else {
            "ReplicaSetUpdated"
        },
        &format!(
            "ReplicaSet \"{rs_name}\" {}",
            if complete {
                "has successfully progressed."
            } else {
                "is progressing."
            }
        ),
        &conds,
    );
    let mut status = json!({
        "observedGeneration": generation(d), "replicas": total, "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": available, "conditions": [available_cond, progressing],
    });
    if total > available {
        status["unavailableReplicas"] = json!(total - available);
    }
    set_status(cluster, known::deployments(), d, status);
    let _ = cluster
        .store
        .modify(known::deployments(), ns, meta::name(d), |o| {
            if !o["metadata"]["annotations"].is_object() {
                o["metadata"]["annotations"] = json!({});
            }
            let rev = meta::str_at(
                &new_rs,
                "/metadata/annotations/deployment.kubernetes.io~1revision",
            )
            .to_string();
            o["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(rev);
            Ok(())
        });
}

fn replica_set(cluster: &Cluster, rs: &Value) {
    let pods: Vec<Arc<Value>> = owned(cluster, known::pods(), rs)
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
    let pods: Vec<Arc<Value>> = owned(cluster, known::pods(), rs)
        .into_iter()
        .filter(|p| !meta::is_deleting(p) && !is_terminal(p))
        .collect();
    let selector = LabelSelector::from_object(&rs["spec"]["template"]["metadata"]);
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let labeled = pods.iter().filter(|p| selector.matches(p)).count();
    set_status(
        cluster,
        known::replica_sets(),
        rs,
        json!({
            "replicas": pods.len(), "fullyLabeledReplicas": labeled, "readyReplicas": ready,
            "availableReplicas": ready, "observedGeneration": generation(rs),
        }),
    );
}

fn stateful_set(cluster: &Cluster, sts: &Value) {
    let ns = meta::namespace(sts);
    let name = meta::name(sts);
    let want = replicas(sts).max(0);
    let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let revision = format!("{name}-{}", meta::short_hash(&template));
    let parallel = meta::str_at(sts, "/spec/podManagementPolicy") == "Parallel";
    let claim_templates = sts
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pods = owned(cluster, known::pods(), sts);
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
                for t in &claim_templates {
                    ensure_claim(cluster, sts, t, i);
                }
                create_pod(
                    cluster,
                    sts,
                    sts_pod(sts, &template, &claim_templates, i, &revision),
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
    let pods: Vec<Arc<Value>> = owned(cluster, known::pods(), sts)
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
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let updated = pods.len() - outdated.len();
    let current_revision = if outdated.is_empty() {
        revision.clone()
    } else {
        sts.pointer("/status/currentRevision")
            .and_then(Value::as_str)
            .unwrap_or(&revision)
            .to_string()
    };
    set_status(
        cluster,
        known::stateful_sets(),
        sts,
        json!({
            "observedGeneration": generation(sts), "replicas": pods.len(), "readyReplicas": ready,
            "currentReplicas": if outdated.is_empty() { pods.len() } else { outdated.len() },
            "updatedReplicas": updated, "availableReplicas": ready,
            "currentRevision": current_revision, "updateRevision": revision, "collisionCount": 0,
        }),
    );
}

fn ensure_claim(cluster: &Cluster, sts: &Value, t: &Value, ordinal: i64) {
    let claim = format!("{}-{}-{ordinal}", meta::name(t), meta::name(sts));
    if cluster
        .store
        .get(known::pvcs(), meta::namespace(sts), &claim)
        .is_some()
    {
        return;
    }
    let mut md = t.get("metadata").cloned().unwrap_or(json!({}));
    md["name"] = json!(claim);
    let mut labels = md
        .get("labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or(json!({}));
    for (k, v) in sts
        .pointer("/spec/selector/matchLabels")
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
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": md, "spec": t["spec"]});
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

fn sts_pod(sts: &Value, template: &Value, claims: &[Value], ordinal: i64, revision: &str) -> Value {
    let name = format!("{}-{ordinal}", meta::name(sts));
    let mut pod = pod_from_template(sts, template, &name);
    if !pod["metadata"]["labels"].is_object() {
        pod["metadata"]["labels"] = json!({});
    }
    pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
    pod["metadata"]["labels"]["controller-revision-hash"] = json!(revision);
    pod["spec"]["hostname"] = json!(name);
    if let Some(svc) = sts.pointer("/spec/serviceName").and_then(Value::as_str) {
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

fn daemon_set(cluster: &Cluster, ds: &Value) {
    let ns = meta::namespace(ds);
    let (nodes, _) = cluster.store.list(known::nodes(), None, None);
    let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = meta::short_hash(&template);
    let pods: Vec<Arc<Value>> = owned(cluster, known::pods(), ds)
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
            let mut pod = pod_from_template(
                ds,
                &template,
                &format!("{}-{}", meta::name(ds), meta::random_suffix(5)),
            );
            if !pod["metadata"]["labels"].is_object() {
                pod["metadata"]["labels"] = json!({});
            }
            pod["metadata"]["labels"]["controller-revision-hash"] = json!(hash);
            pod["spec"]["nodeName"] = json!(node);
            create_pod(cluster, ds, pod);
        }
    }
    let pods: Vec<Arc<Value>> = owned(cluster, known::pods(), ds)
        .into_iter()
        .filter(|p| !meta::is_deleting(p))
        .collect();
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let updated = pods
        .iter()
        .filter(|p| meta::str_at(p, "/metadata/labels/controller-revision-hash") == hash)
        .count();
    set_status(
        cluster,
        known::daemon_sets(),
        ds,
        json!({
            "observedGeneration": generation(ds), "desiredNumberScheduled": eligible.len(),
            "currentNumberScheduled": pods.len(), "numberMisscheduled": 0, "numberReady": ready,
            "updatedNumberScheduled": updated, "numberAvailable": ready,
        }),
    );
}

fn job(cluster: &Cluster, j: &Value) {
    let conds = j
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conds
        .iter()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    {
        return;
    }
    let pods = owned(cluster, known::pods(), j);
    let succeeded = pods
        .iter()
        .filter(|p| meta::str_at(p, "/status/phase") == "Succeeded")
        .count() as i64;
    let failed = pods
        .iter()
        .filter(|p| meta::str_at(p, "/status/phase") == "Failed")
        .count() as i64;
    let active: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| !is_terminal(p) && !meta::is_deleting(p))
        .collect();
    let completions = j
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let backoff = j
        .pointer("/spec/backoffLimit")
        .and_then(Value::as_i64)
        .unwrap_or(6);
    let suspended = j.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let now = meta::now();
    let mut status = json!({
        "active": active.len(), "succeeded": succeeded, "failed": failed,
        "ready": active.iter().filter(|p| is_ready(p)).count(), "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    if j.pointer("/status/startTime").is_none() && !suspended {
        status["startTime"] = json!(now);
    }
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
