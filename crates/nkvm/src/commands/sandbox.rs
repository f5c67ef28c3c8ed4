//! `nkvm sandbox`: runs the sandbox cluster until SIGTERM or Ctrl-C.

use crate::cli::{ControlPlane, GlobalArgs, SandboxArgs};
use crate::commands::invalid;
use anyhow::Context;
use kube_sandbox::kubelet::programs::ImageProgram;
use kube_sandbox::scale::ScaleSpec;
use kube_sandbox::upstream::{UpstreamCluster, UpstreamOptions};
use kube_sandbox::{Sandbox, SandboxOptions, StartError};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

/// nkvm's own image mapped to this very binary at the path the image has it, so helper pods
/// of that image run the agent of the nkvm that started the sandbox.
pub fn own_image_programs(image: &str) -> Vec<ImageProgram> {
    match std::env::current_exe() {
        Ok(program) => vec![ImageProgram {
            image: image.to_string(),
            program,
            at: nkvm_engine::agent::AGENT_PATH.into(),
        }],
        Err(e) => {
            tracing::warn!(error = %e, "cannot find nkvm's own binary; helper pods of {image} will have no agent");
            Vec::new()
        }
    }
}

/// Starts the sandbox, writes the kubeconfig, and serves until told to stop.
pub async fn run(g: &GlobalArgs, args: SandboxArgs) -> anyhow::Result<ExitCode> {
    if args.control_plane == ControlPlane::Upstream {
        return run_upstream(g, args).await;
    }
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
        podman_images: args.podman_images,
        image_programs: own_image_programs(&g.image),
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
    wait_for_stop().await?;
    tracing::info!("stopping: killing pod processes");
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// `--control-plane upstream`: the real control plane with nkvm's node agent.
async fn run_upstream(g: &GlobalArgs, args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let embedded_only = [
        ("--node-taint", !args.node_taints.is_empty()),
        (
            "--service-account-max-token-expiration",
            args.max_token_seconds.is_some(),
        ),
        ("--fault", !args.faults.is_empty()),
        ("--seed-scale", args.seed_scale.is_some()),
    ];
    if let Some((flag, _)) = embedded_only.iter().find(|(_, set)| *set) {
        return Err(invalid(format!("{flag} works only with --control-plane embedded")).into());
    }
    let Some(bin_dir) = args.upstream_bin.clone() else {
        return Err(invalid(
            "--control-plane upstream needs --upstream-bin DIR (or NKVM_UPSTREAM_BIN): build the binaries with scripts/upstream-control-plane.sh, which prints DIR on its last line",
        )
        .into());
    };
    let cluster = UpstreamCluster::start(UpstreamOptions {
        bin_dir,
        state_dir: args.state_dir.clone(),
        listen: args.listen,
        nodes: 2,
        image_programs: own_image_programs(&g.image),
    })
    .await?;
    if let Err(e) = cluster.write_kubeconfig(&args.kubeconfig_out) {
        cluster.shutdown().await;
        return Err(e).with_context(|| {
            format!(
                "writing the kubeconfig to {}",
                args.kubeconfig_out.display()
            )
        });
    }
    tracing::info!(url = cluster.url(), kubeconfig = %args.kubeconfig_out.display(), state_dir = %args.state_dir.display(), "upstream control plane ready");
    let stopped = wait_for_stop().await;
    tracing::info!("stopping: node agents, then the control plane");
    cluster.shutdown().await;
    stopped.map(|()| ExitCode::SUCCESS)
}
