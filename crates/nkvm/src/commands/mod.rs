//! One module per subcommand; each parses nothing itself and calls into the libraries.

mod sandbox;

use crate::cli::{Cli, Command};
use std::process::ExitCode;

/// A usage or configuration error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Demo(_) => Err(UsageError(
            "`nkvm demo` is not built yet: it arrives with the web UI (issue #7). \
             Meanwhile `nkvm sandbox` runs the sandbox cluster on its own."
                .into(),
        )
        .into()),
    }
}
