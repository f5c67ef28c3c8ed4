//! `nkvm check`: connects for real and reports version, identity and permissions.

use crate::cli::{CheckArgs, GlobalArgs, Output};
use crate::commands::Failed;
use nkvm_domain::UserError;
use std::process::ExitCode;

/// Prints the report; exits 1 when a needed permission is missing.
pub async fn run(g: &GlobalArgs, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let app = crate::settings::app(g).await?;
    let report = app.check().await.map_err(|e| Failed::new(e.kind(), e))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            println!("server:        {} ({})", report.server, report.version);
            println!(
                "auth mode:     {}{}",
                report.auth_mode,
                report
                    .context
                    .as_ref()
                    .map(|c| format!(" (context {c})"))
                    .unwrap_or_default()
            );
            println!(
                "identity:      {}",
                report
                    .identity
                    .as_deref()
                    .unwrap_or("(the server does not answer SelfSubjectReview)")
            );
            println!("cluster id:    {}", report.cluster_id);
            println!("namespaces:    {}", report.allowlist);
            println!(
                "list PVCs cluster-wide: {}",
                if report.list_claims_cluster_wide {
                    "yes"
                } else {
                    "no"
                }
            );
            println!();
            let rows: Vec<Vec<String>> = report
                .grants
                .iter()
                .map(|gr| {
                    let ns = if gr.namespace.is_empty() {
                        "(all)".to_string()
                    } else {
                        gr.namespace.clone()
                    };
                    vec![
                        ns,
                        gr.permission.clone(),
                        if gr.allowed {
                            "yes".into()
                        } else {
                            "NO".into()
                        },
                        gr.purpose.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::table::render(&["NAMESPACE", "PERMISSION", "ALLOWED", "NEEDED FOR"], &rows)
            );
        }
    }
    if report.all_allowed() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "some permissions nkvm needs are missing: apply deploy/k8s/rbac (the runtime ClusterRole bound in each allowed namespace)"
        );
        Ok(ExitCode::from(1))
    }
}
