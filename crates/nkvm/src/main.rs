//! `nkvm`: Kubernetes PVC backup manager. One binary: CLI, web UI and a sandbox cluster.

mod cli;
mod commands;
mod settings;
mod table;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Plain text when captured (the agent's stderr ends up in job errors).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NKVM_LOG").unwrap_or_else(
                |_| // kube logs connection failures that nkvm's own error already explains.
                tracing_subscriber::EnvFilter::new("info,rusqlite_migration=warn,kube_client=off"),
            ),
        )
        .init();
    // One crypto provider for every TLS user in the process (kube, the sandbox), chosen
    // before anything builds a client: two linked providers would make the default ambiguous.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The agent blocks: its pipeline runs on threads of its own, and a direct upload drives
    // its requests on a runtime it builds (one inside another's thread would panic).
    let cli = match cli.command {
        cli::Command::Agent(cmd) => return commands::agent::run(cmd),
        command => cli::Cli { command, ..cli },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
