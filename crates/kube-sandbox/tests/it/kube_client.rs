//! The same cluster through kube-rs, the client nkvm itself uses: list with pagination,
//! watch, create, delete and exec.

use crate::harness::TestCluster;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, AttachParams, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_pages_watches_creates_and_deletes() {
    let c = TestCluster::start().await;
    let ns = c.namespace("kube-rs").await;
    let client = c.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let watch_from = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    for i in 0..5 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}"), "labels": {"n": i.to_string()}}, "data": {"i": i.to_string()}})).expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(2).labels("n");
    loop {
        let page = cms.list(&params).await.expect("page");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(seen, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);
    let one = cms
        .list(&ListParams::default().labels("n=3"))
        .await
        .expect("list");
    assert_eq!(one.items.len(), 1);

    let stream = cms
        .watch(&WatchParams::default().timeout(10), &watch_from)
        .await
        .expect("watch");
    let mut stream = stream.boxed();
    let mut added = 0;
    while added < 5 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("event in time")
            .expect("no error")
            .expect("not ended");
        if let WatchEvent::Added(_) = ev {
            added += 1;
        }
    }
    cms.delete("cm-0", &DeleteParams::default())
        .await
        .expect("delete");
    let deleted = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("event in time")
            .expect("no error")
            .expect("not ended");
        if let WatchEvent::Deleted(cm) = ev {
            break cm;
        }
    };
    assert_eq!(deleted.metadata.name.as_deref(), Some("cm-0"));
    let err = cms.get("cm-0").await.expect_err("gone");
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
        other => panic!("unexpected error {other:?}"),
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_exec_streams_stdout_and_reports_the_exit_status() {
    let c = TestCluster::start().await;
    let ns = c.namespace("kube-exec").await;
    let client = c.client().await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/p",
        "--timeout=30s",
    ])
    .await
    .ok();
    let mut attached = pods
        .exec(
            "p",
            ["sh", "-c", "head -c 5000000 /dev/zero; exit 7"],
            &AttachParams::default()
                .stderr(false)
                .max_stdout_buf_size(1 << 20),
        )
        .await
        .expect("exec");
    let mut out = attached.stdout().expect("stdout");
    let status = attached.take_status().expect("status");
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), out.read(&mut buf))
            .await
            .expect("read in time")
            .expect("read");
        if n == 0 {
            break;
        }
        total += n;
        if total == 5_000_000 {
            break;
        }
    }
    assert_eq!(total, 5_000_000);
    let status = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .expect("status in time")
        .expect("a status");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let code = status
        .details
        .and_then(|d| d.causes)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.message);
    assert_eq!(code.as_deref(), Some("7"));
    pods.delete("p", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    c.stop().await;
}
