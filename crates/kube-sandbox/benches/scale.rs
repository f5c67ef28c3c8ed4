//! Prints how the sandbox copes with a large cluster: seeding time, paginated list times of
//! every pod and PVC (kube-rs and kubectl, pages of 500), the cost of one controller pass, the
//! process's RSS and its CPU use while idle. Size: `NKVM_BENCH_SCALE` (default
//! `namespaces=500,pvcs=10000,pods=20000`). Run: `cargo bench -p kube-sandbox --bench scale`.
//!
//! The sandbox runs in this process, so the RSS and CPU figures are the sandbox's (plus the
//! kube-rs client's share, which holds one page at a time).

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube_sandbox::SandboxOptions;
use kube_sandbox::cluster::Cluster;
use kube_sandbox::scale::ScaleSpec;
use kube_sandbox::testing::TestSandbox;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

const DEFAULT_SCALE: &str = "namespaces=500,pvcs=10000,pods=20000";
const PAGE: u32 = 500;
/// Linux reports CPU times in USER_HZ ticks, 100 per second on every architecture it supports.
const TICKS_PER_SECOND: f64 = 100.0;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// User + system CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / TICKS_PER_SECOND
}

/// Lists every object of `api` in pages; returns the count and the time taken.
async fn list_all<K>(api: &Api<K>) -> (usize, Duration)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    let mut count = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api.list(&params).await.expect("list page");
        count += page.items.len();
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return (count, started.elapsed());
        }
    }
}

/// Times a full listing: the first run, then the best of three.
async fn time_listing<K>(what: &str, api: &Api<K>, expected: usize)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let (count, first) = list_all(api).await;
    assert_eq!(count, expected, "every {what} listed once");
    let mut best = first;
    for _ in 0..3 {
        best = best.min(list_all(api).await.1);
    }
    println!(
        "list {count} {what} (kube-rs, pages of {PAGE}): first {:.0} ms, best of 3 {:.0} ms",
        first.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3
    );
}

/// Lists every object at `path` in pages as raw JSON (no decoding into typed objects), to tell
/// the server's share of a listing from the client's; returns the count of bytes and the time.
async fn list_raw(client: &kube::Client, path: &str) -> (usize, Duration) {
    #[derive(serde::Deserialize)]
    struct Page {
        metadata: PageMeta,
    }
    #[derive(serde::Deserialize)]
    struct PageMeta {
        #[serde(rename = "continue")]
        continue_: Option<String>,
    }
    let started = Instant::now();
    let mut bytes = 0;
    let mut token = String::new();
    loop {
        let uri = format!("{path}?limit={PAGE}&continue={token}");
        let req = http::Request::get(uri).body(Vec::new()).expect("request");
        let text = client.request_text(req).await.expect("raw page");
        bytes += text.len();
        let page: Page = serde_json::from_str(&text).expect("page JSON");
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => token = t,
            None => return (bytes, started.elapsed()),
        }
    }
}

async fn time_raw_listing(client: &kube::Client, what: &str, path: &str) {
    let (bytes, first) = list_raw(client, path).await;
    let mut best = first;
    for _ in 0..3 {
        best = best.min(list_raw(client, path).await.1);
    }
    println!(
        "list {what} as raw JSON ({:.0} MiB, pages of {PAGE}): first {:.0} ms, best of 3 {:.0} ms",
        bytes as f64 / (1 << 20) as f64,
        first.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3
    );
}

async fn time_kubectl(kubeconfig: &std::path::Path, kind: &str, expected: usize) {
    let started = Instant::now();
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} --kubeconfig {} get {kind} -A -o name --chunk-size={PAGE} | wc -l",
            kube_sandbox::testing::kubectl_program(),
            kubeconfig.display()
        ))
        .output()
        .await
        .expect("kubectl runs");
    let secs = started.elapsed().as_secs_f64();
    let lines: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert_eq!(lines, expected, "kubectl printed every {kind}");
    println!("kubectl get {kind} -A -o name --chunk-size={PAGE} | wc -l: {lines} in {secs:.2} s");
}

/// Times GETs of one object while the controllers make a full pass (a new namespace is a
/// cluster-wide change), to show that passes do not hold up API requests.
async fn latency_during_full_pass(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let probe: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench-probe"},
    }))
    .expect("namespace");
    namespaces
        .create(&PostParams::default(), &probe)
        .await
        .expect("create namespace");
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed() < Duration::from_millis(500) {
        let t = Instant::now();
        namespaces.get("scale-0000").await.expect("get namespace");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "GET latency in the 500 ms after a cluster-wide change (full passes running): \
         {} GETs, median {:.2} ms, max {:.2} ms",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

async fn idle_cpu(what: &str) {
    let before = cpu_seconds();
    let window = Duration::from_secs(5);
    tokio::time::sleep(window).await;
    let used = cpu_seconds() - before;
    println!(
        "idle CPU {what}: {:.2} s over {} s ({:.1}% of one core)",
        used,
        window.as_secs(),
        used / window.as_secs_f64() * 100.0
    );
}

/// One controller's full pass.
type Pass = fn(&Cluster);

/// Times the controllers' passes over the seeded cluster (each runs after every change).
fn time_controller_pass(cluster: &Cluster) {
    use kube_sandbox::controllers::{namespaces, provisioner, workloads};
    let passes: [(&str, Pass); 3] = [
        ("namespaces", namespaces::reconcile),
        ("provisioner", provisioner::reconcile),
        ("workloads", workloads::reconcile),
    ];
    // A first pass settles what the controllers do at start anyway (the bootstrap namespaces
    // get their kube-root-ca.crt), so the timed passes count only writes to seeded objects.
    for (_, pass) in passes {
        pass(cluster);
    }
    let rv = cluster.store.resource_version();
    let mut parts = Vec::new();
    for (name, pass) in passes {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            pass(cluster);
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
        }
        parts.push(format!("{name} {best:.1} ms"));
    }
    println!(
        "full controller passes over the seeded cluster, best of 5: {}; writes: {}",
        parts.join(", "),
        cluster.store.resource_version() - rv
    );
    // After a change in one namespace, passes look at that namespace only.
    let one: kube_sandbox::controllers::Scope = Some([ScaleSpec::namespace_name(0)].into());
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        namespaces::reconcile(cluster);
        provisioner::reconcile_in(cluster, &one);
        workloads::reconcile_in(cluster, &one);
        best = best.min(started.elapsed().as_secs_f64() * 1e3);
    }
    println!("controller pass after a change in one namespace, best of 5: {best:.1} ms");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let spec = std::env::var("NKVM_BENCH_SCALE").unwrap_or_else(|_| DEFAULT_SCALE.into());
    let spec = ScaleSpec::parse(&spec).expect("NKVM_BENCH_SCALE");
    let options = SandboxOptions {
        seed: Some(spec),
        ..Default::default()
    };
    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();
    let sandbox = TestSandbox::start_with(options).await;
    println!(
        "seed {spec}: Sandbox::start took {:.2} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "RSS after seeding: {:.0} MiB ({:.0} MiB before starting)",
        mib(status_kib("VmRSS:")),
        mib(rss_before)
    );
    time_controller_pass(sandbox.sandbox().cluster());
    idle_cpu("after seeding").await;

    let kubeconfig = sandbox.kubeconfig().to_path_buf();
    let client = sandbox.client().await;
    time_raw_listing(&client, "pods", "/api/v1/pods").await;
    time_raw_listing(&client, "PVCs", "/api/v1/persistentvolumeclaims").await;
    let pods: Api<Pod> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    // The DaemonSet and bootstrap add nothing beyond the spec: pods and PVCs are exact.
    time_listing("pods", &pods, spec.pods).await;
    time_listing("PVCs", &pvcs, spec.pvcs).await;
    latency_during_full_pass(&client).await;
    time_kubectl(&kubeconfig, "pods", spec.pods).await;
    time_kubectl(&kubeconfig, "pvc", spec.pvcs).await;
    idle_cpu("after listing").await;
    println!(
        "peak RSS (VmHWM): {:.0} MiB; RSS now {:.0} MiB",
        mib(status_kib("VmHWM:")),
        mib(status_kib("VmRSS:"))
    );
    sandbox.shutdown().await;
}
