//! nkvm's engine: the one `App` the CLI and the web UI call. It owns policy (the namespace
//! allowlist is enforced here, for every operation) and composes the cluster adapter with the
//! history; front-ends only parse input and render results.

pub mod agent;
pub mod archive;
pub mod archive_safety;
mod backup;
mod check;
mod copy;
mod inventory;
mod job_helper;
pub mod jobs;
pub mod leader;
mod lifecycle;
mod located;
pub mod notify;
pub mod policy_book;
pub mod policy_run;
pub mod policy_set;
pub mod protection;
mod recovery;
pub mod restore;
pub mod retention;
pub mod scheduler;
pub mod session;
mod sink;
pub mod store_health;
pub mod tar_check;
pub mod verify;
pub mod workspace;

pub use backup::{BackupOptions, BackupResult, Progress};
pub use check::CheckReport;
pub use copy::{CopyOptions, CopyResult};
pub use inventory::{Scope, backupability};
pub use recovery::{
    INDEX_ACTOR, IndexError, IndexReport, RecoveryReport, rebuild_index, row_from_manifest,
};
pub use restore::{RestoreOptions, RestorePlan, RestoreRequest, RestoreResult};

use nkvm_domain::{Allowlist, FailureKind};
use nkvm_history::{History, HistoryError};
use nkvm_kube::discovery::{DiscoveryError, DiscoveryOptions};
use nkvm_kube::{ClusterInfo, Connection};
use nkvm_store::{ArchiveStore, Stores};
use std::sync::Arc;
use std::time::Duration;

/// Engine settings (from flags and environment).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces nkvm may touch (empty: all the credentials can see).
    pub allowlist: Allowlist,
    /// Limit for one inventory run (`NKVM_DISCOVERY_TIMEOUT_SECONDS`).
    pub discovery_timeout: Duration,
    /// Most objects one inventory may hold (`NKVM_DISCOVERY_MAX_OBJECTS`).
    pub discovery_max_objects: usize,
    /// Image of helper pods (`NKVM_HELPER_IMAGE`, default [`Settings::own_image`]); needs
    /// `sh`, `sleep` and GNU tar or BusyBox. nkvm's own image takes the agent path.
    pub helper_image: String,
    /// The image nkvm itself runs from (`NKVM_IMAGE`): helpers of this image run `nkvm agent`.
    pub own_image: String,
    /// A fault the agent injects (`NKVM_AGENT_FAULT`, tests only).
    pub agent_fault: Option<agent::Fault>,
    /// Longest silence of an exec stream before it counts as stalled
    /// (`NKVM_EXEC_IDLE_TIMEOUT_SECONDS`).
    pub exec_idle_timeout: Duration,
    /// How long a helper pod may take to run (`NKVM_HELPER_POD_TIMEOUT_SECONDS`).
    pub helper_pod_timeout: Duration,
    /// The age identity file that opens encrypted archives for restores and deep verifies
    /// (`NKVM_AGE_IDENTITY_FILE` / `--identity`); read when needed, never kept or shown.
    pub age_identity_file: Option<std::path::PathBuf>,
}

/// nkvm's own image unless configured (`NKVM_IMAGE`): the name the Deployment in
/// `deploy/k8s/app` starts from, at this version. It is also the default helper image.
pub const DEFAULT_NKVM_IMAGE: &str = concat!("nkvm:", env!("CARGO_PKG_VERSION"));

/// A generic helper image (GNU tar, no agent): what the generic tar path was built for.
pub const GENERIC_HELPER_IMAGE: &str = "docker.io/library/debian:bookworm-slim";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allowlist: Allowlist::default(),
            discovery_timeout: Duration::from_secs(20),
            discovery_max_objects: DiscoveryOptions::default().max_objects,
            helper_image: DEFAULT_NKVM_IMAGE.into(),
            own_image: DEFAULT_NKVM_IMAGE.into(),
            agent_fault: None,
            exec_idle_timeout: Duration::from_secs(300),
            helper_pod_timeout: Duration::from_secs(120),
            age_identity_file: None,
        }
    }
}

impl Settings {
    /// The data path jobs take with the configured helper image.
    pub fn data_path(&self) -> agent::DataPath {
        agent::DataPath::for_image(&self.helper_image, &self.own_image)
    }
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The namespace is outside the allowlist.
    #[error(
        "namespace {namespace:?} is not in nkvm's allowlist ({allowlist}); add it to --namespaces / NKVM_NAMESPACES to use it"
    )]
    NamespaceNotAllowed {
        /// The refused namespace.
        namespace: String,
        /// The allowlist in force.
        allowlist: String,
    },
    /// Listing the cluster failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Discovery took longer than allowed.
    #[error(
        "discovery did not finish within {seconds} s; raise NKVM_DISCOVERY_TIMEOUT_SECONDS or narrow --namespaces"
    )]
    DiscoveryTimeout {
        /// The limit.
        seconds: u64,
    },
    /// Reading or writing history failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Something the operation names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Reading the cluster failed.
    #[error("reading the cluster: {0}")]
    Cluster(#[source] kube::Error),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
    /// An access review failed.
    #[error("checking permissions: {0}")]
    Access(#[source] kube::Error),
    /// Removing an archive from the store failed.
    #[error("deleting the archive: {0}")]
    DeleteArchive(#[source] nkvm_store::StoreError),
}

impl nkvm_domain::UserError for EngineError {
    /// The failure kind (exit code, HTTP status, history column).
    fn kind(&self) -> FailureKind {
        match self {
            EngineError::NamespaceNotAllowed { .. } => FailureKind::Forbidden,
            EngineError::Discovery(e) => e.kind(),
            EngineError::DiscoveryTimeout { .. } => FailureKind::Timeout,
            EngineError::History(_) => FailureKind::StorageUnavailable,
            EngineError::Access(_) => FailureKind::ClusterUnavailable,
            EngineError::NotFound(_) => FailureKind::NotFound,
            EngineError::Cluster(e) => nkvm_kube::failure_kind(e),
            EngineError::Internal(_) => FailureKind::Internal,
            EngineError::DeleteArchive(e) => e.kind(),
        }
    }
}

/// The engine, bound to one cluster connection, one history and the named archive stores.
pub struct App {
    conn: Connection,
    history: Arc<History>,
    stores: Arc<Stores>,
    settings: Settings,
}

impl App {
    /// An engine over an established connection, an opened history and a store (the `local`
    /// store; [`with_stores`](Self::with_stores) names more).
    pub fn new(
        conn: Connection,
        history: Arc<History>,
        store: Arc<dyn ArchiveStore>,
        settings: Settings,
    ) -> Self {
        App {
            conn,
            history,
            stores: Arc::new(Stores::local(store, "")),
            settings,
        }
    }

    /// An engine with no cluster connection, over an opened history and named stores: for
    /// the jobs that work on stores and history alone ([`App::copy_backup`]). Anything that
    /// needs the cluster fails with `ClusterUnavailable`, naming why, without any request
    /// leaving the process. Call it inside a Tokio runtime.
    pub fn without_cluster(history: Arc<History>, stores: Arc<Stores>, settings: Settings) -> Self {
        App {
            conn: Connection::none(),
            history,
            stores,
            settings,
        }
    }

    /// The same engine over these named stores (`local` among them).
    pub fn with_stores(mut self, stores: Arc<Stores>) -> Self {
        self.stores = stores;
        self
    }

    /// The named stores.
    pub fn stores(&self) -> &Arc<Stores> {
        &self.stores
    }

    /// The cluster this engine talks to.
    pub fn cluster(&self) -> &ClusterInfo {
        &self.conn.info
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Refuses namespaces outside the allowlist.
    pub fn require_allowed(&self, namespace: &str) -> Result<(), EngineError> {
        if self.settings.allowlist.allows(namespace) {
            Ok(())
        } else {
            Err(EngineError::NamespaceNotAllowed {
                namespace: namespace.into(),
                allowlist: self.settings.allowlist.to_string(),
            })
        }
    }
}
