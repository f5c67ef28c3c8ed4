//! `nkvm copy ID --to STORE`: copies a backup's archive and manifest to another store as a job
//! (audited, recorded among the backup's copies), checked by hash on arrival. Ctrl-C cancels;
//! nothing is stored then. Needs no cluster: it reads and writes stores and the history only.

use crate::cli::{CopyArgs, GlobalArgs, Output};
use crate::commands::{Failed, cancel_on_ctrl_c, cli_actor};
use nkvm_domain::JobStatus;
use nkvm_domain::quantity::human_bytes;
use nkvm_engine::CopyOptions;
use std::process::ExitCode;
use std::sync::Arc;

/// Copies the backup; exits with the failure's code when the copy did not succeed.
pub async fn run(g: &GlobalArgs, args: CopyArgs) -> anyhow::Result<ExitCode> {
    let app = Arc::new(crate::settings::app_without_cluster(g)?);
    let opts = CopyOptions {
        backup_id: args.id.clone(),
        to: args.to.clone(),
        actor: cli_actor(),
    };
    let cancel = cancel_on_ctrl_c("stopping the copy; nothing is stored");
    let r = app.copy_backup(&opts, None, cancel).await;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        Output::Table if r.status == JobStatus::Succeeded => println!(
            "copied {} from store {} to store {}: {} ({}, sha256 {}{})",
            r.backup_id,
            r.from_store,
            r.to_store,
            r.artifact,
            human_bytes(r.bytes),
            r.sha256,
            if r.encrypted {
                ", encrypted with age"
            } else {
                ""
            }
        ),
        Output::Table => {}
    }
    match (r.status, r.failure_kind) {
        (JobStatus::Succeeded, _) => Ok(ExitCode::SUCCESS),
        (_, kind) => Err(Failed::new(
            kind.unwrap_or(nkvm_domain::FailureKind::Internal),
            anyhow::anyhow!(
                "copy of backup {} failed at stage {}: {}",
                r.backup_id,
                r.stage,
                r.error
            ),
        )
        .into()),
    }
}
