//! The scheduler inside `nkvm serve`: while this process leads (see [`crate::leader`]), it
//! looks at every policy once a tick and works out, from the last slot the history recorded
//! for it, which slots fell due. The newest due slot runs if it is still within the policy's
//! starting deadline, and is recorded missed otherwise; older ones (nkvm was down, or not
//! leading) are recorded missed. A slot is recorded before its run starts, so a crash never
//! runs it twice. A policy whose previous run still goes is not started again; its claims
//! would be skipped anyway. Time comes from a [`Clock`], so tests move it instead of waiting.

use crate::jobs::Jobs;
use crate::lifecycle::now_rfc3339;
use crate::policy_run::PolicyRunReport;
use crate::{App, EngineError};
use chrono::{DateTime, Utc};
use nkvm_history::{History, PolicyRunRow};
use nkvm_policy::Policy;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The policies in force, shared with the UI (which adds and edits its own).
pub type SharedPolicies = Arc<RwLock<Vec<Policy>>>;

/// What to do about one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAction {
    /// Run it now.
    Run(DateTime<Utc>),
    /// Record it missed.
    Missed(DateTime<Utc>),
}

/// The slots of `policy` due at `now`, given the last slot handled (or, for a policy never
/// handled, the time the scheduler started watching it).
pub fn due(policy: &Policy, since: DateTime<Utc>, now: DateTime<Utc>) -> Vec<SlotAction> {
    let slots = policy.schedule.slots_between(since, now);
    let deadline =
        chrono::Duration::from_std(policy.starting_deadline).unwrap_or(chrono::Duration::MAX);
    let n = slots.len();
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            if i + 1 == n && now - slot <= deadline {
                SlotAction::Run(slot)
            } else {
                SlotAction::Missed(slot)
            }
        })
        .collect()
}

/// Missed slots recorded one row each; more are summarised in one row.
const MAX_MISSED_ROWS: usize = 10;

/// Where the last handled slot of each policy is kept, shared by every replica that may
/// lead: claiming a slot there is what makes each slot run once.
pub trait SlotLedger: Send + Sync {
    /// The newest slot handled for `policy`.
    fn last<'a>(&'a self, policy: &'a str) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, String>>;
    /// Marks every slot of `policy` up to `slot` handled; false when another replica did, or
    /// this one no longer leads.
    fn claim<'a>(
        &'a self,
        policy: &'a str,
        slot: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

/// A boxed future (the ledger is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The ledger of a single process: the history's slot records.
pub struct HistoryLedger(pub Arc<History>);

impl SlotLedger for HistoryLedger {
    fn last<'a>(&'a self, policy: &'a str) -> BoxFuture<'a, Result<Option<DateTime<Utc>>, String>> {
        Box::pin(async move {
            let last = self.0.last_policy_slot(policy).map_err(|e| e.to_string())?;
            Ok(last.and_then(|l| l.parse().ok()))
        })
    }

    fn claim<'a>(
        &'a self,
        _policy: &'a str,
        _slot: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, String>> {
        // The slot rows the scheduler writes next are this ledger's record.
        Box::pin(async { Ok(true) })
    }
}

/// Runs a policy for a slot (the engine's [`App::run_policy`] in production).
pub type Runner = Arc<
    dyn Fn(
            Policy,
            String,
        ) -> Pin<Box<dyn Future<Output = Result<PolicyRunReport, EngineError>> + Send>>
        + Send
        + Sync,
>;

/// Told about every run that ends (metrics, notifications).
pub trait RunObserver: Send + Sync {
    /// `policy`'s run ended with `report`, or failed as a whole with an error.
    fn run_finished(&self, policy: &Policy, report: Result<&PolicyRunReport, &EngineError>);
}

/// The runner over a connected engine and a job registry.
pub fn engine_runner(app: Arc<App>, jobs: Jobs) -> Runner {
    Arc::new(move |policy: Policy, slot: String| {
        let (app, jobs) = (app.clone(), jobs.clone());
        Box::pin(async move { app.run_policy(&jobs, &policy, &slot).await })
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Records a run by hand (`nkvm policy run`) in the policy's slot history.
pub fn record_manual_run(history: &History, report: &PolicyRunReport) {
    let failed = report
        .claims
        .iter()
        .filter(|c| c.result != "succeeded" && c.result != "skipped")
        .count();
    let row = PolicyRunRow {
        policy: report.policy.clone(),
        slot: report.slot.clone(),
        at: now_rfc3339(),
        outcome: "manual".into(),
        detail: format!("{} claims, {failed} failed", report.claims.len()),
    };
    if let Err(e) = history.record_policy_run(&row) {
        tracing::error!(error = %e, "recording a policy run failed");
    }
}

/// The scheduler.
pub struct Scheduler {
    policies: SharedPolicies,
    history: Arc<History>,
    ledger: Arc<dyn SlotLedger>,
    clock: Arc<dyn Clock>,
    runner: Runner,
    observer: Option<Arc<dyn RunObserver>>,
    /// When this scheduler started watching: the start of never-handled policies' slots.
    started: DateTime<Utc>,
    running: Arc<Mutex<HashSet<String>>>,
    /// The cluster whose policies this scheduler runs (`None`: the default cluster's).
    cluster: Option<String>,
}

impl Scheduler {
    /// A scheduler over `policies`, recording in `history`, running with `runner`.
    pub fn new(
        policies: SharedPolicies,
        history: Arc<History>,
        ledger: Arc<dyn SlotLedger>,
        clock: Arc<dyn Clock>,
        runner: Runner,
        observer: Option<Arc<dyn RunObserver>>,
    ) -> Self {
        let started = clock.now();
        Scheduler {
            policies,
            history,
            ledger,
            clock,
            runner,
            observer,
            started,
            running: Arc::default(),
            cluster: None,
        }
    }

    /// The same scheduler, running only the policies that name `cluster` (`None`: those that
    /// name none, which run against the cluster `nkvm serve` was started against).
    pub fn for_cluster(mut self, cluster: Option<String>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Handles every policy's due slots at the clock's now; returns what it decided. Runs
    /// are spawned and go on after this returns.
    pub async fn tick(&self) -> Vec<(String, SlotAction)> {
        let now = self.clock.now();
        let policies: Vec<Policy> = self
            .policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| p.cluster == self.cluster)
            .cloned()
            .collect();
        let mut decided = Vec::new();
        for policy in policies {
            let since = match self.ledger.last(&policy.name).await {
                Ok(last) => last.unwrap_or(self.started),
                Err(e) => {
                    tracing::error!(error = %e, policy = policy.name, "reading the policy's last slot failed");
                    continue;
                }
            };
            let actions = due(&policy, since, now);
            let Some(newest) = actions.last().map(|a| match a {
                SlotAction::Run(t) | SlotAction::Missed(t) => *t,
            }) else {
                continue;
            };
            match self.ledger.claim(&policy.name, newest).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, policy = policy.name, "claiming the policy's slot failed; retrying next tick");
                    continue;
                }
            }
            self.record_missed(&policy, &actions);
            if let Some(SlotAction::Run(slot)) = actions.last() {
                self.start(&policy, *slot);
            }
            decided.extend(actions.into_iter().map(|a| (policy.name.clone(), a)));
        }
        decided
    }

    fn record(&self, policy: &str, slot: DateTime<Utc>, outcome: &str, detail: &str) {
        let row = PolicyRunRow {
            policy: policy.into(),
            slot: rfc3339(slot),
            at: now_rfc3339(),
            outcome: outcome.into(),
            detail: detail.into(),
        };
        if let Err(e) = self.history.record_policy_run(&row) {
            tracing::error!(error = %e, policy, "recording a policy slot failed");
        }
    }

    /// Records the missed slots: each one, or after a long outage the newest with a count.
    fn record_missed(&self, policy: &Policy, actions: &[SlotAction]) {
        let missed: Vec<DateTime<Utc>> = actions
            .iter()
            .filter_map(|a| match a {
                SlotAction::Missed(t) => Some(*t),
                SlotAction::Run(_) => None,
            })
            .collect();
        let why = format!(
            "not run: nkvm was not running or not leading within the starting deadline ({} s)",
            policy.starting_deadline.as_secs()
        );
        let shown: Vec<DateTime<Utc>> = if missed.len() > MAX_MISSED_ROWS {
            let (first, last) = (missed[0], missed[missed.len() - 1]);
            let detail = format!(
                "{why}; {} slots from {} to {} missed",
                missed.len(),
                rfc3339(first),
                rfc3339(last)
            );
            self.record(&policy.name, last, "missed", &detail);
            vec![last]
        } else {
            for t in &missed {
                self.record(&policy.name, *t, "missed", &why);
            }
            missed
        };
        for t in shown {
            let _ = self.history.audit(
                &now_rfc3339(),
                &policy.actor(),
                "policy.missed",
                &policy.name,
                &rfc3339(t),
            );
        }
    }

    fn start(&self, policy: &Policy, slot: DateTime<Utc>) {
        let fresh = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(policy.name.clone());
        if !fresh {
            self.record(
                &policy.name,
                slot,
                "missed",
                "not run: the policy's previous run was still going",
            );
            return;
        }
        self.record(&policy.name, slot, "ran", "");
        let _ = self.history.audit(
            &now_rfc3339(),
            &policy.actor(),
            "policy.run",
            &policy.name,
            &rfc3339(slot),
        );
        self.spawn_run(policy.clone(), slot);
    }

    fn spawn_run(&self, policy: Policy, slot: DateTime<Utc>) {
        let (runner, observer, running) = (
            self.runner.clone(),
            self.observer.clone(),
            self.running.clone(),
        );
        tokio::spawn(async move {
            let result = runner(policy.clone(), rfc3339(slot)).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, policy = policy.name, "a policy run failed");
            }
            if let Some(o) = observer {
                o.run_finished(&policy, result.as_ref());
            }
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&policy.name);
        });
    }

    /// Ticks every `every` while `leading` is true, until `stop` turns true.
    pub async fn run(
        self,
        every: Duration,
        mut leading: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            if *leading.borrow_and_update() {
                self.tick().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = leading.changed() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
