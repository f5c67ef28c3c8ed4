//! Behaviour of the local store against a real temporary directory.

use crate::layout::hex;
use crate::manifest::tests::sample;
use crate::{ArchiveKey, ArchiveStore, LocalStore, Manifest, StoreError};
use nkvm_domain::UserError;
use nkvm_domain::{Compression, FailureKind};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

const CLUSTER: &str = "server:https://127.0.0.1:6443";
const CLAIM_DIR: &str = "server_https___127.0.0.1_6443/shop/data";
const ID: &str = "20261126T010203Z-deadbeef";

fn key(id: &str) -> ArchiveKey {
    ArchiveKey {
        cluster: CLUSTER.to_string(),
        namespace: "shop".to_string(),
        pvc: "data".to_string(),
        id: id.parse().expect("a valid id"),
        compression: Compression::Zstd,
        encrypted: false,
    }
}

/// Some bytes that are not all alike, so a hash of the wrong range would differ.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Writes `data` through a new archive and commits it.
fn store_one(store: &LocalStore, id: &str, data: &[u8]) -> crate::StoredArchive {
    let mut partial = store.begin(&key(id)).expect("begin");
    for chunk in data.chunks(7000) {
        partial.write_all(chunk).expect("write");
    }
    partial.commit(&sample(id)).expect("commit")
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                let relative = path.strip_prefix(base).expect("under base");
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn temp_store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = LocalStore::new(dir.path().join("backups"));
    (dir, store)
}

#[test]
fn a_committed_archive_is_exactly_an_archive_and_its_manifest() {
    let (_dir, store) = temp_store();
    let data = payload(1_000_000);
    let stored = store_one(&store, ID, &data);

    assert_eq!(stored.artifact, format!("{CLAIM_DIR}/{ID}.tar.zst"));
    assert_eq!(
        files_under(store.root()),
        [
            format!("{CLAIM_DIR}/{ID}.json"),
            format!("{CLAIM_DIR}/{ID}.tar.zst")
        ]
    );
    let mut read_back = Vec::new();
    store
        .open(&stored.artifact)
        .expect("open")
        .read_to_end(&mut read_back)
        .expect("read");
    assert_eq!(read_back, data);
    assert_eq!(stored.sha256, hex(&Sha256::digest(&read_back)));
    assert_eq!(stored.bytes_stored, data.len() as u64);

    let manifest = store.manifest(&stored.artifact).expect("manifest");
    let expected = Manifest {
        artifact: stored.artifact.clone(),
        bytes_stored: stored.bytes_stored,
        sha256: stored.sha256.clone(),
        ..sample(ID)
    };
    assert_eq!(manifest, expected);
    let json: serde_json::Value = serde_json::from_slice(
        &fs::read(store.root().join(CLAIM_DIR).join(format!("{ID}.json"))).expect("read"),
    )
    .expect("json");
    assert_eq!(json["sha256"], stored.sha256.as_str());
    assert_eq!(json["cluster"], CLUSTER);
    assert_eq!(json["pvcSpec"]["accessModes"][0], "ReadWriteOnce");
}

#[test]
fn a_dropped_partial_leaves_no_file() {
    let (_dir, store) = temp_store();
    let mut partial = store.begin(&key(ID)).expect("begin");
    partial.write_all(&payload(300_000)).expect("write");
    assert_eq!(
        files_under(store.root()),
        [format!("{CLAIM_DIR}/.{ID}.tar.zst.partial")]
    );
    drop(partial);
    assert!(files_under(store.root()).is_empty());
}

#[test]
fn an_aborted_partial_leaves_no_file() {
    let (_dir, store) = temp_store();
    let mut partial = store.begin(&key(ID)).expect("begin");
    partial.write_all(b"half a tar").expect("write");
    partial.abort().expect("abort");
    assert!(files_under(store.root()).is_empty());
}

#[test]
fn commit_refuses_to_overwrite_an_existing_archive() {
    let (_dir, store) = temp_store();
    store_one(&store, ID, b"first");

    let err = store.begin(&key(ID)).expect_err("the archive exists");
    assert_eq!(err.kind(), FailureKind::Conflict, "{err}");

    // A file appearing while the archive is written (another writer, a hand copy) is kept.
    let other = "20261126T010203Z-0000abcd";
    let mut partial = store.begin(&key(other)).expect("begin");
    partial.write_all(b"second").expect("write");
    let squatter = store
        .root()
        .join(CLAIM_DIR)
        .join(format!("{other}.tar.zst"));
    fs::write(&squatter, b"already here").expect("write");
    let err = partial.commit(&sample(other)).expect_err("refused");
    assert_eq!(err.kind(), FailureKind::Conflict, "{err}");
    assert!(err.to_string().contains("never overwritten"), "{err}");
    assert_eq!(fs::read(&squatter).expect("read"), b"already here");
    assert!(
        !files_under(store.root())
            .iter()
            .any(|f| f.ends_with(".partial"))
    );
}

#[test]
fn two_backups_started_in_the_same_second_do_not_collide() {
    let (_dir, store) = temp_store();
    let (a, b) = ("20261126T010203Z-00000001", "20261126T010203Z-00000002");
    let mut first = store.begin(&key(a)).expect("begin a");
    let mut second = store.begin(&key(b)).expect("begin b");
    first.write_all(b"aaaa").expect("write a");
    second.write_all(b"bbbbbb").expect("write b");
    let stored_b = second.commit(&sample(b)).expect("commit b");
    let stored_a = first.commit(&sample(a)).expect("commit a");

    assert_ne!(stored_a.artifact, stored_b.artifact);
    let listing = store.list_manifests().expect("list");
    let artifacts: Vec<&str> = listing.archives.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        artifacts,
        [stored_a.artifact.as_str(), stored_b.artifact.as_str()]
    );
    assert_eq!(listing.archives[1].1.bytes_stored, 6);
}

#[test]
fn a_manifest_for_another_archive_is_refused_and_nothing_is_stored() {
    let (_dir, store) = temp_store();
    let mut partial = store.begin(&key(ID)).expect("begin");
    partial.write_all(b"data").expect("write");
    let mut manifest = sample(ID);
    manifest.namespace = "other".to_string();
    let err = partial.commit(&manifest).expect_err("refused");
    assert!(
        matches!(
            err,
            StoreError::ManifestMismatch {
                field: "namespace",
                ..
            }
        ),
        "{err}"
    );
    assert!(files_under(store.root()).is_empty());
}

#[test]
fn listing_skips_partials_and_reports_what_it_cannot_read() {
    let (_dir, store) = temp_store();
    let good = store_one(&store, ID, b"good");
    let _writing = store
        .begin(&key("20261126T010204Z-00000001"))
        .expect("begin");
    let claim = store.root().join(CLAIM_DIR);
    fs::write(claim.join("20261126T010205Z-00000002.tar.zst"), b"x").expect("write");
    fs::write(claim.join("20261126T010205Z-00000002.json"), b"{ not json").expect("write");
    fs::write(
        claim.join("20261126T010206Z-00000003.tar.gz"),
        b"no manifest",
    )
    .expect("write");
    fs::write(claim.join("notes.txt"), b"not ours").expect("write");
    fs::create_dir_all(store.root().join("lost+found")).expect("mkdir");

    let listing = store.list_manifests().expect("list");
    assert_eq!(listing.archives.len(), 1);
    assert_eq!(listing.archives[0].0, good.artifact);
    assert_eq!(listing.archives[0].1.sha256, good.sha256);
    let warnings: Vec<String> = listing.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        matches!(listing.warnings[0], StoreError::CorruptManifest { .. }),
        "{warnings:#?}"
    );
    assert!(
        warnings[0].contains("20261126T010205Z-00000002.json"),
        "{warnings:#?}"
    );
    assert!(
        matches!(
            listing.warnings[1],
            StoreError::Orphan {
                missing: "manifest",
                ..
            }
        ),
        "{warnings:#?}"
    );
}

#[test]
fn listing_an_empty_or_missing_store_finds_nothing() {
    let (_dir, store) = temp_store();
    let listing = store.list_manifests().expect("list");
    assert!(listing.archives.is_empty() && listing.warnings.is_empty());
    assert!(store.sweep_partials().expect("sweep").is_empty());
}

#[test]
fn sweeping_removes_what_a_crash_left_and_keeps_committed_archives() {
    let (_dir, store) = temp_store();
    store_one(&store, ID, b"kept");
    // A crash: the writer never runs its Drop.
    let mut crashed = store
        .begin(&key("20261126T010204Z-00000001"))
        .expect("begin");
    crashed.write_all(b"half").expect("write");
    std::mem::forget(crashed);
    let claim = store.root().join(CLAIM_DIR);
    let manifest_leftover = claim.join(".20261126T010205Z-00000002.json.partial");
    fs::write(&manifest_leftover, b"{").expect("write");

    let mut swept = store.sweep_partials().expect("sweep");
    swept.sort();
    assert_eq!(
        swept,
        [
            claim.join(".20261126T010204Z-00000001.tar.zst.partial"),
            manifest_leftover
        ]
    );
    assert_eq!(
        files_under(store.root()),
        [
            format!("{CLAIM_DIR}/{ID}.json"),
            format!("{CLAIM_DIR}/{ID}.tar.zst")
        ]
    );
}

#[test]
fn open_refuses_paths_that_leave_the_store() {
    let (dir, store) = temp_store();
    let stored = store_one(&store, ID, b"inside");
    let outside = dir.path().join("outside");
    fs::create_dir_all(outside.join("shop/data")).expect("mkdir");
    fs::write(outside.join(format!("shop/data/{ID}.tar")), b"secret").expect("write");

    // A file symlinked out of the store, and a cluster directory symlinked out of it.
    let claim = store.root().join(CLAIM_DIR);
    let linked_file = format!("{CLAIM_DIR}/{ID}.tar.gz");
    std::os::unix::fs::symlink(
        outside.join(format!("shop/data/{ID}.tar")),
        claim.join(format!("{ID}.tar.gz")),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(&outside, store.root().join("elsewhere")).expect("symlink");
    let linked_dir = format!("elsewhere/shop/data/{ID}.tar");

    for hostile in [
        "../x",
        "/etc/passwd",
        "../../../../etc/passwd",
        &linked_file,
        &linked_dir,
    ] {
        let err = store.open(hostile).expect_err(hostile);
        assert_eq!(err.kind(), FailureKind::InvalidInput, "{hostile}: {err}");
    }
    assert_eq!(
        store.delete(&linked_dir).expect_err("refused").kind(),
        FailureKind::InvalidInput
    );
    assert!(outside.join(format!("shop/data/{ID}.tar")).exists());
    assert!(store.open(&stored.artifact).is_ok());
}

#[test]
fn a_missing_archive_is_not_found() {
    let (_dir, store) = temp_store();
    let artifact = format!("{CLAIM_DIR}/{ID}.tar.zst");
    assert_eq!(
        store.open(&artifact).expect_err("missing").kind(),
        FailureKind::NotFound
    );
    assert_eq!(
        store.manifest(&artifact).expect_err("missing").kind(),
        FailureKind::NotFound
    );
    assert_eq!(
        store.delete(&artifact).expect_err("missing").kind(),
        FailureKind::NotFound
    );
}

#[test]
fn delete_removes_the_archive_and_its_manifest() {
    let (_dir, store) = temp_store();
    let stored = store_one(&store, ID, b"gone soon");
    let kept = store_one(&store, "20261126T010204Z-00000001", b"kept");
    store.delete(&stored.artifact).expect("delete");
    assert_eq!(
        files_under(store.root()),
        [
            format!("{CLAIM_DIR}/20261126T010204Z-00000001.json"),
            kept.artifact
        ]
    );
    assert_eq!(
        store.delete(&stored.artifact).expect_err("gone").kind(),
        FailureKind::NotFound
    );
}

#[test]
fn an_unusable_backup_directory_says_which_path_and_what_to_check() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Tests run as root, where permission bits do not bite: a regular file where a directory
    // must be fails for everyone.
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").expect("write");
    let store = LocalStore::new(file.join("backups"));
    let err = store
        .begin(&key(ID))
        .expect_err("cannot create directories under a file");
    assert_eq!(err.kind(), FailureKind::StorageUnavailable);
    let message = err.to_string();
    assert!(
        message.contains("creating the archive directory"),
        "{message}"
    );
    assert!(
        message.contains(&file.join("backups").display().to_string()),
        "{message}"
    );
    assert!(message.contains("NKVM_BACKUP_DIR"), "{message}");
}

#[test]
fn the_engine_can_hold_the_store_as_a_trait_object() {
    let (_dir, local) = temp_store();
    let store: Box<dyn ArchiveStore> = Box::new(local);
    let mut writer = store.begin(&key(ID)).expect("begin");
    writer.write_all(b"through the trait").expect("write");
    assert_eq!(writer.bytes_written(), 17);
    let stored = writer.commit(&sample(ID)).expect("commit");
    let mut back = String::new();
    store
        .open(&stored.artifact)
        .expect("open")
        .read_to_string(&mut back)
        .expect("read");
    assert_eq!(back, "through the trait");
    let aborted = store
        .begin(&key("20261126T010204Z-00000001"))
        .expect("begin");
    aborted.abort().expect("abort");
    assert_eq!(store.list_manifests().expect("list").archives.len(), 1);
}

/// The permission bits of `path` (without following a final symlink).
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn archives_manifests_and_their_directories_are_private_to_the_owner() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A root the store creates itself, as on a first backup.
    let store = LocalStore::new(dir.path().join("backups"));
    let partial = store.begin(&key(ID)).expect("begin");
    let claim = store.root().join(CLAIM_DIR);
    let temp = fs::read_dir(&claim)
        .expect("claim dir")
        .map(|e| e.expect("entry").path())
        .next()
        .expect("the temp archive");
    assert_eq!(mode(&temp), 0o600, "temp archive {}", temp.display());
    partial.abort().expect("abort");
    let stored = store_one(&store, ID, b"volume data");

    let mut checked = 0;
    for sub in [
        "",
        "server_https___127.0.0.1_6443",
        "server_https___127.0.0.1_6443/shop",
        CLAIM_DIR,
    ] {
        assert_eq!(mode(&store.root().join(sub)), 0o700, "directory {sub:?}");
        checked += 1;
    }
    for file in files_under(store.root()) {
        assert_eq!(mode(&store.root().join(&file)), 0o600, "file {file}");
        checked += 1;
    }
    assert_eq!(checked, 6, "4 directories, the archive and its manifest");
    assert!(files_under(store.root()).contains(&stored.artifact));
}

#[test]
fn a_leftover_manifest_temp_file_does_not_lend_its_mode_to_the_manifest() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, store) = temp_store();
    let claim = store.root().join(CLAIM_DIR);
    fs::create_dir_all(&claim).expect("mkdir");
    // What a crashed commit of an older nkvm left: the manifest's temp name, world-readable.
    let leftover = claim.join(format!(".{ID}.json.partial"));
    fs::write(&leftover, b"{}").expect("write");
    fs::set_permissions(&leftover, fs::Permissions::from_mode(0o644)).expect("chmod");
    let stored = store_one(&store, ID, b"data");
    let manifest = store
        .root()
        .join(stored.artifact.replace(".tar.zst", ".json"));
    assert_eq!(mode(&manifest), 0o600);
}

#[test]
fn opening_a_fifo_planted_in_the_store_fails_at_once() {
    let (_dir, store) = temp_store();
    let stored = store_one(&store, ID, b"real");
    // The archive's name taken by a FIFO, as a hostile local user could plant it.
    let fifo_id = "20261126T010204Z-deadbeef";
    let artifact = stored.artifact.replace(ID, fifo_id);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        store.root().join(&artifact),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let (done, result) = std::sync::mpsc::channel();
    let opener = store.clone();
    let wanted = artifact.clone();
    std::thread::spawn(move || {
        let _ = done.send(opener.open(&wanted).map(|_| ()));
    });
    // Without a writer, a blocking open of the FIFO would never return.
    let err = result
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("open returned instead of blocking on the FIFO")
        .expect_err("a FIFO is not an archive");
    assert_eq!(err.kind(), FailureKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(err.to_string().contains(&artifact), "{err}");
    // A directory in an archive's place is refused the same way.
    let dir_id = "20261126T010205Z-deadbeef";
    let dir_artifact = stored.artifact.replace(ID, dir_id);
    fs::create_dir(store.root().join(&dir_artifact)).expect("mkdir");
    let err = store
        .open(&dir_artifact)
        .expect_err("a directory is not an archive");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(store.open(&stored.artifact).is_ok());
}
