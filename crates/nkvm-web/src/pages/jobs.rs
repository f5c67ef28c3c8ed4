//! The Jobs page: every kept job with its items; live over server-sent events (each item's
//! box is replaced as it changes); cancel per item or per job.

use crate::WebState;
use crate::auth::CurrentUser;
use crate::layout::{self, Nav};
use crate::pages::see_other;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use maud::{Markup, html};
use nkvm_domain::JobStatus;
use nkvm_engine::jobs::{ItemState, JobEvent, JobId, JobKind, JobState, Jobs};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// `/jobs...` routes.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/jobs", get(page))
        .route("/jobs/events", get(events))
        .route("/jobs/{job}/cancel", post(cancel_job))
        .route("/jobs/{job}/items/{index}/cancel", post(cancel_item))
}

async fn page(State(state): State<Arc<WebState>>, user: CurrentUser) -> Html<String> {
    let jobs = state.jobs.list();
    let body = html! {
        div #jobs hx-ext="sse" sse-connect="/jobs/events" {
            // Replaced by the stream's first event and on every new job: the list then comes
            // in order with the item updates, so a job that finishes while the page connects
            // never shows a stale state (a separate reload could land after the final event).
            div #jobs-list sse-swap="jobs-list" hx-swap="innerHTML" { (jobs_list(&jobs)) }
        }
    };
    layout::page("Jobs", &user, Nav::Jobs, body)
}

/// Every kept job, newest first (the list's content).
fn jobs_list(jobs: &[JobState]) -> Markup {
    html! {
        @if jobs.is_empty() {
            p.muted #no-jobs { "No jobs yet. Select volumes on the " a href="/volumes" { "Volumes" } " page and back them up." }
        }
        @for job in jobs { (job_view(job)) }
    }
}

/// The whole list as an event.
fn list_event(jobs: &Jobs) -> Event {
    Event::default()
        .event("jobs-list")
        .data(jobs_list(&jobs.list()).into_string())
}

fn job_view(job: &JobState) -> Markup {
    html! {
        section.job #(format!("job-{}", job.id)) data-job-id=(job.id) {
            header sse-swap=(format!("job-{}", job.id)) hx-swap="innerHTML" { (job_head(job)) }
            @for item in &job.items {
                div.job-item #(item_event(item)) data-pvc=(format!("{}/{}", item.namespace, item.pvc))
                    sse-swap=(item_event(item)) hx-swap="innerHTML" {
                    (item_body(item))
                }
            }
        }
    }
}

/// A job's heading; sent again over SSE whenever one of its items changes.
fn job_head(job: &JobState) -> Markup {
    html! {
        h2 { "Job " (job.id) " · " (job.kind.as_str()) }
        span.muted.job-progress { (progress_line(job)) " · " (job.summary) " · by " (job.actor) " · " (layout::time(Some(&job.submitted_at))) }
        @if !job.finished() {
            button.cancel-job type="button" hx-post=(format!("/jobs/{}/cancel", job.id)) hx-swap="none"
                hx-confirm="Cancel every unfinished item of this job?" { "Cancel job" }
        }
    }
}

/// How far a job got: `2 of 3 ended: 1 succeeded, 1 failed`; only succeeded items count as
/// done.
fn progress_line(job: &JobState) -> String {
    let ended: Vec<JobStatus> = job
        .items
        .iter()
        .map(|i| i.status)
        .filter(|s| s.is_final())
        .collect();
    let mut line = format!("{} of {} ended", ended.len(), job.items.len());
    let counts: Vec<String> = [
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Interrupted,
    ]
    .iter()
    .filter_map(|status| {
        let n = ended.iter().filter(|s| *s == status).count();
        (n > 0).then(|| format!("{n} {status}"))
    })
    .collect();
    if !counts.is_empty() {
        line.push_str(": ");
        line.push_str(&counts.join(", "));
    }
    line
}

/// The SSE event name (and element id) of an item.
fn item_event(item: &ItemState) -> String {
    format!("item-{}-{}", item.job, item.index)
}

/// What an item's box shows; sent again over SSE whenever the item changes.
pub fn item_body(item: &ItemState) -> Markup {
    let status = item.status.as_str();
    html! {
        div.item-state data-status=(status) {
            div.item-head {
                span.target { (item.namespace) "/" (item.pvc) }
                span class=(format!("status badge {status}")) { (status) }
                @if !item.status.is_final() || item.status == JobStatus::Failed { span.stage { (item.stage) } }
                @if !item.status.is_final() {
                    button.cancel-item type="button" hx-swap="none"
                        hx-post=(format!("/jobs/{}/items/{}/cancel", item.job, item.index)) { "Cancel" }
                }
            }
            @if let Some(total) = item.expected_bytes.filter(|_| !item.status.is_final()) {
                progress max=(total) value=(item.bytes.min(total)) {}
            }
            div.item-numbers {
                span.bytes { (layout::bytes(item.bytes)) }
                @if let Some(rate) = item.rate { span.rate { (layout::bytes(rate as u64)) "/s" } }
                @if let Some(eta) = item.eta_seconds { span.eta { "about " (layout::duration(eta)) " left" } }
                @if !item.id.is_empty() {
                    @if item.status == JobStatus::Succeeded && item.kind == JobKind::Backup {
                        a.backup-id href=(format!("/history/{}", item.id)) { (item.id) }
                    } @else {
                        span.backup-id.mono { (item.id) }
                    }
                }
            }
            @if !item.error.is_empty() {
                @match item.status {
                    // A cancel the operator asked for is not a failure.
                    JobStatus::Cancelled | JobStatus::Interrupted => p.notice { (item.error) },
                    _ => p.error { "Failed at " strong { (item.stage) } ": " (item.error) },
                }
            }
            @if !item.hint.is_empty() { p.hint { (item.hint) } }
        }
    }
}

/// The live stream of a Jobs tab. It ends when the server shuts down and when the login it
/// was opened with ends (logout or expiry), so no stream outlives its session.
async fn events(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe first, then snapshot: updates published in between come after the snapshot
    // and only repeat states it already holds or newer ones.
    let updates = state.jobs.subscribe();
    let closing = state.closing.subscribe();
    let jobs = state.jobs.clone();
    let snapshot = futures_util::stream::iter([Ok(list_event(&jobs))]);
    let session_ended = {
        let state = state.clone();
        Box::pin(async move { state.auth.ended(&user.csrf).await })
    };
    let live = futures_util::stream::unfold(
        (updates, closing, jobs, session_ended),
        |(mut updates, mut closing, jobs, mut session_ended)| async move {
            let next = tokio::select! {
                e = updates.recv() => e,
                _ = closing.wait_for(|c| *c) => return None,
                () = &mut session_ended => return None,
            };
            let events = match next {
                Ok(JobEvent::Item(item)) => item_events(&jobs, &item),
                // A new job, or missed updates: the whole list again.
                Ok(JobEvent::Submitted(_)) | Err(RecvError::Lagged(_)) => vec![list_event(&jobs)],
                Err(RecvError::Closed) => return None,
            };
            Some((
                futures_util::stream::iter(events.into_iter().map(Ok)),
                (updates, closing, jobs, session_ended),
            ))
        },
    )
    .flatten();
    Sse::new(snapshot.chain(live)).keep_alive(KeepAlive::default())
}

/// The events for a changed item: its box, and its job's heading (counts, cancel button).
fn item_events(jobs: &Jobs, item: &ItemState) -> Vec<Event> {
    let mut events = vec![
        Event::default()
            .event(item_event(item))
            .data(item_body(item).into_string()),
    ];
    if let Some(job) = jobs.get(item.job) {
        events.push(
            Event::default()
                .event(format!("job-{}", job.id))
                .data(job_head(&job).into_string()),
        );
    }
    events
}

fn cancelled(found: bool, headers: &HeaderMap) -> Response {
    if found && crate::auth::is_htmx(headers) {
        StatusCode::NO_CONTENT.into_response()
    } else if found {
        see_other(headers, "/jobs")
    } else {
        (StatusCode::NOT_FOUND, "no such job or item\n").into_response()
    }
}

async fn cancel_job(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path(job): Path<JobId>,
) -> Response {
    tracing::info!(job, user = %user.name, "cancel job");
    cancelled(state.jobs.cancel(job, None), &headers)
}

async fn cancel_item(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    Path((job, index)): Path<(JobId, usize)>,
) -> Response {
    tracing::info!(job, index, user = %user.name, "cancel item");
    cancelled(state.jobs.cancel(job, Some(index)), &headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkvm_domain::{FailureKind, Stage};

    fn item(index: usize, status: JobStatus, stage: Stage, error: &str) -> ItemState {
        ItemState {
            job: 1,
            kind: JobKind::Backup,
            index,
            namespace: "shop".into(),
            pvc: format!("data-{index}"),
            id: String::new(),
            status,
            stage,
            bytes: 0,
            rate: None,
            expected_bytes: None,
            eta_seconds: None,
            failure_kind: (status == JobStatus::Failed).then_some(FailureKind::Timeout),
            error: error.into(),
            hint: String::new(),
            artifact: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
        }
    }

    #[test]
    fn a_job_counts_outcomes_not_just_ended_items() {
        let job = JobState {
            id: 1,
            kind: JobKind::Backup,
            actor: "ui:admin".into(),
            submitted_at: String::new(),
            summary: String::new(),
            items: vec![
                item(0, JobStatus::Succeeded, Stage::Commit, ""),
                item(1, JobStatus::Failed, Stage::Stream, "cut"),
                item(2, JobStatus::Running, Stage::Stream, ""),
            ],
        };
        assert_eq!(progress_line(&job), "2 of 3 ended: 1 succeeded, 1 failed");
    }

    #[test]
    fn a_cancel_is_shown_as_a_notice_and_a_failure_as_an_error() {
        let cancelled = item(
            0,
            JobStatus::Cancelled,
            Stage::Cancelled,
            "cancelled on request; no archive was kept",
        );
        let html = item_body(&cancelled).into_string();
        assert!(html.contains("class=\"notice\""), "{html}");
        assert!(!html.contains("Failed at"), "{html}");
        let failed = item(1, JobStatus::Failed, Stage::Stream, "cut");
        let html = item_body(&failed).into_string();
        assert!(html.contains("Failed at <strong>stream</strong>"), "{html}");
    }
}
