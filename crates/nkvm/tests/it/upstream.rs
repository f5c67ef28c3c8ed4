//! nkvm against the upstream control plane (kube-apiserver, etcd, controller-manager and
//! scheduler built from the official modules, pods run by nkvm's node agent): a backup and a
//! restore into another namespace go through the real API server, claims come from the real
//! hostPath provisioner, and the restored files equal the originals, less their setuid bit.
//!
//! Needs `NKVM_UPSTREAM_BIN`; skipped without it on a developer machine, failed under CI.

use kube_sandbox::testing::{KubectlRun, eventually, kubectl, start_upstream, upstream_bin_dir};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SOURCE: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    command: [sh, -c, \"mkdir -p /data/logs && for i in $(seq 1 50); do seq 1 2000 > /data/logs/f$i.txt; done && printf x > /data/suid && chmod 4755 /data/suid && sleep 3600\"]\n    volumeMounts: [{name: d, mountPath: /data}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {claimName: data}\n";

async fn k(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> KubectlRun {
    kubectl(
        kubeconfig,
        args,
        stdin.map(str::as_bytes),
        Duration::from_secs(60),
    )
    .await
}

/// A namespace whose `default` ServiceAccount exists (pods are refused until it does).
async fn namespace(kubeconfig: &Path, ns: &str) {
    k(kubeconfig, &["create", "namespace", ns], None).await.ok();
    eventually(
        "the namespace's default ServiceAccount",
        Duration::from_secs(30),
        async || {
            let sa = k(
                kubeconfig,
                &["-n", ns, "get", "serviceaccount", "default"],
                None,
            )
            .await;
            (sa.code == 0).then_some(())
        },
    )
    .await;
}

async fn nkvm(dir: &Path, kubeconfig: &Path, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--db")
        .arg(dir.join("data/backups.db"))
        .arg("--backup-dir")
        .arg(dir.join("backups"))
        .args(["--helper-image", "busybox"])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("NKVM_NAMESPACES")
        .kill_on_drop(true)
        .output()
        .await
        .expect("nkvm runs");
    assert!(
        out.status.success(),
        "nkvm {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nkvm printed JSON")
}

/// The host directory of the hostPath volume bound to claim `ns/data`.
async fn volume_dir(kubeconfig: &Path, ns: &str) -> PathBuf {
    let pv = k(
        kubeconfig,
        &[
            "-n",
            ns,
            "get",
            "pvc",
            "data",
            "-o",
            "jsonpath={.spec.volumeName}",
        ],
        None,
    )
    .await
    .ok()
    .stdout;
    let path = k(
        kubeconfig,
        &["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"],
        None,
    )
    .await
    .ok()
    .stdout;
    PathBuf::from(path)
}

/// Every file below `root` (relative path, mode, contents), sorted.
fn tree(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                todo.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).expect("below root");
            let data = std::fs::read(&path).expect("read file");
            out.push((rel.display().to_string(), meta.permissions().mode(), data));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_and_a_restore_into_another_namespace_go_through_kube_apiserver() {
    let Some(bin_dir) = upstream_bin_dir() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (cluster, kc) = start_upstream(bin_dir, dir.path()).await;
    namespace(&kc, "shop").await;
    k(&kc, &["-n", "shop", "apply", "-f", "-"], Some(SOURCE))
        .await
        .ok();
    k(
        &kc,
        &[
            "-n",
            "shop",
            "wait",
            "--for=condition=Ready",
            "pod/app",
            "--timeout=60s",
        ],
        None,
    )
    .await
    .ok();
    let source = volume_dir(&kc, "shop").await;
    eventually("the app's files", Duration::from_secs(30), async || {
        std::fs::metadata(source.join("suid")).ok()
    })
    .await;

    let backup = nkvm(dir.path(), &kc, &["backup", "shop/data", "-o", "json"]).await;
    assert_eq!(backup[0]["status"], "succeeded", "{backup}");
    let id = backup[0]["id"].as_str().expect("id").to_string();
    namespace(&kc, "restored").await;
    let restore = nkvm(
        dir.path(),
        &kc,
        &[
            "restore",
            &id,
            "--to",
            "restored/data",
            "--create",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(restore["status"], "succeeded", "{restore}");
    assert_eq!(restore["created"], true);

    let (before, after) = (tree(&source), tree(&volume_dir(&kc, "restored").await));
    assert_eq!(before.len(), 51, "50 logs and the setuid file");
    let strip = |t: &[(String, u32, Vec<u8>)]| -> Vec<(String, u32, Vec<u8>)> {
        t.iter()
            .map(|(p, m, d)| (p.clone(), m & 0o777, d.clone()))
            .collect()
    };
    assert_eq!(
        strip(&before),
        strip(&after),
        "the same files, bytes and modes"
    );
    let suid = |t: &[(String, u32, Vec<u8>)]| t.iter().find(|f| f.0 == "suid").map(|f| f.1);
    assert_eq!(suid(&before).map(|m| m & 0o4000), Some(0o4000));
    assert_eq!(
        suid(&after).map(|m| m & 0o4000),
        Some(0),
        "a restore into another namespace clears the setuid bit"
    );
    let helpers = k(
        &kc,
        &[
            "get",
            "pods",
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=nkvm",
            "-o",
            "name",
        ],
        None,
    )
    .await
    .ok();
    assert_eq!(helpers.stdout.trim(), "", "no helper pod left");
    for ns in ["shop", "restored"] {
        let _ = std::fs::remove_dir_all(volume_dir(&kc, ns).await);
    }
    cluster.shutdown().await;
}
