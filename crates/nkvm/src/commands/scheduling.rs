//! Starting the scheduler of `nkvm serve`: the policies in force, an engine on the
//! connection `serve` was started with (never the one an admin picks in the browser), the
//! Lease election, and the scheduler's tick loop. Settings: `NKVM_LEASE_NAMESPACE` (default:
//! the pod's namespace in a cluster, else `default`), `NKVM_LEASE_NAME` (`nkvm-scheduler`),
//! `NKVM_LEASE_DURATION_SECONDS` (15), `NKVM_SCHEDULER_TICK_SECONDS` (5).

use crate::commands::invalid;
use nkvm_engine::jobs::Jobs;
use nkvm_engine::leader::{Elector, LeaseLedger, LeaseOptions};
use nkvm_engine::policy_set;
use nkvm_engine::scheduler::{RunObserver, Scheduler, SharedPolicies, SystemClock, engine_runner};
use nkvm_engine::session::{ConnectOptions, Workspace};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// The namespace file of a pod's service account.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn env_seconds(name: &str, default: u64) -> Result<Duration, crate::commands::Failed> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
            _ => Err(invalid(format!(
                "{name}={v:?}: use a whole number of seconds, at least 1"
            ))),
        },
        _ => Ok(Duration::from_secs(default)),
    }
}

fn lease_options() -> Result<LeaseOptions, crate::commands::Failed> {
    let namespace = std::env::var("NKVM_LEASE_NAMESPACE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .or_else(|| std::fs::read_to_string(POD_NAMESPACE_FILE).ok())
        .map(|n| n.trim().to_string())
        .unwrap_or_else(|| "default".into());
    let name = std::env::var("NKVM_LEASE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "nkvm-scheduler".into());
    let duration = env_seconds("NKVM_LEASE_DURATION_SECONDS", 15)?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "nkvm".into());
    Ok(LeaseOptions {
        namespace,
        name,
        identity: format!("{host}-{:08x}", rand_id()),
        duration,
        renew_every: (duration / 3).max(Duration::from_secs(1)),
    })
}

fn rand_id() -> u32 {
    // The process id and the start time tell two processes on one host apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::process::id().wrapping_mul(2_654_435_761) ^ nanos
}

/// Loads the policies (a bad file refuses the start) and, when `serve` was started against a
/// cluster, starts the election and the scheduler until `stop`. Returns the policies in force
/// (the UI shows and edits them) and the election's task.
pub async fn start(
    policies_file: Option<&Path>,
    connect: Option<&ConnectOptions>,
    workspace: &Arc<Workspace>,
    jobs: Jobs,
    observer: Arc<dyn RunObserver>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SharedPolicies, Option<tokio::task::JoinHandle<()>>)> {
    let loaded = policy_set::load(
        policies_file,
        workspace.history(),
        &workspace.settings().allowlist,
        &workspace.stores().names(),
    )
    .map_err(invalid)?;
    let count = loaded.len();
    let policies: SharedPolicies = Arc::new(RwLock::new(loaded));
    let Some(connect) = connect else {
        if count > 0 {
            tracing::warn!(
                "{count} policies are defined, but serve was started without a cluster; they run only when serve starts against one (--kubeconfig/--context or in-cluster)"
            );
        }
        return Ok((policies, None));
    };
    let lease = lease_options()?;
    let tick = env_seconds("NKVM_SCHEDULER_TICK_SECONDS", 5)?;
    let app = match workspace.connect(connect.clone()).await {
        Ok(app) => app,
        Err(e) => {
            tracing::warn!("the scheduler could not connect, so no policy runs: {e}");
            return Ok((policies, None));
        }
    };
    let client = app.kube_client();
    let (leading_tx, leading) = watch::channel(false);
    let elector = Elector::new(client.clone(), lease.clone());
    let election = tokio::spawn(elector.run(leading_tx, stop.clone()));
    let scheduler = Scheduler::new(
        policies.clone(),
        workspace.history().clone(),
        Arc::new(LeaseLedger::new(client, &lease)),
        Arc::new(SystemClock),
        engine_runner(app, jobs),
        Some(observer),
    );
    tokio::spawn(scheduler.run(tick, leading, stop));
    tracing::info!(
        policies = count,
        lease = format!("{}/{}", lease.namespace, lease.name),
        identity = lease.identity,
        "scheduler started; it runs policies while this process holds the Lease"
    );
    Ok((policies, Some(election)))
}
