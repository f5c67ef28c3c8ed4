//! Injected faults, each seen through plain kubectl as nkvm's engine will meet it: exec
//! streams cut or stalled mid-stdout, API errors exactly `count` times, slow and never-ready
//! pods, failing image pulls, and the admin-only `/sandbox/faults` endpoint. Sandbox only:
//! against a real cluster these tests skip themselves.

use crate::harness::{Run, TestCluster, eventually, kubectl_bin};
use kube_sandbox::SandboxOptions;
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Bytes each exec asks for: far more than any budget below.
const TOTAL: usize = 10_000_000;

async fn with_faults(faults: &[&str]) -> TestCluster {
    TestCluster::start_with_options(SandboxOptions {
        faults: faults.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    })
    .await
}

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// A namespace with a Ready pod `p`.
async fn running_pod(c: &TestCluster, prefix: &str) -> String {
    let ns = c.namespace(prefix).await;
    c.apply_in(&ns, &pod("p", "busybox:1.36")).await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/p",
        "--timeout=30s",
    ])
    .await
    .ok();
    ns
}

/// `head -c TOTAL /dev/zero` in pod `p`; the shell carries `marker` so tests can find it.
async fn exec_zeros(c: &TestCluster, ns: &str, marker: &str) -> Run {
    let script = format!("head -c {TOTAL} /dev/zero; : {marker}");
    c.kubectl_with(
        &["-n", ns, "exec", "p", "--", "sh", "-c", &script],
        None,
        Duration::from_secs(60),
    )
    .await
}

/// The `faults` array of `GET /sandbox/faults`.
async fn listed_faults(c: &TestCluster) -> Value {
    let out = c.kubectl(&["get", "--raw", "/sandbox/faults"]).await.ok();
    let body: Value = serde_json::from_str(&out.stdout).expect("the listing is JSON");
    body["faults"].clone()
}

/// After a fault with count=1 fired: the faulted exec's process goes away, and the next
/// stream is whole.
async fn killed_then_whole(c: &TestCluster, ns: &str, marker: &str, what: &str) {
    eventually(what, Duration::from_secs(10), || async {
        (processes_mentioning(marker) == 0).then_some(())
    })
    .await;
    let whole = exec_zeros(c, ns, marker).await.ok();
    assert_eq!(
        whole.stdout.len(),
        TOTAL,
        "count=1: the next stream is whole"
    );
}

fn processes_mentioning(marker: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

async fn jsonpath(c: &TestCluster, ns: &str, object: &str, path: &str) -> String {
    let arg = format!("jsonpath={path}");
    c.kubectl(&["-n", ns, "get", object, "-o", &arg])
        .await
        .ok()
        .stdout
}

/// `reason:message` of every Event about `name`, one a line.
async fn events_of(c: &TestCluster, ns: &str, name: &str) -> String {
    let selector = format!("involvedObject.name={name}");
    c.kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        &selector,
        "-o",
        "jsonpath={range .items[*]}{.type}:{.reason}:{.message}{\"\\n\"}{end}",
    ])
    .await
    .ok()
    .stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_cut_after_drops_count_streams_mid_stdout_and_kills_the_process() {
    let c = with_faults(&["exec-cut-after=1000000,count=1"]).await;
    if !c.is_sandbox() {
        return;
    }
    let ns = running_pod(&c, "cut").await;
    let marker = format!("cut-marker-{}", std::process::id());
    let cut = exec_zeros(&c, &ns, &marker).await;
    assert_ne!(cut.code, 0, "a cut stream must fail: {}", cut.stderr);
    assert_eq!(cut.stdout.len(), 1_000_000, "stdout stops at the budget");
    // No status frame and no close frame: kubectl (1.32) sees the socket end abnormally.
    assert!(
        cut.stderr
            .contains("websocket: close 1006 (abnormal closure): unexpected EOF")
            && !cut.stderr.contains("command terminated"),
        "{}",
        cut.stderr
    );
    killed_then_whole(&c, &ns, &marker, "the cut exec's process to be killed").await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stall_after_keeps_kubectl_waiting_until_it_gives_up() {
    let c = with_faults(&["exec-stall-after=65536,count=1"]).await;
    if !c.is_sandbox() {
        return;
    }
    let ns = running_pod(&c, "stall").await;
    let marker = format!("stall-marker-{}", std::process::id());
    let script = format!("head -c {TOTAL} /dev/zero; : {marker}");
    let mut kubectl = tokio::process::Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["-n", &ns, "exec", "p", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let received = Arc::new(AtomicUsize::new(0));
    let mut stdout = kubectl.stdout.take().expect("stdout piped");
    let counter = received.clone();
    let reading = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = stdout.read(&mut buf).await {
            counter.fetch_add(n, Ordering::SeqCst);
        }
    });
    let waited = tokio::time::timeout(Duration::from_secs(4), kubectl.wait()).await;
    assert!(
        waited.is_err(),
        "kubectl must still be waiting, got {waited:?}"
    );
    assert_eq!(
        received.load(Ordering::SeqCst),
        65536,
        "nothing after the budget"
    );
    assert!(
        processes_mentioning(&marker) >= 1,
        "the process is kept, not read"
    );
    kubectl.kill().await.expect("kill kubectl");
    let _ = tokio::time::timeout(Duration::from_secs(5), reading).await;
    killed_then_whole(&c, &ns, &marker, "the stalled exec's process to be killed").await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_fail_kubectl_exactly_count_times_with_the_injected_status() {
    let c = with_faults(&[
        "api-error=create:pods:500,count=2",
        "api-error=delete:pods:403,count=1",
        "api-error=list:persistentvolumeclaims:503,count=1",
    ])
    .await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("apierr").await;
    let manifest = pod("p", "busybox:1.36");
    let args = ["-n", ns.as_str(), "create", "-f", "-"];
    let create = || c.kubectl_with(&args, Some(manifest.as_bytes()), Duration::from_secs(30));
    for attempt in 1..=2 {
        let failed = create().await;
        assert_eq!(failed.code, 1, "attempt {attempt}: {failed:?}");
        assert!(
            failed.stderr.contains("Error from server (InternalError)")
                && failed
                    .stderr
                    .contains("injected fault api-error=create:pods:500,count=2"),
            "attempt {attempt}: {}",
            failed.stderr
        );
    }
    create().await.ok();
    let refused = c
        .kubectl(&["-n", &ns, "delete", "pod", "p", "--wait=false"])
        .await;
    assert!(
        refused.code == 1 && refused.stderr.contains("Error from server (Forbidden)"),
        "{refused:?}"
    );
    let unavailable = c.kubectl(&["-n", &ns, "get", "pvc"]).await;
    assert!(
        unavailable.code == 1
            && unavailable
                .stderr
                .contains("Error from server (ServiceUnavailable)"),
        "{unavailable:?}"
    );
    c.kubectl(&["-n", &ns, "get", "pvc"]).await.ok();
    c.kubectl(&["-n", &ns, "delete", "pod", "p", "--wait=false"])
        .await
        .ok();
    assert_eq!(listed_faults(&c).await, json!([]), "all counts used up");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_start_delay_keeps_containers_creating_before_ready() {
    let c = with_faults(&["pod-start-delay=3"]).await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("delay").await;
    let start = Instant::now();
    c.apply_in(&ns, &pod("p", "busybox:1.36")).await;
    let waiting = eventually(
        "the pod to be scheduled",
        Duration::from_secs(10),
        || async {
            let reason = jsonpath(
                &c,
                &ns,
                "pod/p",
                "{.status.containerStatuses[0].state.waiting.reason}",
            )
            .await;
            (!reason.is_empty()).then_some(reason)
        },
    )
    .await;
    assert_eq!(waiting, "ContainerCreating");
    assert_eq!(
        jsonpath(&c, &ns, "pod/p", "{.status.phase}").await,
        "Pending"
    );
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/p",
        "--timeout=30s",
    ])
    .await
    .ok();
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(3), "Ready after only {took:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_never_ready_leaves_matching_pods_unschedulable_until_cleared() {
    let c = with_faults(&["pod-never-ready=stuck-"]).await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("never").await;
    c.apply_in(
        &ns,
        &(pod("stuck-1", "busybox:1.36") + "---\n" + &pod("fine", "busybox:1.36")),
    )
    .await;
    // A pod bound by nodeName skips the scheduler; the kubelet holds it instead.
    let pinned =
        pod("stuck-pinned", "busybox:1.36").replace("spec:\n", "spec:\n  nodeName: node-a\n");
    c.apply_in(&ns, &pinned).await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/fine",
        "--timeout=30s",
    ])
    .await
    .ok();
    let condition = eventually("PodScheduled=False", Duration::from_secs(10), || async {
        let got = jsonpath(
            &c,
            &ns,
            "pod/stuck-1",
            "{.status.conditions[?(@.type==\"PodScheduled\")].status}/{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        )
        .await;
        (got != "/").then_some(got)
    })
    .await;
    assert_eq!(condition, "False/Unschedulable");
    assert_eq!(
        jsonpath(&c, &ns, "pod/stuck-1", "{.status.phase}").await,
        "Pending"
    );
    let described = c
        .kubectl(&["-n", &ns, "describe", "pod", "stuck-1"])
        .await
        .ok();
    assert!(
        described.stdout.contains("FailedScheduling")
            && described
                .stdout
                .contains("(injected fault pod-never-ready=stuck-)"),
        "{}",
        described.stdout
    );
    assert!(
        events_of(&c, &ns, "stuck-1").await.contains(
            "Warning:FailedScheduling:0/2 nodes are available: 2 node(s) refused the pod"
        ),
    );
    let held = eventually(
        "the pinned pod's container status",
        Duration::from_secs(10),
        || async {
            let got = jsonpath(
                &c,
                &ns,
                "pod/stuck-pinned",
                "{.status.phase}/{.status.containerStatuses[0].state.waiting.reason}",
            )
            .await;
            (!got.ends_with('/')).then_some(got)
        },
    )
    .await;
    assert_eq!(held, "Pending/ContainerCreating");
    c.kubectl(&["delete", "--raw", "/sandbox/faults"])
        .await
        .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/stuck-1",
        "pod/stuck-pinned",
        "--timeout=30s",
    ])
    .await
    .ok();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_fail_shows_err_image_pull_then_back_off() {
    let c = with_faults(&["image-pull-fail=registry.invalid/"]).await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("pull").await;
    c.apply_in(&ns, &pod("p", "registry.invalid/app:1")).await;
    let reason = || async {
        jsonpath(
            &c,
            &ns,
            "pod/p",
            "{.status.containerStatuses[0].state.waiting.reason}",
        )
        .await
    };
    eventually("ErrImagePull", Duration::from_secs(20), || async {
        (reason().await == "ErrImagePull").then_some(())
    })
    .await;
    eventually("ImagePullBackOff", Duration::from_secs(20), || async {
        (reason().await == "ImagePullBackOff").then_some(())
    })
    .await;
    let message = jsonpath(
        &c,
        &ns,
        "pod/p",
        "{.status.containerStatuses[0].state.waiting.message}",
    )
    .await;
    assert_eq!(message, "Back-off pulling image \"registry.invalid/app:1\"");
    assert_eq!(
        jsonpath(&c, &ns, "pod/p", "{.status.phase}").await,
        "Pending"
    );
    let events = events_of(&c, &ns, "p").await;
    for line in [
        "Warning:Failed:Failed to pull image \"registry.invalid/app:1\": ",
        "(injected fault image-pull-fail=registry.invalid/)",
        "Warning:Failed:Error: ErrImagePull",
        "Normal:BackOff:Back-off pulling image \"registry.invalid/app:1\"",
        "Warning:Failed:Error: ImagePullBackOff",
    ] {
        assert!(events.contains(line), "{line:?} missing from:\n{events}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_lists_adds_and_clears_faults() {
    let c = with_faults(&["pod-start-delay=0.5"]).await;
    if !c.is_sandbox() {
        return;
    }
    assert_eq!(
        listed_faults(&c).await,
        json!([{"id": 1, "fault": "pod-start-delay", "spec": "pod-start-delay=0.5", "remaining": null}])
    );
    let dir = tempfile::tempdir().expect("dir");
    let file = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path.to_string_lossy().into_owned()
    };
    let good = file(
        "good.json",
        r#"{"spec": "api-error=get:configmaps:404,count=1"}"#,
    );
    let added = c
        .kubectl(&["create", "--raw", "/sandbox/faults", "-f", &good])
        .await
        .ok();
    let added: Value = serde_json::from_str(&added.stdout).expect("JSON");
    assert_eq!(
        (&added["spec"], &added["remaining"]),
        (&json!("api-error=get:configmaps:404,count=1"), &json!(1))
    );
    let ns = c.namespace("admin").await;
    let missing = c
        .kubectl(&["-n", &ns, "get", "configmap", "kube-root-ca.crt"])
        .await;
    assert!(
        missing.code == 1
            && missing.stderr.contains(
                "Error from server (NotFound): injected fault api-error=get:configmaps:404,count=1"
            ),
        "{missing:?}"
    );
    c.kubectl(&["-n", &ns, "get", "configmap", "kube-root-ca.crt"])
        .await
        .ok();

    let bad = file("bad.json", r#"{"spec": "exec-cut-after=lots"}"#);
    let refused = c
        .kubectl(&["create", "--raw", "/sandbox/faults", "-f", &bad])
        .await;
    assert!(
        refused.code == 1
            && refused.stderr.contains("Error from server (BadRequest)")
            && refused.stderr.contains(r#"BYTES "lots""#)
            && refused.stderr.contains("exec-stall-after=BYTES[,count=N]"),
        "{refused:?}"
    );

    c.kubectl(&["-n", &ns, "create", "sa", "x"]).await.ok();
    let token = c.kubectl(&["-n", &ns, "create", "token", "x"]).await.ok();
    let token = token.stdout.trim();
    for args in [
        &["get", "--raw", "/sandbox/faults"][..],
        &["create", "--raw", "/sandbox/faults", "-f", &good],
        &["delete", "--raw", "/sandbox/faults"],
    ] {
        let mut full = vec!["--token", token];
        full.extend_from_slice(args);
        let out = c.kubectl(&full).await;
        assert!(
            out.code == 1
                && out.stderr.contains("Error from server (Forbidden)")
                && out
                    .stderr
                    .contains(&format!("User \"system:serviceaccount:{ns}:x\" cannot"))
                && out.stderr.contains("path \"/sandbox/faults\""),
            "{args:?}: {out:?}"
        );
    }
    let anonymous = c
        .kubectl(&["--token", "not-a-token", "get", "--raw", "/sandbox/faults"])
        .await;
    assert!(
        anonymous.code == 1 && anonymous.stderr.contains("Unauthorized"),
        "{anonymous:?}"
    );

    let cleared = c
        .kubectl(&["delete", "--raw", "/sandbox/faults"])
        .await
        .ok();
    let cleared: Value = serde_json::from_str(&cleared.stdout).expect("JSON");
    assert_eq!(cleared["cleared"], 1);
    assert_eq!(listed_faults(&c).await, json!([]));
    c.stop().await;
}
