//! The Stores page: every named store with what the history says it holds (backups, bytes)
//! and its health, from a probe that writes, reads back and deletes a small object. Probes
//! run when the page is opened and the last one is older than [`STALE_AFTER`], or when the
//! operator asks; the result is kept so opening the page does not write to every store.

use crate::WebState;
use crate::auth::CurrentUser;
use crate::layout::{self, Nav};
use crate::pages::see_other;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::HeaderMap;
use maud::{Markup, html};
use nkvm_domain::JobStatus;
use nkvm_engine::session::BackupFilter;
use nkvm_engine::store_health::{self, StoreHealth};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old a probe result may be before opening the page probes again.
const STALE_AFTER: Duration = Duration::from_secs(300);
/// How long one probe may take before the store is reported unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The last probe of every store.
#[derive(Default)]
pub struct StoreHealthCache(Mutex<Option<(Instant, Vec<StoreHealth>)>>);

impl StoreHealthCache {
    fn fresh(&self) -> Option<Vec<StoreHealth>> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < STALE_AFTER)
            .map(|(_, health)| health.clone())
    }

    fn put(&self, health: Vec<StoreHealth>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), health));
    }
}

/// `/stores`, `/stores/check`.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/stores", get(page))
        .route("/stores/check", post(check_now))
}

async fn probe(state: &WebState) -> Vec<StoreHealth> {
    let stores = state.session.workspace().stores().clone();
    let health = store_health::check_all(&stores, PROBE_TIMEOUT).await;
    state.store_health.put(health.clone());
    health
}

async fn check_now(State(state): State<Arc<WebState>>, headers: HeaderMap) -> Response {
    probe(&state).await;
    see_other(&headers, "/stores")
}

/// Backups and stored bytes per store, over the history's live (not deleted) successes.
#[derive(Default)]
struct Held {
    backups: u64,
    bytes: u64,
}

async fn page(State(state): State<Arc<WebState>>, user: CurrentUser) -> Response {
    let health = match state.store_health.fresh() {
        Some(h) => h,
        None => probe(&state).await,
    };
    let mut held: HashMap<String, Held> = HashMap::new();
    let rows = state.session.workspace().backups(&BackupFilter::default());
    if let Ok(rows) = &rows {
        for r in rows.iter().filter(|r| r.status == JobStatus::Succeeded) {
            let h = held.entry(r.store.clone()).or_default();
            h.backups += 1;
            h.bytes += r.bytes_stored;
        }
    }
    let body = html! {
        p.muted {
            "Each backup goes to one store; the stores file (" code { "NKVM_STORES_FILE" } ") names them. "
            "A check writes, reads back and deletes a small probe object."
        }
        @if let Err(e) = &rows {
            (layout::error_box("stores-history-error", &format!("Reading the history failed: {e}")))
        }
        (table(&health, &held))
        form #check-stores-form method="post" action="/stores/check" {
            input type="hidden" name="csrf" value=(user.csrf);
            button #check-stores type="submit" { "Check now" }
        }
    };
    layout::page("Stores", &user, Nav::Stores, body).into_response()
}

fn table(health: &[StoreHealth], held: &HashMap<String, Held>) -> Markup {
    let none = Held::default();
    html! {
        table #stores {
            thead { tr {
                th { "Store" } th { "Type" } th { "Location" } th { "Backups" } th { "Stored" }
                th { "Health" } th { "Checked" }
            } }
            tbody {
                @for h in health {
                    @let count = held.get(&h.name).unwrap_or(&none);
                    tr.store-row data-store=(h.name) data-health=(if h.ok { "ok" } else { "failed" }) {
                        td.name { (h.name) }
                        td {
                            (h.kind)
                            @if h.encrypted { " " span.badge title="Archives are age files; restores need the identity" { "encrypted" } }
                            @if h.direct_uploads { " " span.badge title="Helper pods of nkvm's own image upload archives here themselves; nkvm only completes the upload" { "direct" } }
                        }
                        td.mono { (h.location) }
                        td.num { (count.backups) }
                        td.num { (layout::bytes(count.bytes)) }
                        td {
                            @if h.ok { span.badge.succeeded { "ok" } }
                            @else { span.badge.failed { "failed" } }
                            " " span.detail { (h.detail) }
                        }
                        td { (layout::time(Some(&h.checked_at))) }
                    }
                }
            }
        }
    }
}
