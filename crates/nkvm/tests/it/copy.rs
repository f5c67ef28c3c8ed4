//! `nkvm copy ID --to STORE` (3-2-1): a local backup copied to a real S3 server (`s3s-fs`) and
//! to an encrypted directory store, found there by verify and restore once the original is
//! gone, listed among the backup's copies; and the refusals that store nothing: a source that
//! no longer matches its manifest, an encrypted archive into a plain store, a second copy.
//! Copying needs no cluster; an encrypted archive copied into another encrypted store is
//! re-encrypted for that store's recipients; an empty history rebuilt from both stores knows
//! the backup and its copy.

use crate::backup::setup;
use crate::encryption::{age_cli, age_keygen, opened_by_hand, pod_listing};
use crate::harness::Env;
use crate::stores::{encrypted_for, nkvm, restored_listing, stores_file};
use nkvm_store::testing::{S3Server, SECRET_KEY};
use std::path::{Path, PathBuf};

const FILES: &str = "set -e; mkdir -p /data/a; head -c 1500000 /dev/urandom > /data/a/r.bin; printf 'hi\\n' > /data/hi.txt; sleep 3600";

/// `offsite` (the S3 server, plain) and `vault` (a directory, encrypted for `recipient`).
fn both_stores(env: &Env, server: &S3Server, recipient: &str) -> PathBuf {
    let file = stores_file(env, server, SECRET_KEY);
    let mut yaml = std::fs::read_to_string(&file).unwrap();
    yaml.push_str(&format!(
        "- name: vault\n  type: local\n  path: {}\n  encryption: {{ageRecipients: [\"{recipient}\"]}}\n",
        env.dir.path().join("vault").display()
    ));
    std::fs::write(&file, yaml).unwrap();
    file
}

async fn backed_up(env: &Env, stores: &Path, store: &str) -> serde_json::Value {
    let r = crate::stores::backup_to(env, stores, store).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    r
}

async fn copied(env: &Env, stores: &Path, id: &str, to: &str) -> serde_json::Value {
    let r = nkvm(env, stores, &["copy", id, "--to", to, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(r["status"], "succeeded", "{r}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_backup_copied_off_site_is_found_there_by_verify_and_restore() {
    if !age_cli() {
        return;
    }
    let env = Env::start().await;
    let server = S3Server::start(&env.dir.path().join("s3"));
    let (key, public) = age_keygen(env.dir.path(), "key.txt");
    let stores = both_stores(&env, &server, &public);
    setup(&env, "shop", FILES).await;
    let source = pod_listing(&env, "shop", "app").await;
    let backup = backed_up(&env, &stores, "local").await;
    let id = backup["id"].as_str().unwrap();

    let off = copied(&env, &stores, id, "offsite").await;
    assert_eq!(
        (&off["fromStore"], &off["toStore"]),
        (&"local".into(), &"offsite".into())
    );
    assert_eq!(
        off["sha256"], backup["sha256"],
        "a plain copy is the same bytes: {off}"
    );
    assert_eq!(server.objects().len(), 2, "{:?}", server.objects());
    assert!(server.open_uploads().is_empty());
    let again = nkvm(&env, &stores, &["copy", id, "--to", "offsite"]).await;
    assert_ne!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("already holds"), "{again:?}");

    let listed = nkvm(&env, &stores, &["backups", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed[0]["copies"][0]["store"], "offsite", "{listed}");
    assert_eq!(listed[0]["copies"][0]["sha256"], off["sha256"], "{listed}");

    // The original store loses the archive: verify and restore read the off-site copy.
    std::fs::remove_dir_all(env.backups()).unwrap();
    let verified = nkvm(&env, &stores, &["verify", id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(verified["store"], "offsite", "{verified}");
    assert_eq!(restored_listing(&env, &stores, id, &[]).await, source);

    // Copied on into the encrypted store: an age file there, opened with the identity.
    let vault = copied(&env, &stores, id, "vault").await;
    assert_eq!(
        (&vault["fromStore"], &vault["encrypted"]),
        (&"offsite".into(), &true.into())
    );
    assert!(
        vault["artifact"]
            .as_str()
            .unwrap()
            .ends_with(".tar.zst.age"),
        "{vault}"
    );
    let key = key.to_str().unwrap();
    let deep = nkvm(
        &env,
        &stores,
        &[
            "verify",
            id,
            "--store",
            "vault",
            "--deep",
            "--identity",
            key,
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(
        (&deep["store"], &deep["contentsChecked"]),
        (&"vault".into(), &true.into())
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_would_not_be_the_backup_or_would_decrypt_it_stores_nothing() {
    if !age_cli() {
        return;
    }
    let env = Env::start().await;
    let server = S3Server::start(&env.dir.path().join("s3"));
    let (_, public) = age_keygen(env.dir.path(), "key.txt");
    let stores = both_stores(&env, &server, &public);
    setup(&env, "shop", FILES).await;

    let sealed = backed_up(&env, &stores, "vault").await;
    let refused = nkvm(
        &env,
        &stores,
        &["copy", sealed["id"].as_str().unwrap(), "--to", "offsite"],
    )
    .await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("stores archives in the clear"),
        "{refused:?}"
    );
    assert!(server.objects().is_empty(), "{:?}", server.objects());

    // The local archive changes after the backup: the copy aborts, nothing becomes visible.
    let plain = backed_up(&env, &stores, "local").await;
    let archive = env.backups().join(plain["artifact"].as_str().unwrap());
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();
    let id = plain["id"].as_str().unwrap();
    let damaged = nkvm(
        &env,
        &stores,
        &["copy", id, "--to", "offsite", "-o", "json"],
    )
    .await;
    assert_ne!(damaged.code, 0, "{damaged:?}");
    let r = damaged.json();
    assert_eq!(
        (&r["status"], &r["stage"]),
        (&"failed".into(), &"stream".into()),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("does not match its manifest"),
        "{r}"
    );
    assert!(server.objects().is_empty(), "{:?}", server.objects());
    assert!(
        server.open_uploads().is_empty(),
        "{:?}",
        server.open_uploads()
    );
    let listed = nkvm(&env, &stores, &["backups", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["copies"] == serde_json::json!([])),
        "{listed}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_runs_without_any_cluster_connection() {
    let env = Env::start().await;
    let server = S3Server::start(&env.dir.path().join("s3"));
    let stores = stores_file(&env, &server, SECRET_KEY);
    setup(&env, "shop", FILES).await;
    let backup = backed_up(&env, &stores, "local").await;
    let id = backup["id"].as_str().unwrap();

    // No kubeconfig at all: copying reads and writes stores and the history only.
    let nowhere = env.dir.path().join("no-such-kubeconfig");
    let mut args = vec!["--stores", stores.to_str().unwrap()];
    args.extend(["copy", id, "--to", "offsite", "-o", "json"]);
    let r = env.nkvm_with(&nowhere, &args).await.ok().json();
    assert_eq!(
        (&r["status"], &r["toStore"]),
        (&"succeeded".into(), &"offsite".into()),
        "{r}"
    );
    assert_eq!(r["sha256"], backup["sha256"], "{r}");
    assert_eq!(server.objects().len(), 2, "{:?}", server.objects());
    let listed = nkvm(&env, &stores, &["backups", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed[0]["copies"][0]["store"], "offsite", "{listed}");
    assert_eq!(
        listed[0]["dataPath"], "agent",
        "nkvm's own image takes the agent path: {listed}"
    );
    let table = nkvm(&env, &stores, &["backups"]).await.ok().stdout;
    assert!(
        table.contains("PATH") && table.contains(" agent "),
        "{table}"
    );
    env.stop().await;
}

/// `nkvm index rebuild --store STORE -o json` on the env's history.
async fn rebuilt(env: &Env, stores: &Path, store: &str) -> serde_json::Value {
    nkvm(
        env,
        stores,
        &["index", "rebuild", "--store", store, "-o", "json"],
    )
    .await
    .ok()
    .json()
}

/// The one backup the history lists, with its copies.
async fn the_backup(env: &Env, stores: &Path) -> serde_json::Value {
    let listed = nkvm(env, stores, &["backups", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    listed[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_history_rebuilt_from_two_stores_knows_the_backup_and_its_copy() {
    let env = Env::start().await;
    let server = S3Server::start(&env.dir.path().join("s3"));
    let stores = stores_file(&env, &server, SECRET_KEY);
    setup(&env, "shop", FILES).await;
    let backup = backed_up(&env, &stores, "local").await;
    let id = backup["id"].as_str().unwrap();
    let off = copied(&env, &stores, id, "offsite").await;

    // A fresh nkvm: the backup's own store first, then the bucket holding its copy.
    std::fs::remove_file(env.db()).unwrap();
    let local = rebuilt(&env, &stores, "local").await;
    assert_eq!(
        (&local["added"], &local["copiesAdded"]),
        (&1.into(), &0.into()),
        "{local}"
    );
    let offsite = rebuilt(&env, &stores, "offsite").await;
    assert_eq!(
        (
            &offsite["archives"],
            &offsite["added"],
            &offsite["copiesAdded"]
        ),
        (&1.into(), &0.into(), &1.into()),
        "{offsite}"
    );
    assert_eq!(offsite["copyIds"][0], id, "{offsite}");
    let row = the_backup(&env, &stores).await;
    assert_eq!(
        (&row["store"], &row["sha256"]),
        (&"local".into(), &backup["sha256"]),
        "{row}"
    );
    assert_eq!(
        (&row["dataPath"], &backup["dataPath"]),
        (&"agent".into(), &"agent".into()),
        "the manifest records it: {row}"
    );
    let copies = row["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "{row}");
    assert_eq!(
        (
            &copies[0]["store"],
            &copies[0]["artifact"],
            &copies[0]["sha256"]
        ),
        (&"offsite".into(), &off["artifact"], &off["sha256"]),
        "{row}"
    );
    let again = rebuilt(&env, &stores, "offsite").await;
    assert_eq!(
        (&again["added"], &again["copiesAdded"]),
        (&0.into(), &0.into()),
        "{again}"
    );
    let verified = nkvm(
        &env,
        &stores,
        &["verify", id, "--store", "offsite", "-o", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(verified["sha256"], off["sha256"], "{verified}");

    // The other order: the first store rebuilt holds the row, the later one the copy.
    std::fs::remove_file(env.db()).unwrap();
    assert_eq!(rebuilt(&env, &stores, "offsite").await["added"], 1);
    assert_eq!(rebuilt(&env, &stores, "local").await["copiesAdded"], 1);
    let row = the_backup(&env, &stores).await;
    assert_eq!(
        (&row["store"], &row["copies"][0]["store"]),
        (&"offsite".into(), &"local".into()),
        "{row}"
    );
    // The bucket alone is enough once the local store is gone: its copy is found.
    std::fs::remove_dir_all(env.backups()).unwrap();
    let verified = nkvm(&env, &stores, &["verify", id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(verified["store"], "offsite", "{verified}");
    env.stop().await;
}

/// `vault` (a directory encrypting for `vault_key`) and `offsite` (the S3 server, encrypting
/// for `offsite_key`).
fn sealed_stores(env: &Env, server: &S3Server, vault_key: &str, offsite_key: &str) -> PathBuf {
    let file = stores_file(env, server, SECRET_KEY);
    encrypted_for(&file, offsite_key);
    let mut yaml = std::fs::read_to_string(&file).unwrap();
    yaml.push_str(&format!(
        "- name: vault\n  type: local\n  path: {}\n",
        env.dir.path().join("vault").display()
    ));
    std::fs::write(&file, yaml).unwrap();
    encrypted_for(&file, vault_key);
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_backup_copied_to_another_encrypted_store_opens_with_that_stores_key() {
    if !age_cli() {
        return;
    }
    let env = Env::start().await;
    let server = S3Server::start(&env.dir.path().join("s3"));
    let (vault_key, vault_public) = age_keygen(env.dir.path(), "vault.txt");
    let (off_key, off_public) = age_keygen(env.dir.path(), "offsite.txt");
    let stores = sealed_stores(&env, &server, &vault_public, &off_public);
    setup(&env, "shop", FILES).await;
    let source = pod_listing(&env, "shop", "app").await;
    let sealed = backed_up(&env, &stores, "vault").await;
    let id = sealed["id"].as_str().unwrap();

    // Re-encrypting means decrypting first: without the source's identity nothing moves.
    let refused = nkvm(&env, &stores, &["copy", id, "--to", "offsite"]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("--identity"), "{refused:?}");
    assert!(server.objects().is_empty(), "{:?}", server.objects());

    let (vault_key, off_key) = (vault_key.to_str().unwrap(), off_key.to_str().unwrap());
    let off = nkvm(
        &env,
        &stores,
        &[
            "copy",
            id,
            "--to",
            "offsite",
            "--identity",
            vault_key,
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(
        (&off["status"], &off["encrypted"]),
        (&"succeeded".into(), &true.into()),
        "{off}"
    );
    assert_ne!(
        off["sha256"], sealed["sha256"],
        "a new age file, not the same bytes: {off}"
    );
    let artifact = off["artifact"].as_str().unwrap();
    assert!(artifact.ends_with(&format!("{id}.tar.zst.age")), "{off}");

    // The copy's manifest names the offsite recipient and the same compressed tar inside.
    let bucket = env.dir.path().join("s3").join(nkvm_store::testing::BUCKET);
    let object = bucket.join(format!("prod/{artifact}"));
    let manifest = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let copy_manifest = manifest(&object.with_file_name(format!("{id}.json")));
    let vault_archive = env
        .dir
        .path()
        .join("vault")
        .join(sealed["artifact"].as_str().unwrap());
    let vault_manifest = manifest(&vault_archive.with_file_name(format!("{id}.json")));
    assert_eq!(
        copy_manifest["encryption"]["recipients"],
        serde_json::json!([off_public])
    );
    assert_eq!(copy_manifest["sha256"], off["sha256"], "{copy_manifest}");
    assert_eq!(
        copy_manifest["encryption"]["archiveSha256"], vault_manifest["encryption"]["archiveSha256"],
        "{copy_manifest}"
    );

    // The offsite key opens the copy by hand; the vault's key does not.
    let by_hand = opened_by_hand(Path::new(off_key), &object, &env.dir.path().join("by-hand"));
    assert_eq!(by_hand, source);
    let wrong = std::process::Command::new("age")
        .args(["-d", "-i", vault_key, "-o", "/dev/null"])
        .arg(&object)
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "{wrong:?}");

    // With only the offsite key, verify and restore find the copy it opens.
    let deep = nkvm(
        &env,
        &stores,
        &["verify", id, "--deep", "--identity", off_key, "-o", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(
        (&deep["store"], &deep["contentsChecked"]),
        (&"offsite".into(), &true.into()),
        "{deep}"
    );
    let restored = restored_listing(&env, &stores, id, &["--identity", off_key]).await;
    assert_eq!(restored, source);
    env.stop().await;
}
