//! Tests of the protobuf request decoder: real messages built with `k8s-pb`, encoded by prost,
//! wrapped as kubectl wraps them, and decoded back into Kubernetes JSON.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};

use super::decode_request;
use super::schema::{self, FieldType, WELL_KNOWN};
use super::well_known::go_duration;

mod kubectl;
mod malformed;

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}`, as kubectl sends a typed object.
fn body(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    envelope(api_version, kind, object.encode_to_vec())
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn decode(api_version: &str, kind: &str, object: &impl Message) -> Value {
    match decode_request(&body(api_version, kind, object)) {
        Ok(value) => value,
        Err(e) => panic!("decoding {api_version} {kind} failed: {e}"),
    }
}

fn named(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn quantity(s: &str) -> Quantity {
    Quantity {
        string: Some(s.to_owned()),
    }
}

fn time(seconds: i64) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    })
}

/// 2026-11-26T00:00:00Z.
const NOV_26_2026: i64 = 1_795_651_200;

#[test]
fn namespace_gets_api_version_kind_and_go_style_metadata() {
    // Go writes every non-pointer field: empty strings, generation 0, a zero creationTimestamp.
    let namespace = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            name: Some("shop".into()),
            generate_name: Some(String::new()),
            namespace: Some(String::new()),
            resource_version: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            labels: string_map(&[("team", "a")]),
            ..Default::default()
        }),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus::default()),
    };

    let json = decode("v1", "Namespace", &namespace);

    assert_eq!(
        json,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "shop",
                "generation": 0,
                "creationTimestamp": null,
                "labels": {"team": "a"}
            },
            "spec": {},
            "status": {}
        })
    );
}

#[test]
fn config_map_data_becomes_a_json_object() {
    let config_map = core::ConfigMap {
        metadata: named("settings"),
        data: string_map(&[("mode", "fast"), ("empty", "")]),
        binary_data: [("blob".to_owned(), vec![0u8, 1, 2])].into(),
        immutable: Some(true),
    };

    let json = decode("v1", "ConfigMap", &config_map);

    assert_eq!(json["data"], json!({"mode": "fast", "empty": ""}));
    assert_eq!(json["binaryData"], json!({"blob": "AAEC"}));
    assert_eq!(json["immutable"], json!(true));
}

#[test]
fn secret_bytes_data_is_base64_and_type_is_kept() {
    let secret = core::Secret {
        metadata: named("creds"),
        data: [("password".to_owned(), b"s3cr3t!".to_vec())].into(),
        r#type: Some("kubernetes.io/basic-auth".into()),
        ..Default::default()
    };

    let json = decode("v1", "Secret", &secret);

    assert_eq!(json["data"], json!({"password": "czNjcjN0IQ=="}));
    assert_eq!(json["type"], json!("kubernetes.io/basic-auth"));
    assert_eq!(json["metadata"]["name"], json!("creds"));
}

#[test]
fn token_request_has_audiences_and_expiration_seconds() {
    let request = authn::TokenRequest {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authn::TokenRequestSpec {
            audiences: strings(&["https://kubernetes.default.svc", "vault"]),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        status: Some(authn::TokenRequestStatus::default()),
    };

    let json = decode("authentication.k8s.io/v1", "TokenRequest", &request);

    assert_eq!(json["kind"], json!("TokenRequest"));
    assert_eq!(json["apiVersion"], json!("authentication.k8s.io/v1"));
    assert_eq!(
        json["spec"],
        json!({"audiences": ["https://kubernetes.default.svc", "vault"], "expirationSeconds": 3600})
    );
    assert_eq!(json["status"], json!({}));
}

fn backup_job() -> batch::Job {
    let container = core::Container {
        name: Some("tar".into()),
        image: Some("busybox".into()),
        command: strings(&["sh", "-c", "tar c /data"]),
        env: vec![core::EnvVar {
            name: Some("MODE".into()),
            value: Some("full".into()),
            value_from: None,
        }],
        resources: Some(core::ResourceRequirements {
            limits: [("memory".to_owned(), quantity("128Mi"))].into(),
            requests: [("cpu".to_owned(), quantity("100m"))].into(),
            claims: vec![],
        }),
        ports: vec![core::ContainerPort {
            name: Some("metrics".into()),
            container_port: Some(9090),
            protocol: Some("TCP".into()),
            ..Default::default()
        }],
        security_context: Some(core::SecurityContext {
            run_as_user: Some(1000),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let volume = core::Volume {
        name: Some("data".into()),
        volume_source: Some(core::VolumeSource {
            persistent_volume_claim: Some(core::PersistentVolumeClaimVolumeSource {
                claim_name: Some("shop-data".into()),
                read_only: Some(true),
            }),
            ..Default::default()
        }),
    };
    batch::Job {
        metadata: Some(meta::ObjectMeta {
            name: Some("backup".into()),
            namespace: Some("shop".into()),
            creation_timestamp: time(NOV_26_2026),
            ..Default::default()
        }),
        spec: Some(batch::JobSpec {
            backoff_limit: Some(0),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta::default()),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    volumes: vec![volume],
                    restart_policy: Some("Never".into()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[test]
fn job_pod_template_decodes_containers_volumes_and_security_context() {
    let json = decode("batch/v1", "Job", &backup_job());

    assert_eq!(
        json["metadata"]["creationTimestamp"],
        json!("2026-11-26T00:00:00Z")
    );
    assert_eq!(json["metadata"]["namespace"], json!("shop"));
    // A pointer set to zero must survive: backoffLimit 0 means "never retry".
    assert_eq!(json["spec"]["backoffLimit"], json!(0));
    let pod = &json["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], json!("Never"));
    assert_eq!(
        pod["containers"][0],
        json!({
            "name": "tar",
            "image": "busybox",
            "command": ["sh", "-c", "tar c /data"],
            "env": [{"name": "MODE", "value": "full"}],
            "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
            "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
            "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}
        })
    );
    // VolumeSource is embedded in Go: its fields sit beside the volume's name in JSON.
    assert_eq!(
        pod["volumes"],
        json!([{
            "name": "data",
            "persistentVolumeClaim": {"claimName": "shop-data", "readOnly": true}
        }])
    );
}

#[test]
fn service_target_port_is_a_number_or_a_string() {
    let port = |name: &str, target: IntOrString| core::ServicePort {
        name: Some(name.into()),
        port: Some(80),
        target_port: Some(target),
        node_port: Some(0),
        ..Default::default()
    };
    let service = core::Service {
        metadata: named("web"),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port(
                    "by-number",
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: Some(String::new()),
                    },
                ),
                port(
                    "by-name",
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("http".into()),
                    },
                ),
            ],
            selector: string_map(&[("app", "web")]),
            cluster_ip: Some("10.96.0.10".into()),
            r#type: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: None,
    };

    let json = decode("v1", "Service", &service);

    let ports = &json["spec"]["ports"];
    assert_eq!(ports[0]["targetPort"], json!(8080));
    assert_eq!(ports[1]["targetPort"], json!("http"));
    assert_eq!(ports[0]["nodePort"], json!(0));
    assert_eq!(json["spec"]["clusterIP"], json!("10.96.0.10"));
    assert_eq!(json["spec"]["selector"], json!({"app": "web"}));
}

#[test]
fn role_binding_has_subjects_and_role_ref() {
    let binding = rbac::RoleBinding {
        metadata: named("viewers"),
        subjects: vec![
            rbac::Subject {
                kind: Some("ServiceAccount".into()),
                api_group: Some(String::new()),
                name: Some("backup".into()),
                namespace: Some("shop".into()),
            },
            rbac::Subject {
                kind: Some("User".into()),
                api_group: Some("rbac.authorization.k8s.io".into()),
                name: Some("alice".into()),
                namespace: None,
            },
        ],
        role_ref: Some(rbac::RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: Some("ClusterRole".into()),
            name: Some("view".into()),
        }),
    };

    let json = decode("rbac.authorization.k8s.io/v1", "RoleBinding", &binding);

    assert_eq!(
        json["subjects"],
        json!([
            {"kind": "ServiceAccount", "name": "backup", "namespace": "shop"},
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}
        ])
    );
    assert_eq!(
        json["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"})
    );
}

#[test]
fn required_empty_strings_are_kept() {
    // RoleRef.apiGroup has no omitempty in Go; an empty one stays in the JSON.
    let binding = rbac::ClusterRoleBinding {
        metadata: named("odd"),
        subjects: vec![],
        role_ref: Some(rbac::RoleRef {
            api_group: Some(String::new()),
            kind: Some("ClusterRole".into()),
            name: Some("view".into()),
        }),
    };

    let json = decode(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        &binding,
    );

    assert_eq!(json["roleRef"]["apiGroup"], json!(""));
}

#[test]
fn eviction_carries_delete_options_and_delete_options_decode_under_any_version() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        propagation_policy: Some("Foreground".into()),
        dry_run: strings(&["All"]),
        ..Default::default()
    };
    let eviction = policy::Eviction {
        metadata: Some(meta::ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        }),
        delete_options: Some(options.clone()),
    };

    let json = decode("policy/v1", "Eviction", &eviction);
    let alone = decode("apps/v1", "DeleteOptions", &options);

    let expected =
        json!({"gracePeriodSeconds": 0, "propagationPolicy": "Foreground", "dryRun": ["All"]});
    assert_eq!(json["deleteOptions"], expected);
    assert_eq!(alone["kind"], json!("DeleteOptions"));
    assert_eq!(alone["apiVersion"], json!("apps/v1"));
    assert_eq!(alone["dryRun"], json!(["All"]));
}

#[test]
fn event_micro_time_has_six_fractional_digits() {
    let event = core::Event {
        metadata: named("web.1"),
        first_timestamp: time(NOV_26_2026),
        event_time: Some(meta::MicroTime {
            seconds: Some(NOV_26_2026),
            nanos: Some(123_456_789),
        }),
        count: Some(2),
        ..Default::default()
    };

    let json = decode("v1", "Event", &event);

    assert_eq!(json["eventTime"], json!("2026-11-26T00:00:00.123456Z"));
    assert_eq!(json["firstTimestamp"], json!("2026-11-26T00:00:00Z"));
    assert_eq!(json["count"], json!(2));
}

#[test]
fn raw_extension_is_embedded_as_json() {
    let revision = apps::ControllerRevision {
        metadata: named("web-7d9f"),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"replicas":3}}"#.to_vec()),
        }),
        revision: Some(4),
    };

    let json = decode("apps/v1", "ControllerRevision", &revision);

    assert_eq!(json["data"], json!({"spec": {"replicas": 3}}));
    assert_eq!(json["revision"], json!(4));
}

#[test]
fn acronym_json_names_come_from_k8s_openapi() {
    let schema = schema::get().expect("embedded schema parses");
    let name_of = |message: &str, tag: u32| {
        let fields = schema
            .fields(message)
            .unwrap_or_else(|| panic!("no {message}"));
        let field = fields
            .iter()
            .find(|f| f.tag == tag)
            .unwrap_or_else(|| panic!("no {tag}"));
        field.json.clone()
    };
    assert_eq!(name_of("core.v1.PodStatus", 6), "podIP");
    assert_eq!(name_of("core.v1.PodStatus", 12), "podIPs");
    assert_eq!(
        name_of("core.v1.AwsElasticBlockStoreVolumeSource", 1),
        "volumeID"
    );
    assert_eq!(name_of("core.v1.ServiceSpec", 3), "clusterIP");
    assert_eq!(name_of("core.v1.ServiceSpec", 18), "clusterIPs");
    assert_eq!(name_of("core.v1.PodSpec", 13), "hostIPC");

    let pod = core::Pod {
        metadata: named("web-0"),
        spec: None,
        status: Some(core::PodStatus {
            pod_ip: Some("127.0.0.1".into()),
            pod_ips: vec![core::PodIp {
                ip: Some("127.0.0.1".into()),
            }],
            host_ip: Some("127.0.0.1".into()),
            ..Default::default()
        }),
    };
    let json = decode("v1", "Pod", &pod);
    assert_eq!(
        json["status"],
        json!({"podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "hostIP": "127.0.0.1"})
    );
}

#[test]
fn packed_and_unpacked_repeated_numbers_both_decode() {
    // PodSecurityContext.supplementalGroups is field 4 of PodSecurityContext (field 14 of
    // PodSpec). prost writes it unpacked (as Go does); a packed run must decode the same.
    let unpacked = core::PodSecurityContext {
        supplemental_groups: vec![5, 300],
        ..Default::default()
    };
    let packed = [0x22, 0x03, 0x05, 0xac, 0x02];
    for context in [unpacked.encode_to_vec(), packed.to_vec()] {
        let mut spec = vec![0x72, context.len() as u8];
        spec.extend(context);
        let mut pod = vec![0x12, spec.len() as u8];
        pod.extend(spec);

        let json = decode_request(&envelope("v1", "Pod", pod)).expect("decodes");

        assert_eq!(
            json["spec"]["securityContext"]["supplementalGroups"],
            json!([5, 300])
        );
    }
}

#[test]
fn unknown_fields_are_skipped() {
    let mut raw = core::ConfigMap {
        metadata: named("cm"),
        ..Default::default()
    }
    .encode_to_vec();
    // Field 99 (varint 7) and field 100 (bytes "new") from some future API version.
    raw.extend([0x98, 0x06, 0x07, 0xa2, 0x06, 0x03, b'n', b'e', b'w']);

    let json = decode_request(&envelope("v1", "ConfigMap", raw)).expect("decodes");

    assert_eq!(
        json,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}})
    );
}

#[test]
fn a_message_sent_in_two_pieces_is_merged() {
    let mut raw = core::ConfigMap {
        metadata: named("cm"),
        ..Default::default()
    }
    .encode_to_vec();
    let second = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            namespace: Some("shop".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    raw.extend(second.encode_to_vec());

    let json = decode_request(&envelope("v1", "ConfigMap", raw)).expect("decodes");

    assert_eq!(json["metadata"], json!({"name": "cm", "namespace": "shop"}));
}

#[test]
fn durations_format_like_go() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(999), "999ns");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(2_000_000), "2ms");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(90 * 1_000_000_000), "1m30s");
    assert_eq!(go_duration(3_600 * 1_000_000_000), "1h0m0s");
    assert_eq!(
        go_duration(-(3_723 * 1_000_000_000 + 500_000_000)),
        "-1h2m3.5s"
    );
}

#[test]
fn every_schema_reference_resolves() {
    let schema = schema::get().expect("embedded schema parses");
    let known = |name: &str| schema.fields(name).is_some() || WELL_KNOWN.contains(&name);
    for target in schema.kind_targets() {
        assert!(known(target), "kind maps to missing message {target}");
    }
    for (message, fields) in schema.all_messages() {
        for field in fields {
            if let FieldType::Message(inner) = &field.ty {
                assert!(
                    known(inner),
                    "{message} field {} refers to missing {inner}",
                    field.tag
                );
            }
        }
    }
    assert!(schema.kind("v1", "Pod").is_some());
    assert!(schema.kind("autoscaling/v1", "Scale").is_some());
    assert!(schema.kind("policy/v1", "Eviction").is_some());
    assert!(
        schema
            .kind("authorization.k8s.io/v1", "SelfSubjectAccessReview")
            .is_some()
    );
}

#[test]
fn times_before_1970_and_go_zero_time_format_like_go() {
    let event = core::Event {
        metadata: named("old"),
        first_timestamp: time(-62_135_596_800),
        last_timestamp: time(-86_400),
        event_time: Some(meta::MicroTime {
            seconds: Some(-1),
            nanos: Some(500_000_000),
        }),
        ..Default::default()
    };

    let json = decode("v1", "Event", &event);

    assert_eq!(json["firstTimestamp"], json!(null));
    assert_eq!(json["lastTimestamp"], json!("1969-12-31T00:00:00Z"));
    assert_eq!(json["eventTime"], json!("1969-12-31T23:59:59.500000Z"));
}
