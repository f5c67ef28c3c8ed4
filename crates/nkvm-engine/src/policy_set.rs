//! The policies in force: the policy file's (read-only) and those made in the UI (kept in
//! the history database), validated together so a name is never used twice.

use chrono::{DateTime, Utc};
use nkvm_domain::Allowlist;
use nkvm_history::{History, UiPolicyRow};
use nkvm_policy::file::{Context, PolicySource, PolicySpec, validate_all};
use nkvm_policy::{Policy, PolicyError};
use serde::Serialize;
use std::path::Path;

/// Loads the policy file (when given) and the UI-made policies from `history`.
pub fn load(
    file: Option<&Path>,
    history: &History,
    allowlist: &Allowlist,
    stores: &[String],
) -> Result<Vec<Policy>, PolicyError> {
    let ctx = Context { allowlist, stores };
    let mut policies = match file {
        Some(path) => nkvm_policy::load_file(path, &ctx)?,
        None => Vec::new(),
    };
    let rows = history.ui_policies().map_err(|e| PolicyError::Syntax {
        path: "the history database".into(),
        detail: e.to_string(),
    })?;
    let mut specs: Vec<PolicySpec> = policies.iter().map(|p| p.spec.clone()).collect();
    let file_count = specs.len();
    for row in rows {
        let spec: PolicySpec =
            serde_json::from_str(&row.spec).map_err(|e| PolicyError::Syntax {
                path: format!("UI policy {:?} in the history database", row.name),
                detail: e.to_string(),
            })?;
        specs.push(spec);
    }
    // Validating all together reports a UI policy named like a file policy.
    let all = validate_all(specs, PolicySource::Ui, "the policies (file and UI)", &ctx)?;
    policies.extend(all.into_iter().skip(file_count));
    Ok(policies)
}

/// Validates and saves a UI-made policy; refuses a name the file already uses.
pub fn save_ui(
    spec: PolicySpec,
    file_policies: &[Policy],
    history: &History,
    allowlist: &Allowlist,
    stores: &[String],
    actor: &str,
    now: &str,
) -> Result<Policy, PolicyError> {
    let ctx = Context { allowlist, stores };
    if file_policies
        .iter()
        .any(|p| p.name == spec.name && p.source == PolicySource::File)
    {
        return Err(PolicyError::Invalid {
            where_: "the form".into(),
            problems: vec![format!(
                "name: {:?} is a policy of the policy file, which the UI cannot change; choose another name",
                spec.name
            )],
        });
    }
    let policy = validate_all(vec![spec.clone()], PolicySource::Ui, "the form", &ctx)?.remove(0);
    let json = serde_json::to_string(&spec).map_err(|e| PolicyError::Syntax {
        path: "the form".into(),
        detail: e.to_string(),
    })?;
    history
        .save_ui_policy(&UiPolicyRow {
            name: spec.name.clone(),
            spec: json,
            updated_at: now.into(),
            updated_by: actor.into(),
        })
        .map_err(|e| PolicyError::Syntax {
            path: "the history database".into(),
            detail: e.to_string(),
        })?;
    Ok(policy)
}

/// A policy as `nkvm policies` and the Policies page show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// Name.
    pub name: String,
    /// `file` or `ui`.
    pub source: PolicySource,
    /// The cron expression.
    pub schedule: String,
    /// The time zone.
    pub timezone: String,
    /// Namespaces.
    pub namespaces: Vec<String>,
    /// Label selector (`k=v,...`, "" for none).
    pub selector: String,
    /// Store name.
    pub store: String,
    /// The context of the cluster it runs against (`null`: the one `nkvm serve` was started
    /// against).
    pub cluster: Option<String>,
    /// Retention, as written (`null`: keep everything).
    pub retention: Option<nkvm_policy::Retention>,
    /// The next slots (RFC 3339 UTC).
    pub next_runs: Vec<String>,
    /// The spec.
    pub spec: PolicySpec,
}

/// The view of `p` with its next `n` slots after `now`.
pub fn view(p: &Policy, now: DateTime<Utc>, n: usize) -> PolicyView {
    let mut next_runs = Vec::new();
    let mut t = now;
    while next_runs.len() < n {
        let Some(next) = p.schedule.next_after(t) else {
            break;
        };
        next_runs.push(next.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        t = next;
    }
    PolicyView {
        name: p.name.clone(),
        source: p.source,
        schedule: p.schedule.expr().into(),
        timezone: p.schedule.timezone().name().into(),
        namespaces: p.namespaces.clone(),
        selector: p
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        store: p.store.clone(),
        cluster: p.cluster.clone(),
        retention: p.retention,
        next_runs,
        spec: p.spec.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Vec<String> {
        vec![nkvm_policy::file::DEFAULT_STORE.to_string()]
    }

    fn spec(name: &str) -> PolicySpec {
        PolicySpec {
            name: name.into(),
            schedule: "30 1 * * *".into(),
            timezone: Some("Europe/Berlin".into()),
            namespaces: vec!["shop".into()],
            ..Default::default()
        }
    }

    #[test]
    fn file_and_ui_policies_load_together_and_names_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(
            &file,
            "policies:\n- name: nightly\n  schedule: \"0 2 * * *\"\n  namespaces: [shop]\n",
        )
        .unwrap();
        let h = History::in_memory().unwrap();
        let allow = Allowlist::default();
        let file_policies = load(Some(&file), &h, &allow, &local()).unwrap();
        let refused = save_ui(
            spec("nightly"),
            &file_policies,
            &h,
            &allow,
            &local(),
            "admin",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(refused.contains("policy file"), "{refused}");
        save_ui(
            spec("extra"),
            &file_policies,
            &h,
            &allow,
            &local(),
            "admin",
            "t",
        )
        .unwrap();
        let all = load(Some(&file), &h, &allow, &local()).unwrap();
        let names: Vec<(&str, PolicySource)> =
            all.iter().map(|p| (p.name.as_str(), p.source)).collect();
        assert_eq!(
            names,
            [("nightly", PolicySource::File), ("extra", PolicySource::Ui)]
        );
        let v = view(&all[1], "2026-07-01T00:00:00Z".parse().unwrap(), 2);
        assert_eq!(
            v.next_runs,
            ["2026-07-01T23:30:00Z", "2026-07-02T23:30:00Z"],
            "01:30 Berlin summer time"
        );
    }
}
