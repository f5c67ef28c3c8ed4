//! `nkvm serve`: the web UI, `/healthz`, `/readyz` and `/metrics`. Opens the history and the
//! store, cleans up after a crashed predecessor, connects at start when the flags or the
//! environment name a cluster (a failure is shown on the Connection page, not fatal), and
//! serves until Ctrl-C or SIGTERM, then lets running jobs finish for a grace period.

use crate::cli::{GlobalArgs, ServeArgs};
use crate::commands::{Failed, invalid};
use nkvm_domain::{FailureKind, UserError};
use nkvm_engine::Settings;
use nkvm_engine::session::{AuthMode, ConnectOptions, Session, Workspace};
use nkvm_history::History;
use nkvm_web::{AdminPassword, TrustedProxies, WebConfig, WebState};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Everything `serve` needs. Build it with [`ServeOptions::from_global`], then override what
/// you like (the demo points `connect` at its sandbox and sets the password).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Allowlist, timeouts, helper image.
    pub settings: Settings,
    /// The history database.
    pub db: PathBuf,
    /// The archive store directory.
    pub backup_dir: PathBuf,
    /// The stores file (`None`: only `local`).
    pub stores: Option<PathBuf>,
    /// Connect with these at start (`None`: start disconnected).
    pub connect: Option<ConnectOptions>,
    /// Login, cookies, trusted header, metrics.
    pub web: WebConfig,
    /// The policy file (`--policies`, `NKVM_POLICIES_FILE`).
    pub policies_file: Option<PathBuf>,
}

fn env_flag(name: &str) -> Result<Option<bool>, Failed> {
    match std::env::var(name).ok().as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some("1" | "true" | "yes") => Ok(Some(true)),
        Some("0" | "false" | "no") => Ok(Some(false)),
        Some(other) => Err(invalid(format!("{name}={other:?}: use true or false"))),
    }
}

/// Whether the flags or the environment name a cluster to connect to at start.
fn cluster_named(g: &GlobalArgs, mode: AuthMode) -> bool {
    let home_config = std::env::var_os("HOME")
        .is_some_and(|h| std::path::Path::new(&h).join(".kube/config").exists());
    mode == AuthMode::InCluster
        || g.auth.as_deref().is_some_and(|a| !a.is_empty())
        || g.kubeconfig.is_some()
        || std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty())
        || home_config
}

impl ServeOptions {
    /// From the global flags and the environment (`NKVM_ADMIN_PASSWORD`,
    /// `NKVM_ADMIN_PASSWORD_FILE`, `NKVM_COOKIE_SECURE`, `NKVM_TRUSTED_USER_HEADER`,
    /// `NKVM_TRUSTED_PROXIES`, `NKVM_METRICS_PUBLIC`, `NKVM_KUBECONFIG_DIR`,
    /// `NKVM_ALLOW_INSECURE_KUBECONFIG`, `NKVM_SHUTDOWN_GRACE_SECONDS`). Cookies are `Secure`
    /// unless `listen` is a loopback address or `NKVM_COOKIE_SECURE=false`. Refuses a trusted
    /// user header without trusted proxies.
    pub fn from_global(g: &GlobalArgs, listen: SocketAddr) -> anyhow::Result<ServeOptions> {
        let settings = crate::settings::engine_settings(g)?;
        let connect_opts = crate::settings::connect_options(g)?;
        let connect = cluster_named(g, connect_opts.mode).then_some(connect_opts);
        let password = AdminPassword::from_env()
            .map_err(invalid)?
            .unwrap_or_else(AdminPassword::generate);
        let mut web = WebConfig::new(password);
        web.cookie_secure = env_flag("NKVM_COOKIE_SECURE")?.unwrap_or(!listen.ip().is_loopback());
        web.metrics_public = env_flag("NKVM_METRICS_PUBLIC")?.unwrap_or(false);
        web.trusted_user_header = match std::env::var("NKVM_TRUSTED_USER_HEADER") {
            Ok(h) if !h.trim().is_empty() => Some(h.trim().parse().map_err(|_| {
                invalid(format!(
                    "NKVM_TRUSTED_USER_HEADER={h:?} is not an HTTP header name"
                ))
            })?),
            _ => None,
        };
        if let Ok(p) = std::env::var("NKVM_TRUSTED_PROXIES") {
            web.trusted_proxies = p
                .parse::<TrustedProxies>()
                .map_err(|e| invalid(format!("NKVM_TRUSTED_PROXIES: {e}")))?;
        }
        web.check().map_err(invalid)?;
        if let Some(dir) = std::env::var_os("NKVM_KUBECONFIG_DIR").filter(|d| !d.is_empty()) {
            web.kubeconfig_dir = dir.into();
        }
        web.allow_insecure_paste = env_flag("NKVM_ALLOW_INSECURE_KUBECONFIG")?.unwrap_or(false);
        if let Ok(s) = std::env::var("NKVM_SHUTDOWN_GRACE_SECONDS")
            && !s.trim().is_empty()
        {
            let seconds: u64 = s.trim().parse().map_err(|_| {
                invalid(format!(
                    "NKVM_SHUTDOWN_GRACE_SECONDS={s:?}: use a number of seconds"
                ))
            })?;
            web.shutdown_grace = Duration::from_secs(seconds);
        }
        web.default_kubeconfig = g.kubeconfig.clone();
        web.default_context = g.context.clone().filter(|c| !c.is_empty());
        Ok(ServeOptions {
            settings,
            db: g.db.clone(),
            backup_dir: g.backup_dir.clone(),
            stores: g.stores.clone(),
            connect,
            web,
            policies_file: g.policies_file.clone(),
        })
    }
}

/// Opens the history; a new database is first filled from the store's manifests.
fn open_history(opts: &ServeOptions) -> anyhow::Result<History> {
    let existed = opts.db.exists();
    let history =
        History::open(&opts.db).map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    if !existed {
        let store = nkvm_store::LocalStore::new(&opts.backup_dir);
        match nkvm_engine::rebuild_index("local", &store, &history) {
            Ok(report) if report.added > 0 => tracing::info!(
                restored = report.added,
                "the history database did not exist; restored backups from the archive store"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "the history database did not exist and could not be rebuilt: {e}; run `nkvm index rebuild` once the store is readable"
            ),
        }
    }
    Ok(history)
}

/// Serves the UI on `listener` until `shutdown` resolves; then running jobs get
/// `opts.web.shutdown_grace` to finish, are cancelled, and leftovers are marked interrupted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stores = nkvm_store::Stores::open(
        &opts.backup_dir,
        opts.stores.as_deref(),
        &tokio::runtime::Handle::current(),
    )
    .map_err(|e| Failed::new(e.kind(), e))?;
    let history = Arc::new(open_history(&opts)?);
    let workspace = Arc::new(
        Workspace::new(history, stores.local_store(), opts.settings.clone())
            .with_stores(Arc::new(stores))
            .with_store_dir(&opts.backup_dir),
    );
    let session = Arc::new(Session::new(workspace.clone()));
    match &opts.connect {
        Some(connect) => match session.connect(connect.clone()).await {
            Ok(c) => {
                tracing::info!(server = %c.app.cluster().server, "connected");
                // Nothing of this process runs yet, so every job the history lists as
                // running belongs to a predecessor that stopped.
                match c.app.recover().await {
                    Ok(r) if !r.interrupted.is_empty() || !r.helper_pods_deleted.is_empty() => {
                        tracing::info!(interrupted = ?r.interrupted, helper_pods = ?r.helper_pods_deleted, "cleaned up after a previous run")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cleaning up after a previous run failed: {e}"),
                }
            }
            Err(e) => tracing::warn!("connecting at start failed (see the Connection page): {e}"),
        },
        None => {
            match workspace.interrupt_running() {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(?ids, "marked jobs of a previous run interrupted")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("marking jobs of a previous run interrupted failed: {e}"),
            }
            tracing::info!("not connected: choose a cluster on the Connection page");
        }
    }
    if opts.web.admin_password.is_generated() {
        // Printed once, as the operator has no other way to learn it; set
        // NKVM_ADMIN_PASSWORD(_FILE) to choose one instead.
        tracing::warn!(
            "generated admin password (shown once; set NKVM_ADMIN_PASSWORD or NKVM_ADMIN_PASSWORD_FILE to choose one): {}",
            opts.web.admin_password.reveal()
        );
    }
    let state = WebState::new(session, opts.web);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let election = super::scheduling::start(
        state.policy_book().clone(),
        opts.policies_file.as_deref(),
        opts.connect.as_ref(),
        &workspace,
        state.jobs().clone(),
        state.policy_observer(),
        stop,
    )
    .await?;
    if state.session().app().is_some() {
        let warm = state.clone();
        tokio::spawn(async move { warm.refresh_inventory().await });
    }
    let addr = listener.local_addr()?;
    tracing::info!("serving the web UI on http://{addr}");
    let served = nkvm_web::serve(listener, state, shutdown).await;
    stop_tx.send_replace(true);
    if let Some(election) = election {
        // Releasing the Lease lets another replica take over at once; bounded, as the API
        // server may be gone.
        let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    }
    served?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("no SIGTERM handler ({e}); stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stopping: finishing running jobs");
}

/// `nkvm serve`.
pub async fn run(g: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let opts = ServeOptions::from_global(g, args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| invalid(format!("listening on {}: {e}", args.listen)))?;
    serve(listener, opts, stop_requested()).await?;
    Ok(ExitCode::SUCCESS)
}
