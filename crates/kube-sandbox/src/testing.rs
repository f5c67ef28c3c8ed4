//! Test and benchmark support (cargo feature `testing`): a sandbox in its own temporary
//! directory with its admin kubeconfig written, a kube-rs client for it, a kubectl runner that
//! honours `$KUBECTL`, and [`eventually`]. Every test harness and benchmark of the workspace
//! starts its sandbox through [`TestSandbox`] instead of repeating that bootstrap.

use crate::{Sandbox, SandboxOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// File name of the admin kubeconfig in the sandbox's directory.
const KUBECONFIG: &str = "admin.kubeconfig";
/// Directory of the sandbox's state (volumes, container scratch) in its directory.
const STATE: &str = "sandbox-state";
/// How often [`eventually`] checks again.
const POLL: Duration = Duration::from_millis(100);

/// A sandbox on a loopback port, its state and admin kubeconfig in a directory that lives as
/// long as it does.
pub struct TestSandbox {
    sandbox: Sandbox,
    kubeconfig: PathBuf,
    dir: PathBuf,
    /// The directory when this sandbox made it (dropped, and so deleted, with the sandbox).
    _owned: Option<tempfile::TempDir>,
}

impl TestSandbox {
    /// A sandbox with default options in a new temporary directory.
    pub async fn start() -> TestSandbox {
        Self::start_with(SandboxOptions::default()).await
    }

    /// A sandbox with `options` in a new temporary directory (its `state_dir` is replaced).
    pub async fn start_with(options: SandboxOptions) -> TestSandbox {
        let owned = tempfile::tempdir().expect("temp dir for the sandbox");
        let mut sandbox = Self::start_in(owned.path(), options).await;
        sandbox._owned = Some(owned);
        sandbox
    }

    /// A sandbox with `options` whose state and kubeconfig go in `dir`, a directory the caller
    /// owns (its `state_dir` is replaced).
    pub async fn start_in(dir: &Path, options: SandboxOptions) -> TestSandbox {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the sandbox");
        let options = SandboxOptions {
            state_dir: dir.join(STATE),
            ..options
        };
        let sandbox = Sandbox::start(listener, options)
            .await
            .expect("sandbox starts");
        let kubeconfig = dir.join(KUBECONFIG);
        sandbox
            .write_kubeconfig(&kubeconfig)
            .expect("write the sandbox's kubeconfig");
        TestSandbox {
            sandbox,
            kubeconfig,
            dir: dir.to_path_buf(),
            _owned: None,
        }
    }

    /// The sandbox itself.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The directory holding the sandbox's state and kubeconfig.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the admin (cluster-admin token) kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin kubeconfig's text.
    pub fn kubeconfig_text(&self) -> &str {
        self.sandbox.kubeconfig()
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        self.sandbox.url()
    }

    /// A cluster-admin kube-rs client.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(self.kubeconfig_text())
            .expect("the sandbox's kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("client configuration from the sandbox's kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Runs kubectl as the admin; see [`kubectl`].
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> KubectlRun {
        kubectl(&self.kubeconfig, args, stdin, KUBECTL_TIMEOUT).await
    }

    /// Stops serving and kills every pod process.
    pub async fn shutdown(self) {
        self.sandbox.shutdown().await;
    }
}

/// The upstream control plane's binaries (`NKVM_UPSTREAM_BIN`, the directory
/// `scripts/upstream-control-plane.sh` prints); `None` tells a test to skip on a developer
/// machine. Under `CI=true` a missing directory fails the test instead: .ci/run must set it.
pub fn upstream_bin_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("NKVM_UPSTREAM_BIN") {
        return Some(dir.into());
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "NKVM_UPSTREAM_BIN is not set under CI=true: .ci/run must run scripts/upstream-control-plane.sh and export the directory it prints"
    );
    eprintln!("skipped: set NKVM_UPSTREAM_BIN (scripts/upstream-control-plane.sh prints it)");
    None
}

/// Starts an upstream control plane with two nodes in `dir` (state below it) and writes its
/// admin kubeconfig there; returns both. Panics if it does not start.
pub async fn start_upstream(
    bin_dir: std::path::PathBuf,
    dir: &Path,
) -> (crate::upstream::UpstreamCluster, std::path::PathBuf) {
    start_upstream_with(bin_dir, dir, Vec::new()).await
}

/// [`start_upstream`] whose nodes place `image_programs` in containers.
pub async fn start_upstream_with(
    bin_dir: std::path::PathBuf,
    dir: &Path,
    image_programs: Vec<crate::kubelet::programs::ImageProgram>,
) -> (crate::upstream::UpstreamCluster, std::path::PathBuf) {
    let cluster = crate::upstream::UpstreamCluster::start(crate::upstream::UpstreamOptions {
        bin_dir,
        state_dir: dir.join("state"),
        listen: "127.0.0.1:0".parse().expect("an address"),
        nodes: 2,
        image_programs,
    })
    .await
    .expect("the upstream control plane starts");
    let kubeconfig = dir.join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig)
        .expect("the kubeconfig is written");
    (cluster, kubeconfig)
}

/// How long [`TestSandbox::kubectl`] lets one kubectl run take.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The kubectl program: `$KUBECTL` when set, else `kubectl` on `PATH`.
pub fn kubectl_program() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// What one kubectl run printed.
#[derive(Debug)]
pub struct KubectlRun {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl KubectlRun {
    /// Panics with both streams unless the run succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "kubectl failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs [`kubectl_program`] with `--kubeconfig kubeconfig` and `args`, feeding `stdin` (none:
/// stdin is `/dev/null`); panics if it has not finished within `timeout`.
pub async fn kubectl(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> KubectlRun {
    let mut cmd = tokio::process::Command::new(kubectl_program());
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("kubectl runs (set KUBECTL to its path)");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(data).await.expect("write kubectl's stdin");
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within {timeout:?}"))
        .expect("kubectl output");
    KubectlRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Calls `check` every 100 ms until it returns `Some`, and returns that; panics naming `what`
/// after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_value_and_panics_after_its_timeout() {
        let mut calls = 0;
        let got = eventually("the third call", Duration::from_secs(5), async || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .await;
        assert_eq!(got, 3);
        let never = tokio::spawn(async {
            eventually::<()>("nothing", Duration::from_millis(250), async || None).await
        })
        .await
        .expect_err("panics");
        assert!(never.is_panic());
    }
}
