//! Off-site stores through the CLI and a stores file, against a real S3 server (`s3s-fs`,
//! which checks request signatures): backup, verify, restore, disaster recovery from the
//! bucket alone, and the failures (wrong credentials, unreachable, killed mid-upload).

use crate::backup::{json_results, namespace, no_helper_pods, setup};
use crate::encryption::pod_listing;
use crate::harness::Env;
use crate::restore::reader;
use nkvm_store::testing::{ACCESS_KEY, S3Kind, S3Server, SECRET_KEY};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes a stores file naming `offsite` on `server`, with credentials in files beside it
/// (`secret` as the secret key).
pub(crate) fn stores_file(env: &Env, server: &S3Server, secret: &str) -> PathBuf {
    let dir = env.dir.path();
    std::fs::write(dir.join("access-key-id"), format!("{ACCESS_KEY}\n")).unwrap();
    std::fs::write(dir.join("secret-access-key"), secret).unwrap();
    let file = dir.join(format!("stores-{secret}.yaml"));
    std::fs::write(
        &file,
        format!(
            "stores:\n- name: offsite\n  type: s3\n  endpoint: {}\n  region: us-east-1\n  bucket: nkvm\n  prefix: prod/\n  partSizeMib: 5\n  accessKeyIdFile: {}\n  secretAccessKeyFile: {}\n",
            server.endpoint(),
            dir.join("access-key-id").display(),
            dir.join("secret-access-key").display(),
        ),
    )
    .unwrap();
    file
}

/// Turns off direct uploads for the (last) entry of `stores`: archives then go through nkvm.
pub(crate) fn through_nkvm(stores: &Path) {
    let mut text = std::fs::read_to_string(stores).unwrap();
    text.push_str("  directUpload: false\n");
    std::fs::write(stores, text).unwrap();
}

/// Encrypts the (last) entry of `stores` for the age public key `public`.
pub(crate) fn encrypted_for(stores: &Path, public: &str) {
    let mut text = std::fs::read_to_string(stores).unwrap();
    text.push_str(&format!(
        "  encryption: {{ageRecipients: [\"{public}\"]}}\n"
    ));
    std::fs::write(stores, text).unwrap();
}

/// Runs nkvm with `--stores STORES` before `args`.
pub(crate) async fn nkvm(env: &Env, stores: &Path, args: &[&str]) -> crate::harness::Ran {
    let mut all = vec!["--stores", stores.to_str().unwrap()];
    all.extend_from_slice(args);
    env.nkvm(&all).await
}

/// `nkvm backup shop/data --store STORE -o json` with `stores`: the claim's result.
pub(crate) async fn backup_to(env: &Env, stores: &Path, store: &str) -> serde_json::Value {
    backup_meanwhile(env, stores, store, async {}).await
}

/// As [`backup_to`], with `meanwhile` running alongside (a server killed mid-upload).
pub(crate) async fn backup_meanwhile(
    env: &Env,
    stores: &Path,
    store: &str,
    meanwhile: impl std::future::Future<Output = ()>,
) -> serde_json::Value {
    let args = ["backup", "shop/data", "--store", store, "-o", "json"];
    let (out, ()) = tokio::join!(nkvm(env, stores, &args), meanwhile);
    json_results(&out).await.remove(0)
}

/// Restores backup `id` (found through `stores`, with `extra` arguments) into the new claim
/// `restored/copy` and returns the listing of what arrived there.
pub(crate) async fn restored_listing(env: &Env, stores: &Path, id: &str, extra: &[&str]) -> String {
    namespace(env, "restored").await;
    let mut to = vec!["restore", id, "--to", "restored/copy", "--create"];
    to.extend_from_slice(extra);
    to.extend(["-o", "json"]);
    let ran = nkvm(env, stores, &to).await.ok().json();
    assert_eq!(ran["status"], "succeeded", "{ran}");
    no_helper_pods(env).await;
    reader(env, "restored", "copy").await;
    pod_listing(env, "restored", "reader").await
}

/// Backup `r` verifies in `store`, and a fresh nkvm with an empty database, pointed at the
/// store alone, rebuilds its history and lists it there with its data path (disaster
/// recovery).
pub(crate) async fn recovered_from(env: &Env, stores: &Path, store: &str, r: &serde_json::Value) {
    let id = r["id"].as_str().unwrap();
    let verified = nkvm(env, stores, &["verify", id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(verified["sha256"], r["sha256"], "{verified}");
    std::fs::remove_file(env.db()).unwrap();
    let rebuild = ["index", "rebuild", "--store", store, "-o", "json"];
    let rebuilt = nkvm(env, stores, &rebuild).await.ok().json();
    assert_eq!(rebuilt["added"], 1, "{rebuilt}");
    let listed = nkvm(env, stores, &["backups", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed[0]["id"], id, "{listed}");
    assert_eq!(listed[0]["store"], store, "{listed}");
    assert_eq!(
        listed[0]["dataPath"], r["dataPath"],
        "the manifest records the data path: {listed}"
    );
}

/// `nkvm --agent-fault FAULT backup shop/data --store offsite`: the claim's result.
async fn backup_with_fault(env: &Env, stores: &Path, fault: &str) -> serde_json::Value {
    let args = [
        "--agent-fault",
        fault,
        "backup",
        "shop/data",
        "--store",
        "offsite",
        "-o",
        "json",
    ];
    json_results(&nkvm(env, stores, &args).await)
        .await
        .remove(0)
}

/// Nothing of a refused upload is left: no open upload, no object, no helper pod.
async fn nothing_left(env: &Env, server: &S3Server) {
    assert!(
        server.open_uploads().is_empty(),
        "no upload left open: {:?}",
        server.open_uploads()
    );
    assert!(server.objects().is_empty(), "{:?}", server.objects());
    no_helper_pods(env).await;
}

/// A writer's script: a few files, one of 3 MB of random bytes.
pub(crate) const FILES: &str = "set -e; mkdir -p /data/a/b; head -c 3000000 /dev/urandom > /data/a/b/r.bin; printf 'hello\\n' > /data/hello.txt; sleep 3600";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_s3_verifies_restores_and_comes_back_from_the_bucket_alone() {
    round_trip_through(S3Kind::S3sFs).await;
}

/// The same against a production S3 server, which also checks each part's checksum header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_versitygw_verifies_restores_and_comes_back_from_the_bucket_alone() {
    round_trip_through(S3Kind::Versitygw).await;
}

/// A direct backup to a server of `kind`, its listing, recovery from the bucket alone by a
/// fresh nkvm, and a restore.
async fn round_trip_through(kind: S3Kind) {
    let env = Env::start().await;
    let server = S3Server::start_kind(kind, &env.dir.path().join("s3"));
    let stores = stores_file(&env, &server, SECRET_KEY);
    setup(&env, "shop", FILES).await;

    let checked = nkvm(&env, &stores, &["stores", "--check", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(checked[1]["name"], "offsite", "{checked}");
    assert_eq!(checked[1]["health"], "ok", "{checked}");
    assert_eq!(checked[0]["health"], "ok", "{checked}");
    assert_eq!(checked[1]["directUploads"], true, "{checked}");
    let inventory = nkvm(&env, &stores, &["pvcs", "-n", "shop"]).await.ok();
    assert!(
        inventory
            .stderr
            .contains("backups to offsite take the direct path"),
        "the inventory says which path backups to the store take: {}",
        inventory.stderr
    );

    let r = &backup_to(&env, &stores, "offsite").await;
    assert_eq!(
        (&r["status"], &r["store"], &r["dataPath"]),
        (&"succeeded".into(), &"offsite".into(), &"direct".into()),
        "the agent uploads to a store with static keys itself: {r}"
    );
    let id = r["id"].as_str().unwrap().to_string();
    let objects = server.objects();
    assert_eq!(
        objects.len(),
        2,
        "archive and manifest in the bucket: {objects:?}"
    );
    assert!(
        objects.iter().all(|o| o.starts_with("prod/")),
        "{objects:?}"
    );
    assert!(!env.backups().join("server_https___127.0.0.1").exists());
    assert!(server.open_uploads().is_empty());

    // Disaster recovery: a fresh nkvm with an empty database, pointed at the bucket.
    recovered_from(&env, &stores, "offsite", r).await;
    let source = pod_listing(&env, "shop", "app").await;
    assert!(source.contains("r.bin"), "{source}");
    assert_eq!(restored_listing(&env, &stores, &id, &[]).await, source);
    env.stop().await;
}

/// An encrypted S3 store takes the direct path too: the agent seals the archive for the
/// store's recipients before it leaves the pod, so the bucket (and nkvm) never see the
/// compressed tar in the clear. The age CLI opens the object by hand; nkvm restores it only
/// with the identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_an_encrypted_s3_store_is_sealed_by_the_agent_in_the_helper_pod() {
    if !crate::encryption::age_cli() {
        return;
    }
    let env = Env::start().await;
    let server = S3Server::start_kind(S3Kind::Versitygw, &env.dir.path().join("s3"));
    let (key, public) = crate::encryption::age_keygen(env.dir.path(), "key.txt");
    let stores = stores_file(&env, &server, SECRET_KEY);
    encrypted_for(&stores, &public);
    setup(&env, "shop", FILES).await;
    let source = pod_listing(&env, "shop", "app").await;

    let r = &backup_to(&env, &stores, "offsite").await;
    assert_eq!(
        (&r["status"], &r["dataPath"]),
        (&"succeeded".into(), &"direct".into()),
        "{r}"
    );
    let id = r["id"].as_str().unwrap().to_string();
    let artifact = r["artifact"].as_str().unwrap();
    assert!(artifact.ends_with(&format!("{id}.tar.zst.age")), "{r}");
    assert!(server.open_uploads().is_empty());
    let object = server
        .root
        .join(nkvm_store::testing::BUCKET)
        .join(format!("prod/{artifact}"));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(object.with_file_name(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], r["sha256"], "{manifest}");
    assert_eq!(
        manifest["encryption"]["recipients"],
        serde_json::json!([public])
    );
    let by_hand = crate::encryption::opened_by_hand(&key, &object, &env.dir.path().join("by-hand"));
    assert_eq!(by_hand, source, "the age CLI opens what the agent sealed");

    let refused = nkvm(
        &env,
        &stores,
        &["restore", &id, "--to", "shop/again", "--create"],
    )
    .await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("--identity"), "{refused:?}");
    no_helper_pods(&env).await;
    let key = key.to_str().unwrap();
    let deep = nkvm(
        &env,
        &stores,
        &["verify", &id, "--deep", "--identity", key, "-o", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(deep["contentsChecked"], true, "{deep}");
    let restored = restored_listing(&env, &stores, &id, &["--identity", key]).await;
    assert_eq!(restored, source);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_or_gone_fails_at_stage_store_before_any_helper_pod() {
    let env = Env::start().await;
    let mut server = S3Server::start(&env.dir.path().join("s3"));
    setup(&env, "shop", FILES).await;

    let wrong = stores_file(&env, &server, "not-the-secret");
    let checked = nkvm(&env, &wrong, &["stores", "--check", "-o", "json"]).await;
    assert_eq!(checked.code, 1, "{checked:?}");
    assert!(!checked.stdout.contains("not-the-secret"), "{checked:?}");
    let r = &backup_to(&env, &wrong, "offsite").await;
    assert_eq!(
        (&r["status"], &r["stage"]),
        (&"failed".into(), &"store".into()),
        "{r}"
    );
    assert!(r["error"].as_str().unwrap().contains("credentials"), "{r}");

    let right = stores_file(&env, &server, SECRET_KEY);
    server.kill();
    let r = &backup_to(&env, &right, "offsite").await;
    assert_eq!(
        (&r["status"], &r["stage"]),
        (&"failed".into(), &"store".into()),
        "{r}"
    );
    no_helper_pods(&env).await;
    let history = nkvm(&env, &right, &["backups", "-o", "json"])
        .await
        .ok()
        .json();
    let rows = history.as_array().unwrap();
    assert!(
        rows.iter().all(|r| r["helperPod"] == ""),
        "no helper pod was made: {history}"
    );

    let unknown = nkvm(
        &env,
        &right,
        &["backup", "shop/data", "--store", "nowhere", "-o", "json"],
    )
    .await;
    let r = &json_results(&unknown).await[0];
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("no store named \"nowhere\""),
        "{r}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_upload_fails_at_stage_store_and_leaves_nothing_after_recover() {
    let env = Env::start().await;
    let mut server = S3Server::start(&env.dir.path().join("s3"));
    let stores = stores_file(&env, &server, SECRET_KEY);
    setup(
        &env,
        "shop",
        "head -c 80000000 /dev/urandom > /data/big; sleep 3600",
    )
    .await;

    let uploads_dir = server.root.clone();
    let kill_mid_upload = async {
        // Killed once the upload has parts on the server: mid-upload, not before it.
        kube_sandbox::testing::eventually(
            "a part on the server",
            Duration::from_secs(50),
            async || {
                let parts = std::fs::read_dir(&uploads_dir)
                    .ok()?
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".part-"));
                parts.then_some(())
            },
        )
        .await;
        server.kill();
    };
    let r = &backup_meanwhile(&env, &stores, "offsite", kill_mid_upload).await;
    assert_eq!(
        (&r["status"], &r["stage"], &r["dataPath"]),
        (&"failed".into(), &"store".into(), &"direct".into()),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("could not upload to s3://prod/"),
        "the agent's upload failure names the store's key: {r}"
    );
    no_helper_pods(&env).await;
    let visible: Vec<String> = server
        .objects()
        .into_iter()
        .filter(|o| !o.starts_with("prod/.nkvm/"))
        .collect();
    assert!(
        visible.is_empty(),
        "nothing under the final key: {visible:?}"
    );

    server.restart();
    let recovered = nkvm(&env, &stores, &["recover", "-o", "json"])
        .await
        .ok()
        .json();
    let swept = recovered["partialsDeleted"].as_array().map_or(0, Vec::len);
    assert_eq!(
        swept, 1,
        "the upload the dead server kept open is aborted: {recovered}"
    );
    assert!(
        server.open_uploads().is_empty(),
        "no upload left open: {:?}",
        server.open_uploads()
    );
    assert!(server.objects().is_empty(), "{:?}", server.objects());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_archive_refused_after_arrival_is_aborted_in_the_bucket_at_once() {
    let env = Env::start().await;
    let server = S3Server::start(&env.dir.path().join("s3"));
    let stores = stores_file(&env, &server, SECRET_KEY);
    through_nkvm(&stores);
    setup(&env, "shop", FILES).await;
    // Every byte reaches the store, then the trailer's hash does not match: the job must
    // abort the multipart upload itself (nkvm exits right after; nobody runs `recover`).
    let r = &backup_with_fault(&env, &stores, "wrong-sha256").await;
    assert_eq!(
        (&r["status"], &r["stage"], &r["dataPath"]),
        (&"failed".into(), &"stream".into(), &"agent".into()),
        "{r}"
    );
    nothing_left(&env, &server).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_without_a_trailer_is_aborted_and_a_whole_one_restores() {
    let env = Env::start().await;
    let server = S3Server::start(&env.dir.path().join("s3"));
    let stores = stores_file(&env, &server, SECRET_KEY);
    setup(&env, "shop", FILES).await;
    // Every part reaches the bucket, then the agent's trailer never comes: the upload must
    // never be completed, and is aborted by the job itself.
    let r = &backup_with_fault(&env, &stores, "omit-trailer").await;
    assert_eq!(
        (&r["status"], &r["stage"], &r["dataPath"]),
        (&"failed".into(), &"stream".into(), &"direct".into()),
        "{r}"
    );
    assert!(
        r["error"].as_str().unwrap().contains("trailer"),
        "the error says the trailer is missing: {r}"
    );
    nothing_left(&env, &server).await;

    // The same claim without the fault: the agent's archive in the bucket restores byte
    // for byte, and the bucket holds what the manifest says.
    let r = &backup_to(&env, &stores, "offsite").await;
    assert_eq!(
        (&r["status"], &r["dataPath"]),
        (&"succeeded".into(), &"direct".into()),
        "{r}"
    );
    let id = r["id"].as_str().unwrap();
    let verified = nkvm(&env, &stores, &["verify", id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(verified["sha256"], r["sha256"], "{verified}");
    assert_eq!(
        restored_listing(&env, &stores, id, &[]).await,
        pod_listing(&env, "shop", "app").await
    );
    env.stop().await;
}

/// The agent refuses, before it reads the volume or talks to any bucket, a target naming age
/// recipients without `--encrypt`, and `--encrypt` for a target naming none: an archive for an
/// encrypted store never goes up in the clear, whichever side is out of date.
#[test]
fn the_agent_refuses_a_direct_upload_whose_encryption_does_not_match_its_flag() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let target = |recipients: &[&str]| {
        serde_json::json!({
            "endpoint": "http://127.0.0.1:9", "region": "us-east-1", "bucket": "nkvm",
            "key": "k", "uploadId": "u", "partSize": 5 << 20, "partsInFlight": 2,
            "accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY,
            "ageRecipients": recipients,
        })
        .to_string()
    };
    let public = "age1lkrlaxlpp035l9uj2x7dnwdjg2pduvztal9xhl6009aa7ljw098quazyjl";
    for (flags, line, expected) in [
        (&[][..], target(&[public]), "--encrypt was not given"),
        (&["--encrypt"][..], target(&[]), "names no age recipients"),
    ] {
        let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_nkvm"))
            .args(["agent", "backup", "--direct-upload", "--dir"])
            .arg(dir.path())
            .args(flags)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(agent.stdin.take().unwrap(), "{line}").unwrap();
        let out = agent.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: {out:?}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!stderr.contains(SECRET_KEY), "{stderr}");
    }
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .args(["agent", "backup", "--encrypt"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "--encrypt needs --direct-upload");
}
