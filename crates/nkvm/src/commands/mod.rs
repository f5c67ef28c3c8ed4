//! One module per subcommand; each turns flags into library calls and renders the result.

pub(crate) mod agent;
mod backup;
mod backups;
mod check;
mod contexts;
mod copy;
#[cfg(feature = "sandbox")]
mod demo;
mod index;
mod policies;
mod pvcs;
mod recover;
mod restore;
#[cfg(feature = "sandbox")]
mod sandbox;
mod scheduling;
#[cfg(not(feature = "sandbox"))]
mod without_sandbox;

pub mod serve;
mod stores;
mod verify;

use crate::cli::{Cli, Command, IndexCommand, PolicyCommand};
use nkvm_domain::FailureKind;
use std::process::ExitCode;

/// A failed operation with its failure kind (decides the exit code).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failed {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened.
    pub error: anyhow::Error,
}

impl Failed {
    /// Wraps an error with its kind.
    pub fn new(kind: FailureKind, error: impl Into<anyhow::Error>) -> Self {
        Failed {
            kind,
            error: error.into(),
        }
    }
}

/// A usage or configuration error: a bad flag, argument or setting (exit code 2).
pub fn invalid(message: impl std::fmt::Display) -> Failed {
    Failed::new(FailureKind::InvalidInput, anyhow::anyhow!("{message}"))
}

/// The exit code for an error that reached `main`.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Failed>() {
        Some(f) => f.kind.exit_code(),
        None => 1,
    }
}

/// Who the command line acts as in the history and the audit log: `cli:$USER`.
pub fn cli_actor() -> String {
    std::env::var("USER")
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into())
}

/// A cancel signal set by Ctrl-C, which first prints `what` happens next.
pub fn cancel_on_ctrl_c(what: &'static str) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling: {what}");
            let _ = tx.send(true);
        }
    });
    rx
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    if reads_history(&cli.command) {
        crate::settings::rebuild_missing_history(g)?;
    }
    match cli.command {
        Command::Contexts(args) => contexts::run(g, args),
        Command::Check(args) => check::run(g, args).await,
        Command::Pvcs(args) => pvcs::run(g, args).await,
        Command::Backup(args) => backup::run(g, args).await,
        Command::Backups(args) => backups::run(g, args),
        Command::Verify(args) => verify::run(g, args).await,
        Command::Copy(args) => copy::run(g, args).await,
        Command::Restore(args) => restore::run(g, args).await,
        Command::Restores(args) => restore::list(g, args),
        Command::Recover(args) => recover::run(g, args).await,
        Command::Index(IndexCommand::Rebuild(args)) => index::rebuild(g, args).await,
        Command::Stores(args) => stores::run(g, args).await,
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => sandbox::run(g, args).await,
        #[cfg(feature = "sandbox")]
        Command::Demo(args) => demo::run(g, args).await,
        #[cfg(not(feature = "sandbox"))]
        Command::Sandbox(args) => without_sandbox::run_sandbox(args).await,
        #[cfg(not(feature = "sandbox"))]
        Command::Demo(args) => without_sandbox::run_demo(g, args).await,
        Command::Serve(args) => serve::run(g, args).await,
        Command::Policies(args) => policies::list(g, args),
        Command::Policy(PolicyCommand::Run(args)) => policies::run_now(g, args).await,
        Command::Prune(args) => policies::prune(g, args).await,
        Command::Delete(args) => policies::delete(g, args).await,
        // `main` runs the agent outside the runtime (a direct upload drives its own).
        Command::Agent(cmd) => Ok(agent::run(cmd)),
    }
}

/// Whether the command opens the history, so a missing database is rebuilt from the store
/// first. `index rebuild` does that itself, and reports it.
fn reads_history(command: &Command) -> bool {
    match command {
        Command::Pvcs(_)
        | Command::Backup(_)
        | Command::Backups(_)
        | Command::Verify(_)
        | Command::Copy(_)
        | Command::Restore(_)
        | Command::Restores(_)
        | Command::Recover(_)
        | Command::Policies(_)
        | Command::Policy(_)
        | Command::Prune(_)
        | Command::Delete(_) => true,
        Command::Contexts(_)
        | Command::Check(_)
        | Command::Index(_)
        | Command::Stores(_)
        | Command::Sandbox(_)
        | Command::Demo(_)
        | Command::Serve(_)
        | Command::Agent(_) => false,
    }
}
