//! nkvm's domain types, free of I/O: validated names and references, the namespace
//! allowlist, inventory records as the CLI and UI show them, the job vocabulary (status, stage,
//! trigger), and the failure kinds that decide exit codes, HTTP statuses and history columns.

mod backup;
pub mod failure;
mod inventory;
mod job;
mod names;
pub mod quantity;

pub use backup::{BackupId, Compression};
pub use failure::{FailureKind, UserError};
pub use inventory::{Consumer, Owner, PvcRecord, short_access_mode};
pub use job::{JobStatus, Stage, Trigger};
pub use names::{Allowlist, NameError, PvcRef, ResourceName};
pub use quantity::QuantityError;
