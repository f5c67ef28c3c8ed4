//! A web UI over a fresh history and store, optionally connected to an in-process sandbox, and
//! a small client that logs in and keeps the session cookie and CSRF token.

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode, header};
use kube_sandbox::testing::{self, TestSandbox};
use nkvm_engine::Settings;
use nkvm_engine::session::{AuthMode, ConnectOptions, Session, Workspace};
use nkvm_history::History;
use nkvm_web::{AdminPassword, WebConfig, WebState};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The admin password every test UI uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// A web UI under test.
pub struct Ui {
    /// Its shared state (jobs, session, inventory cache).
    pub state: Arc<WebState>,
    /// The router.
    pub router: Router,
    /// The history (tests seed rows into it).
    pub history: Arc<History>,
    /// Scratch directory: history, store, kubeconfig.
    pub dir: tempfile::TempDir,
    /// The sandbox, when connected.
    pub sandbox: Option<TestSandbox>,
}

/// A response, read whole.
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text (lossy).
    pub body: String,
    /// Body as bytes.
    pub bytes: Vec<u8>,
}

impl Reply {
    /// A header's value ("" if absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

fn config(tweak: impl FnOnce(&mut WebConfig)) -> WebConfig {
    let mut c = WebConfig::new(AdminPassword::configured(PASSWORD).unwrap());
    tweak(&mut c);
    c
}

impl Ui {
    /// A disconnected UI with default settings.
    pub async fn new() -> Ui {
        Ui::with(|_| {}).await
    }

    /// A disconnected UI with configuration changes.
    pub async fn with(tweak: impl FnOnce(&mut WebConfig)) -> Ui {
        Ui::build(tweak, Vec::new()).await
    }

    /// A UI connected to a fresh sandbox whose workspace has these stores besides `local`.
    pub async fn connected_with_stores(stores: Vec<nkvm_store::NamedStore>) -> Ui {
        let ui = Ui::build(|_| {}, stores).await;
        ui.connect_sandbox().await
    }

    async fn build(tweak: impl FnOnce(&mut WebConfig), extra: Vec<nkvm_store::NamedStore>) -> Ui {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let history = Arc::new(History::open(&dir.path().join("backups.db")).unwrap());
        let backups = dir.path().join("backups");
        let store = Arc::new(nkvm_store::LocalStore::new(&backups));
        // No nkvm binary is mapped into these sandboxes' helper pods: the generic tar path.
        let settings = Settings {
            helper_image: nkvm_engine::GENERIC_HELPER_IMAGE.into(),
            ..Settings::default()
        };
        let mut stores = nkvm_store::Stores::local(store.clone(), backups.display().to_string());
        for named in extra {
            stores.add(named).expect("a store name of its own");
        }
        let workspace = Arc::new(
            Workspace::new(history.clone(), store, settings)
                .with_store_dir(&backups)
                .with_stores(Arc::new(stores)),
        );
        // The UI opens only the kubeconfig nkvm was started with: the sandbox's, once written.
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let config = config(|c| {
            c.default_kubeconfig = Some(kubeconfig);
            tweak(c);
        });
        let state = WebState::new(Arc::new(Session::new(workspace)), config);
        Ui {
            router: nkvm_web::router(state.clone()),
            state,
            history,
            dir,
            sandbox: None,
        }
    }

    /// A UI connected to a fresh sandbox (admin kubeconfig).
    pub async fn connected() -> Ui {
        Ui::new().await.connect_sandbox().await
    }

    async fn connect_sandbox(self) -> Ui {
        let mut ui = self;
        // In the UI's scratch directory: its kubeconfig is the one the UI was configured with.
        let sandbox = TestSandbox::start_in(ui.dir.path(), Default::default()).await;
        assert_eq!(sandbox.kubeconfig(), ui.kubeconfig());
        ui.sandbox = Some(sandbox);
        let mut opts = ConnectOptions::new(AuthMode::Kubeconfig);
        opts.kubeconfig = Some(ui.kubeconfig());
        ui.state
            .session()
            .connect(opts)
            .await
            .expect("connects to the sandbox");
        ui
    }

    /// Where the sandbox's admin kubeconfig is written.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// Sends a request as-is.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            self.router.clone().oneshot(request),
        )
        .await
        .expect("the UI answers in time")
        .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            bytes: body.to_vec(),
        }
    }

    /// A GET without a session.
    pub async fn get_anonymous(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// Logs in and returns a client with the session.
    pub async fn login(&self) -> Client<'_> {
        let page = self.get_anonymous("/login").await;
        let login_cookie = set_cookie(&page, "nkvm_login").expect("login cookie");
        let token = hidden(&page.body, "csrf").expect("login form token");
        let reply = self
            .send(
                Request::post("/login")
                    .header(header::COOKIE, format!("nkvm_login={login_cookie}"))
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(form(&[
                        ("csrf", &token),
                        ("password", PASSWORD),
                    ])))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "login: {}", reply.body);
        let session = set_cookie(&reply, "nkvm_session").expect("session cookie");
        let mut client = Client {
            ui: self,
            cookie: format!("nkvm_session={session}"),
            csrf: String::new(),
        };
        let page = client.get("/jobs").await;
        client.csrf = hidden(&page.body, "csrf").expect("pages carry the CSRF token");
        client
    }
}

/// A logged-in client.
pub struct Client<'a> {
    ui: &'a Ui,
    /// The `Cookie` header value.
    pub cookie: String,
    /// The session's CSRF token.
    pub csrf: String,
}

impl Client<'_> {
    /// A GET with the session.
    pub async fn get(&self, path: &str) -> Reply {
        self.ui
            .send(
                Request::get(path)
                    .header(header::COOKIE, &self.cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
    }

    /// A form POST with the session and the CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &form(&all), &[]).await
    }

    /// A POST with the session, a body and extra headers, exactly as given.
    pub async fn post_raw(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::COOKIE, &self.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.ui
            .send(request.body(Body::from(body.to_string())).unwrap())
            .await
    }
}

/// `request` as if it came over TCP from `peer` (an IP address).
pub fn from_peer(peer: &str, mut request: Request<Body>) -> Request<Body> {
    let addr = std::net::SocketAddr::new(peer.parse().expect("an IP address"), 40000);
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    request
}

/// A urlencoded form body.
pub fn form(fields: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The value a response's `Set-Cookie` gives cookie `name`.
pub fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

/// The full `Set-Cookie` line for cookie `name`.
pub fn set_cookie_line(reply: &Reply, name: &str) -> String {
    reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or("")
        .to_string()
}

/// The value of the first hidden input named `name` in a page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// Waits (polling, bounded) until `check` holds.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    testing::eventually(what, Duration::from_secs(90), async || {
        check().await.then_some(())
    })
    .await
}

/// Runs kubectl against the UI's sandbox, panicking unless it succeeds.
pub async fn kubectl(ui: &Ui, args: &[&str], stdin: Option<&str>) -> String {
    let run = testing::kubectl(
        &ui.kubeconfig(),
        args,
        // Always a (possibly empty) stdin, as kubectl commands here may read it.
        Some(stdin.unwrap_or("").as_bytes()),
        Duration::from_secs(60),
    )
    .await;
    assert!(run.code == 0, "kubectl {args:?} failed: {}", run.stderr);
    run.stdout
}
