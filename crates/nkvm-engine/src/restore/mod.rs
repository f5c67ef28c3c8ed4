//! Restores: [`plan`] decides what a restore would do and refuses what is unsafe before
//! anything changes; [`run`] performs a plan through a read-write helper pod.

mod plan;
mod run;

pub use plan::{
    NewClaim, PlanFacts, RestorePlan, RestoreRequest, RestoreSource, RestoreTarget, decide,
};
pub use run::{RestoreOptions, RestoreResult};
