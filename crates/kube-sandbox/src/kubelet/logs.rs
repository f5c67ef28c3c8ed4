//! Container logs: where kubelet writes them and `GET pods/{name}/log` (with `container`,
//! `previous`, `tailLines`, `limitBytes` and `follow`).

use crate::api::{Query, Target};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::resources::known;
use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The log file of a container's current run.
pub fn log_path(pod_dir: &Path, container: &str) -> PathBuf {
    let dir = pod_dir.join("logs");
    // Creation failure surfaces when the kubelet opens the file.
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("{container}.log"))
}

fn previous_path(current: &Path) -> PathBuf {
    current.with_extension("previous.log")
}

/// Keeps the last run's log as "previous" before a restart, as `kubectl logs -p` expects.
pub fn rotate(current: &Path) {
    if current.exists() {
        let _ = std::fs::rename(current, previous_path(current));
    }
}

/// The container a log request names, or the pod's only container.
pub fn container_name(pod: &Value, query: &Query) -> ApiResult<String> {
    let names: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match query.get("container") {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {}",
            meta::name(pod)
        ))),
        None => {
            let mains: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match mains.as_slice() {
                [one] => Ok(one.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    meta::name(pod),
                    mains.join(" ")
                ))),
            }
        }
    }
}

fn tail(data: &[u8], lines: usize) -> &[u8] {
    let mut count = 0;
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == lines {
                return &data[i + 1..];
            }
        }
    }
    if lines == 0 { &[] } else { data }
}

fn container_running(cluster: &Cluster, ns: &str, name: &str, uid: &str, container: &str) -> bool {
    cluster.store.get(known::pods(), ns, name).is_some_and(|p| {
        meta::uid(&p) == uid
            && ["containerStatuses", "initContainerStatuses"]
                .iter()
                .any(|l| {
                    p["status"][l].as_array().into_iter().flatten().any(|s| {
                        s["name"] == container
                            && (s.pointer("/state/running").is_some()
                                || s.pointer("/state/waiting").is_some())
                    })
                })
    })
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
pub async fn handle(cluster: Arc<Cluster>, t: &Target, query: &Query) -> ApiResult<Response> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let pod = cluster
        .store
        .get(known::pods(), &ns, &name)
        .ok_or_else(|| ApiError::not_found("pods", &name))?;
    let container = container_name(&pod, query)?;
    let current = log_path(&cluster.pod_dir(meta::uid(&pod)), &container);
    let uid = meta::uid(&pod).to_string();
    let running = {
        let container = container.clone();
        move || container_running(&cluster, &ns, &name, &uid, &container)
    };
    serve(&pod, &container, &current, query, running).await
}

/// Answers a log request for `container` of `pod` from its log file `current` (`previous`,
/// `tailLines`, `limitBytes`, `follow`); a follow ends once `running` turns false.
pub async fn serve(
    pod: &Value,
    container: &str,
    current: &Path,
    query: &Query,
    running: impl Fn() -> bool + Send + 'static,
) -> ApiResult<Response> {
    let name = meta::name(pod);
    let path = if query.flag("previous") {
        previous_path(current)
    } else {
        current.to_path_buf()
    };
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(_) if query.flag("previous") => {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        Err(_) if meta::str_at(pod, "/status/phase") == "Pending" => {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            )));
        }
        Err(_) => Vec::new(),
    };
    let mut first = match query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(n) => tail(&data, n).to_vec(),
        None => data.clone(),
    };
    if let Some(limit) = query
        .get("limitBytes")
        .and_then(|l| l.parse::<usize>().ok())
    {
        first.truncate(limit);
    }
    let response = Response::builder().header("Content-Type", "text/plain");
    if !query.flag("follow") {
        return Ok(response.body(Body::from(first)).expect("static parts"));
    }
    let offset = data.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(follow(path, offset, Bytes::from(first), tx, running));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok(response
        .body(Body::from_stream(stream))
        .expect("static parts"))
}

/// Sends `first`, then what is appended to the file, until the container stops or the
/// client goes away.
async fn follow(
    path: PathBuf,
    mut offset: u64,
    first: Bytes,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    running: impl Fn() -> bool,
) {
    if tx.send(first).await.is_err() {
        return;
    }
    loop {
        let still_running = running();
        if let Ok(mut f) = tokio::fs::File::open(&path).await
            && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
        {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).await.is_ok() && !buf.is_empty() {
                offset += buf.len() as u64;
                if tx.send(Bytes::from(buf)).await.is_err() {
                    return;
                }
            }
        }
        if !still_running {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\n", 0), b"");
    }
}
