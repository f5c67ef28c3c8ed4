//! SFTP stores through the CLI and a stores file, against Debian's OpenSSH `sshd` on a
//! loopback port with its own host key: backup, verify, restore, disaster recovery from the
//! server's directory alone, and the failures (wrong host key, unreachable, killed mid-upload).

use crate::backup::{no_helper_pods, setup};
use crate::encryption::pod_listing;
use crate::harness::Env;
use crate::stores::{FILES, nkvm, recovered_from, restored_listing};
use nkvm_store::testing::{SshServer, keygen};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes a stores file naming `nas` on `server`, vouched for by `known_hosts`.
fn stores_file(env: &Env, server: &SshServer, known_hosts: &Path) -> PathBuf {
    let entry = server.stores_entry("nas").replace(
        &server.known_hosts().display().to_string(),
        &known_hosts.display().to_string(),
    );
    let file = env.dir.path().join(format!(
        "stores-{}.yaml",
        known_hosts.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&file, format!("stores:\n{entry}")).unwrap();
    file
}

/// A backup's result must be a failure at stage `store` made before any helper pod existed.
async fn refused_at_stage_store(env: &Env, stores: &Path) -> String {
    let r = &crate::stores::backup_to(env, stores, "nas").await;
    assert_eq!(
        (&r["status"], &r["stage"]),
        (&"failed".into(), &"store".into()),
        "{r}"
    );
    no_helper_pods(env).await;
    let history = nkvm(env, stores, &["backups", "-o", "json"])
        .await
        .ok()
        .json();
    let rows = history.as_array().unwrap();
    assert!(
        rows.iter().all(|r| r["helperPod"] == ""),
        "no helper pod was made: {history}"
    );
    r["error"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_sftp_verifies_restores_and_comes_back_from_the_server_alone() {
    let env = Env::start().await;
    let server = SshServer::start(&env.dir.path().join("sftp"));
    let stores = stores_file(&env, &server, &server.known_hosts());
    setup(&env, "shop", FILES).await;

    let checked = nkvm(&env, &stores, &["stores", "--check", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(checked[1]["name"], "nas", "{checked}");
    assert_eq!(checked[1]["type"], "sftp", "{checked}");
    assert_eq!(checked[1]["health"], "ok", "{checked}");
    assert!(
        server.files().is_empty(),
        "the probe cleaned up: {:?}",
        server.files()
    );

    let r = &crate::stores::backup_to(&env, &stores, "nas").await;
    assert_eq!(
        (&r["status"], &r["store"]),
        (&"succeeded".into(), &"nas".into()),
        "{r}"
    );
    let id = r["id"].as_str().unwrap().to_string();
    let files = server.files();
    assert_eq!(
        files.len(),
        2,
        "archive and manifest on the server: {files:?}"
    );
    assert!(files.iter().all(|f| f.contains(&id)), "{files:?}");
    assert!(!env.backups().join("server_https___127.0.0.1").exists());

    // Disaster recovery: a fresh nkvm with an empty database, pointed at the server.
    recovered_from(&env, &stores, "nas", r).await;
    let source = pod_listing(&env, "shop", "app").await;
    assert!(source.contains("r.bin"), "{source}");
    assert_eq!(restored_listing(&env, &stores, &id, &[]).await, source);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_or_a_server_gone_fails_at_stage_store_before_any_helper_pod() {
    let env = Env::start().await;
    let mut server = SshServer::start(&env.dir.path().join("sftp"));
    setup(&env, "shop", FILES).await;

    // known_hosts vouching for another key under the server's name.
    let impostor = env.dir.path().join("impostor");
    keygen(&impostor);
    let public = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let blob: Vec<&str> = public.split_whitespace().take(2).collect();
    let wrong_hosts = env.dir.path().join("wrong_known_hosts");
    let line = format!("[127.0.0.1]:{} {} {}\n", server.port, blob[0], blob[1]);
    std::fs::write(&wrong_hosts, line).unwrap();
    let wrong = stores_file(&env, &server, &wrong_hosts);

    let checked = nkvm(&env, &wrong, &["stores", "--check", "-o", "json"]).await;
    assert_eq!(checked.code, 1, "{checked:?}");
    let fingerprint = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(server.etc.join("host_key.pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(fingerprint.stdout).unwrap();
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap();
    let error = refused_at_stage_store(&env, &wrong).await;
    assert!(error.contains(fingerprint), "{fingerprint} in {error}");
    assert!(error.contains("does not match"), "{error}");
    assert!(server.files().is_empty(), "{:?}", server.files());
    let log = server.log();
    assert!(
        !log.contains("Accepted publickey"),
        "nothing was sent: {log}"
    );

    let right = stores_file(&env, &server, &server.known_hosts());
    server.kill();
    let error = refused_at_stage_store(&env, &right).await;
    assert!(error.contains("reachable"), "{error}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sftp_server_killed_mid_upload_fails_at_stage_store_and_recover_sweeps_its_temp_file() {
    let env = Env::start().await;
    let mut server = SshServer::start(&env.dir.path().join("sftp"));
    let stores = stores_file(&env, &server, &server.known_hosts());
    setup(
        &env,
        "shop",
        "head -c 80000000 /dev/urandom > /data/big; sleep 3600",
    )
    .await;

    let data = server.data.clone();
    let kill_mid_upload = async {
        // Killed once the temp file holds data: mid-upload, not before it.
        kube_sandbox::testing::eventually(
            "archive data on the server",
            Duration::from_secs(50),
            async || {
                let written = walk(&data)
                    .iter()
                    .any(|(name, len)| name.ends_with(".partial") && *len > 4 << 20);
                written.then_some(())
            },
        )
        .await;
        server.kill();
    };
    let r = &crate::stores::backup_meanwhile(&env, &stores, "nas", kill_mid_upload).await;
    assert_eq!(
        (&r["status"], &r["stage"]),
        (&"failed".into(), &"store".into()),
        "{r}"
    );
    no_helper_pods(&env).await;
    let visible: Vec<String> = server
        .files()
        .into_iter()
        .filter(|f| !f.rsplit('/').next().unwrap().starts_with('.'))
        .collect();
    assert!(
        visible.is_empty(),
        "nothing under a final name: {visible:?}"
    );
    assert_eq!(
        server.files().len(),
        1,
        "the temp file: {:?}",
        server.files()
    );

    server.restart();
    let recovered = nkvm(&env, &stores, &["recover", "-o", "json"])
        .await
        .ok()
        .json();
    let swept = recovered["partialsDeleted"].as_array().map_or(0, Vec::len);
    assert_eq!(swept, 1, "the dead upload's temp file: {recovered}");
    assert!(server.files().is_empty(), "{:?}", server.files());
    env.stop().await;
}

/// Every file under `dir` with its length.
fn walk(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(e.path());
            } else {
                out.push((e.file_name().to_string_lossy().into_owned(), meta.len()));
            }
        }
    }
    out
}
