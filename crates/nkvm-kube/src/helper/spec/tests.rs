use super::*;
use k8s_openapi::api::core::v1::Toleration;
use serde_json::json;

fn claim(ns: &str, name: &str) -> PvcRef {
    PvcRef::parse(&format!("{ns}/{name}")).expect("valid reference")
}

fn backup_on_node() -> HelperPodOptions {
    let mut o = HelperPodOptions::new(
        "01JD5Q7W9Z",
        claim("shop", "data"),
        HelperMode::Backup,
        "busybox:1.36",
    );
    o.node = Some("node-b".into());
    o.tolerations = vec![Toleration {
        key: Some("dedicated".into()),
        operator: Some("Equal".into()),
        value: Some("db".into()),
        effect: Some("NoSchedule".into()),
        toleration_seconds: None,
    }];
    o.active_deadline_seconds = 3600;
    o.instance = "0123456789abcdef".into();
    o
}

#[test]
fn backup_helper_on_a_consumers_node_runs_as_root_with_a_read_only_mount() {
    let pod = serde_json::to_value(pod_spec(&backup_on_node())).expect("serializes");
    let name = pod_name(HelperMode::Backup, "01JD5Q7W9Z", &claim("shop", "data"));
    assert_eq!(
        pod,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "shop",
                "labels": {
                    "app.kubernetes.io/managed-by": "nkvm",
                    "nkvm.io/instance": "0123456789abcdef",
                    "nkvm.io/job-id": "01JD5Q7W9Z",
                    "nkvm.io/mode": "backup",
                    "nkvm.io/pvc": "data",
                },
                "annotations": {
                    "nkvm.io/job-id": "01JD5Q7W9Z",
                    "nkvm.io/pvc": "shop/data",
                },
            },
            "spec": {
                "activeDeadlineSeconds": 3600,
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "nodeName": "node-b",
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "securityContext": {
                    "runAsUser": 0,
                    "runAsGroup": 0,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"},
                ],
                "containers": [{
                    "name": "helper",
                    "image": "busybox:1.36",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "trap 'exit 0' TERM INT; sleep 3600 & wait"],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]},
                    },
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            },
        })
    );
}

#[test]
fn restore_helper_as_the_consumers_user_meets_the_restricted_profile() {
    let mut o = HelperPodOptions::new(
        "job-7",
        claim("team", "pg-data"),
        HelperMode::Restore,
        "registry.example/nkvm-helper:1",
    );
    o.profile = SecurityProfile::RunAs {
        uid: 1000,
        gid: 2000,
        fs_group: Some(3000),
    };
    o.active_deadline_seconds = 600;
    let pod = serde_json::to_value(pod_spec(&o)).expect("serializes");
    let name = pod_name(HelperMode::Restore, "job-7", &claim("team", "pg-data"));
    assert!(name.starts_with("nkvm-restore-pg-data-"), "{name}");
    assert_eq!(
        pod,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "team",
                "labels": {
                    "app.kubernetes.io/managed-by": "nkvm",
                    "nkvm.io/job-id": "job-7",
                    "nkvm.io/instance": "",
                    "nkvm.io/mode": "restore",
                    "nkvm.io/pvc": "pg-data",
                },
                "annotations": {"nkvm.io/job-id": "job-7", "nkvm.io/pvc": "team/pg-data"},
            },
            "spec": {
                "activeDeadlineSeconds": 600,
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 1000,
                    "runAsGroup": 2000,
                    "fsGroup": 3000,
                    "fsGroupChangePolicy": "OnRootMismatch",
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "helper",
                    "image": "registry.example/nkvm-helper:1",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "trap 'exit 0' TERM INT; sleep 600 & wait"],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "runAsNonRoot": true,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": false}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "pg-data"}}],
            },
        })
    );
}

#[test]
fn root_restore_helper_gets_the_capabilities_to_keep_owners_and_modes() {
    let o = HelperPodOptions::new("j", claim("a", "b"), HelperMode::Restore, "img");
    let pod = serde_json::to_value(pod_spec(&o)).expect("serializes");
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {
                "drop": ["ALL"],
                "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETFCAP"],
            },
        })
    );
    assert_eq!(
        pod["spec"]["securityContext"],
        json!({"runAsUser": 0, "runAsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert!(pod["spec"].get("nodeName").is_none());
    assert!(pod["spec"].get("tolerations").is_none());
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[test]
fn names_are_dns_labels_that_keep_jobs_apart_however_long_the_claim() {
    let long = format!("{}.{}.{}", "x".repeat(60), "y".repeat(60), "z".repeat(60));
    let c = claim("ns", &long);
    let a = pod_name(HelperMode::Backup, "job-1", &c);
    let b = pod_name(HelperMode::Backup, "job-2", &c);
    let r = pod_name(HelperMode::Restore, "job-1", &c);
    for n in [&a, &b, &r] {
        assert!(is_dns_label(n), "{n} is not a DNS label");
        assert_eq!(n.len(), 63, "{n}");
    }
    assert_ne!(a, b);
    assert_ne!(a, r);
    // Same claim name in another namespace, same job: still distinct.
    assert_ne!(
        a,
        pod_name(HelperMode::Backup, "job-1", &claim("ns2", &long))
    );
    // Same inputs, same name (the engine can find its pod again).
    assert_eq!(a, pod_name(HelperMode::Backup, "job-1", &c));
    let short = pod_name(HelperMode::Backup, "job-1", &claim("ns", "db.data"));
    assert!(short.starts_with("nkvm-backup-db-data-"), "{short}");
    assert!(is_dns_label(&short));
}

#[test]
fn label_values_are_kept_when_valid_and_made_safe_and_distinct_when_not() {
    assert_eq!(label_value("data"), "data");
    assert_eq!(label_value("db.data_1"), "db.data_1");
    let long_a = format!("{}a", "p".repeat(70));
    let long_b = format!("{}b", "p".repeat(70));
    let (a, b) = (label_value(&long_a), label_value(&long_b));
    assert_ne!(a, b);
    for v in [
        &a,
        &b,
        &label_value("job/with spaces!"),
        &label_value("-x-"),
    ] {
        assert!(is_label_value(v), "{v:?} is not a label value");
        assert!(!v.is_empty());
    }
    assert!(label_value("job/with spaces!").starts_with("job-with-spaces-"));
}
