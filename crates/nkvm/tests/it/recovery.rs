//! `nkvm recover` and `nkvm index rebuild` against the sandbox: a crash's leftovers (a job
//! still `running`, a partial archive, a helper pod) are cleaned up without touching anything
//! else, and a lost history database comes back from the archive store's manifests.

use crate::harness::Env;

const CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";

/// A pod that writes to the claim and sleeps; `labels` is YAML flow-map content.
fn workload(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec:\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'echo hello > /data/greeting; sleep 3600']\n    volumeMounts: [{{name: d, mountPath: /data}}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {{claimName: data}}\n"
    )
}

/// A pod labelled as a helper of job `id` would be. It mounts nothing: a second pod on the
/// ReadWriteOnce claim could land on another node and never start.
fn stale_helper(name: &str, id: &str, instance: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app.kubernetes.io/managed-by: nkvm, nkvm.io/job-id: {id}, nkvm.io/instance: '{instance}'}}\nspec:\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '3600']\n"
    )
}

async fn pod_names(env: &Env, ns: &str) -> Vec<String> {
    let out = env
        .kubectl(&["-n", ns, "get", "pods", "-o", "name"], None)
        .await
        .ok();
    out.stdout.lines().map(String::from).collect()
}

async fn shop_with_app(env: &Env) {
    env.kubectl(&["create", "namespace", "shop"], None)
        .await
        .ok();
    env.apply(Some("shop"), CLAIM).await;
    env.apply(Some("shop"), &workload("app", "app: shop")).await;
    env.wait_ready("shop", "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_history_database_is_rebuilt_from_the_store() {
    let env = Env::start().await;
    shop_with_app(&env).await;
    let out = env.nkvm(&["backup", "shop/data", "-o", "json"]).await.ok();
    let backed_up = out.json()[0].clone();
    assert_eq!(backed_up["status"], "succeeded", "{backed_up}");
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", env.db().display());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {path}: {e}"),
        }
    }

    let out = env.nkvm(&["backups", "-o", "json"]).await.ok();
    let listed = out.json();
    let rows = listed.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{listed}");
    let row = &rows[0];
    assert!(
        out.stderr.contains("restored 1 backups"),
        "the rebuild is logged: {}",
        out.stderr
    );
    for key in [
        "id",
        "cluster",
        "namespace",
        "pvc",
        "pvcUid",
        "startedAt",
        "bytesRead",
        "bytesStored",
        "sha256",
        "compression",
        "artifact",
    ] {
        assert_eq!(
            row[key], backed_up[key],
            "{key} differs: {row} vs {backed_up}"
        );
    }
    assert_eq!(row["status"], "succeeded");
    let id = row["id"].as_str().expect("id");
    env.nkvm(&["verify", id]).await.ok();

    let again = env
        .nkvm(&["index", "rebuild", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(again["added"], 0, "{again}");
    assert_eq!(again["archives"], 1, "{again}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_interrupts_running_jobs_and_sweeps_partials_and_helper_pods() {
    let env = Env::start().await;
    shop_with_app(&env).await;
    let id = "20261126T010203Z-deadbeef";
    let instance = nkvm_history::History::open(&env.db())
        .and_then(|h| h.instance_id())
        .expect("this nkvm's instance id");
    env.apply(
        Some("shop"),
        &stale_helper("nkvm-backup-crashed", id, &instance),
    )
    .await;
    // Another nkvm's helper (another history database) is not this instance's to sweep.
    env.apply(
        Some("shop"),
        &stale_helper(
            "nkvm-backup-theirs",
            "20261126T010203Z-0000beef",
            "someone-else",
        ),
    )
    .await;
    env.wait_ready("shop", "nkvm-backup-crashed").await;
    {
        let history = nkvm_history::History::open(&env.db()).expect("history opens");
        history
            .record_backup(&nkvm_history::BackupRow {
                id: id.into(),
                cluster: "test-cluster".into(),
                namespace: "shop".into(),
                pvc: "data".into(),
                pvc_uid: "uid".into(),
                trigger: nkvm_domain::Trigger::Cli,
                actor: "test".into(),
                status: nkvm_domain::JobStatus::Running,
                stage: nkvm_domain::Stage::Stream,
                started_at: "2026-11-26T01:02:03Z".into(),
                compression: "zstd".into(),
                helper_pod: "nkvm-backup-crashed".into(),
                ..Default::default()
            })
            .expect("row recorded");
    }
    let claim_dir = env.backups().join("test-cluster/shop/data");
    std::fs::create_dir_all(&claim_dir).expect("claim dir");
    let partial = claim_dir.join(format!(".{id}.tar.zst.partial"));
    std::fs::write(&partial, b"half an archive").expect("partial written");

    let report = env.nkvm(&["recover", "-o", "json"]).await.ok().json();
    assert_eq!(report["interrupted"], serde_json::json!([id]), "{report}");
    assert_eq!(
        report["helperPodsDeleted"],
        serde_json::json!(["shop/nkvm-backup-crashed"]),
        "{report}"
    );
    assert_eq!(report["partialsDeleted"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");

    let history = nkvm_history::History::open(&env.db()).expect("history opens");
    let row = history.backup(id).expect("query").expect("row kept");
    assert_eq!(row.status, nkvm_domain::JobStatus::Interrupted);
    assert!(row.finished_at.is_some(), "{row:?}");
    assert!(!partial.exists(), "the partial archive is deleted");
    assert_eq!(
        pod_names(&env, "shop").await,
        ["pod/app", "pod/nkvm-backup-theirs"]
    );

    let again = env.nkvm(&["recover"]).await.ok();
    assert!(again.stdout.contains("nothing to recover"), "{again:?}");
    env.stop().await;
}
