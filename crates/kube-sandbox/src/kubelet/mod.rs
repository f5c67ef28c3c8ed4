//! The kubelet (and scheduler) of the sandbox's two nodes: binds pods to nodes, attaches and
//! prepares volumes, runs containers as real processes, keeps pod status as Kubernetes does,
//! restarts per `restartPolicy`, and kills processes when pods go away.

pub mod env;
pub mod image;
pub mod logs;
pub mod pod;
pub mod podman;
pub mod programs;
pub mod runtime;
pub mod scheduler;
pub mod sources;
pub mod volumes;

use crate::cluster::Cluster;
use crate::events;
use crate::meta;
use crate::resources::known;
pub use pod::set_condition;
use pod::{PodHost, StartProblem, containers, waiting_status};
use runtime::ProcessSpec;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the kubelet keeps about one pod it runs.
struct PodRuntime {
    /// Set to true to stop every container of the pod.
    stop: watch::Sender<bool>,
    /// Process-group ids of running container processes.
    pids: Arc<Mutex<Vec<u32>>>,
    /// Per container, how to start a process in its filesystem view (exec uses it).
    specs: Arc<Mutex<HashMap<String, ProcessSpec>>>,
}

/// The process table of the sandbox's nodes.
#[derive(Default)]
pub struct Kubelet {
    pods: Mutex<HashMap<String, PodRuntime>>,
}

impl Kubelet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodRuntime>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the kubelet has started the pod with this uid (its volumes are attached).
    pub fn is_running(&self, pod_uid: &str) -> bool {
        self.lock().contains_key(pod_uid)
    }

    /// How to run a process in `container` of the pod (for exec), if it runs.
    pub fn process_spec(&self, pod_uid: &str, container: &str) -> Option<ProcessSpec> {
        let pods = self.lock();
        let rt = pods.get(pod_uid)?;
        let specs = rt.specs.lock().unwrap_or_else(|e| e.into_inner());
        specs.get(container).cloned()
    }

    /// Stops the pod's containers and kills their processes.
    pub fn stop(&self, pod_uid: &str) {
        // `let else` releases the process table before the (slow) podman removals below.
        let Some(rt) = self.lock().remove(pod_uid) else {
            return;
        };
        let _ = rt.stop.send(true);
        for pid in rt.pids.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            runtime::kill_group(pid);
        }
        // Killing `podman run` leaves its container running: remove those too.
        let specs = rt.specs.lock().unwrap_or_else(|e| e.into_inner());
        for p in specs.values().filter_map(|s| s.podman.as_ref()) {
            podman::remove(p);
        }
    }

    /// Registers a pod about to start: its process specs, a fresh process list, and the
    /// receiver that tells its containers to stop.
    pub fn launch(&self, pod_uid: &str, specs: HashMap<String, ProcessSpec>) -> pod::Launched {
        let (stop, stop_rx) = watch::channel(false);
        let rt = PodRuntime {
            stop,
            pids: Arc::default(),
            specs: Arc::new(Mutex::new(specs)),
        };
        let launched = pod::Launched {
            specs: rt.specs.clone(),
            pids: rt.pids.clone(),
            stop: stop_rx,
        };
        self.lock().insert(pod_uid.to_string(), rt);
        launched
    }

    /// Uids of the pods the kubelet runs.
    pub fn running(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Kills every container process (sandbox shutdown).
    pub fn stop_all(&self) {
        let uids: Vec<String> = self.lock().keys().cloned().collect();
        for uid in uids {
            self.stop(&uid);
        }
    }
}

/// Runs the scheduler and kubelet until `shutdown` turns true.
pub async fn run(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = cluster.store.changes();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut gate = crate::store::PassGate::default();
    loop {
        let ticked = tokio::select! {
            _ = changes.changed() => false,
            _ = tick.tick() => true,
            _ = shutdown.changed() => break,
        };
        if gate.begin(&cluster.store, ticked).is_some() {
            // On the blocking pool: a pass over tens of thousands of pods must not hold up the
            // workers that answer API requests.
            let cluster = cluster.clone();
            let waiting = tokio::task::spawn_blocking(move || reconcile(&cluster))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a kubelet pass failed");
                    true
                });
            // Waiting pods are retried on every tick, changed store or not.
            gate.retry_on_tick(waiting);
        }
    }
    cluster.kubelet.stop_all();
}

/// One pass over every pod; returns whether a pod is left waiting for a node or to start
/// (what it waits for may not be in the store, an injected fault for one).
fn reconcile(cluster: &Arc<Cluster>) -> bool {
    let (pods, _) = cluster.store.list(known::pods(), None, None);
    // The kubelet runs few pods and the store may hold thousands: look up the few.
    let mut orphaned: std::collections::HashSet<String> =
        cluster.kubelet.lock().keys().cloned().collect();
    for p in &pods {
        if orphaned.is_empty() {
            break;
        }
        orphaned.remove(meta::uid(p));
    }
    for uid in orphaned {
        cluster.kubelet.stop(&uid);
    }
    let mut waiting = false;
    for pod in &pods {
        if meta::is_deleting(pod) {
            finish_deletion(cluster, pod);
        } else if meta::str_at(pod, "/spec/nodeName").is_empty() {
            waiting = true;
            schedule(cluster, pod);
        } else if meta::str_at(pod, "/status/phase") == "Pending"
            && !cluster.kubelet.is_running(meta::uid(pod))
        {
            waiting = true;
            try_start(cluster, pod);
        }
    }
    waiting
}

fn finish_deletion(cluster: &Cluster, pod: &Value) {
    cluster.kubelet.stop(meta::uid(pod));
    let finalizers = pod
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if finalizers {
        return;
    }
    let (ns, name) = (meta::namespace(pod), meta::name(pod));
    // Only remove the object we saw: a pod recreated under the same name has another uid.
    if cluster
        .store
        .get(known::pods(), ns, name)
        .is_some_and(|p| meta::uid(&p) == meta::uid(pod))
    {
        cluster.store.delete(known::pods(), ns, name);
    }
}

fn schedule(cluster: &Cluster, pod: &Value) {
    let (ns, name) = (meta::namespace(pod), meta::name(pod));
    match scheduler::schedule(cluster, pod) {
        scheduler::Decision::Bind(node) => {
            let bound = cluster.store.modify(known::pods(), ns, name, |p| {
                p["spec"]["nodeName"] = json!(node);
                set_condition(p, "PodScheduled", "True", None, None);
                Ok(())
            });
            if let Ok(p) = bound {
                events::record(
                    cluster,
                    &p,
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                    "default-scheduler",
                );
            }
        }
        scheduler::Decision::Wait(Some(message)) => {
            let updated = cluster.store.modify(known::pods(), ns, name, |p| {
                set_condition(
                    p,
                    "PodScheduled",
                    "False",
                    Some("Unschedulable"),
                    Some(&message),
                );
                Ok(())
            });
            if let Ok(p) = updated {
                events::record(
                    cluster,
                    &p,
                    "Warning",
                    "FailedScheduling",
                    &message,
                    "default-scheduler",
                );
            }
        }
        scheduler::Decision::Wait(None) => {}
    }
}

fn try_start(cluster: &Arc<Cluster>, pod: &Value) {
    let (ns, name, uid) = (
        meta::namespace(pod),
        meta::name(pod),
        meta::uid(pod).to_string(),
    );
    if cluster.faults.pod_never_ready(name).is_some() {
        // Bound by nodeName, so the scheduler's fault never saw it: hold it here instead.
        hold_pending(cluster, ns, name);
        return;
    }
    let specs = match pod::prepare_specs(&**cluster, pod) {
        Ok(specs) => specs,
        Err(StartProblem::Volume(problem)) => {
            let updated = cluster.store.modify(known::pods(), ns, name, |p| {
                let statuses: Vec<Value> = containers(p, "containers")
                    .iter()
                    .map(|c| waiting_status(c, "ContainerCreating", None))
                    .collect();
                p["status"]["containerStatuses"] = json!(statuses);
                p["status"]["hostIP"] = json!("127.0.0.1");
                if p["status"]["startTime"].is_null() {
                    p["status"]["startTime"] = json!(meta::now());
                }
                Ok(())
            });
            if let Ok(p) = updated {
                events::record(
                    cluster,
                    &p,
                    "Warning",
                    problem.reason,
                    &problem.message,
                    "kubelet",
                );
            }
            return;
        }
        Err(StartProblem::Config(message)) => {
            let _ = cluster.store.modify(known::pods(), ns, name, |p| {
                let statuses: Vec<Value> = containers(p, "containers")
                    .iter()
                    .map(|c| waiting_status(c, "CreateContainerConfigError", Some(&message)))
                    .collect();
                p["status"]["containerStatuses"] = json!(statuses);
                Ok(())
            });
            if let Some(p) = cluster.store.get(known::pods(), ns, name) {
                events::record(
                    cluster,
                    &p,
                    "Warning",
                    "Failed",
                    &format!("Error: {message}"),
                    "kubelet",
                );
            }
            return;
        }
    };
    let launched = cluster.kubelet.launch(&uid, specs);
    let pull: pod::ImagePull = {
        let (cluster, pod, mut stop) = (cluster.clone(), pod.clone(), launched.stop.clone());
        Box::pin(async move { image::pull(&cluster, &pod, &mut stop).await })
    };
    let host: Arc<dyn PodHost> = cluster.clone();
    tokio::spawn(pod::run_pod(host, pod.clone(), launched, Some(pull)));
}

/// Keeps a pod Pending with its containers waiting in `ContainerCreating` (writes only once,
/// so repeated passes leave the store alone).
fn hold_pending(cluster: &Cluster, ns: &str, name: &str) {
    let _ = cluster.store.modify(known::pods(), ns, name, |p| {
        let statuses: Vec<Value> = containers(p, "containers")
            .iter()
            .map(|c| waiting_status(c, "ContainerCreating", None))
            .collect();
        p["status"]["containerStatuses"] = json!(statuses);
        p["status"]["phase"] = json!("Pending");
        Ok(())
    });
}

impl PodHost for Cluster {
    fn update(&self, pod: &Value, f: &mut dyn FnMut(&mut Value)) {
        let uid = meta::uid(pod);
        let _ = self
            .store
            .modify(known::pods(), meta::namespace(pod), meta::name(pod), |p| {
                // A pod recreated under the same name is another pod.
                if meta::uid(p) == uid {
                    f(p);
                }
                Ok(())
            });
    }

    fn event(&self, pod: &Value, kind: &str, reason: &str, message: &str, component: &str) {
        events::record(self, pod, kind, reason, message, component);
    }

    fn log_path(&self, pod_uid: &str, container: &str) -> PathBuf {
        logs::log_path(&self.pod_dir(pod_uid), container)
    }

    fn node_ip(&self) -> String {
        "127.0.0.1".into()
    }
}

impl sources::Sources for Cluster {
    fn config_map(&self, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.store.get(known::config_maps(), ns, name)
    }

    fn secret(&self, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.store.get(known::secrets(), ns, name)
    }

    fn api_server(&self) -> String {
        self.config.server_address.clone()
    }

    fn podman_images(&self) -> &[String] {
        &self.config.podman_images
    }

    fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        Cluster::pod_dir(self, pod_uid)
    }

    fn service_account_token(&self, pod: &Value, projection: &Value) -> Option<String> {
        let lifetime = projection["expirationSeconds"].as_i64().unwrap_or(3607);
        self.tokens.mint_for_pod(self, pod, lifetime)
    }

    fn claim_volume(
        &self,
        pod: &Value,
        volume: &str,
        source: &Value,
    ) -> Result<volumes::PreparedVolume, volumes::VolumeProblem> {
        volumes::claim_volume(self, pod, volume, source)
    }

    fn image_programs(&self) -> &[programs::ImageProgram] {
        &self.config.image_programs
    }
}
