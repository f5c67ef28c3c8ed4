//! The Volumes page: the cached inventory filtered, sorted and paged in memory; multi-select
//! and "Back up selected", which submits a job to the engine and goes to the Jobs page.

use crate::WebState;
use crate::auth::CurrentUser;
use crate::form::FormData;
use crate::inventory_cache::{Snapshot, VolumeQuery};
use crate::layout::{self, Nav, error_box};
use crate::page_error::{NOT_CONNECTED, PageError};
use crate::pages::see_other;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::HeaderMap;
use maud::{Markup, html};
use nkvm_domain::{Compression, PvcRecord, PvcRef, Trigger};
use nkvm_engine::archive::CompressionOptions;
use nkvm_engine::session::detached;
use nkvm_engine::{BackupOptions, Scope};
use std::sync::Arc;
use std::time::Instant;

/// Most claims backed up at once from the UI.
const MAX_PARALLEL: usize = 16;

/// `/volumes`, `/volumes/refresh`, `/backups`.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/volumes", get(page))
        .route("/volumes/refresh", post(refresh_now))
        .route("/backups", post(back_up))
}

/// Loads the live connection's inventory into the cache (an error is cached too, and shown).
pub async fn refresh(state: &WebState) {
    let status = state.session.status();
    let Some(connected) = status.connected else {
        return;
    };
    let started = Instant::now();
    let app = connected.app.clone();
    let loaded = detached(move || async move { app.inventory(&Scope::AllAllowed).await })
        .await
        .and_then(|r| r);
    let took = started.elapsed();
    state.metrics.discovery_took(took);
    let snapshot = match loaded {
        Ok(records) => {
            for r in &records {
                if let Some(at) = &r.last_successful_backup {
                    state.metrics.set_last_success(&r.namespace, &r.name, at);
                }
            }
            Snapshot::loaded(status.generation, records, took)
        }
        Err(e) => Snapshot::failed(status.generation, e.to_string(), took),
    };
    state.inventory.put(snapshot);
}

async fn refresh_now(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    refresh(&state).await;
    see_other(&headers, "/volumes")
}

/// The cached inventory of the live connection, loading it on first use.
pub(crate) async fn snapshot(state: &WebState) -> Option<Snapshot> {
    let status = state.session.status();
    status.connected.as_ref()?;
    let generation = status.generation;
    if let Some(s) = state.inventory.get(generation) {
        return Some(s);
    }
    refresh(state).await;
    state.inventory.get(generation)
}

async fn page(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    Query(q): Query<VolumeQuery>,
) -> Response {
    let body = match snapshot(&state).await {
        None => html! {
            (error_box("volumes-error", NOT_CONNECTED))
            p { a href="/connection" { "Connect on the Connection page" } " to see its volumes." }
        },
        Some(s) => render(&s, &q, &user, &state.session.workspace().stores().names()),
    };
    layout::page("Volumes", &user, Nav::Volumes, body).into_response()
}

/// The page body for a snapshot.
fn render(s: &Snapshot, q: &VolumeQuery, user: &CurrentUser, stores: &[String]) -> Markup {
    if let Some(e) = &s.error {
        return html! {
            (error_box("volumes-error", &format!("Loading the inventory failed: {e}")))
            (refresh_form(user, s))
        };
    }
    let (rows, total) = s.select(q);
    let pages = total.div_ceil(q.per_page()).max(1);
    html! {
        div.toolbar {
            (filter_form(s, q))
            (refresh_form(user, s))
        }
        div #volumes-results {
            p.muted #volumes-summary {
                (total) " of " (s.records.len()) " claims"
                @if pages > 1 { ", page " (q.page().min(pages)) " of " (pages) }
            }
            form #backup-form method="post" action="/backups" {
                input type="hidden" name="csrf" value=(user.csrf);
                table #volumes {
                    thead { tr {
                        th { span.sr-only { "Select" } }
                        (sort_header(q, "namespace", "Namespace"))
                        (sort_header(q, "name", "PVC"))
                        (sort_header(q, "owner", "Owner"))
                        (sort_header(q, "phase", "Phase"))
                        (sort_header(q, "size", "Size"))
                        (sort_header(q, "class", "Class"))
                        th { "Modes" }
                        (sort_header(q, "node", "Node"))
                        (sort_header(q, "backup", "Last backup"))
                        (sort_header(q, "backupable", "Backupable"))
                    } }
                    tbody {
                        @for r in &rows { (row(r)) }
                        @if rows.is_empty() { tr { td colspan="11" .muted { "No claims match." } } }
                    }
                }
                (pager(q, pages))
                div.actions {
                    label for="compression" { "Compression" }
                    select #compression name="compression" {
                        option value="zstd" selected { "zstd" }
                        option value="gzip" { "gzip" }
                        option value="none" { "none" }
                    }
                    label for="store" { "Store" }
                    select #store name="store" {
                        @for name in stores { option value=(name) selected[name == "local"] { (name) } }
                    }
                    label for="parallel" { "At once" }
                    input #parallel type="number" name="parallel" value="2" min="1" max=(MAX_PARALLEL);
                    button #backup-selected type="submit" { "Back up selected" }
                }
            }
        }
    }
}

fn filter_form(s: &Snapshot, q: &VolumeQuery) -> Markup {
    html! {
        form #volume-filter method="get" action="/volumes"
            hx-get="/volumes" hx-target="#volumes-results" hx-select="#volumes-results" hx-swap="outerHTML"
            hx-push-url="true" hx-trigger="input changed delay:300ms from:#filter-text, change from:#filter-namespace, submit" {
            label for="filter-namespace" { "Namespace" }
            select #filter-namespace name="ns" {
                option value="" { "(all)" }
                @for ns in s.namespaces() {
                    option value=(ns) selected[ns == q.ns] { (ns) }
                }
            }
            label for="filter-text" { "Find" }
            input #filter-text type="search" name="q" value=(q.q) placeholder="name, owner, class, node…";
            input type="hidden" name="sort" value=(q.sort);
            input type="hidden" name="dir" value=(q.dir);
            button type="submit" { "Filter" }
        }
    }
}

fn refresh_form(user: &CurrentUser, s: &Snapshot) -> Markup {
    html! {
        form #refresh-form method="post" action="/volumes/refresh" {
            input type="hidden" name="csrf" value=(user.csrf);
            span.muted.small { "Loaded " (layout::time(Some(&s.loaded_at))) " in " (s.took.as_millis()) " ms " }
            button #refresh-inventory type="submit" { "Refresh" }
        }
    }
}

/// `/volumes?...` with `changes` applied to `q`.
fn link(q: &VolumeQuery, sort: &str, dir: &str, page: usize) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("ns", q.ns.as_str()),
        ("q", q.q.as_str()),
        ("sort", sort),
        ("dir", dir),
    ] {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    if page > 1 {
        s.append_pair("page", &page.to_string());
    }
    if q.per_page.is_some() {
        s.append_pair("per_page", &q.per_page().to_string());
    }
    format!("/volumes?{}", s.finish())
}

fn sort_header(q: &VolumeQuery, key: &str, label: &str) -> Markup {
    let current = q.sort == key || (q.sort.is_empty() && key == "namespace");
    let dir = if current && q.dir != "desc" {
        "desc"
    } else {
        "asc"
    };
    let arrow = match (current, q.dir.as_str()) {
        (false, _) => "",
        (true, "desc") => " ▼",
        (true, _) => " ▲",
    };
    html! { th { a href=(link(q, key, dir, 1)) { (label) (arrow) } } }
}

fn pager(q: &VolumeQuery, pages: usize) -> Markup {
    let page = q.page().min(pages);
    html! {
        @if pages > 1 {
            nav.pager {
                @if page > 1 { a #page-prev href=(link(q, &q.sort, &q.dir, page - 1)) { "← Previous" } }
                span { "Page " (page) " of " (pages) }
                @if page < pages { a #page-next href=(link(q, &q.sort, &q.dir, page + 1)) { "Next →" } }
            }
        }
    }
}

fn row(r: &PvcRecord) -> Markup {
    let key = format!("{}/{}", r.namespace, r.name);
    let nodes: Vec<&str> = r
        .consumers
        .iter()
        .map(|c| c.node.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let modes: Vec<&str> = r
        .access_modes
        .iter()
        .map(|m| nkvm_domain::short_access_mode(m))
        .collect();
    html! {
        tr.pvc-row data-pvc=(key) class=[(!r.backupable).then_some("blocked")] {
            td { input.pvc-select type="checkbox" name="pvc" value=(key) disabled[!r.backupable] aria-label=(format!("Select {key}")); }
            td { (r.namespace) }
            td.name { a.claim-link href=(crate::pages::claims::claim_href(&r.namespace, &r.name)) { (r.name) } }
            td { (r.owner.display()) }
            td { (r.phase) }
            td.num { (r.capacity) }
            td { (r.storage_class) }
            td { (modes.join(",")) @if r.volume_mode == "Block" { " Block" } }
            td { (nodes.join(",")) }
            td {
                (layout::time(r.last_successful_backup.as_deref()))
                @if let Some(at) = &r.last_failed_backup {
                    " " span.badge.failed title="The last backup attempt did not succeed: see History" { "failed " (layout::time(Some(at))) }
                }
            }
            td {
                @if r.backupable { span.ok { "yes" } }
                @else { span.no { "no" } " " span.reason { (r.reason) } }
            }
        }
    }
}

async fn back_up(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    form: FormData,
) -> Result<Response, PageError> {
    // With a way back to the table: an error page without one is a dead end.
    let bad = |msg: &str| {
        PageError::invalid(&user, "Back up", msg).with_back(
            "back-to-volumes",
            "/volumes",
            "Back to Volumes",
        )
    };
    let claims: Result<Vec<PvcRef>, _> = form.all("pvc").into_iter().map(PvcRef::parse).collect();
    let claims = match claims {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return Err(bad("Select at least one volume to back up.")),
        Err(e) => return Err(bad(&e.to_string())),
    };
    let compression: Compression = form
        .get("compression")
        .unwrap_or("zstd")
        .parse()
        .map_err(|e: String| bad(&e))?;
    let parallel = match form.text("parallel").map(|p| p.parse::<usize>()) {
        None => 2,
        Some(Ok(n)) if (1..=MAX_PARALLEL).contains(&n) => n,
        _ => {
            return Err(bad(&format!(
                "\"At once\" must be a number from 1 to {MAX_PARALLEL}."
            )));
        }
    };
    let app = state
        .session
        .app()
        .ok_or_else(|| PageError::not_connected(&user, "Back up"))?;
    let workspace = state.session.workspace();
    let expected = claims
        .iter()
        .map(|c| workspace.last_backup_size(c.namespace.as_str(), c.name.as_str()))
        .collect();
    let store = form.get("store").unwrap_or("local");
    workspace
        .stores()
        .get(store)
        .map_err(|e| bad(&e.to_string()))?;
    let opts = BackupOptions {
        compression: CompressionOptions {
            compression,
            ..Default::default()
        },
        parallel,
        trigger: Trigger::Ui,
        actor: user.actor(),
        store: store.to_string(),
    };
    let job = state
        .jobs
        .submit_backup(app, claims, opts, expected)
        .map_err(|e| PageError::of(&user, "Back up", &e))?;
    Ok(see_other(&headers, &format!("/jobs#job-{job}")))
}
