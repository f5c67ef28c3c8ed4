//! The S3 store against real S3 servers (both check signatures): the store's contract runs
//! once against `s3s-fs` and once against `versitygw` (modules `s3s_fs` and `versitygw`).

use super::*;
use crate::manifest::tests::sample;
use crate::store_contract::{a_second_writer_never_overwrites, data, key, read_back, runtime};
use crate::testing::{S3Kind, S3Server};
use sha2::{Digest, Sha256};
use std::io::Write;

fn store(server: &S3Server, rt: &tokio::runtime::Runtime) -> S3Store {
    let mut settings = server.settings("offsite", "prod/");
    settings.part_size = 5 << 20;
    S3Store::new(&settings, rt.handle().clone()).expect("a store")
}

const ID: &str = "20261126T010203Z-deadbeef";

fn an_archive_round_trips_through_a_multipart_upload_and_is_listed(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start_kind(kind, dir.path());
    let store = store(&server, &rt);
    let bytes = data(12 << 20, 7);
    let mut writer = store.begin(&key(ID)).expect("begun");
    writer.write_all(&bytes).unwrap();
    assert!(
        store.list_manifests().unwrap().archives.is_empty(),
        "nothing is visible before the commit"
    );
    let stored = writer.commit(&sample(ID)).expect("committed");
    assert_eq!(stored.bytes_stored, bytes.len() as u64);
    assert_eq!(stored.sha256, crate::layout::hex(&Sha256::digest(&bytes)));
    let listing = store.list_manifests().unwrap();
    assert!(listing.warnings.is_empty(), "{:?}", listing.warnings);
    assert_eq!(listing.archives.len(), 1);
    assert_eq!(listing.archives[0].0, stored.artifact);
    assert_eq!(listing.archives[0].1.sha256, stored.sha256);
    let (mut reader, size) = store.open_sized(&stored.artifact).unwrap();
    assert_eq!(size, Some(bytes.len() as u64));
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    assert!(back == bytes, "the archive reads back byte for byte");
    assert!(
        server.open_uploads().is_empty(),
        "{:?}",
        server.open_uploads()
    );
    let objects = server.objects();
    assert_eq!(
        objects.len(),
        2,
        "archive and manifest only, no marker: {objects:?}"
    );
    store.delete(&stored.artifact).unwrap();
    assert!(store.list_manifests().unwrap().archives.is_empty());
    assert!(server.objects().is_empty(), "{:?}", server.objects());
}

fn an_existing_object_is_never_overwritten(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start_kind(kind, dir.path());
    let store = store(&server, &rt);
    a_second_writer_never_overwrites(&store, ID);
    assert!(
        server.open_uploads().is_empty(),
        "{:?}",
        server.open_uploads()
    );
}

fn a_server_killed_mid_upload_leaves_nothing_visible_and_the_sweep_closes_the_upload(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let mut server = S3Server::start_kind(kind, dir.path());
    let store = store(&server, &rt);
    let mut writer = store.begin(&key(ID)).unwrap();
    writer.write_all(&data(11 << 20, 3)).unwrap();
    server.kill();
    let chunk = data(1 << 20, 5);
    let failed = (0..40).find_map(|_| writer.write_all(&chunk).err());
    let e = failed.expect("writing fails once the server is gone");
    assert!(e.to_string().contains("offsite"), "{e}");
    drop(writer);
    server.restart();
    assert!(
        !server.open_uploads().is_empty(),
        "the crash left an open upload"
    );
    let swept = store.sweep_partials().expect("swept");
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert!(
        server.open_uploads().is_empty(),
        "{:?}",
        server.open_uploads()
    );
    assert!(server.objects().is_empty(), "{:?}", server.objects());
    assert!(store.list_manifests().unwrap().archives.is_empty());
}

fn an_aborted_upload_is_closed_at_once(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start_kind(kind, dir.path());
    let store = store(&server, &rt);
    let mut writer = store.begin(&key(ID)).unwrap();
    writer.write_all(&data(6 << 20, 9)).unwrap();
    writer.abort().unwrap();
    assert!(
        server.open_uploads().is_empty(),
        "{:?}",
        server.open_uploads()
    );
    assert!(server.objects().is_empty(), "{:?}", server.objects());
}

/// A direct upload written as the agent writes it: from the target alone, on a runtime of
/// its own.
fn upload_parts(target: &DirectTarget, bytes: &[u8]) -> DirectSent {
    let agent_rt = runtime();
    let mut writer = target.writer(agent_rt.handle().clone()).expect("a writer");
    writer.write_all(bytes).unwrap();
    writer.finish().expect("uploaded")
}

fn a_direct_upload_becomes_visible_only_when_nkvm_commits_the_agents_parts(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start_kind(kind, dir.path());
    let store = store(&server, &rt);
    assert!(store.direct_uploads());
    let upload = store.begin_direct(&key(ID)).unwrap().expect("static keys");
    let target = upload.target();
    assert!(
        !format!("{target:?}").contains(crate::testing::SECRET_KEY),
        "Debug leaves the secret out: {target:?}"
    );
    let bytes = data(11 << 20, 3);
    let sent = upload_parts(&target, &bytes);
    assert_eq!(sent.parts.len(), 3, "5 MiB parts");
    assert_eq!(sent.sealed, None);
    assert!(
        store.list_manifests().unwrap().archives.is_empty(),
        "nothing is visible before nkvm commits"
    );
    let stored = upload.commit(&sample(ID), sent).expect("committed");
    assert_eq!(stored.sha256, crate::layout::hex(&Sha256::digest(&bytes)));
    let back = read_back(&store, &stored.artifact);
    assert!(back == bytes, "the archive reads back byte for byte");
    assert!(server.open_uploads().is_empty());
}

fn a_direct_upload_missing_a_part_or_aborted_leaves_nothing(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start_kind(kind, dir.path());
    let store = store(&server, &rt);
    let upload = store.begin_direct(&key(ID)).unwrap().unwrap();
    let first = upload.target().upload_id;
    let mut sent = upload_parts(&upload.target(), &data(11 << 20, 4));
    // A trailer listing fewer parts than were written: the object the bucket would hold is
    // shorter than the bytes counted, and is taken back.
    sent.parts.pop();
    let e = upload.commit(&sample(ID), sent).expect_err("refused");
    assert!(e.to_string().contains("were written"), "{e}");
    assert!(server.objects().is_empty(), "{:?}", server.objects());

    const OTHER: &str = "20261126T010203Z-0badf00d";
    let upload = store.begin_direct(&key(OTHER)).unwrap().unwrap();
    upload_parts(&upload.target(), &data(6 << 20, 5));
    upload.abort().unwrap();
    // s3s-fs keeps the file of the part the first completion left out; S3 drops it.
    let open: Vec<String> = server
        .open_uploads()
        .into_iter()
        .filter(|f| !f.contains(&first))
        .collect();
    assert!(open.is_empty(), "{open:?}");
    assert!(server.objects().is_empty(), "{:?}", server.objects());
}

/// An encrypted S3 store over `server` for a fresh identity; the identity file and the store.
fn encrypted_store(
    server: &S3Server,
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> (std::path::PathBuf, crate::EncryptedStore) {
    let (identity, public) = crate::encrypted::tests::identity_file(dir, "key.txt");
    let recipients = crate::AgeRecipients::parse(&[public]).unwrap();
    let inner = std::sync::Arc::new(store(server, rt));
    (identity, crate::EncryptedStore::new(inner, recipients))
}

fn an_encrypted_stores_direct_upload_is_an_age_file_the_agent_sealed(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start_kind(kind, &dir.path().join("s3"));
    let (identity, store) = encrypted_store(&server, &rt, dir.path());
    assert!(store.direct_uploads());
    let upload = store.begin_direct(&key(ID)).unwrap().expect("static keys");
    assert!(upload.sealed());
    let target = upload.target();
    assert_eq!(target.age_recipients, store.age_recipients());
    assert!(target.key.ends_with(".tar.zst.age"), "{}", target.key);
    let bytes = data(11 << 20, 6);
    let sent = upload_parts(&target, &bytes);
    let sealed = sent.sealed.clone().expect("the agent sealed an age file");
    assert_eq!(sent.bytes, bytes.len() as u64);
    assert!(
        sealed.bytes > sent.bytes,
        "the age file adds its header and tags"
    );
    let stored = upload.commit(&sample(ID), sent).expect("committed");
    let manifest = store.manifest(&stored.artifact).unwrap();
    let encryption = manifest.encryption.clone().expect("an encrypted manifest");
    assert_eq!(encryption.recipients, store.age_recipients());
    assert_eq!(
        encryption.archive_sha256,
        crate::layout::hex(&Sha256::digest(&bytes))
    );
    assert_eq!(encryption.archive_bytes, bytes.len() as u64);
    let held = read_back(&store, &stored.artifact);
    assert_eq!(manifest.sha256, crate::layout::hex(&Sha256::digest(&held)));
    assert_eq!(held.len() as u64, sealed.bytes);
    assert!(
        !held.windows(64).any(|w| w == &bytes[..64]),
        "the bucket never holds the compressed tar in the clear"
    );
    let mut opened = Vec::new();
    crate::AgeIdentity::load(&identity)
        .unwrap()
        .decrypt(Box::new(std::io::Cursor::new(held)))
        .unwrap()
        .read_to_end(&mut opened)
        .unwrap();
    assert!(opened == bytes, "the identity opens what the agent sealed");
    assert!(server.open_uploads().is_empty());
}

fn an_encrypted_stores_upload_the_agent_did_not_seal_is_refused(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start_kind(kind, &dir.path().join("s3"));
    let (_, store) = encrypted_store(&server, &rt, dir.path());
    let upload = store.begin_direct(&key(ID)).unwrap().unwrap();
    // An agent that ignored the recipients (an older image): its parts are the tar itself.
    let mut target = upload.target();
    target.age_recipients.clear();
    let sent = upload_parts(&target, &data(6 << 20, 7));
    let e = upload.commit(&sample(ID), sent).expect_err("refused");
    assert!(e.to_string().contains("no age file"), "{e}");
    assert!(
        server.open_uploads().is_empty(),
        "{:?}",
        server.open_uploads()
    );
    assert!(server.objects().is_empty(), "{:?}", server.objects());
}

#[test]
fn only_a_store_with_static_keys_and_direct_uploads_on_hands_them_out() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start(dir.path());
    let mut settings = server.settings("offsite", "");
    settings.direct_upload = false;
    let off = S3Store::new(&settings, rt.handle().clone()).unwrap();
    assert!(!off.direct_uploads());
    assert!(off.begin_direct(&key(ID)).unwrap().is_none());
}

fn wrong_credentials_and_an_unreachable_server_are_refused_before_any_upload(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let mut server = S3Server::start_kind(kind, dir.path());
    let mut settings = server.settings("offsite", "");
    settings.keys = Some((crate::testing::ACCESS_KEY.into(), "wrong-secret".into()));
    let wrong = S3Store::new(&settings, rt.handle().clone()).unwrap();
    let e = wrong.check_writable(&key(ID)).expect_err("refused");
    let text = e.to_string();
    assert!(text.contains("credentials"), "{text}");
    assert!(
        !text.contains("wrong-secret"),
        "the secret is never shown: {text}"
    );
    assert!(wrong.probe().is_err());
    let good = store(&server, &rt);
    assert!(good.probe().expect("probed").contains("s3://nkvm/prod/"));
    server.kill();
    let e = good.check_writable(&key(ID)).expect_err("refused");
    assert!(matches!(e, StoreError::Remote { .. }), "{e}");
    assert!(e.to_string().contains("reachable"), "{e}");
}

fn orphans_and_stray_keys_in_the_bucket_are_reported_or_passed_over(kind: S3Kind) {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = S3Server::start_kind(kind, dir.path());
    let store = store(&server, &rt);
    let mut w = store.begin(&key(ID)).unwrap();
    w.write_all(b"x").unwrap();
    let stored = w.commit(&sample(ID)).unwrap();
    let bucket = server.root.join(crate::testing::BUCKET);
    let claim_dir = bucket
        .join("prod")
        .join(stored.artifact.rsplit_once('/').unwrap().0);
    std::fs::write(
        claim_dir.join("20261126T010203Z-00000001.tar.zst"),
        b"lonely",
    )
    .unwrap();
    std::fs::write(bucket.join("prod/README"), b"stray").unwrap();
    let listing = store.list_manifests().unwrap();
    assert_eq!(listing.archives.len(), 1);
    assert_eq!(listing.warnings.len(), 1, "{:?}", listing.warnings);
    assert!(matches!(
        listing.warnings[0],
        StoreError::Orphan {
            missing: "manifest",
            ..
        }
    ));
}

/// A stores file naming an S3 entry on `server` without key files.
fn entry_without_key_files(dir: &std::path::Path, server: &S3Server) -> std::path::PathBuf {
    let file = dir.join("stores.yaml");
    std::fs::write(
        &file,
        format!(
            "stores:\n- {{name: offsite, type: s3, endpoint: '{}', region: us-east-1, bucket: nkvm}}\n",
            server.endpoint()
        ),
    )
    .unwrap();
    file
}

#[test]
fn an_entry_without_key_files_takes_the_keys_of_the_aws_profile() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(&dir.path().join("s3"));
    let stores_file = entry_without_key_files(dir.path(), &server);
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {0}\naws_secret_access_key = wrong-secret\n[backup]\naws_access_key_id = {0}\naws_secret_access_key = {1}\n",
            crate::testing::ACCESS_KEY,
            crate::testing::SECRET_KEY
        ),
    )
    .unwrap();
    let home = dir.path().display().to_string();
    let open = |profile: &str| {
        let vars = [
            ("HOME", home.clone()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            ),
            ("AWS_PROFILE", profile.to_string()),
        ];
        let var = move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        crate::Stores::open_with_env(
            &dir.path().join("local"),
            Some(&stores_file),
            rt.handle(),
            &var,
        )
    };
    let good = open("backup").expect("the stores open");
    let probed = good.store("offsite").unwrap().probe();
    assert!(
        probed.is_ok(),
        "the backup profile's keys are accepted: {probed:?}"
    );
    // The default profile's wrong secret is really sent, and refused by the server.
    let wrong = open("default").expect("the stores open");
    let refused = wrong
        .store("offsite")
        .unwrap()
        .probe()
        .unwrap_err()
        .to_string();
    assert!(
        !refused.contains("wrong-secret"),
        "no secret in messages: {refused}"
    );
    let missing = open("absent").unwrap_err().to_string();
    assert!(missing.contains("AWS_PROFILE=\"absent\""), "{missing}");
}

/// The contract tests above, once per server.
macro_rules! on_each_server {
    ($($test:ident),* $(,)?) => {
        mod s3s_fs {
            $(#[test]
            fn $test() {
                super::$test(crate::testing::S3Kind::S3sFs)
            })*
        }
        mod versitygw {
            $(#[test]
            fn $test() {
                super::$test(crate::testing::S3Kind::Versitygw)
            })*
        }
    };
}

on_each_server!(
    an_archive_round_trips_through_a_multipart_upload_and_is_listed,
    an_existing_object_is_never_overwritten,
    a_server_killed_mid_upload_leaves_nothing_visible_and_the_sweep_closes_the_upload,
    an_aborted_upload_is_closed_at_once,
    a_direct_upload_becomes_visible_only_when_nkvm_commits_the_agents_parts,
    a_direct_upload_missing_a_part_or_aborted_leaves_nothing,
    an_encrypted_stores_direct_upload_is_an_age_file_the_agent_sealed,
    an_encrypted_stores_upload_the_agent_did_not_seal_is_refused,
    wrong_credentials_and_an_unreachable_server_are_refused_before_any_upload,
    orphans_and_stray_keys_in_the_bucket_are_reported_or_passed_over,
);
