//! The SFTP store against a real server (Debian's OpenSSH `sshd`, own host key, `internal-sftp`).

use super::*;
use crate::manifest::tests::sample;
use crate::store_contract::{a_second_writer_never_overwrites, data, key, runtime};
use crate::testing::{SshServer, keygen};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::process::Command;

fn store(server: &SshServer, rt: &tokio::runtime::Runtime) -> SftpStore {
    SftpStore::new(server.settings("nas"), rt.handle().clone())
}

const ID: &str = "20261126T010203Z-deadbeef";

#[test]
fn an_archive_round_trips_through_a_temp_file_and_a_rename_and_is_listed() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = SshServer::start(dir.path());
    let store = store(&server, &rt);
    let bytes = data(3 << 20, 7);
    let mut writer = store.begin(&key(ID)).expect("begun");
    writer.write_all(&bytes).unwrap();
    assert!(
        store.list_manifests().unwrap().archives.is_empty(),
        "nothing is listed before the commit"
    );
    let during = server.files();
    assert_eq!(during.len(), 1, "{during:?}");
    let temp = during[0].rsplit('/').next().unwrap();
    assert!(
        temp.starts_with(&format!(".{ID}.tar.zst.")) && temp.ends_with(".partial"),
        "a hidden temp name: {temp}"
    );
    let stored = writer.commit(&sample(ID)).expect("committed");
    assert_eq!(stored.bytes_stored, bytes.len() as u64);
    assert_eq!(stored.sha256, crate::layout::hex(&Sha256::digest(&bytes)));
    let on_disk = std::fs::read(server.data.join(&stored.artifact)).unwrap();
    assert!(on_disk == bytes, "the server's file holds the archive");
    let listing = store.list_manifests().unwrap();
    assert!(listing.warnings.is_empty(), "{:?}", listing.warnings);
    assert_eq!(listing.archives.len(), 1);
    assert_eq!(listing.archives[0].0, stored.artifact);
    assert_eq!(listing.archives[0].1.sha256, stored.sha256);
    assert_eq!(
        store.manifest(&stored.artifact).unwrap().bytes_stored,
        stored.bytes_stored
    );
    let (mut reader, size) = store.open_sized(&stored.artifact).unwrap();
    assert_eq!(size, Some(bytes.len() as u64));
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    assert!(back == bytes, "the archive reads back byte for byte");
    let files = server.files();
    assert_eq!(files.len(), 2, "archive and manifest only: {files:?}");
    store.delete(&stored.artifact).unwrap();
    assert!(store.list_manifests().unwrap().archives.is_empty());
    assert!(server.files().is_empty(), "{:?}", server.files());
    let e = store.delete(&stored.artifact).expect_err("already gone");
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
}

#[test]
fn the_archive_and_manifest_are_fsynced_through_the_openssh_extension() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = SshServer::start_logging_sftp(dir.path());
    let store = store(&server, &rt);
    let mut writer = store.begin(&key(ID)).unwrap();
    writer.write_all(b"synced").unwrap();
    let stored = writer.commit(&sample(ID)).unwrap();
    let log = server.sftp_log();
    let fsyncs: Vec<&str> = log.lines().filter(|l| l.contains("fsync \"")).collect();
    assert_eq!(
        fsyncs.len(),
        2,
        "the archive's and the manifest's temp files: {log}"
    );
    assert!(fsyncs.iter().all(|l| l.contains(".partial")), "{fsyncs:?}");
    let renamed = log.lines().filter(|l| l.contains("rename old")).count();
    assert_eq!(renamed, 2, "{log}");
    assert!(log.contains(&stored.artifact), "{log}");
}

#[test]
fn an_existing_archive_is_never_overwritten() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = SshServer::start(dir.path());
    let store = store(&server, &rt);
    a_second_writer_never_overwrites(&store, ID);
    assert_eq!(
        server.files().len(),
        2,
        "no temp file left: {:?}",
        server.files()
    );
}

#[test]
fn a_server_killed_mid_upload_leaves_nothing_under_the_final_name_and_the_sweep_cleans_up() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let mut server = SshServer::start(dir.path());
    let store = store(&server, &rt);
    let mut writer = store.begin(&key(ID)).unwrap();
    writer.write_all(&data(2 << 20, 3)).unwrap();
    server.kill();
    let chunk = data(1 << 20, 5);
    let failed = (0..40).find_map(|_| writer.write_all(&chunk).err());
    let e = failed.expect("writing fails once the server is gone");
    assert!(e.to_string().contains("nas"), "{e}");
    drop(writer);
    let left = server.files();
    assert!(
        left.iter()
            .all(|f| f.rsplit('/').next().unwrap().starts_with('.')),
        "only a hidden temp file may be left: {left:?}"
    );
    assert_eq!(left.len(), 1, "the crash left its temp file: {left:?}");
    server.restart();
    assert!(store.list_manifests().unwrap().archives.is_empty());
    let swept = store.sweep_partials().expect("swept");
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert!(server.files().is_empty(), "{:?}", server.files());
}

#[test]
fn an_aborted_or_dropped_writer_removes_its_temp_file() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = SshServer::start(dir.path());
    let store = store(&server, &rt);
    let mut writer = store.begin(&key(ID)).unwrap();
    writer.write_all(&data(1 << 20, 9)).unwrap();
    writer.abort().unwrap();
    assert!(server.files().is_empty(), "{:?}", server.files());
    let mut writer = store.begin(&key(ID)).unwrap();
    writer.write_all(b"dropped").unwrap();
    drop(writer);
    assert!(server.files().is_empty(), "{:?}", server.files());
}

/// `ssh-keygen -lf FILE`'s fingerprint of a public key file.
fn keygen_fingerprint(public: &std::path::Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_string()
}

#[test]
fn a_wrong_or_unknown_host_key_is_refused_with_its_fingerprint_before_anything_is_written() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = SshServer::start(dir.path());
    let fingerprint = keygen_fingerprint(&server.etc.join("host_key.pub"));
    let impostor = dir.path().join("impostor");
    keygen(&impostor);
    let public = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let mut fields = public.split_whitespace();
    let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
    let known_hosts = [
        (
            format!("[127.0.0.1]:{} {kind} {blob}\n", server.port),
            "does not match line 1",
        ),
        (
            format!("127.0.0.1 {kind} {blob}\nother.lan {kind} {blob}\n"),
            "is not in",
        ),
    ];
    for (text, problem) in known_hosts {
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, text).unwrap();
        let mut settings = server.settings("nas");
        settings.known_hosts = file;
        let store = SftpStore::new(settings, rt.handle().clone());
        let e = store.check_writable(&key(ID)).expect_err("refused");
        let message = e.to_string();
        assert!(matches!(e, StoreError::HostKeyRejected { .. }), "{message}");
        assert!(message.contains(&fingerprint), "{fingerprint} in {message}");
        assert!(message.contains(problem), "{problem} in {message}");
        assert!(
            message.contains(&format!("[127.0.0.1]:{}", server.port)),
            "{message}"
        );
        assert!(store.begin(&key(ID)).is_err());
        assert!(store.probe().is_err());
        assert!(server.files().is_empty(), "{:?}", server.files());
        let log = server.log();
        assert!(
            !log.contains("Accepted publickey"),
            "no authentication happened: {log}"
        );
    }
}

#[test]
fn an_unknown_user_or_key_is_refused_without_showing_the_key() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = SshServer::start(dir.path());
    let mut settings = server.settings("nas");
    settings.user = "nkvm-no-such-user".into();
    let e = SftpStore::new(settings, rt.handle().clone())
        .check_writable(&key(ID))
        .expect_err("refused");
    assert!(e.to_string().contains("nkvm-no-such-user"), "{e}");
    let other = dir.path().join("other_key");
    keygen(&other);
    let mut settings = server.settings("nas");
    settings.key = Arc::new(load_key("nas", &other, None).unwrap());
    settings.key_file = other.clone();
    let e = SftpStore::new(settings, rt.handle().clone())
        .check_writable(&key(ID))
        .expect_err("refused");
    let text = e.to_string();
    assert!(
        text.contains("refused the key") && text.contains("credentials"),
        "{text}"
    );
    let secret = std::fs::read_to_string(&other).unwrap();
    let body = secret.lines().nth(1).unwrap();
    assert!(!text.contains(body), "the key is never shown: {text}");
    assert!(server.files().is_empty());
}

#[test]
fn the_probe_writes_and_removes_its_file_and_an_unreachable_server_is_refused() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let mut server = SshServer::start(dir.path());
    let store = store(&server, &rt);
    let probed = store.probe().expect("probed");
    assert!(
        probed.starts_with("sftp://") && probed.contains(&server.port.to_string()),
        "{probed}"
    );
    assert!(server.files().is_empty(), "{:?}", server.files());
    let mut settings = server.settings("nas");
    settings.path = format!("{}/missing", server.data.display());
    let e = SftpStore::new(settings, rt.handle().clone())
        .probe()
        .expect_err("refused");
    assert!(
        e.to_string().contains("does not exist on the server"),
        "{e}"
    );
    server.kill();
    let e = store.check_writable(&key(ID)).expect_err("refused");
    assert!(matches!(e, StoreError::Remote { .. }), "{e}");
    assert!(e.to_string().contains("reachable"), "{e}");
}

#[test]
fn orphans_stray_files_and_symlinks_are_reported_or_passed_over() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let server = SshServer::start(dir.path());
    let store = store(&server, &rt);
    let mut w = store.begin(&key(ID)).unwrap();
    w.write_all(b"x").unwrap();
    let stored = w.commit(&sample(ID)).unwrap();
    let claim_dir = server
        .data
        .join(stored.artifact.rsplit_once('/').unwrap().0);
    std::fs::write(
        claim_dir.join("20261126T010203Z-00000001.tar.zst"),
        b"lonely",
    )
    .unwrap();
    std::fs::write(claim_dir.join("20261126T010203Z-00000002.json"), b"{}").unwrap();
    std::fs::write(server.data.join("README"), b"stray").unwrap();
    std::os::unix::fs::symlink("/etc", server.data.join("linked")).unwrap();
    let listing = store.list_manifests().unwrap();
    assert_eq!(listing.archives.len(), 1);
    assert_eq!(listing.warnings.len(), 2, "{:?}", listing.warnings);
    assert!(
        listing
            .warnings
            .iter()
            .all(|w| matches!(w, StoreError::Orphan { .. }))
    );
}

/// `ssh-keygen` of an RSA key pair at `path`, encrypted with `passphrase`.
fn rsa_keygen(path: &std::path::Path, passphrase: &str) {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "rsa",
            "-b",
            "2048",
            "-C",
            "nkvm-test",
            "-N",
            passphrase,
            "-f",
        ])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn an_encrypted_rsa_key_logs_in_and_a_known_rsa_host_key_is_the_one_negotiated() {
    let (rt, dir) = (runtime(), tempfile::tempdir().unwrap());
    let mut server = SshServer::start(dir.path());
    // The server gets an RSA host key beside its ed25519 one; known_hosts holds only the RSA
    // key, as `ssh-keyscan -t rsa` writes it.
    let host_rsa = server.etc.join("host_key_rsa");
    rsa_keygen(&host_rsa, "");
    let config = server.etc.join("sshd_config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("HostKey {}\n", host_rsa.display()));
    std::fs::write(&config, text).unwrap();
    server.kill();
    server.restart();
    let public = std::fs::read_to_string(host_rsa.with_extension("pub")).unwrap();
    let blob: Vec<&str> = public.split_whitespace().take(2).collect();
    let known = dir.path().join("known_hosts_rsa");
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {} {}\n", server.port, blob[0], blob[1]),
    )
    .unwrap();
    // The client logs in with an RSA key encrypted by a passphrase held in a file.
    let client = dir.path().join("client_rsa");
    rsa_keygen(&client, "correct horse");
    let authorized = server.etc.join("authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&std::fs::read_to_string(client.with_extension("pub")).unwrap());
    std::fs::write(&authorized, keys).unwrap();
    std::fs::write(dir.path().join("passphrase"), "correct horse\n").unwrap();
    let yaml = |passphrase: &str| {
        format!(
            "stores:\n- {{name: nas, type: sftp, host: 127.0.0.1, port: {}, user: {}, privateKeyFile: {}, knownHostsFile: {}, path: {}{passphrase}}}\n",
            server.port,
            server.user,
            client.display(),
            known.display(),
            server.data.display()
        )
    };
    let entry = |text: String| match crate::config::parse(&text).unwrap().remove(0) {
        crate::config::StoreConfig::Sftp(c) => c,
        other => panic!("an SFTP entry: {other:?}"),
    };
    let e = entry(yaml(""))
        .settings()
        .expect_err("the key is encrypted");
    assert!(e.to_string().contains("privateKeyPassphraseFile"), "{e}");
    let with_passphrase = format!(
        ", privateKeyPassphraseFile: {}",
        dir.path().join("passphrase").display()
    );
    let settings = entry(yaml(&with_passphrase))
        .settings()
        .expect("the key decrypts");
    let store = SftpStore::new(settings, rt.handle().clone());
    store
        .probe()
        .expect("the RSA host key is accepted and the RSA client key logs in");
}
