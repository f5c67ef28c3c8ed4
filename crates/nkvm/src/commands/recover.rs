//! `nkvm recover`: cleans up after nkvm processes that stopped mid-backup (what `serve` does at
//! start-up). Every job the history lists as running is taken to be dead, so this must not run
//! while another nkvm process backs up with the same database.

use crate::cli::{GlobalArgs, Output, RecoverArgs};
use crate::commands::Failed;
use nkvm_domain::UserError;
use std::process::ExitCode;

/// Runs the recovery and prints what it did; exits 1 when something could not be cleaned up.
pub async fn run(g: &GlobalArgs, args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let app = crate::settings::app(g).await?;
    let report = app.recover().await.map_err(|e| Failed::new(e.kind(), e))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            let mut rows: Vec<Vec<String>> = Vec::new();
            let groups = [
                ("interrupted", &report.interrupted),
                ("partial-deleted", &report.partials_deleted),
                ("helper-deleted", &report.helper_pods_deleted),
                ("failed", &report.failures),
            ];
            for (action, items) in groups {
                rows.extend(items.iter().map(|i| vec![action.to_string(), i.clone()]));
            }
            if rows.is_empty() {
                println!("nothing to recover");
            } else {
                print!("{}", crate::table::render(&["ACTION", "WHAT"], &rows));
            }
        }
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
