//! `nkvm backup NS/PVC...`: runs the backups, shows progress on stderr, prints the results.
//! Ctrl-C cancels cleanly: helper pods are deleted and no partial archive is kept.

use crate::cli::{BackupArgs, GlobalArgs, Output};
use crate::commands::{Failed, UsageError};
use nkvm_domain::{Compression, PvcRef};
use nkvm_engine::archive::CompressionOptions;
use nkvm_engine::{BackupOptions, BackupResult, Progress};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn row(r: &BackupResult) -> Vec<String> {
    let detail = if r.status == "succeeded" {
        r.artifact.clone()
    } else {
        format!("{} at {}: {}", r.status, r.stage, r.error)
    };
    vec![
        r.id.clone(),
        r.status.clone(),
        format!("{}/{}", r.namespace, r.pvc),
        human(r.bytes_read),
        human(r.bytes_stored),
        r.sha256.chars().take(12).collect(),
        detail,
    ]
}

/// Runs the backups; exits 1 if any failed.
pub async fn run(g: &GlobalArgs, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let claims = args
        .claims
        .iter()
        .map(|c| PvcRef::parse(c).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError)?;
    let compression: Compression = args
        .compression
        .parse()
        .map_err(|e: String| UsageError(format!("--compression: {e}")))?;
    if args.parallel == 0 {
        return Err(UsageError("--parallel must be at least 1".into()).into());
    }
    let app = Arc::new(crate::settings::app(g).await?);
    let opts = BackupOptions {
        compression: CompressionOptions {
            compression,
            level: args.level,
            ..Default::default()
        },
        parallel: args.parallel,
        trigger: "cli".into(),
        actor: std::env::var("USER")
            .map(|u| format!("cli:{u}"))
            .unwrap_or_else(|_| "cli".into()),
    };
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling: deleting helper pods and discarding partial archives...");
            let _ = cancel_tx.send(true);
        }
    });
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
    let tty = std::io::stderr().is_terminal();
    let printer = tokio::spawn(async move {
        // When each job started streaming, for its average rate.
        let mut streaming_since: std::collections::HashMap<String, std::time::Instant> =
            Default::default();
        while let Some(p) = progress_rx.recv().await {
            match p {
                Progress::Stage { pvc, id, stage } if tty => {
                    if stage == "stream" {
                        streaming_since.insert(id.clone(), std::time::Instant::now());
                    }
                    eprintln!("{pvc} [{id}]: {stage}");
                }
                Progress::Bytes { pvc, id, read } if tty => {
                    let since = streaming_since
                        .entry(id.clone())
                        .or_insert_with(std::time::Instant::now);
                    let secs = since.elapsed().as_secs_f64().max(0.001);
                    eprintln!(
                        "{pvc} [{id}]: {} read, {}/s",
                        human(read),
                        human((read as f64 / secs) as u64)
                    );
                }
                Progress::Done(r) => eprintln!(
                    "{}/{} [{}]: {} ({} read, {} stored)",
                    r.namespace,
                    r.pvc,
                    r.id,
                    r.status,
                    human(r.bytes_read),
                    human(r.bytes_stored)
                ),
                _ => {}
            }
        }
    });
    let results = app
        .backup(&claims, &opts, Some(progress_tx), cancel_rx)
        .await
        .map_err(|e| Failed::new(e.kind(), e))?;
    let _ = printer.await;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = results.iter().map(row).collect();
            print!(
                "{}",
                crate::table::render(
                    &[
                        "ID",
                        "STATUS",
                        "PVC",
                        "READ",
                        "STORED",
                        "SHA256",
                        "ARTIFACT / ERROR"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(if results.iter().all(|r| r.status == "succeeded") {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
