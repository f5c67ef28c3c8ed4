//! The controllers that give objects their behaviour: namespaces, the PV provisioner, and the
//! workload owners (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job). Each is a
//! level-triggered `reconcile` over the store, run after every change and on a short tick;
//! each writes only when something differs, so the loop goes quiet when the cluster settles.

pub mod bootstrap;
pub mod namespaces;
pub mod provisioner;
pub mod rbac_defaults;
pub mod workloads;

use crate::cluster::Cluster;
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
        loop {
            tokio::select! {
                _ = changes.changed() => {}
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            namespaces::reconcile(&cluster);
            provisioner::reconcile(&cluster);
            workloads::reconcile(&cluster);
        }
    })]
}
