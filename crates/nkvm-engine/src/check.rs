//! `nkvm check`: proves the connection and reports what the credentials may do where nkvm
//! will work.

use crate::{App, EngineError};
use nkvm_kube::access::{self, Grant};
use serde::Serialize;

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// API server URL.
    pub server: String,
    /// Server version.
    pub version: String,
    /// Auth mode used.
    pub auth_mode: String,
    /// Kubeconfig context used, if any.
    pub context: Option<String>,
    /// Stable cluster id.
    pub cluster_id: String,
    /// User name the cluster sees (when it answers SelfSubjectReview).
    pub identity: Option<String>,
    /// The namespace allowlist in force.
    pub allowlist: String,
    /// Whether claims can be listed across all namespaces.
    pub list_claims_cluster_wide: bool,
    /// Per namespace (or "" for cluster scope when no allowlist), each needed permission.
    pub grants: Vec<Grant>,
}

impl CheckReport {
    /// Whether every needed permission is granted.
    pub fn all_allowed(&self) -> bool {
        self.grants.iter().all(|g| g.allowed)
    }
}

impl App {
    /// Checks identity and permissions in every allowed namespace (cluster scope without an
    /// allowlist).
    pub async fn check(&self) -> Result<CheckReport, EngineError> {
        let client = &self.conn.client;
        let identity = access::whoami(client).await;
        let list_all = access::Need {
            verb: "list",
            resource: "persistentvolumeclaims",
            subresource: "",
            purpose: "inventory",
        };
        let list_claims_cluster_wide = access::can_i(client, "", &list_all)
            .await
            .map_err(EngineError::Access)?;
        let scopes: Vec<String> = if self.settings.allowlist.is_everything() {
            vec![String::new()]
        } else {
            self.settings
                .allowlist
                .namespaces()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let mut grants = Vec::new();
        for ns in scopes {
            grants.extend(
                access::check_namespace(client, &ns)
                    .await
                    .map_err(EngineError::Access)?,
            );
        }
        let info = &self.conn.info;
        Ok(CheckReport {
            server: info.server.clone(),
            version: info.version.clone(),
            auth_mode: info.mode.to_string(),
            context: info.context.clone(),
            cluster_id: info.id.clone(),
            identity,
            allowlist: self.settings.allowlist.to_string(),
            list_claims_cluster_wide,
            grants,
        })
    }
}
