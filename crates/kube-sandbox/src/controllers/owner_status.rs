//! The statuses workload owners report, as functions of what they own: the workload
//! controllers write them, and bulk seeding ([`crate::scale`]) stores them with the objects.

use crate::meta;
use crate::selector::LabelSelector;
use serde_json::{Value, json};
use std::sync::Arc;

/// Whether the pod's Ready condition is True.
pub(super) fn is_ready(pod: &Value) -> bool {
    meta::at(pod, "/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Whether the pod has finished (Succeeded or Failed).
pub(super) fn is_terminal(pod: &Value) -> bool {
    matches!(meta::str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// `spec.replicas`, 1 when unset.
pub(super) fn replicas(obj: &Value) -> i64 {
    meta::at(obj, "/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// `metadata.generation` (1 when unset), as `observedGeneration` reports it.
pub(super) fn generation(obj: &Value) -> Value {
    meta::at(obj, "/metadata/generation")
        .cloned()
        .unwrap_or(json!(1))
}

/// A Deployment condition, keeping the previous one's times while its status (and, for
/// `lastUpdateTime`, its reason) stays the same.
fn condition(kind: &str, status: bool, reason: &str, message: &str, previous: &Value) -> Value {
    let s = if status { "True" } else { "False" };
    let now = meta::now();
    let old = previous
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind));
    let transition = old
        .filter(|c| c["status"] == s)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or(json!(now));
    let update = old
        .filter(|c| c["status"] == s && c["reason"] == reason)
        .map(|c| c["lastUpdateTime"].clone())
        .unwrap_or(json!(now));
    json!({"type": kind, "status": s, "reason": reason, "message": message, "lastTransitionTime": transition, "lastUpdateTime": update})
}

/// A Deployment's status from its ReplicaSets (`sets`), the current one being `new_rs`.
pub(crate) fn deployment_status(
    d: &Value,
    rs_name: &str,
    new_rs: &Value,
    sets: &[Arc<Value>],
) -> Value {
    let want = replicas(d);
    let sum = |f: &str| {
        sets.iter()
            .map(|rs| rs["status"][f].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    let updated = meta::at(new_rs, "/status/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let new_available = meta::at(new_rs, "/status/availableReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let (total, ready, available) = (
        sum("replicas"),
        sum("readyReplicas"),
        sum("availableReplicas"),
    );
    let conds = meta::at(d, "/status/conditions")
        .cloned()
        .unwrap_or(json!([]));
    let complete = updated == want && total == want && new_available == want;
    let available_cond = condition(
        "Available",
        available >= want,
        if available >= want {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available >= want {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        &conds,
    );
    let progressing = condition(
        "Progressing",
        true,
        if complete {
            "NewReplicaSetAvailable"
        } else {
            "ReplicaSetUpdated"
        },
        &format!(
            "ReplicaSet \"{rs_name}\" {}",
            if complete {
                "has successfully progressed."
            } else {
                "is progressing."
            }
        ),
        &conds,
    );
    let mut status = json!({
        "observedGeneration": generation(d), "replicas": total, "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": available, "conditions": [available_cond, progressing],
    });
    if total > available {
        status["unavailableReplicas"] = json!(total - available);
    }
    status
}

/// A ReplicaSet's status from its active (not deleting, not terminal) pods.
pub(crate) fn replica_set_status(rs: &Value, pods: &[Arc<Value>]) -> Value {
    let selector = LabelSelector::from_object(&rs["spec"]["template"]["metadata"]);
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let labeled = pods.iter().filter(|p| selector.matches(p)).count();
    json!({
        "replicas": pods.len(), "fullyLabeledReplicas": labeled, "readyReplicas": ready,
        "availableReplicas": ready, "observedGeneration": generation(rs),
    })
}

/// A StatefulSet's status from its pods (not deleting), `outdated` of them on an older revision.
pub(crate) fn stateful_set_status(
    sts: &Value,
    pods: &[Arc<Value>],
    outdated: usize,
    revision: &str,
) -> Value {
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let updated = pods.len() - outdated;
    let current_revision = if outdated == 0 {
        revision
    } else {
        meta::at(sts, "/status/currentRevision")
            .and_then(Value::as_str)
            .unwrap_or(revision)
    };
    json!({
        "observedGeneration": generation(sts), "replicas": pods.len(), "readyReplicas": ready,
        "currentReplicas": if outdated == 0 { pods.len() } else { outdated },
        "updatedReplicas": updated, "availableReplicas": ready,
        "currentRevision": current_revision, "updateRevision": revision, "collisionCount": 0,
    })
}

/// A DaemonSet's status from its pods (not deleting) and the number of eligible nodes.
pub(crate) fn daemon_set_status(
    ds: &Value,
    pods: &[Arc<Value>],
    eligible: usize,
    hash: &str,
) -> Value {
    let ready = pods.iter().filter(|p| is_ready(p)).count();
    let updated = pods
        .iter()
        .filter(|p| meta::str_at(p, "/metadata/labels/controller-revision-hash") == hash)
        .count();
    json!({
        "observedGeneration": generation(ds), "desiredNumberScheduled": eligible,
        "currentNumberScheduled": pods.len(), "numberMisscheduled": 0, "numberReady": ready,
        "updatedNumberScheduled": updated, "numberAvailable": ready,
    })
}

/// Whether a Job's pod still counts as active.
pub(super) fn is_job_active(pod: &Value) -> bool {
    !is_terminal(pod) && !meta::is_deleting(pod)
}

/// Whether the Job is suspended.
pub(super) fn is_suspended(j: &Value) -> bool {
    meta::at(j, "/spec/suspend").and_then(Value::as_bool) == Some(true)
}

/// A running Job's status counters from its pods (`startTime` = `now` when not yet set).
pub(crate) fn job_status(j: &Value, pods: &[Arc<Value>], now: &str) -> Value {
    let phase_count = |phase: &str| {
        pods.iter()
            .filter(|p| meta::str_at(p, "/status/phase") == phase)
            .count() as i64
    };
    let active: Vec<&Arc<Value>> = pods.iter().filter(|p| is_job_active(p)).collect();
    let mut status = json!({
        "active": active.len(), "succeeded": phase_count("Succeeded"), "failed": phase_count("Failed"),
        "ready": active.iter().filter(|p| is_ready(p)).count(), "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    if meta::at(j, "/status/startTime").is_none() && !is_suspended(j) {
        status["startTime"] = json!(now);
    }
    status
}
