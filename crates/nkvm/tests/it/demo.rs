//! `nkvm demo` run as a user runs it: what it seeds (read back through `nkvm pvcs`), what it
//! prints, and that stopping it leaves no pod process and no temporary directory behind.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the demo may take to start its sandbox and seed it.
const START_LIMIT: Duration = Duration::from_secs(180);

/// A running `nkvm demo` and what it printed.
pub struct Demo {
    child: Child,
    /// The web UI's URL (`http://127.0.0.1:PORT/`).
    pub url: String,
    /// Login user.
    pub user: String,
    /// Login password.
    pub password: String,
    /// The sample cluster's admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The demo's archive store.
    pub backup_dir: PathBuf,
    /// The demo's history database.
    pub db: PathBuf,
    /// Everything it printed on stdout.
    pub stdout: Vec<String>,
    stderr: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Demo {
    /// Starts `nkvm demo` on a free port and waits until it prints its login.
    pub async fn start() -> Demo {
        let scratch = tempfile::tempdir().expect("temp dir");
        let stderr = scratch.path().join("demo.stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_nkvm"))
            .args(["demo", "--listen", "127.0.0.1:0"])
            .env_remove("NKVM_BACKUP_DIR")
            .env_remove("NKVM_METADATA_DB_PATH")
            .env_remove("NKVM_ADMIN_PASSWORD")
            .env_remove("NKVM_ADMIN_PASSWORD_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("nkvm demo runs");
        let out = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(out).lines();
        let mut stdout = Vec::new();
        let read_all = async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let done = line.starts_with("Stop with Ctrl-C");
                stdout.push(line);
                if done {
                    return true;
                }
            }
            false
        };
        let ready = tokio::time::timeout(START_LIMIT, read_all).await;
        assert!(
            matches!(ready, Ok(true)),
            "nkvm demo did not print its login (timed out: {}); stdout: {stdout:#?}\nstderr: {}",
            ready.is_err(),
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        // Keep draining stdout so the demo never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |key: &str| {
            stdout
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .unwrap_or_else(|| panic!("no `{key}:` line in {stdout:#?}"))
                .to_string()
        };
        // Paths may be followed by a note in parentheses.
        let path = |key: &str| PathBuf::from(field(key).split(" (").next().unwrap_or(""));
        Demo {
            kubeconfig: path("kubeconfig"),
            backup_dir: path("backups"),
            db: path("history"),
            url: field("url"),
            user: field("user"),
            password: field("password"),
            stdout,
            child,
            stderr,
            _scratch: scratch,
        }
    }

    /// The temporary directory the demo works in (its kubeconfig lives there).
    pub fn work_dir(&self) -> PathBuf {
        self.kubeconfig.parent().expect("kubeconfig dir").into()
    }

    /// What the demo logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Runs `nkvm ARGS` against the demo's cluster with a history and store under `data`.
    pub async fn nkvm(&self, data: &Path, args: &[&str]) -> (i32, String, String) {
        self.nkvm_with_store(&data.join("backups.db"), &data.join("backups"), args)
            .await
    }

    /// Runs `nkvm ARGS` against the demo's cluster with this history and archive store.
    pub async fn nkvm_with_store(
        &self,
        db: &Path,
        backup_dir: &Path,
        args: &[&str],
    ) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_nkvm"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--db")
            .arg(db)
            .arg("--backup-dir")
            .arg(backup_dir)
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("NKVM_NAMESPACES")
            .env_remove("NKVM_DEFAULT_AUTH_MODE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .expect("nkvm in time")
            .expect("nkvm runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Sends SIGTERM and waits for the demo to exit cleanly (code 0).
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("still running");
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the demo stops within a minute of SIGTERM")
            .expect("wait");
        assert_eq!(status.code(), Some(0), "the demo's log:\n{}", self.stderr());
    }
}

impl Drop for Demo {
    /// A failed test still stops the demo the way a user would, so it removes its temporary
    /// directory (`kill_on_drop`'s SIGKILL would leave it behind).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- nkvm demo's log ---\n{}", self.stderr());
        }
        let Some(pid) = self.child.id() else { return };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Processes whose command line mentions `needle` (the sandbox's pods name their state dir).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

fn by_name(json: &str) -> HashMap<String, Value> {
    let list: Vec<Value> = serde_json::from_str(json).expect("nkvm prints a JSON array");
    list.into_iter()
        .map(|r| {
            let key = format!(
                "{}/{}",
                r["namespace"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            );
            (key, r)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_seeds_every_kind_of_claim_and_says_which_cannot_be_backed_up() {
    let demo = Demo::start().await;
    assert_eq!(demo.user, "admin");
    assert!(demo.password.len() >= 16, "a generated password");
    assert!(demo.url.starts_with("http://127.0.0.1:"), "{}", demo.url);
    let data = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = demo.nkvm(data.path(), &["pvcs", "-A", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let pvcs = by_name(&out);
    let owner = |claim: &str| {
        let o = &pvcs[claim]["owner"];
        format!(
            "{}/{}",
            o["kind"].as_str().unwrap_or(""),
            o["name"].as_str().unwrap_or("")
        )
    };
    let consumers = |claim: &str| pvcs[claim]["consumers"].as_array().map_or(0, Vec::len);
    assert_eq!(owner("shop/postgres-data"), "Deployment/postgres");
    assert_eq!(owner("shop/media-uploads"), "Deployment/storefront");
    assert_eq!(consumers("shop/media-uploads"), 2);
    assert_eq!(owner("shop/debug-scratch"), "Pod/debug-toolbox");
    assert_eq!(owner("shop/exports-2025"), "Unknown/");
    assert_eq!(consumers("shop/exports-2025"), 0);
    for ordinal in 0..3 {
        let claim = format!("analytics/data-events-db-{ordinal}");
        assert_eq!(owner(&claim), "StatefulSet/events-db");
        assert_eq!(consumers(&claim), 1);
    }
    assert_eq!(owner("analytics/reports"), "CronJob/nightly-report");

    let backupable = [
        "shop/postgres-data",
        "shop/media-uploads",
        "shop/debug-scratch",
        "shop/exports-2025",
        "analytics/data-events-db-0",
        "analytics/reports",
    ];
    for claim in backupable {
        assert_eq!(pvcs[claim]["backupable"], true, "{claim}: {}", pvcs[claim]);
    }
    let refused = |claim: &str| {
        assert_eq!(pvcs[claim]["backupable"], false, "{claim}: {}", pvcs[claim]);
        pvcs[claim]["reason"].as_str().unwrap_or("").to_string()
    };
    assert!(refused("shop/ledger-raw").starts_with("volumeMode Block"));
    assert_eq!(pvcs["analytics/query-spill"]["phase"], "Pending");
    assert_eq!(pvcs["analytics/query-spill"]["storageClass"], "local-nvme");
    assert!(refused("analytics/query-spill").starts_with("not bound (phase Pending)"));
    assert_eq!(pvcs.len(), 10, "{:?}", pvcs.keys().collect::<Vec<_>>());

    // The claim nobody mounts still holds what its former writer left: twelve monthly CSVs.
    let (code, out, err) = demo
        .nkvm(data.path(), &["backup", "shop/exports-2025", "-o", "json"])
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let results: Value = serde_json::from_str(&out).expect("json");
    let bytes = results[0]["bytesRead"].as_u64().unwrap_or(0);
    assert!(bytes > 12 * 10_000, "twelve CSVs of 500 rows: {results}");
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_demo_kills_its_pods_and_removes_its_temporary_directory() {
    let demo = Demo::start().await;
    let work = demo.work_dir();
    let needle = work.to_string_lossy().into_owned();
    assert!(work.exists());
    assert!(
        !processes_mentioning(&needle).is_empty(),
        "the sample pods run as processes under {needle}"
    );
    assert!(
        demo.stdout
            .iter()
            .any(|l| l.starts_with("changing: shop/postgres")),
        "the demo says which files keep changing: {:#?}",
        demo.stdout
    );
    demo.stop().await;
    assert!(!work.exists(), "{} is removed", work.display());
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_a_usage_error_before_anything_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .args(["demo", "--listen", &addr])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("nkvm demo gives up at once")
        .expect("nkvm runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("binding the web UI to {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("choose another --listen"), "{stderr}");
    assert!(out.stdout.is_empty(), "no login printed");
}
