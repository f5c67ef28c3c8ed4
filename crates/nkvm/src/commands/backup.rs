//! `nkvm backup NS/PVC...`: runs the backups, shows progress on stderr, prints the results.
//! Ctrl-C cancels cleanly: helper pods are deleted and no partial archive is kept.

use crate::cli::{BackupArgs, GlobalArgs, Output};
use crate::commands::{Failed, cancel_on_ctrl_c, cli_actor, invalid};
use nkvm_domain::UserError;
use nkvm_domain::quantity::human_bytes as human;
use nkvm_domain::{Compression, JobStatus, PvcRef, Stage, Trigger};
use nkvm_engine::archive::CompressionOptions;
use nkvm_engine::{BackupOptions, BackupResult, Progress};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

fn row(r: &BackupResult) -> Vec<String> {
    let detail = if r.status == JobStatus::Succeeded {
        r.artifact.clone()
    } else {
        format!("{} at {}: {}", r.status, r.stage, r.error)
    };
    vec![
        r.id.clone(),
        r.status.to_string(),
        format!("{}/{}", r.namespace, r.pvc),
        human(r.bytes_read),
        human(r.bytes_stored),
        r.sha256.chars().take(12).collect(),
        r.data_path.to_string(),
        detail,
    ]
}

/// The options the flags ask for.
fn options(args: &BackupArgs) -> Result<BackupOptions, Failed> {
    let compression: Compression = args
        .compression
        .parse()
        .map_err(|e: String| invalid(format!("--compression: {e}")))?;
    if args.parallel == 0 {
        return Err(invalid("--parallel must be at least 1"));
    }
    Ok(BackupOptions {
        compression: CompressionOptions {
            compression,
            level: args.level,
            ..Default::default()
        },
        parallel: args.parallel,
        trigger: Trigger::Cli,
        actor: cli_actor(),
        store: args.store.clone(),
    })
}

/// Runs the backups; exits 1 if any failed.
pub async fn run(g: &GlobalArgs, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let claims = args
        .claims
        .iter()
        .map(|c| PvcRef::parse(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let opts = options(&args)?;
    let app = Arc::new(crate::settings::app(g).await?);
    let cancel = cancel_on_ctrl_c("deleting helper pods and discarding partial archives...");
    let (progress_tx, progress_rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(print_progress(progress_rx, std::io::stderr().is_terminal()));
    let results = app
        .backup(&claims, &opts, Some(progress_tx), cancel)
        .await
        .map_err(|e| Failed::new(e.kind(), e))?;
    let _ = printer.await;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = results.iter().map(row).collect();
            let headers = [
                "ID",
                "STATUS",
                "PVC",
                "READ",
                "STORED",
                "SHA256",
                "PATH",
                "ARTIFACT / ERROR",
            ];
            print!("{}", crate::table::render(&headers, &rows));
        }
    }
    Ok(
        if results.iter().all(|r| r.status == JobStatus::Succeeded) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

/// Prints stages and byte rates on a terminal, and each job's end always.
async fn print_progress(mut progress: mpsc::UnboundedReceiver<Progress>, tty: bool) {
    // When each job started streaming, for its average rate.
    let mut streaming_since: HashMap<String, Instant> = HashMap::new();
    while let Some(p) = progress.recv().await {
        match p {
            Progress::Stage { pvc, id, stage } if tty => {
                if stage == Stage::Stream {
                    streaming_since.insert(id.clone(), Instant::now());
                }
                eprintln!("{pvc} [{id}]: {stage}");
            }
            Progress::Bytes { pvc, id, read } if tty => {
                let since = streaming_since
                    .entry(id.clone())
                    .or_insert_with(Instant::now);
                let secs = since.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "{pvc} [{id}]: {} read, {}/s",
                    human(read),
                    human((read as f64 / secs) as u64)
                );
            }
            Progress::Done(r) => {
                eprintln!(
                    "{}/{} [{}]: {} ({} read, {} stored)",
                    r.namespace,
                    r.pvc,
                    r.id,
                    r.status,
                    human(r.bytes_read),
                    human(r.bytes_stored)
                );
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
            }
            _ => {}
        }
    }
}
