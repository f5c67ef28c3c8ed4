//! Prints how fast bytes cross a sandbox exec stream: `cat`-style output of N MiB (default
//! 1024, `NKVM_BENCH_MIB`) read by kubectl and by kube-rs. Run: `cargo bench -p kube-sandbox
//! --bench exec_throughput`.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, PostParams};
use kube_sandbox::testing::TestSandbox;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

fn mib() -> u64 {
    std::env::var("NKVM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sandbox = TestSandbox::start().await;
    let kubeconfig = sandbox.kubeconfig().to_path_buf();
    let client = sandbox.client().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods
        .get("bench")
        .await
        .expect("get")
        .status
        .and_then(|s| s.phase)
        .as_deref()
        != Some("Running")
    {
        assert!(Instant::now() < deadline, "pod never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = mib();
    let producer = format!("head -c {} /dev/zero", n << 20);

    let started = Instant::now();
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} --kubeconfig {} exec bench -- {producer} | wc -c",
            kube_sandbox::testing::kubectl_program(),
            kubeconfig.display()
        ))
        .output()
        .await
        .expect("kubectl runs");
    let secs = started.elapsed().as_secs_f64();
    let bytes: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert_eq!(bytes, n << 20, "kubectl received every byte");
    println!(
        "exec stdout via kubectl: {n} MiB in {secs:.2} s = {:.0} MiB/s",
        n as f64 / secs
    );

    let started = Instant::now();
    let mut attached = pods
        .exec(
            "bench",
            ["sh", "-c", &producer],
            &AttachParams::default()
                .stderr(false)
                .max_stdout_buf_size(1 << 20),
        )
        .await
        .expect("exec");
    let mut stdout = attached.stdout().expect("stdout");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    while total < n << 20 {
        let read = stdout.read(&mut buf).await.expect("read");
        if read == 0 {
            break;
        }
        total += read as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(total, n << 20, "kube-rs received every byte");
    println!(
        "exec stdout via kube-rs: {n} MiB in {secs:.2} s = {:.0} MiB/s",
        n as f64 / secs
    );
    sandbox.shutdown().await;
}
