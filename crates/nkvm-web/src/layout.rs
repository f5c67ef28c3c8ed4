//! The page shell (head, navigation, the CSRF token htmx sends), the login page, error pages,
//! value formatting, and the security headers every response carries.

use crate::assets;
use crate::auth::CurrentUser;
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, html};

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// The protection dashboard.
    Dashboard,
    /// The connection page.
    Connection,
    /// The inventory.
    Volumes,
    /// Running and recent jobs.
    Jobs,
    /// Backup history.
    History,
    /// The archive stores.
    Stores,
    /// Backup policies.
    Policies,
    /// No entry (login, errors).
    None,
}

/// htmx settings: no inline indicator styles (the CSP forbids inline styles) and no eval.
const HTMX_CONFIG: &str =
    r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · nkvm" }
            // No favicon: an empty one saves the browser a request that would need a login.
            link rel="icon" href="data:,";
            link rel="stylesheet" href=(assets::CSS_PATH.as_str());
            script src=(assets::HTMX_PATH) {}
            script src=(assets::SSE_PATH) {}
            script src=(assets::JS_PATH.as_str()) defer {}
        }
    }
}

/// A full page for a logged-in user.
pub fn page(title: &str, user: &CurrentUser, nav: Nav, body: Markup) -> Html<String> {
    let csrf_headers = serde_json::json!({ "X-CSRF-Token": user.csrf }).to_string();
    let entry = |id: &str, href: &str, label: &str, this: Nav| {
        html! {
            a id=(id) href=(href) class=[(nav == this).then_some("current")] { (label) }
        }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body hx-headers=(csrf_headers) {
                    header.top {
                        a.brand href="/" { "nkvm" }
                        nav {
                            (entry("nav-dashboard", "/", "Dashboard", Nav::Dashboard))
                            (entry("nav-connection", "/connection", "Connection", Nav::Connection))
                            (entry("nav-volumes", "/volumes", "Volumes", Nav::Volumes))
                            (entry("nav-jobs", "/jobs", "Jobs", Nav::Jobs))
                            (entry("nav-history", "/history", "History", Nav::History))
                            (entry("nav-stores", "/stores", "Stores", Nav::Stores))
                            (entry("nav-policies", "/policies", "Policies", Nav::Policies))
                        }
                        form #logout-form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(user.csrf);
                            span.user { (user.name) }
                            button #logout type="submit" { "Log out" }
                        }
                    }
                    main {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

/// The login page.
pub fn login_page(
    token: &str,
    next: &str,
    error: Option<&str>,
    hint: Option<&str>,
) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head("Log in"))
                body.login {
                    main {
                        h1 { "nkvm" }
                        p.muted { "Kubernetes PVC backups. Log in to continue." }
                        @if let Some(e) = error { p.error role="alert" { (e) } }
                        @if let Some(h) = hint { p.warning { (h) } }
                        form #login-form method="post" action="/login" {
                            input type="hidden" name="csrf" value=(token);
                            input type="hidden" name="next" value=(next);
                            label for="password" { "Admin password" }
                            input #password type="password" name="password" autocomplete="current-password" autofocus required;
                            button #login-submit type="submit" { "Log in" }
                        }
                    }
                }
            }
        }
        .into_string(),
    )
}

/// A message box for an error the operator can act on.
pub fn error_box(id: &str, message: &str) -> Markup {
    html! { div.error #(id) role="alert" { (message) } }
}

/// A full error page with a status.
pub fn error_page(user: &CurrentUser, status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        page(title, user, Nav::None, error_box("page-error", message)),
    )
        .into_response()
}

/// Bytes as `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    nkvm_domain::quantity::human_bytes(n)
}

/// Seconds as `1h 02m`, `3m 05s`, `42s`.
pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s >= 3600 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// An RFC 3339 time as `2026-11-26 02:41 UTC` ("never" when empty).
pub fn time(rfc3339: Option<&str>) -> String {
    match rfc3339.filter(|t| !t.is_empty()) {
        None => "never".into(),
        Some(t) => t
            .get(..16)
            .map(|s| format!("{} UTC", s.replace('T', " ")))
            .unwrap_or_else(|| t.to_string()),
    }
}

/// Security headers on every response: no framing, no sniffing, scripts and styles only from
/// this origin.
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_for_people() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(3725), "1h 02m");
        assert_eq!(duration(185), "3m 05s");
        assert_eq!(time(Some("2026-11-26T02:41:53Z")), "2026-11-26 02:41 UTC");
        assert_eq!(time(None), "never");
    }
}
