//! `nkvm restore ID --to NS/PVC`: plans (printing what will happen, or why not), then runs
//! the plan with progress on a TTY; `--dry-run` stops after the plan. `nkvm restores` lists
//! the restore history. Ctrl-C cancels: the helper pod is deleted and the restore recorded
//! as cancelled.

use crate::cli::{GlobalArgs, Output, RestoreArgs, RestoresArgs};
use crate::commands::{Failed, cancel_on_ctrl_c, cli_actor, invalid};
use nkvm_domain::UserError;
use nkvm_domain::quantity::human_bytes as human;
use nkvm_domain::{FailureKind, JobStatus, PvcRef, Trigger};
use nkvm_engine::{Progress, RestoreOptions, RestorePlan, RestoreRequest};
use nkvm_history::RestoreFilter;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How a job moves bytes, for people.
pub(crate) fn path_label(path: nkvm_engine::agent::DataPath) -> &'static str {
    match path {
        // Restores never upload; the agent path is the one that applies.
        nkvm_engine::agent::DataPath::Agent | nkvm_engine::agent::DataPath::Direct => {
            "agent (nkvm in the helper pod checks and decompresses)"
        }
        nkvm_engine::agent::DataPath::Tar => "tar (generic helper image; nkvm decompresses)",
    }
}

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
        "\n  helper on {}, data path {}\n",
        if plan.node.is_empty() {
            "the node the scheduler picks"
        } else {
            &plan.node
        },
        path_label(plan.data_path)
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
    let request = request(&args)?;
    let app = Arc::new(crate::settings::app(g).await?);
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
        let refused = plan.refusal_kind.unwrap_or(FailureKind::Conflict);
        return Ok(if plan.runnable() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(refused.exit_code())
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
    let cancel = cancel_on_ctrl_c("deleting the helper pod...");
    let (progress_tx, progress_rx) = mpsc::unbounded_channel();
    let tty = std::io::stderr().is_terminal();
    let printer = tokio::spawn(print_progress(progress_rx, tty, plan.source.tar_bytes));
    let opts = RestoreOptions {
        trigger: Trigger::Cli,
        actor: cli_actor(),
    };
    let result = app
        .run_restore(&plan, &opts, Some(progress_tx), cancel)
        .await;
    let _ = printer.await;
    let succeeded = result.status == JobStatus::Succeeded;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else if succeeded {
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
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The restore the flags ask for.
fn request(args: &RestoreArgs) -> Result<RestoreRequest, Failed> {
    let target = PvcRef::parse(&args.to).map_err(|e| invalid(format!("--to: {e}")))?;
    if let Some(size) = &args.size {
        nkvm_domain::quantity::parse_bytes(size).map_err(|e| invalid(format!("--size: {e}")))?;
    }
    Ok(RestoreRequest {
        backup_id: args.id.clone(),
        target,
        create: args.create,
        storage_class: args.storage_class.clone(),
        size: args.size.clone(),
        clean: args.clean,
        force: args.force,
        keep_privileged: args.keep_privileged,
    })
}

/// Prints stages and bytes written (of `total`) on a terminal.
async fn print_progress(mut progress: mpsc::UnboundedReceiver<Progress>, tty: bool, total: u64) {
    let total = total.max(1);
    while let Some(p) = progress.recv().await {
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
                        r.status.to_string(),
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
