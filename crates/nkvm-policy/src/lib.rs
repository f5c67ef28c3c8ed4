//! nkvm's backup policies, as pure data and functions: the policy file's format and its
//! validation ([`file`]), cron schedules evaluated in a policy's time zone ([`schedule`]), and
//! the retention decision over a claim's backups ([`retention`]). Nothing here does I/O
//! beyond reading the policy file; the engine runs what these decide.

pub mod file;
pub mod retention;
pub mod schedule;

pub use file::{Notify, NotifyOn, Policy, PolicyError, PolicySource, load_file, parse};
pub use retention::{Candidate, Decision, Retention, Rule, decide};
pub use schedule::{Schedule, ScheduleError};
