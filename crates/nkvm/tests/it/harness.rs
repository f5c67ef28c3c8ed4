//! A cluster per test, kubectl to shape it, and the `nkvm` binary run against it as a user
//! runs it. The cluster is the embedded sandbox (in-process), or for the tests that also prove
//! themselves on upstream Kubernetes, the upstream control plane ([`Env::start_upstream`]).

use kube_sandbox::SandboxOptions;
use kube_sandbox::kubelet::programs::ImageProgram;
use kube_sandbox::testing::{KubectlRun, TestSandbox, start_upstream_with, upstream_bin_dir};
use kube_sandbox::upstream::UpstreamCluster;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

/// The image `deploy/k8s/app` names for nkvm (its `images:` entry), which its Deployment
/// also hands to helper pods (`NKVM_IMAGE`).
pub const SHIPPED_IMAGE: &str = "registry.example.invalid/nkvm:0.1.0";

/// nkvm's default image and the shipped Deployment's image mapped to the binary under test,
/// at the path the image has it.
pub fn own_image_programs() -> Vec<ImageProgram> {
    [nkvm_engine::DEFAULT_NKVM_IMAGE, SHIPPED_IMAGE]
        .into_iter()
        .map(|image| ImageProgram {
            image: image.into(),
            program: env!("CARGO_BIN_EXE_nkvm").into(),
            at: nkvm_engine::agent::AGENT_PATH.into(),
        })
        .collect()
}

/// A sandbox plus a scratch directory for nkvm's data.
pub struct Env {
    cluster: Cluster,
    /// Scratch directory (kubeconfigs, the history database).
    pub dir: tempfile::TempDir,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
}

/// The cluster under a test.
enum Cluster {
    /// The embedded sandbox.
    Embedded(TestSandbox),
    /// kube-apiserver and friends with nkvm's node agent, and its admin kubeconfig's text.
    Upstream(UpstreamCluster, String),
}

/// What a command printed.
#[derive(Debug)]
pub struct Ran {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    fn from(out: Output) -> Self {
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Standard output parsed as JSON, panicking with the whole run otherwise.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("nkvm printed no JSON ({e}): {self:?}"))
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Env {
    /// Starts a sandbox.
    pub async fn start() -> Env {
        Env::start_with(SandboxOptions::default()).await
    }

    /// Starts a sandbox with options (faults, taints); its state dir is replaced. nkvm's own
    /// image runs the nkvm binary under test, so helper pods take the agent path by default.
    pub async fn start_with(mut options: SandboxOptions) -> Env {
        options.image_programs.extend(own_image_programs());
        let dir = tempfile::tempdir().expect("temp dir");
        let sandbox = TestSandbox::start_in(dir.path(), options).await;
        Env {
            kubeconfig: sandbox.kubeconfig().to_path_buf(),
            cluster: Cluster::Embedded(sandbox),
            dir,
        }
    }

    /// Starts the upstream control plane; `None` (the test skips) on a developer machine
    /// without its binaries, a failure under CI.
    pub async fn start_upstream() -> Option<Env> {
        let bin_dir = upstream_bin_dir()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let (cluster, kubeconfig) =
            start_upstream_with(bin_dir, dir.path(), own_image_programs()).await;
        let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
        Some(Env {
            kubeconfig,
            cluster: Cluster::Upstream(cluster, text),
            dir,
        })
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        match &self.cluster {
            Cluster::Embedded(s) => s.url(),
            Cluster::Upstream(u, _) => u.url(),
        }
    }

    /// The admin kubeconfig's text.
    pub fn kubeconfig_text(&self) -> &str {
        match &self.cluster {
            Cluster::Embedded(s) => s.kubeconfig_text(),
            Cluster::Upstream(_, text) => text,
        }
    }

    /// Runs kubectl as the admin, optionally feeding `stdin`.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        let KubectlRun {
            code,
            stdout,
            stderr,
        } = kube_sandbox::testing::kubectl(
            &self.kubeconfig,
            args,
            stdin.map(str::as_bytes),
            kube_sandbox::testing::KUBECTL_TIMEOUT,
        )
        .await;
        Ran {
            code,
            stdout,
            stderr,
        }
    }

    /// `kubectl apply -f -` (namespace in the manifests or `-n`), panicking on failure.
    pub async fn apply(&self, ns: Option<&str>, yaml: &str) {
        let mut args = Vec::new();
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        args.extend(["apply", "-f", "-"]);
        self.kubectl(&args, Some(yaml)).await.ok();
    }

    /// Waits (up to a minute) until pod `ns/name` is Ready, panicking otherwise.
    pub async fn wait_ready(&self, ns: &str, name: &str) {
        let pod = format!("pod/{name}");
        self.kubectl(
            &[
                "-n",
                ns,
                "wait",
                "--for=condition=Ready",
                &pod,
                "--timeout=60s",
            ],
            None,
        )
        .await
        .ok();
    }

    /// A kubeconfig for the same server and CA with another bearer token.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> PathBuf {
        let text: String = self
            .kubeconfig_text()
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("token:") {
                    format!("    token: {token}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = self.dir.path().join(name);
        std::fs::write(&path, text + "\n").expect("write kubeconfig");
        path
    }

    /// Runs `nkvm` with `args` against `kubeconfig`, using this env's history database.
    pub async fn nkvm_with(&self, kubeconfig: &Path, args: &[&str]) -> Ran {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nkvm"));
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--db")
            .arg(self.db())
            .arg("--backup-dir")
            .arg(self.backups())
            .args(args);
        cmd.env_remove("KUBECONFIG")
            .env_remove("NKVM_NAMESPACES")
            .env_remove("NKVM_DEFAULT_AUTH_MODE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("NKVM_IMAGE")
            .env_remove("NKVM_HELPER_IMAGE")
            .env_remove("NKVM_AGENT_FAULT")
            .env_remove("NKVM_AGE_IDENTITY_FILE");
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
            .await
            .expect("nkvm in time")
            .expect("nkvm runs");
        Ran::from(out)
    }

    /// Runs `nkvm` as the admin.
    pub async fn nkvm(&self, args: &[&str]) -> Ran {
        self.nkvm_with(&self.kubeconfig.clone(), args).await
    }

    /// The archive store directory.
    pub fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// The history database path.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("data/backups.db")
    }

    /// Stops the sandbox.
    pub async fn stop(self) {
        match self.cluster {
            Cluster::Embedded(s) => s.shutdown().await,
            Cluster::Upstream(u, _) => u.shutdown().await,
        }
    }
}
