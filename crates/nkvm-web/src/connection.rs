//! One HTTP/1.1 connection: the router with the peer's address, a deadline for request
//! headers (which also ends connections idle between requests), and a graceful end when the
//! server shuts down. axum's own `serve` has no header timeout, so a client sending a byte a
//! minute could hold a connection forever.

use crate::WebState;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;

/// Serves `stream` until the client leaves, misses the header deadline, or the server closes.
pub async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    state: Arc<WebState>,
) {
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(router.clone(), request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout);
    let mut closing = state.closing.subscribe();
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let finished = tokio::select! {
        r = connection.as_mut() => Some(r),
        _ = closing.wait_for(|c| *c) => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        // Clients that leave or time out are routine; nothing to act on.
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
