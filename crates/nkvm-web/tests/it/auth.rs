//! Nobody gets past the login but to the health endpoints; every state-changing request needs
//! the session's CSRF token and a same-site origin; logins are rate limited.

use crate::harness::{PASSWORD, Ui, form, from_peer, hidden, set_cookie, set_cookie_line};
use axum::body::Body;
use http::{Request, StatusCode, header};

/// Every page and API route behind the login, with its method.
const PRIVATE: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/connection"),
    ("GET", "/connection/contexts"),
    ("POST", "/connection/connect"),
    ("POST", "/connection/disconnect"),
    ("GET", "/volumes"),
    ("POST", "/volumes/refresh"),
    ("POST", "/backups"),
    ("GET", "/jobs"),
    ("GET", "/jobs/events"),
    ("POST", "/jobs/1/cancel"),
    ("POST", "/jobs/1/items/0/cancel"),
    ("GET", "/history"),
    ("GET", "/history/20261126T000000Z-0000abcd"),
    ("POST", "/history/20261126T000000Z-0000abcd/verify"),
    ("GET", "/history/20261126T000000Z-0000abcd/download"),
    ("GET", "/history/20261126T000000Z-0000abcd/restore"),
    ("POST", "/history/20261126T000000Z-0000abcd/restore"),
    ("POST", "/history/20261126T000000Z-0000abcd/restore/plan"),
    ("GET", "/metrics"),
    ("POST", "/logout"),
];

#[tokio::test]
async fn every_private_route_refuses_anonymous_requests() {
    let ui = Ui::new().await;
    for (method, path) in PRIVATE {
        let request = |extra: Option<(&str, &str)>| {
            let mut r = Request::builder().method(*method).uri(*path);
            if let Some((k, v)) = extra {
                r = r.header(k, v);
            }
            r.body(Body::from("csrf=whatever")).unwrap()
        };
        let plain = ui.send(request(None)).await;
        if *method == "GET" {
            assert_eq!(plain.status, StatusCode::SEE_OTHER, "{method} {path}");
            assert!(
                plain.header("location").starts_with("/login?next="),
                "{method} {path} redirects to the login, not {:?}",
                plain.header("location")
            );
        } else {
            assert_eq!(plain.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
        let htmx = ui.send(request(Some(("hx-request", "true")))).await;
        assert_eq!(
            htmx.status,
            StatusCode::UNAUTHORIZED,
            "htmx {method} {path}"
        );
        assert_eq!(htmx.header("hx-redirect"), "/login", "htmx {method} {path}");
        assert!(!htmx.body.contains("<table"), "no data leaks: {path}");
    }
    let events = ui
        .send(
            Request::get("/jobs/events")
                .header(header::ACCEPT, "text/event-stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(events.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_login_and_static_files_are_public() {
    let ui = Ui::new().await;
    assert_eq!(ui.get_anonymous("/healthz").await.status, StatusCode::OK);
    let ready = ui.get_anonymous("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert!(ready.body.contains("\"cluster\": false"), "{}", ready.body);
    let login = ui.get_anonymous("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("id=\"login-form\""));
    let htmx_src = login
        .body
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let js = ui.get_anonymous(&htmx_src).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.header("cache-control").contains("immutable"));
    assert!(js.body.contains("htmx"));
}

#[tokio::test]
async fn metrics_are_private_unless_configured_public() {
    let private = Ui::new().await;
    assert_eq!(
        private.get_anonymous("/metrics").await.status,
        StatusCode::SEE_OTHER
    );
    let client = private.login().await;
    let metrics = client.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.body.contains("nkvm_jobs_in_flight 0"),
        "{}",
        metrics.body
    );
    let public = Ui::with(|c| c.metrics_public = true).await;
    let open = public.get_anonymous("/metrics").await;
    assert_eq!(open.status, StatusCode::OK);
    assert!(open.body.contains("nkvm_cluster_connected 0"));
}

#[tokio::test]
async fn session_cookies_are_http_only_strict_and_secure_when_configured() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    assert!(!client.csrf.is_empty());
    let page = ui.get_anonymous("/login").await;
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
                ])))
                .unwrap(),
        )
        .await;
    let line = set_cookie_line(&reply, "nkvm_session");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    let plain = Ui::with(|c| c.cookie_secure = false).await;
    let page = plain.get_anonymous("/login").await;
    assert!(!set_cookie_line(&page, "nkvm_login").contains("Secure"));
}

#[tokio::test]
async fn logout_ends_the_session() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    assert_eq!(client.get("/history").await.status, StatusCode::OK);
    assert_eq!(
        client.post("/logout", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(client.get("/history").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn state_changes_without_the_right_csrf_token_are_forbidden() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    for (method, path) in PRIVATE.iter().filter(|(m, _)| *m == "POST") {
        let missing = client.post_raw(path, "", &[]).await;
        assert_eq!(
            missing.status,
            StatusCode::FORBIDDEN,
            "{method} {path} without token"
        );
        assert!(missing.body.contains("CSRF token is missing"));
        let wrong = client.post_raw(path, "csrf=0123", &[]).await;
        assert_eq!(
            wrong.status,
            StatusCode::FORBIDDEN,
            "{method} {path} wrong token"
        );
        let wrong_header = client.post_raw(path, "", &[("x-csrf-token", "0123")]).await;
        assert_eq!(
            wrong_header.status,
            StatusCode::FORBIDDEN,
            "{path} wrong header"
        );
        let cross_site = client
            .post_raw(
                path,
                &form(&[("csrf", &client.csrf)]),
                &[("origin", "https://evil.example"), ("host", "nkvm.local")],
            )
            .await;
        assert_eq!(
            cross_site.status,
            StatusCode::FORBIDDEN,
            "{path} cross-site"
        );
    }
    // The right token in the header (as htmx sends it) or the form passes.
    let by_header = client
        .post_raw(
            "/connection/disconnect",
            "",
            &[("x-csrf-token", &client.csrf), ("hx-request", "true")],
        )
        .await;
    assert_eq!(by_header.status, StatusCode::NO_CONTENT);
    assert_eq!(by_header.header("hx-redirect"), "/connection");
    let by_form = client.post("/connection/disconnect", &[]).await;
    assert_eq!(by_form.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_login_without_its_form_token_is_refused() {
    let ui = Ui::new().await;
    let reply = ui
        .send(
            Request::post("/login")
                .body(Body::from(form(&[("password", PASSWORD)])))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(set_cookie(&reply, "nkvm_session").is_none());
}

async fn attempt(ui: &Ui, password: &str) -> StatusCode {
    let page = ui.get_anonymous("/login").await;
    let token = hidden(&page.body, "csrf").unwrap();
    ui.send(
        Request::post("/login")
            .header(
                header::COOKIE,
                format!("nkvm_login={}", set_cookie(&page, "nkvm_login").unwrap()),
            )
            .body(Body::from(form(&[
                ("csrf", &token),
                ("password", password),
            ])))
            .unwrap(),
    )
    .await
    .status
}

#[tokio::test]
async fn repeated_wrong_passwords_make_the_client_wait() {
    let ui = Ui::new().await;
    for _ in 0..3 {
        assert_eq!(attempt(&ui, "guess").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        attempt(&ui, PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the same client waits a moment, even with the right password"
    );
}

#[tokio::test]
async fn a_trusted_proxy_header_logs_in_only_when_enabled() {
    let request = || {
        from_peer(
            "10.1.2.3",
            Request::get("/history")
                .header("x-forwarded-user", "alice@example.com")
                .body(Body::empty())
                .unwrap(),
        )
    };
    let ignored = Ui::with(|c| c.trusted_proxies = "10.0.0.0/8".parse().unwrap()).await;
    assert_eq!(ignored.send(request()).await.status, StatusCode::SEE_OTHER);
    let trusting = Ui::with(|c| {
        c.trusted_user_header = Some("x-forwarded-user".parse().unwrap());
        c.trusted_proxies = "10.0.0.0/8".parse().unwrap();
    })
    .await;
    let page = trusting.send(request()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("alice@example.com"));
    let token = hidden(&page.body, "csrf").unwrap();
    let post = trusting
        .send(from_peer(
            "10.1.2.3",
            Request::post("/connection/disconnect")
                .header("x-forwarded-user", "alice@example.com")
                .header("x-csrf-token", token)
                .body(Body::empty())
                .unwrap(),
        ))
        .await;
    assert_eq!(post.status, StatusCode::SEE_OTHER, "{}", post.body);
}

#[tokio::test]
async fn a_second_login_page_keeps_the_first_form_valid() {
    let ui = Ui::new().await;
    let first = ui.get_anonymous("/login").await;
    let cookie = set_cookie(&first, "nkvm_login").unwrap();
    let token = hidden(&first.body, "csrf").unwrap();
    // Another tab, or a redirect to the login racing the first page.
    let second = ui
        .send(
            Request::get("/login?next=/favicon.ico")
                .header(header::COOKIE, format!("nkvm_login={cookie}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(hidden(&second.body, "csrf").unwrap(), token);
    let reply = ui
        .send(
            Request::post("/login")
                .header(header::COOKIE, format!("nkvm_login={cookie}"))
                .body(Body::from(form(&[
                    ("csrf", &token),
                    ("password", PASSWORD),
                ])))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}
