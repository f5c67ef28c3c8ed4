//! Discovery at scale. Starts `nkvm sandbox --seed-scale` (default
//! `namespaces=500,pvcs=10000,pods=20000`, override with `NKVM_BENCH_SCALE`) as a separate
//! process, then runs the inventory over it from this process, which does nothing else: the
//! printed wall times and peak RSS are discovery's own. Target (issue #4): under 1.5 s and
//! under 150 MiB RSS.
//!
//! Run: `cargo bench -p nkvm --bench discovery`.

use nkvm_domain::Allowlist;
use nkvm_engine::{App, Scope, Settings};
use nkvm_history::History;
use nkvm_kube::{AuthMode, ConnectOptions};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale = std::env::var("NKVM_BENCH_SCALE")
        .unwrap_or_else(|_| "namespaces=500,pvcs=10000,pods=20000".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let started = Instant::now();
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--seed-scale",
            &scale,
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .env("NKVM_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("nkvm sandbox starts");
    while !kubeconfig.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the seeded sandbox was not ready within 5 minutes"
        );
        assert!(
            sandbox.try_wait().expect("status").is_none(),
            "nkvm sandbox exited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "sandbox seeded with {scale} and ready in {:.1} s (separate process)",
        started.elapsed().as_secs_f64()
    );

    let mut opts = ConnectOptions::new(AuthMode::Kubeconfig);
    opts.kubeconfig = Some(kubeconfig);
    let conn = nkvm_kube::connect(&opts).await.expect("connects");
    let history = Arc::new(History::open(&dir.path().join("backups.db")).expect("history"));
    let settings = Settings {
        allowlist: Allowlist::default(),
        discovery_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let store = Arc::new(nkvm_store::LocalStore::new(dir.path().join("backups")));
    let app = App::new(conn, history, store, settings);
    let rss_before = status_kib("VmRSS:");
    let mut times = Vec::new();
    let mut records = Vec::new();
    for _ in 0..4 {
        let t = Instant::now();
        records = app.inventory(&Scope::AllAllowed).await.expect("inventory");
        times.push(t.elapsed().as_secs_f64());
    }
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *owners.entry(r.owner.kind.clone()).or_default() += 1;
    }
    let consumers: usize = records.iter().map(|r| r.consumers.len()).sum();
    let backupable = records.iter().filter(|r| r.backupable).count();
    println!(
        "inventory: {} PVCs ({backupable} backupable, {consumers} consumer links), owners by kind: {owners:?}",
        records.len()
    );
    let best = times[1..].iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "discovery wall time: first {:.3} s, best of next 3 {best:.3} s",
        times[0]
    );
    println!(
        "discovery process RSS: {:.1} MiB before, peak {:.1} MiB (VmHWM)",
        rss_before as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0
    );
    let _ = Command::new("kill")
        .args(["-TERM", &sandbox.id().to_string()])
        .status();
    let _ = sandbox.wait();
}
