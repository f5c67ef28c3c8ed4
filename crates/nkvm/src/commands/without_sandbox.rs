//! `nkvm sandbox` and `nkvm demo` in a binary built without the `sandbox` feature: both say
//! so and how to get them, instead of failing in some less clear way.

use crate::cli::{DemoArgs, GlobalArgs, SandboxArgs};
use crate::commands::invalid;
use std::process::ExitCode;

fn missing(command: &str) -> anyhow::Error {
    invalid(format!(
        "`nkvm {command}` needs the embedded sandbox cluster, and this nkvm was built without it \
         (cargo feature `sandbox`); use a build with default features (`cargo build --release`)"
    ))
    .into()
}

/// Refuses `nkvm sandbox`.
pub async fn run_sandbox(_args: SandboxArgs) -> anyhow::Result<ExitCode> {
    Err(missing("sandbox"))
}

/// Refuses `nkvm demo`.
pub async fn run_demo(_g: &GlobalArgs, _args: DemoArgs) -> anyhow::Result<ExitCode> {
    Err(missing("demo"))
}
