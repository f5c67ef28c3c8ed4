//! `nkvm verify ID`: re-reads a stored backup without touching the cluster.

use crate::cli::{GlobalArgs, Output, VerifyArgs};
use crate::commands::{Failed, invalid};
use nkvm_domain::UserError;
use nkvm_domain::{BackupId, FailureKind};
use nkvm_history::History;
use std::process::ExitCode;

/// Verifies the backup; exits 1 when it is damaged or missing.
pub async fn run(g: &GlobalArgs, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let id: BackupId = args.id.parse().map_err(invalid)?;
    let history =
        History::open(&g.db).map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    let stores = crate::settings::stores(g)?;
    let report =
        tokio::task::spawn_blocking(move || nkvm_engine::verify::verify(&stores, &history, &id))
            .await?
            .map_err(|e| Failed::new(e.kind(), e))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => println!(
            "ok: {} ({} bytes stored, sha256 {}, {} tar bytes in {} entries)",
            report.artifact, report.bytes_stored, report.sha256, report.tar_bytes, report.entries
        ),
    }
    Ok(ExitCode::SUCCESS)
}
