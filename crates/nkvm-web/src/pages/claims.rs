//! A claim's page (`/claims/NAMESPACE/PVC`): its backups in every store and cluster, their
//! stored size and duration over time as a server-rendered SVG chart (no script), and from
//! each backup Restore and Delete. Deleting asks for confirmation on its own page, then runs
//! the engine's deletion (the one `nkvm delete` runs), audited with the logged-in user.

use crate::WebState;
use crate::auth::CurrentUser;
use crate::form::FormData;
use crate::layout::{self, Nav};
use crate::page_error::PageError;
use crate::pages::see_other;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::HeaderMap;
use maud::{Markup, html};
use nkvm_domain::{FailureKind, JobStatus, PvcRef};
use nkvm_engine::session::{BackupFilter, BackupRow};
use std::sync::Arc;

/// Backups of one claim shown.
const CLAIM_ROWS: u32 = 500;

/// `/claims/{namespace}/{pvc}` and `/backups/{id}/delete`.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/claims/{namespace}/{pvc}", get(page))
        .route("/backups/{id}/delete", get(confirm).post(delete))
}

/// The link to a claim's page.
pub fn claim_href(namespace: &str, pvc: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("/claims/{}/{}", enc(namespace), enc(pvc))
}

fn seconds(r: &BackupRow) -> Option<i64> {
    let start: jiff::Timestamp = r.started_at.parse().ok()?;
    let end: jiff::Timestamp = r.finished_at.as_deref()?.parse().ok()?;
    Some((end.as_second() - start.as_second()).max(0))
}

async fn page(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Path((namespace, pvc)): Path<(String, String)>,
) -> Response {
    if let Err(e) = PvcRef::parse(&format!("{namespace}/{pvc}")) {
        return PageError::invalid(&user, "Claim", e.to_string()).into_response();
    }
    let filter = BackupFilter {
        namespace: Some(namespace.clone()),
        pvc: Some(pvc.clone()),
        limit: Some(CLAIM_ROWS),
        ..Default::default()
    };
    let rows = match state.session.workspace().backups(&filter) {
        Ok(r) => r,
        Err(e) => return PageError::of(&user, "Claim", &e).into_response(),
    };
    let body = html! {
        p.muted { "Every backup of this claim still held, in every store and cluster, newest first." }
        (chart(&rows))
        (table(&rows))
    };
    layout::page(&format!("{namespace}/{pvc}"), &user, Nav::Volumes, body).into_response()
}

fn table(rows: &[BackupRow]) -> Markup {
    html! {
        table #claim-backups {
            thead { tr {
                th { "Backup" } th { "Status" } th { "Store" } th { "Cluster" } th { "Started" }
                th { "Took" } th { "Stored" } th { "By" } th { "Actions" }
            } }
            tbody {
                @for r in rows {
                    tr.backup-row data-backup-id=(r.id) data-status=(r.status) {
                        td { a.backup-link.mono href=(format!("/history/{}", r.id)) { (r.id) } }
                        td { span class=(format!("badge {}", r.status)) { (r.status) } @if !r.error.is_empty() { " " span.muted { (r.stage) ": " (r.error) } } }
                        td.store { (if r.store.is_empty() { "local" } else { r.store.as_str() }) }
                        td.mono { (r.cluster) }
                        td { (layout::time(Some(&r.started_at))) }
                        td.num { (seconds(r).map(|s| layout::duration(s as u64)).unwrap_or_default()) }
                        td.num { (layout::bytes(r.bytes_stored)) }
                        td { (r.actor) }
                        td.row-actions {
                            @if r.status == JobStatus::Succeeded && !r.artifact.is_empty() {
                                a.button.restore-link href=(format!("/history/{}/restore", r.id)) { "Restore…" }
                                " "
                            }
                            @if r.status.is_final() {
                                a.button.danger.delete-link href=(format!("/backups/{}/delete", r.id)) { "Delete…" }
                            }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="9" .muted { "No backups of this claim." } } }
            }
        }
    }
}

/// Chart size (SVG user units).
const W: f64 = 640.0;
const H: f64 = 140.0;
const PAD: f64 = 40.0;

/// One series as points scaled to the chart: `(x, y, title)`.
fn points(values: &[(String, f64, String)]) -> Vec<(f64, f64, String)> {
    let max = values.iter().map(|v| v.1).fold(0.0_f64, f64::max).max(1.0);
    let n = values.len();
    values
        .iter()
        .enumerate()
        .map(|(i, (_, v, title))| {
            let x = if n == 1 {
                W / 2.0
            } else {
                PAD + (W - 2.0 * PAD) * i as f64 / (n - 1) as f64
            };
            let y = H - PAD / 2.0 - (H - PAD) * v / max;
            (x, y, title.clone())
        })
        .collect()
}

fn series(id: &str, title: &str, max_label: &str, values: &[(String, f64, String)]) -> Markup {
    let pts = points(values);
    let line: Vec<String> = pts
        .iter()
        .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
        .collect();
    html! {
        figure.chart {
            svg id=(id) role="img" aria-labelledby=(format!("{id}-title")) viewBox=(format!("0 0 {W} {H}")) width="100%" height=(H) {
                title id=(format!("{id}-title")) { (title) }
                line.axis x1=(PAD) y1=(H - PAD / 2.0) x2=(W - PAD) y2=(H - PAD / 2.0) {}
                text.axis-label x="2" y="14" { (max_label) }
                text.axis-label x="2" y=(H - PAD / 2.0) { "0" }
                @if let (Some(first), Some(last)) = (values.first(), values.last()) {
                    text.axis-label x=(PAD) y=(H - 4.0) { (first.0) }
                    @if values.len() > 1 { text.axis-label x=(W - PAD) y=(H - 4.0) text-anchor="end" { (last.0) } }
                }
                polyline.series points=(line.join(" ")) {}
                @for (x, y, t) in &pts {
                    circle.point cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="4" { title { (t) } }
                }
            }
            figcaption { (title) }
        }
    }
}

/// Stored size and duration of the successful backups, oldest first.
fn chart(rows: &[BackupRow]) -> Markup {
    let ok: Vec<&BackupRow> = rows
        .iter()
        .rev()
        .filter(|r| r.status == JobStatus::Succeeded)
        .collect();
    if ok.is_empty() {
        return html! { p.muted #claim-chart-empty { "No successful backups to chart yet." } };
    }
    let when = |r: &BackupRow| layout::time(Some(&r.started_at));
    let sizes: Vec<(String, f64, String)> = ok
        .iter()
        .map(|r| {
            let t = format!("{}: {} stored", when(r), layout::bytes(r.bytes_stored));
            (when(r), r.bytes_stored as f64, t)
        })
        .collect();
    let durations: Vec<(String, f64, String)> = ok
        .iter()
        .map(|r| {
            let s = seconds(r).unwrap_or(0);
            let t = format!("{}: took {}", when(r), layout::duration(s as u64));
            (when(r), s as f64, t)
        })
        .collect();
    let max_size = ok.iter().map(|r| r.bytes_stored).max().unwrap_or(0);
    let max_secs = ok.iter().filter_map(|r| seconds(r)).max().unwrap_or(0);
    html! {
        div.charts #claim-chart {
            (series("chart-size", &format!("Stored size of {} successful backups, oldest to newest", ok.len()), &layout::bytes(max_size), &sizes))
            (series("chart-duration", &format!("Duration of {} successful backups, oldest to newest", ok.len()), &layout::duration(max_secs as u64), &durations))
        }
    }
}

async fn load_row(state: &WebState, user: &CurrentUser, id: &str) -> Result<BackupRow, PageError> {
    let history = state.session.workspace().history();
    match history.backup(id) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(PageError::new(
            user,
            "Delete backup",
            FailureKind::NotFound,
            format!("There is no backup {id:?} in the history."),
        )),
        Err(e) => Err(PageError::new(
            user,
            "Delete backup",
            FailureKind::StorageUnavailable,
            e.to_string(),
        )),
    }
}

/// The confirmation page: what will be deleted, and the button that does it.
async fn confirm(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let r = load_row(&state, &user, &id).await?;
    let back = claim_href(&r.namespace, &r.pvc);
    let body = html! {
        p.warning #delete-warning {
            "Delete backup " span.mono { (r.id) } " of " (r.namespace) "/" (r.pvc) " taken "
            (layout::time(Some(&r.started_at))) "? Its archive and manifest are removed from store "
            b { (if r.store.is_empty() { "local" } else { r.store.as_str() }) }
            " and cannot be restored afterwards. The history keeps its row, marked deleted, for audit."
        }
        form #delete-form method="post" action=(format!("/backups/{}/delete", r.id)) {
            input type="hidden" name="csrf" value=(user.csrf);
            button.danger #confirm-delete type="submit" { "Delete this backup" }
            " "
            a #cancel-delete href=(back) { "Cancel" }
        }
    };
    Ok(layout::page("Delete backup", &user, Nav::Volumes, body).into_response())
}

async fn delete(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    _form: FormData,
) -> Result<Response, PageError> {
    let r = load_row(&state, &user, &id).await?;
    let workspace = state.session.workspace().clone();
    let actor = user.actor();
    let deleted = nkvm_engine::session::detached(move || async move {
        workspace.delete_backup(&id, &actor, "by hand").await
    })
    .await
    .and_then(|r| r);
    match deleted {
        Ok(_) => Ok(see_other(&headers, &claim_href(&r.namespace, &r.pvc))),
        Err(e) => Err(PageError::of(&user, "Delete backup", &e)),
    }
}
