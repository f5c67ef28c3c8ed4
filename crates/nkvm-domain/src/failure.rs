//! The small set of failure kinds every operation maps its errors to.

use serde::{Deserialize, Serialize};

/// What kind of failure an operation hit; decides exit codes, HTTP statuses, history
/// columns and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureKind {
    /// The request itself was wrong (bad name, bad flag value).
    InvalidInput,
    /// The named thing does not exist.
    NotFound,
    /// Credentials lack permission, or policy (the allowlist) refuses.
    Forbidden,
    /// The target is in a state that forbids the operation.
    Conflict,
    /// A deadline passed.
    Timeout,
    /// The Kubernetes API could not be reached or authenticated against.
    ClusterUnavailable,
    /// The archive store failed.
    StorageUnavailable,
    /// A command in a helper pod failed.
    CommandFailed,
    /// Stopped on request.
    Cancelled,
    /// A bug or an unexpected state.
    Internal,
}

impl FailureKind {
    /// The CLI exit code: 2 for usage/configuration errors, 1 for failed operations.
    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::InvalidInput => 2,
            _ => 1,
        }
    }

    /// Stable lower-case label for history rows and metrics.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::InvalidInput => "invalid_input",
            FailureKind::NotFound => "not_found",
            FailureKind::Forbidden => "forbidden",
            FailureKind::Conflict => "conflict",
            FailureKind::Timeout => "timeout",
            FailureKind::ClusterUnavailable => "cluster_unavailable",
            FailureKind::StorageUnavailable => "storage_unavailable",
            FailureKind::CommandFailed => "command_failed",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Internal => "internal",
        }
    }
}
