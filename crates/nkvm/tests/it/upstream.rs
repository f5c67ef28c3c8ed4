//! nkvm against the upstream control plane (kube-apiserver, etcd, controller-manager and
//! scheduler built from the official modules, pods run by nkvm's node agent): a backup and a
//! restore into another namespace go through the real API server, claims come from the real
//! hostPath provisioner, and the restored files equal the originals, less their setuid bit.
//! A direct upload to a real S3 server (the agent reading its target on the exec's stdin) and
//! its restore go the same way.
//!
//! Needs `NKVM_UPSTREAM_BIN`; skipped without it on a developer machine, failed under CI.

use crate::backup::{namespace, no_helper_pods};
use crate::harness::Env;
use kube_sandbox::testing::eventually;
use nkvm_store::testing::{S3Server, SECRET_KEY};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SOURCE: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    command: [sh, -c, \"mkdir -p /data/logs && for i in $(seq 1 50); do seq 1 2000 > /data/logs/f$i.txt; done && printf x > /data/suid && chmod 4755 /data/suid && sleep 3600\"]\n    volumeMounts: [{name: d, mountPath: /data}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {claimName: data}\n";

/// The host directory of the hostPath volume bound to claim `ns/data`.
async fn volume_dir(env: &Env, ns: &str) -> PathBuf {
    let jsonpath = "jsonpath={.spec.volumeName}";
    let pvc = ["-n", ns, "get", "pvc", "data", "-o", jsonpath];
    let pv = env.kubectl(&pvc, None).await.ok().stdout;
    let path = ["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"];
    PathBuf::from(env.kubectl(&path, None).await.ok().stdout)
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

/// `shop/data` with the app's files written; returns its host directory.
async fn source_claim(env: &Env) -> PathBuf {
    namespace(env, "shop").await;
    env.apply(Some("shop"), SOURCE).await;
    env.wait_ready("shop", "app").await;
    let source = volume_dir(env, "shop").await;
    eventually("the app's files", Duration::from_secs(30), async || {
        std::fs::metadata(source.join("suid")).ok()
    })
    .await;
    source
}

/// No helper pod is left; the volumes' data goes (disk is limited), then the cluster.
async fn finish(env: Env) {
    no_helper_pods(&env).await;
    for ns in ["shop", "restored"] {
        let _ = std::fs::remove_dir_all(volume_dir(&env, ns).await);
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_to_s3_and_its_restore_go_through_kube_apiserver() {
    let Some(env) = Env::start_upstream().await else {
        return;
    };
    let server = S3Server::start(&env.dir.path().join("s3"));
    let stores = crate::stores::stores_file(&env, &server, SECRET_KEY);
    let source = source_claim(&env).await;
    // The upload's target and credentials reach the agent on the exec's stdin, through the
    // real API server's exec.
    let out = crate::stores::nkvm(
        &env,
        &stores,
        &["backup", "shop/data", "--store", "offsite", "-o", "json"],
    )
    .await;
    let backup = out.ok().json();
    assert_eq!(
        (&backup[0]["status"], &backup[0]["dataPath"]),
        (&"succeeded".into(), &"direct".into()),
        "{backup}"
    );
    let id = backup[0]["id"].as_str().expect("id").to_string();
    namespace(&env, "restored").await;
    let to = [
        "restore",
        &id,
        "--to",
        "restored/data",
        "--create",
        "-o",
        "json",
    ];
    let restore = crate::stores::nkvm(&env, &stores, &to).await.ok().json();
    assert_eq!(restore["status"], "succeeded", "{restore}");
    let contents = |t: Vec<(String, u32, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        t.into_iter().map(|(p, _, d)| (p, d)).collect()
    };
    assert_eq!(
        contents(tree(&source)),
        contents(tree(&volume_dir(&env, "restored").await)),
        "the same files and bytes from the bucket"
    );
    assert!(server.open_uploads().is_empty());
    finish(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_and_a_restore_into_another_namespace_go_through_kube_apiserver() {
    let Some(env) = Env::start_upstream().await else {
        return;
    };
    let source = source_claim(&env).await;

    let backup = env
        .nkvm(&["backup", "shop/data", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(backup[0]["status"], "succeeded", "{backup}");
    let id = backup[0]["id"].as_str().expect("id").to_string();
    namespace(&env, "restored").await;
    let to = [
        "restore",
        &id,
        "--to",
        "restored/data",
        "--create",
        "-o",
        "json",
    ];
    let restore = env.nkvm(&to).await.ok().json();
    assert_eq!(restore["status"], "succeeded", "{restore}");
    assert_eq!(restore["created"], true);

    let (before, after) = (tree(&source), tree(&volume_dir(&env, "restored").await));
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
    finish(env).await;
}
