//! Serving over a real socket, and the pages without a cluster.

use crate::harness::Ui;
use http::StatusCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn serve_stops_promptly_with_an_open_event_stream() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nkvm_web::serve(listener, ui.state.clone(), async {
        let _ = stop_rx.await;
    }));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /jobs/events HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n",
            client.cookie
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
        .await
        .expect("the stream opens")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("an open event stream does not hold shutdown up")
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the stream was closed by the server");
}

#[tokio::test]
async fn without_a_connection_the_volumes_page_points_to_the_connection_page() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    let home = client.get("/").await;
    assert_eq!(home.header("location"), "/connection");
    let page = client.get("/volumes").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"volumes-error\""));
    assert!(page.body.contains("Not connected"));
    let backup = client
        .post("/backups", &[("pvc", "shop/data"), ("compression", "zstd")])
        .await;
    assert_eq!(backup.status, StatusCode::CONFLICT);
    assert!(backup.body.contains("Not connected"));
    let bad = client.post("/backups", &[("compression", "zstd")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("Select at least one volume"));
}

#[tokio::test]
async fn readiness_fails_when_the_store_cannot_be_written() {
    let ui = Ui::new().await;
    std::fs::write(
        ui.dir.path().join("backups"),
        "a file where the store should be",
    )
    .unwrap();
    let ready = ui.get_anonymous("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert!(ready.body.contains("NKVM_BACKUP_DIR"), "{}", ready.body);
}
