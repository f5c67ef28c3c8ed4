//! Serving over a real socket, and the pages without a cluster.

use crate::harness::{Ui, eventually};
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

/// Sends `request` over a new TCP connection to `addr`.
async fn open(addr: std::net::SocketAddr, request: &str) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// Reads until the server closes the connection; `false` if it has not within `limit`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, tcp.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// Reads a chunked response until its last chunk; `false` if it has not ended within `limit`.
async fn response_ended_within(tcp: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        while !seen.ends_with(b"\r\n0\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn logging_out_ends_the_sessions_event_streams() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    let other = ui.login().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nkvm_web::serve(listener, ui.state.clone(), async {
        let _ = stop_rx.await;
    }));
    let stream = |cookie: &str| {
        format!(
            "GET /jobs/events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
        )
    };
    let mut mine = open(addr, &stream(&client.cookie)).await;
    let mut theirs = open(addr, &stream(&other.cookie)).await;
    let mut head = [0u8; 12];
    for tcp in [&mut mine, &mut theirs] {
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
            .await
            .expect("the stream opens")
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    let out = client.post("/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        response_ended_within(&mut mine, Duration::from_secs(5)).await,
        "the logged-out session's stream ends"
    );
    assert!(
        !response_ended_within(&mut theirs, Duration::from_millis(500)).await,
        "another session's stream stays"
    );
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_headers_is_disconnected() {
    let ui = Ui::with(|c| c.header_read_timeout = Duration::from_millis(500)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nkvm_web::serve(listener, ui.state.clone(), async {
        let _ = stop_rx.await;
    }));
    // Half a request line, then nothing: a slowloris.
    let mut slow = open(addr, "GET /healthz HTT").await;
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "the server hangs up on a client that does not finish its headers"
    );
    // An idle kept-alive connection is closed as well.
    let mut idle = open(
        addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    )
    .await;
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
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
    assert!(
        bad.body.contains("id=\"back-to-volumes\""),
        "a way back, not a dead end"
    );
}

#[tokio::test]
async fn readiness_fails_when_the_store_cannot_be_written() {
    let ui = Ui::with(|c| c.readiness_interval = Duration::from_millis(50)).await;
    let backups = ui.dir.path().join("backups");
    let _ = std::fs::remove_dir_all(&backups);
    std::fs::write(&backups, "a file where the store should be").unwrap();
    eventually("readiness to notice the store", async || {
        ui.get_anonymous("/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let anonymous = ui.get_anonymous("/readyz").await;
    assert!(
        anonymous.body.contains("\"store\": false"),
        "{}",
        anonymous.body
    );
    assert!(
        !anonymous.body.contains("NKVM_BACKUP_DIR"),
        "details only when logged in"
    );
    let ready = ui.login().await.get("/readyz").await;
    assert!(ready.body.contains("NKVM_BACKUP_DIR"), "{}", ready.body);
}
