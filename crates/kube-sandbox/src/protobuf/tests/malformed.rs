//! Bodies the decoder must refuse, each with an error that says what is wrong and where.

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;

use super::super::decode_request;
use super::{body, envelope, named};

#[test]
fn body_without_magic_is_rejected() {
    let mut body = body("v1", "Namespace", &core::Namespace::default());
    body[0] = b'{';

    let err = decode_request(&body).expect_err("no magic");

    assert!(
        err.contains("does not start with the Kubernetes magic"),
        "{err}"
    );
}

#[test]
fn truncated_body_names_the_field_and_message() {
    let raw = core::Pod {
        metadata: named("web-0"),
        spec: Some(core::PodSpec {
            node_name: Some("node-1".into()),
            ..Default::default()
        }),
        status: None,
    }
    .encode_to_vec();

    let cut_envelope = decode_request(&envelope("v1", "Pod", raw.clone())[..20]);
    let cut_pod = decode_request(&envelope("v1", "Pod", raw[..raw.len() - 3].to_vec()));

    assert_eq!(
        cut_envelope.expect_err("cut"),
        "truncated protobuf field 2 of Unknown"
    );
    assert_eq!(
        cut_pod.expect_err("cut"),
        "truncated protobuf field 2 of Pod"
    );
}

#[test]
fn truncation_inside_a_nested_message_reports_its_path() {
    // A container whose name claims 9 bytes but holds 3, inside a correctly sized PodSpec.
    let container = [0x0a, 0x09, b't', b'a', b'r'];
    let mut spec = vec![0x12, container.len() as u8];
    spec.extend(container);
    let mut pod = vec![0x12, spec.len() as u8];
    pod.extend(spec);

    let err = decode_request(&envelope("v1", "Pod", pod)).expect_err("cut");

    assert_eq!(
        err,
        "truncated protobuf field 1 of Container at spec.containers[0]"
    );
}

#[test]
fn unknown_kind_is_rejected() {
    let err = decode_request(&body("apps/v1", "Foo", &core::Namespace::default()))
        .expect_err("unknown kind");

    assert_eq!(err, "unknown kind apps/v1 Foo in protobuf body");
}

#[test]
fn wrong_wire_type_is_rejected() {
    // ObjectMeta.name (field 1) sent as a varint.
    let pod = [0x0a, 0x02, 0x08, 0x01];

    let err = decode_request(&envelope("v1", "Pod", pod.to_vec())).expect_err("bad wire type");

    assert_eq!(
        err,
        "protobuf field 1 of ObjectMeta is varint, expected length-delimited at metadata"
    );
}

#[test]
fn compressed_envelopes_are_rejected() {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
        }),
        raw: Some(vec![]),
        content_encoding: Some("gzip".into()),
        content_type: None,
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());

    let err = decode_request(&body).expect_err("gzip");

    assert_eq!(err, "unsupported contentEncoding \"gzip\" in protobuf body");
}

#[test]
fn truncated_map_entry_names_the_map() {
    // ConfigMap.data (field 2) holding an entry whose value claims 5 bytes but has 1.
    let entry = [0x0a, 0x01, b'k', 0x12, 0x05, b'v'];
    let mut raw = vec![0x12, entry.len() as u8];
    raw.extend(entry);

    let err = decode_request(&envelope("v1", "ConfigMap", raw)).expect_err("cut");

    assert_eq!(err, "truncated protobuf field 2 of map entry at data");
}

#[test]
fn time_out_of_range_is_rejected() {
    let namespace = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            creation_timestamp: Some(meta::Time {
                seconds: Some(i64::MAX),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let err = decode_request(&body("v1", "Namespace", &namespace)).expect_err("out of range");

    assert!(
        err.starts_with("Time 9223372036854775807s 0ns is out of range"),
        "{err}"
    );
    assert!(err.ends_with(" at metadata.creationTimestamp"), "{err}");
}
