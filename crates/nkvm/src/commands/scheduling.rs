//! Starting the schedulers of `nkvm serve`: the policies in force, an engine on the
//! connection `serve` was started with (never the one an admin picks in the browser) and one
//! on each cluster a policy names (a context of a kubeconfig below the remote directory), a
//! Lease election per cluster, and each scheduler's tick loop. Settings: `NKVM_LEASE_NAMESPACE` (default:
//! the pod's namespace in a cluster, else `default`), `NKVM_LEASE_NAME` (`nkvm-scheduler`),
//! `NKVM_LEASE_DURATION_SECONDS` (15), `NKVM_SCHEDULER_TICK_SECONDS` (5).

use crate::commands::invalid;
use nkvm_engine::App;
use nkvm_engine::jobs::Jobs;
use nkvm_engine::leader::{Elector, LeaseLedger, LeaseOptions};
use nkvm_engine::policy_book::PolicyBook;
use nkvm_engine::scheduler::{RunObserver, Scheduler, SystemClock, engine_runner};
use nkvm_engine::session::{ConnectOptions, Workspace};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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

/// A Lease name of its own for each named cluster, so two contexts that reach one cluster
/// never make one process's schedulers compete for one Lease.
fn lease_for(base: &LeaseOptions, cluster: &str) -> LeaseOptions {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let hash = cluster.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    LeaseOptions {
        name: format!("{}-{hash:08x}", base.name),
        ..base.clone()
    }
}

/// Everything one cluster's scheduler needs besides its connection.
#[derive(Clone)]
struct SchedulerParts {
    book: Arc<PolicyBook>,
    history: Arc<nkvm_history::History>,
    jobs: Jobs,
    observer: Arc<dyn RunObserver>,
    tick: Duration,
    stop: watch::Receiver<bool>,
}

impl SchedulerParts {
    /// Starts the election and the scheduler of `cluster` (`None`: the default) over `app`.
    fn spawn(&self, cluster: Option<String>, app: Arc<App>, lease: LeaseOptions) -> JoinHandle<()> {
        self.book
            .set_cluster(cluster.as_deref().unwrap_or(""), app.clone());
        let client = app.kube_client();
        let (leading_tx, leading) = watch::channel(false);
        let election = tokio::spawn(
            Elector::new(client.clone(), lease.clone()).run(leading_tx, self.stop.clone()),
        );
        let scheduler = Scheduler::new(
            self.book.shared(),
            self.history.clone(),
            Arc::new(LeaseLedger::new(client, &lease)),
            Arc::new(SystemClock),
            engine_runner(app, self.jobs.clone()),
            Some(self.observer.clone()),
        )
        .for_cluster(cluster.clone());
        tokio::spawn(scheduler.run(self.tick, leading, self.stop.clone()));
        tracing::info!(
            cluster = cluster.as_deref().unwrap_or("default"),
            lease = format!("{}/{}", lease.namespace, lease.name),
            identity = lease.identity,
            "scheduler started; it runs the cluster's policies while this process holds the Lease"
        );
        election
    }
}

/// Connects to the clusters policies name (contexts below the remote directory) as they
/// appear, also those a UI policy adds later, and starts a scheduler for each. A cluster
/// that cannot be reached is tried again a minute later.
async fn supervise_named(parts: SchedulerParts, workspace: Arc<Workspace>, base: LeaseOptions) {
    let mut started: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
    let mut stop = parts.stop.clone();
    let mut changes = parts.book.subscribe();
    loop {
        let wanted: Vec<String> = parts
            .book
            .policies()
            .into_iter()
            .filter_map(|p| p.cluster)
            .filter(|c| !started.contains_key(c))
            .collect();
        for cluster in wanted {
            let Some(opts) = parts.book.connect_options(&cluster) else {
                tracing::warn!(
                    cluster,
                    "a policy names a cluster whose kubeconfig is not mounted below {}",
                    parts.book.remote_dir().display()
                );
                continue;
            };
            match workspace.connect(opts).await {
                Ok(app) => {
                    let lease = lease_for(&base, &cluster);
                    let election = parts.spawn(Some(cluster.clone()), app, lease);
                    started.insert(cluster, election);
                }
                Err(e) => tracing::warn!(
                    cluster,
                    "the scheduler could not connect to the policy's cluster; retrying in a minute: {e}"
                ),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60).max(parts.tick)) => {}
            _ = changes.changed() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (_, election) in started {
        // Releasing each Lease lets another replica take over at once; bounded.
        let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    }
}

/// Loads the policy file into `book` (a bad file refuses the start) and, when `serve` was
/// started against a cluster, starts its election and scheduler until `stop`, and those of the
/// clusters policies name. Returns the task that ends once every Lease is released.
pub async fn start(
    book: Arc<PolicyBook>,
    policies_file: Option<&Path>,
    connect: Option<&ConnectOptions>,
    workspace: &Arc<Workspace>,
    jobs: Jobs,
    observer: Arc<dyn RunObserver>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    book.load_file(policies_file).map_err(invalid)?;
    let lease = lease_options()?;
    let parts = SchedulerParts {
        book: book.clone(),
        history: workspace.history().clone(),
        jobs,
        observer,
        tick: env_seconds("NKVM_SCHEDULER_TICK_SECONDS", 5)?,
        stop,
    };
    let named = tokio::spawn(supervise_named(
        parts.clone(),
        workspace.clone(),
        lease.clone(),
    ));
    let count = book
        .policies()
        .iter()
        .filter(|p| p.cluster.is_none())
        .count();
    let Some(connect) = connect else {
        if count > 0 {
            tracing::warn!(
                "{count} policies run against the default cluster, but serve was started without one; they run only when serve starts against one (--kubeconfig/--context or in-cluster)"
            );
        }
        return Ok(Some(named));
    };
    let app = match workspace.connect(connect.clone()).await {
        Ok(app) => app,
        Err(e) => {
            tracing::warn!(
                "the scheduler could not connect, so no policy of the default cluster runs: {e}"
            );
            return Ok(Some(named));
        }
    };
    let election = parts.spawn(None, app, lease);
    Ok(Some(tokio::spawn(async move {
        let _ = election.await;
        let _ = named.await;
    })))
}
