//! The pages against a sandbox cluster: connecting through the form, the inventory, a backup
//! followed live and then verified and downloaded from the history, a restore planned and run
//! into a new claim, and a cluster that goes away.

use crate::harness::{Ui, eventually, kubectl};
use axum::body::Body;
use futures_util::StreamExt;
use http::{Request, StatusCode, header};
use nkvm_domain::JobStatus;
use std::time::Duration;
use tower::ServiceExt;

const CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: default}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";

#[tokio::test]
async fn connecting_through_the_form_shows_server_identity_and_permissions() {
    let ui = Ui::connected().await;
    ui.state.session().disconnect();
    let client = ui.login().await;
    let path = ui.kubeconfig().display().to_string();
    let contexts = client
        .get(&format!(
            "/connection/contexts?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("kubeconfig_path", &path)
                .finish()
        ))
        .await;
    assert!(contexts.body.contains("<option"), "{}", contexts.body);
    let reply = client
        .post(
            "/connection/connect",
            &[
                ("mode", "kubeconfig"),
                ("kubeconfig_path", &path),
                ("context", ""),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let page = client.get("/connection").await;
    let server = ui.sandbox.as_ref().unwrap().url();
    assert!(page.body.contains("Connected to"), "{}", page.body);
    assert!(page.body.contains(server.trim_end_matches('/')));
    assert!(page.body.contains("id=\"permissions\""));
    assert!(page.body.contains("create pods"), "{}", page.body);
    let missing = client
        .post(
            "/connection/connect",
            &[
                ("mode", "kubeconfig"),
                ("kubeconfig_path", "/nonexistent/kubeconfig"),
            ],
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body.contains("/nonexistent/kubeconfig"));
    // Any other file on the server is refused before it is read: parse errors would quote it,
    // and a kubeconfig's exec plugin would run.
    let elsewhere = ui.dir.path().join("planted.kubeconfig");
    std::fs::copy(ui.kubeconfig(), &elsewhere).unwrap();
    let planted = client
        .post(
            "/connection/connect",
            &[
                ("mode", "kubeconfig"),
                ("kubeconfig_path", &elsewhere.display().to_string()),
            ],
        )
        .await;
    assert_eq!(planted.status, StatusCode::BAD_REQUEST);
    assert!(
        planted.body.contains("below /etc/nkvm/remote"),
        "{}",
        planted.body
    );
    let listed = client
        .get("/connection/contexts?kubeconfig_path=/etc/passwd")
        .await;
    assert!(!listed.body.contains("root:"), "{}", listed.body);
    assert!(listed.body.contains("the UI opens only"), "{}", listed.body);
    let page = client.get("/connection").await;
    assert!(
        page.body.contains("Connected to"),
        "a failed attempt keeps the live connection"
    );
}

/// Reads a response body's events until one contains `needle` (bounded).
async fn sse_until(body: Body, needle: &str) -> String {
    let mut stream = body.into_data_stream();
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains(needle) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in the event stream; saw:\n{seen}"));
    seen
}

#[tokio::test]
async fn a_backup_runs_as_a_job_streams_progress_and_can_be_verified_and_downloaded() {
    let ui = Ui::connected().await;
    kubectl(&ui, &["apply", "-f", "-"], Some(CLAIM)).await;
    let client = ui.login().await;
    ui.state.refresh_inventory().await;
    let volumes = client.get("/volumes").await;
    assert!(
        volumes.body.contains("data-pvc=\"default/data\""),
        "{}",
        volumes.body
    );

    let events = ui
        .router
        .clone()
        .oneshot(
            Request::get("/jobs/events")
                .header(header::COOKIE, &client.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let submitted = client
        .post(
            "/backups",
            &[
                ("pvc", "default/data"),
                ("compression", "zstd"),
                ("parallel", "2"),
            ],
        )
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::SEE_OTHER,
        "{}",
        submitted.body
    );
    assert!(submitted.header("location").starts_with("/jobs#job-"));
    let stream = sse_until(events.into_body(), "data-status=\"succeeded\"").await;
    assert!(stream.contains("event: item-1-0"), "{stream}");
    assert!(
        stream.contains("event: job-1"),
        "job headings follow: {stream}"
    );

    let job = ui.state.jobs().get(1).expect("the job is kept");
    let item = &job.items[0];
    assert_eq!(item.status, JobStatus::Succeeded, "{item:?}");
    let jobs_page = client.get("/jobs").await;
    assert!(jobs_page.body.contains("data-status=\"succeeded\""));

    let history = client.get("/history?status=succeeded").await;
    assert!(
        history
            .body
            .contains(&format!("data-backup-id=\"{}\"", item.id))
    );
    let row = ui.history.backup(&item.id).unwrap().unwrap();
    assert_eq!(row.actor, "ui:admin");
    assert_eq!(row.trigger, nkvm_domain::Trigger::Ui);

    let verified = client
        .post_raw(
            &format!("/history/{}/verify", item.id),
            "",
            &[("x-csrf-token", &client.csrf), ("hx-request", "true")],
        )
        .await;
    assert!(verified.body.contains("Verified"), "{}", verified.body);

    let download = client.get(&format!("/history/{}/download", item.id)).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.header("content-type"), "application/zstd");
    assert_eq!(
        download.header("content-disposition"),
        format!("attachment; filename=\"default-data-{}.tar.zst\"", item.id)
    );
    let on_disk = std::fs::read(ui.dir.path().join("backups").join(&row.artifact)).unwrap();
    assert!(
        download.bytes == on_disk,
        "the download is the archive, byte for byte"
    );

    let metrics = client.get("/metrics").await;
    assert!(
        metrics
            .body
            .contains(r#"nkvm_jobs_finished_total{kind="backup",status="succeeded"} 1"#),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains(r#"pvc="data""#));

    // Restore it into a new claim: plan first, then run exactly that plan.
    let planned = client
        .post(
            &format!("/history/{}/restore/plan", item.id),
            &[
                ("namespace", "default"),
                ("pvc", "data-restored"),
                ("create", "on"),
            ],
        )
        .await;
    assert_eq!(planned.status, StatusCode::OK, "{}", planned.body);
    assert!(
        planned.body.contains("data-runnable=\"true\""),
        "{}",
        planned.body
    );
    let token = crate::harness::hidden(
        &planned.body[planned.body.find("run-restore-form").unwrap()..],
        "plan",
    )
    .unwrap();
    let run = client
        .post(
            &format!("/history/{}/restore", item.id),
            &[("plan", &token)],
        )
        .await;
    assert_eq!(run.status, StatusCode::SEE_OTHER, "{}", run.body);
    eventually("the restore to finish", async || {
        ui.state
            .jobs()
            .get(2)
            .is_some_and(|j| j.items[0].status.is_final())
    })
    .await;
    let restore = ui.state.jobs().get(2).unwrap();
    assert_eq!(
        restore.items[0].status,
        JobStatus::Succeeded,
        "{:?}",
        restore.items[0]
    );
    let again = client
        .post(
            &format!("/history/{}/restore", item.id),
            &[("plan", &token)],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "a plan runs once");
}

#[tokio::test]
async fn a_cluster_that_goes_away_is_reported_as_a_message() {
    let mut ui = Ui::connected().await;
    let sandbox = ui.sandbox.take().unwrap();
    let client = ui.login().await;
    sandbox.shutdown().await;
    let refreshed = client.post("/volumes/refresh", &[]).await;
    assert_eq!(refreshed.status, StatusCode::SEE_OTHER);
    let page = client.get("/volumes").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"volumes-error\""), "{}", page.body);
    assert!(
        page.body.contains("Loading the inventory failed"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("panicked"));
    // Readiness runs in the background (every 10 s): wait for it to see the cluster gone.
    eventually("readiness to report the cluster gone", async || {
        let body = client.get("/readyz").await.body;
        body.contains("\"ok\": false") && body.contains("the Kubernetes API at")
    })
    .await;
    let ready = client.get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "the UI stays in service: {}",
        ready.body
    );
    let backup = client
        .post(
            "/backups",
            &[("pvc", "default/data"), ("compression", "zstd")],
        )
        .await;
    assert_eq!(backup.status, StatusCode::SEE_OTHER);
    eventually("the refused backup to end", async || {
        ui.state
            .jobs()
            .get(1)
            .is_some_and(|j| j.items[0].status.is_final())
    })
    .await;
    let item = ui.state.jobs().get(1).unwrap().items[0].clone();
    assert_eq!(item.status, JobStatus::Failed);
    assert!(!item.error.is_empty() && !item.hint.is_empty(), "{item:?}");
}
