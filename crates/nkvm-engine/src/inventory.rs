//! The PVC inventory: discovery's claims with owners and consumers, each with its last
//! successful backup and whether nkvm can back it up now (and why not).

use crate::{App, EngineError};
use nkvm_domain::{Allowlist, Consumer, PvcRecord, ResourceName};
use nkvm_kube::discovery::{self, DiscoveryOptions, ResolvedClaim};

/// Which namespaces an inventory covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every allowed namespace.
    AllAllowed,
    /// One namespace (must be allowed).
    Namespace(ResourceName),
}

fn quantity(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Whether a claim can be backed up now: `(backupable, reason)`.
pub fn backupability(allowlist: &Allowlist, r: &ResolvedClaim) -> (bool, String) {
    let c = &r.claim;
    let phase = c.status.phase.as_deref().unwrap_or("Pending");
    if !allowlist.allows(&c.metadata.namespace) {
        return (
            false,
            "namespace not in the allowlist (NKVM_NAMESPACES)".into(),
        );
    }
    if phase != "Bound" {
        return (
            false,
            format!(
                "not bound (phase {phase}): no volume to read yet; mounting it now could provision an empty one"
            ),
        );
    }
    if c.spec.volume_mode.as_deref() == Some("Block") {
        return (
            false,
            "volumeMode Block: nkvm archives filesystems only".into(),
        );
    }
    let active = |p: &&Consumer| matches!(p.phase.as_str(), "Running" | "Pending");
    if c.spec.access_modes.iter().any(|m| m == "ReadWriteOncePod")
        && let Some(p) = r.consumers.iter().find(active)
    {
        return (
            false,
            format!(
                "ReadWriteOncePod claim in use by pod {}: no helper pod can mount it until that pod stops",
                p.pod
            ),
        );
    }
    (true, String::new())
}

impl App {
    /// The inventory of `scope`, sorted by namespace and name.
    pub async fn inventory(&self, scope: &Scope) -> Result<Vec<PvcRecord>, EngineError> {
        let namespaces: Vec<String> = match scope {
            Scope::Namespace(ns) => {
                self.require_allowed(ns.as_str())?;
                vec![ns.to_string()]
            }
            Scope::AllAllowed => self
                .settings
                .allowlist
                .namespaces()
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        let opts = DiscoveryOptions {
            namespaces,
            max_objects: self.settings.discovery_max_objects,
            ..Default::default()
        };
        let timeout = self.settings.discovery_timeout;
        let snapshot = tokio::time::timeout(timeout, discovery::snapshot(&self.conn.client, &opts))
            .await
            .map_err(|_| EngineError::DiscoveryTimeout {
                seconds: timeout.as_secs(),
            })??;
        let last = self.history.last_successes(&self.conn.info.id)?;
        let failed = self.history.last_failures(&self.conn.info.id)?;
        let mut records: Vec<PvcRecord> = discovery::resolve(snapshot)
            .into_iter()
            .map(|r| {
                let (backupable, reason) = backupability(&self.settings.allowlist, &r);
                let c = r.claim;
                let capacity = quantity(
                    c.status
                        .capacity
                        .get("storage")
                        .or_else(|| c.spec.resources.requests.get("storage")),
                );
                let success = last.get(&c.metadata.uid).cloned();
                // RFC 3339 UTC times of one format compare as text.
                let failure = failed
                    .get(&c.metadata.uid)
                    .filter(|f| success.as_ref().is_none_or(|s| *f > s))
                    .cloned();
                PvcRecord {
                    last_successful_backup: success,
                    last_failed_backup: failure,
                    namespace: c.metadata.namespace,
                    name: c.metadata.name,
                    uid: c.metadata.uid,
                    phase: c.status.phase.unwrap_or_else(|| "Pending".into()),
                    capacity,
                    storage_class: c.spec.storage_class_name.unwrap_or_default(),
                    access_modes: c.spec.access_modes,
                    volume_mode: c.spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
                    volume_name: c.spec.volume_name.unwrap_or_default(),
                    owner: r.owner,
                    consumers: r.consumers,
                    backupable,
                    reason,
                    labels: c.metadata.labels,
                }
            })
            .collect();
        records.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkvm_domain::Owner;
    use nkvm_kube::discovery::{Claim, ClaimSpec, ClaimStatus, Meta};

    fn resolved(
        phase: &str,
        mode: &str,
        access: &str,
        consumers: &[(&str, &str)],
    ) -> ResolvedClaim {
        ResolvedClaim {
            claim: Claim {
                metadata: Meta {
                    name: "data".into(),
                    namespace: "shop".into(),
                    ..Default::default()
                },
                spec: ClaimSpec {
                    access_modes: vec![access.into()],
                    volume_mode: Some(mode.into()),
                    ..Default::default()
                },
                status: ClaimStatus {
                    phase: Some(phase.into()),
                    ..Default::default()
                },
            },
            consumers: consumers
                .iter()
                .map(|(p, ph)| Consumer {
                    pod: p.to_string(),
                    node: "node-a".into(),
                    phase: ph.to_string(),
                })
                .collect(),
            owner: Owner::unknown(),
        }
    }

    #[test]
    fn refusals_name_their_reason() {
        let all = Allowlist::default();
        assert_eq!(
            backupability(
                &all,
                &resolved("Bound", "Filesystem", "ReadWriteOnce", &[("a", "Running")])
            ),
            (true, String::new())
        );
        assert!(
            backupability(
                &all,
                &resolved("Pending", "Filesystem", "ReadWriteOnce", &[])
            )
            .1
            .starts_with("not bound (phase Pending)")
        );
        assert!(
            backupability(&all, &resolved("Bound", "Block", "ReadWriteOnce", &[]))
                .1
                .starts_with("volumeMode Block")
        );
        let rwop = backupability(
            &all,
            &resolved(
                "Bound",
                "Filesystem",
                "ReadWriteOncePod",
                &[("owner", "Running")],
            ),
        );
        assert_eq!(
            (rwop.0, rwop.1.contains("in use by pod owner")),
            (false, true)
        );
        assert!(
            backupability(
                &all,
                &resolved(
                    "Bound",
                    "Filesystem",
                    "ReadWriteOncePod",
                    &[("done", "Succeeded")]
                )
            )
            .0
        );
        let only_other = Allowlist::parse("other").unwrap();
        assert!(
            backupability(
                &only_other,
                &resolved("Bound", "Filesystem", "ReadWriteOnce", &[])
            )
            .1
            .contains("allowlist")
        );
    }
}
