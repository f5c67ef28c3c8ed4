//! The shared state of one running sandbox: the store, its configuration, and the kubelet's
//! process table. Handlers and controllers all hold an `Arc<Cluster>`.

use crate::kubelet::Kubelet;
use crate::store::Store;
use std::path::PathBuf;

/// Static settings of a sandbox.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Directory for PV data, container scratch space and logs.
    pub state_dir: PathBuf,
    /// The cluster-admin bearer token written into the kubeconfig.
    pub admin_token: String,
    /// `host:port` the API server listens on (pods get it as KUBERNETES_SERVICE_HOST/PORT).
    pub server_address: String,
    /// Cap on ServiceAccount token lifetimes in seconds (kube-apiserver's
    /// `--service-account-max-token-expiration`); lets tests watch tokens expire.
    pub max_token_seconds: Option<i64>,
    /// Taints put on `node-b` at start (`key=value:Effect`), for scheduling tests.
    pub node_b_taints: Vec<String>,
    /// Images whose containers run in podman (see [`crate::kubelet::podman`]).
    pub podman_images: Vec<String>,
    /// Host programs placed in containers of given images.
    pub image_programs: Vec<crate::kubelet::programs::ImageProgram>,
}

/// One running sandbox.
pub struct Cluster {
    /// Every object.
    pub store: Store,
    /// Static settings.
    pub config: ClusterConfig,
    /// Running container processes.
    pub kubelet: Kubelet,
    /// Minted ServiceAccount tokens.
    pub tokens: crate::auth::tokens::TokenStore,
    /// Deduplication of recorded Events.
    pub event_index: crate::events::EventIndex,
    /// Injected faults (`--fault`, `/sandbox/faults`).
    pub faults: crate::faults::Faults,
    /// PEM of the sandbox CA, published in each namespace as `kube-root-ca.crt`.
    pub root_ca: std::sync::OnceLock<String>,
}

impl Cluster {
    /// Records the CA certificate published to namespaces (set once at start).
    pub fn set_root_ca(&self, pem: &str) {
        let _ = self.root_ca.set(pem.to_string());
    }

    /// Directory holding one PV's data.
    pub fn pv_dir(&self, pv_name: &str) -> PathBuf {
        self.config.state_dir.join("volumes").join(pv_name)
    }

    /// Directory holding one pod's scratch space, emptyDirs, projected files and logs.
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.config.state_dir.join("pods").join(pod_uid)
    }
}
