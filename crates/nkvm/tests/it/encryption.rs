//! Client-side encryption with age, proven with Debian's own `age` CLI: a key made by
//! `age-keygen`, a backup to a store with `encryption:`, the stored object opened by hand with
//! `age -d | zstd -d | tar -x`, and restores and deep verifies that need the identity and are
//! refused without it before any helper pod exists.

use crate::backup::{json_results, namespace, no_helper_pods, setup};
use crate::harness::Env;
use crate::restore::reader;
use crate::stores::nkvm;
use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: &str = "set -e; mkdir -p /data/a/b; head -c 2000000 /dev/urandom > /data/a/b/r.bin; printf 'hello\\n' > /data/hello.txt; sleep 3600";

/// Lists a tree's files with their sha256, the same way inside a pod and on this machine.
const LISTING: &str = "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";

/// Whether Debian's age CLI is installed: a failure under CI, a skip on a developer machine
/// without it (scripts/install-store-test-deps.sh installs it).
pub(crate) fn age_cli() -> bool {
    let found = Command::new("age-keygen").arg("--version").output().is_ok()
        && Command::new("age").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the age CLI is missing; run scripts/install-store-test-deps.sh"
        );
        eprintln!("skipped: the age CLI is not installed (scripts/install-store-test-deps.sh)");
    }
    found
}

/// A new identity file made by `age-keygen`, and its public key.
pub(crate) fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let made = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen runs");
    assert!(made.status.success(), "age-keygen: {made:?}");
    let public = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .expect("age-keygen -y runs");
    assert!(public.status.success(), "age-keygen -y: {public:?}");
    (
        path,
        String::from_utf8(public.stdout).unwrap().trim().to_string(),
    )
}

/// A stores file with `vault`, a local directory store encrypting for `recipient`.
pub(crate) fn vault_stores(env: &Env, recipient: &str) -> PathBuf {
    let file = env.dir.path().join("stores.yaml");
    let yaml = format!(
        "stores:\n- name: vault\n  type: local\n  path: {}\n  encryption:\n    ageRecipients: [\"{recipient}\"]\n",
        env.dir.path().join("vault").display()
    );
    std::fs::write(&file, yaml).unwrap();
    file
}

/// The claim's files and their sha256, as seen in pod `pod`.
pub(crate) async fn pod_listing(env: &Env, ns: &str, pod: &str) -> String {
    let script = format!("cd /data && {LISTING}");
    env.kubectl(&["-n", ns, "exec", pod, "--", "sh", "-c", &script], None)
        .await
        .ok()
        .stdout
}

/// Opens an encrypted archive by hand as the docs say, and lists what came out.
pub(crate) fn opened_by_hand(key: &Path, archive: &Path, into: &Path) -> String {
    std::fs::create_dir_all(into).unwrap();
    let script = format!(
        "set -euo pipefail; age -d -i '{}' '{}' | zstd -d | tar -x -C '{}'; cd '{}' && {LISTING}",
        key.display(),
        archive.display(),
        into.display(),
        into.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "opening by hand: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_backup_opens_with_the_age_cli_and_restores_only_with_its_identity() {
    if !age_cli() {
        return;
    }
    let env = Env::start().await;
    let (key, public) = age_keygen(env.dir.path(), "key.txt");
    let (other_key, _) = age_keygen(env.dir.path(), "other.txt");
    let stores = vault_stores(&env, &public);
    setup(&env, "shop", FILES).await;
    let source = pod_listing(&env, "shop", "app").await;
    assert!(source.contains("r.bin"), "{source}");

    let r = &crate::stores::backup_to(&env, &stores, "vault").await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let artifact = r["artifact"].as_str().unwrap();
    assert!(
        artifact.ends_with(&format!("{id}.tar.zst.age")),
        "{artifact}"
    );
    let archive = env.dir.path().join("vault").join(artifact);

    // The manifest stays readable and says what is inside; the key never appears.
    let manifest_path = archive.with_file_name(format!("{id}.json"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["formatVersion"], 2, "{manifest}");
    assert_eq!(manifest["encryption"]["recipients"][0], public.as_str());
    assert_eq!(manifest["sha256"], r["sha256"], "{manifest}");
    let secret = std::fs::read_to_string(&key).unwrap();
    let secret = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    assert!(
        !std::fs::read_to_string(&manifest_path)
            .unwrap()
            .contains(secret)
    );

    // An operator restores by hand with Debian's age, zstd and tar: byte for byte.
    let by_hand = opened_by_hand(&key, &archive, &env.dir.path().join("by-hand"));
    assert_eq!(by_hand, source);

    let listed = nkvm(&env, &stores, &["stores", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed[1]["ageRecipients"][0], public.as_str(), "{listed}");
    assert!(listed[0].get("ageRecipients").is_none(), "{listed}");

    // The generic tar path writes through the same store: an age file too.
    let generic = nkvm(
        &env,
        &stores,
        &[
            "backup",
            "shop/data",
            "--store",
            "vault",
            "--helper-image",
            nkvm_engine::GENERIC_HELPER_IMAGE,
            "-o",
            "json",
        ],
    )
    .await;
    let g = &json_results(&generic).await[0];
    assert_eq!(g["status"], "succeeded", "{g}");
    let generic_archive = env
        .dir
        .path()
        .join("vault")
        .join(g["artifact"].as_str().unwrap());
    let generic_by_hand = opened_by_hand(&key, &generic_archive, &env.dir.path().join("generic"));
    assert_eq!(generic_by_hand, source);

    verifies_by_hash_and_deep_with_the_identity(&env, &stores, &id, &key, r).await;
    refuses_restores_without_the_right_identity(&env, &stores, &id, &other_key).await;
    restores_through_both_data_paths(&env, &stores, &id, &key, &source).await;
    env.stop().await;
}

async fn verifies_by_hash_and_deep_with_the_identity(
    env: &Env,
    stores: &Path,
    id: &str,
    key: &Path,
    backup: &serde_json::Value,
) {
    let plain = nkvm(env, stores, &["verify", id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(plain["sha256"], backup["sha256"], "{plain}");
    assert_eq!(
        (&plain["encrypted"], &plain["contentsChecked"]),
        (&true.into(), &false.into()),
        "{plain}"
    );
    let refused = nkvm(env, stores, &["verify", id, "--deep"]).await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("--identity"), "{refused:?}");
    let key = key.to_str().unwrap();
    let deep = nkvm(
        env,
        stores,
        &["verify", id, "--deep", "--identity", key, "-o", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(deep["contentsChecked"], true, "{deep}");
    assert!(deep["entries"].as_u64().unwrap() >= 3, "{deep}");
    assert_eq!(deep["sha256"], backup["sha256"], "{deep}");
}

async fn refuses_restores_without_the_right_identity(
    env: &Env,
    stores: &Path,
    id: &str,
    other_key: &Path,
) {
    namespace(env, "restored").await;
    let other = other_key.to_str().unwrap();
    for (args, expected) in [
        (vec![], "--identity FILE or NKVM_AGE_IDENTITY_FILE"),
        (
            vec!["--identity", other],
            "other.txt (NKVM_AGE_IDENTITY_FILE / --identity) matches none of the archive's recipients",
        ),
    ] {
        let mut all = vec![
            "restore",
            id,
            "--to",
            "restored/copy",
            "--create",
            "-o",
            "json",
        ];
        all.extend(args);
        let ran = nkvm(env, stores, &all).await;
        assert_ne!(ran.code, 0, "{ran:?}");
        let said = format!("{}{}", ran.stdout, ran.stderr);
        assert!(said.contains(expected), "{ran:?}");
        no_helper_pods(env).await;
        let claims = env
            .kubectl(&["-n", "restored", "get", "pvc", "-o", "name"], None)
            .await
            .stdout;
        assert_eq!(claims.trim(), "", "nothing was created: {claims}");
    }
}

async fn restores_through_both_data_paths(
    env: &Env,
    stores: &Path,
    id: &str,
    key: &Path,
    source: &str,
) {
    let key = key.to_str().unwrap();
    for (claim, image) in [
        ("agent", None),
        ("generic", Some(nkvm_engine::GENERIC_HELPER_IMAGE)),
    ] {
        let target = format!("restored/{claim}");
        let mut args = vec![
            "restore",
            id,
            "--to",
            &target,
            "--create",
            "--identity",
            key,
        ];
        if let Some(image) = image {
            args.extend(["--helper-image", image]);
        }
        args.extend(["-o", "json"]);
        let ran = nkvm(env, stores, &args).await.ok().json();
        assert_eq!(ran["status"], "succeeded", "{ran}");
        no_helper_pods(env).await;
        reader(env, "restored", claim).await;
        assert_eq!(
            pod_listing(env, "restored", "reader").await,
            source,
            "{claim}"
        );
        env.kubectl(
            &["-n", "restored", "delete", "pod", "reader", "--wait=true"],
            None,
        )
        .await
        .ok();
    }
}
