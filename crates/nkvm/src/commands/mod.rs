//! One module per subcommand; each turns flags into library calls and renders the result.

mod backup;
mod backups;
mod check;
mod contexts;
mod demo;
mod index;
mod pvcs;
mod recover;
mod restore;
mod sandbox;
pub mod serve;
mod verify;

use crate::cli::{Cli, Command, IndexCommand};
use nkvm_domain::FailureKind;
use std::process::ExitCode;

/// A usage or configuration error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

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

/// The exit code for an error that reached `main`.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else if let Some(f) = e.downcast_ref::<Failed>() {
        f.kind.exit_code()
    } else {
        1
    }
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    if reads_history(&cli.command) {
        crate::settings::restore_missing_history(g)?;
    }
    match cli.command {
        Command::Contexts(args) => contexts::run(g, args),
        Command::Check(args) => check::run(g, args).await,
        Command::Pvcs(args) => pvcs::run(g, args).await,
        Command::Backup(args) => backup::run(g, args).await,
        Command::Backups(args) => backups::run(g, args),
        Command::Verify(args) => verify::run(g, args).await,
        Command::Restore(args) => restore::run(g, args).await,
        Command::Restores(args) => restore::list(g, args),
        Command::Recover(args) => recover::run(g, args).await,
        Command::Index(IndexCommand::Rebuild(args)) => index::rebuild(g, args).await,
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Demo(args) => demo::run(g, args).await,
        Command::Serve(args) => serve::run(g, args).await,
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
        | Command::Restore(_)
        | Command::Restores(_)
        | Command::Recover(_) => true,
        Command::Contexts(_)
        | Command::Check(_)
        | Command::Index(_)
        | Command::Sandbox(_)
        | Command::Demo(_)
        | Command::Serve(_) => false,
    }
}
