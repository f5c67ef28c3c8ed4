//! The official Python `kubernetes` client (PyPI) against the sandbox: the conformance script
//! `tests/python/conformance.py` creates kind-less objects, gets, lists, watches, reads logs
//! and execs through `kubernetes.stream`; this test then checks what the server stored.

use crate::harness::TestCluster;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The script; it prints one `step: NAME` line per step passed.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/conformance.py");

/// Steps the script must report, in order.
const STEPS: [&str; 10] = [
    "create",
    "replace",
    "wrong kind",
    "create",
    "watch",
    "get",
    "list",
    "logs",
    "exec",
    "exec",
];

/// The project's tools venv, where scripts/install-test-deps.sh installs the client.
fn tools_venv() -> PathBuf {
    if let Some(v) = std::env::var_os("NKVM_TOOLS_VENV") {
        return v.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("nkvm-tools/venv")
}

/// A Python that can `import kubernetes`: the tools venv's, else `python3` on PATH. A missing
/// client fails the test (it is not skipped): CI installs it, and so does the setup script.
fn python_with_client() -> PathBuf {
    let venv = tools_venv();
    let candidates = [venv.join("bin/python3"), PathBuf::from("python3")];
    candidates
        .into_iter()
        .find(|py| {
            std::process::Command::new(py)
                .args(["-c", "import kubernetes"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "the official Python `kubernetes` client is not installed (looked for it in {} and \
                 in python3 on PATH); run `bash scripts/install-test-deps.sh` (CI does)",
                venv.display()
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_creates_kindless_objects_watches_logs_and_execs() {
    let python = python_with_client();
    let c = TestCluster::start().await;
    let ns = format!("python-{}", std::process::id());
    let run = tokio::process::Command::new(&python)
        .arg(SCRIPT)
        .arg(&c.kubeconfig)
        .arg(&ns)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the Python conformance script finished within 5 minutes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "conformance.py failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let steps: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("step: "))
        .collect();
    assert_eq!(steps.len(), STEPS.len() + 1, "steps reported:\n{stdout}");
    for (seen, want) in steps.iter().zip(STEPS) {
        assert!(
            seen.starts_with(want),
            "expected step {want:?}, got {seen:?}:\n{stdout}"
        );
    }
    assert_eq!(steps.last(), Some(&"done"));

    // What the server stored carries the type the URL implied.
    let pod = c
        .kubectl(&["-n", &ns, "get", "pod", "py", "-o", "json"])
        .await
        .ok();
    let pod: serde_json::Value = serde_json::from_str(&pod.stdout).expect("pod JSON");
    assert_eq!(
        (pod["apiVersion"].as_str(), pod["kind"].as_str()),
        (Some("v1"), Some("Pod"))
    );
    let cm = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.kind} {.data.a}",
        ])
        .await
        .ok();
    assert_eq!(cm.stdout, "ConfigMap 2");
    c.kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .await
        .ok();
    c.stop().await;
}
