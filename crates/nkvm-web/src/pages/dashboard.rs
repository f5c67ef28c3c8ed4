//! The protection dashboard, the UI's home page: how many claims are protected, stale,
//! failing, never backed up and not covered by any policy (each count links to those
//! claims), each policy's next runs, and the failures of the last 24 hours with their stage
//! errors. The claims are those of the clusters the scheduler is connected to (its own
//! connections, see [`nkvm_engine::policy_book`]); when it has none, those of the cluster the
//! UI is connected to. The states are defined in [`nkvm_engine::protection`].

use crate::WebState;
use crate::auth::CurrentUser;
use crate::layout::{self, Nav, error_box};
use crate::pages::claims::claim_href;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use nkvm_domain::{JobStatus, PvcRecord};
use nkvm_engine::Scope;
use nkvm_engine::policy_set::view;
use nkvm_engine::protection::{Protection, ProtectionReport};
use nkvm_engine::session::{BackupFilter, BackupRow, detached};
use nkvm_policy::Policy;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a scheduler cluster's claims are reused before being listed again.
const CACHE_FOR: Duration = Duration::from_secs(30);
/// Backups read to find the last day's failures.
const RECENT_ROWS: u32 = 1000;

/// `/` and `/claims`.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/", get(home))
        .route("/claims", get(list))
}

/// The claims of the scheduler's clusters, listed at most every [`CACHE_FOR`].
#[derive(Default)]
pub struct ClusterClaims(Mutex<HashMap<String, Listed>>);

/// When a cluster's claims were listed, and what came back.
type Listed = (Instant, Result<Vec<PvcRecord>, String>);

/// One cluster's claims and their states.
pub struct ClusterView {
    /// The policy cluster name (`""`: the default).
    pub name: String,
    /// Why its claims could not be listed.
    pub error: Option<String>,
    /// The states.
    pub report: ProtectionReport,
}

fn policies_of(all: &[Policy], cluster: &str) -> Vec<Policy> {
    all.iter()
        .filter(|p| p.cluster.as_deref().unwrap_or("") == cluster)
        .cloned()
        .collect()
}

async fn records_of(
    state: &WebState,
    name: &str,
    app: Arc<nkvm_engine::App>,
) -> Result<Vec<PvcRecord>, String> {
    if let Some((at, cached)) = state
        .protection
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        && at.elapsed() < CACHE_FOR
    {
        return cached.clone();
    }
    let loaded = detached(move || async move { app.inventory(&Scope::AllAllowed).await })
        .await
        .and_then(|r| r)
        .map_err(|e| e.to_string());
    state
        .protection
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.into(), (Instant::now(), loaded.clone()));
    loaded
}

/// Every cluster's claim states at `now`; `None` when there is no cluster to look at.
pub async fn gather(state: &WebState, now: DateTime<Utc>) -> Option<Vec<ClusterView>> {
    let policies = state.policies.policies();
    let clusters = state.policies.clusters();
    let mut views = Vec::new();
    if clusters.is_empty() {
        let snap = crate::pages::volumes::snapshot(state).await?;
        let mine = policies_of(&policies, "");
        views.push(ClusterView {
            name: String::new(),
            report: ProtectionReport::of(&snap.records, &mine, now),
            error: snap.error.clone(),
        });
        return Some(views);
    }
    for (name, app) in clusters {
        let mine = policies_of(&policies, &name);
        let (records, error) = match records_of(state, &name, app).await {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        views.push(ClusterView {
            report: ProtectionReport::of(&records, &mine, now),
            name,
            error,
        });
    }
    Some(views)
}

fn cluster_label(name: &str) -> &str {
    if name.is_empty() {
        "default cluster"
    } else {
        name
    }
}

async fn home(State(state): State<Arc<WebState>>, user: CurrentUser) -> Response {
    let now = Utc::now();
    let Some(views) = gather(&state, now).await else {
        return Redirect::to("/connection").into_response();
    };
    let body = html! {
        (counts(&views))
        @for v in &views {
            @if let Some(e) = &v.error {
                (error_box("dashboard-error", &format!("Listing the claims of the {} failed: {e}", cluster_label(&v.name))))
            }
        }
        h2 { "Next runs" }
        (next_runs(&state, now))
        h2 { "Failures in the last 24 hours" }
        (failures(&state, now))
    };
    layout::page("Protection", &user, Nav::Dashboard, body).into_response()
}

fn counts(views: &[ClusterView]) -> Markup {
    html! {
        ul.protection-counts #protection-counts {
            @for s in Protection::ALL {
                @let n: usize = views.iter().map(|v| v.report.count(s)).sum();
                li class=(format!("count {}", s.as_str())) {
                    a id=(format!("count-{}", s.as_str())) href=(format!("/claims?state={}", s.as_str())) {
                        span.number data-count=(n) { (n) }
                        span.label { (s.label()) }
                    }
                }
            }
        }
        p.muted.small {
            "Protected: a successful backup since the due slot of each covering policy (its newest slot whose grace, the smaller of one hour and the gap to the slot before, has passed). "
            a href="/policies" { "Policies" } " define the schedules."
        }
    }
}

fn next_runs(state: &WebState, now: DateTime<Utc>) -> Markup {
    let policies = state.policies.policies();
    html! {
        table #next-runs {
            thead { tr { th { "Policy" } th { "Cluster" } th { "Schedule" } th { "Next runs (UTC)" } th { "Last slot" } } }
            tbody {
                @for p in &policies {
                    @let v = view(p, now, 3);
                    @let last = state.session.workspace().history().policy_runs(Some(&p.name), 1).ok().and_then(|mut r| r.pop());
                    tr.policy-row data-policy=(p.name) {
                        td { a href=(format!("/policies#policy-{}", p.name)) { (p.name) } }
                        td { (cluster_label(p.cluster.as_deref().unwrap_or(""))) }
                        td.mono { (v.schedule) " " span.muted { (v.timezone) } }
                        td { (v.next_runs.iter().map(|t| layout::time(Some(t))).collect::<Vec<_>>().join(", ")) }
                        td {
                            @if let Some(l) = last { (l.outcome) " " (layout::time(Some(&l.slot))) }
                            @else { span.muted { "none yet" } }
                        }
                    }
                }
                @if policies.is_empty() {
                    tr { td colspan="5" .muted { "No policies: " a href="/policies/new" { "create one" } " or give nkvm a policy file." } }
                }
            }
        }
    }
}

/// Backups of the last 24 hours that did not succeed, newest first.
fn recent_failures(state: &WebState, now: DateTime<Utc>) -> Result<Vec<BackupRow>, String> {
    let since = (now - chrono::Duration::hours(24))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let rows = state
        .session
        .workspace()
        .backups(&BackupFilter {
            limit: Some(RECENT_ROWS),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .filter(|r| r.started_at >= since)
        .filter(|r| {
            matches!(
                r.status,
                JobStatus::Failed | JobStatus::Interrupted | JobStatus::Cancelled
            )
        })
        .collect())
}

fn failures(state: &WebState, now: DateTime<Utc>) -> Markup {
    let rows = match recent_failures(state, now) {
        Ok(r) => r,
        Err(e) => {
            return error_box(
                "failures-error",
                &format!("Reading the history failed: {e}"),
            );
        }
    };
    html! {
        table #recent-failures {
            thead { tr { th { "When" } th { "Claim" } th { "By" } th { "Status" } th { "Stage" } th { "Error" } } }
            tbody {
                @for r in &rows {
                    tr.failure-row data-backup-id=(r.id) {
                        td { a href=(format!("/history/{}", r.id)) { (layout::time(Some(&r.started_at))) } }
                        td { a.claim-link href=(claim_href(&r.namespace, &r.pvc)) { (r.namespace) "/" (r.pvc) } }
                        td { (r.actor) }
                        td { span class=(format!("badge {}", r.status)) { (r.status) } }
                        td { (r.stage) }
                        td.detail { (r.error) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="6" .muted { "No failed backups in the last 24 hours." } } }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    state: String,
}

/// `/claims?state=...`: the claims in one state.
async fn list(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Query(q): Query<ListQuery>,
) -> Response {
    let Some(wanted) = Protection::parse(&q.state) else {
        return crate::page_error::PageError::invalid(
            &user,
            "Claims",
            format!(
                "Unknown state {:?}; use one of protected, stale, failing, never, uncovered.",
                q.state
            ),
        )
        .with_back("back-to-dashboard", "/", "Back to the dashboard")
        .into_response();
    };
    let Some(views) = gather(&state, Utc::now()).await else {
        return Redirect::to("/connection").into_response();
    };
    let body = html! {
        p { a href="/" { "← Dashboard" } }
        table #claims {
            thead { tr { th { "Cluster" } th { "Claim" } th { "Policies" } th { "Last success" } th { "Last failure" } th { "Due since" } } }
            tbody {
                @for v in &views {
                    @for c in v.report.in_state(wanted) {
                        tr.claim-row data-pvc=(format!("{}/{}", c.namespace, c.pvc)) {
                            td { (cluster_label(&v.name)) }
                            td { a.claim-link href=(claim_href(&c.namespace, &c.pvc)) { (c.namespace) "/" (c.pvc) } }
                            td { (c.policies.join(", ")) }
                            td { (layout::time(c.last_success.as_deref())) }
                            td { @if let Some(f) = &c.last_failure { (layout::time(Some(f))) } }
                            td { @if let Some(d) = &c.due_since { (layout::time(Some(d))) } }
                        }
                    }
                }
                @if views.iter().all(|v| v.report.count(wanted) == 0) {
                    tr { td colspan="6" .muted { "No claims are in this state." } }
                }
            }
        }
    };
    layout::page(wanted.label(), &user, Nav::Dashboard, body).into_response()
}
