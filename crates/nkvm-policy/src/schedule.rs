//! Cron schedules (five fields: minute, hour, day of month, month, day of week) evaluated in
//! an IANA time zone, so `0 2 * * *` in `Europe/Berlin` fires at 02:00 Berlin time in summer
//! and in winter. A local time skipped by a daylight-saving change fires once, just after the
//! change; a local time that occurs twice fires once, at its first occurrence (croner's rules).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Why a schedule or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not five fields.
    #[error(
        "schedule {expr:?} has {fields} fields; write 5: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\""
    )]
    FieldCount {
        /// The text.
        expr: String,
        /// Fields found.
        fields: usize,
    },
    /// croner refused it.
    #[error("schedule {expr:?} is not a valid cron expression: {detail}")]
    Invalid {
        /// The text.
        expr: String,
        /// croner's reason.
        detail: String,
    },
    /// Not an IANA zone name.
    #[error(
        "timezone {0:?} is not an IANA time zone name; write e.g. UTC, Europe/Berlin or America/New_York"
    )]
    TimeZone(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Tz,
}

/// The most slots [`Schedule::slots_between`] returns: a long outage of a per-minute policy
/// must not make a start-up walk millions of slots.
pub const MAX_SLOTS: usize = 10_000;

impl Schedule {
    /// Parses a 5-field cron expression and an IANA zone name.
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::FieldCount {
                expr: expr.into(),
                fields,
            });
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(expr).map_err(|e| ScheduleError::Invalid {
            expr: expr.into(),
            detail: e.to_string(),
        })?;
        let tz: Tz = timezone
            .parse()
            .map_err(|_| ScheduleError::TimeZone(timezone.into()))?;
        Ok(Schedule {
            expr: expr.trim().into(),
            cron,
            tz,
        })
    }

    /// The expression as written (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone it is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last slot at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The slots in `(after, until]`, oldest first, at most [`MAX_SLOTS`] (the newest ones).
    pub fn slots_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut slots = std::collections::VecDeque::new();
        let mut t = after;
        while let Some(next) = self.next_after(t).filter(|n| *n <= until) {
            if slots.len() == MAX_SLOTS {
                slots.pop_front();
            }
            slots.push_back(next);
            t = next;
        }
        slots.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_schedule_needs_exactly_five_fields() {
        let err = Schedule::parse("0 0 2 * * *", "UTC").unwrap_err();
        assert!(err.to_string().contains("has 6 fields"), "{err}");
        let err = Schedule::parse("0 2 * *", "UTC").unwrap_err();
        assert!(err.to_string().contains("has 4 fields"), "{err}");
        let err = Schedule::parse("61 2 * * *", "UTC").unwrap_err();
        assert!(err.to_string().contains("not a valid cron"), "{err}");
        let err = Schedule::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert!(err.to_string().contains("IANA"), "{err}");
    }

    #[test]
    fn a_nightly_schedule_follows_berlin_across_daylight_saving() {
        let s = Schedule::parse("0 2 * * *", "Europe/Berlin").unwrap();
        // Winter: UTC+1.
        assert_eq!(
            s.next_after(utc("2026-01-10T12:00:00Z")),
            Some(utc("2026-01-11T01:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            s.next_after(utc("2026-07-10T12:00:00Z")),
            Some(utc("2026-07-11T00:00:00Z"))
        );
        // 2026-03-29 02:00 does not exist in Berlin: the slot fires once, at 03:00 CEST.
        let spring = s.slots_between(utc("2026-03-28T12:00:00Z"), utc("2026-03-30T12:00:00Z"));
        assert_eq!(spring.len(), 2, "{spring:?}");
        assert_eq!(spring[0], utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn slots_between_are_oldest_first_and_exclusive_of_the_start() {
        let s = Schedule::parse("*/15 * * * *", "UTC").unwrap();
        let slots = s.slots_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T01:00:00Z"));
        assert_eq!(
            slots,
            [
                utc("2026-01-01T00:15:00Z"),
                utc("2026-01-01T00:30:00Z"),
                utc("2026-01-01T00:45:00Z"),
                utc("2026-01-01T01:00:00Z")
            ]
        );
        assert_eq!(
            s.last_at_or_before(utc("2026-01-01T00:20:00Z")),
            Some(utc("2026-01-01T00:15:00Z"))
        );
    }

    #[test]
    fn a_long_outage_yields_at_most_the_newest_slots() {
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        let slots = s.slots_between(utc("2026-01-01T00:00:00Z"), utc("2026-02-01T00:00:00Z"));
        assert_eq!(slots.len(), MAX_SLOTS);
        assert_eq!(slots.last(), Some(&utc("2026-02-01T00:00:00Z")));
    }
}
