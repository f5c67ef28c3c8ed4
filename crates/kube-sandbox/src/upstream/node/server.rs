//! The node's HTTPS server, what the API server calls for `pods/exec` and `pods/log`:
//! `/exec/{namespace}/{pod}/{container}` (WebSocket, `v5.channel.k8s.io`/`v4.channel.k8s.io`,
//! proxied unchanged by the API server because the node declares `ExtendWebSocketsToKubelet`)
//! and `/containerLogs/{namespace}/{pod}/{container}`. Only clients with a certificate from
//! the cluster CA (the API server's `--kubelet-client-certificate`) get in.

use super::Node;
use crate::api::Query;
use crate::error::ApiError;
use crate::exec::{self, ExecRequest};
use crate::kubelet::logs;
use crate::meta;
use crate::upstream::pki::{Authority, Usage};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// TLS for the node server: a serving certificate for its address, client certificates
/// required and checked against the cluster CA.
pub(super) fn tls_config(
    ca: &Authority,
    name: &str,
    ip: Ipv4Addr,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let hosts = vec![ip.to_string(), name.to_string()];
    let pair = ca
        .sign(Usage::Server {
            name,
            hosts: &hosts,
        })
        .map_err(|e| format!("minting the node's serving certificate: {e}"))?;
    let pem_error = |e: rustls::pki_types::pem::Error| format!("reading a minted PEM: {e}");
    let cert = CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).map_err(pem_error)?;
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(pem_error)?;
    let ca_cert = CertificateDer::from_pem_slice(ca.ca_pem.as_bytes()).map_err(pem_error)?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca_cert)
        .map_err(|e| format!("trusting the cluster CA: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("configuring client certificate checks: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(vec![cert], key)
        })
        .map_err(|e| format!("configuring the node server's TLS: {e}"))?;
    // HTTP/1.1 only: exec is an HTTP/1.1 upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The node server's routes.
pub(super) fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/exec/{namespace}/{pod}/{container}", get(exec_handler))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs_handler),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(node)
}

type Target = Path<(String, String, String)>;

async fn exec_handler(
    State(node): State<Arc<Node>>,
    Path((ns, name, container)): Target,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        // With ExtendWebSocketsToKubelet declared, the API server sends WebSocket upgrades
        // here; SPDY would mean a client the node agent does not serve.
        return ApiError::bad_request(
            "the nkvm node agent serves exec over WebSocket only (v5.channel.k8s.io, v4.channel.k8s.io)",
        )
        .into_response();
    };
    let query = Query::parse(raw.as_deref());
    let Some(pod) = node.pod(&ns, &name) else {
        return ApiError::not_found("pods", &name).into_response();
    };
    let Some(spec) = node.kubelet.process_spec(meta::uid(&pod), &container) else {
        return ApiError::bad_request(format!(
            "unable to upgrade connection: container {container} not found in pod {name}"
        ))
        .into_response();
    };
    let req = ExecRequest {
        argv: query.all("command"),
        stdin: query.flag("input"),
        stdout: query.flag("output"),
        stderr: query.flag("error"),
    };
    if req.argv.is_empty() {
        return ApiError::bad_request("you must specify at least 1 command").into_response();
    }
    exec::serve(crate::faults::Faults::default(), spec, req, ws)
        .unwrap_or_else(IntoResponse::into_response)
}

async fn logs_handler(
    State(node): State<Arc<Node>>,
    Path((ns, name, container)): Target,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let Some(pod) = node.pod(&ns, &name) else {
        return ApiError::not_found("pods", &name).into_response();
    };
    let current = logs::log_path(&node.pod_dir(meta::uid(&pod)), &container);
    let uid = meta::uid(&pod).to_string();
    let running = {
        let (node, container) = (node.clone(), container.clone());
        // The agent's own copy: the listed pod lags behind the container's state.
        move || {
            node.local_pod(&uid).is_some_and(|p| {
                ["containerStatuses", "initContainerStatuses"]
                    .iter()
                    .flat_map(|l| p["status"][l].as_array().cloned().unwrap_or_default())
                    .any(|s| {
                        s["name"] == container.as_str()
                            && (s.pointer("/state/running").is_some()
                                || s.pointer("/state/waiting").is_some())
                    })
            })
        }
    };
    logs::serve(&pod, &container, &current, &query, running)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
