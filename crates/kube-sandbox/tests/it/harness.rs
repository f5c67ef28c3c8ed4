//! Test fixture: a cluster (an in-process sandbox, or a real one), kubectl runs with timeouts,
//! and per-test namespaces.

use kube_sandbox::SandboxOptions;
use kube_sandbox::testing::{self, TestSandbox};
use std::path::PathBuf;
use std::time::Duration;

pub use kube_sandbox::testing::KubectlRun as Run;
pub use kube_sandbox::testing::eventually;
pub use kube_sandbox::testing::kubectl_program as kubectl_bin;

/// A cluster for one test.
pub struct TestCluster {
    sandbox: Option<TestSandbox>,
    /// Path of the kubeconfig kubectl uses.
    pub kubeconfig: PathBuf,
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
        if let Ok(path) = std::env::var("NKVM_TEST_KUBECONFIG") {
            return TestCluster {
                sandbox: None,
                kubeconfig: path.into(),
            };
        }
        let sandbox = TestSandbox::start_with(options).await;
        TestCluster {
            kubeconfig: sandbox.kubeconfig().to_path_buf(),
            sandbox: Some(sandbox),
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
        testing::kubectl(&self.kubeconfig, args, stdin, timeout).await
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
