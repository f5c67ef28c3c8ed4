//! `nkvm backup`, `backups` and `verify` against the sandbox: byte-exact round trips of awkward
//! trees, and every way a backup can fail ending as a failed job with no archive kept and no
//! helper pod left behind.

use crate::harness::{Env, Ran};
use kube_sandbox::SandboxOptions;
use serde_json::Value;

pub(crate) const CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";

pub(crate) fn writer(script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: app}}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    command: [sh, -c, {script:?}]\n    volumeMounts: [{{name: d, mountPath: /data}}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {{claimName: data}}\n"
    )
}

/// An awkward tree: odd names, long names, empty dirs, links, a sparse file, modes, owners.
pub(crate) const AWKWARD: &str = r#"set -e
cd /data
mkdir -p "dir with spaces/ünïcödé" empty/nested deep/$(printf 'd%.0s' $(seq 1 60))
printf 'plain\n' > "dir with spaces/ünïcödé/file.txt"
printf 'x' > "$(printf 'name-\377\376-not-utf8')"
printf 'long\n' > "deep/$(printf 'd%.0s' $(seq 1 60))/$(printf 'f%.0s' $(seq 1 140))"
head -c 3000000 /dev/urandom > random.bin
ln -s "dir with spaces/ünïcödé/file.txt" symlink
ln random.bin hardlink.bin
dd if=/dev/urandom of=sparse.img bs=4096 count=1 seek=25600 2>/dev/null
chmod 600 random.bin
chmod 751 "dir with spaces"
chown 1234:5678 "dir with spaces/ünïcödé/file.txt"
touch -d '2001-02-03 04:05:06' symlink -h
touch -d '2011-12-13 14:15:16' "dir with spaces"
sleep 3600
"#;

/// Asserts that `dir` and every directory under it is 0700 and every file 0600; returns how
/// many directories and files it checked.
fn private_modes(dir: &std::path::Path) -> (usize, usize) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::symlink_metadata(p)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let (mut dirs, mut files) = (1, 0);
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            let (d, f) = private_modes(&path);
            (dirs, files) = (dirs + d, files + f);
        } else {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
    }
    (dirs, files)
}

fn listing_script(root: &str) -> String {
    format!(
        "cd {root} && find . -printf '%p|%y|%m|%U|%G|%s|%l|%n|%T@\\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum"
    )
}

pub(crate) async fn json_results(out: &Ran) -> Vec<Value> {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("nkvm printed no JSON ({e}): {out:?}"))
}

pub(crate) async fn no_helper_pods(env: &Env) {
    let left = env
        .kubectl(
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
    assert_eq!(left.stdout.trim(), "", "helper pods left behind");
}

fn stored_files(env: &Env) -> Vec<String> {
    let out = std::process::Command::new("find")
        .arg(env.backups())
        .arg("-type")
        .arg("f")
        .output()
        .expect("find runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Creates namespace `ns` and waits for its default ServiceAccount: a real controller-manager
/// makes it a moment later, and pods are refused until it exists.
pub(crate) async fn namespace(env: &Env, ns: &str) {
    env.kubectl(&["create", "namespace", ns], None).await.ok();
    kube_sandbox::testing::eventually(
        "the namespace's default ServiceAccount",
        std::time::Duration::from_secs(30),
        async || {
            let sa = env
                .kubectl(&["-n", ns, "get", "serviceaccount", "default"], None)
                .await;
            (sa.code == 0).then_some(())
        },
    )
    .await;
}

pub(crate) async fn setup(env: &Env, ns: &str, script: &str) {
    namespace(env, ns).await;
    env.apply(Some(ns), CLAIM).await;
    env.apply(Some(ns), &writer(script)).await;
    env.wait_ready(ns, "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awkward_tree_round_trips_byte_exact_and_verifies() {
    awkward_tree_round_trip(Env::start().await, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awkward_tree_round_trips_byte_exact_through_a_generic_helper_image() {
    awkward_tree_round_trip(Env::start().await, Some(nkvm_engine::GENERIC_HELPER_IMAGE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awkward_tree_round_trips_byte_exact_and_verifies_on_upstream_kubernetes() {
    if let Some(env) = Env::start_upstream().await {
        awkward_tree_round_trip(env, None).await;
    }
}

/// Backs up a tree of odd names, links, a sparse file, modes and owners; the archive holds
/// exactly what the pod sees, verifies, and a damaged copy is caught. With a generic
/// `helper_image` the job takes the tar path, else nkvm's own image and the agent.
async fn awkward_tree_round_trip(env: Env, helper_image: Option<&str>) {
    setup(&env, "shop", AWKWARD).await;
    let mut args = vec!["backup", "shop/data", "-o", "json"];
    if let Some(image) = helper_image {
        args.extend(["--helper-image", image]);
    }
    let out = env.nkvm(&args).await.ok();
    let results = json_results(&out).await;
    let r = &results[0];
    assert_eq!(r["status"], "succeeded", "{r}");
    let path = if helper_image.is_some() {
        "tar"
    } else {
        "agent"
    };
    assert_eq!(r["dataPath"], path, "{r}");
    for key in [
        "id",
        "cluster",
        "namespace",
        "pvc",
        "pvcUid",
        "startedAt",
        "finishedAt",
        "bytesRead",
        "bytesStored",
        "sha256",
        "compression",
        "artifact",
        "stage",
        "error",
    ] {
        assert!(r.get(key).is_some(), "missing {key} in {r}");
    }
    no_helper_pods(&env).await;
    // Volume data and the history stay private to nkvm's user on a shared host.
    let private = private_modes(&env.backups());
    assert_eq!(
        private,
        (4, 2),
        "directories and files checked under the store"
    );
    assert_eq!(
        private_modes(&env.db().with_file_name("")).1,
        1,
        "the history file"
    );
    let archive = env
        .backups()
        .join(r["artifact"].as_str().expect("artifact"));
    assert!(archive.to_string_lossy().ends_with(".tar.zst"));
    assert!(
        archive.with_extension("").with_extension("json").exists(),
        "manifest beside the archive"
    );

    let dir = tempfile::tempdir().expect("dir");
    let untar = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | tar --numeric-owner --same-owner -xpf - -C '{}'",
            archive.display(),
            dir.path().display()
        ))
        .output()
        .expect("tar runs");
    assert!(
        untar.status.success(),
        "{}",
        String::from_utf8_lossy(&untar.stderr)
    );
    let inside = env
        .kubectl(
            &[
                "-n",
                "shop",
                "exec",
                "app",
                "--",
                "sh",
                "-c",
                &listing_script("/data"),
            ],
            None,
        )
        .await
        .ok()
        .stdout;
    let local = std::process::Command::new("sh")
        .arg("-c")
        .arg(listing_script(&dir.path().display().to_string()))
        .output()
        .expect("find runs");
    let local = String::from_utf8_lossy(&local.stdout).into_owned();
    // The root directory's own mtime changes as files are written; compare everything else.
    let strip_root = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with(".|"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip_root(&local),
        strip_root(&inside),
        "extracted tree differs from the volume"
    );
    let sparse = std::fs::metadata(dir.path().join("sparse.img")).expect("sparse file");
    use std::os::unix::fs::MetadataExt;
    assert!(
        sparse.blocks() * 512 < sparse.len() / 4,
        "sparse file stays sparse"
    );

    let id = r["id"].as_str().expect("id");
    let verified = env.nkvm(&["verify", id]).await.ok();
    assert!(verified.stdout.starts_with("ok: "), "{}", verified.stdout);
    let listed = env
        .nkvm(&["backups", "-n", "shop", "-o", "json"])
        .await
        .ok();
    assert!(listed.stdout.contains(id));
    let inventory = env.nkvm(&["pvcs", "-n", "shop", "-o", "json"]).await.ok();
    assert!(
        inventory.stdout.contains(&format!(
            "\"lastSuccessfulBackup\": \"{}\"",
            r["finishedAt"].as_str().unwrap_or("")
        )),
        "{}",
        inventory.stdout
    );

    let mut bytes = std::fs::read(&archive).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&archive, bytes).expect("write");
    let damaged = env.nkvm(&["verify", id]).await;
    assert_eq!(damaged.code, 1);
    assert!(
        damaged.stderr.contains("is damaged: its sha256 is"),
        "{}",
        damaged.stderr
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_a_pod_that_never_runs_and_a_changing_volume_all_fail_and_leave_nothing() {
    let env = Env::start_with(SandboxOptions {
        faults: vec!["exec-cut-after=200000,count=1".into()],
        ..Default::default()
    })
    .await;
    setup(
        &env,
        "shop",
        "head -c 2000000 /dev/urandom > /data/f; sleep 3600",
    )
    .await;
    let cut = json_results(&env.nkvm(&["backup", "shop/data", "-o", "json"]).await).await;
    assert_eq!(cut[0]["status"], "failed", "{}", cut[0]);
    assert_eq!(cut[0]["stage"], "stream");
    assert!(
        cut[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ended without an exit status")),
        "{}",
        cut[0]
    );
    assert_eq!(cut[0]["artifact"], "");
    assert!(
        stored_files(&env).is_empty(),
        "no partial archive: {:?}",
        stored_files(&env)
    );
    no_helper_pods(&env).await;
    // The fault was for one stream: the next backup succeeds.
    let again = json_results(&env.nkvm(&["backup", "shop/data", "-o", "json"]).await.ok()).await;
    assert_eq!(again[0]["status"], "succeeded", "{}", again[0]);

    env.kubectl(
        &["create", "--raw", "/sandbox/faults", "-f", "-"],
        Some(r#"{"spec": "pod-never-ready=nkvm-"}"#),
    )
    .await
    .ok();
    let stuck = env
        .nkvm(&[
            "--helper-pod-timeout",
            "3",
            "backup",
            "shop/data",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(stuck.code, 1);
    let stuck = json_results(&stuck).await;
    assert_eq!(
        (stuck[0]["status"].as_str(), stuck[0]["stage"].as_str()),
        (Some("failed"), Some("helper-pod")),
        "{}",
        stuck[0]
    );
    // Pinned beside its ReadWriteOnce consumer (nodeName), the helper skips the scheduler and
    // waits in ContainerCreating; the error says so and how to look closer.
    assert!(
        stuck[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not start") && e.contains("ContainerCreating")),
        "{}",
        stuck[0]
    );
    no_helper_pods(&env).await;
    env.kubectl(&["delete", "--raw", "/sandbox/faults"], None)
        .await
        .ok();

    setup(&env, "busy", "head -c 20000000 /dev/urandom > /data/grow; while true; do head -c 65536 /dev/urandom >> /data/grow; done").await;
    let busy = json_results(&env.nkvm(&["backup", "busy/data", "-o", "json"]).await).await;
    assert_eq!(busy[0]["status"], "failed", "{}", busy[0]);
    assert!(
        busy[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("files changed while tar read them")),
        "{}",
        busy[0]
    );
    no_helper_pods(&env).await;
    let history = env.nkvm(&["backups", "-o", "json"]).await.ok();
    let rows: Vec<Value> = serde_json::from_str(&history.stdout).expect("json");
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "succeeded").count(),
        1,
        "only the one good backup counts"
    );
    let kept: Vec<String> = stored_files(&env);
    assert_eq!(kept.len(), 2, "one archive and its manifest: {kept:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_claims_are_refused_before_any_pod_and_same_second_backups_do_not_collide() {
    let env = Env::start().await;
    setup(&env, "shop", "sleep 3600").await;
    let extra = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: lazy}\nspec: {accessModes: [ReadWriteOnce], storageClassName: wffc, resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: raw}\nspec: {accessModes: [ReadWriteOnce], volumeMode: Block, resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: solo}\nspec: {accessModes: [ReadWriteOncePod], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: solo-user}\nspec:\n  containers: [{name: c, image: busybox, command: [sleep, '3600'], volumeMounts: [{name: d, mountPath: /d}]}]\n  volumes: [{name: d, persistentVolumeClaim: {claimName: solo}}]\n";
    env.apply(Some("shop"), extra).await;
    env.kubectl(
        &[
            "-n",
            "shop",
            "wait",
            "--for=condition=Ready",
            "pod/solo-user",
            "--timeout=60s",
        ],
        None,
    )
    .await
    .ok();
    let refused = env
        .nkvm(&["backup", "shop/lazy", "shop/raw", "shop/solo", "-o", "json"])
        .await;
    assert_eq!(refused.code, 1);
    let results = json_results(&refused).await;
    let reasons: Vec<&str> = results
        .iter()
        .map(|r| r["error"].as_str().unwrap_or(""))
        .collect();
    assert!(reasons[0].contains("not bound"), "{reasons:?}");
    assert!(reasons[1].contains("volumeMode Block"), "{reasons:?}");
    assert!(
        reasons[2].contains("ReadWriteOncePod claim in use by pod solo-user"),
        "{reasons:?}"
    );
    assert!(results.iter().all(|r| r["stage"] == "resolve"));
    let events = env
        .kubectl(
            &[
                "-n",
                "shop",
                "get",
                "events",
                "-o",
                "jsonpath={.items[*].involvedObject.name}",
            ],
            None,
        )
        .await
        .ok();
    assert!(
        !events.stdout.contains("nkvm-"),
        "no helper pod was ever created: {}",
        events.stdout
    );
    let outside = env
        .nkvm(&["--namespaces", "other", "backup", "shop/data"])
        .await;
    assert_eq!(outside.code, 1);
    assert!(
        outside
            .stderr
            .contains("namespace \"shop\" is not in nkvm's allowlist (other)"),
        "{}",
        outside.stderr
    );
    let bad = env.nkvm(&["backup", "not-a-reference"]).await;
    assert_eq!(bad.code, 2);

    let twice = json_results(
        &env.nkvm(&[
            "backup",
            "shop/data",
            "shop/data",
            "--parallel",
            "2",
            "-o",
            "json",
        ])
        .await
        .ok(),
    )
    .await;
    assert_eq!(twice.len(), 2);
    assert!(
        twice.iter().all(|r| r["status"] == "succeeded"),
        "{twice:?}"
    );
    assert_ne!(twice[0]["id"], twice[1]["id"]);
    assert_ne!(twice[0]["artifact"], twice[1]["artifact"]);
    no_helper_pods(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_running_backup_cleanly() {
    let env = Env::start_with(SandboxOptions {
        faults: vec!["exec-stall-after=100000".into()],
        ..Default::default()
    })
    .await;
    setup(
        &env,
        "shop",
        "head -c 3000000 /dev/urandom > /data/f; sleep 3600",
    )
    .await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nkvm"));
    cmd.arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .arg("--db")
        .arg(env.db())
        .arg("--backup-dir")
        .arg(env.backups());
    cmd.args(["backup", "shop/data", "-o", "json"])
        .env_remove("KUBECONFIG");
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("nkvm runs");
    let pid = child.id().expect("pid").to_string();
    // Wait until the helper pod exists and the stream has stalled.
    let mut seen = false;
    for _ in 0..100 {
        let pods = env
            .kubectl(
                &[
                    "-n",
                    "shop",
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/managed-by=nkvm",
                    "-o",
                    "name",
                ],
                None,
            )
            .await
            .ok();
        if !pods.stdout.trim().is_empty() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the helper pod never appeared");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("nkvm stops after Ctrl-C")
        .expect("output");
    let results: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(results[0]["status"], "cancelled", "{}", results[0]);
    assert_eq!(results[0]["artifact"], "");
    assert!(
        stored_files(&env).is_empty(),
        "a cancelled backup keeps no file: {:?}",
        stored_files(&env)
    );
    no_helper_pods(&env).await;
    let history = env.nkvm(&["backups", "-o", "json"]).await.ok();
    assert!(
        history.stdout.contains("\"status\": \"cancelled\""),
        "{}",
        history.stdout
    );
    env.stop().await;
}

/// Makes the history refuse audit entries whose action matches `pattern` (SQL LIKE), as a
/// full or broken database would.
fn refuse_audit(env: &Env, pattern: &str) {
    let db = rusqlite::Connection::open(env.db()).expect("history opens");
    db.execute_batch(&format!(
        "DROP TRIGGER IF EXISTS refuse_audit;
         CREATE TRIGGER refuse_audit BEFORE INSERT ON audit WHEN NEW.action LIKE '{pattern}'
         BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END;"
    ))
    .expect("trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_not_started_when_its_audit_entry_cannot_be_written() {
    let env = Env::start().await;
    setup(&env, "shop", "printf data > /data/f; sleep 3600").await;
    // A first backup creates the history database.
    env.nkvm(&["backup", "shop/data", "-o", "json"]).await.ok();
    refuse_audit(&env, "backup.start");
    let refused = env.nkvm(&["backup", "shop/data", "-o", "json"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    let refused = json_results(&refused).await;
    assert_eq!(refused[0]["status"], "failed", "{}", refused[0]);
    assert_eq!(refused[0]["failureKind"], "storage_unavailable");
    assert!(
        refused[0]["error"].as_str().is_some_and(
            |e| e.contains("writing the audit log failed, so the backup was not started")
        ),
        "{}",
        refused[0]
    );
    no_helper_pods(&env).await;
    assert_eq!(
        stored_files(&env).len(),
        2,
        "only the first archive and its manifest"
    );
    let rows = env.nkvm(&["backups", "-o", "json"]).await.ok().json();
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(1),
        "no row for a job that never started"
    );

    // A closing entry that fails is reported, but the backup itself stands.
    refuse_audit(&env, "backup.succeeded");
    let closed = env.nkvm(&["backup", "shop/data", "-o", "json"]).await.ok();
    assert_eq!(json_results(&closed).await[0]["status"], "succeeded");
    assert!(
        closed
            .stderr
            .contains("writing the closing audit entry failed"),
        "{}",
        closed.stderr
    );
    env.stop().await;
}

/// The agent's trailer is what proves an archive whole: a trailer that never comes, one whose
/// sha256 differs from what arrived, and a stream that stalls all fail the job, keep nothing
/// in the store and leave no helper pod; a restore whose archive hashes differently in the
/// agent stops tar before the archive's end. The faults come from the agent itself
/// (`--agent-fault`, tests only), deterministically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_lying_or_stalled_agent_trailer_fails_the_job_and_keeps_nothing() {
    let env = Env::start().await;
    setup(
        &env,
        "shop",
        "head -c 3000000 /dev/urandom > /data/f; seq 1 300000 > /data/text; sleep 3600",
    )
    .await;
    for (fault, says) in [
        ("omit-trailer", "between frames, before the trailer"),
        ("wrong-sha256", "is not the one the agent sent"),
        ("stall-after=1000000", "made no progress for 3 s"),
    ] {
        let out = env
            .nkvm(&[
                "--agent-fault",
                fault,
                "--exec-idle-timeout",
                "3",
                "backup",
                "shop/data",
                "-o",
                "json",
            ])
            .await;
        assert_eq!(out.code, 1, "{fault}: {out:?}");
        let r = &json_results(&out).await[0];
        assert_eq!(
            (
                r["status"].as_str(),
                r["stage"].as_str(),
                r["dataPath"].as_str()
            ),
            (Some("failed"), Some("stream"), Some("agent")),
            "{fault}: {r}"
        );
        assert!(
            r["error"].as_str().is_some_and(|e| e.contains(says)),
            "{fault}: {r}"
        );
        assert_eq!(r["artifact"], "", "{fault}: {r}");
        assert!(
            stored_files(&env).is_empty(),
            "{fault}: nothing kept: {:?}",
            stored_files(&env)
        );
        no_helper_pods(&env).await;
    }

    let good = json_results(&env.nkvm(&["backup", "shop/data", "-o", "json"]).await.ok()).await;
    let id = good[0]["id"].as_str().expect("id");
    namespace(&env, "restored").await;
    let lied = env
        .nkvm(&[
            "--agent-fault",
            "wrong-sha256",
            "restore",
            id,
            "--to",
            "restored/copy",
            "--create",
            "-o",
            "json",
        ])
        .await;
    let r = lied.json();
    assert_eq!(
        (r["status"].as_str(), r["dataPath"].as_str()),
        (Some("failed"), Some("agent")),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("tar was stopped before the archive's end")),
        "{r}"
    );
    no_helper_pods(&env).await;
    env.stop().await;
}
