//! The cluster a sandbox starts with: namespaces `default` and `kube-system`, Ready nodes
//! `node-a` and `node-b`, StorageClasses `standard` (default, Immediate) and `wffc`
//! (WaitForFirstConsumer), and the `kubernetes` Service.

use crate::api::create_object;
use crate::cluster::Cluster;
use crate::resources::{ResourceInfo, by_plural, known};
use serde_json::{Value, json};

/// The provisioner name the sandbox's StorageClasses use.
pub const PROVISIONER: &str = "sandbox.nkvm.io/hostpath";

/// Parses `key=value:Effect` or `key:Effect` into a taint object.
pub fn parse_taint(s: &str) -> Option<Value> {
    let (kv, effect) = s.rsplit_once(':')?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return None;
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return None;
    }
    let mut t = json!({"key": key, "effect": effect});
    if !value.is_empty() {
        t["value"] = json!(value);
    }
    Some(t)
}

fn node(name: &str, taints: &[Value]) -> Value {
    let resources =
        json!({"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"});
    let mut n = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": format!("sandbox-{}", &name[name.len() - 1..]),
        }},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "capacity": resources, "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": format!("v1.{}.0-sandbox", crate::discovery::MINOR),
                "kubeProxyVersion": "", "containerRuntimeVersion": "sandbox://bubblewrap",
                "osImage": "kube-sandbox", "kernelVersion": "", "operatingSystem": "linux", "architecture": "amd64",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    });
    if !taints.is_empty() {
        n["spec"]["taints"] = json!(taints);
    }
    n
}

fn add(cluster: &Cluster, res: &'static ResourceInfo, ns: Option<&str>, obj: Value) {
    if let Err(e) = create_object(cluster, res, ns, obj, false) {
        tracing::error!(kind = res.kind, error = %e, "seeding the sandbox failed");
    }
}

/// Creates the starting objects. `ca_pem` goes into each namespace's `kube-root-ca.crt`.
pub fn seed(cluster: &Cluster, node_b_taints: &[Value], ca_pem: &str) {
    for ns in ["default", "kube-system"] {
        add(
            cluster,
            known::namespaces(),
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
    }
    let now = crate::meta::now();
    for (name, taints) in [("node-a", &[][..]), ("node-b", node_b_taints)] {
        let mut n = node(name, taints);
        let status = n["status"].take();
        add(cluster, known::nodes(), None, n);
        // Status arrives as a kubelet would post it: after the node object exists.
        let _ = cluster.store.modify(known::nodes(), "", name, |n| {
            n["status"] = status.clone();
            n["status"]["conditions"] = json!([
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now},
            ]);
            Ok(())
        });
    }
    for (name, mode, default) in [
        ("standard", "Immediate", true),
        ("wffc", "WaitForFirstConsumer", false),
    ] {
        let mut sc = json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": mode,
            "allowVolumeExpansion": true,
        });
        if default {
            sc["metadata"]["annotations"] =
                json!({"storageclass.kubernetes.io/is-default-class": "true"});
        }
        add(cluster, known::storage_classes(), None, sc);
    }
    let services = by_plural("", "v1", "services").expect("services are served");
    add(
        cluster,
        services,
        Some("default"),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
        }),
    );
    super::rbac_defaults::seed(cluster);
    cluster.set_root_ca(ca_pem);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_with_and_without_value() {
        assert_eq!(
            parse_taint("dedicated=backup:NoSchedule").unwrap()["value"],
            "backup"
        );
        assert!(parse_taint("gpu:NoExecute").unwrap().get("value").is_none());
        assert!(parse_taint("bad").is_none());
        assert!(parse_taint("k=v:Sometimes").is_none());
    }
}
