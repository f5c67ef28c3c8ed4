//! Exec streams against the sandbox: byte-exact tar, exit codes, cut and stalled streams,
//! stdin, throughput.

use crate::harness::{
    Entry, Env, build_archive, expected_files, helper_options, read_archive, within,
};
use bytes::Bytes;
use nkvm_domain::FailureKind;
use nkvm_domain::UserError;
use nkvm_kube::exec::{
    ExecError, ExecOptions, ExecOutcome, ExecProtocol, ExecTarget, exec_capture, exec_stream,
};
use nkvm_kube::helper::{CONTAINER, DATA_DIR, HelperMode};
use nkvm_kube::tar_command::TarFlavor;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

/// Runs `argv` with `stdin`, collecting stdout in a background task.
async fn run(
    env: &Env,
    target: &ExecTarget,
    argv: &[String],
    stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>,
    options: &ExecOptions,
) -> (Result<ExecOutcome, ExecError>, Vec<u8>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let collector = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
        }
        out
    });
    let result = within(exec_stream(&env.client, target, argv, stdin, tx, options)).await;
    let out = within(collector).await.expect("collector");
    (result, out)
}

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A running helper for a fresh claim in a fresh namespace.
async fn helper_for_empty_claim(env: &Env, ns: &str, mode: HelperMode) -> ExecTarget {
    env.namespace(ns).await;
    env.claim(ns, "data").await;
    let running = env.helper(&helper_options(ns, "data", mode, "job")).await;
    ExecTarget::new(ns, &running.name, CONTAINER)
}

async fn tar_flavor(env: &Env, target: &ExecTarget) -> TarFlavor {
    let probe = within(exec_capture(&env.client, target, &["tar", "--version"]))
        .await
        .expect("probe runs");
    TarFlavor::detect(probe.exit_code, &probe.stdout, &probe.stderr).expect("a tar")
}

#[tokio::test]
async fn tar_in_a_backup_helper_streams_the_claims_files_byte_exact() {
    let env = Env::start().await;
    env.namespace("shop").await;
    let consumer = env.claim_with_files("shop", "data").await;
    let mut opts = helper_options("shop", "data", HelperMode::Backup, "job-1");
    opts.node = Some(consumer.node);
    let running = env.helper(&opts).await;
    let target = ExecTarget::new("shop", &running.name, CONTAINER);
    let flavor = tar_flavor(&env, &target).await;
    assert!(matches!(flavor, TarFlavor::Gnu { .. }), "{flavor}");

    let (result, archive) = run(
        &env,
        &target,
        &flavor.archive_command(DATA_DIR),
        None,
        &ExecOptions::default(),
    )
    .await;
    let outcome = result.expect("tar ran");
    assert_eq!(outcome.exit_code, 0, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.protocol, ExecProtocol::V5);
    assert_eq!(outcome.stdout_bytes, archive.len() as u64);
    assert_eq!(archive.len() % 10240, 0, "tar pads to whole records");
    assert_eq!(read_archive(&archive), expected_files());
    env.stop().await;
}

#[tokio::test]
async fn a_non_zero_exit_is_an_outcome_with_its_code_and_stderr() {
    let env = Env::start().await;
    let target = helper_for_empty_claim(&env, "shop", HelperMode::Backup).await;
    let (result, out) = run(
        &env,
        &target,
        &argv(&["sh", "-c", "echo partial; echo oops >&2; exit 3"]),
        None,
        &ExecOptions::default(),
    )
    .await;
    let outcome = result.expect("ran to an exit status");
    assert_eq!(outcome.exit_code, 3);
    assert_eq!(outcome.stderr, "oops\n");
    assert!(!outcome.stderr_truncated);
    assert_eq!(out, b"partial\n");
    env.stop().await;
}

#[tokio::test]
async fn only_the_end_of_a_long_stderr_is_kept() {
    let env = Env::start().await;
    let target = helper_for_empty_claim(&env, "shop", HelperMode::Backup).await;
    let options = ExecOptions {
        stderr_limit: 1000,
        ..ExecOptions::default()
    };
    let (result, _) = run(
        &env,
        &target,
        &argv(&[
            "sh",
            "-c",
            "head -c 200000 /dev/zero | tr '\\000' x >&2; echo END >&2",
        ]),
        None,
        &options,
    )
    .await;
    let outcome = result.expect("ran");
    assert_eq!(outcome.exit_code, 0);
    assert!(outcome.stderr_truncated);
    assert_eq!(outcome.stderr.len(), 1000);
    assert!(outcome.stderr.ends_with("xxEND\n"));
    env.stop().await;
}

#[tokio::test]
async fn a_cut_stream_is_an_error_never_a_success() {
    let env = Env::with_faults(&["exec-cut-after=100000,count=1"]).await;
    let target = helper_for_empty_claim(&env, "shop", HelperMode::Backup).await;
    let command = argv(&["head", "-c", "1000000", "/dev/zero"]);
    let (result, out) = run(&env, &target, &command, None, &ExecOptions::default()).await;
    let err = result.expect_err("a cut stream must not succeed");
    match &err {
        ExecError::StreamEndedWithoutStatus { stdout_bytes, .. } => {
            assert_eq!(*stdout_bytes, out.len() as u64);
            assert!(*stdout_bytes <= 100_000, "{stdout_bytes}");
        }
        other => panic!("expected StreamEndedWithoutStatus, got {other:?}"),
    }
    assert_eq!(err.kind(), FailureKind::ClusterUnavailable);
    assert!(
        err.to_string().contains("ended without an exit status"),
        "{err}"
    );
    // The fault was used up: the same command now completes.
    let (again, out) = run(&env, &target, &command, None, &ExecOptions::default()).await;
    assert_eq!(again.expect("completes").exit_code, 0);
    assert_eq!(out.len(), 1_000_000);
    env.stop().await;
}

#[tokio::test]
async fn a_stalled_stream_is_reported_after_the_idle_timeout() {
    let env = Env::with_faults(&["exec-stall-after=1000"]).await;
    let target = helper_for_empty_claim(&env, "shop", HelperMode::Backup).await;
    let options = ExecOptions {
        ping_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(2),
        ..ExecOptions::default()
    };
    let started = Instant::now();
    let (result, out) = run(
        &env,
        &target,
        &argv(&["head", "-c", "1000000", "/dev/zero"]),
        None,
        &options,
    )
    .await;
    let err = result.expect_err("a stalled stream must not succeed");
    assert!(
        matches!(
            err,
            ExecError::Stalled {
                stdout_bytes: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(out.len(), 1000);
    assert_eq!(err.kind(), FailureKind::Timeout);
    // Pings were answered all along; they must not count as progress.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    env.stop().await;
}

#[tokio::test]
async fn exec_into_a_missing_pod_is_not_found() {
    let env = Env::start().await;
    env.namespace("shop").await;
    let target = ExecTarget::new("shop", "nope", CONTAINER);
    let err = within(exec_capture(&env.client, &target, &["true"]))
        .await
        .expect_err("no pod");
    assert!(matches!(err, ExecError::StartExec { .. }), "{err:?}");
    assert_eq!(err.kind(), FailureKind::NotFound);
    env.stop().await;
}

/// Files for the restore test: owners, modes, a symlink, a file bigger than a stdin frame.
fn restore_files() -> BTreeMap<String, Entry> {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    BTreeMap::from([
        ("./etc".into(), Entry::Dir { mode: 0o750 }),
        (
            "./etc/app.conf".into(),
            Entry::File {
                mode: 0o600,
                uid: 999,
                gid: 998,
                content: b"key = value\n".to_vec(),
            },
        ),
        (
            "./blob.bin".into(),
            Entry::File {
                mode: 0o644,
                uid: 0,
                gid: 0,
                content: big,
            },
        ),
        (
            "./run.sh".into(),
            Entry::File {
                mode: 0o755,
                uid: 1000,
                gid: 1000,
                content: b"#!/bin/sh\necho hi\n".to_vec(),
            },
        ),
        (
            "./current".into(),
            Entry::Link {
                target: "etc/app.conf".into(),
            },
        ),
    ])
}

#[tokio::test]
async fn an_archive_sent_on_stdin_is_restored_and_reads_back_the_same() {
    let env = Env::start().await;
    let target = helper_for_empty_claim(&env, "shop", HelperMode::Restore).await;
    let flavor = tar_flavor(&env, &target).await;
    let files = restore_files();
    let archive = build_archive(&files);
    let mut stdin: &[u8] = &archive;
    let (result, out) = run(
        &env,
        &target,
        &flavor.extract_command(DATA_DIR, true, true),
        Some(&mut stdin),
        &ExecOptions::default(),
    )
    .await;
    let outcome = result.expect("tar -x ran");
    assert_eq!(outcome.exit_code, 0, "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdin_bytes, archive.len() as u64);
    assert!(out.is_empty());

    let (result, back) = run(
        &env,
        &target,
        &flavor.archive_command(DATA_DIR),
        None,
        &ExecOptions::default(),
    )
    .await;
    assert_eq!(result.expect("tar -c ran").exit_code, 0);
    assert_eq!(read_archive(&back), files);
    env.stop().await;
}

#[tokio::test]
async fn two_hundred_fifty_six_mib_pass_through_an_exec_stream() {
    const SIZE: u64 = 256 << 20;
    let env = Env::start().await;
    let target = helper_for_empty_claim(&env, "shop", HelperMode::Backup).await;
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        let mut nonzero = false;
        while let Some(chunk) = rx.recv().await {
            n += chunk.len() as u64;
            nonzero |= chunk.iter().any(|b| *b != 0);
        }
        (n, nonzero)
    });
    let started = Instant::now();
    let command = argv(&["head", "-c", &SIZE.to_string(), "/dev/zero"]);
    let outcome = within(exec_stream(
        &env.client,
        &target,
        &command,
        None,
        tx,
        &ExecOptions::default(),
    ))
    .await
    .expect("streamed");
    let (n, nonzero) = within(counter).await.expect("counter");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(outcome.exit_code, 0);
    assert_eq!((outcome.stdout_bytes, n, nonzero), (SIZE, SIZE, false));
    eprintln!(
        "256 MiB through exec_stream in {secs:.2} s ({:.0} MiB/s, debug build)",
        256.0 / secs
    );
    env.stop().await;
}
