//! `/healthz` (the process answers), `/readyz` (the history answers and the store takes a
//! write; the cluster's state is reported but does not make nkvm unready, so the UI stays
//! reachable to show and fix a connection problem) and `/metrics`.
//!
//! `/readyz` is public (probes carry no login), so it never does work per request: the checks
//! run in the background every `readiness_interval` and requests read the last result.
//! Anonymous requests get booleans only; a logged-in user also gets what each check found
//! (paths, the API server, error texts).

use crate::WebState;
use crate::proxies::Peer;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use nkvm_engine::session::ReadinessCheck;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long a request waits for the very first result after the start.
const FIRST_RESULT_WAIT: Duration = Duration::from_secs(10);

/// One run of the checks.
struct Report {
    ready: bool,
    checks: Vec<ReadinessCheck>,
    at: jiff::Timestamp,
}

/// The last readiness result.
pub struct Readiness(tokio::sync::watch::Sender<Option<Arc<Report>>>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(tokio::sync::watch::channel(None).0)
    }
}

/// Runs the checks now and every `readiness_interval` while the state lives (when there is a
/// runtime to run them on; else `/readyz` answers that nothing was checked).
pub fn refresh_in_background(state: &Arc<WebState>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<WebState> = Arc::downgrade(state);
    let interval = state.config.readiness_interval;
    runtime.spawn(async move {
        loop {
            let Some(state) = weak.upgrade() else { return };
            let report = check(&state).await;
            state.readiness.0.send_replace(Some(Arc::new(report)));
            drop(state);
            tokio::time::sleep(interval).await;
        }
    });
}

async fn check(state: &WebState) -> Report {
    let mut checks = state.session.workspace().readiness().await;
    let ready = checks.iter().all(|c| c.ok);
    checks.push(state.session.cluster_readiness().await);
    Report {
        ready,
        checks,
        at: jiff::Timestamp::now(),
    }
}

/// Routes reachable without a session.
pub fn public_routes(state: &WebState) -> Router<Arc<WebState>> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if state.config.metrics_public {
        router.route("/metrics", get(metrics))
    } else {
        router
    }
}

/// Routes behind the login (`/metrics` unless configured public).
pub fn private_routes(state: &WebState) -> Router<Arc<WebState>> {
    if state.config.metrics_public {
        Router::new()
    } else {
        Router::new().route("/metrics", get(metrics))
    }
}

async fn readyz(
    State(state): State<Arc<WebState>>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Response {
    let mut latest = state.readiness.0.subscribe();
    let report = tokio::time::timeout(FIRST_RESULT_WAIT, latest.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|r| r.clone()));
    let logged_in = state.auth.user(&headers, peer).is_some();
    let (status, body) = match &report {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "ready": false, "checks": {} }),
        ),
        Some(r) => {
            let body = if logged_in {
                serde_json::json!({
                    "ready": r.ready,
                    "checkedAt": r.at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    "checks": r.checks,
                })
            } else {
                let flags: serde_json::Map<String, serde_json::Value> = r
                    .checks
                    .iter()
                    .map(|c| (c.name.to_string(), c.ok.into()))
                    .collect();
                serde_json::json!({ "ready": r.ready, "checks": flags })
            };
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, body)
        }
    };
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        format!("{body:#}\n"),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<WebState>>) -> Response {
    let text = state.metrics.render(
        state.jobs.in_flight(),
        state.session.app().is_some(),
        state.session.workspace().history_write_failures(),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
