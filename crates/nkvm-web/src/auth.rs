//! Login, sessions, CSRF and login rate limiting.
//!
//! - One admin password (from the environment or a mounted Secret file, else generated at start
//!   and logged once), compared in constant time.
//! - Sessions live in memory: a random 256-bit token in an `HttpOnly`, `SameSite=Strict` cookie
//!   (`Secure` unless configured off), expiring after an idle period; restarting nkvm logs
//!   everyone out.
//! - Every state-changing request needs the session's CSRF token, as the `X-CSRF-Token` header
//!   (htmx sends it from `hx-headers`) or the `csrf` form field, and a cross-origin `Origin` is
//!   refused outright. The login form has its own double-submit token.
//! - Failed logins slow down per client: after a few, each further attempt from that client
//!   waits longer (up to a minute). There is no global lock, so a flood of guesses from
//!   elsewhere never keeps the right password out. The client is the TCP peer, or the address
//!   a trusted proxy forwards (see [`crate::proxies`]).
//! - Optionally, a trusted reverse proxy names the user in a header; then no password is asked.
//!   The header counts only on requests from a trusted proxy's address.

use crate::WebState;
use crate::form::FormData;
use crate::layout;
use crate::proxies::{Peer, TrustedProxies};
use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "nkvm_session";
/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "nkvm_login";
/// Failed logins a client may make before it has to wait between attempts.
const FREE_FAILURES: u32 = 3;
/// The longest wait between attempts.
const MAX_LOGIN_DELAY: Duration = Duration::from_secs(60);
/// How long a client's failures are remembered after its last one.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Clients whose failures are tracked at most (the oldest are forgotten first).
const MAX_TRACKED_CLIENTS: usize = 10_000;
/// Users named by the trusted header who are remembered (with their CSRF token) at most.
const MAX_HEADER_USERS: usize = 1_000;

/// The admin password; its `Debug` never shows it.
#[derive(Clone)]
pub struct AdminPassword {
    secret: String,
    generated: bool,
}

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.generated {
            "AdminPassword(generated)"
        } else {
            "AdminPassword(configured)"
        })
    }
}

impl AdminPassword {
    /// A configured password; refuses empty ones.
    pub fn configured(secret: &str) -> Result<Self, String> {
        let secret = secret.trim_end_matches(['\r', '\n']);
        if secret.is_empty() {
            return Err("the admin password is empty".into());
        }
        Ok(AdminPassword {
            secret: secret.into(),
            generated: false,
        })
    }

    /// A random password (20 characters from a 56-letter alphabet without look-alikes).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let secret = (0..20)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect();
        AdminPassword {
            secret,
            generated: true,
        }
    }

    /// From `NKVM_ADMIN_PASSWORD` or the file `NKVM_ADMIN_PASSWORD_FILE` names; `None` when
    /// neither is set.
    pub fn from_env() -> Result<Option<Self>, String> {
        if let Ok(p) = std::env::var("NKVM_ADMIN_PASSWORD")
            && !p.is_empty()
        {
            return Self::configured(&p)
                .map(Some)
                .map_err(|e| format!("NKVM_ADMIN_PASSWORD: {e}"));
        }
        match std::env::var_os("NKVM_ADMIN_PASSWORD_FILE") {
            Some(path) if !path.is_empty() => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "NKVM_ADMIN_PASSWORD_FILE: reading {}: {e}",
                        std::path::Path::new(&path).display()
                    )
                })?;
                Self::configured(&text)
                    .map(Some)
                    .map_err(|e| format!("NKVM_ADMIN_PASSWORD_FILE: {e}"))
            }
            _ => Ok(None),
        }
    }

    /// Whether it was generated (and so must be shown to the operator once).
    pub fn is_generated(&self) -> bool {
        self.generated
    }

    /// The password itself, to show once when generated.
    pub fn reveal(&self) -> &str {
        &self.secret
    }

    fn matches(&self, attempt: &str) -> bool {
        constant_time_eq(self.secret.as_bytes(), attempt.as_bytes())
    }
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the lengths equal, so the length does not leak either.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn random_token() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Who is making a request, and their CSRF token.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user name (`admin`, or the trusted header's value).
    pub name: String,
    /// The token every state-changing request must carry.
    pub csrf: String,
}

impl CurrentUser {
    /// How history and the audit log name this user.
    pub fn actor(&self) -> String {
        format!("ui:{}", self.name)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = StatusCode;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        parts
            .extensions
            .get::<CurrentUser>()
            .cloned()
            .ok_or(StatusCode::UNAUTHORIZED)
    }
}

/// The client's address: the peer's, or the one a trusted proxy forwards.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<Arc<WebState>> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<WebState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            state.auth.proxies.client(Peer::of(parts), &parts.headers),
        ))
    }
}

struct SessionEntry {
    user: CurrentUser,
    last_used: Instant,
}

struct HeaderUser {
    csrf: String,
    last_used: Instant,
}

/// A client's failed logins since its last success.
struct ClientFailures {
    count: u32,
    last: Instant,
}

impl ClientFailures {
    /// How long after the last failure the next attempt may come: nothing for the first few,
    /// then 1 s, doubling up to [`MAX_LOGIN_DELAY`].
    fn delay(&self) -> Duration {
        match self.count.checked_sub(FREE_FAILURES) {
            None => Duration::ZERO,
            Some(extra) => Duration::from_secs(1u64 << extra.min(16)).min(MAX_LOGIN_DELAY),
        }
    }
}

/// Sessions, the password and the rate limiter.
pub struct Auth {
    password: AdminPassword,
    cookie_secure: bool,
    trusted_header: Option<http::HeaderName>,
    proxies: TrustedProxies,
    idle: Duration,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    header_users: Mutex<HashMap<String, HeaderUser>>,
    failures: Mutex<HashMap<IpAddr, ClientFailures>>,
    /// Bumped on every logout, so event streams can check whether their session still lives.
    logouts: tokio::sync::watch::Sender<u64>,
}

impl Auth {
    /// From the web configuration.
    pub fn new(config: &crate::WebConfig) -> Self {
        Auth {
            password: config.admin_password.clone(),
            cookie_secure: config.cookie_secure,
            trusted_header: config.trusted_user_header.clone(),
            proxies: config.trusted_proxies.clone(),
            idle: config.session_idle,
            sessions: Mutex::default(),
            header_users: Mutex::default(),
            failures: Mutex::default(),
            logouts: tokio::sync::watch::channel(0).0,
        }
    }

    fn cookie(&self, name: &str, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.cookie_secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .expect("cookie values are hex tokens")
    }

    /// The user of a request from `peer`: the trusted header's (from a trusted proxy only),
    /// else the session cookie's.
    pub fn user(&self, headers: &HeaderMap, peer: IpAddr) -> Option<CurrentUser> {
        if let Some(name) = &self.trusted_header
            && self.proxies.contains(peer)
            && let Some(user) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|u| !u.is_empty())
        {
            return Some(self.header_user(user));
        }
        let token = cookie_value(headers, SESSION_COOKIE)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.last_used) < self.idle);
        let entry = sessions.get_mut(token)?;
        entry.last_used = now;
        Some(entry.user.clone())
    }

    /// The user a trusted proxy named, with a CSRF token kept per name. The map is bounded:
    /// past [`MAX_HEADER_USERS`] the least recently seen name is forgotten (its open pages then
    /// need a reload for a new token).
    fn header_user(&self, name: &str) -> CurrentUser {
        let mut users = self.header_users.lock().unwrap_or_else(|e| e.into_inner());
        if !users.contains_key(name) && users.len() >= MAX_HEADER_USERS {
            let oldest = users
                .iter()
                .min_by_key(|(_, u)| u.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                users.remove(&oldest);
            }
        }
        let entry = users.entry(name.to_string()).or_insert_with(|| HeaderUser {
            csrf: random_token(),
            last_used: Instant::now(),
        });
        entry.last_used = Instant::now();
        CurrentUser {
            name: name.to_string(),
            csrf: entry.csrf.clone(),
        }
    }

    /// Whether the login behind a CSRF token still lives (event streams end when it does not).
    fn is_live(&self, csrf: &str) -> bool {
        let now = Instant::now();
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let session = sessions
            .values()
            .any(|s| s.user.csrf == csrf && now.duration_since(s.last_used) < self.idle);
        drop(sessions);
        session
            || self
                .header_users
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .any(|u| u.csrf == csrf)
    }

    /// Resolves when the login behind `csrf` has ended (logged out or expired); checks on
    /// every logout and once a minute.
    pub async fn ended(&self, csrf: &str) {
        let mut logouts = self.logouts.subscribe();
        loop {
            if !self.is_live(csrf) {
                return;
            }
            tokio::select! {
                changed = logouts.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }

    fn start_session(&self, name: &str) -> String {
        let token = random_token();
        let user = CurrentUser {
            name: name.into(),
            csrf: random_token(),
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.clone(),
                SessionEntry {
                    user,
                    last_used: Instant::now(),
                },
            );
        token
    }

    fn end_session(&self, headers: &HeaderMap) {
        if let Some(token) = cookie_value(headers, SESSION_COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(token);
        }
        self.logouts.send_modify(|n| *n += 1);
    }

    /// Whether `ip` may try to log in now; `Err(seconds)` to wait otherwise.
    fn may_attempt(&self, ip: IpAddr) -> Result<(), u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = failures.get(&ip) else {
            return Ok(());
        };
        let wait = f.delay().saturating_sub(f.last.elapsed());
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.as_secs_f64().ceil() as u64)
        }
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !failures.contains_key(&ip) && failures.len() >= MAX_TRACKED_CLIENTS {
            failures.retain(|_, f| f.last.elapsed() < FAILURE_MEMORY);
            if failures.len() >= MAX_TRACKED_CLIENTS {
                let oldest = failures.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k);
                failures.retain(|k, _| Some(*k) != oldest);
            }
        }
        let now = Instant::now();
        let f = failures.entry(ip).or_insert(ClientFailures {
            count: 0,
            last: now,
        });
        if now.duration_since(f.last) >= FAILURE_MEMORY {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
    }

    fn record_success(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request was made by htmx (it wants a partial, and redirects as a header).
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// Refuses requests whose `Origin` is another site (browsers send it on every POST).
fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("{why}\n")).into_response()
}

/// Lets logged-in requests through (with a [`CurrentUser`]); others are sent to the login
/// (pages) or refused with 401 (htmx, event streams, everything but page GETs). State-changing
/// requests also need the CSRF token and a same-site origin.
pub async fn require_login(
    State(state): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Some(user) = state.auth.user(&parts.headers, Peer::of(&parts)) else {
        return unauthenticated(&parts);
    };
    let mut request = if matches!(parts.method, Method::GET | Method::HEAD) {
        Request::from_parts(parts, body)
    } else {
        if cross_origin(&parts.headers) {
            return forbidden("cross-origin request refused");
        }
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (token, body) = match header_token {
            Some(t) => (Some(t), body),
            None => {
                let bytes = match crate::form::read_body(body).await {
                    Ok(b) => b,
                    Err(refused) => return refused,
                };
                let token = FormData::parse(&bytes).get("csrf").map(str::to_string);
                (token, axum::body::Body::from(bytes))
            }
        };
        match token {
            Some(t) if constant_time_eq(t.as_bytes(), user.csrf.as_bytes()) => {}
            Some(_) => return forbidden("the CSRF token is wrong; reload the page and retry"),
            None => return forbidden("the CSRF token is missing; reload the page and retry"),
        }
        Request::from_parts(parts, body)
    };
    request.extensions_mut().insert(user);
    next.run(request).await
}

fn unauthenticated(parts: &Parts) -> Response {
    let page_view = parts.method == Method::GET
        && !is_htmx(&parts.headers)
        && !parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
    if page_view {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let target: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("next", &next)
            .finish();
        return Redirect::to(&format!("/login?{target}")).into_response();
    }
    let mut response = (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    response
        .headers_mut()
        .insert("hx-redirect", HeaderValue::from_static("/login"));
    response
}

/// `/login` (public).
pub fn routes() -> Router<Arc<WebState>> {
    Router::new().route("/login", get(login_page).post(login))
}

/// `/logout` (behind the login, so it needs the CSRF token too).
pub fn private_routes() -> Router<Arc<WebState>> {
    Router::new().route("/logout", post(logout))
}

/// Where to go after the login: a path of this site, rebuilt from its parsed form; anything
/// odd (control characters or spaces, which browsers strip, backslashes, `//`, a scheme, not
/// a path) goes to `/`. No open redirects: a browser must never read it as another host.
fn safe_next(next: Option<&str>) -> String {
    let Some(n) = next else {
        return "/".into();
    };
    let odd = !n.starts_with('/')
        || !n.is_ascii()
        || n.len() > 2048
        || n.contains("//")
        || n.contains('\\')
        || n.chars().any(|c| c.is_control() || c.is_whitespace());
    if odd {
        return "/".into();
    }
    match n.parse::<http::uri::PathAndQuery>() {
        Ok(pq) if pq.path().starts_with('/') && !pq.path().starts_with("//") => match pq.query() {
            Some(q) => format!("{}?{q}", pq.path()),
            None => pq.path().to_string(),
        },
        _ => "/".into(),
    }
}

async fn login_page(
    State(state): State<Arc<WebState>>,
    Peer(peer): Peer,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    if state.auth.user(&headers, peer).is_some() {
        return Redirect::to(&safe_next(q.get("next").map(String::as_str))).into_response();
    }
    login_form(
        &state,
        &headers,
        q.get("next").map(String::as_str),
        None,
        StatusCode::OK,
    )
}

fn login_form(
    state: &WebState,
    headers: &HeaderMap,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    // Keep a login token the browser already holds: two login pages (a second tab, a
    // redirect racing the first) must not invalidate each other's forms.
    let token = cookie_value(headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(random_token, str::to_string);
    let hint = secure_cookie_hint(state, headers);
    let page = layout::login_page(&token, &safe_next(next), error, hint.as_deref());
    let mut response = (status, page).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        state.auth.cookie(LOGIN_COOKIE, &token, 600),
    );
    response
}

/// A warning when Secure cookies would not survive this plain-HTTP, non-local request.
fn secure_cookie_hint(state: &WebState, headers: &HeaderMap) -> Option<String> {
    if !state.auth.cookie_secure {
        return None;
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let local = matches!(name, "localhost" | "127.0.0.1" | "[::1]");
    (!https && !local).then(|| {
        "This server sets Secure cookies, which browsers keep only over HTTPS (or on localhost). \
         If logging in brings you back here, use HTTPS (an Ingress), kubectl port-forward, or set \
         NKVM_COOKIE_SECURE=false on a trusted network."
            .to_string()
    })
}

async fn login(
    State(state): State<Arc<WebState>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: FormData,
) -> Response {
    let next = form.get("next");
    if cross_origin(&headers) {
        return forbidden("cross-origin request refused");
    }
    let expected = cookie_value(&headers, LOGIN_COOKIE);
    match (form.get("csrf"), expected) {
        (Some(sent), Some(expected)) if constant_time_eq(sent.as_bytes(), expected.as_bytes()) => {}
        _ => {
            return login_form(
                &state,
                &headers,
                next,
                Some("The login form expired; please try again."),
                StatusCode::FORBIDDEN,
            );
        }
    }
    if let Err(wait) = state.auth.may_attempt(ip) {
        let mut r = login_form(
            &state,
            &headers,
            next,
            Some(&format!(
                "Too many failed logins; try again in {wait} seconds."
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    if !state
        .auth
        .password
        .matches(form.get("password").unwrap_or(""))
    {
        state.auth.record_failure(ip);
        tracing::warn!(client = %ip, "failed login");
        return login_form(
            &state,
            &headers,
            next,
            Some("Wrong password."),
            StatusCode::UNAUTHORIZED,
        );
    }
    state.auth.record_success(ip);
    let token = state.auth.start_session("admin");
    tracing::info!(client = %ip, "admin logged in");
    state
        .session
        .workspace()
        .audit("ui:admin", "login", &ip.to_string(), "");
    let mut response = Redirect::to(&safe_next(next)).into_response();
    let idle = state.auth.idle.as_secs();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        state.auth.cookie(SESSION_COOKIE, &token, idle),
    );
    cookies.append(header::SET_COOKIE, state.auth.cookie(LOGIN_COOKIE, "", 0));
    response
}

async fn logout(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    user: CurrentUser,
) -> Response {
    state.auth.end_session(&headers);
    state
        .session
        .workspace()
        .audit(&user.actor(), "logout", "", "");
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.auth.cookie(SESSION_COOKIE, "", 0));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/volumes?ns=a")), "/volumes?ns=a");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        // Browsers strip tabs and newlines from URLs: `/<TAB>/evil` would become `//evil`.
        assert_eq!(safe_next(Some("/\t/evil.example")), "/");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/");
        assert_eq!(safe_next(Some("/\r\nX")), "/");
        assert_eq!(safe_next(Some("/ /evil.example")), "/");
        assert_eq!(safe_next(Some("/a//b")), "/");
        assert_eq!(safe_next(Some("/history?pvc=a%2Fb")), "/history?pvc=a%2Fb");
        assert_eq!(safe_next(Some("javascript:alert(1)")), "/");
        assert_eq!(safe_next(Some("/caf\u{e9}")), "/");
    }

    #[test]
    fn login_delays_grow_per_client_and_a_success_clears_them() {
        let auth = Auth::new(&crate::WebConfig::new(AdminPassword::generate()));
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert!(auth.may_attempt(a).is_ok());
            auth.record_failure(a);
        }
        assert!(
            auth.may_attempt(a).is_err(),
            "waits after the free failures"
        );
        assert!(auth.may_attempt(b).is_ok(), "others are not held up");
        let delays: Vec<u64> = (3..12)
            .map(|count| {
                ClientFailures {
                    count,
                    last: Instant::now(),
                }
                .delay()
                .as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        auth.record_success(a);
        assert!(auth.may_attempt(a).is_ok());
    }

    #[test]
    fn the_trusted_header_users_stay_bounded() {
        let mut config = crate::WebConfig::new(AdminPassword::generate());
        config.trusted_user_header = Some("x-user".parse().unwrap());
        let auth = Auth::new(&config);
        let first = auth.header_user("user-0").csrf;
        for i in 1..(MAX_HEADER_USERS * 3) {
            auth.header_user(&format!("user-{i}"));
        }
        let users = auth.header_users.lock().unwrap();
        assert_eq!(users.len(), MAX_HEADER_USERS);
        assert!(
            !users.values().any(|u| u.csrf == first),
            "the oldest was forgotten"
        );
    }

    #[test]
    fn an_origin_of_another_host_is_cross_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("nkvm.example:8080"));
        assert!(
            !cross_origin(&h),
            "no Origin: same-site form or non-browser"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://nkvm.example:8080"),
        );
        assert!(!cross_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(cross_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_origin(&h));
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let (a, b) = (AdminPassword::generate(), AdminPassword::generate());
        assert_eq!(a.reveal().len(), 20);
        assert_ne!(a.reveal(), b.reveal());
        assert!(a.matches(a.reveal()));
        assert!(!a.matches(b.reveal()));
        assert!(!format!("{a:?}").contains(a.reveal()));
    }
}
