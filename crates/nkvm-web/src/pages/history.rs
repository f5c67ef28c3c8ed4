//! The History page: backups filtered by cluster, namespace, claim and status; a backup's
//! details (row and manifest), verify, a streamed download, and the restore wizard, which
//! shows the engine's plan and runs exactly that plan.

use crate::WebState;
use crate::auth::{CurrentUser, is_htmx};
use crate::form::FormData;
use crate::layout::{self, Nav, error_box};
use crate::page_error::{NOT_CONNECTED, PageError};
use crate::pages::{see_other, status_for};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::{Markup, html};
use nkvm_domain::UserError;
use nkvm_domain::{BackupId, FailureKind, JobStatus, PvcRef, Trigger};
use nkvm_engine::session::{BackupDetails, BackupFilter, BackupRow, detached};
use nkvm_engine::{RestoreOptions, RestorePlan, RestoreRequest};
use serde::Deserialize;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows read from the history per page view (the status filter applies to these).
const HISTORY_ROWS: u32 = 500;
/// How long a shown restore plan can be run.
const PLAN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// `/history...` routes.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/history", get(list))
        .route("/history/{id}", get(details))
        .route("/history/{id}/verify", post(verify))
        .route("/history/{id}/download", get(download))
        .route("/history/{id}/restore", get(restore_form).post(run_restore))
        .route("/history/{id}/restore/plan", post(plan_restore))
        .route("/history/{id}/copy", post(copy))
}

/// Restore plans shown to an operator, runnable for a while by the same user.
#[derive(Default)]
pub struct PendingPlans(std::sync::Mutex<std::collections::HashMap<String, PendingPlan>>);

struct PendingPlan {
    plan: RestorePlan,
    user: String,
    made: Instant,
    /// The session generation it was planned on: a plan never outlives the connection.
    generation: u64,
}

impl PendingPlans {
    fn keep(&self, plan: RestorePlan, user: &str, generation: u64) -> String {
        let token: String = (0..16)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let mut plans = self.0.lock().unwrap_or_else(|e| e.into_inner());
        plans.retain(|_, p| p.made.elapsed() < PLAN_LIFETIME);
        plans.insert(
            token.clone(),
            PendingPlan {
                plan,
                user: user.into(),
                made: Instant::now(),
                generation,
            },
        );
        token
    }

    /// The plan behind `token`, if `user` made it on connection `generation`.
    fn take(&self, token: &str, user: &str, generation: u64) -> Option<RestorePlan> {
        let mut plans = self.0.lock().unwrap_or_else(|e| e.into_inner());
        plans.retain(|_, p| p.made.elapsed() < PLAN_LIFETIME);
        match plans.get(token) {
            Some(p) if p.user == user && p.generation == generation => {
                plans.remove(token).map(|p| p.plan)
            }
            _ => None,
        }
    }
}

/// The history page's query string.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HistoryQuery {
    cluster: String,
    ns: String,
    pvc: String,
    status: String,
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

async fn list(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let filter = BackupFilter {
        cluster: non_empty(&q.cluster),
        namespace: non_empty(&q.ns),
        pvc: None,
        pvc_contains: non_empty(&q.pvc),
        limit: Some(HISTORY_ROWS),
        include_deleted: false,
    };
    let rows = state.session.workspace().backups(&filter);
    let body = html! {
        form #history-filter method="get" action="/history" {
            label for="filter-cluster" { "Cluster" }
            input #filter-cluster type="text" name="cluster" value=(q.cluster) placeholder="any";
            label for="filter-ns" { "Namespace" }
            input #filter-ns type="text" name="ns" value=(q.ns) placeholder="any";
            label for="filter-pvc" { "PVC" }
            input #filter-pvc type="text" name="pvc" value=(q.pvc) placeholder="any";
            label for="filter-status" { "Status" }
            select #filter-status name="status" {
                option value="" selected[q.status.is_empty()] { "any" }
                @for s in JobStatus::ALL.iter().filter(|s| **s != JobStatus::Queued) {
                    option value=(s) selected[s.as_str() == q.status] { (s) }
                }
            }
            button type="submit" { "Filter" }
        }
        @match &rows {
            Err(e) => (error_box("history-error", &format!("Reading the history failed: {e}"))),
            Ok(rows) => (table(rows.iter().filter(|r| q.status.is_empty() || r.status.as_str() == q.status))),
        }
    };
    let status = if rows.is_err() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, layout::page("History", &user, Nav::History, body)).into_response()
}

fn table<'a>(rows: impl Iterator<Item = &'a BackupRow>) -> Markup {
    let rows: Vec<&BackupRow> = rows.collect();
    html! {
        table #history {
            thead { tr {
                th { "Backup" } th { "Status" } th { "Namespace" } th { "PVC" } th { "Started" }
                th { "Read" } th { "Stored" } th { "Store" } th { "By" } th { "Artifact / error" }
            } }
            tbody {
                @for r in &rows {
                    tr.backup-row data-backup-id=(r.id) data-status=(r.status) {
                        td { a.backup-link.mono href=(format!("/history/{}", r.id)) { (r.id) } }
                        td { span class=(format!("badge {}", r.status)) { (r.status) } }
                        td { (r.namespace) }
                        td { a.claim-link href=(crate::pages::claims::claim_href(&r.namespace, &r.pvc)) { (r.pvc) } }
                        td { (layout::time(Some(&r.started_at))) }
                        td.num { (layout::bytes(r.bytes_read)) }
                        td.num { (layout::bytes(r.bytes_stored)) }
                        td.store { (r.store) }
                        td { (r.actor) }
                        td.detail {
                            @if r.status == JobStatus::Succeeded { span.mono { (r.artifact) } }
                            @else if !r.error.is_empty() { (r.stage) ": " (r.error) }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="10" .muted { "No backups match." } } }
            }
        }
    }
}

/// The backup id in a path; `None` for anything not shaped like one.
fn parse_id(raw: &str) -> Option<BackupId> {
    raw.parse().ok()
}

fn not_found(user: &CurrentUser, id: &str) -> Response {
    PageError::new(
        user,
        "Backup not found",
        FailureKind::NotFound,
        format!("There is no backup {id:?} in the history."),
    )
    .into_response()
}

/// The backup's details, or the response to send instead.
async fn load(state: &WebState, user: &CurrentUser, raw: &str) -> Result<BackupDetails, Response> {
    let Some(id) = parse_id(raw) else {
        return Err(not_found(user, raw));
    };
    match state.session.workspace().backup_details(&id).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(not_found(user, raw)),
        Err(e) => Err(PageError::of(user, "Backup", &e).into_response()),
    }
}

async fn details(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Path(raw): Path<String>,
) -> Response {
    match load(&state, &user, &raw).await {
        Ok(d) => details_page(&user, &d, None, &copy_targets(&state, &d)).into_response(),
        Err(r) => r,
    }
}

/// The stores a backup could be copied to: every store that holds neither it nor a copy.
fn copy_targets(state: &WebState, d: &BackupDetails) -> Vec<String> {
    let names = state.session.workspace().stores().names();
    names
        .into_iter()
        .filter(|n| *n != d.row.store && !d.copies.iter().any(|c| c.store == *n))
        .collect()
}

fn details_page(
    user: &CurrentUser,
    d: &BackupDetails,
    verified: Option<Markup>,
    copy_targets: &[String],
) -> Html<String> {
    let r = &d.row;
    let has_archive = r.status == JobStatus::Succeeded && !r.artifact.is_empty();
    let body = html! {
        dl.facts #backup-details {
            dt { "Backup" } dd.mono #detail-id { (r.id) }
            dt { "Status" } dd { span class=(format!("badge {}", r.status)) #detail-status { (r.status) } }
            dt { "Claim" } dd { (r.namespace) "/" (r.pvc) " " span.muted.mono { "uid " (r.pvc_uid) } }
            dt { "Cluster" } dd.mono { (r.cluster) }
            dt { "Started / finished" } dd { (layout::time(Some(&r.started_at))) " → " (layout::time(r.finished_at.as_deref())) }
            dt { "Read / stored" } dd { (layout::bytes(r.bytes_read)) " / " (layout::bytes(r.bytes_stored)) " (" (r.compression) ")" }
            dt { "sha256" } dd.mono #detail-sha256 { (r.sha256) }
            dt { "Store" } dd #detail-store { (r.store) }
            dt { "Copies" } dd #detail-copies {
                @if d.copies.is_empty() { span.muted { "none" } }
                @for c in &d.copies {
                    span.copy data-store=(c.store) { (c.store) " (" (layout::time(Some(&c.copied_at))) ")" } " "
                }
            }
            dt { "Artifact" } dd.mono #detail-artifact { (r.artifact) }
            dt { "By" } dd { (r.actor) " (" (r.trigger) ")" }
            dt { "Helper pod / node" } dd.mono { (r.helper_pod) " / " (r.node) }
            dt { "Data path" } dd #detail-data-path {
                @if r.data_path.is_empty() { span.muted { "not recorded" } } @else { (r.data_path) }
            }
            @if !r.error.is_empty() {
                dt { "Error" } dd.error { "at " (r.stage) " (" (r.failure_kind.map_or("", FailureKind::label)) "): " (r.error) }
            }
        }
        @if let Some(m) = &d.manifest {
            h2 { "Manifest" }
            dl.facts #manifest {
                dt { "Format" } dd { (m.format_version) }
                dt { "Tool" } dd { (m.tool_version) }
                dt { "Node" } dd { (m.node) }
                dt { "sha256" } dd.mono { (m.sha256) }
                @if let Some(e) = &m.encryption {
                    dt { "Encryption" } dd #detail-encryption {
                        (e.scheme) ", to " (e.recipients.len()) " recipient(s): "
                        @for r in &e.recipients { span.mono { (r) } " " }
                    }
                }
                dt { "Claim spec" } dd { pre.spec { (serde_json::to_string_pretty(&m.pvc_spec).unwrap_or_default()) } }
            }
        }
        @if let Some(e) = &d.manifest_error { (error_box("manifest-error", &format!("The manifest could not be read: {e}"))) }
        @if has_archive {
            div.actions {
                form #verify-form method="post" action=(format!("/history/{}/verify", r.id))
                    hx-post=(format!("/history/{}/verify", r.id)) hx-target="#verify-result" hx-swap="innerHTML" {
                    input type="hidden" name="csrf" value=(user.csrf);
                    button #verify type="submit" { "Verify" }
                    span.htmx-indicator { " Reading the archive…" }
                }
                a.button #download href=(format!("/history/{}/download", r.id)) download { "Download" }
                a.button #restore href=(format!("/history/{}/restore", r.id)) { "Restore…" }
            }
            div #verify-result { @if let Some(v) = verified { (v) } }
            @if !copy_targets.is_empty() {
                form #copy-form method="post" action=(format!("/history/{}/copy", r.id)) {
                    input type="hidden" name="csrf" value=(user.csrf);
                    label for="copy-to" { "Copy to store" }
                    select #copy-to name="to" {
                        @for name in copy_targets { option value=(name) { (name) } }
                    }
                    button #copy type="submit" { "Copy" }
                    span.muted.small { " The copy is checked against the manifest's sha256 on arrival." }
                }
            }
        }
    };
    layout::page(&format!("Backup {}", r.id), user, Nav::History, body)
}

async fn verify(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let Some(id) = parse_id(&raw) else {
        return not_found(&user, &raw);
    };
    let workspace = state.session.workspace();
    let outcome = workspace.verify(&id).await;
    workspace.audit(
        &user.actor(),
        if outcome.is_ok() {
            "verify.ok"
        } else {
            "verify.failed"
        },
        id.as_str(),
        "",
    );
    let result = match &outcome {
        Ok(v) => html! {
            p.ok #verify-ok {
                "Verified: sha256 " span.mono { (v.sha256) } " matches; "
                (v.entries) " entries, " (layout::bytes(v.tar_bytes)) " of tar in " (layout::bytes(v.bytes_stored)) " stored."
            }
        },
        Err(e) => error_box("verify-error", &e.to_string()),
    };
    if is_htmx(&headers) {
        return Html(result.into_string()).into_response();
    }
    match load(&state, &user, &raw).await {
        Ok(d) => details_page(&user, &d, Some(result), &copy_targets(&state, &d)).into_response(),
        Err(r) => r,
    }
}

fn content_type(file_name: &str) -> &'static str {
    if file_name.ends_with(".zst") {
        "application/zstd"
    } else if file_name.ends_with(".gz") {
        "application/gzip"
    } else {
        "application/x-tar"
    }
}

async fn download(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Path(raw): Path<String>,
) -> Response {
    let Some(id) = parse_id(&raw) else {
        return not_found(&user, &raw);
    };
    let workspace = state.session.workspace();
    let archive = match workspace.open_archive(&id).await {
        Ok(a) => a,
        Err(e) => return PageError::of(&user, "Download", &e).into_response(),
    };
    workspace.audit(&user.actor(), "download", id.as_str(), &archive.file_name);
    let safe_name: String = archive
        .file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let mut reader = archive.reader;
    // The store reads block; a bounded channel keeps memory flat whatever the client's speed.
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let chunk = match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&safe_name)),
    );
    // The stored file's length, never the history's: a wrong length truncates or stalls the
    // download. Unknown: sent chunked.
    if let Some(size) = archive.size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn restore_form(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Path(raw): Path<String>,
) -> Response {
    match load(&state, &user, &raw).await {
        Ok(d) => wizard(&user, &d.row, &FormData::default(), None).into_response(),
        Err(r) => r,
    }
}

fn wizard(
    user: &CurrentUser,
    row: &BackupRow,
    form: &FormData,
    plan: Option<Markup>,
) -> Html<String> {
    let ns = form
        .text("namespace")
        .unwrap_or_else(|| row.namespace.clone());
    let pvc = form
        .text("pvc")
        .unwrap_or_else(|| format!("{}-restored", row.pvc));
    let fresh = form.get("csrf").is_none();
    let body = html! {
        p.muted { "Restoring backup " span.mono { (row.id) } " of " (row.namespace) "/" (row.pvc) ". Plan first: nothing changes until you run the plan." }
        form #restore-form .grid-form method="post" action=(format!("/history/{}/restore/plan", row.id)) {
            input type="hidden" name="csrf" value=(user.csrf);
            label for="target-namespace" { "Target namespace" }
            input #target-namespace type="text" name="namespace" value=(ns) required;
            label for="target-pvc" { "Target PVC" }
            input #target-pvc type="text" name="pvc" value=(pvc) required;
            label.check { input #create type="checkbox" name="create" checked[fresh || form.checked("create")]; " Create the PVC (it must not exist yet)" }
            label for="storage-class" { "Storage class of a created PVC" }
            input #storage-class type="text" name="storage_class" value=(form.get("storage_class").unwrap_or("")) placeholder="the source's";
            label for="size" { "Size of a created PVC" }
            input #size type="text" name="size" value=(form.get("size").unwrap_or("")) placeholder="the source's";
            label.check { input #clean type="checkbox" name="clean" checked[form.checked("clean")]; " Empty the target first" }
            label.check { input #force type="checkbox" name="force" checked[form.checked("force")]; " Write even though running pods mount it" }
            label.check { input #keep-privileged type="checkbox" name="keep_privileged" checked[form.checked("keep_privileged")]; " Into another namespace too: keep setuid/setgid bits and file capabilities" }
            button #plan-restore type="submit" { "Plan restore" }
            span.htmx-indicator { " Reading the archive…" }
        }
        @if let Some(p) = plan { (p) }
    };
    layout::page("Restore", user, Nav::History, body)
}

fn request_from(id: &BackupId, form: &FormData) -> Result<RestoreRequest, String> {
    let target = PvcRef::parse(&format!(
        "{}/{}",
        form.text("namespace").unwrap_or_default(),
        form.text("pvc").unwrap_or_default()
    ))
    .map_err(|e| e.to_string())?;
    Ok(RestoreRequest {
        backup_id: id.to_string(),
        target,
        create: form.checked("create"),
        storage_class: form.text("storage_class"),
        size: form.text("size"),
        clean: form.checked("clean"),
        force: form.checked("force"),
        keep_privileged: form.checked("keep_privileged"),
    })
}

fn plan_view(plan: &RestorePlan, token: Option<&str>, row_id: &str, user: &CurrentUser) -> Markup {
    let s = &plan.source;
    html! {
        section #restore-plan data-runnable=(plan.runnable()) {
            h2 { "Plan" }
            dl.facts {
                dt { "From" } dd { (s.namespace) "/" (s.pvc) " at " (layout::time(Some(&s.started_at))) }
                dt { "Archive" } dd.mono { (s.artifact) }
                dt { "sha256" } dd.mono { (s.sha256) }
                dt { "Contents" } dd { (s.members) " entries, " (layout::bytes(s.tar_bytes)) " of tar (" (s.compression) ")" }
                dt { "To" } dd #plan-target { (plan.target.namespace) "/" (plan.target.pvc) }
                @if let Some(c) = &plan.new_claim {
                    dt { "Creates" } dd { "a PVC of " (c.size) ", class " (if c.storage_class.is_empty() { "(cluster default)" } else { c.storage_class.as_str() }) ", " (c.access_modes.join(",")) }
                } @else if !plan.create {
                    dt { "Existing PVC" } dd { (if plan.target_capacity.is_empty() { "size unknown" } else { plan.target_capacity.as_str() }) }
                }
                @if !plan.node.is_empty() { dt { "Node" } dd { (plan.node) } }
                @if !plan.in_use_by.is_empty() { dt { "Mounted by" } dd { (plan.in_use_by.join(", ")) } }
                dt { "Empty first" } dd { (if plan.clean { "yes" } else { "no: files are added and overwritten, none deleted" }) }
            }
            @if !plan.warnings.is_empty() {
                ul.warnings { @for w in &plan.warnings { li.warning { (w) } } }
            }
            @if !plan.refusals.is_empty() {
                ul.refusals { @for r in &plan.refusals { li.refusal { (r) } } }
            }
            @if let Some(token) = token {
                form #run-restore-form method="post" action=(format!("/history/{row_id}/restore")) {
                    input type="hidden" name="csrf" value=(user.csrf);
                    input type="hidden" name="plan" value=(token);
                    button #run-restore type="submit" { "Run this restore" }
                }
            } @else {
                button #run-restore type="button" disabled { "Cannot run: see above" }
            }
        }
    }
}

async fn plan_restore(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Path(raw): Path<String>,
    form: FormData,
) -> Response {
    let d = match load(&state, &user, &raw).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let id = parse_id(&raw).expect("load parsed it");
    let problem = |status, msg: &str| {
        (
            status,
            wizard(&user, &d.row, &form, Some(error_box("restore-error", msg))),
        )
            .into_response()
    };
    let request = match request_from(&id, &form) {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e),
    };
    let status = state.session.status();
    let generation = status.generation;
    let Some(app) = status.connected.map(|c| c.app) else {
        return problem(StatusCode::CONFLICT, NOT_CONNECTED);
    };
    let planned = detached(move || async move { app.plan_restore(&request).await })
        .await
        .and_then(|r| r);
    match planned {
        Ok(plan) => {
            let token = plan
                .runnable()
                .then(|| state.plans.keep(plan.clone(), &user.name, generation));
            let view = plan_view(&plan, token.as_deref(), &d.row.id, &user);
            wizard(&user, &d.row, &form, Some(view)).into_response()
        }
        Err(e) => problem(status_for(e.kind()), &e.to_string()),
    }
}

async fn run_restore(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(raw): Path<String>,
    form: FormData,
) -> Result<Response, PageError> {
    let generation = state.session.status().generation;
    let plan = form
        .get("plan")
        .and_then(|t| state.plans.take(t, &user.name, generation))
        .filter(|p| p.backup_id == raw)
        .ok_or_else(|| {
            PageError::new(
                &user,
                "Restore",
                FailureKind::Conflict,
                "This restore plan expired, was already run, or was made on a connection that has changed since; plan it again from the backup's page.",
            )
        })?;
    let app = state
        .session
        .app()
        .ok_or_else(|| PageError::not_connected(&user, "Restore"))?;
    let opts = RestoreOptions {
        trigger: Trigger::Ui,
        actor: user.actor(),
    };
    let job = state
        .jobs
        .submit_restore(app, plan, opts)
        .map_err(|e| PageError::of(&user, "Restore", &e))?;
    Ok(see_other(&headers, &format!("/jobs#job-{job}")))
}

/// Copies the backup to another store as a job, then shows it on the Jobs page.
async fn copy(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(raw): Path<String>,
    form: FormData,
) -> Result<Response, PageError> {
    let Some(id) = parse_id(&raw) else {
        return Ok(not_found(&user, &raw));
    };
    let to = form.text("to").unwrap_or_default();
    state
        .session
        .workspace()
        .stores()
        .get(&to)
        .map_err(|e| PageError::invalid(&user, "Copy", e.to_string()))?;
    let app = state
        .session
        .app()
        .ok_or_else(|| PageError::not_connected(&user, "Copy"))?;
    let opts = nkvm_engine::CopyOptions {
        backup_id: id.to_string(),
        to,
        actor: user.actor(),
    };
    let job = state
        .jobs
        .submit_copy(app, opts)
        .map_err(|e| PageError::of(&user, "Copy", &e))?;
    Ok(see_other(&headers, &format!("/jobs#job-{job}")))
}
