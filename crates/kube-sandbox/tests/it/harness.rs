//! Test fixture: a cluster (an in-process sandbox, or a real one), kubectl runs with timeouts,
//! and per-test namespaces.

use kube_sandbox::{Sandbox, SandboxOptions};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The result of one kubectl run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
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

/// A cluster for one test.
pub struct TestCluster {
    sandbox: Option<Sandbox>,
    _dir: tempfile::TempDir,
    /// Path of the kubeconfig kubectl uses.
    pub kubeconfig: PathBuf,
}

/// The kubectl binary (`KUBECTL` overrides).
pub fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

impl TestCluster {
    /// A fresh sandbox (or the real cluster named by `NKVM_TEST_KUBECONFIG`).
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// A fresh sandbox with taints on node-b.
    pub async fn start_with(node_b_taints: Vec<String>) -> Self {
        Self::start_with_options(SandboxOptions {
            node_b_taints,
            ..Default::default()
        })
        .await
    }

    /// A fresh sandbox with these options (`state_dir` is replaced by a temp dir), or the real
    /// cluster named by `NKVM_TEST_KUBECONFIG`.
    pub async fn start_with_options(options: SandboxOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Ok(path) = std::env::var("NKVM_TEST_KUBECONFIG") {
            return TestCluster {
                sandbox: None,
                kubeconfig: path.into(),
                _dir: dir,
            };
        }
        let state_dir = dir.path().join("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let sandbox = Sandbox::start(
            listener,
            SandboxOptions {
                state_dir,
                ..options
            },
        )
        .await
        .expect("sandbox starts");
        let kubeconfig = dir.path().join("kubeconfig");
        sandbox
            .write_kubeconfig(&kubeconfig)
            .expect("write kubeconfig");
        TestCluster {
            sandbox: Some(sandbox),
            kubeconfig,
            _dir: dir,
        }
    }

    /// Whether this is the sandbox (not a real cluster).
    pub fn is_sandbox(&self) -> bool {
        self.sandbox.is_some()
    }

    /// Runs kubectl with `args` (and optional stdin), failing the test after `timeout`.
    pub async fn kubectl_with(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Run {
        let mut cmd = tokio::process::Command::new(kubectl_bin());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().expect("stdin piped");
            pipe.write_all(data).await.expect("write stdin");
            drop(pipe);
        }
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within {timeout:?}"))
            .expect("kubectl output");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl with a 60 s limit.
    pub async fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_with(args, None, Duration::from_secs(60)).await
    }

    /// `kubectl apply -f -` of `yaml`; panics on failure.
    pub async fn apply(&self, yaml: &str) -> Run {
        self.kubectl_with(
            &["apply", "-f", "-"],
            Some(yaml.as_bytes()),
            Duration::from_secs(60),
        )
        .await
        .ok()
    }

    /// `kubectl -n ns apply -f -` of `yaml`; panics on failure.
    pub async fn apply_in(&self, ns: &str, yaml: &str) -> Run {
        self.kubectl_with(
            &["-n", ns, "apply", "-f", "-"],
            Some(yaml.as_bytes()),
            Duration::from_secs(60),
        )
        .await
        .ok()
    }

    /// Creates a namespace unique to this test.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}",
            std::process::id() % 10_000 * 1000 + rand_suffix()
        );
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
        ))
        .await;
        // A real cluster's controller-manager adds the `default` ServiceAccount a moment
        // later, and pods created before it are refused.
        eventually(
            "the namespace's default ServiceAccount",
            Duration::from_secs(30),
            || async {
                let run = self
                    .kubectl(&["-n", &name, "get", "serviceaccount", "default"])
                    .await;
                (run.code == 0).then_some(())
            },
        )
        .await;
        name
    }

    /// A kube-rs client for this cluster.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }

    /// Stops the sandbox and kills its pods.
    pub async fn stop(self) {
        if let Some(s) = self.sandbox {
            s.shutdown().await;
        }
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Polls `f` every 100 ms until it returns `Some`, panicking after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pod manifest running `script` with a PVC mounted at /data.
pub fn pod_with_claim(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", {script:?}]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {claim}
"#
    )
}

/// A PVC manifest.
pub fn claim(name: &str, class: &str, mode: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  accessModes: [{mode}]\n  storageClassName: {class}\n  resources:\n    requests:\n      storage: 1Gi\n"
    )
}
