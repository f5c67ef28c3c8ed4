//! What the API server does to an object between decoding and storage: name rules, required
//! fields, and the defaults Kubernetes fills in (so `kubectl get -o yaml` looks familiar and
//! controllers can rely on them).

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::resources::ResourceInfo;
use serde_json::{Value, json};

/// An optional validation failure: `(field path, message)`.
type Cause = (String, String);

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Whether `s` is an RFC 1123 label (namespaces, services, container names).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is an RFC 1123 subdomain (most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn uses_label_names(res: &ResourceInfo) -> bool {
    matches!(res.plural, "namespaces" | "services")
}

fn validate_name(res: &ResourceInfo, name: &str) -> Option<Cause> {
    if name.is_empty() {
        return Some((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        ));
    }
    // RBAC objects accept path-segment names such as `system:controller:foo`.
    if res.group == "rbac.authorization.k8s.io" {
        let bad = name == "." || name == ".." || name.contains('/') || name.contains('%');
        return bad.then(|| {
            (
                "metadata.name".into(),
                format!("Invalid value: {name:?}: may not contain '/' or '%'"),
            )
        });
    }
    let (ok, msg) = if uses_label_names(res) {
        (is_dns1123_label(name), DNS1123_LABEL_MSG)
    } else {
        (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG)
    };
    (!ok).then(|| {
        (
            "metadata.name".into(),
            format!("Invalid value: {name:?}: {msg}"),
        )
    })
}

fn validate_labels(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) else {
        return;
    };
    for (k, v) in labels {
        let Some(v) = v.as_str() else {
            causes.push((
                format!("metadata.labels.{k}"),
                "Invalid value: label values must be strings".into(),
            ));
            continue;
        };
        let value_ok = v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && (v.is_empty()
                || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric())));
        if !value_ok {
            causes.push(("metadata.labels".to_string(), format!("Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
        }
    }
}

fn require(obj: &Value, pointer: &str, field: &str, causes: &mut Vec<Cause>) {
    let missing = match obj.pointer(pointer) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if missing {
        causes.push((field.to_string(), "Required value".into()));
    }
}

fn validate_pod_spec(spec: &Value, prefix: &str, causes: &mut Vec<Cause>) {
    validate_pod_spec_with(spec, prefix, &[], causes);
}

/// `extra_volumes`: names that templates provide besides `volumes` (StatefulSet claims).
fn validate_pod_spec_with(
    spec: &Value,
    prefix: &str,
    extra_volumes: &[&str],
    causes: &mut Vec<Cause>,
) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        causes.push((format!("{prefix}.containers"), "Required value".into()));
    }
    for (list, key) in [
        ("initContainers", "initContainers"),
        ("containers", "containers"),
    ] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = c["name"].as_str().unwrap_or("");
            if name.is_empty() {
                causes.push((format!("{prefix}.{key}[{i}].name"), "Required value".into()));
            } else if !is_dns1123_label(name) {
                causes.push((
                    format!("{prefix}.{key}[{i}].name"),
                    format!("Invalid value: {name:?}: {DNS1123_LABEL_MSG}"),
                ));
            }
            if c["image"].as_str().unwrap_or("").is_empty() {
                causes.push((
                    format!("{prefix}.{key}[{i}].image"),
                    "Required value".into(),
                ));
            }
            let volumes: Vec<&str> = spec
                .get("volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v["name"].as_str())
                .chain(extra_volumes.iter().copied())
                .collect();
            for (j, m) in c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let vname = m["name"].as_str().unwrap_or("");
                if !volumes.contains(&vname) {
                    causes.push((
                        format!("{prefix}.{key}[{i}].volumeMounts[{j}].name"),
                        format!("Not found: {vname:?}"),
                    ));
                }
                if !m["mountPath"].as_str().is_some_and(|p| p.starts_with('/')) {
                    causes.push((
                        format!("{prefix}.{key}[{i}].volumeMounts[{j}].mountPath"),
                        "Required value: must be an absolute path".into(),
                    ));
                }
            }
        }
    }
    if let Some(p) = spec.get("restartPolicy").and_then(Value::as_str)
        && !["Always", "OnFailure", "Never"].contains(&p)
    {
        causes.push((
            format!("{prefix}.restartPolicy"),
            format!(
                "Unsupported value: {p:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
        ));
    }
}

fn validate_selector_matches_template(obj: &Value, causes: &mut Vec<Cause>) {
    let Some(sel) = obj.pointer("/spec/selector") else {
        causes.push(("spec.selector".into(), "Required value".into()));
        return;
    };
    let selector = crate::selector::LabelSelector::from_object(sel);
    if selector.is_empty() {
        causes.push((
            "spec.selector".into(),
            "Invalid value: empty selector is invalid for deployment".into(),
        ));
    } else if !selector.matches_labels(obj.pointer("/spec/template/metadata/labels")) {
        causes.push((
            "spec.template.metadata.labels".into(),
            "Invalid value: `selector` does not match template `labels`".into(),
        ));
    }
}

/// Validates an object about to be created or replaced; 422 with every cause found.
pub fn validate(res: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    let mut causes = Vec::new();
    let name = meta::name(obj);
    if let Some(c) = validate_name(res, name) {
        causes.push(c);
    }
    validate_labels(obj, &mut causes);
    match res.plural {
        "pods" => validate_pod_spec(&obj["spec"], "spec", &mut causes),
        "persistentvolumeclaims" => {
            require(obj, "/spec/accessModes", "spec.accessModes", &mut causes);
            require(
                obj,
                "/spec/resources/requests/storage",
                "spec.resources[storage]",
                &mut causes,
            );
            for m in obj
                .pointer("/spec/accessModes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let m = m.as_str().unwrap_or("");
                if ![
                    "ReadWriteOnce",
                    "ReadOnlyMany",
                    "ReadWriteMany",
                    "ReadWriteOncePod",
                ]
                .contains(&m)
                {
                    causes.push(("spec.accessModes".into(), format!("Unsupported value: {m:?}: supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"")));
                }
            }
            if let Some(q) = obj.pointer("/spec/resources/requests/storage")
                && crate::quantity::parse_bytes(q).is_none()
            {
                causes.push((
                    "spec.resources.requests[storage]".into(),
                    format!("Invalid value: {q}: must be a quantity"),
                ));
            }
        }
        "deployments" | "replicasets" | "daemonsets" | "statefulsets" => {
            validate_selector_matches_template(obj, &mut causes);
            let claims: Vec<&str> = obj
                .pointer("/spec/volumeClaimTemplates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(meta::name)
                .collect();
            validate_pod_spec_with(
                &obj["spec"]["template"]["spec"],
                "spec.template.spec",
                &claims,
                &mut causes,
            );
        }
        "jobs" => validate_pod_spec(
            &obj["spec"]["template"]["spec"],
            "spec.template.spec",
            &mut causes,
        ),
        "cronjobs" => {
            require(obj, "/spec/schedule", "spec.schedule", &mut causes);
            validate_pod_spec(
                &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                "spec.jobTemplate.spec.template.spec",
                &mut causes,
            );
        }
        "storageclasses" => require(obj, "/provisioner", "provisioner", &mut causes),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res.kind, res.group, name, &causes))
    }
}

fn set_default(obj: &mut Value, pointer: &str, value: Value) {
    if obj.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut cur = obj;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i == parts.len() - 1 {
            cur[*part] = value;
            return;
        }
        if cur.get(*part).is_none_or(Value::is_null) {
            cur[*part] = json!({});
        }
        cur = &mut cur[*part];
    }
}

fn default_pod_spec(spec: &mut Value) {
    for (p, v) in [
        ("/restartPolicy", json!("Always")),
        ("/terminationGracePeriodSeconds", json!(30)),
        ("/dnsPolicy", json!("ClusterFirst")),
        ("/schedulerName", json!("default-scheduler")),
        ("/securityContext", json!({})),
        ("/enableServiceLinks", json!(true)),
    ] {
        set_default(spec, p, v);
    }
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let image = c["image"].as_str().unwrap_or("").to_string();
            let tagged = image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':') || last.contains('@'));
            let latest = !tagged || image.ends_with(":latest");
            set_default(
                c,
                "/imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "/terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "/terminationMessagePolicy", json!("File"));
            set_default(c, "/resources", json!({}));
            for port in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set_default(port, "/protocol", json!("TCP"));
            }
        }
    }
}

fn default_template(obj: &mut Value, template_pointer: &str) {
    if let Some(spec) = obj.pointer_mut(&format!("{template_pointer}/spec")) {
        default_pod_spec(spec);
    }
}

/// Fills in API-server defaults on create. `default_class` is the default StorageClass name.
pub fn default_on_create(res: &ResourceInfo, obj: &mut Value, default_class: Option<&str>) {
    match res.plural {
        "namespaces" => {
            let name = meta::name(obj).to_string();
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            set_default(obj, "/spec/finalizers", json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
        }
        "pods" => {
            default_pod_spec(&mut obj["spec"]);
            set_default(obj, "/spec/serviceAccountName", json!("default"));
            set_default(obj, "/spec/priority", json!(0));
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        "persistentvolumeclaims" => {
            set_default(obj, "/spec/volumeMode", json!("Filesystem"));
            if obj.pointer("/spec/storageClassName").is_none()
                && let Some(c) = default_class
            {
                obj["spec"]["storageClassName"] = json!(c);
            }
            obj["status"] = json!({"phase": "Pending"});
        }
        "persistentvolumes" => {
            set_default(obj, "/spec/persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(obj, "/spec/volumeMode", json!("Filesystem"));
            set_default(obj, "/status/phase", json!("Available"));
        }
        "deployments" => {
            for (p, v) in [
                ("/spec/replicas", json!(1)),
                ("/spec/revisionHistoryLimit", json!(10)),
                ("/spec/progressDeadlineSeconds", json!(600)),
                (
                    "/spec/strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                ),
            ] {
                set_default(obj, p, v);
            }
            default_template(obj, "/spec/template");
        }
        "replicasets" => {
            set_default(obj, "/spec/replicas", json!(1));
            default_template(obj, "/spec/template");
        }
        "statefulsets" => {
            for (p, v) in [
                ("/spec/replicas", json!(1)),
                ("/spec/podManagementPolicy", json!("OrderedReady")),
                ("/spec/revisionHistoryLimit", json!(10)),
                (
                    "/spec/updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                ),
                (
                    "/spec/persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                ),
            ] {
                set_default(obj, p, v);
            }
            for t in obj
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set_default(t, "/spec/volumeMode", json!("Filesystem"));
            }
            default_template(obj, "/spec/template");
        }
        "daemonsets" => {
            set_default(obj, "/spec/revisionHistoryLimit", json!(10));
            set_default(
                obj,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default_template(obj, "/spec/template");
        }
        "jobs" => default_job(obj),
        "cronjobs" => {
            for (p, v) in [
                ("/spec/concurrencyPolicy", json!("Allow")),
                ("/spec/suspend", json!(false)),
                ("/spec/successfulJobsHistoryLimit", json!(3)),
                ("/spec/failedJobsHistoryLimit", json!(1)),
            ] {
                set_default(obj, p, v);
            }
            default_template(obj, "/spec/jobTemplate/spec/template");
        }
        "services" => default_service(obj),
        "storageclasses" => {
            set_default(obj, "/reclaimPolicy", json!("Delete"));
            set_default(obj, "/volumeBindingMode", json!("Immediate"));
        }
        "secrets" => set_default(obj, "/type", json!("Opaque")),
        _ => {}
    }
}

/// What the API server does to every write of an object, create or update: Secrets'
/// write-only `stringData` is folded into base64 `data`.
pub fn normalize(res: &ResourceInfo, obj: &mut Value) {
    if res.plural != "secrets" {
        return;
    }
    let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    use base64::Engine;
    for (k, v) in string_data {
        let text = v.as_str().unwrap_or_default().to_string();
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Job defaults, including the controller-uid selector the API server generates.
fn default_job(obj: &mut Value) {
    for (p, v) in [
        ("/spec/parallelism", json!(1)),
        ("/spec/completions", json!(1)),
        ("/spec/backoffLimit", json!(6)),
        ("/spec/completionMode", json!("NonIndexed")),
        ("/spec/suspend", json!(false)),
    ] {
        set_default(obj, p, v);
    }
    if obj.pointer("/spec/template/spec/restartPolicy").is_none() {
        obj["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    }
    default_template(obj, "/spec/template");
    // The uid is not known yet; the store assigns it. Pre-assign one so the selector can use it.
    let uid = meta::new_uid();
    obj["metadata"]["uid"] = json!(uid);
    let name = meta::name(obj).to_string();
    if obj.pointer("/spec/selector").is_none() {
        obj["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("controller-uid", uid.as_str()),
            ("job-name", name.as_str()),
        ] {
            labels[k] = json!(v);
        }
    }
}

fn default_service(obj: &mut Value) {
    set_default(obj, "/spec/type", json!("ClusterIP"));
    set_default(obj, "/spec/sessionAffinity", json!("None"));
    if obj.pointer("/spec/clusterIP").is_none() {
        let n: u32 = rand::random::<u32>() % 65_000 + 2;
        obj["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", n / 256, n % 256));
    }
    let ip = obj["spec"]["clusterIP"].clone();
    set_default(obj, "/spec/clusterIPs", json!([ip]));
    set_default(obj, "/spec/ipFamilies", json!(["IPv4"]));
    set_default(obj, "/spec/ipFamilyPolicy", json!("SingleStack"));
    set_default(obj, "/spec/internalTrafficPolicy", json!("Cluster"));
    let node_ports = matches!(meta::str_at(obj, "/spec/type"), "NodePort" | "LoadBalancer");
    for port in obj
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        set_default(port, "/protocol", json!("TCP"));
        // Protobuf bodies carry Go's zero values; 0 means "not set" for these ports.
        if port["targetPort"] == json!(0) {
            port["targetPort"] = Value::Null;
        }
        let p = port["port"].clone();
        set_default(port, "/targetPort", p);
        let unset = port
            .get("nodePort")
            .is_none_or(|n| n.is_null() || *n == json!(0));
        if node_ports && unset {
            port["nodePort"] = json!(30_000 + rand::random::<u32>() % 2_768);
        } else if !node_ports && let Some(m) = port.as_object_mut() {
            m.remove("nodePort");
        }
    }
    set_default(obj, "/status", json!({"loadBalancer": {}}));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::known;

    #[test]
    fn names_follow_rfc1123() {
        assert!(is_dns1123_label("shop-1"));
        assert!(!is_dns1123_label("Shop"));
        assert!(!is_dns1123_label("-a"));
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("a_b"));
    }

    #[test]
    fn a_pod_without_image_is_invalid_with_the_field_named() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let err = validate(known::pods(), &pod).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .contains("spec.containers[0].image: Required value"),
            "{}",
            err.message
        );
    }

    #[test]
    fn pvcs_get_the_default_storage_class() {
        let mut pvc =
            json!({"metadata": {"name": "d"}, "spec": {"accessModes": ["ReadWriteOnce"]}});
        default_on_create(known::pvcs(), &mut pvc, Some("standard"));
        assert_eq!(pvc["spec"]["storageClassName"], "standard");
        assert_eq!(pvc["status"]["phase"], "Pending");
    }
}
