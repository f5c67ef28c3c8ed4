//! Namespace lifecycle: each active namespace gets its `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap; a terminating namespace has its contents deleted, then goes.

use crate::api::{create_object, delete_object};
use crate::cluster::Cluster;
use crate::meta;
use crate::resources::{RESOURCES, known};
use serde_json::json;

/// One pass over all namespaces.
pub fn reconcile(cluster: &Cluster) {
    let (namespaces, _) = cluster.store.list(known::namespaces(), None, None);
    for ns in &namespaces {
        let name = meta::name(ns);
        if meta::is_deleting(ns) {
            terminate(cluster, name);
        } else {
            populate(cluster, name);
        }
    }
}

/// Gives an active namespace its `default` ServiceAccount and `kube-root-ca.crt`.
pub fn populate(cluster: &Cluster, ns: &str) {
    if cluster
        .store
        .get(known::service_accounts(), ns, "default")
        .is_none()
    {
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        let _ = create_object(cluster, known::service_accounts(), Some(ns), sa, false);
    }
    if let Some(ca) = cluster.root_ca.get()
        && cluster
            .store
            .get(known::config_maps(), ns, "kube-root-ca.crt")
            .is_none()
    {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt",
                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": ca}});
        let _ = create_object(cluster, known::config_maps(), Some(ns), cm, false);
    }
}

fn terminate(cluster: &Cluster, ns: &str) {
    let mut remaining = 0;
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        let (objs, _) = cluster.store.list(res, Some(ns), None);
        for o in &objs {
            remaining += 1;
            // Finalizers of the contents (pvc-protection) are the namespace's to wait for.
            if !meta::is_deleting(o) {
                let _ = delete_object(cluster, res, ns, meta::name(o), Some(0), false);
            }
        }
    }
    if remaining == 0 {
        cluster.store.delete(known::namespaces(), "", ns);
    }
}
