//! `nkvm sandbox`: writes a working kubeconfig for a port-0 listener, serves kubectl, and on
//! SIGTERM kills its pod processes and exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubectl(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()));
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .expect("write");
    }
    child.wait_with_output().expect("kubectl output")
}

fn processes_mentioning(marker: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn sandbox_serves_kubectl_and_sigterm_kills_pods_and_exits_zero() {
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("out/kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nkvm runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubeconfig.exists() {
        assert!(
            Instant::now() < deadline,
            "no kubeconfig written within 20 s"
        );
        assert!(
            child.try_wait().expect("status").is_none(),
            "nkvm sandbox exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    assert!(
        config.contains("server: https://127.0.0.1:") && !config.contains("127.0.0.1:0\n"),
        "{config}"
    );

    let marker = format!("sleep 3{}", std::process::id() % 1000 + 1000);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", \"{marker}\"]\n"
    );
    let out = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&pod));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        &kubeconfig,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/sleeper",
            "--timeout=30s",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        processes_mentioning(&marker) >= 1,
        "the pod's process runs on this machine"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("status") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "nkvm sandbox did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        processes_mentioning(&marker),
        0,
        "pod processes outlived the sandbox"
    );
}

#[test]
fn a_bad_taint_is_a_usage_error_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .args(["sandbox", "--node-taint", "nonsense", "--state-dir"])
        .arg(dir.path())
        .arg("--kubeconfig-out")
        .arg(dir.path().join("kc"))
        .output()
        .expect("nkvm runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid taint \"nonsense\"") && err.contains("key=value:Effect"),
        "{err}"
    );
}

#[test]
fn a_bad_seed_scale_is_a_usage_error_naming_the_bad_part() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .args(["sandbox", "--seed-scale", "namespaces=5,pvcs=ten,pods=1"])
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--kubeconfig-out")
        .arg(dir.path().join("kc"))
        .output()
        .expect("nkvm runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--seed-scale") && err.contains("\"pvcs=ten\""),
        "{err}"
    );
}

#[test]
fn a_bad_fault_is_a_usage_error_naming_it_and_the_valid_forms() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .args(["sandbox", "--fault", "exec-cut-after=1000"])
        .args(["--fault", "api-error=create:pod:500"])
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--kubeconfig-out")
        .arg(dir.path().join("kc"))
        .output()
        .expect("nkvm runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid --fault \"api-error=create:pod:500\"")
            && err.contains("RESOURCE \"pod\"")
            && err.contains("exec-stall-after=BYTES[,count=N]"),
        "{err}"
    );
    assert!(!dir.path().join("kc").exists(), "no sandbox was started");
}
