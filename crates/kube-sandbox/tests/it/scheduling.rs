//! Where pods land and why they don't: taints, node selectors, ReadWriteOnce Multi-Attach,
//! ReadWriteOncePod exclusivity, Block claims, and read-only mounts. Sandbox-only (a real
//! cluster has other nodes).

use crate::harness::{TestCluster, claim, eventually, pod_with_claim};
use std::time::Duration;

fn on_node(name: &str, node: &str, claim: &str, extra_spec: &str) -> String {
    pod_with_claim(name, claim, "sleep 3600").replace(
        "spec:\n",
        &format!("spec:\n  nodeName: {node}\n{extra_spec}"),
    )
}

async fn events_for(c: &TestCluster, ns: &str, pod: &str) -> String {
    let sel = format!("involvedObject.name={pod}");
    c.kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        &sel,
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
    .await
    .ok()
    .stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_and_selectors_decide_the_node_and_explain_refusals() {
    let c = TestCluster::start_with(vec!["dedicated=backup:NoSchedule".into()]).await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("sched").await;
    let pinned = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pinned\nspec:\n  nodeSelector:\n    kubernetes.io/hostname: node-b\n  containers:\n  - name: c\n    image: busybox\n";
    c.apply_in(&ns, pinned).await;
    let reason = eventually("FailedScheduling", Duration::from_secs(20), || async {
        let ev = events_for(&c, &ns, "pinned").await;
        ev.contains("FailedScheduling").then_some(ev)
    })
    .await;
    assert!(
        reason.contains("0/2 nodes are available")
            && reason.contains("untolerated taint {dedicated: backup}"),
        "{reason}"
    );
    let phase = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "pod",
            "pinned",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .await
        .ok();
    assert_eq!(phase.stdout, "Pending");
    let tolerant = pinned.replace("pinned", "tolerant").replace(
        "  containers:",
        "  tolerations:\n  - {key: dedicated, value: backup, effect: NoSchedule}\n  containers:",
    );
    c.apply_in(&ns, &tolerant).await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/tolerant",
        "--timeout=30s",
    ])
    .await
    .ok();
    let node = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "pod",
            "tolerant",
            "-o",
            "jsonpath={.spec.nodeName}",
        ])
        .await
        .ok();
    assert_eq!(node.stdout, "node-b");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_write_once_claim_on_a_second_node_gets_a_multi_attach_error() {
    let c = TestCluster::start().await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("rwo").await;
    c.apply_in(&ns, &claim("data", "standard", "ReadWriteOnce"))
        .await;
    c.apply_in(&ns, &on_node("first", "node-a", "data", ""))
        .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/first",
        "--timeout=30s",
    ])
    .await
    .ok();
    c.apply_in(&ns, &on_node("same-node", "node-a", "data", ""))
        .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/same-node",
        "--timeout=30s",
    ])
    .await
    .ok();
    c.apply_in(&ns, &on_node("other-node", "node-b", "data", ""))
        .await;
    let ev = eventually("Multi-Attach event", Duration::from_secs(20), || async {
        let ev = events_for(&c, &ns, "other-node").await;
        ev.contains("FailedAttachVolume").then_some(ev)
    })
    .await;
    assert!(
        ev.contains("Multi-Attach error for volume \"pvc-")
            && ev.contains("Volume is already used by pod(s)"),
        "{ev}"
    );
    let waiting = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "pod",
            "other-node",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ])
        .await
        .ok();
    assert_eq!(waiting.stdout, "ContainerCreating");
    c.kubectl(&[
        "-n",
        &ns,
        "delete",
        "pod",
        "first",
        "same-node",
        "--grace-period=0",
        "--force",
    ])
    .await
    .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/other-node",
        "--timeout=30s",
    ])
    .await
    .ok();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_write_once_pod_claim_admits_one_pod_and_block_claims_refuse_mounts() {
    let c = TestCluster::start().await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("rwop").await;
    c.apply_in(&ns, &claim("solo", "standard", "ReadWriteOncePod"))
        .await;
    c.apply_in(&ns, &pod_with_claim("owner", "solo", "sleep 3600"))
        .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/owner",
        "--timeout=30s",
    ])
    .await
    .ok();
    c.apply_in(&ns, &pod_with_claim("intruder", "solo", "sleep 3600"))
        .await;
    let ev = eventually("FailedScheduling", Duration::from_secs(20), || async {
        let ev = events_for(&c, &ns, "intruder").await;
        ev.contains("FailedScheduling").then_some(ev)
    })
    .await;
    assert!(ev.contains("ReadWriteOncePod access mode"), "{ev}");

    let block = claim("raw", "standard", "ReadWriteOnce")
        .replace("spec:\n", "spec:\n  volumeMode: Block\n");
    c.apply_in(&ns, &block).await;
    c.apply_in(&ns, &pod_with_claim("mounter", "raw", "sleep 3600"))
        .await;
    let ev = eventually("FailedMount", Duration::from_secs(20), || async {
        let ev = events_for(&c, &ns, "mounter").await;
        ev.contains("FailedMount").then_some(ev)
    })
    .await;
    assert!(ev.contains("volumeMode Block"), "{ev}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mounts_refuse_writes_and_volumes_are_shared_through_the_pv() {
    let c = TestCluster::start().await;
    let ns = c.namespace("ro").await;
    // ReadWriteMany: the two pods may land on different nodes.
    c.apply_in(&ns, &claim("data", "standard", "ReadWriteMany"))
        .await;
    c.apply_in(
        &ns,
        &pod_with_claim("writer", "data", "echo payload > /data/file; sleep 3600"),
    )
    .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/writer",
        "--timeout=30s",
    ])
    .await
    .ok();
    let reader = pod_with_claim("reader", "data", "sleep 3600").replace(
        "      mountPath: /data\n",
        "      mountPath: /data\n      readOnly: true\n",
    );
    c.apply_in(&ns, &reader).await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/reader",
        "--timeout=30s",
    ])
    .await
    .ok();
    let read = c
        .kubectl(&["-n", &ns, "exec", "reader", "--", "cat", "/data/file"])
        .await
        .ok();
    assert_eq!(read.stdout, "payload\n");
    let write = c
        .kubectl(&[
            "-n",
            &ns,
            "exec",
            "reader",
            "--",
            "sh",
            "-c",
            "echo x > /data/other",
        ])
        .await;
    assert_ne!(write.code, 0);
    assert!(
        write.stderr.contains("Read-only file system"),
        "{}",
        write.stderr
    );
    let host = c
        .kubectl(&[
            "-n",
            &ns,
            "exec",
            "reader",
            "--",
            "sh",
            "-c",
            "ls /root /home 2>&1; test -e /work && echo host-visible || echo isolated",
        ])
        .await
        .ok();
    assert!(
        host.stdout.trim_end().ends_with("isolated"),
        "{}",
        host.stdout
    );
    c.stop().await;
}
