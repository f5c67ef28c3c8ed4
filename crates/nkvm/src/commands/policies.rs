//! `nkvm policies`, `nkvm policy run`, `nkvm prune` and `nkvm delete`: the policies in force
//! (the file's and the UI's), a policy run now, retention and deleting by hand.

use crate::cli::{DeleteArgs, GlobalArgs, Output, PoliciesArgs, PolicyRunArgs, PruneArgs};
use crate::commands::{Failed, cli_actor, invalid};
use nkvm_domain::{FailureKind, UserError};
use nkvm_engine::policy_set;
use nkvm_engine::workspace::Workspace;
use nkvm_policy::Policy;
use std::process::ExitCode;
use std::sync::Arc;

/// The workspace (history and store; no cluster) the commands here need.
fn workspace(g: &GlobalArgs) -> anyhow::Result<Workspace> {
    let history = Arc::new(crate::settings::open_history(g)?);
    let stores = crate::settings::stores(g)?;
    let settings = crate::settings::engine_settings(g)?;
    Ok(Workspace::new(history, stores.local_store(), settings).with_stores(stores))
}

/// The policies in force: the policy file's and the UI's.
pub fn load_policies(g: &GlobalArgs, ws: &Workspace) -> Result<Vec<Policy>, Failed> {
    policy_set::load(
        g.policies_file.as_deref(),
        ws.history(),
        &ws.settings().allowlist,
        &ws.stores().names(),
    )
    .map_err(|e| Failed::new(e.kind(), e))
}

/// `nkvm policies`.
pub fn list(g: &GlobalArgs, args: PoliciesArgs) -> anyhow::Result<ExitCode> {
    let ws = workspace(g)?;
    let policies = load_policies(g, &ws)?;
    let now = chrono::Utc::now();
    let views: Vec<_> = policies
        .iter()
        .map(|p| policy_set::view(p, now, args.next.max(1)))
        .collect();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&views)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        format!("{:?}", v.source).to_lowercase(),
                        format!("{} ({})", v.schedule, v.timezone),
                        v.namespaces.join(","),
                        v.selector.clone(),
                        v.store.clone(),
                        v.next_runs.first().cloned().unwrap_or_default(),
                    ]
                })
                .collect();
            let headers = [
                "NAME",
                "SOURCE",
                "SCHEDULE",
                "NAMESPACES",
                "SELECTOR",
                "STORE",
                "NEXT RUN (UTC)",
            ];
            print!("{}", crate::table::render(&headers, &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nkvm prune`.
pub async fn prune(g: &GlobalArgs, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let ws = workspace(g)?;
    let mut policies = load_policies(g, &ws)?;
    if let Some(only) = &args.policy {
        policies.retain(|p| &p.name == only);
        if policies.is_empty() {
            return Err(Failed::new(
                FailureKind::NotFound,
                anyhow::anyhow!("no policy {only:?}; list them with `nkvm policies`"),
            )
            .into());
        }
    }
    let plan = ws
        .plan_prune(&policies)
        .map_err(|e| Failed::new(e.kind(), e))?;
    if args.dry_run {
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            Output::Table => print_plan(&plan),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = ws.prune(&plan, &cli_actor()).await;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            for id in &report.deleted {
                println!("deleted {id}");
            }
            for (id, why) in &report.failed {
                println!("FAILED {id}: {why}");
            }
            println!(
                "{} deleted, {} failed, {} kept",
                report.deleted.len(),
                report.failed.len(),
                plan.items.len() - plan.deletions().count()
            );
        }
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_plan(plan: &nkvm_engine::retention::PrunePlan) {
    let rows: Vec<Vec<String>> = plan
        .items
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.policy.clone(),
                format!("{}/{}", i.namespace, i.pvc),
                i.finished_at.clone(),
                i.decision.clone(),
                i.rule.clone(),
            ]
        })
        .collect();
    let headers = ["ID", "POLICY", "PVC", "FINISHED", "DECISION", "RULE"];
    print!("{}", crate::table::render(&headers, &rows));
    for name in &plan.keeps_everything {
        println!("policy {name} has no retention: it keeps every backup");
    }
}

/// `nkvm delete ID`.
pub async fn delete(g: &GlobalArgs, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    if args.id.trim().is_empty() {
        return Err(invalid("give the id of the backup to delete (see `nkvm backups`)").into());
    }
    let ws = workspace(g)?;
    let deleted = ws
        .delete_backup(&args.id, &cli_actor(), "by hand")
        .await
        .map_err(|e| Failed::new(e.kind(), e))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&deleted)?),
        Output::Table => println!(
            "deleted backup {} of {}/{}{}",
            deleted.id,
            deleted.namespace,
            deleted.pvc,
            if deleted.archive_was_missing {
                " (its archive was already gone from the store)"
            } else {
                ""
            }
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The directory of the kubeconfigs policies' clusters come from (`NKVM_KUBECONFIG_DIR`, as
/// for `nkvm serve`).
fn remote_dir() -> std::path::PathBuf {
    std::env::var_os("NKVM_KUBECONFIG_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| nkvm_web::DEFAULT_KUBECONFIG_DIR.into(), Into::into)
}

/// An engine on the cluster a policy names: a context of a kubeconfig below the remote
/// directory, as the scheduler connects to it.
async fn policy_cluster(ws: &Workspace, cluster: &str) -> anyhow::Result<Arc<nkvm_engine::App>> {
    let dir = remote_dir();
    let found = nkvm_engine::policy_book::remote_contexts(&dir)
        .into_iter()
        .find(|c| c.name == cluster)
        .ok_or_else(|| {
            Failed::new(
                FailureKind::NotFound,
                anyhow::anyhow!(
                    "the policy's cluster {cluster:?} is not a context of a kubeconfig below {} (set NKVM_KUBECONFIG_DIR)",
                    dir.display()
                ),
            )
        })?;
    let mut opts =
        nkvm_engine::session::ConnectOptions::new(nkvm_engine::session::AuthMode::Kubeconfig);
    opts.kubeconfig = Some(found.kubeconfig);
    opts.context = Some(found.name);
    ws.connect(opts)
        .await
        .map_err(|e| Failed::new(e.kind(), e).into())
}

/// `nkvm policy run NAME`: runs the policy now (its claims, skips and retention, as the
/// scheduler would), waits and prints each claim's result; exits 1 if any backup failed.
pub async fn run_now(g: &GlobalArgs, args: PolicyRunArgs) -> anyhow::Result<ExitCode> {
    let ws = workspace(g)?;
    let policy = load_policies(g, &ws)?
        .into_iter()
        .find(|p| p.name == args.name)
        .ok_or_else(|| {
            Failed::new(
                FailureKind::NotFound,
                anyhow::anyhow!("no policy {:?}; list them with `nkvm policies`", args.name),
            )
        })?;
    let app = match &policy.cluster {
        None => Arc::new(crate::settings::app(g).await?),
        Some(cluster) => policy_cluster(&ws, cluster).await?,
    };
    let jobs = nkvm_engine::jobs::Jobs::default();
    let slot = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let report = app
        .run_policy(&jobs, &policy, &slot)
        .await
        .map_err(|e| Failed::new(e.kind(), e))?;
    nkvm_engine::scheduler::record_manual_run(ws.history(), &report);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = report
                .claims
                .iter()
                .map(|c| {
                    vec![
                        format!("{}/{}", c.namespace, c.pvc),
                        c.result.clone(),
                        c.backup_id.clone(),
                        nkvm_domain::quantity::human_bytes(c.bytes_stored),
                        if c.error.is_empty() {
                            String::new()
                        } else {
                            format!("{}: {}", c.stage, c.error)
                        },
                    ]
                })
                .collect();
            let headers = ["PVC", "RESULT", "BACKUP", "STORED", "ERROR / REASON"];
            print!("{}", crate::table::render(&headers, &rows));
            if !report.pruned.deleted.is_empty() {
                println!("retention deleted: {}", report.pruned.deleted.join(", "));
            }
        }
    }
    Ok(if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
