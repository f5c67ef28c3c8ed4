//! Helper pod lifecycle against the sandbox.

use crate::harness::{Env, INSTANCE, helper_options, within};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use nkvm_domain::FailureKind;
use nkvm_domain::UserError;
use nkvm_kube::exec::{ExecTarget, exec_capture};
use nkvm_kube::helper::{self, CONTAINER, HelperError, HelperMode, SecurityProfile, WaitProblem};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_backup_helper_runs_on_the_consumers_node_cannot_write_and_is_deleted_without_a_trace() {
    let env = Env::start().await;
    env.namespace("shop").await;
    let consumer = env.claim_with_files("shop", "data").await;
    let mut opts = helper_options("shop", "data", HelperMode::Backup, "job-1");
    opts.node = Some(consumer.node.clone());
    let running = env.helper(&opts).await;
    assert_eq!(running.node, consumer.node);

    let target = ExecTarget::new("shop", &running.name, CONTAINER);
    let seen = within(exec_capture(
        &env.client,
        &target,
        &["cat", "/data/hello.txt"],
    ))
    .await
    .expect("cat runs");
    assert_eq!((seen.exit_code, seen.stdout.as_str()), (0, "hello\n"));
    let write = within(exec_capture(
        &env.client,
        &target,
        &["sh", "-c", "echo x > /data/new"],
    ))
    .await
    .expect("sh runs");
    assert_ne!(write.exit_code, 0, "a write to the backup mount succeeded");
    assert!(
        write.stderr.contains("Read-only file system"),
        "{}",
        write.stderr
    );

    within(helper::delete_helper(&env.client, "shop", &running.name))
        .await
        .expect("deleted");
    assert!(!env.pod_exists("shop", &running.name).await);
    // Deleting what is gone is not an error (the engine deletes on every path).
    within(helper::delete_helper(&env.client, "shop", &running.name))
        .await
        .expect("second delete is fine");
    env.stop().await;
}

#[tokio::test]
async fn a_run_as_helper_runs_as_the_consumers_user() {
    let env = Env::start().await;
    env.namespace("team").await;
    env.claim("team", "data").await;
    let mut opts = helper_options("team", "data", HelperMode::Restore, "job-2");
    opts.profile = SecurityProfile::RunAs {
        uid: 1000,
        gid: 2000,
        fs_group: None,
    };
    let running = env.helper(&opts).await;
    let target = ExecTarget::new("team", &running.name, CONTAINER);
    let id = within(exec_capture(&env.client, &target, &["id", "-u"]))
        .await
        .expect("id runs");
    assert_eq!(id.stdout.trim(), "1000");
    env.stop().await;
}

#[tokio::test]
async fn a_helper_that_is_never_scheduled_fails_with_the_scheduling_events() {
    let env = Env::with_faults(&["pod-never-ready=nkvm-"]).await;
    env.namespace("shop").await;
    env.claim("shop", "data").await;
    let opts = helper_options("shop", "data", HelperMode::Backup, "job-3");
    let pod = helper::pod_spec(&opts);
    let name = pod.metadata.name.clone().unwrap_or_default();
    within(helper::create_helper(&env.client, &pod))
        .await
        .expect("created");
    let err = within(helper::wait_running(
        &env.client,
        "shop",
        &name,
        Duration::from_secs(3),
    ))
    .await
    .expect_err("never runs");
    assert!(
        matches!(
            &err,
            HelperError::AwaitPodRunning {
                problem: WaitProblem::Timeout { seconds: 3 },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), FailureKind::Timeout);
    let text = err.to_string();
    assert!(text.contains("FailedScheduling"), "{text}");
    assert!(text.contains("no node can take the pod"), "{text}");
    within(helper::delete_helper(&env.client, "shop", &name))
        .await
        .expect("deleted");
    assert!(!env.pod_exists("shop", &name).await);
    env.stop().await;
}

#[tokio::test]
async fn a_helper_on_another_node_than_a_rwo_consumer_fails_naming_the_multi_attach() {
    let env = Env::start().await;
    env.namespace("shop").await;
    let consumer = env.claim_with_files("shop", "data").await;
    let other = if consumer.node == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let mut opts = helper_options("shop", "data", HelperMode::Backup, "job-6");
    opts.node = Some(other.into());
    let pod = helper::pod_spec(&opts);
    let name = pod.metadata.name.clone().unwrap_or_default();
    within(helper::create_helper(&env.client, &pod))
        .await
        .expect("created");
    let err = within(helper::wait_running(
        &env.client,
        "shop",
        &name,
        Duration::from_secs(3),
    ))
    .await
    .expect_err("cannot attach");
    let text = err.to_string();
    assert!(text.contains("Multi-Attach"), "{text}");
    assert!(text.contains("only be read on the node"), "{text}");
    env.stop().await;
}

#[tokio::test]
async fn a_helper_image_that_cannot_be_pulled_fails_fast_naming_the_pull_error() {
    let env = Env::with_faults(&["image-pull-fail=registry.invalid/"]).await;
    env.namespace("shop").await;
    env.claim("shop", "data").await;
    let mut opts = helper_options("shop", "data", HelperMode::Backup, "job-4");
    opts.image = "registry.invalid/nkvm-helper:1".into();
    let pod = helper::pod_spec(&opts);
    let name = pod.metadata.name.clone().unwrap_or_default();
    within(helper::create_helper(&env.client, &pod))
        .await
        .expect("created");
    let started = Instant::now();
    let err = within(helper::wait_running(
        &env.client,
        "shop",
        &name,
        Duration::from_secs(50),
    ))
    .await
    .expect_err("never runs");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains("ErrImagePull") || text.contains("ImagePullBackOff"),
        "{text}"
    );
    assert!(text.contains("registry.invalid/nkvm-helper:1"), "{text}");
    assert!(text.contains("NKVM_HELPER_IMAGE"), "{text}");
    assert_eq!(err.kind(), FailureKind::ClusterUnavailable);
    env.stop().await;
}

#[tokio::test]
async fn creating_a_helper_in_a_missing_namespace_says_so() {
    let env = Env::start().await;
    let opts = helper_options("nowhere", "data", HelperMode::Backup, "job-5");
    let err = within(helper::create_helper(&env.client, &helper::pod_spec(&opts)))
        .await
        .expect_err("no namespace");
    assert!(
        matches!(err, HelperError::CreateHelperPod { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), FailureKind::NotFound);
    env.stop().await;
}

#[tokio::test]
async fn the_sweep_deletes_only_helpers_whose_job_is_not_running() {
    let env = Env::start().await;
    env.namespace("shop").await;
    env.claim("shop", "data").await;
    let live = helper::pod_spec(&helper_options(
        "shop",
        "data",
        HelperMode::Backup,
        "job-live",
    ));
    let dead = helper::pod_spec(&helper_options(
        "shop",
        "data",
        HelperMode::Backup,
        "job-dead",
    ));
    // Another nkvm's helper (a workstation CLI's) is not this instance's to sweep.
    let mut theirs = helper_options("shop", "data", HelperMode::Backup, "job-theirs");
    theirs.instance = "another-instance".into();
    let theirs = helper::pod_spec(&theirs);
    for pod in [&live, &dead, &theirs] {
        within(helper::create_helper(&env.client, pod))
            .await
            .expect("created");
    }
    // nkvm's own pod carries the managed-by label but no job: never a helper.
    env.pod(
        "shop",
        json!({
            "metadata": {"name": "nkvm-app", "labels": {"app.kubernetes.io/managed-by": "nkvm"}},
            "spec": {"containers": [{"name": "app", "image": "nkvm", "command": ["sleep", "600"]}]},
        }),
    )
    .await;
    let report = within(helper::sweep_helpers(
        &env.client,
        &["shop".to_string()],
        INSTANCE,
        |job| job == "job-live",
    ))
    .await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    assert_eq!(report.deleted, vec![format!("shop/{}", name(&dead))]);
    assert_eq!(report.kept, vec![format!("shop/{}", name(&live))]);
    let api: Api<Pod> = Api::namespaced(env.client.clone(), "shop");
    let mut left: Vec<String> = within(api.list(&ListParams::default()))
        .await
        .expect("listed")
        .items
        .iter()
        .map(name)
        .collect();
    left.sort();
    let mut want = vec![name(&live), name(&theirs), "nkvm-app".to_string()];
    want.sort();
    assert_eq!(left, want);
    // Across all namespaces (an empty allowlist) the same.
    let again = within(helper::sweep_helpers(&env.client, &[], INSTANCE, |job| {
        job == "job-live"
    }))
    .await;
    assert!(
        again.deleted.is_empty() && again.failures.is_empty(),
        "{again:?}"
    );
    env.stop().await;
}
