//! `nkvm backups`: the history, newest first (reads the database only).

use crate::cli::{BackupsArgs, GlobalArgs, Output};
use crate::commands::Failed;
use nkvm_domain::FailureKind;
use nkvm_history::{BackupFilter, History};
use serde::Serialize;
use std::process::ExitCode;

/// One history row in the CLI/API JSON shape.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    id: String,
    status: String,
    cluster: String,
    namespace: String,
    pvc: String,
    pvc_uid: String,
    started_at: String,
    finished_at: Option<String>,
    bytes_read: u64,
    bytes_stored: u64,
    sha256: String,
    compression: String,
    artifact: String,
    stage: String,
    error: String,
}

/// Prints the history.
pub fn run(g: &GlobalArgs, args: BackupsArgs) -> anyhow::Result<ExitCode> {
    let history =
        History::open(&g.db).map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    let filter = BackupFilter {
        cluster: None,
        namespace: args.namespace.clone(),
        pvc: args.pvc.clone(),
        limit: Some(args.limit),
    };
    let rows = history
        .list_backups(&filter)
        .map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    match args.output {
        Output::Json => {
            let listed: Vec<Listed> = rows
                .into_iter()
                .map(|r| Listed {
                    id: r.id,
                    status: r.status,
                    cluster: r.cluster,
                    namespace: r.namespace,
                    pvc: r.pvc,
                    pvc_uid: r.pvc_uid,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                    bytes_read: r.bytes_read,
                    bytes_stored: r.bytes_stored,
                    sha256: r.sha256,
                    compression: r.compression,
                    artifact: r.artifact,
                    stage: r.stage,
                    error: r.error,
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&listed)?);
        }
        Output::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let detail = if r.status == "succeeded" {
                        r.artifact.clone()
                    } else {
                        format!("{}: {}", r.stage, r.error)
                    };
                    vec![
                        r.id.clone(),
                        r.status.clone(),
                        r.namespace.clone(),
                        r.pvc.clone(),
                        r.started_at.clone(),
                        r.bytes_stored.to_string(),
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
                        "ARTIFACT / ERROR"
                    ],
                    &table
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
