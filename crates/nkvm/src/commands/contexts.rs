//! `nkvm contexts`: the kubeconfig's contexts, read without connecting.

use crate::cli::{ContextsArgs, GlobalArgs, Output};
use crate::commands::invalid;
use std::process::ExitCode;

/// Prints the contexts, the current one marked `*`.
pub fn run(g: &GlobalArgs, args: ContextsArgs) -> anyhow::Result<ExitCode> {
    let (kc, source) =
        nkvm_kube::kubeconfig::read(g.kubeconfig.as_deref()).map_err(|e| invalid(e.to_string()))?;
    let contexts = nkvm_kube::kubeconfig::contexts(&kc);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&contexts)?),
        Output::Table => {
            if contexts.is_empty() {
                eprintln!("no contexts in {source}");
            }
            let rows: Vec<Vec<String>> = contexts
                .iter()
                .map(|c| {
                    vec![
                        if c.current { "*".into() } else { String::new() },
                        c.name.clone(),
                        c.cluster.clone(),
                        c.server.clone(),
                        c.user.clone(),
                        c.namespace.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::table::render(
                    &[
                        "CURRENT",
                        "NAME",
                        "CLUSTER",
                        "SERVER",
                        "AUTHINFO",
                        "NAMESPACE"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
