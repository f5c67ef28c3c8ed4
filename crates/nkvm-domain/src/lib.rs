//! nkvm's domain types, free of I/O: validated names and references, the namespace
//! allowlist, inventory records as the CLI and UI show them, and the failure kinds that decide
//! exit codes, HTTP statuses and history columns.

mod backup;
mod failure;
mod inventory;
mod names;
pub mod quantity;

pub use backup::{BackupId, Compression};
pub use failure::FailureKind;
pub use inventory::{Consumer, Owner, PvcRecord, short_access_mode};
pub use names::{Allowlist, NameError, PvcRef, ResourceName};
pub use quantity::QuantityError;
