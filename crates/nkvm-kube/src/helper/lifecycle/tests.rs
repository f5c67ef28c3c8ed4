use super::*;
use serde_json::json;

fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "h", "namespace": "ns", "uid": "u1"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "helper"}]},
        "status": status,
    }))
    .expect("a pod")
}

#[test]
fn a_running_pod_reports_its_node() {
    let p = pod(json!({"phase": "Running",
        "containerStatuses": [{"name": "helper", "image": "i", "imageID": "", "ready": true,
            "restartCount": 0, "state": {"running": {}}}]}));
    assert_eq!(
        judge(&p),
        Ok(Some(RunningPod {
            namespace: "ns".into(),
            name: "h".into(),
            node: "node-a".into(),
            uid: "u1".into()
        }))
    );
}

#[test]
fn a_pending_pod_keeps_waiting_but_an_image_pull_failure_does_not() {
    let creating = pod(json!({"phase": "Pending",
        "containerStatuses": [{"name": "helper", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
    assert_eq!(judge(&creating), Ok(None));
    let pulling = pod(json!({"phase": "Pending",
        "containerStatuses": [{"name": "helper", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
            "message": "Back-off pulling image \"i\""}}}]}));
    assert!(matches!(
        judge(&pulling),
        Err(WaitProblem::CannotStart { reason, .. }) if reason == "ImagePullBackOff"
    ));
    let failed = pod(json!({"phase": "Failed", "reason": "DeadlineExceeded"}));
    assert!(matches!(judge(&failed), Err(WaitProblem::Ended { .. })));
}

#[test]
fn diagnostics_read_as_one_line_with_advice() {
    let d = PodDiagnostics {
        phase: Some("Pending".into()),
        node: None,
        unschedulable: Some("Unschedulable: 0/2 nodes are available".into()),
        waiting: vec![],
        events: vec![EventLine {
            type_: "Warning".into(),
            reason: "FailedScheduling".into(),
            message: "0/2 nodes are available".into(),
            count: 3,
        }],
        events_error: None,
    };
    assert_eq!(
        d.to_string(),
        "phase Pending, no node; events: [Warning FailedScheduling x3: 0/2 nodes are available]"
    );
    assert!(d.advice().contains("no node can take the pod"));
}
