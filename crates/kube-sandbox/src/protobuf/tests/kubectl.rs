//! Request bodies recorded from real kubectl, decoded and compared with what its JSON would say.

use serde_json::{Value, json};

use super::super::decode_request;

/// Bodies real kubectl 1.32.4 sent (see `testdata/README.md`), with their apiVersion and kind.
const KUBECTL_BODIES: &[(&str, &[u8], &str, &str)] = &[
    (
        "auth can-i",
        include_bytes!("../testdata/auth-can-i.pb"),
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    ),
    (
        "create clusterrole",
        include_bytes!("../testdata/create-clusterrole.pb"),
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
    ),
    (
        "create configmap",
        include_bytes!("../testdata/create-configmap.pb"),
        "v1",
        "ConfigMap",
    ),
    (
        "create cronjob",
        include_bytes!("../testdata/create-cronjob.pb"),
        "batch/v1",
        "CronJob",
    ),
    (
        "create deployment",
        include_bytes!("../testdata/create-deployment-replicas-0.pb"),
        "apps/v1",
        "Deployment",
    ),
    (
        "create job --from",
        include_bytes!("../testdata/create-job-from-cronjob.pb"),
        "batch/v1",
        "Job",
    ),
    (
        "create namespace",
        include_bytes!("../testdata/create-namespace.pb"),
        "v1",
        "Namespace",
    ),
    (
        "create rolebinding",
        include_bytes!("../testdata/create-rolebinding.pb"),
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
    ),
    (
        "create secret",
        include_bytes!("../testdata/create-secret-generic.pb"),
        "v1",
        "Secret",
    ),
    (
        "create service",
        include_bytes!("../testdata/create-service-nodeport.pb"),
        "v1",
        "Service",
    ),
    (
        "create token",
        include_bytes!("../testdata/create-token.pb"),
        "authentication.k8s.io/v1",
        "TokenRequest",
    ),
];

fn kubectl_body(command: &str) -> Value {
    let (_, bytes, _, _) = KUBECTL_BODIES
        .iter()
        .find(|(c, ..)| *c == command)
        .unwrap_or_else(|| panic!("no captured body for {command}"));
    decode_request(bytes).unwrap_or_else(|e| panic!("{command}: {e}"))
}

#[test]
fn every_captured_kubectl_body_decodes_with_its_kind() {
    for (command, bytes, api_version, kind) in KUBECTL_BODIES {
        let json = decode_request(bytes).unwrap_or_else(|e| panic!("{command}: {e}"));
        assert_eq!(json["apiVersion"], json!(api_version), "{command}");
        assert_eq!(json["kind"], json!(kind), "{command}");
        assert!(json["metadata"]["creationTimestamp"].is_null(), "{command}");
    }
}

#[test]
fn kubectl_create_deployment_keeps_replicas_zero() {
    let json = kubectl_body("create deployment");

    assert_eq!(json["metadata"]["name"], json!("web"));
    assert_eq!(json["spec"]["replicas"], json!(0));
    assert_eq!(
        json["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let container = &json["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], json!("nginx"));
    assert_eq!(container["ports"][0]["containerPort"], json!(80));
}

#[test]
fn kubectl_create_job_from_cronjob_has_its_owner_reference() {
    let json = kubectl_body("create job --from");

    assert_eq!(
        json["metadata"]["ownerReferences"],
        json!([{
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": "nightly",
            "uid": "u1",
            "controller": true
        }])
    );
    assert_eq!(
        json["metadata"]["annotations"],
        json!({"cronjob.kubernetes.io/instantiate": "manual"})
    );
    assert_eq!(
        json["spec"]["template"]["spec"]["restartPolicy"],
        json!("Never")
    );
}

#[test]
fn kubectl_generators_decode_to_their_json() {
    assert_eq!(
        kubectl_body("create clusterrole")["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    );
    assert_eq!(kubectl_body("create secret")["data"], json!({"a": "Yg=="}));
    assert_eq!(kubectl_body("create configmap")["data"], json!({"x": "y"}));
    assert_eq!(
        kubectl_body("create cronjob")["spec"]["schedule"],
        json!("*/5 * * * *")
    );
    let service = kubectl_body("create service");
    assert_eq!(service["spec"]["type"], json!("NodePort"));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], json!("http"));
    assert_eq!(
        kubectl_body("create rolebinding")["subjects"],
        json!([{"kind": "ServiceAccount", "name": "sa", "namespace": "default"}])
    );
    assert_eq!(
        kubectl_body("auth can-i")["spec"],
        json!({"resourceAttributes": {"namespace": "default", "resource": "pods", "verb": "get"}})
    );
    let token = kubectl_body("create token");
    assert_eq!(token["spec"], json!({}));
    assert_eq!(
        token["status"],
        json!({"token": "", "expirationTimestamp": null})
    );
}

#[test]
fn damaged_kubectl_bodies_fail_without_panicking() {
    for (command, bytes, ..) in KUBECTL_BODIES {
        for cut in 0..bytes.len() {
            // A prefix may end on a field boundary and decode; it must never panic.
            let _ = decode_request(&bytes[..cut]);
        }
        for at in 0..bytes.len() {
            for flip in [0x80, 0xff] {
                let mut damaged = bytes.to_vec();
                damaged[at] ^= flip;
                let _ = decode_request(&damaged);
            }
        }
        assert!(
            decode_request(&bytes[..bytes.len() - 1]).is_err(),
            "{command}"
        );
    }
}
