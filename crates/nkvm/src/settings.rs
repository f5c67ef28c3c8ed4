//! Turning flags and environment into the libraries' inputs: connection options, engine
//! settings, and the opened history. Bad values are usage errors (exit 2).

use crate::cli::GlobalArgs;
use crate::commands::{Failed, UsageError};
use nkvm_domain::Allowlist;
use nkvm_engine::{App, Settings};
use nkvm_history::History;
use nkvm_kube::{AuthMode, ConnectOptions};
use std::sync::Arc;
use std::time::Duration;

/// Connection options from the global flags.
pub fn connect_options(g: &GlobalArgs) -> Result<ConnectOptions, UsageError> {
    let mode = match g.auth.as_deref() {
        None | Some("") => AuthMode::detect(),
        Some("paste") => return Err(UsageError("--auth paste is for the web UI's connect form; on the command line use kubeconfig or in-cluster".into())),
        Some(m) => m.parse().map_err(|e: String| UsageError(format!("--auth / NKVM_DEFAULT_AUTH_MODE: {e}")))?,
    };
    let mut opts = ConnectOptions::new(mode);
    opts.kubeconfig = g.kubeconfig.clone();
    opts.context = g.context.clone().filter(|c| !c.is_empty());
    Ok(opts)
}

/// Engine settings from the global flags.
pub fn engine_settings(g: &GlobalArgs) -> Result<Settings, UsageError> {
    let allowlist = Allowlist::parse(&g.namespaces)
        .map_err(|e| UsageError(format!("--namespaces / NKVM_NAMESPACES: {e}")))?;
    if g.discovery_timeout == 0 {
        return Err(UsageError(
            "NKVM_DISCOVERY_TIMEOUT_SECONDS must be at least 1".into(),
        ));
    }
    Ok(Settings {
        allowlist,
        discovery_timeout: Duration::from_secs(g.discovery_timeout),
        discovery_max_objects: g.discovery_max_objects,
        helper_image: g.helper_image.clone(),
        helper_pod_timeout: Duration::from_secs(g.helper_pod_timeout.max(1)),
    })
}

/// Connects and opens the history: the engine every operational command uses.
pub async fn app(g: &GlobalArgs) -> anyhow::Result<App> {
    let mut opts = connect_options(g)?;
    let settings = engine_settings(g)?;
    opts.probe_namespaces = settings
        .allowlist
        .namespaces()
        .iter()
        .map(ToString::to_string)
        .collect();
    let conn = nkvm_kube::connect(&opts)
        .await
        .map_err(|e| Failed::new(e.kind(), e))?;
    let history = History::open(&g.db)
        .map_err(|e| Failed::new(nkvm_domain::FailureKind::StorageUnavailable, e))?;
    let store = Arc::new(nkvm_store::LocalStore::new(&g.backup_dir));
    Ok(App::new(conn, Arc::new(history), store, settings))
}
