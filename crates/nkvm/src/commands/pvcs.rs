//! `nkvm pvcs`: the PVC inventory.

use crate::cli::{GlobalArgs, Output, PvcsArgs};
use crate::commands::{Failed, invalid};
use nkvm_domain::UserError;
use nkvm_domain::{PvcRecord, ResourceName};
use nkvm_engine::Scope;
use std::process::ExitCode;

fn row(r: &PvcRecord) -> Vec<String> {
    let consumers = if r.consumers.is_empty() {
        "-".to_string()
    } else {
        r.consumers
            .iter()
            .map(|c| {
                if c.node.is_empty() {
                    c.pod.clone()
                } else {
                    format!("{}@{}", c.pod, c.node)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        r.namespace.clone(),
        r.name.clone(),
        r.phase.clone(),
        r.capacity.clone(),
        if r.storage_class.is_empty() {
            "-".into()
        } else {
            r.storage_class.clone()
        },
        r.access_modes
            .iter()
            .map(|m| nkvm_domain::short_access_mode(m))
            .collect::<Vec<_>>()
            .join(","),
        r.owner.display(),
        consumers,
        r.last_successful_backup
            .clone()
            .unwrap_or_else(|| "never".into()),
        if r.backupable {
            "yes".into()
        } else {
            format!("no: {}", r.reason)
        },
    ]
}

/// Prints the inventory of the chosen scope.
pub async fn run(g: &GlobalArgs, args: PvcsArgs) -> anyhow::Result<ExitCode> {
    let scope = match &args.namespace {
        Some(ns) => {
            Scope::Namespace(ResourceName::namespace(ns).map_err(|e| invalid(e.to_string()))?)
        }
        None => Scope::AllAllowed,
    };
    let app = crate::settings::app(g).await?;
    let records = app
        .inventory(&scope)
        .await
        .map_err(|e| Failed::new(e.kind(), e))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&records)?),
        Output::Table => {
            if records.is_empty() {
                eprintln!("no PVCs found");
                return Ok(ExitCode::SUCCESS);
            }
            // Which data path jobs will take, beside the inventory they would act on.
            let settings = app.settings();
            eprintln!(
                "helper image {}: data path {}",
                settings.helper_image,
                super::restore::path_label(settings.data_path())
            );
            let direct: Vec<&str> = app
                .stores()
                .all()
                .iter()
                .filter(|s| s.store.direct_uploads())
                .map(|s| s.name.as_str())
                .collect();
            if settings.data_path() == nkvm_engine::agent::DataPath::Agent && !direct.is_empty() {
                eprintln!(
                    "backups to {} take the direct path: the agent uploads to the store itself",
                    direct.join(", ")
                );
            }
            let rows: Vec<Vec<String>> = records.iter().map(row).collect();
            print!(
                "{}",
                crate::table::render(
                    &[
                        "NAMESPACE",
                        "NAME",
                        "STATUS",
                        "CAPACITY",
                        "CLASS",
                        "ACCESS",
                        "OWNER",
                        "CONSUMERS",
                        "LAST BACKUP",
                        "BACKUP"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
