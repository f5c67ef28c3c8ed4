//! The ClusterRoles and ClusterRoleBindings every Kubernetes cluster starts with, as far as
//! the sandbox's users meet them: `cluster-admin` for `system:masters`, discovery, the self
//! reviews and public info for every authenticated user, and the user-facing `view`, `edit`
//! and `admin` roles (explicit rules here, where Kubernetes aggregates them; the resources are
//! the ones the sandbox serves).

use crate::api::create_object;
use crate::cluster::Cluster;
use crate::resources::by_plural;
use serde_json::{Value, json};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn viewable() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "events",
                "limitranges",
                "namespaces",
                "namespaces/status",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "pods/log",
                "pods/status",
                "resourcequotas",
                "resourcequotas/status",
                "serviceaccounts",
                "services",
                "services/status",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            READ,
        ),
        rule(
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            READ,
        ),
    ]
}

fn editable() -> Vec<Value> {
    let mut rules = viewable();
    rules.extend([
        rule(
            &[""],
            &["secrets"],
            &[
                "get",
                "list",
                "watch",
                "create",
                "delete",
                "deletecollection",
                "patch",
                "update",
            ],
        ),
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "pods",
                "services",
                "serviceaccounts",
            ],
            WRITE,
        ),
        rule(
            &[""],
            &["pods/exec", "pods/attach", "pods/portforward"],
            &["create", "get"],
        ),
        rule(
            &[""],
            &["pods/eviction", "serviceaccounts/token"],
            &["create"],
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            WRITE,
        ),
        rule(&["batch"], &["cronjobs", "jobs"], WRITE),
    ]);
    rules
}

fn administrable() -> Vec<Value> {
    let mut rules = editable();
    rules.push(rule(
        &["rbac.authorization.k8s.io"],
        &["rolebindings", "roles"],
        &[
            "get",
            "list",
            "watch",
            "create",
            "delete",
            "deletecollection",
            "patch",
            "update",
        ],
    ));
    rules
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules,
    })
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// Creates the default roles and bindings.
pub fn seed(cluster: &Cluster) {
    let roles = by_plural("rbac.authorization.k8s.io", "v1", "clusterroles").expect("served");
    let bindings =
        by_plural("rbac.authorization.k8s.io", "v1", "clusterrolebindings").expect("served");
    let discovery_urls = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let public_urls = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let objects = [
        (
            roles,
            cluster_role(
                "cluster-admin",
                vec![
                    rule(&["*"], &["*"], &["*"]),
                    json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
                ],
            ),
        ),
        (
            roles,
            cluster_role(
                "system:discovery",
                vec![json!({"nonResourceURLs": discovery_urls, "verbs": ["get"]})],
            ),
        ),
        (
            roles,
            cluster_role(
                "system:public-info-viewer",
                vec![json!({"nonResourceURLs": public_urls, "verbs": ["get"]})],
            ),
        ),
        (
            roles,
            cluster_role(
                "system:basic-user",
                vec![
                    rule(
                        &["authorization.k8s.io"],
                        &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                        &["create"],
                    ),
                    rule(
                        &["authentication.k8s.io"],
                        &["selfsubjectreviews"],
                        &["create"],
                    ),
                ],
            ),
        ),
        (roles, cluster_role("view", viewable())),
        (roles, cluster_role("edit", editable())),
        (roles, cluster_role("admin", administrable())),
        (
            bindings,
            binding("cluster-admin", "cluster-admin", &["system:masters"]),
        ),
        (
            bindings,
            binding(
                "system:discovery",
                "system:discovery",
                &["system:authenticated"],
            ),
        ),
        (
            bindings,
            binding(
                "system:basic-user",
                "system:basic-user",
                &["system:authenticated"],
            ),
        ),
        (
            bindings,
            binding(
                "system:public-info-viewer",
                "system:public-info-viewer",
                &["system:authenticated", "system:unauthenticated"],
            ),
        ),
    ];
    for (res, obj) in objects {
        if let Err(e) = create_object(cluster, res, None, obj, false) {
            tracing::error!(error = %e, "seeding RBAC defaults failed");
        }
    }
}
