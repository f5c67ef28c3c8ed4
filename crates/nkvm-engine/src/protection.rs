//! Whether each claim is protected, as the dashboard counts it: pure functions over the
//! claims, the policies and the claims' last successful and failed backups.
//!
//! A policy's **due slot** at a time `now` is its newest slot `s` with `s + grace(s) <= now`,
//! where `grace(s)` is the smaller of one hour and the time from the slot before `s` to `s`
//! (the schedule's interval there). A claim is **protected** when its newest successful backup
//! (by any actor, in any store) finished at or after the due slot of every policy covering it:
//! the backup the schedule last asked for, given time to finish, exists. So a nightly policy
//! at 02:00 asks, from 03:00 on, for a backup since 02:00 that night; a per-minute policy asks,
//! one minute after each slot, for a backup since that slot; a weekday schedule does not turn
//! claims stale over the weekend.
//!
//! Each claim has exactly one state, the first that applies: **not covered** (no policy covers
//! it), **failing** (its newest backup attempt did not succeed), **never backed up** (no
//! successful backup), **stale** (the newest success is older than a due slot), **protected**.

use chrono::{DateTime, Duration, Utc};
use nkvm_domain::PvcRecord;
use nkvm_policy::{Policy, Schedule};
use serde::Serialize;

/// The longest grace a slot gets for its run to finish.
pub const MAX_GRACE: Duration = Duration::hours(1);

/// A claim's protection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Protection {
    /// A successful backup since every covering policy's due slot.
    Protected,
    /// The newest success is older than a covering policy's due slot.
    Stale,
    /// The newest backup attempt failed (or was cancelled or interrupted).
    Failing,
    /// Covered, but no successful backup exists.
    Never,
    /// No policy covers it.
    Uncovered,
}

impl Protection {
    /// Every state, in the dashboard's order.
    pub const ALL: [Protection; 5] = [
        Protection::Protected,
        Protection::Stale,
        Protection::Failing,
        Protection::Never,
        Protection::Uncovered,
    ];

    /// The state's name in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Protected => "protected",
            Protection::Stale => "stale",
            Protection::Failing => "failing",
            Protection::Never => "never",
            Protection::Uncovered => "uncovered",
        }
    }

    /// The state for people.
    pub fn label(self) -> &'static str {
        match self {
            Protection::Protected => "Protected",
            Protection::Stale => "Stale",
            Protection::Failing => "Failing",
            Protection::Never => "Never backed up",
            Protection::Uncovered => "Not covered by a policy",
        }
    }

    /// The state named `s` (`protected`, `stale`, ...).
    pub fn parse(s: &str) -> Option<Protection> {
        Protection::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// How long after slot `s` its run is given to finish.
pub fn grace(schedule: &Schedule, slot: DateTime<Utc>) -> Duration {
    schedule
        .last_at_or_before(slot - Duration::seconds(1))
        .map_or(MAX_GRACE, |prev| (slot - prev).min(MAX_GRACE))
}

/// The newest slot of `schedule` whose grace has passed at `now`.
pub fn due_slot(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut slot = schedule.last_at_or_before(now)?;
    // A slot's grace is at most the gap before it, so on regular schedules one step back
    // suffices; a few cover irregular ones (`0,1 * * * *`), and past that nothing is due yet.
    for _ in 0..3 {
        if slot + grace(schedule, slot) <= now {
            return Some(slot);
        }
        slot = schedule.last_at_or_before(slot - Duration::seconds(1))?;
    }
    None
}

/// One claim's state and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimProtection {
    /// Namespace.
    pub namespace: String,
    /// Claim.
    pub pvc: String,
    /// Its state.
    pub state: Protection,
    /// The policies covering it.
    pub policies: Vec<String>,
    /// The newest successful backup's finish (RFC 3339).
    pub last_success: Option<String>,
    /// The newest failed attempt's finish, when newer than the last success.
    pub last_failure: Option<String>,
    /// The newest due slot of its policies: a success must be at least this new (RFC 3339).
    pub due_since: Option<String>,
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    t.parse().ok()
}

/// The state of claim `r` under `policies` at `now`.
pub fn classify(r: &PvcRecord, policies: &[Policy], now: DateTime<Utc>) -> ClaimProtection {
    let covering: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.covers(&r.namespace, &r.labels))
        .collect();
    let due = covering
        .iter()
        .filter_map(|p| due_slot(&p.schedule, now))
        .max();
    let success = r.last_successful_backup.as_deref().and_then(parse);
    let state = if covering.is_empty() {
        Protection::Uncovered
    } else if r.last_failed_backup.is_some() {
        Protection::Failing
    } else if success.is_none() {
        Protection::Never
    } else if due.is_some_and(|d| success.is_some_and(|s| s < d)) {
        Protection::Stale
    } else {
        Protection::Protected
    };
    ClaimProtection {
        namespace: r.namespace.clone(),
        pvc: r.name.clone(),
        state,
        policies: covering.iter().map(|p| p.name.clone()).collect(),
        last_success: r.last_successful_backup.clone(),
        last_failure: r.last_failed_backup.clone(),
        due_since: due.map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
    }
}

/// Every claim's state, and how many are in each.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionReport {
    /// One per claim, in the order given.
    pub claims: Vec<ClaimProtection>,
}

impl ProtectionReport {
    /// The claims of `records` under `policies` at `now`.
    pub fn of(records: &[PvcRecord], policies: &[Policy], now: DateTime<Utc>) -> Self {
        ProtectionReport {
            claims: records.iter().map(|r| classify(r, policies, now)).collect(),
        }
    }

    /// How many claims are in `state`.
    pub fn count(&self, state: Protection) -> usize {
        self.claims.iter().filter(|c| c.state == state).count()
    }

    /// The claims in `state`.
    pub fn in_state(&self, state: Protection) -> impl Iterator<Item = &ClaimProtection> {
        self.claims.iter().filter(move |c| c.state == state)
    }
}

#[cfg(test)]
mod tests;
