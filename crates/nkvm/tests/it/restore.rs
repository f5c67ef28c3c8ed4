//! `nkvm restore` against the sandbox: a backup restored into a new claim in another
//! namespace reads back identical file by file; an existing claim is refused while in use and
//! emptied with --clean; refusals (allowlist, tampered or hostile archives) happen before any
//! pod or claim is created; a stream cut mid-restore fails honestly with no helper pod left.

use crate::backup::{AWKWARD, CLAIM, json_results, namespace, no_helper_pods, setup};
use crate::harness::Env;
use kube_sandbox::SandboxOptions;
use serde_json::Value;

/// Every entry with its type, mode, owners, link target, link count and mtime; non-directories
/// with size and blocks on disk (sparse files stay sparse); every file's sha256. Directory
/// sizes depend on the filesystem's history, so they are left out.
fn listing(root: &str) -> String {
    format!(
        "cd {root} && {{ find . -mindepth 1 ! -type d -printf '%p|%y|%m|%U|%G|%s|%b|%l|%n|%T@\\n'; \
         find . -mindepth 1 -type d -printf '%p|%y|%m|%U|%G|%T@\\n'; }} | LC_ALL=C sort && \
         find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum"
    )
}

async fn exec_listing(env: &Env, ns: &str, pod: &str) -> String {
    env.kubectl(
        &["-n", ns, "exec", pod, "--", "sh", "-c", &listing("/data")],
        None,
    )
    .await
    .ok()
    .stdout
}

/// A pod `reader` that mounts `claim` in `ns` and sleeps, to look at the volume.
pub(crate) async fn reader(env: &Env, ns: &str, claim: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: reader}}\nspec:\n  containers:\n  - name: r\n    image: busybox\n    command: [sleep, '3600']\n    volumeMounts: [{{name: d, mountPath: /data}}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {{claimName: {claim}}}\n"
    );
    env.apply(Some(ns), &yaml).await;
    env.wait_ready(ns, "reader").await;
}

async fn backup_id(env: &Env, claim: &str) -> String {
    let out = env.nkvm(&["backup", claim, "-o", "json"]).await.ok();
    let r = &json_results(&out).await[0];
    assert_eq!(r["status"], "succeeded", "{r}");
    r["id"].as_str().expect("id").to_string()
}

async fn claims_in(env: &Env, ns: &str) -> String {
    env.kubectl(&["-n", ns, "get", "pvc", "-o", "name"], None)
        .await
        .stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_new_claim_elsewhere_matches_file_by_file() {
    restored_elsewhere_matches(Env::start().await, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_new_claim_elsewhere_matches_file_by_file_on_upstream_kubernetes()
{
    if let Some(env) = Env::start_upstream().await {
        restored_elsewhere_matches(env, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_made_backup_restores_through_a_generic_helper_image() {
    restored_elsewhere_matches(Env::start().await, Some(nkvm_engine::GENERIC_HELPER_IMAGE)).await;
}

/// A backup of an awkward tree (made through the agent) restored with --create into another
/// namespace: the plan, the run, and the new volume listed file by file equal to the source.
/// With a generic `helper_image` the restore takes the tar path, else the agent.
async fn restored_elsewhere_matches(env: Env, helper_image: Option<&str>) {
    setup(&env, "shop", AWKWARD).await;
    let id = backup_id(&env, "shop/data").await;
    namespace(&env, "restored").await;
    let image: Vec<&str> = helper_image
        .map(|i| vec!["--helper-image", i])
        .unwrap_or_default();
    let path = if helper_image.is_some() {
        "tar"
    } else {
        "agent"
    };

    let planned = env
        .nkvm(
            &[
                &[
                    "restore",
                    &id,
                    "--to",
                    "restored/copy",
                    "--create",
                    "--dry-run",
                ][..],
                &["-o", "json"],
                &image,
            ]
            .concat(),
        )
        .await
        .ok();
    let plan = planned.json();
    assert_eq!(plan["dataPath"], path, "{plan}");
    assert_eq!(plan["create"], true, "{plan}");
    assert_eq!(plan["refusals"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["newClaim"]["size"], "1Gi", "{plan}");
    assert_eq!(
        claims_in(&env, "restored").await.trim(),
        "",
        "a dry run creates nothing"
    );

    let ran = env
        .nkvm(
            &[
                &["restore", &id, "--to", "restored/copy", "--create"][..],
                &["-o", "json"],
                &image,
            ]
            .concat(),
        )
        .await
        .ok();
    let r = ran.json();
    assert_eq!(r["dataPath"], path, "{r}");
    for key in [
        "id",
        "backupId",
        "status",
        "target",
        "created",
        "bytesWritten",
        "startedAt",
        "finishedAt",
        "stage",
        "error",
    ] {
        assert!(r.get(key).is_some(), "missing {key} in {r}");
    }
    assert_eq!(
        (&r["status"], &r["created"], &r["target"]["pvc"]),
        (
            &Value::from("succeeded"),
            &Value::from(true),
            &Value::from("copy")
        ),
        "{r}"
    );
    assert_eq!(r["backupId"], id.as_str());
    assert!(r["bytesWritten"].as_u64().unwrap() > 3_000_000, "{r}");
    no_helper_pods(&env).await;

    reader(&env, "restored", "copy").await;
    let source = exec_listing(&env, "shop", "app").await;
    let copy = exec_listing(&env, "restored", "reader").await;
    assert!(source.contains("sparse.img|f|"), "{source}");
    assert_eq!(copy, source, "the restored volume differs from the source");

    let listed = env.nkvm(&["restores", "-o", "json"]).await.ok().json();
    assert_eq!(listed[0]["id"], r["id"]);
    assert_eq!(listed[0]["status"], "succeeded");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_claim_is_refused_while_in_use_and_emptied_with_clean() {
    let env = Env::start().await;
    setup(
        &env,
        "shop",
        "mkdir -p /data/a && echo one > /data/a/1 && echo two > /data/2 && sleep 3600",
    )
    .await;
    let id = backup_id(&env, "shop/data").await;
    setup(
        &env,
        "other",
        "echo stale > /data/stale.txt && echo old > /data/2 && sleep 3600",
    )
    .await;

    let refused = env.nkvm(&["restore", &id, "--to", "other/data"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("running pods mount other/data (app)"),
        "{}",
        refused.stderr
    );
    no_helper_pods(&env).await;

    let outside = env
        .nkvm(&[
            "--namespaces",
            "shop",
            "restore",
            &id,
            "--to",
            "other/fresh",
            "--create",
        ])
        .await;
    assert_eq!(outside.code, 1, "{outside:?}");
    assert!(outside.stderr.contains("allowlist"), "{}", outside.stderr);
    assert!(!claims_in(&env, "other").await.contains("fresh"));

    env.kubectl(&["-n", "other", "delete", "pod", "app", "--wait"], None)
        .await
        .ok();
    let cleaned = env
        .nkvm(&[
            "restore",
            &id,
            "--to",
            "other/data",
            "--clean",
            "-o",
            "json",
        ])
        .await
        .ok();
    let r = cleaned.json();
    assert_eq!(
        (&r["status"], &r["cleaned"]),
        (&Value::from("succeeded"), &Value::from(true)),
        "{r}"
    );
    reader(&env, "other", "data").await;
    assert_eq!(
        exec_listing(&env, "other", "reader").await,
        exec_listing(&env, "shop", "app").await,
        "--clean leaves exactly the backup's files"
    );
    env.stop().await;
}

/// Rewrites the archive of backup `id` with `tar_bytes` (compressed with zstd) under a new
/// backup id, with a manifest that matches it, as someone with write access to the store
/// could; returns the new id after the index picked it up.
async fn plant_archive(env: &Env, id: &str, tar_bytes: &[u8]) -> String {
    let row = env.nkvm(&["backups", "-o", "json"]).await.ok().json();
    let artifact = row
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .expect("row")["artifact"]
        .as_str()
        .unwrap()
        .to_string();
    let new_id = format!("{}-0badc0de", &id[..16]);
    let dir = env
        .backups()
        .join(&artifact)
        .parent()
        .unwrap()
        .to_path_buf();
    let compressed = zstd_compress(tar_bytes);
    let archive = dir.join(format!("{new_id}.tar.zst"));
    std::fs::write(&archive, &compressed).unwrap();
    let manifest_path = env.backups().join(artifact.replace(".tar.zst", ".json"));
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    manifest["backupId"] = new_id.clone().into();
    manifest["artifact"] = archive
        .strip_prefix(env.backups())
        .unwrap()
        .to_string_lossy()
        .into_owned()
        .into();
    manifest["bytesStored"] = compressed.len().into();
    manifest["bytesRead"] = tar_bytes.len().into();
    manifest["sha256"] = sha256_hex(&compressed).into();
    std::fs::write(
        dir.join(format!("{new_id}.json")),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    env.nkvm(&["index", "rebuild"]).await.ok();
    new_id
}

fn zstd_compress(data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, data).unwrap();
    let out = std::process::Command::new("zstd")
        .args(["-q", "-c"])
        .arg(&input)
        .output()
        .expect("zstd runs");
    assert!(out.status.success());
    out.stdout
}

fn sha256_hex(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, data).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&input)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// A tar whose second member climbs out of the extraction directory. GNU tar refuses to
/// write such names, so the second header is renamed by hand and its checksum redone.
fn hostile_tar() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.txt"), "fine\n").unwrap();
    std::fs::write(dir.path().join("xx.txt"), "evil\n").unwrap();
    let out = std::process::Command::new("tar")
        .args(["--format=ustar", "-cf", "-", "-C"])
        .arg(dir.path())
        .args(["ok.txt", "xx.txt"])
        .output()
        .expect("tar runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tar = out.stdout;
    let header = tar
        .chunks(512)
        .position(|block| block.starts_with(b"xx.txt\0"))
        .expect("second header")
        * 512;
    let name = b"../../etc/evil.txt";
    tar[header..header + 100].fill(0);
    tar[header..header + name.len()].copy_from_slice(name);
    tar[header + 148..header + 156].fill(b' ');
    let sum: u32 = tar[header..header + 512]
        .iter()
        .map(|b| u32::from(*b))
        .sum();
    tar[header + 148..header + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    tar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_hostile_archives_are_refused_before_anything_is_created() {
    let env = Env::start().await;
    setup(&env, "shop", "echo hello > /data/f && sleep 3600").await;
    let id = backup_id(&env, "shop/data").await;

    let hostile = plant_archive(&env, &id, &hostile_tar()).await;
    let verified = env.nkvm(&["verify", &hostile]).await;
    assert_eq!(verified.code, 1, "{verified:?}");
    assert!(
        verified.stderr.contains("../../etc/evil.txt"),
        "{}",
        verified.stderr
    );
    let refused = env
        .nkvm(&["restore", &hostile, "--to", "shop/evil", "--create"])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("refuses archives that could write outside the volume"),
        "{}",
        refused.stderr
    );

    let row = env.nkvm(&["backups", "-o", "json"]).await.ok().json();
    let artifact = row
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()["artifact"]
        .as_str()
        .unwrap()
        .to_string();
    let path = env.backups().join(artifact);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let tampered = env
        .nkvm(&["restore", &id, "--to", "shop/copy", "--create"])
        .await;
    assert_eq!(tampered.code, 1, "{tampered:?}");
    assert!(tampered.stderr.contains("sha256"), "{}", tampered.stderr);
    assert!(
        tampered.stderr.contains("nothing was sent to the cluster"),
        "{}",
        tampered.stderr
    );
    let claims = claims_in(&env, "shop").await;
    assert!(
        !claims.contains("copy") && !claims.contains("evil"),
        "{claims}"
    );
    no_helper_pods(&env).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_restore_fails_and_leaves_no_helper_pod() {
    let env = Env::start_with(SandboxOptions {
        faults: vec!["exec-stdin-cut-after=1000000,count=1".into()],
        ..Default::default()
    })
    .await;
    setup(&env, "shop", AWKWARD).await;
    let id = backup_id(&env, "shop/data").await;
    env.apply(Some("shop"), &CLAIM.replace("name: data", "name: target"))
        .await;
    let out = env
        .nkvm(&["restore", &id, "--to", "shop/target", "-o", "json"])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    let r = out.json();
    assert_eq!(
        (&r["status"], &r["stage"]),
        (&Value::from("failed"), &Value::from("stream")),
        "{r}"
    );
    assert!(
        r["bytesWritten"].as_u64().unwrap() >= 1_000_000,
        "the cut came after the fault's budget: {r}"
    );
    no_helper_pods(&env).await;
    let listed = env.nkvm(&["restores", "-o", "json"]).await.ok().json();
    assert_eq!(listed[0]["status"], "failed");
    env.stop().await;
}
