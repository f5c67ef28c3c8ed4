//! nkvm's cluster adapter: connecting to a cluster in each auth mode (in-cluster
//! ServiceAccount, kubeconfig path, pasted kubeconfig), discovering PVCs with their
//! consumers and owner workloads, and running helper pods (spec, lifecycle, exec streams,
//! the `tar` command lines). Nothing here knows about history or the archive store.

pub mod access;
pub mod connect;
pub mod discovery;
pub mod exec;
pub mod helper;
pub mod kubeconfig;
pub mod tar_command;

pub use connect::{AuthMode, ClusterInfo, ConnectError, ConnectOptions, Connection, connect};

/// The failure kind of an API error: 403 forbidden, 404 not found, 409 conflict, 400/422
/// invalid input, anything else the cluster being unavailable.
pub fn failure_kind(e: &kube::Error) -> nkvm_domain::FailureKind {
    match e {
        kube::Error::Api(s) => helper::lifecycle::kind_of_status(Some(s.code)),
        _ => nkvm_domain::FailureKind::ClusterUnavailable,
    }
}

/// What an API error says, without the client's wrapping: the server's message for API
/// status errors, the error's own text otherwise.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}
