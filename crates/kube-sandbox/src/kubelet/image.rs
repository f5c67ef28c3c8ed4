//! The image-pull step of starting a pod. Nothing is ever pulled (containers run the host's
//! programs), but this is where the injected faults `pod-start-delay` (the pod waits, as for a
//! slow pull) and `image-pull-fail` (the pull fails, then backs off, forever) act.

use super::pod::{containers, set_container_state};
use crate::cluster::Cluster;
use crate::events;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a failed pull shows `ErrImagePull` before the back-off starts.
const ERR_IMAGE_PULL_FOR: Duration = Duration::from_secs(2);
/// First and longest pull back-off (Kubernetes uses 10 s doubling to 300 s; shortened so
/// tests see the cycle).
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Whether the pod may go on to start its containers.
pub enum Pulled {
    /// Images are "present": start the containers.
    Ready,
    /// The pod was stopped while waiting.
    Stopped,
}

/// Waits out an injected start delay, then fails pulls for as long as an `image-pull-fail`
/// fault matches the pod (clearing the fault lets the next attempt succeed).
pub(crate) async fn pull(
    cluster: &Arc<Cluster>,
    pod: &Value,
    stop: &mut watch::Receiver<bool>,
) -> Pulled {
    if let Some(delay) = cluster.faults.pod_start_delay()
        && !sleep_unless_stopped(delay, stop).await
    {
        return Pulled::Stopped;
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        let failing = failing_pulls(cluster, pod);
        if failing.is_empty() {
            return Pulled::Ready;
        }
        for (list, c, spec) in &failing {
            report_failed_pull(cluster, pod, list, c, spec);
        }
        if !sleep_unless_stopped(ERR_IMAGE_PULL_FOR, stop).await {
            return Pulled::Stopped;
        }
        for (list, c, _) in &failing {
            report_backoff(cluster, pod, list, c);
        }
        if !sleep_unless_stopped(backoff, stop).await {
            return Pulled::Stopped;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// `(status list, container, fault spec)` for each container whose pull fails now.
fn failing_pulls(cluster: &Cluster, pod: &Value) -> Vec<(&'static str, Value, String)> {
    let name = crate::meta::name(pod);
    let lists = [
        ("initContainers", "initContainerStatuses"),
        ("containers", "containerStatuses"),
    ];
    lists
        .into_iter()
        .flat_map(|(spec_list, status_list)| {
            containers(pod, spec_list)
                .into_iter()
                .map(move |c| (status_list, c))
        })
        .filter_map(|(list, c)| {
            let image = c["image"].as_str().unwrap_or("");
            let spec = cluster.faults.image_pull_fail(name, image)?;
            Some((list, c, spec))
        })
        .collect()
}

fn report_failed_pull(cluster: &Arc<Cluster>, pod: &Value, list: &str, c: &Value, spec: &str) {
    let image = c["image"].as_str().unwrap_or("");
    let why = format!(
        "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": \
         the sandbox refuses to pull it (injected fault {spec})"
    );
    events::record(
        cluster,
        pod,
        "Normal",
        "Pulling",
        &format!("Pulling image \"{image}\""),
        "kubelet",
    );
    events::record(
        cluster,
        pod,
        "Warning",
        "Failed",
        &format!("Failed to pull image \"{image}\": {why}"),
        "kubelet",
    );
    events::record(
        cluster,
        pod,
        "Warning",
        "Failed",
        "Error: ErrImagePull",
        "kubelet",
    );
    set_container_state(&**cluster, pod, list, c, |s| {
        s["state"] = json!({"waiting": {"reason": "ErrImagePull", "message": why}});
    });
}

fn report_backoff(cluster: &Arc<Cluster>, pod: &Value, list: &str, c: &Value) {
    let message = format!(
        "Back-off pulling image \"{}\"",
        c["image"].as_str().unwrap_or("")
    );
    // The real kubelet records BackOff as a Normal event and the failure as a Warning.
    events::record(cluster, pod, "Normal", "BackOff", &message, "kubelet");
    events::record(
        cluster,
        pod,
        "Warning",
        "Failed",
        "Error: ImagePullBackOff",
        "kubelet",
    );
    set_container_state(&**cluster, pod, list, c, |s| {
        s["state"] = json!({"waiting": {"reason": "ImagePullBackOff", "message": message}});
    });
}

/// Sleeps for `d`; false when the pod was stopped first.
async fn sleep_unless_stopped(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !*stop.borrow()
}
