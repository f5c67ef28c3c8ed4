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

    /// Every kind, in declaration order.
    pub const ALL: &'static [FailureKind] = &[
        FailureKind::InvalidInput,
        FailureKind::NotFound,
        FailureKind::Forbidden,
        FailureKind::Conflict,
        FailureKind::Timeout,
        FailureKind::ClusterUnavailable,
        FailureKind::StorageUnavailable,
        FailureKind::CommandFailed,
        FailureKind::Cancelled,
        FailureKind::Internal,
    ];

    /// The kind whose [`label`](Self::label) is `label`, as history columns store it.
    pub fn from_label(label: &str) -> Option<FailureKind> {
        FailureKind::ALL
            .iter()
            .copied()
            .find(|k| k.label() == label)
    }
}

/// An error that reaches a user (a page, a CLI message, a history row): its kind decides the
/// exit code, the HTTP status, the history's failure column and the metric label.
pub trait UserError: std::error::Error {
    /// What kind of failure it is.
    fn kind(&self) -> FailureKind;
}

/// Serializes an optional failure kind as its [`FailureKind::label`], `""` for none: the shape
/// history rows and job results carry (`#[serde(serialize_with = ...)]`).
pub fn serialize_label<S: serde::Serializer>(
    kind: &Option<FailureKind>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.map_or("", FailureKind::label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for k in FailureKind::ALL {
            assert_eq!(FailureKind::from_label(k.label()), Some(*k));
        }
        assert_eq!(FailureKind::from_label("nope"), None);
    }
}
