//! Running one pod's containers and keeping its status, independent of where the pod object
//! lives: the embedded sandbox's store or a real API server (the upstream node agent). The
//! caller supplies a [`PodHost`] that applies status changes and records events.

use super::env;
use super::runtime::{self, ProcessSpec, RunAs};
use super::sources::Sources;
use crate::meta;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The image-pull step the embedded sandbox runs before starting containers (where its
/// injected start faults act).
pub type ImagePull = std::pin::Pin<Box<dyn Future<Output = super::image::Pulled> + Send>>;

/// Where a running pod's status goes and its events are recorded.
pub trait PodHost: Send + Sync + 'static {
    /// Applies `f` to the pod (the object with this pod's uid, unless it is being deleted).
    fn update(&self, pod: &Value, f: &mut dyn FnMut(&mut Value));
    /// Records an event about the pod.
    fn event(&self, pod: &Value, kind: &str, reason: &str, message: &str, component: &str);
    /// The log file of a container's current run.
    fn log_path(&self, pod_uid: &str, container: &str) -> PathBuf;
    /// The IP address of the node running the pod (its hostIP and, sharing the host's network,
    /// its podIP).
    fn node_ip(&self) -> String;
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

pub(crate) fn containers(pod: &Value, list: &str) -> Vec<Value> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn waiting_status(c: &Value, reason: &str, message: Option<&str>) -> Value {
    let mut waiting = json!({"reason": reason});
    if let Some(m) = message {
        waiting["message"] = json!(m);
    }
    json!({
        "name": c["name"], "image": c["image"], "imageID": "", "ready": false, "started": false,
        "restartCount": 0, "state": {"waiting": waiting}, "lastState": {},
    })
}

/// A pod registered with the kubelet's process table, ready for [`run_pod`].
pub struct Launched {
    /// Per container, how to start its processes (exec reads them too).
    pub specs: Arc<Mutex<HashMap<String, ProcessSpec>>>,
    /// Process-group ids of the running containers.
    pub pids: Arc<Mutex<Vec<u32>>>,
    /// Turns true when the pod must stop.
    pub stop: watch::Receiver<bool>,
}

/// Why a pod's containers cannot start yet.
pub enum StartProblem {
    /// A volume is not ready (the pod stays in `ContainerCreating`).
    Volume(super::volumes::VolumeProblem),
    /// A container's configuration cannot be resolved (`CreateContainerConfigError`).
    Config(String),
}

/// Prepares the pod's volumes and, for every container (init containers included), how to
/// start its process.
pub fn prepare_specs(
    sources: &dyn Sources,
    pod: &Value,
) -> Result<HashMap<String, ProcessSpec>, StartProblem> {
    let prepared = super::volumes::prepare(sources, pod).map_err(StartProblem::Volume)?;
    let mut specs = HashMap::new();
    for c in containers(pod, "initContainers")
        .iter()
        .chain(containers(pod, "containers").iter())
    {
        let cname = c["name"].as_str().unwrap_or("").to_string();
        let spec = super::volumes::binds_for(c, &prepared)
            .map_err(|p| p.message)
            .and_then(|binds| process_spec(sources, pod, c, binds))
            .map_err(StartProblem::Config)?;
        specs.insert(cname, spec);
    }
    Ok(specs)
}

/// How to start a process in container `c` of `pod`: environment, argv, binds, identity.
pub fn process_spec(
    sources: &dyn Sources,
    pod: &Value,
    c: &Value,
    binds: Vec<runtime::Bind>,
) -> Result<ProcessSpec, String> {
    let env = env::container_env(sources, pod, c)?;
    let argv: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(|a| env::expand(a, &env))
        .collect();
    let tmp_dir = sources
        .pod_dir(meta::uid(pod))
        .join("tmp")
        .join(c["name"].as_str().unwrap_or("c"));
    std::fs::create_dir_all(&tmp_dir)
        .map_err(|e| format!("creating {}: {e}", tmp_dir.display()))?;
    let podman =
        super::podman::container_for(sources.podman_images(), pod, c, |a| env::expand(a, &env));
    let programs =
        super::programs::binds_for(c["image"].as_str().unwrap_or(""), sources.image_programs());
    Ok(ProcessSpec {
        podman,
        argv,
        env,
        binds,
        programs,
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
pub(super) enum Exit {
    Code(i32),
    Stopped,
}

/// Starts the pod's containers (init containers first) and keeps them running per
/// `restartPolicy` until `stop` turns true.
pub async fn run_pod(
    host: Arc<dyn PodHost>,
    pod: Value,
    launched: Launched,
    pull: Option<ImagePull>,
) {
    let Launched { specs, pids, stop } = launched;
    let inits = containers(&pod, "initContainers");
    let mains = containers(&pod, "containers");
    let ip = host.node_ip();
    host.update(&pod, &mut |p| {
        p["status"]["hostIP"] = json!(ip);
        p["status"]["hostIPs"] = json!([{"ip": ip}]);
        p["status"]["podIP"] = json!(ip);
        p["status"]["podIPs"] = json!([{"ip": ip}]);
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
    });
    if let Some(pull) = pull
        && let super::image::Pulled::Stopped = pull.await
    {
        return;
    }
    let policy = meta::str_at(&pod, "/spec/restartPolicy").to_string();
    for c in &inits {
        loop {
            let exit = run_container(
                &host,
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
                    update_pod(&*host, &pod, |p| {
                        p["status"]["phase"] = json!("Failed");
                    });
                    return;
                }
                Exit::Code(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
    if !inits.is_empty() {
        update_pod(&*host, &pod, |p| {
            set_condition(p, "Initialized", "True", None, None)
        });
    }
    let mut tasks = Vec::new();
    for c in mains {
        let (host, pod, specs, pids, stop) = (
            host.clone(),
            pod.clone(),
            specs.clone(),
            pids.clone(),
            stop.clone(),
        );
        let policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            let mut restarts = 0u32;
            loop {
                match run_container(&host, &pod, &c, "containerStatuses", &specs, &pids, stop.clone()).await {
                    Exit::Stopped => return,
                    Exit::Code(code) => {
                        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
                        if !restart {
                            return;
                        }
                        restarts += 1;
                        // Kubernetes backs off 10s, 20s, 40s...; shortened here so tests see restarts.
                        let delay = Duration::from_millis(500 * u64::from(restarts.min(10)));
                        set_container_state(&*host, &pod, "containerStatuses", &c, |s| {
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
    host: &Arc<dyn PodHost>,
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
    host.event(
        pod,
        "Normal",
        "Pulled",
        &format!("Container image \"{image}\" already present on machine"),
        "kubelet",
    );
    let started_at = meta::now();
    if spec.argv.is_empty() && spec.podman.is_none() {
        // No command: the image's entrypoint is unknown, so the container idles until stopped.
        mark_running(host, pod, list, c, &started_at);
        let _ = stop.wait_for(|s| *s).await;
        return Exit::Stopped;
    }
    let log_path = host.log_path(meta::uid(pod), &cname);
    super::logs::rotate(&log_path);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path);
    let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
        Ok(pair) => pair,
        Err(e) => {
            return failed_to_start(
                host,
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
                host,
                pod,
                list,
                c,
                &format!(
                    "starting {}: {e} (is it installed?)",
                    runtime::launcher(&spec)
                ),
            );
        }
    };
    let pid = child.id().unwrap_or(0);
    pids.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    if let Some(p) = &spec.podman {
        super::podman::wait_running(p, &mut child).await;
    }
    host.event(
        pod,
        "Normal",
        "Created",
        &format!("Created container: {cname}"),
        "kubelet",
    );
    host.event(
        pod,
        "Normal",
        "Started",
        &format!("Started container {cname}"),
        "kubelet",
    );
    mark_running(host, pod, list, c, &started_at);
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
    mark_terminated(host, pod, list, c, code, &started_at);
    Exit::Code(code)
}

fn failed_to_start(
    host: &Arc<dyn PodHost>,
    pod: &Value,
    list: &str,
    c: &Value,
    message: &str,
) -> Exit {
    tracing::warn!(pod = meta::name(pod), message, "container failed to start");
    host.event(
        pod,
        "Warning",
        "Failed",
        &format!("Error: {message}"),
        "kubelet",
    );
    mark_terminated(host, pod, list, c, 128, &meta::now());
    Exit::Code(128)
}

fn mark_running(host: &Arc<dyn PodHost>, pod: &Value, list: &str, c: &Value, started_at: &str) {
    set_container_state(&**host, pod, list, c, |s| {
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
    host: &Arc<dyn PodHost>,
    pod: &Value,
    list: &str,
    c: &Value,
    code: i32,
    started_at: &str,
) {
    set_container_state(&**host, pod, list, c, |s| {
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

fn update_pod(host: &dyn PodHost, pod: &Value, mut f: impl FnMut(&mut Value)) {
    host.update(pod, &mut f);
}

/// Changes one container's status and recomputes the pod's phase and readiness from all of them.
pub(super) fn set_container_state(
    host: &dyn PodHost,
    pod: &Value,
    list: &str,
    c: &Value,
    mut f: impl FnMut(&mut Value),
) {
    let uid = meta::uid(pod).to_string();
    let cname = c["name"].clone();
    host.update(pod, &mut |p| {
        if meta::uid(p) != uid || meta::is_deleting(p) {
            return;
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
