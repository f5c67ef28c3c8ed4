//! Volumes: dynamic provisioning for the sandbox's StorageClasses (Immediate at once,
//! WaitForFirstConsumer once the scheduler picked a node), static binding of pre-made PVs,
//! reclaiming PVs whose claim is gone, and the pvc/pv-protection finalizers.

use crate::cluster::Cluster;
use crate::meta;
use crate::quantity::parse_bytes;
use crate::resources::known;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Finalizer that keeps an in-use claim from disappearing under its pods.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Finalizer that keeps a bound volume from disappearing under its claim.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// One pass over claims and volumes.
pub fn reconcile(cluster: &Cluster) {
    reconcile_in(cluster, &None);
}

/// One pass over the claims in `scope` and the volumes bound to them.
pub fn reconcile_in(cluster: &Cluster, scope: &super::Scope) {
    let (pvcs, _) = super::list_in(&cluster.store, known::pvcs(), scope);
    for pvc in &pvcs {
        if meta::is_deleting(pvc) {
            release_claim_if_unused(cluster, pvc);
            continue;
        }
        // Checked on what the pass read first: asking the store means cloning every claim.
        if !has_finalizer(pvc, PVC_PROTECTION) {
            ensure_finalizer(
                cluster,
                known::pvcs(),
                meta::namespace(pvc),
                meta::name(pvc),
                PVC_PROTECTION,
            );
        }
        if meta::str_at(pvc, "/status/phase") == "Pending" {
            bind(cluster, pvc);
        }
    }
    reclaim(cluster, &pvcs, scope);
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    meta::at(obj, "/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|x| x == f))
}

fn ensure_finalizer(
    cluster: &Cluster,
    res: &'static crate::resources::ResourceInfo,
    ns: &str,
    name: &str,
    f: &str,
) {
    let _ = cluster.store.modify(res, ns, name, |o| {
        if meta::is_deleting(o) {
            return Ok(());
        }
        if !o["metadata"]["finalizers"].is_array() {
            o["metadata"]["finalizers"] = json!([]);
        }
        let list = o["metadata"]["finalizers"]
            .as_array_mut()
            .expect("just made an array");
        if !list.iter().any(|x| x == f) {
            list.push(json!(f));
        }
        Ok(())
    });
}

fn remove_finalizer(
    cluster: &Cluster,
    res: &'static crate::resources::ResourceInfo,
    ns: &str,
    name: &str,
    f: &str,
) {
    let _ = cluster.store.modify(res, ns, name, |o| {
        if let Some(list) = o["metadata"]["finalizers"].as_array_mut() {
            list.retain(|x| x != f);
        }
        Ok(())
    });
}

fn release_claim_if_unused(cluster: &Cluster, pvc: &Value) {
    let ns = meta::namespace(pvc);
    let (pods, _) = cluster.store.list(known::pods(), Some(ns), None);
    let in_use = pods.iter().any(|p| {
        !matches!(meta::str_at(p, "/status/phase"), "Succeeded" | "Failed")
            && crate::kubelet::scheduler::claim_names(p)
                .iter()
                .any(|c| c == meta::name(pvc))
    });
    if !in_use {
        remove_finalizer(cluster, known::pvcs(), ns, meta::name(pvc), PVC_PROTECTION);
    }
}

fn bind(cluster: &Cluster, pvc: &Value) {
    let (ns, name) = (meta::namespace(pvc), meta::name(pvc));
    let class_name = meta::str_at(pvc, "/spec/storageClassName");
    let wanted = meta::str_at(pvc, "/spec/volumeName");
    if !wanted.is_empty() || class_name.is_empty() {
        bind_static(cluster, pvc);
        return;
    }
    let Some(class) = cluster.store.get(known::storage_classes(), "", class_name) else {
        return;
    };
    if meta::str_at(&class, "/provisioner") != super::bootstrap::PROVISIONER {
        return;
    }
    let selected = meta::str_at(
        pvc,
        "/metadata/annotations/volume.kubernetes.io~1selected-node",
    );
    if meta::str_at(&class, "/volumeBindingMode") == "WaitForFirstConsumer" && selected.is_empty() {
        return;
    }
    let pv_name = format!("pvc-{}", meta::uid(pvc));
    if cluster.store.get(known::pvs(), "", &pv_name).is_none() {
        let dir = cluster.pv_dir(&pv_name);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            crate::events::record(
                cluster,
                pvc,
                "Warning",
                "ProvisioningFailed",
                &format!("creating {}: {e}", dir.display()),
                super::bootstrap::PROVISIONER,
            );
            return;
        }
        let pv = provisioned_volume(pvc, &class, &dir, selected);
        if crate::api::create_object(cluster, known::pvs(), None, pv, false).is_err() {
            return;
        }
        crate::events::record(
            cluster,
            pvc,
            "Normal",
            "ProvisioningSucceeded",
            &format!("Successfully provisioned volume {pv_name}"),
            super::bootstrap::PROVISIONER,
        );
    }
    complete_binding(cluster, ns, name, &pv_name, true);
}

/// The PV the provisioner makes for `pvc` of StorageClass `class`, its data in `dir`, pinned to
/// node `selected` when set (WaitForFirstConsumer).
pub(crate) fn provisioned_volume(
    pvc: &Value,
    class: &Value,
    dir: &std::path::Path,
    selected: &str,
) -> Value {
    let mut pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pvc-{}", meta::uid(pvc)), "annotations": {"pv.kubernetes.io/provisioned-by": super::bootstrap::PROVISIONER}},
        "spec": {
            "capacity": {"storage": pvc.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("1Gi"))},
            "accessModes": pvc["spec"]["accessModes"],
            "volumeMode": pvc["spec"]["volumeMode"],
            "persistentVolumeReclaimPolicy": class["reclaimPolicy"].as_str().unwrap_or("Delete"),
            "storageClassName": meta::str_at(pvc, "/spec/storageClassName"),
            "hostPath": {"path": dir.to_string_lossy(), "type": ""},
            "claimRef": claim_ref(pvc),
        },
    });
    if !selected.is_empty() {
        pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [selected]}]}]}});
    }
    pv
}

fn claim_ref(pvc: &Value) -> Value {
    json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": meta::namespace(pvc),
           "name": meta::name(pvc), "uid": meta::uid(pvc),
           "resourceVersion": meta::str_at(pvc, "/metadata/resourceVersion")})
}

fn bind_static(cluster: &Cluster, pvc: &Value) {
    let wanted = meta::str_at(pvc, "/spec/volumeName");
    let need = pvc
        .pointer("/spec/resources/requests/storage")
        .and_then(parse_bytes)
        .unwrap_or(0);
    let modes = pvc["spec"]["accessModes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (pvs, _) = cluster.store.list(known::pvs(), None, None);
    let fits = |pv: &Value| {
        let free = pv
            .pointer("/spec/claimRef/uid")
            .is_none_or(|u| u == meta::uid(pvc))
            && meta::str_at(pv, "/status/phase") == "Available";
        let size_ok = pv
            .pointer("/spec/capacity/storage")
            .and_then(parse_bytes)
            .unwrap_or(0)
            >= need;
        let modes_ok = modes.iter().all(|m| {
            pv["spec"]["accessModes"]
                .as_array()
                .is_some_and(|a| a.contains(m))
        });
        let class_ok = meta::str_at(pv, "/spec/storageClassName")
            == meta::str_at(pvc, "/spec/storageClassName");
        free && size_ok && modes_ok && class_ok
    };
    let chosen = pvs
        .iter()
        .find(|pv| (wanted.is_empty() || meta::name(pv) == wanted) && fits(pv));
    let Some(pv) = chosen else { return };
    let pv_name = meta::name(pv).to_string();
    let reference = claim_ref(pvc);
    let _ = cluster.store.modify(known::pvs(), "", &pv_name, |pv| {
        pv["spec"]["claimRef"] = reference.clone();
        Ok(())
    });
    complete_binding(
        cluster,
        meta::namespace(pvc),
        meta::name(pvc),
        &pv_name,
        false,
    );
}

fn complete_binding(cluster: &Cluster, ns: &str, name: &str, pv_name: &str, provisioned: bool) {
    let Some(pv) = cluster.store.get(known::pvs(), "", pv_name) else {
        return;
    };
    ensure_finalizer(cluster, known::pvs(), "", pv_name, PV_PROTECTION);
    let _ = cluster.store.modify(known::pvs(), "", pv_name, |pv| {
        pv["status"] = json!({"phase": "Bound", "lastPhaseTransitionTime": meta::now()});
        Ok(())
    });
    let _ = cluster.store.modify(known::pvcs(), ns, name, |pvc| {
        mark_claim_bound(pvc, &pv, provisioned);
        Ok(())
    });
}

/// What binding writes into a claim: the volume's name, the bind annotations, status Bound.
pub(crate) fn mark_claim_bound(pvc: &mut Value, pv: &Value, provisioned: bool) {
    pvc["spec"]["volumeName"] = json!(meta::name(pv));
    if !pvc["metadata"]["annotations"].is_object() {
        pvc["metadata"]["annotations"] = json!({});
    }
    let a = &mut pvc["metadata"]["annotations"];
    a["pv.kubernetes.io/bind-completed"] = json!("yes");
    a["pv.kubernetes.io/bound-by-controller"] = json!("yes");
    if provisioned {
        a["volume.beta.kubernetes.io/storage-provisioner"] = json!(super::bootstrap::PROVISIONER);
        a["volume.kubernetes.io/storage-provisioner"] = json!(super::bootstrap::PROVISIONER);
    }
    pvc["status"] = json!({
        "phase": "Bound",
        "accessModes": pv["spec"]["accessModes"],
        "capacity": pv["spec"]["capacity"],
    });
}

/// Volumes whose claim is gone are deleted (policy Delete, data removed) or Released.
/// `pvcs` are the claims in `scope`, as this pass read them.
fn reclaim(cluster: &Cluster, pvcs: &[Arc<Value>], scope: &super::Scope) {
    // Claims are looked up in what the pass read (asking the store for each of thousands of
    // volumes dominated a pass), except claims being deleted: this pass may have let them go.
    let claims: HashMap<(&str, &str), &Arc<Value>> = pvcs
        .iter()
        .map(|c| ((meta::namespace(c), meta::name(c)), c))
        .collect();
    let (pvs, _) = cluster.store.list(known::pvs(), None, None);
    for pv in &pvs {
        // One lookup of the claim reference serves its three fields.
        let claim_ref = meta::at(pv, "/spec/claimRef");
        let claim_field = |f: &str| claim_ref.and_then(|c| c.get(f)?.as_str()).unwrap_or("");
        let claim_ns = claim_field("namespace");
        // Out of scope: neither the volume (cluster-scoped: the pass would be unscoped) nor
        // its claim changed since the previous pass.
        if scope.as_ref().is_some_and(|s| !s.contains(claim_ns)) {
            continue;
        }
        let (claim_uid, claim_name) = (claim_field("uid"), claim_field("name"));
        let name = meta::name(pv);
        let claim_alive = !claim_uid.is_empty()
            && match claims.get(&(claim_ns, claim_name)) {
                Some(c) if !meta::is_deleting(c) => meta::uid(c) == claim_uid,
                _ => cluster
                    .store
                    .get(known::pvcs(), claim_ns, claim_name)
                    .is_some_and(|c| meta::uid(&c) == claim_uid),
            };
        if meta::is_deleting(pv) {
            if !claim_alive {
                remove_finalizer(cluster, known::pvs(), "", name, PV_PROTECTION);
                if meta::str_at(pv, "/spec/persistentVolumeReclaimPolicy") == "Delete" {
                    let _ = std::fs::remove_dir_all(cluster.pv_dir(name));
                }
            }
            continue;
        }
        if claim_uid.is_empty() || claim_alive || meta::str_at(pv, "/status/phase") != "Bound" {
            continue;
        }
        if meta::str_at(pv, "/spec/persistentVolumeReclaimPolicy") == "Delete" {
            let _ = crate::api::delete_object(cluster, known::pvs(), "", name, None, false);
        } else {
            let _ = cluster.store.modify(known::pvs(), "", name, |pv| {
                pv["status"]["phase"] = json!("Released");
                Ok(())
            });
        }
    }
}
