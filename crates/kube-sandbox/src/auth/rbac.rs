//! RBAC as Kubernetes evaluates it: rules from ClusterRoles bound cluster-wide by
//! ClusterRoleBindings, and from Roles or ClusterRoles bound in one namespace by RoleBindings;
//! subjects by User, Group or ServiceAccount; `*` wildcards, `*/subresource`, resourceNames,
//! nonResourceURLs with trailing `*`; aggregated ClusterRoles. No deny rules, as in RBAC.

use super::Identity;
use crate::error::ApiError;
use crate::meta;
use crate::resources::by_plural;
use crate::selector::LabelSelector;
use crate::store::Store;
use serde_json::{Value, json};

/// What a request asks to do (Kubernetes' `authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection, impersonate, ...
    pub verb: String,
    /// API group ("" for core).
    pub api_group: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource (`exec`, `log`, `status`, ...), or "".
    pub subresource: String,
    /// Namespace, or "" for cluster scope.
    pub namespace: String,
    /// Object name, or "".
    pub name: String,
    /// Request path for non-resource requests.
    pub path: String,
    /// Whether this is about a resource (else a non-resource URL).
    pub resource_request: bool,
}

impl Attributes {
    /// A non-resource request (discovery, health): HTTP method mapped to a verb.
    pub fn non_resource(method: &str, path: &str) -> Self {
        let verb = match method {
            "GET" | "HEAD" => "get",
            "POST" => "post",
            "PUT" => "put",
            "PATCH" => "patch",
            "DELETE" => "delete",
            other => other,
        };
        Attributes {
            verb: verb.to_lowercase(),
            path: path.into(),
            ..Default::default()
        }
    }

    /// The check behind an impersonation header.
    pub fn impersonate(resource: &str, namespace: &str, name: &str) -> Self {
        let group = if resource == "uids" {
            "authentication.k8s.io"
        } else {
            ""
        };
        Attributes {
            verb: "impersonate".into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    /// A resource request built from review spec fields (`resourceAttributes`).
    pub fn from_review(spec: &Value) -> Self {
        if let Some(r) = spec.get("resourceAttributes") {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            Attributes {
                verb: s("verb"),
                api_group: s("group"),
                resource: s("resource"),
                subresource: s("subresource"),
                namespace: s("namespace"),
                name: s("name"),
                path: String::new(),
                resource_request: true,
            }
        } else {
            let r = &spec["nonResourceAttributes"];
            Attributes {
                verb: r["verb"].as_str().unwrap_or("").into(),
                path: r["path"].as_str().unwrap_or("").into(),
                ..Default::default()
            }
        }
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether one PolicyRule allows `a`.
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    if !a.resource_request {
        return strings(&rule["nonResourceURLs"]).iter().any(|u| {
            *u == "*"
                || *u == a.path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| a.path.starts_with(prefix))
        });
    }
    if !strings(&rule["apiGroups"])
        .iter()
        .any(|g| *g == "*" || *g == a.api_group)
    {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = strings(&rule["resources"]).iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = strings(&rule["resourceNames"]);
    names.is_empty() || names.contains(&a.name.as_str())
}

fn subject_matches(subject: &Value, who: &Identity, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => name == who.username,
        Some("Group") => who.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            who.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn describe_subject(subject: &Value, binding_ns: &str) -> String {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            format!("ServiceAccount \"{ns}/{name}\"")
        }
        Some(kind) => format!("{kind} \"{name}\""),
        None => format!("\"{name}\""),
    }
}

/// The rules of a ClusterRole, including those it aggregates by label selector.
fn cluster_role_rules(store: &Store, name: &str) -> Vec<Value> {
    let Some(role) = store.get(cluster_roles(), "", name) else {
        return Vec::new();
    };
    let mut rules = role["rules"].as_array().cloned().unwrap_or_default();
    if let Some(selectors) = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    {
        let (all, _) = store.list(cluster_roles(), None, None);
        for other in all.iter().filter(|r| meta::name(r) != name) {
            if selectors
                .iter()
                .any(|s| LabelSelector::from_object(s).matches(other))
            {
                rules.extend(other["rules"].as_array().cloned().unwrap_or_default());
            }
        }
    }
    rules
}

fn cluster_roles() -> &'static crate::resources::ResourceInfo {
    by_plural("rbac.authorization.k8s.io", "v1", "clusterroles").expect("served")
}

/// Every binding that applies to `who` for a request in `namespace` (cluster bindings always,
/// role bindings of that namespace), as (rules, reason text).
fn applicable_rules(store: &Store, who: &Identity, namespace: &str) -> Vec<(Vec<Value>, String)> {
    let rbac = |p| by_plural("rbac.authorization.k8s.io", "v1", p).expect("served");
    let mut out = Vec::new();
    let (crbs, _) = store.list(rbac("clusterrolebindings"), None, None);
    for b in &crbs {
        if let Some(s) = b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| subject_matches(s, who, ""))
        {
            let role = meta::str_at(b, "/roleRef/name");
            let reason = format!(
                "RBAC: allowed by ClusterRoleBinding \"{}\" of ClusterRole \"{role}\" to {}",
                meta::name(b),
                describe_subject(s, "")
            );
            out.push((cluster_role_rules(store, role), reason));
        }
    }
    if namespace.is_empty() {
        return out;
    }
    let (rbs, _) = store.list(rbac("rolebindings"), Some(namespace), None);
    for b in &rbs {
        if let Some(s) = b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| subject_matches(s, who, namespace))
        {
            let role = meta::str_at(b, "/roleRef/name");
            let (rules, kind) = if meta::str_at(b, "/roleRef/kind") == "ClusterRole" {
                (cluster_role_rules(store, role), "ClusterRole")
            } else {
                let r = store.get(rbac("roles"), namespace, role);
                (
                    r.and_then(|r| r["rules"].as_array().cloned())
                        .unwrap_or_default(),
                    "Role",
                )
            };
            let reason = format!(
                "RBAC: allowed by RoleBinding \"{}/{namespace}\" of {kind} \"{role}\" to {}",
                meta::name(b),
                describe_subject(s, namespace)
            );
            out.push((rules, reason));
        }
    }
    out
}

/// Whether RBAC allows `a` to `who`: `Some(reason)` when allowed.
pub fn authorize(store: &Store, who: &Identity, a: &Attributes) -> Option<String> {
    applicable_rules(store, who, &a.namespace)
        .into_iter()
        .find(|(rules, _)| rules.iter().any(|r| rule_allows(r, a)))
        .map(|(_, reason)| reason)
}

/// The rules `who` holds in `namespace` (for SelfSubjectRulesReview).
pub fn rules_for(store: &Store, who: &Identity, namespace: &str) -> (Vec<Value>, Vec<Value>) {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for (rules, _) in applicable_rules(store, who, namespace) {
        for r in rules {
            if r.get("nonResourceURLs")
                .and_then(Value::as_array)
                .is_some_and(|u| !u.is_empty())
            {
                non_resource_rules
                    .push(json!({"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}));
            } else {
                let mut rule = json!({"verbs": r["verbs"], "apiGroups": r["apiGroups"], "resources": r["resources"]});
                if r.get("resourceNames")
                    .and_then(Value::as_array)
                    .is_some_and(|n| !n.is_empty())
                {
                    rule["resourceNames"] = r["resourceNames"].clone();
                }
                resource_rules.push(rule);
            }
        }
    }
    (resource_rules, non_resource_rules)
}

/// The 403 a real API server returns, word for word.
pub fn forbidden(who: &Identity, a: &Attributes) -> ApiError {
    let user = &who.username;
    if !a.resource_request {
        return ApiError::forbidden_resource(
            "",
            "",
            "",
            format!("User \"{user}\" cannot {} path \"{}\"", a.verb, a.path),
        );
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let why = format!(
        "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        a.verb, a.api_group
    );
    ApiError::forbidden_resource(&a.resource, &a.api_group, &a.name, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            name: name.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    #[test]
    fn resources_do_not_grant_their_subresources() {
        let rule = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]});
        assert!(rule_allows(&rule, &attrs("list", "", "pods", "", "")));
        assert!(!rule_allows(&rule, &attrs("get", "", "pods", "log", "p")));
        assert!(!rule_allows(&rule, &attrs("delete", "", "pods", "", "p")));
        assert!(!rule_allows(&rule, &attrs("list", "apps", "pods", "", "")));
        let exec = json!({"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]});
        assert!(rule_allows(
            &exec,
            &attrs("create", "", "pods", "exec", "p")
        ));
        let any_status = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/status"]});
        assert!(rule_allows(
            &any_status,
            &attrs("patch", "apps", "deployments", "status", "d")
        ));
        assert!(!rule_allows(
            &any_status,
            &attrs("patch", "apps", "deployments", "", "d")
        ));
    }

    #[test]
    fn resource_names_restrict_named_requests_only() {
        let rule = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"]});
        assert!(rule_allows(
            &rule,
            &attrs("get", "", "configmaps", "", "cfg")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("get", "", "configmaps", "", "other")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("list", "", "configmaps", "", "")
        ));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let rule = json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*", "/version"]});
        assert!(rule_allows(
            &rule,
            &Attributes::non_resource("GET", "/apis/apps/v1")
        ));
        assert!(rule_allows(
            &rule,
            &Attributes::non_resource("GET", "/version")
        ));
        assert!(!rule_allows(
            &rule,
            &Attributes::non_resource("GET", "/api")
        ));
    }

    #[test]
    fn the_forbidden_message_has_the_api_server_shape() {
        let sa = Identity::service_account("ns", "sa", "u");
        let e = forbidden(&sa, &attrs("list", "", "pods", "", ""));
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"pods\" in API group \"\" in the namespace \"ns\""
        );
        let e = forbidden(&sa, &attrs("create", "", "pods", "exec", "p"));
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"ns\""
        );
        let mut cluster_wide = attrs("list", "apps", "deployments", "", "");
        cluster_wide.namespace.clear();
        let e = forbidden(&sa, &cluster_wide);
        assert_eq!(
            e.message,
            "deployments.apps is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let e = forbidden(&sa, &Attributes::non_resource("GET", "/metrics"));
        assert_eq!(
            e.message,
            "forbidden: User \"system:serviceaccount:ns:sa\" cannot get path \"/metrics\""
        );
    }
}
