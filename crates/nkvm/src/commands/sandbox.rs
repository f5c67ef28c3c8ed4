//! `nkvm sandbox`: runs the sandbox cluster until SIGTERM or Ctrl-C.

use crate::cli::SandboxArgs;
use crate::commands::invalid;
use anyhow::Context;
use kube_sandbox::scale::ScaleSpec;
use kube_sandbox::{Sandbox, SandboxOptions, StartError};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

/// Starts the sandbox, writes the kubeconfig, and serves until told to stop.
pub async fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let seed = args
        .seed_scale
        .as_deref()
        .map(ScaleSpec::parse)
        .transpose()
        .map_err(|e| invalid(format!("--seed-scale: {e}")))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let options = SandboxOptions {
        state_dir: args.state_dir.clone(),
        node_b_taints: args.node_taints,
        max_token_seconds: args.max_token_seconds,
        faults: args.faults,
        seed,
    };
    let sandbox = Sandbox::start(listener, options)
        .await
        .map_err(|e| match e {
            StartError::Taint(_) | StartError::Fault(_) => {
                anyhow::Error::new(invalid(e.to_string()))
            }
            other => anyhow::Error::new(other),
        })?;
    sandbox
        .write_kubeconfig(&args.kubeconfig_out)
        .with_context(|| {
            format!(
                "writing the kubeconfig to {}",
                args.kubeconfig_out.display()
            )
        })?;
    tracing::info!(url = sandbox.url(), kubeconfig = %args.kubeconfig_out.display(), state_dir = %args.state_dir.display(), "sandbox cluster ready");
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: killing pod processes");
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
