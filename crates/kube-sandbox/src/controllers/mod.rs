//! The controllers that give objects their behaviour: namespaces, the PV provisioner, and the
//! workload owners (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job). Each is a
//! level-triggered `reconcile` over the store, run after every change and on a short tick (as
//! [`PassGate`] decides) over the namespaces where something changed since the previous pass
//! ([`scope_since`]); each writes only when something differs, so the loop goes quiet when the
//! cluster settles.

pub mod bootstrap;
pub mod garbage;
pub mod namespaces;
pub mod owner_status;
pub mod provisioner;
pub mod rbac_defaults;
pub mod workloads;

use crate::cluster::Cluster;
use crate::resources::{ResourceInfo, known};
use crate::store::{PassGate, PassStart, Store};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts the controller loop; it stops when `shutdown` turns true.
pub fn spawn_all(cluster: &Arc<Cluster>, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let cluster = cluster.clone();
    let mut shutdown = shutdown.clone();
    vec![tokio::spawn(async move {
        let mut changes = cluster.store.changes();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut gate = PassGate::default();
        loop {
            let ticked = tokio::select! {
                _ = changes.changed() => false,
                _ = tick.tick() => true,
                _ = shutdown.changed() => return,
            };
            let Some(start) = gate.begin(&cluster.store, ticked) else {
                continue;
            };
            // On the blocking pool: a pass over a large cluster must not hold up the workers
            // that answer API requests.
            let cluster = cluster.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || pass(&cluster, start)).await {
                tracing::error!(error = %e, "a controller pass failed");
            }
        }
    })]
}

/// One pass of every controller, each over what may have changed for it since `start`.
fn pass(cluster: &Cluster, start: PassStart) {
    namespaces::reconcile(cluster);
    // Besides objects in the namespaces they work in, the provisioner reads volumes and
    // classes, the workload controllers nodes (DaemonSets), namespaces and classes (creating
    // pods and claims).
    let scope = scope_since(
        &cluster.store,
        start.previous,
        &[known::pvs(), known::storage_classes()],
    );
    provisioner::reconcile_in(cluster, &scope);
    let scope = scope_since(
        &cluster.store,
        start.previous,
        &[
            known::nodes(),
            known::namespaces(),
            known::storage_classes(),
        ],
    );
    workloads::reconcile_in(cluster, &scope);
    // After the workload controllers, so what they just created from an older view is seen.
    garbage::reconcile_in(cluster, &scope);
}

/// The namespaces a pass looks at; `None`: all of them.
pub type Scope = Option<BTreeSet<String>>;

/// The namespaces in which something changed after resourceVersion `previous` (when the
/// previous pass began). A pass over any other namespace would find nothing to do: passes are
/// level-triggered, write only on a difference, and record an Event (a change, retried on the
/// tick) when they fail. All namespaces when there is no previous pass, the event log no
/// longer reaches back, or an object of a cluster-scoped kind in `reads` changed.
pub fn scope_since(store: &Store, previous: Option<u64>, reads: &[&'static ResourceInfo]) -> Scope {
    let changes = store.changes_since(previous?)?;
    let cluster_wide = changes
        .cluster_kinds
        .iter()
        .any(|k| reads.iter().any(|r| std::ptr::eq(*k, *r)));
    (!cluster_wide).then_some(changes.namespaces)
}

/// Objects of `res` in `scope`, in (namespace, name) order, and the resourceVersion of the
/// (first) read.
pub fn list_in(store: &Store, res: &'static ResourceInfo, scope: &Scope) -> (Vec<Arc<Value>>, u64) {
    let Some(namespaces) = scope else {
        return store.list(res, None, None);
    };
    let mut all = Vec::new();
    let mut first_read = None;
    for ns in namespaces {
        let (objs, rv) = store.list(res, Some(ns), None);
        first_read.get_or_insert(rv);
        all.extend(objs);
    }
    let rv = first_read.unwrap_or_else(|| store.resource_version());
    (all, rv)
}
