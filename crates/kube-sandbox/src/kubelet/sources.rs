//! What the kubelet reads while preparing a pod: the ConfigMaps and Secrets its environment
//! and volumes refer to, its claims' volumes, ServiceAccount tokens, and where the API server
//! and the pod's scratch space are. The embedded sandbox answers from its store; the upstream
//! node agent from a snapshot it fetched from kube-apiserver before starting the pod.

use super::volumes::{PreparedVolume, VolumeProblem};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// The objects and places a pod's start depends on.
pub trait Sources {
    /// A ConfigMap, if it exists.
    fn config_map(&self, ns: &str, name: &str) -> Option<Arc<Value>>;
    /// A Secret, if it exists.
    fn secret(&self, ns: &str, name: &str) -> Option<Arc<Value>>;
    /// `host:port` of the API server, for the `KUBERNETES_SERVICE_*` variables.
    fn api_server(&self) -> String;
    /// The directory of one pod's scratch space, emptyDirs and projected files.
    fn pod_dir(&self, pod_uid: &str) -> PathBuf;
    /// A token for the pod's ServiceAccount from a `serviceAccountToken` projection.
    fn service_account_token(&self, pod: &Value, projection: &Value) -> Option<String>;
    /// Images whose containers run as real podman containers (when in local podman storage).
    fn podman_images(&self) -> &[String] {
        &[]
    }
    /// Host programs placed in containers of given images ([`super::programs`]).
    fn image_programs(&self) -> &[super::programs::ImageProgram] {
        &[]
    }
    /// The host directory backing volume `volume` (a `persistentVolumeClaim` source).
    fn claim_volume(
        &self,
        pod: &Value,
        volume: &str,
        source: &Value,
    ) -> Result<PreparedVolume, VolumeProblem>;
}
