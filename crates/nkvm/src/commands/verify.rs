//! `nkvm verify ID`: re-reads a stored backup without touching the cluster (an age-encrypted
//! one by its stored hash, or decrypted and checked whole with `--deep`).

use crate::cli::{GlobalArgs, Output, VerifyArgs};
use crate::commands::{Failed, invalid};
use nkvm_domain::UserError;
use nkvm_domain::{BackupId, FailureKind};
use nkvm_engine::verify::{VerifyOptions, verify};
use nkvm_history::History;
use std::process::ExitCode;

/// Verifies the backup; exits 1 when it is damaged or missing.
pub async fn run(g: &GlobalArgs, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let id: BackupId = args.id.parse().map_err(invalid)?;
    let history =
        History::open(&g.db).map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    let stores = crate::settings::stores(g)?;
    let opts = VerifyOptions {
        deep: args.deep,
        identity_file: g.identity.clone(),
        store: args.store.clone(),
    };
    let report = tokio::task::spawn_blocking(move || verify(&stores, &history, &id, &opts))
        .await?
        .map_err(|e| Failed::new(e.kind(), e))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table if !report.contents_checked => println!(
            "ok: {} in store {} ({} bytes stored, sha256 {}); encrypted with age: its contents were not checked (verify --deep with --identity does)",
            report.artifact, report.store, report.bytes_stored, report.sha256
        ),
        Output::Table => println!(
            "ok: {} in store {} ({} bytes stored, sha256 {}, {} tar bytes in {} entries)",
            report.artifact,
            report.store,
            report.bytes_stored,
            report.sha256,
            report.tar_bytes,
            report.entries
        ),
    }
    Ok(ExitCode::SUCCESS)
}
