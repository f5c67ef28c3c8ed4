//! The connection page: the three auth modes with guidance, a real check on connect (server,
//! identity, permissions per allowlisted namespace), and disconnect, which drops a pasted
//! kubeconfig's credentials.

use crate::auth::CurrentUser;
use crate::form::FormData;
use crate::layout::{self, Nav, error_box};
use crate::pages::see_other;
use crate::{WebConfig, WebState};
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http::HeaderMap;
use maud::{Markup, html};
use nkvm_engine::session::{self, AuthMode, ConnectOptions, Connected};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `/connection...` routes.
pub fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/connection", get(page))
        .route("/connection/contexts", get(contexts))
        .route("/connection/connect", post(connect))
        .route("/connection/disconnect", post(disconnect))
}

async fn page(State(state): State<Arc<WebState>>, user: CurrentUser) -> Html<String> {
    connection_page(&state, &user, None, None)
}

/// The page, with an error about the form just sent (shown above the form, which keeps what
/// was entered) when there is one.
fn connection_page(
    state: &WebState,
    user: &CurrentUser,
    form_error: Option<&str>,
    sent: Option<&FormData>,
) -> Html<String> {
    let status = state.session.status();
    let body = html! {
        section #connection-status {
            @match &status.connected {
                Some(c) => (connected_view(c, user)),
                None => p.muted { "Not connected. Choose how nkvm reaches your cluster below." },
            }
            @if let Some(e) = &status.last_error {
                (error_box("connection-error", e))
            }
        }
        @if let Some(e) = form_error {
            (error_box("form-error", e))
        }
        (connect_form(state, user, sent))
    };
    layout::page("Connection", user, Nav::Connection, body)
}

fn connected_view(c: &Connected, user: &CurrentUser) -> Markup {
    let info = c.app.cluster();
    html! {
        p.ok { "Connected to " strong { (info.server) } " (" (info.version) ")" }
        @if c.pasted {
            p.muted { "Credentials from a pasted kubeconfig: held in memory only, dropped on disconnect or restart." }
        }
        @match &c.report {
            Err(e) => (error_box("check-error", &format!("Connected, but checking permissions failed: {e}"))),
            Ok(r) => {
                dl.facts #check-report {
                    dt { "Auth mode" } dd { (r.auth_mode) @if let Some(ctx) = &r.context { " (context " (ctx) ")" } }
                    dt { "Identity" } dd { (r.identity.as_deref().unwrap_or("(the server does not answer SelfSubjectReview)")) }
                    dt { "Cluster id" } dd.mono { (r.cluster_id) }
                    dt { "Namespaces" } dd { (r.allowlist) }
                    dt { "List PVCs cluster-wide" } dd { (if r.list_claims_cluster_wide { "yes" } else { "no" }) }
                }
                @if !r.all_allowed() {
                    p.warning { "Some permissions nkvm needs are missing (marked NO): apply deploy/k8s/rbac, binding the runtime ClusterRole in each allowed namespace." }
                }
                table #permissions {
                    thead { tr { th { "Namespace" } th { "Permission" } th { "Allowed" } th { "Needed for" } } }
                    tbody {
                        @for g in &r.grants {
                            tr class=(if g.allowed { "allowed" } else { "denied" }) {
                                td { (if g.namespace.is_empty() { "(all)" } else { g.namespace.as_str() }) }
                                td.mono { (g.permission) }
                                td { (if g.allowed { "yes" } else { "NO" }) }
                                td { (g.purpose) }
                            }
                        }
                    }
                }
            }
        }
        form #disconnect-form method="post" action="/connection/disconnect" {
            input type="hidden" name="csrf" value=(user.csrf);
            button #disconnect type="submit" { "Disconnect" }
        }
    }
}

/// The path and mode the form shows: what was just sent, else the defaults.
fn form_choice(
    state: &WebState,
    sent: Option<&FormData>,
    in_cluster: bool,
) -> (String, &'static str) {
    let path = sent
        .and_then(|f| f.get("kubeconfig_path"))
        .map(str::to_string)
        .or_else(|| {
            state
                .config
                .default_kubeconfig
                .as_ref()
                .map(|p| p.display().to_string())
        })
        .unwrap_or_default();
    let default_mode = match sent.and_then(|f| f.get("mode")) {
        Some("paste") => "paste",
        Some("in-cluster") if in_cluster => "in-cluster",
        Some(_) => "kubeconfig",
        None if in_cluster => "in-cluster",
        None => "kubeconfig",
    };
    (path, default_mode)
}

fn connect_form(state: &WebState, user: &CurrentUser, sent: Option<&FormData>) -> Markup {
    let in_cluster = session::in_cluster_available();
    let (path, default_mode) = form_choice(state, sent, in_cluster);
    let dir = state.config.kubeconfig_dir.display().to_string();
    html! {
        form #connect-form method="post" action="/connection/connect" {
            input type="hidden" name="csrf" value=(user.csrf);
            fieldset.mode {
                label {
                    input type="radio" name="mode" value="in-cluster" checked[default_mode == "in-cluster"] disabled[!in_cluster];
                    strong { " In-cluster" }
                }
                p.muted {
                    @if in_cluster { "nkvm runs in a pod: use its ServiceAccount (the deployment's RBAC decides what it may do)." }
                    @else { "Not available: nkvm is not running in a pod with a ServiceAccount token." }
                }
            }
            fieldset.mode {
                label {
                    input type="radio" name="mode" value="kubeconfig" checked[default_mode == "kubeconfig"];
                    strong { " Kubeconfig file" }
                }
                p.muted { "A kubeconfig on the nkvm server's disk, and one of its contexts: the one nkvm was started with (empty: $KUBECONFIG, then ~/.kube/config) or a file below " code { (dir) } ", where remote kubeconfigs are mounted." }
                label for="kubeconfig-path" { "Path" }
                input #kubeconfig-path type="text" name="kubeconfig_path" value=(path) placeholder="~/.kube/config"
                    hx-get="/connection/contexts" hx-trigger="load, change" hx-target="#context-choice" hx-include="this";
                div #context-choice {
                    label for="context" { "Context" }
                    select #context name="context" { option value="" { "(current context)" } }
                }
            }
            fieldset.mode {
                label {
                    input type="radio" name="mode" value="paste" checked[default_mode == "paste"];
                    strong { " Paste a kubeconfig" }
                }
                p.muted {
                    "Kept in memory only. Refused when it would make the server run a program (exec, auth-provider), read its own files "
                    "(tokenFile, client-certificate, client-key, certificate-authority) or use a proxy: paste one with inline token or *-data fields. "
                    @if state.config.allow_insecure_paste {
                        "TLS without verification and http:// servers are allowed here (NKVM_ALLOW_INSECURE_KUBECONFIG)."
                    } @else {
                        "Refused as well: insecure-skip-tls-verify and http:// servers, which would expose the credentials."
                    }
                }
                textarea #pasted name="pasted" rows="8" spellcheck="false" placeholder="apiVersion: v1\nkind: Config\n..." {}
            }
            button #connect type="submit" { "Connect" }
            span.htmx-indicator { " Connecting…" }
        }
    }
}

async fn contexts(
    State(state): State<Arc<WebState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Html<String> {
    let preferred = state.config.default_context.clone().unwrap_or_default();
    let path = q
        .get("kubeconfig_path")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let configured = state.config.default_kubeconfig.clone();
    let dir = state.config.kubeconfig_dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        if let Some(p) = &path {
            permitted_kubeconfig(p, configured.as_deref(), &dir)?;
        }
        session::kubeconfig_contexts(path.as_deref()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    Html(
        html! {
            label for="context" { "Context" }
            select #context name="context" {
                option value="" { "(current context)" }
                @if let Ok(list) = &read {
                    @for c in list {
                        option value=(c.name) selected[c.name == preferred] {
                            (c.name) " — " (c.server) @if c.current { " (current)" }
                        }
                    }
                }
            }
            @if let Err(e) = &read { p.muted.small #contexts-error { (e) } }
        }
        .into_string(),
    )
}

/// Refuses kubeconfig paths typed into the UI that nkvm was not given: the file is read (and
/// its exec plugins run) on the server, so an arbitrary path would let a UI user probe server
/// files or run programs. Allowed: empty (nkvm's own default), the `--kubeconfig` nkvm was
/// started with, files in `$KUBECONFIG`, and files below `dir` (`/etc/nkvm/remote`, not all of
/// `/etc/nkvm`, where the admin password lives). What is opened must then be a regular file
/// that parses as a kubeconfig, and errors never quote it (see `nkvm_kube::kubeconfig`).
fn permitted_kubeconfig(path: &Path, configured: Option<&Path>, dir: &Path) -> Result<(), String> {
    let real = |p: &Path| std::fs::canonicalize(p).ok();
    let Some(wanted) = real(path) else {
        return Err(format!(
            "kubeconfig {} does not exist or cannot be read",
            path.display()
        ));
    };
    let from_env = std::env::var_os("KUBECONFIG")
        .map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .unwrap_or_default();
    let known = configured
        .into_iter()
        .map(Path::to_path_buf)
        .chain(from_env)
        .filter_map(|p| real(&p))
        .any(|p| p == wanted);
    let below_dir = real(dir).is_some_and(|dir| wanted.starts_with(dir));
    if known || below_dir {
        Ok(())
    } else {
        Err(format!(
            "the UI opens only the kubeconfig nkvm was started with (--kubeconfig or KUBECONFIG) \
             or files below {}; mount {} there (a Secret volume) or start nkvm \
             with --kubeconfig",
            dir.display(),
            path.display()
        ))
    }
}

/// Connect options from the form; `Err` with a message for a bad mode or a kubeconfig path the
/// UI may not open.
fn options_from(form: &FormData, config: &WebConfig) -> Result<ConnectOptions, String> {
    let mode: AuthMode = form.get("mode").unwrap_or("kubeconfig").parse()?;
    let mut opts = ConnectOptions::new(mode);
    match mode {
        AuthMode::InCluster => {}
        AuthMode::Kubeconfig => {
            opts.kubeconfig = form.text("kubeconfig_path").map(PathBuf::from);
            if let Some(path) = &opts.kubeconfig {
                permitted_kubeconfig(
                    path,
                    config.default_kubeconfig.as_deref(),
                    &config.kubeconfig_dir,
                )?;
            }
            opts.context = form.text("context");
        }
        AuthMode::Paste => {
            // The paste's own current context is used: the drop-down lists the file's.
            opts.pasted = form.get("pasted").map(str::to_string);
            opts.allow_insecure_paste = config.allow_insecure_paste;
        }
    }
    Ok(opts)
}

async fn connect(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
    form: FormData,
) -> Response {
    let opts = match options_from(&form, &state.config) {
        Ok(o) => o,
        Err(e) => {
            // The page again, with the form: a bare error page would be a dead end.
            let page = connection_page(&state, &user, Some(&e), Some(&form));
            return (http::StatusCode::BAD_REQUEST, page).into_response();
        }
    };
    let mode = opts.mode;
    match state.session.connect(opts).await {
        Ok(c) => {
            let server = &c.app.cluster().server;
            tracing::info!(%server, %mode, user = %user.name, "connected");
            state
                .session
                .workspace()
                .audit(&user.actor(), "connect", server, &mode.to_string());
            let background = state.clone();
            tokio::spawn(async move { background.refresh_inventory().await });
        }
        // The session keeps the message for the page; the reason is logged without secrets.
        Err(e) => tracing::warn!(%mode, user = %user.name, error = %e, "connecting failed"),
    }
    see_other(&headers, "/connection")
}

async fn disconnect(
    State(state): State<Arc<WebState>>,
    user: CurrentUser,
    headers: HeaderMap,
) -> impl IntoResponse {
    state.session.disconnect();
    state
        .session
        .workspace()
        .audit(&user.actor(), "disconnect", "", "");
    tracing::info!(user = %user.name, "disconnected");
    see_other(&headers, "/connection")
}
