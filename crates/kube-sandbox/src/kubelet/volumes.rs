//! Preparing a pod's volumes on the "node": which host directory backs each volume, files
//! projected from ConfigMaps, Secrets and the downward API, and the attach rules (Multi-Attach
//! for ReadWriteOnce, no filesystem mounts of Block claims).

use super::runtime::Bind;
use super::sources::Sources;
use crate::cluster::Cluster;
use crate::meta;
use crate::resources::known;
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a pod's volumes cannot be set up yet; becomes an Event and a waiting container.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeProblem {
    /// Event reason (`FailedAttachVolume`, `FailedMount`).
    pub reason: &'static str,
    /// Event message, worded as kubelet words it.
    pub message: String,
}

/// A prepared volume: host path and whether the source forces read-only.
#[derive(Debug, Clone)]
pub struct PreparedVolume {
    /// The host directory.
    pub path: PathBuf,
    /// Whether the source forces read-only (a claim's `readOnly`, projected files).
    pub read_only: bool,
}

fn problem(reason: &'static str, message: String) -> VolumeProblem {
    VolumeProblem { reason, message }
}

/// Checks attachability and materialises every volume of `pod`.
pub fn prepare(
    sources: &dyn Sources,
    pod: &Value,
) -> Result<HashMap<String, PreparedVolume>, VolumeProblem> {
    let ns = meta::namespace(pod);
    let pod_dir = sources.pod_dir(meta::uid(pod));
    let mut out = HashMap::new();
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = v["name"].as_str().unwrap_or("").to_string();
        let dir = pod_dir.join("volumes").join(&name);
        let prepared = if let Some(src) = v.get("persistentVolumeClaim") {
            sources.claim_volume(pod, &name, src)?
        } else if v.get("emptyDir").is_some() {
            make_dir(&dir)?;
            PreparedVolume {
                path: dir,
                read_only: false,
            }
        } else if let Some(src) = v.get("configMap") {
            let cm_name = src["name"].as_str().unwrap_or("");
            let files = match sources.config_map(ns, cm_name) {
                Some(cm) => string_files(&cm["data"])
                    .into_iter()
                    .chain(binary_files(&cm["binaryData"]))
                    .collect(),
                None if src["optional"].as_bool() == Some(true) => Vec::new(),
                None => {
                    return Err(problem(
                        "FailedMount",
                        format!(
                            "MountVolume.SetUp failed for volume \"{name}\" : configmap \"{cm_name}\" not found"
                        ),
                    ));
                }
            };
            project(&dir, &select_items(files, &src["items"]))?;
            PreparedVolume {
                path: dir,
                read_only: true,
            }
        } else if let Some(src) = v.get("secret") {
            let s_name = src["secretName"].as_str().unwrap_or("");
            let files = match sources.secret(ns, s_name) {
                Some(s) => binary_files(&s["data"])
                    .into_iter()
                    .chain(string_files(&s["stringData"]))
                    .collect(),
                None if src["optional"].as_bool() == Some(true) => Vec::new(),
                None => {
                    return Err(problem(
                        "FailedMount",
                        format!(
                            "MountVolume.SetUp failed for volume \"{name}\" : secret \"{s_name}\" not found"
                        ),
                    ));
                }
            };
            project(&dir, &select_items(files, &src["items"]))?;
            PreparedVolume {
                path: dir,
                read_only: true,
            }
        } else if let Some(src) = v.get("downwardAPI") {
            project(&dir, &downward_files(pod, &src["items"]))?;
            PreparedVolume {
                path: dir,
                read_only: true,
            }
        } else if let Some(src) = v.get("projected") {
            let mut files = Vec::new();
            for s in src["sources"].as_array().into_iter().flatten() {
                if let Some(cm) = s.get("configMap") {
                    if let Some(obj) = sources.config_map(ns, cm["name"].as_str().unwrap_or("")) {
                        files.extend(select_items(string_files(&obj["data"]), &cm["items"]));
                    }
                } else if let Some(sec) = s.get("secret") {
                    if let Some(obj) = sources.secret(ns, sec["name"].as_str().unwrap_or("")) {
                        files.extend(select_items(binary_files(&obj["data"]), &sec["items"]));
                    }
                } else if let Some(d) = s.get("downwardAPI") {
                    files.extend(downward_files(pod, &d["items"]));
                } else if let Some(t) = s.get("serviceAccountToken") {
                    let token = sources.service_account_token(pod, t).ok_or_else(|| {
                        problem("FailedMount", format!("MountVolume.SetUp failed for volume \"{name}\" : serviceaccount of the pod not found"))
                    })?;
                    let path = t["path"].as_str().unwrap_or("token");
                    files.push((path.to_string(), token.into_bytes()));
                }
            }
            project(&dir, &files)?;
            PreparedVolume {
                path: dir,
                read_only: true,
            }
        } else if let Some(src) = v.get("hostPath") {
            let path = PathBuf::from(src["path"].as_str().unwrap_or("/nonexistent"));
            if src["type"].as_str() == Some("DirectoryOrCreate") {
                make_dir(&path)?;
            }
            if !path.exists() {
                return Err(problem(
                    "FailedMount",
                    format!(
                        "MountVolume.SetUp failed for volume \"{name}\" : hostPath type check failed: {} is not a directory",
                        path.display()
                    ),
                ));
            }
            PreparedVolume {
                path,
                read_only: false,
            }
        } else {
            return Err(problem(
                "FailedMount",
                format!(
                    "volume \"{name}\": this volume type is not emulated by the sandbox (supported: persistentVolumeClaim, emptyDir, configMap, secret, downwardAPI, projected, hostPath)"
                ),
            ));
        };
        out.insert(name, prepared);
    }
    Ok(out)
}

/// The embedded sandbox's claim volumes: bound claims' PV directories under the state dir,
/// with the Multi-Attach and Block-mode checks the attach/detach controller makes.
pub fn claim_volume(
    cluster: &Cluster,
    pod: &Value,
    vol: &str,
    src: &Value,
) -> Result<PreparedVolume, VolumeProblem> {
    let ns = meta::namespace(pod);
    let node = meta::str_at(pod, "/spec/nodeName");
    let attached = |p: &Value| {
        cluster.kubelet.is_running(meta::uid(p)) || meta::str_at(p, "/status/phase") == "Running"
    };
    let claim = src["claimName"].as_str().unwrap_or("");
    let pvc = cluster.store.get(known::pvcs(), ns, claim).ok_or_else(|| {
        problem(
            "FailedMount",
            format!("persistentvolumeclaim \"{claim}\" not found"),
        )
    })?;
    let pv = meta::str_at(&pvc, "/spec/volumeName").to_string();
    if pv.is_empty() || meta::str_at(&pvc, "/status/phase") != "Bound" {
        return Err(problem(
            "FailedMount",
            format!("persistentvolumeclaim \"{claim}\" is not bound"),
        ));
    }
    let mounted = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["volumeMounts"].as_array().cloned().unwrap_or_default())
        .any(|m| m["name"].as_str() == Some(vol));
    if meta::str_at(&pvc, "/spec/volumeMode") == "Block" && mounted {
        return Err(problem(
            "FailedMount",
            format!(
                "Unable to attach or mount volumes: volume \"{vol}\" (claim \"{claim}\") has volumeMode Block, but is specified in volumeMounts; use volumeDevices"
            ),
        ));
    }
    let rwo = pvc
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x == "ReadWriteOnce"));
    if rwo {
        let elsewhere: Vec<String> = super::scheduler::other_users(cluster, pod, claim)
            .iter()
            .filter(|p| {
                meta::str_at(p, "/spec/nodeName") != node
                    && !meta::str_at(p, "/spec/nodeName").is_empty()
                    && attached(p)
            })
            .map(|p| meta::name(p).to_string())
            .collect();
        if !elsewhere.is_empty() {
            return Err(problem(
                "FailedAttachVolume",
                format!(
                    "Multi-Attach error for volume \"{pv}\" Volume is already used by pod(s) {}",
                    elsewhere.join(", ")
                ),
            ));
        }
    }
    let path = cluster.pv_dir(&pv);
    make_dir(&path)?;
    Ok(PreparedVolume {
        path,
        read_only: src["readOnly"].as_bool() == Some(true),
    })
}

/// The bind mounts for one container, from its `volumeMounts` (with `subPath`).
pub fn binds_for(
    container: &Value,
    volumes: &HashMap<String, PreparedVolume>,
) -> Result<Vec<Bind>, VolumeProblem> {
    let mut binds = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        let v = volumes
            .get(name)
            .ok_or_else(|| problem("FailedMount", format!("volume \"{name}\" not found")))?;
        let mut source = v.path.clone();
        if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
            if Path::new(sub).is_absolute() || sub.split('/').any(|p| p == "..") {
                return Err(problem(
                    "Failed",
                    format!("subPath {sub:?} must be a relative path without '..'"),
                ));
            }
            source = source.join(sub);
            make_dir(&source)?;
        }
        binds.push(Bind {
            source,
            dest: m["mountPath"].as_str().unwrap_or("/").to_string(),
            read_only: v.read_only || m["readOnly"].as_bool() == Some(true),
        });
    }
    Ok(binds)
}

/// Creates a volume directory, as a mount problem if it fails.
pub fn make_dir(p: &Path) -> Result<(), VolumeProblem> {
    std::fs::create_dir_all(p)
        .map_err(|e| problem("FailedMount", format!("creating {}: {e}", p.display())))
}

fn string_files(data: &Value) -> Vec<(String, Vec<u8>)> {
    data.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec()))
        .collect()
}

fn binary_files(data: &Value) -> Vec<(String, Vec<u8>)> {
    data.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or(""))
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn select_items(files: Vec<(String, Vec<u8>)>, items: &Value) -> Vec<(String, Vec<u8>)> {
    let Some(items) = items.as_array() else {
        return files;
    };
    items
        .iter()
        .filter_map(|i| {
            let key = i["key"].as_str()?;
            let path = i["path"].as_str().unwrap_or(key);
            files
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, d)| (path.to_string(), d.clone()))
        })
        .collect()
}

fn downward_files(pod: &Value, items: &Value) -> Vec<(String, Vec<u8>)> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let path = i["path"].as_str()?;
            let field = i.pointer("/fieldRef/fieldPath").and_then(Value::as_str)?;
            Some((
                path.to_string(),
                super::env::field_value(pod, field).into_bytes(),
            ))
        })
        .collect()
}

fn project(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), VolumeProblem> {
    make_dir(dir)?;
    for (name, data) in files {
        if Path::new(name).is_absolute() || name.split('/').any(|p| p == "..") {
            continue;
        }
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            make_dir(parent)?;
        }
        std::fs::write(&p, data)
            .map_err(|e| problem("FailedMount", format!("writing {}: {e}", p.display())))?;
    }
    Ok(())
}
