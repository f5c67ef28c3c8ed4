//! Retention: which of a claim's backups a policy keeps, restic/kopia style. Backups are
//! walked newest first:
//!
//! 1. `keepLast` keeps the newest N;
//! 2. then `daily`, `weekly`, `monthly` and `yearly` each keep the newest backup of each of
//!    their N most recent periods (days, ISO weeks, months, years in the policy's time zone)
//!    that hold a backup. A period whose newest backup an earlier rule already kept is
//!    skipped without using up a slot: each backup is counted once, by the first rule that
//!    keeps it;
//! 3. the newest backup is always kept, whatever the counts say, so retention alone can never
//!    leave a claim without a backup.
//!
//! Everything else is deleted. The decision is a pure function over ids and times, so `nkvm
//! prune --dry-run` shows exactly what `nkvm prune` then does.

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How many backups to keep, per rule (0: the rule keeps none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// The newest N backups.
    #[serde(default)]
    pub keep_last: u32,
    /// The newest backup of each of the last N days that have one.
    #[serde(default)]
    pub daily: u32,
    /// The newest backup of each of the last N ISO weeks that have one.
    #[serde(default)]
    pub weekly: u32,
    /// The newest backup of each of the last N months that have one.
    #[serde(default)]
    pub monthly: u32,
    /// The newest backup of each of the last N years that have one.
    #[serde(default)]
    pub yearly: u32,
}

impl Retention {
    /// Whether every count is zero (only the newest backup would survive).
    pub fn is_empty(&self) -> bool {
        self.keep_last + self.daily + self.weekly + self.monthly + self.yearly == 0
    }
}

/// One successful backup that retention may keep or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Backup id.
    pub id: String,
    /// When it finished.
    pub at: DateTime<Utc>,
}

/// The rule that kept a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    /// One of the newest `keepLast`.
    KeepLast,
    /// The newest of its day.
    Daily,
    /// The newest of its ISO week.
    Weekly,
    /// The newest of its month.
    Monthly,
    /// The newest of its year.
    Yearly,
    /// The claim's newest backup, kept whatever the counts say.
    Newest,
}

impl Rule {
    /// The name the CLI and the UI show (`keepLast`, `daily`, ..., `newest`).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::KeepLast => "keepLast",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
            Rule::Newest => "newest",
        }
    }
}

/// What retention decided for one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Kept, by this rule.
    Keep(Rule),
    /// Deleted.
    Delete,
}

/// The period of a backup under a bucket rule: a number that differs between periods.
fn period(rule: Rule, at: DateTime<Utc>, tz: Tz) -> i64 {
    let local = at.with_timezone(&tz);
    match rule {
        Rule::Daily => i64::from(local.num_days_from_ce()),
        Rule::Weekly => {
            let w = local.iso_week();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }
        Rule::Monthly => i64::from(local.year()) * 100 + i64::from(local.month()),
        Rule::Yearly => i64::from(local.year()),
        Rule::KeepLast | Rule::Newest => 0,
    }
}

/// Decides every backup of one claim under `retention`, periods taken in `tz`. Returns one
/// decision per candidate, newest first (ties broken by id, so the order is total).
pub fn decide(
    candidates: &[Candidate],
    retention: &Retention,
    tz: Tz,
) -> Vec<(Candidate, Decision)> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));
    let mut kept: HashMap<usize, Rule> = HashMap::new();
    for i in 0..(retention.keep_last as usize).min(sorted.len()) {
        kept.insert(i, Rule::KeepLast);
    }
    let buckets = [
        (Rule::Daily, retention.daily),
        (Rule::Weekly, retention.weekly),
        (Rule::Monthly, retention.monthly),
        (Rule::Yearly, retention.yearly),
    ];
    for (rule, count) in buckets {
        let mut used = 0;
        let mut last_period = None;
        for (i, c) in sorted.iter().enumerate() {
            if used == count {
                break;
            }
            let p = period(rule, c.at, tz);
            if last_period == Some(p) {
                continue;
            }
            last_period = Some(p);
            // The newest backup of this period; one an earlier rule kept uses no slot.
            if let std::collections::hash_map::Entry::Vacant(slot) = kept.entry(i) {
                slot.insert(rule);
                used += 1;
            }
        }
    }
    if !sorted.is_empty() {
        kept.entry(0).or_insert(Rule::Newest);
    }
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let d = kept
                .get(&i)
                .map_or(Decision::Delete, |r| Decision::Keep(*r));
            (c.clone(), d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backups at the given UTC times, ids `b0`, `b1`, ... in the order given.
    fn backups(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("b{i}"),
                at: t.parse().unwrap(),
            })
            .collect()
    }

    fn decisions(c: &[Candidate], r: Retention) -> Vec<(String, Decision)> {
        decide(c, &r, Tz::UTC)
            .into_iter()
            .map(|(c, d)| (c.id, d))
            .collect()
    }

    fn kept_ids(c: &[Candidate], r: Retention) -> Vec<String> {
        decisions(c, r)
            .into_iter()
            .filter(|(_, d)| *d != Decision::Delete)
            .map(|(id, _)| id)
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_n_and_deletes_the_rest() {
        let c = backups(&[
            "2026-01-01T01:00:00Z",
            "2026-01-01T02:00:00Z",
            "2026-01-01T03:00:00Z",
            "2026-01-01T04:00:00Z",
        ]);
        let d = decisions(
            &c,
            Retention {
                keep_last: 2,
                ..Default::default()
            },
        );
        assert_eq!(
            d,
            [
                ("b3".into(), Decision::Keep(Rule::KeepLast)),
                ("b2".into(), Decision::Keep(Rule::KeepLast)),
                ("b1".into(), Decision::Delete),
                ("b0".into(), Decision::Delete),
            ]
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_skips_days_keep_last_already_covers() {
        // Two backups a day for four days.
        let c = backups(&[
            "2026-01-01T01:00:00Z",
            "2026-01-01T13:00:00Z",
            "2026-01-02T01:00:00Z",
            "2026-01-02T13:00:00Z",
            "2026-01-03T01:00:00Z",
            "2026-01-03T13:00:00Z",
            "2026-01-04T01:00:00Z",
            "2026-01-04T13:00:00Z",
        ]);
        let d = decisions(
            &c,
            Retention {
                keep_last: 1,
                daily: 2,
                ..Default::default()
            },
        );
        // b7 (Jan 4, newest) by keepLast; Jan 4's newest is b7, already kept, so no slot
        // is used; the two daily slots go to Jan 3 (b5) and Jan 2 (b3).
        assert_eq!(d[0], ("b7".into(), Decision::Keep(Rule::KeepLast)));
        assert_eq!(d[2], ("b5".into(), Decision::Keep(Rule::Daily)));
        assert_eq!(d[4], ("b3".into(), Decision::Keep(Rule::Daily)));
        assert_eq!(
            kept_ids(
                &c,
                Retention {
                    keep_last: 1,
                    daily: 2,
                    ..Default::default()
                }
            ),
            ["b7", "b5", "b3"]
        );
    }

    #[test]
    fn each_backup_is_counted_once_across_buckets() {
        // One backup on each of the first days of three months.
        let c = backups(&[
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
        ]);
        let d = decisions(
            &c,
            Retention {
                daily: 1,
                monthly: 2,
                ..Default::default()
            },
        );
        assert_eq!(
            d,
            [
                ("b2".into(), Decision::Keep(Rule::Daily)),
                // March is covered by the daily keep, so the monthly slots go to February
                // and January.
                ("b1".into(), Decision::Keep(Rule::Monthly)),
                ("b0".into(), Decision::Keep(Rule::Monthly)),
            ]
        );
    }

    #[test]
    fn weeks_are_iso_weeks_and_years_are_calendar_years() {
        // 2026-12-31 (Thu) and 2027-01-01 (Fri) share ISO week 2026-W53; 2027-01-04 is W1.
        let c = backups(&[
            "2026-12-31T10:00:00Z",
            "2027-01-01T10:00:00Z",
            "2027-01-04T10:00:00Z",
        ]);
        let weekly = Retention {
            weekly: 5,
            ..Default::default()
        };
        assert_eq!(kept_ids(&c, weekly), ["b2", "b1"]);
        let yearly = Retention {
            yearly: 5,
            ..Default::default()
        };
        assert_eq!(kept_ids(&c, yearly), ["b2", "b0"]);
    }

    #[test]
    fn days_are_taken_in_the_policys_time_zone() {
        // 23:30 UTC on Jan 1 is already Jan 2 in Berlin, the same day as the later backup.
        let c = backups(&["2026-01-01T23:30:00Z", "2026-01-02T10:00:00Z"]);
        let r = Retention {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(kept_ids(&c, r), ["b1", "b0"]);
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let kept: Vec<_> = decide(&c, &r, berlin)
            .into_iter()
            .filter(|(_, d)| *d != Decision::Delete)
            .map(|(c, _)| c.id)
            .collect();
        assert_eq!(kept, ["b1"]);
    }

    #[test]
    fn the_newest_backup_survives_even_an_all_zero_retention() {
        let c = backups(&["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]);
        assert_eq!(
            decisions(&c, Retention::default()),
            [
                ("b1".into(), Decision::Keep(Rule::Newest)),
                ("b0".into(), Decision::Delete)
            ]
        );
        assert!(decide(&[], &Retention::default(), Tz::UTC).is_empty());
    }

    #[test]
    fn a_restic_style_schedule_keeps_the_expected_set_over_a_year() {
        // One backup a day at 02:00 for all of 2026.
        let start: DateTime<Utc> = "2026-01-01T02:00:00Z".parse().unwrap();
        let c: Vec<Candidate> = (0..365)
            .map(|d| Candidate {
                id: format!("d{d:03}"),
                at: start + chrono::Duration::days(d),
            })
            .collect();
        let r = Retention {
            keep_last: 3,
            daily: 7,
            weekly: 4,
            monthly: 6,
            yearly: 0,
        };
        let kept = kept_ids(&c, r);
        // 3 last + 7 daily + 4 weekly + 6 monthly, each backup counted once.
        assert_eq!(kept.len(), 20, "{kept:?}");
        // The newest ten days are all kept (3 last, then 7 daily).
        let newest_ten: Vec<String> = (355..365).rev().map(|d| format!("d{d:03}")).collect();
        assert_eq!(kept[..10], newest_ten[..]);
        // The monthly keeps are each the newest backup of its month (here: the last day).
        assert!(kept.contains(&"d272".to_string()), "Sep 30: {kept:?}");
    }
}
