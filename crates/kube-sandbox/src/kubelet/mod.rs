//! The kubelet (and scheduler) of the sandbox's two nodes: binds pods to nodes, attaches and
//! prepares volumes, runs containers as real processes, keeps pod status as Kubernetes does,
//! restarts per `restartPolicy`, and kills processes when pods go away.

pub mod env;
mod image;
pub mod logs;
pub mod runtime;
pub mod scheduler;
pub mod volumes;

use crate::cluster::Cluster;
use crate::events;
use crate::meta;
use crate::resources::known;
use runtime::{ProcessSpec, RunAs};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Stdio;
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
        if let Some(rt) = self.lock().remove(pod_uid) {
            let _ = rt.stop.send(true);
            for pid in rt.pids.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                runtime::kill_group(pid);
            }
        }
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

/// Sets a pod condition, touching `lastTransitionTime` only when the status flips.
pub fn set_condition(
    pod: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let conds = pod["status"]["conditions"]
        .as_array_mut()
        .expect("just made an array");
    let existing = conds.iter_mut().find(|c| c["type"] == kind);
    let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": meta::now()});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    match existing {
        Some(e) if e["status"] == status => {
            c["lastTransitionTime"] = e["lastTransitionTime"].clone();
            *e = c;
        }
        Some(e) => *e = c,
        None => conds.push(c),
    }
}

fn containers(pod: &Value, list: &str) -> Vec<Value> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn waiting_status(c: &Value, reason: &str, message: Option<&str>) -> Value {
    let mut waiting = json!({"reason": reason});
    if let Some(m) = message {
        waiting["message"] = json!(m);
    }
    json!({
        "name": c["name"], "image": c["image"], "imageID": "", "ready": false, "started": false,
        "restartCount": 0, "state": {"waiting": waiting}, "lastState": {},
    })
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
    let node = meta::str_at(pod, "/spec/nodeName").to_string();
    let attached = |p: &Value| {
        cluster.kubelet.is_running(meta::uid(p)) || meta::str_at(p, "/status/phase") == "Running"
    };
    let prepared = volumes::prepare(cluster, pod, &node, &attached);
    let prepared = match prepared {
        Ok(v) => v,
        Err(problem) => {
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
    };
    let mut specs = HashMap::new();
    for c in containers(pod, "initContainers")
        .iter()
        .chain(containers(pod, "containers").iter())
    {
        let cname = c["name"].as_str().unwrap_or("").to_string();
        let spec = volumes::binds_for(c, &prepared)
            .map_err(|p| p.message)
            .and_then(|binds| process_spec(cluster, pod, c, binds));
        match spec {
            Ok(s) => {
                specs.insert(cname, s);
            }
            Err(message) => {
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
        }
    }
    let (stop, stop_rx) = watch::channel(false);
    let rt = PodRuntime {
        stop,
        pids: Arc::default(),
        specs: Arc::new(Mutex::new(specs)),
    };
    let pids = rt.pids.clone();
    let specs = rt.specs.clone();
    cluster.kubelet.lock().insert(uid.clone(), rt);
    tokio::spawn(run_pod(cluster.clone(), pod.clone(), specs, pids, stop_rx));
}

/// Keeps a pod Pending with its containers waiting in `ContainerCreating` (writes only once,
/// so repeated passes leave the store alone).
fn hold_pending(cluster: &Cluster, ns: &str, name: &str) {
    update_pod(cluster, ns, name, |p| {
        let statuses: Vec<Value> = containers(p, "containers")
            .iter()
            .map(|c| waiting_status(c, "ContainerCreating", None))
            .collect();
        p["status"]["containerStatuses"] = json!(statuses);
        p["status"]["phase"] = json!("Pending");
    });
}

fn process_spec(
    cluster: &Cluster,
    pod: &Value,
    c: &Value,
    binds: Vec<runtime::Bind>,
) -> Result<ProcessSpec, String> {
    let env = env::container_env(cluster, pod, c)?;
    let argv: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(|a| env::expand(a, &env))
        .collect();
    let tmp_dir = cluster
        .pod_dir(meta::uid(pod))
        .join("tmp")
        .join(c["name"].as_str().unwrap_or("c"));
    std::fs::create_dir_all(&tmp_dir)
        .map_err(|e| format!("creating {}: {e}", tmp_dir.display()))?;
    Ok(ProcessSpec {
        argv,
        env,
        binds,
        workdir: c["workingDir"].as_str().map(String::from),
        hostname: meta::name(pod).to_string(),
        tmp_dir,
        run_as: run_as(pod, c),
    })
}

fn run_as(pod: &Value, c: &Value) -> Option<RunAs> {
    let pick = |field: &str| {
        c.pointer(&format!("/securityContext/{field}"))
            .and_then(Value::as_u64)
            .or_else(|| {
                pod.pointer(&format!("/spec/securityContext/{field}"))
                    .and_then(Value::as_u64)
            })
    };
    let uid = pick("runAsUser")?;
    let gid = pick("runAsGroup").unwrap_or(uid);
    let mut groups: Vec<u32> = pod
        .pointer("/spec/securityContext/supplementalGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|g| g as u32)
        .collect();
    if let Some(fs) = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_u64)
    {
        groups.push(fs as u32);
    }
    Some(RunAs {
        uid: uid as u32,
        gid: gid as u32,
        groups,
    })
}

/// How one run of a container ended.
enum Exit {
    Code(i32),
    Stopped,
}

async fn run_pod(
    cluster: Arc<Cluster>,
    pod: Value,
    specs: Arc<Mutex<HashMap<String, ProcessSpec>>>,
    pids: Arc<Mutex<Vec<u32>>>,
    stop: watch::Receiver<bool>,
) {
    let (ns, name) = (
        meta::namespace(&pod).to_string(),
        meta::name(&pod).to_string(),
    );
    let inits = containers(&pod, "initContainers");
    let mains = containers(&pod, "containers");
    let _ = cluster.store.modify(known::pods(), &ns, &name, |p| {
        p["status"]["hostIP"] = json!("127.0.0.1");
        p["status"]["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
        p["status"]["podIP"] = json!("127.0.0.1");
        p["status"]["podIPs"] = json!([{"ip": "127.0.0.1"}]);
        if p["status"]["startTime"].is_null() {
            p["status"]["startTime"] = json!(meta::now());
        }
        set_condition(p, "PodReadyToStartContainers", "True", None, None);
        set_condition(
            p,
            "Initialized",
            if inits.is_empty() { "True" } else { "False" },
            None,
            None,
        );
        set_condition(p, "Ready", "False", Some("ContainersNotReady"), None);
        set_condition(
            p,
            "ContainersReady",
            "False",
            Some("ContainersNotReady"),
            None,
        );
        set_condition(p, "PodScheduled", "True", None, None);
        let statuses: Vec<Value> = mains
            .iter()
            .map(|c| {
                waiting_status(
                    c,
                    if inits.is_empty() {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    },
                    None,
                )
            })
            .collect();
        p["status"]["containerStatuses"] = json!(statuses);
        if !inits.is_empty() {
            let statuses: Vec<Value> = inits
                .iter()
                .map(|c| waiting_status(c, "PodInitializing", None))
                .collect();
            p["status"]["initContainerStatuses"] = json!(statuses);
        }
        Ok(())
    });
    if let image::Pulled::Stopped = image::pull(&cluster, &pod, &mut stop.clone()).await {
        return;
    }
    let policy = meta::str_at(&pod, "/spec/restartPolicy").to_string();
    for c in &inits {
        loop {
            let exit = run_container(
                &cluster,
                &pod,
                c,
                "initContainerStatuses",
                &specs,
                &pids,
                stop.clone(),
            )
            .await;
            match exit {
                Exit::Stopped => return,
                Exit::Code(0) => break,
                Exit::Code(_) if policy == "Never" => {
                    update_pod(&cluster, &ns, &name, |p| {
                        p["status"]["phase"] = json!("Failed");
                    });
                    return;
                }
                Exit::Code(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
    if !inits.is_empty() {
        update_pod(&cluster, &ns, &name, |p| {
            set_condition(p, "Initialized", "True", None, None)
        });
    }
    let mut tasks = Vec::new();
    for c in mains {
        let (cluster, pod, specs, pids, stop) = (
            cluster.clone(),
            pod.clone(),
            specs.clone(),
            pids.clone(),
            stop.clone(),
        );
        let policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            let mut restarts = 0u32;
            loop {
                match run_container(&cluster, &pod, &c, "containerStatuses", &specs, &pids, stop.clone()).await {
                    Exit::Stopped => return,
                    Exit::Code(code) => {
                        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
                        if !restart {
                            return;
                        }
                        restarts += 1;
                        // Kubernetes backs off 10s, 20s, 40s...; shortened here so tests see restarts.
                        let delay = Duration::from_millis(500 * u64::from(restarts.min(10)));
                        set_container_state(&cluster, &pod, "containerStatuses", &c, |s| {
                            s["lastState"] = s["state"].clone();
                            s["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container {} in pod {}", c["name"].as_str().unwrap_or(""), meta::name(&pod))}});
                            s["restartCount"] = json!(restarts);
                        });
                        let mut stop = stop.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => return,
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Runs one container once, keeping its status, and returns how it ended.
async fn run_container(
    cluster: &Arc<Cluster>,
    pod: &Value,
    c: &Value,
    list: &str,
    specs: &Arc<Mutex<HashMap<String, ProcessSpec>>>,
    pids: &Arc<Mutex<Vec<u32>>>,
    mut stop: watch::Receiver<bool>,
) -> Exit {
    let cname = c["name"].as_str().unwrap_or("").to_string();
    let Some(spec) = specs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cname)
        .cloned()
    else {
        return Exit::Stopped;
    };
    let image = c["image"].as_str().unwrap_or("");
    events::record(
        cluster,
        pod,
        "Normal",
        "Pulled",
        &format!("Container image \"{image}\" already present on machine"),
        "kubelet",
    );
    let started_at = meta::now();
    if spec.argv.is_empty() {
        // No command: the image's entrypoint is unknown, so the container idles until stopped.
        mark_running(cluster, pod, list, c, &started_at);
        let _ = stop.wait_for(|s| *s).await;
        return Exit::Stopped;
    }
    let log_path = logs::log_path(cluster, meta::uid(pod), &cname);
    logs::rotate(&log_path);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path);
    let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
        Ok(pair) => pair,
        Err(e) => {
            return failed_to_start(
                cluster,
                pod,
                list,
                c,
                &format!("opening log {}: {e}", log_path.display()),
            );
        }
    };
    let mut cmd = runtime::command(&spec);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut child = match cmd.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            return failed_to_start(
                cluster,
                pod,
                list,
                c,
                &format!("starting bwrap: {e} (is bubblewrap installed?)"),
            );
        }
    };
    let pid = child.id().unwrap_or(0);
    pids.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    events::record(
        cluster,
        pod,
        "Normal",
        "Created",
        &format!("Created container: {cname}"),
        "kubelet",
    );
    events::record(
        cluster,
        pod,
        "Normal",
        "Started",
        &format!("Started container {cname}"),
        "kubelet",
    );
    mark_running(cluster, pod, list, c, &started_at);
    let status = tokio::select! {
        s = child.wait() => s,
        _ = stop.wait_for(|s| *s) => {
            runtime::kill_group(pid);
            return Exit::Stopped;
        }
    };
    pids.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
    if *stop.borrow() {
        return Exit::Stopped;
    }
    let code = status
        .ok()
        .and_then(|s| {
            s.code()
                .or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|sig| 128 + sig))
        })
        .unwrap_or(1);
    mark_terminated(cluster, pod, list, c, code, &started_at);
    Exit::Code(code)
}

fn failed_to_start(
    cluster: &Arc<Cluster>,
    pod: &Value,
    list: &str,
    c: &Value,
    message: &str,
) -> Exit {
    tracing::warn!(pod = meta::name(pod), message, "container failed to start");
    events::record(
        cluster,
        pod,
        "Warning",
        "Failed",
        &format!("Error: {message}"),
        "kubelet",
    );
    mark_terminated(cluster, pod, list, c, 128, &meta::now());
    Exit::Code(128)
}

fn mark_running(cluster: &Arc<Cluster>, pod: &Value, list: &str, c: &Value, started_at: &str) {
    set_container_state(cluster, pod, list, c, |s| {
        s["state"] = json!({"running": {"startedAt": started_at}});
        s["ready"] = json!(true);
        s["started"] = json!(true);
        s["imageID"] = json!(format!(
            "docker.io/library/{}@sha256:{}",
            s["image"].as_str().unwrap_or(""),
            "0".repeat(64)
        ));
        s["containerID"] = json!(format!("containerd://{}", meta::new_uid().replace('-', "")));
    });
}

fn mark_terminated(
    cluster: &Arc<Cluster>,
    pod: &Value,
    list: &str,
    c: &Value,
    code: i32,
    started_at: &str,
) {
    set_container_state(cluster, pod, list, c, |s| {
        s["state"] = json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": started_at,
            "finishedAt": meta::now(),
            "containerID": s["containerID"].clone(),
        }});
        s["ready"] = json!(false);
        s["started"] = json!(false);
    });
}

fn update_pod(cluster: &Cluster, ns: &str, name: &str, mut f: impl FnMut(&mut Value)) {
    let _ = cluster.store.modify(known::pods(), ns, name, |p| {
        f(p);
        Ok(())
    });
}

/// Changes one container's status and recomputes the pod's phase and readiness from all of them.
fn set_container_state(
    cluster: &Cluster,
    pod: &Value,
    list: &str,
    c: &Value,
    mut f: impl FnMut(&mut Value),
) {
    let uid = meta::uid(pod).to_string();
    let cname = c["name"].clone();
    let _ = cluster
        .store
        .modify(known::pods(), meta::namespace(pod), meta::name(pod), |p| {
            if meta::uid(p) != uid || meta::is_deleting(p) {
                return Ok(());
            }
            if !p["status"][list].is_array() {
                p["status"][list] = json!([]);
            }
            let statuses = p["status"][list]
                .as_array_mut()
                .expect("just made an array");
            if let Some(s) = statuses.iter_mut().find(|s| s["name"] == cname) {
                f(s);
            }
            recompute_phase(p);
            Ok(())
        });
}

/// Pod phase and Ready conditions from container statuses, as kubelet derives them.
fn recompute_phase(p: &mut Value) {
    let statuses = p["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let policy = meta::str_at(p, "/spec/restartPolicy").to_string();
    let terminated: Vec<i64> = statuses
        .iter()
        .filter_map(|s| {
            s.pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64)
        })
        .collect();
    let all_terminated = !statuses.is_empty() && terminated.len() == statuses.len();
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s["ready"] == true);
    let any_started = statuses.iter().any(|s| {
        s.pointer("/state/running").is_some()
            || s.pointer("/state/terminated").is_some()
            || s["restartCount"].as_i64().unwrap_or(0) > 0
    });
    let phase = if all_terminated
        && (policy == "Never" || (policy == "OnFailure" && terminated.iter().all(|c| *c == 0)))
    {
        if terminated.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if any_started {
        "Running"
    } else {
        "Pending"
    };
    p["status"]["phase"] = json!(phase);
    let (ready, reason) = if all_ready {
        ("True", None)
    } else if matches!(phase, "Succeeded" | "Failed") {
        ("False", Some("PodCompleted"))
    } else {
        ("False", Some("ContainersNotReady"))
    };
    set_condition(p, "ContainersReady", ready, reason, None);
    set_condition(p, "Ready", ready, reason, None);
    if matches!(phase, "Succeeded" | "Failed") {
        set_condition(p, "PodReadyToStartContainers", "False", None, None);
    }
}
