//! The policy file (`NKVM_POLICIES_FILE`, `--policies`) and its validation. The file is YAML:
//!
//! ```yaml
//! policies:
//! - name: nightly-shop
//!   schedule: "0 2 * * *"        # cron, 5 fields
//!   timezone: Europe/Berlin      # IANA name (default UTC)
//!   namespaces: [shop]           # within the allowlist
//!   selector: {matchLabels: {backup: nightly}}   # on PVC labels; optional
//!   store: local                 # a store name (default local)
//!   retention: {keepLast: 3, daily: 7, weekly: 4, monthly: 6, yearly: 0}
//!   notify: {webhook: "https://hooks.example/nkvm", on: failure}
//!   startingDeadlineSeconds: 3600
//! ```
//!
//! Every problem of every policy is reported at once, each naming its policy and field, so one
//! edit fixes the file. UI-made policies are the same [`PolicySpec`], validated the same way.

use crate::retention::Retention;
use crate::schedule::Schedule;
use nkvm_domain::{Allowlist, ResourceName};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// The store a policy writes to unless it names one.
pub const DEFAULT_STORE: &str = "local";

/// How long after its slot a missed run may still start, unless the policy says.
pub const DEFAULT_STARTING_DEADLINE: Duration = Duration::from_secs(3600);

/// Why a policy file or a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("reading the policy file {path}: {source}; check NKVM_POLICIES_FILE / --policies")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not YAML of the expected shape.
    #[error("the policy file {path} is not valid: {detail}")]
    Syntax {
        /// The file (or `the form` for UI input).
        path: String,
        /// serde's reason, with line and column.
        detail: String,
    },
    /// One or more policies are wrong.
    #[error("{} in {where_}:\n{}", problems_count(.problems), bullet(.problems))]
    Invalid {
        /// The file, or `the form`.
        where_: String,
        /// Each problem, naming its policy and field.
        problems: Vec<String>,
    },
}

fn problems_count(p: &[String]) -> String {
    match p.len() {
        1 => "1 problem".into(),
        n => format!("{n} problems"),
    }
}

fn bullet(p: &[String]) -> String {
    p.iter()
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl nkvm_domain::UserError for PolicyError {
    fn kind(&self) -> nkvm_domain::FailureKind {
        match self {
            PolicyError::Read { .. } => nkvm_domain::FailureKind::StorageUnavailable,
            _ => nkvm_domain::FailureKind::InvalidInput,
        }
    }
}

/// The file's top level.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The policies.
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
}

/// A label selector on claims' labels (`matchLabels` only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Every label here must be on the claim with this value.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// When the webhook is called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NotifyOn {
    /// Only for claims whose backup failed (the default).
    #[default]
    Failure,
    /// For every claim of every run.
    Always,
}

/// A policy's notification settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    /// `http://` or `https://` URL that receives a JSON POST per claim.
    pub webhook: String,
    /// When to call it.
    #[serde(default)]
    pub on: NotifyOn,
}

/// A policy as written (in the file, or by the UI's form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Unique name (lower-case letters, digits, `-`).
    pub name: String,
    /// 5-field cron expression.
    pub schedule: String,
    /// IANA time zone of the schedule and of retention's days (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Namespaces whose claims it backs up.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only claims with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// The store to write to (default `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// What to keep (absent: keep everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Where to report results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// How late a missed run may still start, in seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u64>,
    /// The cluster it runs against: a context of a kubeconfig mounted below the remote
    /// kubeconfig directory (`/etc/nkvm/remote`); absent, the cluster `nkvm serve` was started
    /// against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// Where a policy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicySource {
    /// The policy file: read-only in the UI.
    File,
    /// Made in the UI, kept in the history database.
    Ui,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Namespaces it covers.
    pub namespaces: Vec<String>,
    /// Labels a claim must carry (empty: every claim of the namespaces).
    pub match_labels: BTreeMap<String, String>,
    /// Store name.
    pub store: String,
    /// What to keep (`None`: everything).
    pub retention: Option<Retention>,
    /// Where to report.
    pub notify: Option<Notify>,
    /// How late a missed run may still start.
    pub starting_deadline: Duration,
    /// The context it runs against (`None`: the cluster `nkvm serve` was started against).
    pub cluster: Option<String>,
    /// Where it comes from.
    pub source: PolicySource,
    /// The spec it was validated from.
    pub spec: PolicySpec,
}

impl Policy {
    /// The actor its runs are recorded as in history and audit.
    pub fn actor(&self) -> String {
        format!("policy:{}", self.name)
    }

    /// Whether a claim in `namespace` with `labels` is covered.
    pub fn covers(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// What a policy is checked against.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Namespaces nkvm may touch.
    pub allowlist: &'a Allowlist,
    /// Store names that exist.
    pub stores: &'a [String],
}

/// Reads and validates the policy file at `path`.
pub fn load_file(path: &Path, ctx: &Context<'_>) -> Result<Vec<Policy>, PolicyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown, ctx)
}

/// Parses and validates policy-file text; `where_` names it in errors.
pub fn parse(text: &str, where_: &str, ctx: &Context<'_>) -> Result<Vec<Policy>, PolicyError> {
    let file: PolicyFile = serde_yaml_ng::from_str(text).map_err(|e| PolicyError::Syntax {
        path: where_.into(),
        detail: e.to_string(),
    })?;
    validate_all(file.policies, PolicySource::File, where_, ctx)
}

/// Validates specs (of one source); every problem is reported, and names must be unique.
pub fn validate_all(
    specs: Vec<PolicySpec>,
    source: PolicySource,
    where_: &str,
    ctx: &Context<'_>,
) -> Result<Vec<Policy>, PolicyError> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let label = format!("policies[{i}] ({:?})", spec.name);
        if !seen.insert(spec.name.clone()) {
            problems.push(format!(
                "{label}: name: another policy is already called {:?}; names must be unique",
                spec.name
            ));
        }
        match validate(spec, source, ctx) {
            Ok(p) => out.push(p),
            Err(mine) => problems.extend(mine.into_iter().map(|m| format!("{label}: {m}"))),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(PolicyError::Invalid {
            where_: where_.into(),
            problems,
        })
    }
}

/// Validates one spec; the problems name their field.
pub fn validate(
    spec: PolicySpec,
    source: PolicySource,
    ctx: &Context<'_>,
) -> Result<Policy, Vec<String>> {
    let mut problems = Vec::new();
    if ResourceName::namespace(&spec.name).is_err() {
        problems.push(format!(
            "name: {:?} is not a valid policy name: use lower-case letters, digits and '-', at most 63 characters",
            spec.name
        ));
    }
    let timezone = spec.timezone.as_deref().unwrap_or("UTC");
    let schedule = Schedule::parse(&spec.schedule, timezone)
        .map_err(|e| problems.push(format!("schedule/timezone: {e}")))
        .ok();
    check_namespaces(&spec.namespaces, ctx.allowlist, &mut problems);
    let match_labels = spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .unwrap_or_default();
    if match_labels.keys().any(|k| k.trim().is_empty()) {
        problems.push("selector.matchLabels: a label key is empty".into());
    }
    let store = spec.store.clone().unwrap_or_else(|| DEFAULT_STORE.into());
    if !ctx.stores.contains(&store) {
        problems.push(format!(
            "store: {store:?} is not a configured store (configured: {})",
            ctx.stores.join(", ")
        ));
    }
    if spec.retention.is_some_and(|r| r.is_empty()) {
        problems.push(
            "retention: every count is 0, which would keep only the newest backup; give a count, or omit retention to keep every backup"
                .into(),
        );
    }
    if let Some(n) = &spec.notify {
        check_webhook(&n.webhook, &mut problems);
    }
    if spec.starting_deadline_seconds == Some(0) {
        problems.push("startingDeadlineSeconds: must be at least 1".into());
    }
    let cluster = spec
        .cluster
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if let Some(c) = cluster
        && (c.len() > 253 || c.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
    {
        problems.push(format!(
            "cluster: {c:?} is not a kubeconfig context name (no spaces, at most 253 characters)"
        ));
    }
    let cluster = cluster.map(str::to_string);
    match schedule {
        Some(schedule) if problems.is_empty() => Ok(Policy {
            name: spec.name.clone(),
            schedule,
            namespaces: spec.namespaces.clone(),
            match_labels,
            store,
            retention: spec.retention,
            notify: spec.notify.clone(),
            starting_deadline: spec
                .starting_deadline_seconds
                .map_or(DEFAULT_STARTING_DEADLINE, Duration::from_secs),
            cluster,
            source,
            spec,
        }),
        _ => Err(problems),
    }
}

fn check_namespaces(namespaces: &[String], allowlist: &Allowlist, problems: &mut Vec<String>) {
    if namespaces.is_empty() {
        problems.push("namespaces: list at least one namespace".into());
    }
    for ns in namespaces {
        if let Err(e) = ResourceName::namespace(ns) {
            problems.push(format!("namespaces: {e}"));
        } else if !allowlist.allows(ns) {
            problems.push(format!(
                "namespaces: {ns:?} is not in nkvm's allowlist ({}); add it to NKVM_NAMESPACES or remove it from the policy",
                allowlist
            ));
        }
    }
}

fn check_webhook(url: &str, problems: &mut Vec<String>) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) {
        problems.push(format!(
            "notify.webhook: {url:?} is not an http:// or https:// URL with a host"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with<'a>(allow: &'a Allowlist, stores: &'a [String]) -> Context<'a> {
        Context {
            allowlist: allow,
            stores,
        }
    }

    fn parsed(text: &str) -> Result<Vec<Policy>, PolicyError> {
        let allow = Allowlist::parse("shop,web").unwrap();
        let stores = vec!["local".to_string(), "offsite".to_string()];
        parse(text, "policies.yaml", &ctx_with(&allow, &stores))
    }

    #[test]
    fn the_issue_example_parses_with_defaults_filled_in() {
        let p = parsed(
            r#"
policies:
- name: nightly-shop
  schedule: "0 2 * * *"
  timezone: Europe/Berlin
  namespaces: [shop]
  selector: {matchLabels: {backup: nightly}}
  store: offsite
  retention: {keepLast: 3, daily: 7, weekly: 4, monthly: 6, yearly: 0}
  notify: {webhook: https://hooks.example/nkvm}
- name: hourly-web
  schedule: "0 * * * *"
  namespaces: [web]
"#,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].store, "offsite");
        assert_eq!(p[0].schedule.timezone(), chrono_tz::Europe::Berlin);
        assert_eq!(p[0].retention.unwrap().daily, 7);
        assert_eq!(p[0].notify.as_ref().unwrap().on, NotifyOn::Failure);
        assert_eq!(p[0].actor(), "policy:nightly-shop");
        assert_eq!(p[1].store, "local");
        assert_eq!(p[1].schedule.timezone(), chrono_tz::UTC);
        assert_eq!(p[1].retention, None);
        assert_eq!(p[1].starting_deadline, DEFAULT_STARTING_DEADLINE);
        let mut labels = BTreeMap::new();
        assert!(!p[0].covers("shop", &labels));
        labels.insert("backup".into(), "nightly".into());
        assert!(p[0].covers("shop", &labels));
        assert!(!p[0].covers("web", &labels));
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_policy_and_field() {
        let err = parsed(
            r#"
policies:
- name: Bad_Name
  schedule: "0 0 2 * * *"
  namespaces: [kube-system]
  store: s3
  retention: {keepLast: 0}
  notify: {webhook: "ftp://x"}
- name: ok
  schedule: "0 2 * * *"
  timezone: Europe/Nowhere
  namespaces: []
- name: ok
  schedule: "0 2 * * *"
  namespaces: [shop]
"#,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "policies[0] (\"Bad_Name\"): name:",
            "policies[0] (\"Bad_Name\"): schedule/timezone: schedule \"0 0 2 * * *\" has 6 fields",
            "\"kube-system\" is not in nkvm's allowlist",
            "store: \"s3\" is not a configured store (configured: local, offsite)",
            "retention: every count is 0",
            "notify.webhook: \"ftp://x\"",
            "policies[1] (\"ok\"): schedule/timezone: timezone \"Europe/Nowhere\"",
            "policies[1] (\"ok\"): namespaces: list at least one",
            "policies[2] (\"ok\"): name: another policy is already called \"ok\"",
            "9 problems in policies.yaml",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_yaml_are_refused_with_their_position() {
        let err = parsed("policies:\n- name: a\n  schedule: \"* * * * *\"\n  namespaces: [shop]\n  selector: {matchExpressions: []}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("matchExpressions"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        let err = parsed("policies:\n- name: a\n  schedul: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `schedul`"), "{err}");
    }

    #[test]
    fn a_missing_file_says_which_and_how_to_point_at_another() {
        let allow = Allowlist::default();
        let stores = vec!["local".to_string()];
        let err = load_file(Path::new("/nonexistent/p.yaml"), &ctx_with(&allow, &stores))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/p.yaml") && err.contains("NKVM_POLICIES_FILE"));
    }
}
