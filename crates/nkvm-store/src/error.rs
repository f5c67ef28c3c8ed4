//! The store's one error type and the [`FailureKind`] each variant maps to.

use nkvm_domain::FailureKind;
use std::io;
use std::path::PathBuf;

/// Why an archive store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A namespace or claim name that cannot be one directory of the store.
    #[error(
        "the {what} name {value:?} cannot be a directory of the archive store: use the Kubernetes name (lower-case letters, digits, '-' and '.')"
    )]
    InvalidKey {
        /// What was being named (namespace, PVC).
        what: &'static str,
        /// The refused name.
        value: String,
    },
    /// An artifact path that is not one of the store's archives, or leads out of the store.
    #[error(
        "{artifact:?} is not an archive in the store: {reason}; use the artifact that `nkvm backups` shows"
    )]
    InvalidArtifact {
        /// The refused path, as given.
        artifact: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file is already where a new archive or manifest would go.
    #[error("{} already exists and archives are never overwritten: run the backup again, it gets a new id", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The artifact asked for is not in the store.
    #[error("there is no {what} at {}: `nkvm backups` lists what the store holds", path.display())]
    NotFound {
        /// `archive` or `manifest`.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The manifest handed to commit describes another archive than the one written.
    #[error(
        "the manifest's {field} {manifest:?} does not match the archive's {key:?}; nothing was stored (this is a bug in nkvm, please report it)"
    )]
    ManifestMismatch {
        /// The field that differs.
        field: &'static str,
        /// Its value in the manifest.
        manifest: String,
        /// Its value in the archive key.
        key: String,
    },
    /// A manifest that is not a valid manifest of a version this nkvm reads.
    #[error("the manifest {} cannot be read: {detail}; restore it from a copy, or delete the backup", path.display())]
    CorruptManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An archive without its manifest, or a manifest without its archive (found by listing).
    #[error("{} has no {missing} beside it, so it is not listed: restore the {missing} or delete the file", path.display())]
    Orphan {
        /// The file found alone.
        path: PathBuf,
        /// `manifest` or `archive`.
        missing: &'static str,
    },
    /// A remote store (S3, SFTP) refused an operation or could not be reached.
    #[error("store {store:?}: {action}: {detail}; {}", remote_hint(detail))]
    Remote {
        /// The store's name.
        store: String,
        /// What was being done, e.g. "uploading part 3 of".
        action: String,
        /// The server's or the network's answer (never credentials).
        detail: String,
    },
    /// A store name that is not configured.
    #[error("there is no store named {name:?}; configured stores: {known} (see `nkvm stores`)")]
    UnknownStore {
        /// The name asked for.
        name: String,
        /// The names configured, comma-separated.
        known: String,
    },
    /// The stores file is unreadable or invalid.
    #[error("the stores file {} (NKVM_STORES_FILE / --stores): {detail}", path.display())]
    Config {
        /// The stores file.
        path: PathBuf,
        /// What is wrong, naming the entry and field.
        detail: String,
    },
    /// An age identity file that cannot be used for this archive.
    #[error("the age identity file {} (NKVM_AGE_IDENTITY_FILE / --identity) {detail}", path.display())]
    Identity {
        /// The identity file (its path only; its content is never shown).
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An age file that does not decrypt: damaged, or not for the identity given.
    #[error(
        "the archive does not decrypt: {detail}; check it with `nkvm verify` and that the identity is the archive's"
    )]
    Decrypt {
        /// age's answer.
        detail: String,
    },
    /// Encrypting an archive failed before anything was stored.
    #[error("encrypting the archive: {detail}; nothing was stored")]
    Encrypt {
        /// What failed.
        detail: String,
    },
    /// An SFTP server whose host key the store's `known_hosts` file does not vouch for;
    /// refused during the key exchange, before anything was sent.
    #[error(
        "store {store:?}: the host key of {host} ({fingerprint}) {problem}; nothing was sent. Compare the fingerprint with the server's own (`ssh-keygen -lf` of its host key), then record the key in {} (`ssh-keyscan -p PORT HOST`)",
        known_hosts.display()
    )]
    HostKeyRejected {
        /// The store's name.
        store: String,
        /// The server as `known_hosts` names it (`host` or `[host]:port`).
        host: String,
        /// The presented key's `SHA256:` fingerprint.
        fingerprint: String,
        /// What is wrong with it.
        problem: String,
        /// The store's `known_hosts` file.
        known_hosts: PathBuf,
    },
    /// The filesystem refused an operation.
    #[error("{action} {}: {source}; {}", path.display(), hint(source))]
    Io {
        /// What was being done, e.g. "creating the archive directory".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's answer.
        source: io::Error,
    },
}

impl nkvm_domain::UserError for StoreError {
    /// The failure kind that decides exit codes, HTTP statuses and history columns.
    fn kind(&self) -> FailureKind {
        match self {
            StoreError::InvalidKey { .. } | StoreError::InvalidArtifact { .. } => {
                FailureKind::InvalidInput
            }
            StoreError::AlreadyExists { .. } => FailureKind::Conflict,
            StoreError::NotFound { .. } => FailureKind::NotFound,
            StoreError::ManifestMismatch { .. } => FailureKind::Internal,
            StoreError::UnknownStore { .. }
            | StoreError::Config { .. }
            | StoreError::Identity { .. } => FailureKind::InvalidInput,
            StoreError::Decrypt { .. } => FailureKind::CommandFailed,
            StoreError::Encrypt { .. } => FailureKind::Internal,
            StoreError::Remote { .. } | StoreError::HostKeyRejected { .. } => {
                FailureKind::StorageUnavailable
            }
            StoreError::CorruptManifest { .. }
            | StoreError::Orphan { .. }
            | StoreError::Io { .. } => FailureKind::StorageUnavailable,
        }
    }
}

impl StoreError {
    /// An I/O failure while `action` on `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// What an operator can do about a remote store's error, from its text.
fn remote_hint(detail: &str) -> &'static str {
    let lower = detail.to_ascii_lowercase();
    // A status code is a word of its own: a port like 40341 in the URL is no 403.
    let status_403 = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word == "403");
    if status_403
        || [
            "accessdenied",
            "signature",
            "invalidaccesskeyid",
            "forbidden",
            "credential",
        ]
        .iter()
        .any(|w| lower.contains(w))
    {
        "check the store's credentials (the AWS_* environment, or the key files named in the stores file)"
    } else if [
        "connect",
        "dns",
        "timed out",
        "timeout",
        "connection",
        // reqwest's words for a request that never got an answer (refused, reset).
        "error sending request",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        "check the store's endpoint and that it is reachable from nkvm"
    } else {
        "check the store's settings in the stores file and `nkvm stores --check`"
    }
}

/// What an operator can do about an I/O error, by its kind.
fn hint(e: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match e.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem => {
            "check that NKVM_BACKUP_DIR (--backup-dir) is writable by the user nkvm runs as"
        }
        K::NotADirectory | K::AlreadyExists => {
            "check that NKVM_BACKUP_DIR (--backup-dir) and everything under it are directories"
        }
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => {
            "free space under NKVM_BACKUP_DIR (--backup-dir) or give it a larger volume"
        }
        _ => "check NKVM_BACKUP_DIR (--backup-dir) and the storage behind it",
    }
}

#[cfg(test)]
mod tests {
    use super::remote_hint;

    #[test]
    fn a_port_with_403_in_it_is_no_credentials_problem() {
        let unreachable = "Error performing HEAD http://127.0.0.1:40341/nkvm/x - HTTP error: error sending request";
        assert!(
            remote_hint(unreachable).contains("endpoint"),
            "{}",
            remote_hint(unreachable)
        );
        let refused = "Client error with status 403 Forbidden: AccessDenied";
        assert!(remote_hint(refused).contains("credentials"));
    }
}
