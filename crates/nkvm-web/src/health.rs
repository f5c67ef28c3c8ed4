//! `/healthz` (the process answers), `/readyz` (the history answers and the store takes a
//! write; the cluster's state is reported but does not make nkvm unready, so the UI stays
//! reachable to show and fix a connection problem) and `/metrics`.

use crate::WebState;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use std::sync::Arc;

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

async fn readyz(State(state): State<Arc<WebState>>) -> Response {
    let mut checks = state.session.workspace().readiness().await;
    let ready = checks.iter().all(|c| c.ok);
    checks.push(state.session.cluster_readiness().await);
    let body = serde_json::json!({ "ready": ready, "checks": checks });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
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
