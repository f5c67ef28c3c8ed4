//! `nkvm backups`: the history, newest first (reads the database only). JSON rows carry the
//! backup shape of the CLI contract plus trigger, actor, failureKind, helperPod, node and
//! dataPath (the table's PATH: `agent`, `direct` or `tar`, `-` when not known);
//! the table shows sizes for people, JSON exact bytes, and each row's `copies` in other
//! stores.

use crate::cli::{BackupsArgs, GlobalArgs, Output};
use crate::commands::Failed;
use nkvm_domain::quantity::human_bytes;
use nkvm_domain::{FailureKind, JobStatus};
use nkvm_history::{BackupFilter, History};
use std::process::ExitCode;

/// Prints the history.
pub fn run(g: &GlobalArgs, args: BackupsArgs) -> anyhow::Result<ExitCode> {
    let history =
        History::open(&g.db).map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    let filter = BackupFilter {
        cluster: None,
        namespace: args.namespace.clone(),
        pvc: args.pvc.clone(),
        limit: Some(args.limit),
        ..Default::default()
    };
    let rows = history
        .list_backups(&filter)
        .map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&with_copies(&history, &rows)?)?
        ),
        Output::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let detail = if r.status == JobStatus::Succeeded {
                        r.artifact.clone()
                    } else {
                        format!("{}: {}", r.stage, r.error)
                    };
                    vec![
                        r.id.clone(),
                        r.status.to_string(),
                        r.namespace.clone(),
                        r.pvc.clone(),
                        r.started_at.clone(),
                        human_bytes(r.bytes_stored),
                        shown_data_path(&r.data_path).to_string(),
                        detail,
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::table::render(
                    &[
                        "ID",
                        "STATUS",
                        "NAMESPACE",
                        "PVC",
                        "STARTED",
                        "STORED",
                        "PATH",
                        "ARTIFACT / ERROR"
                    ],
                    &table
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The data path column: `agent`, `direct`, `tar`, or `-` where the history does not know it
/// (rows from before it was recorded, rows rebuilt from manifests).
fn shown_data_path(path: &str) -> &str {
    if path.is_empty() { "-" } else { path }
}

/// The rows as JSON, each with `copies`: the other stores holding the backup (`nkvm copy`).
fn with_copies(
    history: &History,
    rows: &[nkvm_history::BackupRow],
) -> anyhow::Result<Vec<serde_json::Value>> {
    rows.iter()
        .map(|row| {
            let mut value = serde_json::to_value(row)?;
            let copies = history
                .copies(&row.id)
                .map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
            value["copies"] = serde_json::to_value(copies)?;
            Ok(value)
        })
        .collect()
}
