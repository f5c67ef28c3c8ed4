//! `nkvm restore ID --to NS/PVC`: plans (printing what will happen, or why not), then runs
//! the plan with progress on a TTY; `--dry-run` stops after the plan. `nkvm restores` lists
//! the restore history. Ctrl-C cancels: the helper pod is deleted and the restore recorded
//! as cancelled.

use super::backup::human;
use crate::cli::{GlobalArgs, Output, RestoreArgs, RestoresArgs};
use crate::commands::{Failed, UsageError};
use nkvm_domain::{FailureKind, PvcRef};
use nkvm_engine::{Progress, RestoreOptions, RestorePlan, RestoreRequest};
use nkvm_history::RestoreFilter;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

fn describe(plan: &RestorePlan) -> String {
    let mut out = format!(
        "restore {} ({}/{} taken {}, {} in {} members, sha256 {})\n  into {}/{}",
        plan.backup_id,
        plan.source.namespace,
        plan.source.pvc,
        plan.source.started_at,
        human(plan.source.tar_bytes),
        plan.source.members,
        plan.source.sha256.chars().take(12).collect::<String>(),
        plan.target.namespace,
        plan.target.pvc,
    );
    match &plan.new_claim {
        Some(c) => out.push_str(&format!(
            " (created: {}, class {}, {})",
            c.size,
            if c.storage_class.is_empty() {
                "default"
            } else {
                &c.storage_class
            },
            c.access_modes.join(",")
        )),
        None => out.push_str(&format!(" (existing, {})", plan.target_capacity)),
    }
    out.push_str(&format!(
        "\n  helper on {}\n",
        if plan.node.is_empty() {
            "the node the scheduler picks"
        } else {
            &plan.node
        }
    ));
    for w in &plan.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    for r in &plan.refusals {
        out.push_str(&format!("  refused: {r}\n"));
    }
    out
}

/// Plans and (unless `--dry-run`) runs a restore; exits 1 when refused or failed.
pub async fn run(g: &GlobalArgs, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let target = PvcRef::parse(&args.to).map_err(|e| UsageError(format!("--to: {e}")))?;
    if let Some(size) = &args.size {
        nkvm_domain::quantity::parse_bytes(size).map_err(|e| UsageError(format!("--size: {e}")))?;
    }
    let app = Arc::new(crate::settings::app(g).await?);
    let request = RestoreRequest {
        backup_id: args.id.clone(),
        target,
        create: args.create,
        storage_class: args.storage_class.clone(),
        size: args.size.clone(),
        clean: args.clean,
        force: args.force,
    };
    let plan = app
        .plan_restore(&request)
        .await
        .map_err(|e| Failed::new(e.kind(), e))?;
    let json = args.output == Output::Json;
    if args.dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", describe(&plan));
        }
        return Ok(if plan.runnable() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(
                plan.refusal_kind
                    .unwrap_or(FailureKind::Conflict)
                    .exit_code(),
            )
        });
    }
    if !json {
        eprint!("{}", describe(&plan));
    }
    if !plan.runnable() {
        return Err(Failed::new(
            plan.refusal_kind.unwrap_or(FailureKind::Conflict),
            anyhow::anyhow!("restore refused: {}", plan.refusals.join("; ")),
        )
        .into());
    }
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling: deleting the helper pod...");
            let _ = cancel_tx.send(true);
        }
    });
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
    let tty = std::io::stderr().is_terminal();
    let total = plan.source.tar_bytes.max(1);
    let printer = tokio::spawn(async move {
        while let Some(p) = progress_rx.recv().await {
            match p {
                Progress::Stage { pvc, stage, .. } if tty => eprintln!("{pvc}: {stage}"),
                Progress::Bytes { pvc, read, .. } if tty => eprintln!(
                    "{pvc}: {} of {} written ({}%)",
                    human(read),
                    human(total),
                    read * 100 / total
                ),
                _ => {}
            }
        }
    });
    let opts = RestoreOptions {
        trigger: "cli".into(),
        actor: std::env::var("USER")
            .map(|u| format!("cli:{u}"))
            .unwrap_or_else(|_| "cli".into()),
    };
    let result = app
        .run_restore(&plan, &opts, Some(progress_tx), cancel_rx)
        .await;
    let _ = printer.await;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else if result.status == "succeeded" {
        println!(
            "{} {} {}/{}: {} written",
            result.id,
            result.status,
            result.target.namespace,
            result.target.pvc,
            human(result.bytes_written)
        );
    } else {
        println!(
            "{} {} at {}: {}",
            result.id, result.status, result.stage, result.error
        );
    }
    Ok(if result.status == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints the restore history.
pub fn list(g: &GlobalArgs, args: RestoresArgs) -> anyhow::Result<ExitCode> {
    let history = crate::settings::open_history(g)?;
    let rows = history
        .list_restores(&RestoreFilter {
            namespace: args.namespace,
            pvc: args.pvc,
            ..Default::default()
        })
        .map_err(|e| Failed::new(FailureKind::StorageUnavailable, e))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.status.clone(),
                        r.backup_id.clone(),
                        format!("{}/{}", r.namespace, r.pvc),
                        r.started_at.clone(),
                        human(r.bytes_written),
                        if r.error.is_empty() {
                            String::new()
                        } else {
                            format!("{}: {}", r.stage, r.error)
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::table::render(
                    &[
                        "ID", "STATUS", "BACKUP", "TARGET", "STARTED", "WRITTEN", "ERROR"
                    ],
                    &table
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
