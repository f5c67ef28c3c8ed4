//! Who is asking and what they may do: bearer-token authentication (the admin token and
//! minted ServiceAccount tokens), impersonation, and RBAC authorization of every request.

pub mod rbac;
pub mod reviews;
pub mod tokens;

use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use http::HeaderMap;
use std::collections::BTreeMap;

pub use rbac::Attributes;

/// The user the cluster-admin token authenticates as.
pub const ADMIN_USER: &str = "sandbox-admin";

/// An authenticated user, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (`system:serviceaccount:ns:name` for ServiceAccounts).
    pub username: String,
    /// Stable id, if any.
    pub uid: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
    /// Extra attributes (credential ids, bound pod).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// The cluster admin (`system:masters`).
    pub fn admin() -> Self {
        Identity {
            username: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    /// A request without credentials (only public paths accept it).
    pub fn anonymous() -> Self {
        Identity {
            username: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }

    /// A ServiceAccount, with the groups Kubernetes gives it.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Identity {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// `(namespace, name)` when this is a ServiceAccount.
    pub fn service_account_name(&self) -> Option<(&str, &str)> {
        self.username
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// Authenticates a request. Without credentials only `public` paths are served (as
/// `system:anonymous`); a missing, unknown or expired token is 401. Impersonation headers
/// are honoured when the caller may impersonate.
pub fn authenticate(cluster: &Cluster, headers: &HeaderMap, public: bool) -> ApiResult<Identity> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let identity = match bearer {
        None if public => return Ok(Identity::anonymous()),
        None => return Err(ApiError::unauthorized()),
        Some(t) if t == cluster.config.admin_token => Identity::admin(),
        Some(t) => cluster
            .tokens
            .authenticate(cluster, t)
            .ok_or_else(ApiError::unauthorized)?,
    };
    impersonate(cluster, identity, headers)
}

/// Applies `Impersonate-User`/`-Group`/`-Uid`/`-Extra-*` after checking the `impersonate` verb.
fn impersonate(cluster: &Cluster, caller: Identity, headers: &HeaderMap) -> ApiResult<Identity> {
    let users = header_values(headers, "impersonate-user");
    let groups = header_values(headers, "impersonate-group");
    let Some(user) = users.first().copied() else {
        if groups.is_empty() {
            return Ok(caller);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups without a user (Impersonate-User)",
        ));
    };
    let (resource, namespace, name) = match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => ("serviceaccounts", ns, sa),
        None => ("users", "", user),
    };
    require(
        cluster,
        &caller,
        &Attributes::impersonate(resource, namespace, name),
    )?;
    for g in &groups {
        require(cluster, &caller, &Attributes::impersonate("groups", "", g))?;
    }
    let uid = headers
        .get("impersonate-uid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !uid.is_empty() {
        require(cluster, &caller, &Attributes::impersonate("uids", "", uid))?;
    }
    let mut identity = match resource {
        "serviceaccounts" => Identity::service_account(namespace, name, uid),
        _ => Identity {
            username: user.into(),
            uid: uid.into(),
            groups: Vec::new(),
            extra: BTreeMap::new(),
        },
    };
    for g in groups {
        if !identity.groups.iter().any(|x| x == g) {
            identity.groups.push(g.into());
        }
    }
    if user != "system:anonymous" && !identity.groups.iter().any(|g| g == "system:authenticated") {
        identity.groups.push("system:authenticated".into());
    }
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-") {
            let v = v.to_str().unwrap_or_default().to_string();
            identity.extra.entry(key.to_string()).or_default().push(v);
        }
    }
    Ok(identity)
}

/// Fails with Kubernetes' 403 unless RBAC allows `attrs` to `identity`.
pub fn require(cluster: &Cluster, identity: &Identity, attrs: &Attributes) -> ApiResult<()> {
    match rbac::authorize(&cluster.store, identity, attrs) {
        Some(_) => Ok(()),
        None => Err(rbac::forbidden(identity, attrs)),
    }
}
