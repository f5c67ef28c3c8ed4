//! Syncing the pods bound to the node: start the new ones with the sandbox's pod runner, stop
//! the ones gone, finish deletions (the kubelet's final DELETE with grace period 0), and post
//! every status change to the API server.

use super::Node;
use super::sources::Snapshot;
use crate::kubelet::logs;
use crate::kubelet::pod::{self, PodHost, StartProblem};
use crate::meta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often the node lists its pods.
const SYNC_EVERY: Duration = Duration::from_millis(500);
/// How long a pod whose start failed (missing volume, config) waits before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(2);

fn pods(node: &Node, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        node.client.clone(),
        ns,
        &super::resource("", "v1", "Pod", "pods"),
    )
}

/// Where the pod runner's status changes and events go: a local copy of each pod, pushed to
/// the API server by a writer task (changes made while a write is in flight are coalesced).
pub(super) struct ApiHost {
    node: Arc<Node>,
    dirty: mpsc::UnboundedSender<String>,
}

impl ApiHost {
    fn new(node: Arc<Node>) -> (Arc<ApiHost>, mpsc::UnboundedReceiver<String>) {
        let (dirty, rx) = mpsc::unbounded_channel();
        let host = Arc::new(ApiHost { node, dirty });
        (host, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
        self.node.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

impl PodHost for ApiHost {
    fn update(&self, pod: &Value, f: &mut dyn FnMut(&mut Value)) {
        let uid = meta::uid(pod).to_string();
        {
            let mut local = self.lock();
            let entry = local.entry(uid.clone()).or_insert_with(|| pod.clone());
            f(entry);
        }
        let _ = self.dirty.send(uid);
    }

    fn event(&self, pod: &Value, kind: &str, reason: &str, message: &str, component: &str) {
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{}.{}", meta::name(pod), &meta::new_uid().replace('-', "")[..16]),
                "namespace": meta::namespace(pod),
            },
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod", "namespace": meta::namespace(pod),
                "name": meta::name(pod), "uid": meta::uid(pod),
            },
            "type": kind, "reason": reason, "message": message,
            "source": {"component": component, "host": self.node.name},
            "firstTimestamp": meta::now(), "lastTimestamp": meta::now(), "count": 1,
            "reportingComponent": component, "reportingInstance": self.node.name,
        });
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.node.client.clone(),
            meta::namespace(pod),
            &super::resource("", "v1", "Event", "events"),
        );
        tokio::spawn(async move {
            let Ok(event) = serde_json::from_value::<DynamicObject>(event) else {
                return;
            };
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "recording an event failed");
            }
        });
    }

    fn log_path(&self, pod_uid: &str, container: &str) -> PathBuf {
        logs::log_path(&self.node.pod_dir(pod_uid), container)
    }

    fn node_ip(&self) -> String {
        self.node.ip.to_string()
    }
}

/// Pushes the local copies of changed pods' status to the API server.
async fn write_statuses(host: Arc<ApiHost>, mut dirty: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = dirty.recv().await {
        let mut uids = HashSet::from([first]);
        while let Ok(more) = dirty.try_recv() {
            uids.insert(more);
        }
        for uid in uids {
            let Some(pod) = host.lock().get(&uid).cloned() else {
                continue;
            };
            // metadata.uid in a patch is a precondition: a pod recreated under the same
            // name is left alone.
            let patch = json!({"metadata": {"uid": uid}, "status": pod["status"]});
            let result = pods(&host.node, meta::namespace(&pod))
                .patch_status(
                    meta::name(&pod),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
            if let Err(e) = result {
                tracing::debug!(pod = meta::name(&pod), error = %e, "posting pod status failed");
            }
        }
    }
}

/// Lists the node's pods and reconciles them until `shutdown` turns true.
pub(super) async fn sync_loop(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let (host, dirty) = ApiHost::new(node.clone());
    let writer = tokio::spawn(write_statuses(host.clone(), dirty));
    let starting: Arc<Mutex<HashSet<String>>> = Arc::default();
    let all: Api<DynamicObject> = Api::all_with(
        node.client.clone(),
        &super::resource("", "v1", "Pod", "pods"),
    );
    let params = ListParams::default().fields(&format!("spec.nodeName={}", node.name));
    loop {
        match all.list(&params).await {
            Ok(list) => {
                let listed: Vec<Value> = list
                    .items
                    .into_iter()
                    .filter_map(|p| serde_json::to_value(p).ok())
                    .collect();
                sync(&node, &host, &starting, listed);
            }
            Err(e) => tracing::warn!(node = node.name, error = %e, "listing pods failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SYNC_EVERY) => {}
            _ = shutdown.changed() => break,
        }
    }
    writer.abort();
}

fn sync(
    node: &Arc<Node>,
    host: &Arc<ApiHost>,
    starting: &Arc<Mutex<HashSet<String>>>,
    listed: Vec<Value>,
) {
    let uids: HashSet<&str> = listed.iter().map(meta::uid).collect();
    for uid in node.kubelet.running() {
        if !uids.contains(uid.as_str()) {
            node.kubelet.stop(&uid);
            host.forget(&uid);
        }
    }
    *node.pods.lock().unwrap_or_else(|e| e.into_inner()) = listed
        .iter()
        .map(|p| {
            (
                format!("{}/{}", meta::namespace(p), meta::name(p)),
                p.clone(),
            )
        })
        .collect();
    for pod in listed {
        let uid = meta::uid(&pod).to_string();
        if meta::is_deleting(&pod) {
            node.kubelet.stop(&uid);
            tokio::spawn(finish_deletion(node.clone(), pod));
            continue;
        }
        let phase = meta::str_at(&pod, "/status/phase");
        if matches!(phase, "Succeeded" | "Failed") || node.kubelet.is_running(&uid) {
            continue;
        }
        if !starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone())
        {
            continue;
        }
        let (node, host, starting) = (node.clone(), host.clone(), starting.clone());
        tokio::spawn(async move {
            let retry = !start(&node, &host, &pod).await;
            if retry {
                tokio::time::sleep(RETRY_AFTER).await;
            }
            starting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        });
    }
}

/// The kubelet's part of a deletion: once the containers are stopped, remove the object.
async fn finish_deletion(node: Arc<Node>, pod: Value) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: Some(meta::uid(&pod).to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods(&node, meta::namespace(&pod))
        .delete(meta::name(&pod), &params)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(pod = meta::name(&pod), error = %e, "deleting pod failed"),
    }
}

/// Prepares and starts one pod; false when it must be retried later.
async fn start(node: &Arc<Node>, host: &Arc<ApiHost>, pod: &Value) -> bool {
    let snapshot = match Snapshot::fetch(node, pod).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(pod = meta::name(pod), error = %e, "reading what the pod needs failed");
            return false;
        }
    };
    let host_dyn: Arc<dyn PodHost> = host.clone();
    match pod::prepare_specs(&snapshot, pod) {
        Ok(specs) => {
            let launched = node.kubelet.launch(meta::uid(pod), specs);
            tokio::spawn(pod::run_pod(host_dyn, pod.clone(), launched, None));
            true
        }
        Err(StartProblem::Volume(problem)) => {
            report_waiting(host, pod, "ContainerCreating", None);
            host.event(pod, "Warning", problem.reason, &problem.message, "kubelet");
            false
        }
        Err(StartProblem::Config(message)) => {
            report_waiting(host, pod, "CreateContainerConfigError", Some(&message));
            host.event(
                pod,
                "Warning",
                "Failed",
                &format!("Error: {message}"),
                "kubelet",
            );
            false
        }
    }
}

fn report_waiting(host: &ApiHost, pod: &Value, reason: &str, message: Option<&str>) {
    let ip = host.node_ip();
    host.update(pod, &mut |p| {
        let statuses: Vec<Value> = pod::containers(p, "containers")
            .iter()
            .map(|c| pod::waiting_status(c, reason, message))
            .collect();
        p["status"]["containerStatuses"] = json!(statuses);
        p["status"]["hostIP"] = json!(ip);
        if p["status"]["startTime"].is_null() {
            p["status"]["startTime"] = json!(meta::now());
        }
    });
}
