//! `nkvm stores [--check]`: the named archive stores, and with `--check` whether each one
//! takes a write (reachable, credentials accepted, a probe object written, read back and
//! deleted). Exits 1 when a checked store fails.

use crate::cli::{GlobalArgs, Output, StoresArgs};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

/// How long `--check` waits for one store's probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// One store as listed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StoreStatus {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    location: String,
    /// `ok`, `failed`, or `unchecked` without --check.
    health: &'static str,
    /// What the check found ("" when unchecked).
    detail: String,
    /// The age public keys archives are encrypted to (absent: stored in the clear).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    age_recipients: Vec<String>,
    /// Whether helper pods of nkvm's own image upload archives to it themselves.
    direct_uploads: bool,
}

/// Lists the stores, checking each with `--check`.
pub async fn run(g: &GlobalArgs, args: StoresArgs) -> anyhow::Result<ExitCode> {
    let stores = crate::settings::stores(g)?;
    // Probes run at once, each bounded; results come back in the stores' order.
    let health = if args.check {
        nkvm_engine::store_health::check_all(&stores, PROBE_TIMEOUT)
            .await
            .into_iter()
            .map(|h| (if h.ok { "ok" } else { "failed" }, h.detail))
            .collect()
    } else {
        vec![("unchecked", String::new()); stores.all().len()]
    };
    let statuses: Vec<StoreStatus> = stores
        .all()
        .iter()
        .zip(health)
        .map(|(named, (health, detail))| StoreStatus {
            name: named.name.clone(),
            kind: named.kind.as_str(),
            location: named.location.clone(),
            health,
            detail,
            age_recipients: named.store.age_recipients(),
            direct_uploads: named.store.direct_uploads(),
        })
        .collect();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&statuses)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = statuses
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.kind.into(),
                        match (s.age_recipients.is_empty(), s.direct_uploads) {
                            (false, true) => {
                                format!("{} (encrypted with age, direct uploads)", s.location)
                            }
                            (false, false) => format!("{} (encrypted with age)", s.location),
                            (true, true) => format!("{} (direct uploads)", s.location),
                            (true, false) => s.location.clone(),
                        },
                        s.health.into(),
                        s.detail.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::table::render(&["NAME", "TYPE", "LOCATION", "HEALTH", "DETAIL"], &rows)
            );
        }
    }
    let failed = statuses.iter().any(|s| s.health == "failed");
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
