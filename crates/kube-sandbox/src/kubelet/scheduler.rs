//! Choosing a node for a pod: nodeSelector, taints and tolerations, claims that must be bound
//! first (WaitForFirstConsumer picks the node here), and ReadWriteOncePod exclusivity.

use crate::cluster::Cluster;
use crate::meta;
use crate::resources::known;
use crate::selector::LabelSelector;
use serde_json::{Value, json};

/// What the scheduler decided for one pod.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Bind the pod to this node.
    Bind(String),
    /// Not yet: a FailedScheduling message to show, or `None` when quietly waiting (for a
    /// WaitForFirstConsumer claim being provisioned).
    Wait(Option<String>),
}

/// Whether `tolerations` tolerate `taint`.
fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = match t["key"].as_str() {
            None | Some("") => t["operator"].as_str() == Some("Exists"),
            Some(k) => Some(k) == taint["key"].as_str(),
        };
        let value_ok = t["operator"].as_str() == Some("Exists")
            || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
        let effect_ok = t["effect"]
            .as_str()
            .is_none_or(|e| e.is_empty() || Some(e) == taint["effect"].as_str());
        key_ok && value_ok && effect_ok
    })
}

/// The first taint on `node` that `pod` does not tolerate (NoSchedule/NoExecute only).
pub fn untolerated_taint(pod: &Value, node: &Value) -> Option<Value> {
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
        .find(|t| !tolerates(&tolerations, t))
        .cloned()
}

/// Whether `pod` may run on `node` as far as selectors and taints go.
pub fn node_fits(pod: &Value, node: &Value) -> bool {
    selector_fits(pod, node) && untolerated_taint(pod, node).is_none()
}

fn selector_fits(pod: &Value, node: &Value) -> bool {
    let sel = pod
        .pointer("/spec/nodeSelector")
        .cloned()
        .unwrap_or(json!({}));
    LabelSelector::from_object(&json!({"matchLabels": sel})).matches(node)
}

/// Claims a pod's volumes name.
pub fn claim_names(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
        })
        .map(String::from)
        .collect()
}

fn pod_is_active(p: &Value) -> bool {
    !matches!(meta::str_at(p, "/status/phase"), "Succeeded" | "Failed")
}

/// Other active pods in `ns` using claim `claim`.
pub fn other_users(cluster: &Cluster, pod: &Value, claim: &str) -> Vec<std::sync::Arc<Value>> {
    let (pods, _) = cluster
        .store
        .list(known::pods(), Some(meta::namespace(pod)), None);
    pods.into_iter()
        .filter(|p| meta::uid(p) != meta::uid(pod) && pod_is_active(p))
        .filter(|p| claim_names(p).iter().any(|c| c == claim))
        .collect()
}

/// Decides where `pod` goes.
pub fn schedule(cluster: &Cluster, pod: &Value) -> Decision {
    let ns = meta::namespace(pod);
    let (nodes, _) = cluster.store.list(known::nodes(), None, None);
    if let Some(spec) = cluster.faults.pod_never_ready(meta::name(pod)) {
        return Decision::Wait(Some(format!(
            "0/{n} nodes are available: {n} node(s) refused the pod (injected fault {spec}). preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
            n = nodes.len()
        )));
    }
    let mut wffc_pending = Vec::new();
    for claim in claim_names(pod) {
        let Some(pvc) = cluster.store.get(known::pvcs(), ns, &claim) else {
            return Decision::Wait(Some(format!(
                "0/{} nodes are available: persistentvolumeclaim \"{claim}\" not found. preemption: 0/{} nodes are available: {} Preemption is not helpful for scheduling.",
                nodes.len(),
                nodes.len(),
                nodes.len()
            )));
        };
        if meta::is_deleting(&pvc) {
            return Decision::Wait(Some(format!(
                "0/{} nodes are available: persistentvolumeclaim \"{claim}\" is being deleted.",
                nodes.len()
            )));
        }
        let modes = pvc
            .pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if modes.iter().any(|m| m == "ReadWriteOncePod")
            && !other_users(cluster, pod, &claim).is_empty()
        {
            return Decision::Wait(Some(format!(
                "0/{n} nodes are available: {n} node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
                n = nodes.len()
            )));
        }
        if meta::str_at(&pvc, "/status/phase") != "Bound" {
            let class = meta::str_at(&pvc, "/spec/storageClassName");
            let mode = cluster
                .store
                .get(known::storage_classes(), "", class)
                .map(|c| meta::str_at(&c, "/volumeBindingMode").to_string())
                .unwrap_or_default();
            if mode == "WaitForFirstConsumer" {
                wffc_pending.push(claim);
            } else {
                return Decision::Wait(Some(format!(
                    "0/{n} nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
                    n = nodes.len()
                )));
            }
        }
    }
    let fitting: Vec<&std::sync::Arc<Value>> = nodes
        .iter()
        .filter(|n| {
            !n.pointer("/spec/unschedulable")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .filter(|n| node_fits(pod, n))
        .collect();
    let Some(node) = least_loaded(cluster, &fitting) else {
        return Decision::Wait(Some(unschedulable_message(pod, &nodes)));
    };
    if wffc_pending.is_empty() {
        return Decision::Bind(node);
    }
    for claim in wffc_pending {
        // The provisioner binds a WaitForFirstConsumer claim once a node is chosen for it.
        let _ = cluster.store.modify(known::pvcs(), ns, &claim, |pvc| {
            if pvc
                .pointer("/metadata/annotations")
                .is_none_or(|a| !a.is_object())
            {
                pvc["metadata"]["annotations"] = json!({});
            }
            if pvc["metadata"]["annotations"]
                .get("volume.kubernetes.io/selected-node")
                .is_none()
            {
                pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] = json!(node);
            }
            Ok(())
        });
    }
    Decision::Wait(None)
}

fn least_loaded(cluster: &Cluster, nodes: &[&std::sync::Arc<Value>]) -> Option<String> {
    let (pods, _) = cluster.store.list(known::pods(), None, None);
    // One walk over the pods for all nodes: the store may hold tens of thousands.
    let mut load: Vec<(usize, &str)> = nodes.iter().map(|n| (0, meta::name(n))).collect();
    for p in pods.iter() {
        let Some(node) = p["spec"]["nodeName"].as_str() else {
            continue;
        };
        if let Some(entry) = load.iter_mut().find(|(_, name)| *name == node)
            && pod_is_active(p)
        {
            entry.0 += 1;
        }
    }
    load.into_iter().min().map(|(_, name)| name.to_string())
}

fn unschedulable_message(pod: &Value, nodes: &[std::sync::Arc<Value>]) -> String {
    let mut reasons: Vec<String> = Vec::new();
    let selector_misses = nodes.iter().filter(|n| !selector_fits(pod, n)).count();
    if selector_misses > 0 {
        reasons.push(format!(
            "{selector_misses} node(s) didn't match Pod's node affinity/selector"
        ));
    }
    for n in nodes.iter().filter(|n| selector_fits(pod, n)) {
        if let Some(t) = untolerated_taint(pod, n) {
            let v = t["value"]
                .as_str()
                .map(|v| format!(": {v}"))
                .unwrap_or_default();
            reasons.push(format!(
                "1 node(s) had untolerated taint {{{}{v}}}",
                t["key"].as_str().unwrap_or("")
            ));
        }
    }
    let unschedulable = nodes
        .iter()
        .filter(|n| n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true))
        .count();
    if unschedulable > 0 {
        reasons.push(format!("{unschedulable} node(s) were unschedulable"));
    }
    format!(
        "0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
        reasons.join(", "),
        n = nodes.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_need_matching_tolerations() {
        let node = json!({"spec": {"taints": [{"key": "dedicated", "value": "backup", "effect": "NoSchedule"}]}});
        let plain = json!({"spec": {}});
        assert!(untolerated_taint(&plain, &node).is_some());
        let tolerant = json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "backup", "effect": "NoSchedule"}]}});
        assert!(untolerated_taint(&tolerant, &node).is_none());
        let exists = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert!(untolerated_taint(&exists, &node).is_none());
    }
}
