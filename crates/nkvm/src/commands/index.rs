//! `nkvm index rebuild`: adds to the history every archive the store holds that the history
//! does not list, and records as copies the archives of backups it lists in another store
//! (from the manifests; no cluster needed).

use crate::cli::{GlobalArgs, IndexRebuildArgs, Output};
use crate::commands::Failed;
use nkvm_domain::FailureKind;
use nkvm_domain::UserError;
use nkvm_history::History;
use std::process::ExitCode;

/// Rebuilds the index and prints how many rows were added and what could not be listed.
pub async fn rebuild(g: &GlobalArgs, args: IndexRebuildArgs) -> anyhow::Result<ExitCode> {
    let history =
        History::open(&g.db).map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    let store = crate::settings::stores(g)?
        .store(&args.store)
        .map_err(|e| Failed::new(e.kind(), e))?;
    let name = args.store.clone();
    let report = tokio::task::spawn_blocking(move || {
        nkvm_engine::rebuild_index(&name, store.as_ref(), &history)
    })
    .await?
    .map_err(|e| Failed::new(e.kind(), e))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            println!(
                "added {} of {} archives to the history",
                report.added, report.archives
            );
            for id in &report.added_ids {
                println!("added: {id}");
            }
            if report.copies_added > 0 {
                println!(
                    "recorded {} copies of backups the history holds in another store",
                    report.copies_added
                );
            }
            for id in &report.copy_ids {
                println!("copy: {id}");
            }
            for warning in &report.warnings {
                println!("warning: {warning}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
