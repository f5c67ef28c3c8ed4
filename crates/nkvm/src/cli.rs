//! The command line (a contract: see docs/cli.md).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Kubernetes PVC backup manager.
#[derive(Debug, Parser)]
#[command(name = "nkvm", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a sandbox Kubernetes API server (for tests, benchmarks and the demo).
    Sandbox(SandboxArgs),
    /// Sandbox cluster + sample workloads + web UI.
    Demo(DemoArgs),
}

/// `nkvm sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port (written into the kubeconfig).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Directory for volume data, container scratch space and logs.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Where to write the cluster-admin kubeconfig once the server is ready.
    #[arg(long)]
    pub kubeconfig_out: PathBuf,
    /// Taint node-b (`key=value:Effect`); repeatable.
    #[arg(long = "node-taint")]
    pub node_taints: Vec<String>,
    /// Cap ServiceAccount token lifetimes at this many seconds (as kube-apiserver's flag of
    /// the same name); short caps let tests watch tokens expire.
    #[arg(long = "service-account-max-token-expiration", value_name = "SECONDS")]
    pub max_token_seconds: Option<i64>,
}

/// `nkvm demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address for the web UI.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}
