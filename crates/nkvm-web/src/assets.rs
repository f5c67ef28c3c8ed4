//! The vendored static files (htmx 2 and its SSE extension, see `static/NOTICE`) and nkvm's
//! stylesheet and script, compiled into the binary and served with long cache lifetimes: every URL
//! carries the file's version or content hash, so a changed file gets a new URL.

use crate::WebState;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};
use std::sync::{Arc, LazyLock};

/// htmx itself.
pub const HTMX_PATH: &str = "/static/htmx-2.0.11.min.js";
/// The server-sent-events extension.
pub const SSE_PATH: &str = "/static/htmx-ext-sse-2.2.4.js";

const HTMX: &str = include_str!("../static/htmx-2.0.11.min.js");
const SSE: &str = include_str!("../static/htmx-ext-sse-2.2.4.js");
const CSS: &str = include_str!("../static/nkvm.css");
const JS: &str = include_str!("../static/nkvm.js");

/// The stylesheet's URL, versioned by its content.
pub static CSS_PATH: LazyLock<String> =
    LazyLock::new(|| format!("/static/nkvm-{}.css", short_hash(CSS)));

/// nkvm's own script, versioned by its content.
pub static JS_PATH: LazyLock<String> =
    LazyLock::new(|| format!("/static/nkvm-{}.js", short_hash(JS)));

fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn immutable(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The static routes (public: they carry no data).
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route(
            HTMX_PATH,
            get(|| async { immutable("text/javascript; charset=utf-8", HTMX) }),
        )
        .route(
            SSE_PATH,
            get(|| async { immutable("text/javascript; charset=utf-8", SSE) }),
        )
        .route(
            CSS_PATH.as_str(),
            get(|| async { immutable("text/css; charset=utf-8", CSS) }),
        )
        .route(
            JS_PATH.as_str(),
            get(|| async { immutable("text/javascript; charset=utf-8", JS) }),
        )
}
