//! The pages behind the login, one module each. Handlers extract, call one engine method and
//! render; anything longer belongs in the engine.

pub mod claims;
pub mod connection;
pub mod dashboard;
pub mod history;
pub mod jobs;
pub mod policies;
pub mod stores;
pub mod volumes;

use crate::WebState;
use crate::auth::is_htmx;
use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use nkvm_domain::FailureKind;
use std::sync::Arc;

/// Every page route.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .merge(dashboard::routes())
        .merge(claims::routes())
        .merge(policies::routes())
        .merge(connection::routes())
        .merge(volumes::routes())
        .merge(jobs::routes())
        .merge(history::routes())
        .merge(stores::routes())
}

/// The HTTP status for a failure kind.
pub fn status_for(kind: FailureKind) -> StatusCode {
    match kind {
        FailureKind::InvalidInput => StatusCode::BAD_REQUEST,
        FailureKind::NotFound => StatusCode::NOT_FOUND,
        FailureKind::Forbidden => StatusCode::FORBIDDEN,
        FailureKind::Conflict => StatusCode::CONFLICT,
        FailureKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        FailureKind::ClusterUnavailable => StatusCode::BAD_GATEWAY,
        FailureKind::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        FailureKind::CommandFailed => StatusCode::UNPROCESSABLE_ENTITY,
        FailureKind::Cancelled => StatusCode::CONFLICT,
        FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// After a form post: a 303 to `to`, or for htmx an `HX-Redirect` (htmx follows 303s itself and
/// would swap the new page into the old one).
pub fn see_other(headers: &HeaderMap, to: &str) -> Response {
    if is_htmx(headers) {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(to) {
            r.headers_mut().insert("hx-redirect", v);
        }
        r
    } else {
        Redirect::to(to).into_response()
    }
}
