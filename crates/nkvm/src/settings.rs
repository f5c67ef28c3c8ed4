//! Turning flags and environment into the libraries' inputs: connection options, engine
//! settings, and the opened history. Bad values are usage errors (exit 2).

use crate::cli::GlobalArgs;
use crate::commands::{Failed, invalid};
use nkvm_domain::UserError;
use nkvm_domain::{Allowlist, FailureKind};
use nkvm_engine::{App, Settings};
use nkvm_history::History;
use nkvm_kube::{AuthMode, ConnectOptions};
use nkvm_store::Stores;
use std::sync::Arc;
use std::time::Duration;

/// Connection options from the global flags.
pub fn connect_options(g: &GlobalArgs) -> Result<ConnectOptions, Failed> {
    let mode = match g.auth.as_deref() {
        None | Some("") => AuthMode::detect(),
        Some("paste") => {
            return Err(invalid(
                "--auth paste is for the web UI's connect form; on the command line use kubeconfig or in-cluster",
            ));
        }
        Some(m) => m
            .parse()
            .map_err(|e: String| invalid(format!("--auth / NKVM_DEFAULT_AUTH_MODE: {e}")))?,
    };
    let mut opts = ConnectOptions::new(mode);
    opts.kubeconfig = g.kubeconfig.clone();
    opts.context = g.context.clone().filter(|c| !c.is_empty());
    Ok(opts)
}

/// Engine settings from the global flags.
pub fn engine_settings(g: &GlobalArgs) -> Result<Settings, Failed> {
    let allowlist = Allowlist::parse(&g.namespaces)
        .map_err(|e| invalid(format!("--namespaces / NKVM_NAMESPACES: {e}")))?;
    if g.discovery_timeout == 0 {
        return Err(invalid("NKVM_DISCOVERY_TIMEOUT_SECONDS must be at least 1"));
    }
    Ok(Settings {
        allowlist,
        discovery_timeout: Duration::from_secs(g.discovery_timeout),
        discovery_max_objects: g.discovery_max_objects,
        helper_image: g
            .helper_image
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| g.image.clone()),
        own_image: g.image.clone(),
        agent_fault: g
            .agent_fault
            .as_deref()
            .filter(|f| !f.is_empty())
            .map(str::parse)
            .transpose()
            .map_err(|e: String| invalid(format!("NKVM_AGENT_FAULT: {e}")))?,
        exec_idle_timeout: Duration::from_secs(g.exec_idle_timeout.max(1)),
        helper_pod_timeout: Duration::from_secs(g.helper_pod_timeout.max(1)),
        age_identity_file: g.identity.clone().filter(|p| !p.as_os_str().is_empty()),
    })
}

/// Opens the history; when its file did not exist, first fills it from the archive store's
/// manifests, so a lost or deleted database does not make the backups disappear.
pub fn open_history(g: &GlobalArgs) -> anyhow::Result<History> {
    let existed = g.db.try_exists().map_err(|e| {
        Failed::new(
            FailureKind::StorageUnavailable,
            anyhow::anyhow!(
                "checking the history database {}: {e}; check NKVM_METADATA_DB_PATH",
                g.db.display()
            ),
        )
    })?;
    let history =
        History::open(&g.db).map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    if !existed {
        rebuild_new_history(g, &history);
    }
    Ok(history)
}

/// Rebuilds the history from the store if its database file does not exist yet.
pub fn rebuild_missing_history(g: &GlobalArgs) -> anyhow::Result<()> {
    open_history(g).map(drop)
}

/// Fills a just-created history from the store. A failure only warns: the command can still
/// run, and `nkvm index rebuild` retries once the store is readable.
fn rebuild_new_history(g: &GlobalArgs, history: &History) {
    let store = nkvm_store::LocalStore::new(&g.backup_dir);
    // Blocking here is fine: it happens once, before the command does anything else.
    match nkvm_engine::rebuild_index("local", &store, history) {
        Ok(report) => {
            for warning in &report.warnings {
                tracing::warn!("{warning}");
            }
            if report.archives > 0 {
                tracing::info!(
                    restored = report.added,
                    db = %g.db.display(),
                    "the history database did not exist; restored {} backups from the archive store",
                    report.added
                );
            }
        }
        Err(e) => tracing::warn!(
            "the history database {} did not exist and could not be rebuilt: {e}; run `nkvm index rebuild` once the archive store is readable",
            g.db.display()
        ),
    }
}

/// The named stores: `local` at --backup-dir and the stores file's. Makes no request; an
/// unreadable or invalid stores file is a usage error.
pub fn stores(g: &GlobalArgs) -> Result<Arc<Stores>, Failed> {
    Stores::open(
        &g.backup_dir,
        g.stores.as_deref(),
        &tokio::runtime::Handle::current(),
    )
    .map(Arc::new)
    .map_err(|e| Failed::new(e.kind(), e))
}

/// The engine without a cluster connection, over the history and the named stores, for
/// commands that need no cluster (`nkvm copy`): it works with no kubeconfig at all.
pub fn app_without_cluster(g: &GlobalArgs) -> anyhow::Result<App> {
    let settings = engine_settings(g)?;
    let stores = stores(g)?;
    let history = Arc::new(open_history(g)?);
    Ok(App::without_cluster(history, stores, settings))
}

/// Connects and opens the history: the engine every operational command uses.
pub async fn app(g: &GlobalArgs) -> anyhow::Result<App> {
    let opts = connect_options(g)?;
    let settings = engine_settings(g)?;
    let stores = stores(g)?;
    let history = Arc::new(open_history(g)?);
    nkvm_engine::session::connect_app(opts, history, stores.local_store(), settings)
        .await
        .map(|app| app.with_stores(stores))
        .map_err(|e| Failed::new(e.kind(), e).into())
}
