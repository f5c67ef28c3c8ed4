//! nkvm's web UI: an axum router over the engine's [`Session`] (the cluster connection) and
//! [`Jobs`] (the job registry). Pages are rendered with maud (which escapes everything) and
//! updated with htmx partials; job progress streams over server-sent events. Nobody gets past
//! the login except to `/healthz`, `/readyz`, the login page, the vendored static files and,
//! when configured public, `/metrics`; every state-changing request carries a CSRF token.
//! Handlers extract, call one engine method, and render; they never touch SQLite or kube.
//! The server closes connections that take too long to send a request's headers (or sit idle
//! between requests), so slow clients cannot hold connections.

mod assets;
mod auth;
mod connection;
mod form;
mod health;
mod inventory_cache;
mod layout;
mod metrics;
mod page_error;
mod pages;
mod proxies;

pub use auth::AdminPassword;
pub use inventory_cache::{InventoryCache, Snapshot, VolumeQuery};
pub use proxies::TrustedProxies;

use axum::Router;
use nkvm_domain::JobStatus;
use nkvm_engine::jobs::{JobObserver, Jobs};
use nkvm_engine::session::Session;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the web UI behaves; see docs/web-ui.md for the environment variables.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The admin password (`NKVM_ADMIN_PASSWORD` / `NKVM_ADMIN_PASSWORD_FILE`).
    pub admin_password: AdminPassword,
    /// Whether cookies carry `Secure` (`NKVM_COOKIE_SECURE`).
    pub cookie_secure: bool,
    /// A request header a trusted auth proxy sets to the user's name
    /// (`NKVM_TRUSTED_USER_HEADER`); `None` disables it. Believed only from `trusted_proxies`.
    pub trusted_user_header: Option<http::HeaderName>,
    /// Addresses of the reverse proxies whose `X-Forwarded-For` and user header are believed
    /// (`NKVM_TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// Whether `/metrics` answers without a session (`NKVM_METRICS_PUBLIC`).
    pub metrics_public: bool,
    /// How long a login lasts without use.
    pub session_idle: Duration,
    /// The kubeconfig file the connection form proposes (the global `--kubeconfig`).
    pub default_kubeconfig: Option<PathBuf>,
    /// The context the connection form proposes (the global `--context`).
    pub default_context: Option<String>,
    /// The directory below which the UI may open kubeconfig files besides
    /// `default_kubeconfig` (`NKVM_KUBECONFIG_DIR`).
    pub kubeconfig_dir: PathBuf,
    /// Whether a pasted kubeconfig may skip TLS verification or use `http://`
    /// (`NKVM_ALLOW_INSECURE_KUBECONFIG`).
    pub allow_insecure_paste: bool,
    /// How often `/readyz`'s checks run (in the background, whatever the request rate).
    pub readiness_interval: Duration,
    /// How long a client may take to send a request's headers, and to start the next request
    /// on a kept-alive connection.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for running jobs before cancelling them.
    pub shutdown_grace: Duration,
}

impl WebConfig {
    /// Defaults around a password: Secure cookies, no trusted header, private metrics.
    pub fn new(admin_password: AdminPassword) -> Self {
        WebConfig {
            admin_password,
            cookie_secure: true,
            trusted_user_header: None,
            metrics_public: false,
            session_idle: Duration::from_secs(12 * 3600),
            default_kubeconfig: None,
            default_context: None,
            kubeconfig_dir: PathBuf::from(DEFAULT_KUBECONFIG_DIR),
            allow_insecure_paste: false,
            readiness_interval: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
            trusted_proxies: TrustedProxies::default(),
        }
    }

    /// Refuses settings that would be unsafe: a trusted user header without trusted proxies
    /// would let any client that reaches nkvm name itself.
    pub fn check(&self) -> Result<(), String> {
        match &self.trusted_user_header {
            Some(header) if self.trusted_proxies.is_empty() => Err(format!(
                "NKVM_TRUSTED_USER_HEADER={header} needs NKVM_TRUSTED_PROXIES (the addresses of \
                 the auth proxy, e.g. 10.0.0.0/8): otherwise any client could send the header \
                 and log in as anyone"
            )),
            _ => Ok(()),
        }
    }
}

/// Where remote kubeconfigs are mounted (deploy/k8s/app/remote-kubeconfig), the only directory
/// the UI opens kubeconfigs from unless configured otherwise.
pub const DEFAULT_KUBECONFIG_DIR: &str = "/etc/nkvm/remote";

/// Everything the handlers share.
pub struct WebState {
    session: Arc<Session>,
    jobs: Jobs,
    auth: auth::Auth,
    inventory: InventoryCache,
    metrics: Arc<metrics::Metrics>,
    config: WebConfig,
    /// Set when the server begins shutting down; ends event streams, which would otherwise
    /// keep graceful shutdown waiting forever.
    closing: tokio::sync::watch::Sender<bool>,
    /// Restore plans shown and not yet run.
    plans: pages::history::PendingPlans,
    /// The last readiness result (`/readyz`).
    readiness: health::Readiness,
    /// The last probe of each store (the Stores page).
    store_health: pages::stores::StoreHealthCache,
    /// The policies in force and the scheduler's cluster connections.
    policies: Arc<nkvm_engine::policy_book::PolicyBook>,
    /// The claims of the scheduler's clusters, for the dashboard.
    protection: pages::dashboard::ClusterClaims,
}

/// The jobs observer: metrics, and the inventory's last-backup column.
struct Observer {
    metrics: Arc<metrics::Metrics>,
    inventory: InventoryCache,
}

impl JobObserver for Observer {
    fn item_finished(
        &self,
        kind: nkvm_engine::jobs::JobKind,
        item: &nkvm_engine::jobs::ItemState,
        elapsed: Duration,
    ) {
        self.metrics.item_finished(kind, item, elapsed);
        if kind == nkvm_engine::jobs::JobKind::Backup && item.status != JobStatus::Queued {
            let succeeded = item.status == JobStatus::Succeeded;
            self.inventory
                .record_backup(&item.namespace, &item.pvc, &item.finished_at, succeeded);
        }
    }
}

/// Counts policy runs and the bytes each policy's backups hold, and sends the policies'
/// webhook notifications.
struct PolicyMetrics {
    metrics: Arc<metrics::Metrics>,
    workspace: Arc<nkvm_engine::workspace::Workspace>,
    notifier: Option<nkvm_engine::notify::Notifier>,
}

impl nkvm_engine::scheduler::RunObserver for PolicyMetrics {
    fn run_finished(
        &self,
        policy: &nkvm_policy::Policy,
        report: Result<&nkvm_engine::policy_run::PolicyRunReport, &nkvm_engine::EngineError>,
    ) {
        let result = match report {
            Ok(r) if r.succeeded() => "succeeded",
            Ok(_) => "failed",
            Err(_) => "error",
        };
        let actor = policy.actor();
        let stored: u64 = self
            .workspace
            .backups(&Default::default())
            .unwrap_or_default()
            .iter()
            .filter(|r| r.actor == actor && r.status == JobStatus::Succeeded)
            .map(|r| r.bytes_stored)
            .sum();
        self.metrics.policy_run(&policy.name, result, stored);
        if let Some(n) = &self.notifier {
            n.notify(policy, report, self.workspace.history());
        }
    }
}

impl WebState {
    /// The shared state over a session.
    pub fn new(session: Arc<Session>, config: WebConfig) -> Arc<WebState> {
        let metrics = Arc::new(metrics::Metrics::new());
        let inventory = InventoryCache::default();
        let observer = Arc::new(Observer {
            metrics: metrics.clone(),
            inventory: inventory.clone(),
        });
        let policies = Arc::new(nkvm_engine::policy_book::PolicyBook::new(
            session.workspace().clone(),
            config.kubeconfig_dir.clone(),
        ));
        let state = Arc::new(WebState {
            session,
            policies,
            protection: Default::default(),
            jobs: Jobs::new(Some(observer as Arc<dyn JobObserver>)),
            auth: auth::Auth::new(&config),
            inventory,
            metrics,
            config,
            closing: tokio::sync::watch::channel(false).0,
            plans: pages::history::PendingPlans::default(),
            readiness: health::Readiness::default(),
            store_health: pages::stores::StoreHealthCache::default(),
        });
        health::refresh_in_background(&state);
        state
    }

    /// The job registry.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The cluster session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The policies in force (the scheduler reads them; the Policies page edits the UI's).
    pub fn policy_book(&self) -> &Arc<nkvm_engine::policy_book::PolicyBook> {
        &self.policies
    }

    /// The inventory cache (benchmarks fill it directly).
    pub fn inventory(&self) -> &InventoryCache {
        &self.inventory
    }

    /// What the scheduler tells about each policy run: the policy metrics.
    pub fn policy_observer(&self) -> Arc<dyn nkvm_engine::scheduler::RunObserver> {
        self.policy_observer_with(nkvm_engine::notify::Limits::default())
    }

    /// [`policy_observer`](Self::policy_observer) with webhook delivery limits of its own.
    pub fn policy_observer_with(
        &self,
        limits: nkvm_engine::notify::Limits,
    ) -> Arc<dyn nkvm_engine::scheduler::RunObserver> {
        let metrics = self.metrics.clone();
        let delivered: nkvm_engine::notify::DeliveryCallback =
            Arc::new(move |policy, ok| metrics.webhook_delivery(policy, ok));
        let notifier = nkvm_engine::notify::Notifier::new(limits, delivered)
            .inspect_err(|e| tracing::error!("webhook notifications are off: {e}"))
            .ok();
        Arc::new(PolicyMetrics {
            metrics: self.metrics.clone(),
            workspace: self.session.workspace().clone(),
            notifier,
        })
    }

    /// Loads the inventory of the live connection into the cache (after connecting).
    pub async fn refresh_inventory(&self) {
        pages::volumes::refresh(self).await;
    }
}

/// The router: public routes, and everything else behind the login.
pub fn router(state: Arc<WebState>) -> Router {
    let private = pages::routes()
        .merge(health::private_routes(&state))
        .merge(auth::private_routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_login,
        ));
    Router::new()
        .merge(health::public_routes(&state))
        .merge(auth::routes())
        .merge(assets::routes())
        .merge(private)
        .layer(axum::middleware::map_response(layout::security_headers))
        .with_state(state)
}

/// Serves the UI on an already-bound listener until `shutdown` resolves, then shuts the jobs
/// down gracefully (running ones get `config.shutdown_grace`, then are cancelled; what still
/// runs is marked interrupted). Refuses an unsafe configuration (see [`WebConfig::check`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<WebState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state
        .config
        .check()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let closing = state.closing.clone();
    let app = router(state.clone());
    let mut stop = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: wait instead of spinning.
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        connections.spawn(connection::serve(stream, peer, app.clone(), state.clone()));
        // Reap finished connections so the set does not grow with every one ever served.
        while connections.try_join_next().is_some() {}
    }
    closing.send_replace(true);
    while connections.join_next().await.is_some() {}
    let running = state.jobs.in_flight();
    if running > 0 {
        tracing::info!(
            running,
            "waiting up to {} s for running jobs",
            state.config.shutdown_grace.as_secs()
        );
    }
    let report = state
        .jobs
        .shutdown(
            state.config.shutdown_grace,
            Duration::from_secs(15),
            state.session.workspace(),
        )
        .await;
    if report.cancelled > 0 {
        tracing::warn!(
            cancelled = report.cancelled,
            "cancelled jobs still running at shutdown"
        );
    }
    if !report.interrupted.is_empty() {
        tracing::warn!(ids = ?report.interrupted, "marked jobs interrupted at shutdown");
    }
    Ok(())
}
