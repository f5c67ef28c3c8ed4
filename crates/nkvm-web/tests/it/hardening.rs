//! What an outside review found: secrets of a paste kept out of pages and `/readyz`, the
//! trusted user header and forwarded addresses believed only from trusted proxies, login
//! delays per client, redirects after the login that stay on this site, kubeconfig files
//! opened only from their directory and never quoted, body limits with a clear message, and
//! downloads whose length is the file's.

use crate::harness::{PASSWORD, Ui, form, from_peer, hidden, set_cookie};
use axum::body::Body;
use http::{Request, StatusCode, header};
use nkvm_history::BackupRow;
use std::time::Duration;

/// A token that must never show anywhere.
const SECRET: &str = "sha256~SECRET-TOKEN-4f1c";

/// A kubeconfig with a YAML error right after its token: the parser's own message would quote
/// the lines around the error.
fn broken_paste() -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:1'}}\nusers:\n- name: u\n  user:\n    token: {SECRET}\n  - [unterminated\n"
    )
}

#[tokio::test]
async fn a_broken_paste_never_shows_its_text_on_the_page_or_in_readyz() {
    let ui = Ui::with(|c| c.readiness_interval = Duration::from_millis(50)).await;
    let client = ui.login().await;
    let reply = client
        .post(
            "/connection/connect",
            &[("mode", "paste"), ("pasted", &broken_paste())],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let error = ui.state.session().status().last_error.expect("an error");
    assert!(error.contains("line"), "{error}");
    assert!(
        !error.contains("SECRET"),
        "the error quotes the paste: {error}"
    );
    let page = client.get("/connection").await;
    assert!(
        page.body.contains("not a valid kubeconfig"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("SECRET"), "{}", page.body);
    // Let the background check pick the failed attempt up, then ask as anyone and as admin.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let anonymous = ui.get_anonymous("/readyz").await;
    let admin = client.get("/readyz").await;
    for body in [&anonymous.body, &admin.body] {
        assert!(!body.contains("SECRET"), "{body}");
    }
    assert!(
        admin.body.contains("not a valid kubeconfig"),
        "{}",
        admin.body
    );
}

#[tokio::test]
async fn readiness_is_cached_and_tells_anonymous_callers_booleans_only() {
    let ui = Ui::with(|c| c.readiness_interval = Duration::from_secs(3600)).await;
    let first = ui.get_anonymous("/readyz").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let json: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"ready": true, "checks": {"history": true, "store": true, "cluster": false}})
    );
    assert!(!first.body.contains("detail"), "{}", first.body);
    // Break the store: a per-request check would see it; the cached answer does not change
    // until the next background run (an hour away here).
    let backups = ui.dir.path().join("backups");
    std::fs::remove_dir_all(&backups).unwrap();
    std::fs::write(&backups, "a file where the store should be").unwrap();
    for _ in 0..20 {
        assert_eq!(ui.get_anonymous("/readyz").await.body, first.body);
    }
    assert!(!backups.is_dir(), "no request probed the store");
    let client = ui.login().await;
    let detailed = client.get("/readyz").await;
    assert!(detailed.body.contains("\"detail\""), "{}", detailed.body);
    assert!(detailed.body.contains("is writable"), "{}", detailed.body);
    assert!(detailed.body.contains("not connected"), "{}", detailed.body);
}

#[tokio::test]
async fn the_user_header_counts_only_from_trusted_proxies() {
    let ui = Ui::with(|c| {
        c.trusted_user_header = Some("x-forwarded-user".parse().unwrap());
        c.trusted_proxies = "10.0.0.0/8".parse().unwrap();
    })
    .await;
    let request = |peer: &str| {
        from_peer(
            peer,
            Request::get("/history")
                .header("x-forwarded-user", "alice@example.com")
                .body(Body::empty())
                .unwrap(),
        )
    };
    let pod = ui.send(request("10.244.3.7")).await;
    assert_eq!(pod.status, StatusCode::OK, "from the proxy's address");
    assert!(pod.body.contains("alice@example.com"));
    for peer in ["192.168.7.7", "0.0.0.0"] {
        let forged = ui.send(request(peer)).await;
        assert_eq!(forged.status, StatusCode::SEE_OTHER, "{peer} is no proxy");
        assert!(forged.header("location").starts_with("/login"));
    }
}

#[tokio::test]
async fn serve_refuses_a_user_header_without_trusted_proxies() {
    let ui = Ui::with(|c| c.trusted_user_header = Some("x-forwarded-user".parse().unwrap())).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        nkvm_web::serve(listener, ui.state.clone(), std::future::pending()),
    )
    .await
    .expect("refused at once");
    let err = served.unwrap_err().to_string();
    assert!(err.contains("NKVM_TRUSTED_PROXIES"), "{err}");
}

/// A login attempt from `peer` (with `forwarded` as `X-Forwarded-For` when given).
async fn attempt(
    ui: &Ui,
    peer: &str,
    forwarded: Option<&str>,
    password: &str,
) -> (StatusCode, String) {
    let page = ui.get_anonymous("/login").await;
    let token = hidden(&page.body, "csrf").unwrap();
    let mut request = Request::post("/login").header(
        header::COOKIE,
        format!("nkvm_login={}", set_cookie(&page, "nkvm_login").unwrap()),
    );
    if let Some(f) = forwarded {
        request = request.header("x-forwarded-for", f);
    }
    let body = form(&[("csrf", &token), ("password", password)]);
    let reply = ui
        .send(from_peer(peer, request.body(Body::from(body)).unwrap()))
        .await;
    (reply.status, reply.header("retry-after").to_string())
}

#[tokio::test]
async fn wrong_passwords_slow_down_their_client_and_nobody_else() {
    let ui = Ui::new().await;
    for _ in 0..5 {
        let (status, _) = attempt(&ui, "203.0.113.1", None, "guess").await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
            "{status}"
        );
    }
    let (status, retry) = attempt(&ui, "203.0.113.1", None, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        retry.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s)),
        "{retry}"
    );
    let (status, _) = attempt(&ui, "203.0.113.2", None, PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "another client logs in at once"
    );
}

#[tokio::test]
async fn guesses_from_many_clients_never_lock_out_the_right_password() {
    let ui = Ui::new().await;
    for i in 0..60 {
        let (status, _) = attempt(&ui, &format!("198.51.100.{i}"), None, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = attempt(&ui, "192.0.2.1", None, PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "no global lock");
}

#[tokio::test]
async fn forwarded_client_addresses_count_only_behind_trusted_proxies() {
    let behind = Ui::with(|c| c.trusted_proxies = "10.0.0.0/8".parse().unwrap()).await;
    for _ in 0..5 {
        attempt(&behind, "10.0.0.5", Some("203.0.113.7"), "guess").await;
    }
    let (alice, _) = attempt(&behind, "10.0.0.5", Some("203.0.113.7"), PASSWORD).await;
    assert_eq!(alice, StatusCode::TOO_MANY_REQUESTS);
    let (bob, _) = attempt(&behind, "10.0.0.5", Some("203.0.113.8"), PASSWORD).await;
    assert_eq!(
        bob,
        StatusCode::SEE_OTHER,
        "each forwarded client has its own delay"
    );
    // Without trusted proxies the header is the client's to forge: it changes nothing.
    let direct = Ui::new().await;
    for i in 0..5 {
        attempt(
            &direct,
            "203.0.113.9",
            Some(&format!("198.51.100.{i}")),
            "guess",
        )
        .await;
    }
    let (forger, _) = attempt(&direct, "203.0.113.9", Some("198.51.100.99"), PASSWORD).await;
    assert_eq!(forger, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn after_the_login_only_plain_local_paths_are_followed() {
    let ui = Ui::new().await;
    for (next, expected) in [
        ("/\t/evil.example", "/"),
        ("/\r\nX", "/"),
        ("//evil.example", "/"),
        ("/history?pvc=data", "/history?pvc=data"),
    ] {
        let page = ui
            .get_anonymous(&format!(
                "/login?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", next)
                    .finish()
            ))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{next:?}");
        let token = hidden(&page.body, "csrf").unwrap();
        let reply = ui
            .send(
                Request::post("/login")
                    .header(
                        header::COOKIE,
                        format!("nkvm_login={}", set_cookie(&page, "nkvm_login").unwrap()),
                    )
                    .body(Body::from(form(&[
                        ("csrf", &token),
                        ("password", PASSWORD),
                        ("next", next),
                    ])))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "{next:?}: {}",
            reply.body
        );
        assert_eq!(reply.header("location"), expected, "{next:?}");
    }
    let client = ui.login().await;
    let again = client.get("/login?next=%2F%0D%0AX").await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "no 500 for a newline");
    assert_eq!(again.header("location"), "/");
}

#[tokio::test]
async fn kubeconfigs_open_only_from_their_directory_and_are_never_quoted() {
    let etc = tempfile::tempdir().unwrap();
    let remote = etc.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let ui = Ui::with(|c| c.kubeconfig_dir = remote.clone()).await;
    let client = ui.login().await;
    let contexts = |path: &std::path::Path| {
        format!(
            "/connection/contexts?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("kubeconfig_path", &path.display().to_string())
                .finish()
        )
    };
    // A secret beside the directory (as the admin password beside /etc/nkvm/remote).
    let admin = etc.path().join("password");
    std::fs::write(&admin, format!("{SECRET}\n")).unwrap();
    let outside = client.get(&contexts(&admin)).await;
    assert!(
        outside.body.contains("the UI opens only"),
        "{}",
        outside.body
    );
    // Inside the directory, and as the configured kubeconfig: not a kubeconfig, not quoted.
    let inside = remote.join("password");
    std::fs::write(&inside, format!("{SECRET}\n")).unwrap();
    std::fs::write(ui.kubeconfig(), format!("token: {SECRET}\nreplicas: 3\n")).unwrap();
    for path in [inside.as_path(), ui.kubeconfig().as_path()] {
        let reply = client.get(&contexts(path)).await;
        assert!(reply.body.contains("not a kubeconfig"), "{}", reply.body);
        assert!(!reply.body.contains("SECRET"), "{}", reply.body);
    }
    // A FIFO would block the reading thread forever.
    let fifo = remote.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reply = client.get(&contexts(&fifo)).await;
    assert!(reply.body.contains("not a regular file"), "{}", reply.body);
}

#[tokio::test]
async fn a_refused_kubeconfig_path_shows_the_connection_form_again() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    let reply = client
        .post(
            "/connection/connect",
            &[("mode", "kubeconfig"), ("kubeconfig_path", "/etc/passwd")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("id=\"form-error\""), "{}", reply.body);
    assert!(reply.body.contains("id=\"connect-form\""), "not a dead end");
    assert!(
        reply.body.contains("value=\"/etc/passwd\""),
        "what was typed stays"
    );
}

#[tokio::test]
async fn large_forms_get_a_message_not_a_bare_413() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    // Over axum's 2 MiB default and under the form limit: the paste's own limit speaks.
    let paste = "x".repeat(2_500_000);
    let reply = client
        .post_raw(
            "/connection/connect",
            &form(&[("mode", "paste"), ("pasted", &paste)]),
            &[("x-csrf-token", &client.csrf)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let page = client.get("/connection").await;
    assert!(
        page.body.contains("the limit is 1048576 bytes"),
        "{}",
        page.body
    );
    let huge = "a".repeat(5 << 20);
    for headers in [vec![("x-csrf-token", client.csrf.as_str())], vec![]] {
        let reply = client
            .post_raw(
                "/connection/connect",
                &format!("mode=paste&pasted={huge}"),
                &headers,
            )
            .await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(reply.body.contains("larger than 4 MiB"), "{}", reply.body);
    }
}

#[tokio::test]
async fn a_download_announces_the_files_length_not_the_historys() {
    let ui = Ui::new().await;
    let id = "20261126T010203Z-00c0ffee";
    let artifact = format!("server_x/shop/data/{id}.tar.zst");
    let file = ui.dir.path().join("backups").join(&artifact);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, vec![7u8; 3000]).unwrap();
    ui.history
        .record_backup(&BackupRow {
            id: id.into(),
            cluster: "server:x".into(),
            namespace: "shop".into(),
            pvc: "data".into(),
            status: nkvm_domain::JobStatus::Succeeded,
            stage: nkvm_domain::Stage::Commit,
            started_at: "2026-11-26T01:02:03Z".into(),
            compression: "zstd".into(),
            bytes_stored: 1_000_000,
            artifact,
            ..Default::default()
        })
        .unwrap();
    let client = ui.login().await;
    let download = client.get(&format!("/history/{id}/download")).await;
    assert_eq!(download.status, StatusCode::OK, "{}", download.body);
    assert_eq!(download.header("content-length"), "3000");
    assert_eq!(download.bytes.len(), 3000);
}

#[tokio::test]
async fn the_disconnect_button_posts_a_form_that_is_accepted() {
    let ui = Ui::connected().await;
    let client = ui.login().await;
    let page = client.get("/connection").await;
    let start = page
        .body
        .find("id=\"disconnect-form\"")
        .expect("a disconnect form");
    let end = start + page.body[start..].find("</form>").unwrap();
    // Exactly what a browser sends for this form: its own fields, no htmx header.
    let token = hidden(&page.body[start..end], "csrf").expect("the form carries the token");
    let reply = client
        .post_raw("/connection/disconnect", &form(&[("csrf", &token)]), &[])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(ui.state.session().app().is_none(), "disconnected");
}
