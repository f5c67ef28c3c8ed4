//! Discovery documents: `/version`, `/api`, `/apis`, per-group resource lists, and the minimal
//! OpenAPI v3 documents that let `kubectl create/apply` rely on server-side field validation.

use crate::resources::{RESOURCES, ResourceInfo, groups};
use serde_json::{Value, json};

/// The Kubernetes version the sandbox claims to be.
pub const MINOR: &str = "32";

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "gitVersion": format!("v1.{MINOR}.0-sandbox"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = format!("{group}/{version}");
    json!({
        "name": group,
        "versions": [{"groupVersion": gv, "version": version}],
        "preferredVersion": {"groupVersion": gv, "version": version},
    })
}

/// Groups served besides the stored kinds: the review APIs.
const REVIEW_GROUPS: &[(&str, &str)] = &[
    ("authentication.k8s.io", "v1"),
    ("authorization.k8s.io", "v1"),
];

/// `GET /apis`.
pub fn group_list() -> Value {
    let mut all: Vec<(&str, &str)> = groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .collect();
    all.extend_from_slice(REVIEW_GROUPS);
    let entries: Vec<Value> = all.iter().map(|(g, v)| group_entry(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": entries})
}

/// `GET /apis/{group}`.
pub fn group(name: &str) -> Option<Value> {
    let known = groups()
        .into_iter()
        .chain(REVIEW_GROUPS.iter().copied())
        .find(|(g, _)| *g == name);
    known.map(|(g, v)| {
        let mut e = group_entry(g, v);
        e["kind"] = "APIGroup".into();
        e["apiVersion"] = "v1".into();
        e
    })
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn in_category_all(r: &ResourceInfo) -> bool {
    matches!(
        r.plural,
        "pods"
            | "services"
            | "deployments"
            | "replicasets"
            | "statefulsets"
            | "daemonsets"
            | "jobs"
            | "cronjobs"
    )
}

fn resource_entry(r: &ResourceInfo) -> Value {
    let mut e = json!({
        "name": r.plural,
        "singularName": r.singular(),
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": ALL_VERBS,
        "storageVersionHash": "",
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if in_category_all(r) {
        e["categories"] = json!(["all"]);
    }
    e
}

fn subresource(name: String, namespaced: bool, kind: &str, verbs: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs})
}

fn review_resources(group: &str) -> Vec<Value> {
    let create = &["create"][..];
    match group {
        "authentication.k8s.io" => vec![
            subresource(
                "selfsubjectreviews".into(),
                false,
                "SelfSubjectReview",
                create,
            ),
            subresource("tokenreviews".into(), false, "TokenReview", create),
        ],
        "authorization.k8s.io" => vec![
            subresource(
                "selfsubjectaccessreviews".into(),
                false,
                "SelfSubjectAccessReview",
                create,
            ),
            subresource(
                "selfsubjectrulesreviews".into(),
                false,
                "SelfSubjectRulesReview",
                create,
            ),
        ],
        _ => Vec::new(),
    }
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut list: Vec<Value> = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        list.push(resource_entry(r));
        if r.has_status {
            list.push(subresource(
                format!("{}/status", r.plural),
                r.namespaced,
                r.kind,
                &["get", "patch", "update"],
            ));
        }
        match r.plural {
            "pods" => {
                list.push(subresource(
                    "pods/exec".into(),
                    true,
                    "PodExecOptions",
                    &["create", "get"],
                ));
                list.push(subresource("pods/log".into(), true, "Pod", &["get"]));
                list.push(subresource(
                    "pods/binding".into(),
                    true,
                    "Binding",
                    &["create"],
                ));
            }
            "serviceaccounts" => {
                let mut t = subresource(
                    "serviceaccounts/token".into(),
                    true,
                    "TokenRequest",
                    &["create"],
                );
                t["group"] = "authentication.k8s.io".into();
                t["version"] = "v1".into();
                list.push(t);
            }
            "deployments" | "replicasets" | "statefulsets" => {
                let mut s = subresource(
                    format!("{}/scale", r.plural),
                    true,
                    "Scale",
                    &["get", "patch", "update"],
                );
                s["group"] = "autoscaling".into();
                s["version"] = "v1".into();
                list.push(s);
            }
            _ => {}
        }
    }
    list.extend(review_resources(group));
    if list.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

fn openapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: one entry per group version.
pub fn openapi_v3_index() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in groups() {
        let p = openapi_path(g, v);
        let url = format!(
            "/openapi/v3/{p}?hash={}",
            crate::meta::short_hash(&json!(p))
        );
        paths.insert(p, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/{api/v1 | apis/g/v}`: a PATCH operation per kind, carrying the GVK
/// extension and the `fieldValidation` parameter (exactly what kubectl's verifier looks for).
pub fn openapi_v3_group(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>()[..] {
        ["api", v] => ("", v),
        ["apis", g, v] => (g, v),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let prefix = format!("/{}", openapi_path(group, version));
        let item = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let op = json!({
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            "x-kubernetes-action": "patch",
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean"}},
            ],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(item, json!({"patch": op}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// Media type of the `/openapi/v2` protobuf answer (kubectl asks for the `@v1.0` form, which
/// Go cannot parse back as a Content-Type; servers answer with `.v1.0`).
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
