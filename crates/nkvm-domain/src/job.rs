//! The job vocabulary: where a job is ([`JobStatus`]), which step it is in ([`Stage`]) and what
//! started it ([`Trigger`]). History rows, the job registry, the CLI, the web UI and metrics
//! all use these types; their lower-case names are what history columns and JSON carry, so a
//! typo becomes a compile error instead of a silently unmatched string.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Declares a unit-only enum with a stable lower-case name per variant: `as_str`, `Display`,
/// `FromStr` (naming the accepted values on error) and serde as that name.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable name used in history columns, JSON and metric labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " {:?}: expected one of {}"),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

named_enum! {
    /// Where a job (or one item of a batch) is.
    JobStatus, "job status" {
        /// Waiting for a free slot.
        #[default]
        Queued => "queued",
        /// Running.
        Running => "running",
        /// Done, and the result proved complete.
        Succeeded => "succeeded",
        /// Done, and it failed.
        Failed => "failed",
        /// Stopped on request.
        Cancelled => "cancelled",
        /// Still running when nkvm stopped.
        Interrupted => "interrupted",
    }
}

impl JobStatus {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

named_enum! {
    /// The step a job is in, or failed in. Backups go resolve, helper-pod, probe-tar, stream,
    /// commit; restores go plan, create-pvc, helper-pod, probe-tar, clean, stream.
    Stage, "stage" {
        /// Waiting in the job registry.
        #[default]
        Queued => "queued",
        /// Finding the claim and deciding whether it can be read safely.
        Resolve => "resolve",
        /// Checking a restore plan still holds.
        Plan => "plan",
        /// Creating the restore's target claim.
        CreatePvc => "create-pvc",
        /// Creating the helper pod and waiting for it to run.
        HelperPod => "helper-pod",
        /// Finding out which tar the helper image has.
        ProbeTar => "probe-tar",
        /// Emptying a restore's target.
        Clean => "clean",
        /// Moving the archive's bytes.
        Stream => "stream",
        /// Reaching the archive's store or writing to it (an off-site store refused or failed).
        Store => "store",
        /// Making the archive and its manifest visible in the store.
        Commit => "commit",
        /// Stopped on request before it ended.
        Cancelled => "cancelled",
        /// Still running when nkvm shut down.
        Shutdown => "shutdown",
    }
}

named_enum! {
    /// What started a job.
    Trigger, "trigger" {
        /// The command line.
        #[default]
        Cli => "cli",
        /// The web UI.
        Ui => "ui",
        /// A schedule.
        Schedule => "schedule",
        /// Rebuilding the history from the store's manifests.
        Index => "index",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>().unwrap(), *s);
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(serde_json::from_str::<Stage>(&json).unwrap(), *s);
        }
        for s in JobStatus::ALL {
            assert_eq!(s.to_string().parse::<JobStatus>().unwrap(), *s);
        }
        assert_eq!(Stage::HelperPod.as_str(), "helper-pod");
        assert_eq!(Trigger::Schedule.as_str(), "schedule");
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_accepted_ones() {
        let e = "helperpod".parse::<Stage>().unwrap_err();
        assert!(e.contains("unknown stage \"helperpod\""), "{e}");
        assert!(e.contains("helper-pod"), "{e}");
        assert!(!JobStatus::Running.is_final());
        assert!(JobStatus::Interrupted.is_final());
    }
}
