//! Webhook notifications of policy runs, posted to a real HTTP receiver in the test process:
//! one JSON document per claim result, retried within bounds, never blocking the run, and
//! counted in `/metrics` when they cannot be delivered.

use crate::harness::Ui;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use http::StatusCode;
use nkvm_engine::notify::Limits;
use nkvm_engine::policy_run::{ClaimOutcome, PolicyRunReport};
use nkvm_policy::file::{Context, PolicySource, PolicySpec, validate};
use nkvm_policy::{Notify, NotifyOn, Policy};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the receiver was sent, and how many requests it should refuse first.
#[derive(Default)]
struct Received {
    bodies: Vec<Value>,
    refuse: usize,
    requests: usize,
}

async fn receive(State(r): State<Arc<Mutex<Received>>>, body: String) -> StatusCode {
    let mut r = r.lock().unwrap();
    r.requests += 1;
    if r.refuse > 0 {
        r.refuse -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.bodies.push(serde_json::from_str(&body).expect("JSON"));
    StatusCode::NO_CONTENT
}

/// A receiver on a loopback port: its URL and what it got.
async fn receiver(refuse: usize) -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received {
        refuse,
        ..Default::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook?token=s3cret",
        listener.local_addr().unwrap()
    );
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn policy(webhook: &str, on: NotifyOn) -> Policy {
    let allow = nkvm_domain::Allowlist::default();
    let stores = vec!["local".to_string()];
    validate(
        PolicySpec {
            name: "nightly".into(),
            schedule: "0 2 * * *".into(),
            namespaces: vec!["shop".into()],
            notify: Some(Notify {
                webhook: webhook.into(),
                on,
            }),
            ..Default::default()
        },
        PolicySource::Ui,
        &Context {
            allowlist: &allow,
            stores: &stores,
        },
    )
    .unwrap()
}

fn outcome(pvc: &str, result: &str, error: &str) -> ClaimOutcome {
    ClaimOutcome {
        namespace: "shop".into(),
        pvc: pvc.into(),
        result: result.into(),
        stage: if result == "failed" {
            "helper-pod"
        } else {
            "commit"
        }
        .into(),
        error: error.into(),
        backup_id: String::new(),
        bytes_stored: 0,
    }
}

fn report() -> PolicyRunReport {
    PolicyRunReport {
        policy: "nightly".into(),
        slot: "2026-03-10T02:00:00Z".into(),
        claims: vec![
            outcome("data", "succeeded", ""),
            outcome("logs", "failed", "the node is gone"),
            outcome("raw", "skipped", "volumeMode Block"),
        ],
        started_at: "2026-03-10T02:00:01Z".into(),
        finished_at: "2026-03-10T02:03:00Z".into(),
        ..Default::default()
    }
}

fn fast() -> Limits {
    Limits {
        attempts: 3,
        timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(50),
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn failures_are_posted_per_claim_and_a_refusal_is_retried() {
    let ui = Ui::new().await;
    let (url, received) = receiver(1).await;
    let observer = ui.state.policy_observer_with(fast());
    observer.run_finished(&policy(&url, NotifyOn::Failure), Ok(&report()));
    until("the failed claim's notification", || {
        !received.lock().unwrap().bodies.is_empty()
    })
    .await;
    // Anything else would have arrived by the time a second notification could have.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = received.lock().unwrap();
    assert_eq!(r.requests, 2, "refused once, then delivered");
    assert_eq!(r.bodies.len(), 1, "on failure: only the failed claim");
    let sent = &r.bodies[0];
    assert_eq!(sent["policy"], "nightly");
    assert_eq!(sent["cluster"], "default");
    assert_eq!(sent["namespace"], "shop");
    assert_eq!(sent["pvc"], "logs");
    assert_eq!(sent["result"], "failed");
    assert_eq!(sent["stage"], "helper-pod");
    assert_eq!(sent["error"], "the node is gone");
    assert_eq!(sent["startedAt"], "2026-03-10T02:00:01Z");
    assert_eq!(sent["finishedAt"], "2026-03-10T02:03:00Z");
    assert!(sent.get("backupId").is_some());
    assert!(
        !sent.to_string().contains("s3cret"),
        "the webhook's own token is not echoed"
    );
}

#[tokio::test]
async fn always_posts_every_claim_and_undeliverable_ones_are_counted_without_blocking() {
    let ui = Ui::new().await;
    let (url, received) = receiver(0).await;
    let observer = ui.state.policy_observer_with(fast());
    observer.run_finished(&policy(&url, NotifyOn::Always), Ok(&report()));
    until("three notifications", || {
        received.lock().unwrap().bodies.len() == 3
    })
    .await;
    let results: Vec<String> = received
        .lock()
        .unwrap()
        .bodies
        .iter()
        .map(|b| b["result"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(results, ["succeeded", "failed", "skipped"]);

    // Nobody listens here: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let began = Instant::now();
    observer.run_finished(&policy(&dead, NotifyOn::Failure), Ok(&report()));
    assert!(
        began.elapsed() < Duration::from_millis(500),
        "delivery never holds up the run"
    );
    let client = ui.login().await;
    let failed = r#"nkvm_webhook_deliveries_total{policy="nightly",result="failed"} 1"#;
    let delivered = r#"nkvm_webhook_deliveries_total{policy="nightly",result="delivered"} 3"#;
    let mut body = String::new();
    for _ in 0..200 {
        body = client.get("/metrics").await.body;
        if body.contains(failed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(body.contains(failed), "{body}");
    assert!(body.contains(delivered), "{body}");
}
