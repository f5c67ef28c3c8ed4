//! The web UI in a real browser, as a new operator uses it: headless Debian Chromium driven
//! through chromedriver (WebDriver) against `nkvm demo`. Every page visited is saved as a
//! screenshot under `$CARGO_TARGET_TMPDIR/screenshots/` (the test prints the folder).
//!
//! Needs `chromium` and `chromedriver` on PATH (`bash scripts/install-test-deps.sh` installs
//! Debian's `chromium` and `chromium-driver`); without them the test fails, it never skips.

use crate::demo::Demo;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long one step in the page (a load, a job finishing) may take.
const STEP: Duration = Duration::from_secs(60);
/// How often to look an element up again when htmx swapped it out between finding and using
/// it (live pages re-render parts of themselves).
const SWAP_RETRIES: usize = 5;

/// A headless Chromium session and where its screenshots go.
struct Browser {
    client: Client,
    driver: Child,
    /// chromedriver's port and the session, to end it even when the test panics.
    port: u16,
    session: String,
    shots: PathBuf,
    taken: usize,
    /// Chromium's profile and scratch files (its TMPDIR), removed with the browser.
    _scratch: tempfile::TempDir,
}

/// `program` on PATH, or a failure that says how to install it.
fn require_on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not on PATH: the browser tests need Debian's chromium and \
                 chromium-driver; run `bash scripts/install-test-deps.sh` (CI does)"
            )
        })
}

/// A port nobody listens on right now, for chromedriver (which cannot report one it chose).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; screenshots go to `shots`.
    async fn start(shots: &Path) -> Browser {
        require_on_path("chromium");
        let chromedriver = require_on_path("chromedriver");
        std::fs::create_dir_all(shots).expect("screenshot dir");
        let port = free_port();
        let scratch = tempfile::tempdir().expect("temp dir");
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", scratch.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs");
        let mut lines = BufReader::new(driver.stdout.take().expect("piped")).lines();
        let started = tokio::time::timeout(STEP, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("started successfully") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(started, Ok(true)), "chromedriver did not start");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--hide-scrollbars",
            ]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            STEP,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("a Chromium session in time")
        .expect("chromedriver starts Chromium");
        // A page that never loads fails the step, not the whole run after chromedriver's 300 s.
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                None,
                Some(STEP),
                None,
            ))
            .await
            .expect("page-load timeout");
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        Browser {
            client,
            driver,
            port,
            session,
            shots: shots.into(),
            taken: 0,
            _scratch: scratch,
        }
    }

    /// Saves a screenshot of the page as `NN-name.png` and returns its path.
    async fn shot(&mut self, name: &str) -> PathBuf {
        self.taken += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.taken));
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Waits for `css` to match; on timeout saves the page and fails naming it.
    async fn wait_for(&mut self, css: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(STEP)
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => {
                let shot = self.shot("failure").await;
                let html = self.client.source().await.unwrap_or_default();
                let page = self.shots.join("failure.html");
                std::fs::write(&page, html).expect("write page");
                let url = self.client.current_url().await.map(|u| u.to_string());
                panic!(
                    "no `{css}` on {url:?} within {STEP:?} ({e}); see {} and {}",
                    shot.display(),
                    page.display()
                )
            }
        }
    }

    /// Text of the first element matching `css`, waiting for it.
    async fn text(&mut self, css: &str) -> String {
        for _ in 0..SWAP_RETRIES {
            match self.wait_for(css).await.text().await {
                Ok(text) => return text,
                Err(e) if e.is_stale_element_reference() => continue,
                Err(e) => panic!("reading `{css}`: {e}"),
            }
        }
        panic!("`{css}` was replaced {SWAP_RETRIES} times while being read")
    }

    /// Waits until the element matching `css` shows `needle`; on timeout saves the page and
    /// fails with the text it had.
    async fn wait_for_text(&mut self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                let shot = self.shot("failure").await;
                panic!(
                    "`{css}` still says {text:?}, not {needle:?}, after {STEP:?}; see {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css`, waiting for it.
    async fn click(&mut self, css: &str) {
        for _ in 0..SWAP_RETRIES {
            match self.wait_for(css).await.click().await {
                Ok(()) => return,
                Err(e) if e.is_stale_element_reference() => continue,
                Err(e) => panic!("clicking `{css}`: {e}"),
            }
        }
        panic!("`{css}` was replaced {SWAP_RETRIES} times while being clicked")
    }

    /// Scrolls to the end of the page (results appear below the buttons).
    async fn scroll_to_bottom(&self) {
        self.client
            .execute("window.scrollTo(0, document.body.scrollHeight)", Vec::new())
            .await
            .expect("scroll");
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("running {script:?}: {e}"))
    }

    /// Waits until `script` returns `true` in the page; on timeout saves the page and fails.
    async fn wait_for_js(&mut self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + STEP;
        while self.js(script).await != Value::Bool(true) {
            if tokio::time::Instant::now() > deadline {
                let shot = self.shot("failure").await;
                panic!("{what}: not after {STEP:?}; see {}", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the page believe its tab was hidden or shown again (headless Chromium keeps
    /// every tab visible), the way a browser tells it: `visibilityState` and the event.
    async fn set_tab_visible(&self, visible: bool) {
        let state = if visible { "visible" } else { "hidden" };
        self.js(&format!(
            "Object.defineProperty(document, 'visibilityState', {{configurable: true, get: () => '{state}'}}); \
             document.dispatchEvent(new Event('visibilitychange')); return true;"
        ))
        .await;
    }

    /// Ticks the checkbox matching `css` unless it already is.
    async fn check(&mut self, css: &str) {
        let checkbox = self.wait_for(css).await;
        if !checkbox.is_selected().await.expect("checkbox state") {
            checkbox.click().await.expect("tick");
        }
    }

    /// Replaces the value of the input matching `css` with `text`.
    async fn type_into(&mut self, css: &str, text: &str) {
        let input = self.wait_for(css).await;
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    /// Waits until the elements matching `css` carry exactly `expected` in `attr`, in order;
    /// on timeout saves the page and fails with what was shown.
    async fn wait_for_rows(&mut self, css: &str, attr: &str, expected: &[&str]) {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let shown = self.attrs(css, attr).await;
            if shown == expected {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let shot = self.shot("failure").await;
                panic!(
                    "`{css}` shows {shown:?}, not {expected:?}, after {STEP:?}; see {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Values of the attribute `attr` of every element matching `css`.
    async fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        'again: for _ in 0..SWAP_RETRIES {
            let mut values = Vec::new();
            for e in self.client.find_all(Locator::Css(css)).await.expect("find") {
                match e.attr(attr).await {
                    Ok(value) => values.extend(value),
                    Err(e) if e.is_stale_element_reference() => continue 'again,
                    Err(e) => panic!("reading {attr} of `{css}`: {e}"),
                }
            }
            return values;
        }
        panic!("`{css}` was replaced {SWAP_RETRIES} times while being read")
    }
}

impl Drop for Browser {
    /// Ends the WebDriver session, which quits Chromium (killing chromedriver alone would
    /// leave the browser running, also after a failed step), then stops chromedriver. A plain
    /// blocking request, as drop cannot await.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.port
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read_to_end(&mut Vec::new());
        }
        // Stop chromedriver and reap it, rather than leave a zombie behind.
        let _ = self.driver.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.driver.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_backs_up_two_volumes_verifies_and_restores_in_the_browser() {
    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);
    println!("screenshots: {}", shots.display());
    // The browser first: without it the test fails at once, saying what to install.
    let mut b = Browser::start(&shots).await;
    let demo = Demo::start().await;
    let page = |path: &str| format!("{}{}", demo.url, path.trim_start_matches('/'));

    // Nothing is reachable without logging in; after it, the page asked for opens.
    b.client.goto(&page("/volumes")).await.expect("goto");
    b.wait_for("form#login-form").await;
    let url = b.client.current_url().await.expect("url");
    assert_eq!(url.path(), "/login", "{url}");
    b.shot("login").await;
    b.type_into("input#password", &demo.password).await;
    b.click("button#login-submit").await;
    b.wait_for("table#volumes").await;

    // The demo connected at start: the Connection page says where to.
    b.click("nav a#nav-connection").await;
    b.wait_for_text("#connection-status", "Connected to").await;
    b.wait_for("table#permissions").await;
    b.shot("connection").await;

    // The inventory, then filtered to the analytics event store.
    b.click("nav a#nav-volumes").await;
    b.wait_for(r#"tr.pvc-row[data-pvc="shop/postgres-data"]"#)
        .await;
    b.shot("volumes").await;
    b.wait_for("select#filter-namespace")
        .await
        .select_by_value("analytics")
        .await
        .expect("choose analytics");
    // Typed as a person types it, Enter included.
    b.type_into("input#filter-text", "events-db\u{E007}").await;
    // The namespace choice alone may already re-render the table: wait for the final rows.
    b.wait_for_rows(
        "tr.pvc-row",
        "data-pvc",
        &[
            "analytics/data-events-db-0",
            "analytics/data-events-db-1",
            "analytics/data-events-db-2",
        ],
    )
    .await;
    b.shot("volumes-filtered").await;

    // Nothing ticked: the button is off, not a way to an error page.
    let button_off = "return document.getElementById('backup-selected').disabled;";
    assert_eq!(
        b.js(button_off).await,
        Value::Bool(true),
        "disabled with nothing ticked"
    );
    // Back two of them up and watch both reach succeeded.
    for claim in ["analytics/data-events-db-0", "analytics/data-events-db-1"] {
        b.click(&format!(r#"input.pvc-select[value="{claim}"]"#))
            .await;
    }
    assert_eq!(
        b.js(button_off).await,
        Value::Bool(false),
        "enabled once ticked"
    );
    b.click("button#backup-selected").await;
    b.wait_for("#jobs .job[data-job-id]").await;
    b.shot("jobs-started").await;
    for claim in ["analytics/data-events-db-0", "analytics/data-events-db-1"] {
        b.wait_for(&format!(
            r#".job-item[data-pvc="{claim}"] .item-state[data-status="succeeded"]"#
        ))
        .await;
    }
    b.shot("jobs-done").await;

    // History lists both; the first verifies.
    b.click("nav a#nav-history").await;
    b.wait_for(r#"tr.backup-row[data-status="succeeded"]"#)
        .await;
    let rows = b.attrs("tr.backup-row", "data-backup-id").await;
    assert_eq!(rows.len(), 2, "two backups in history: {rows:?}");
    b.shot("history").await;
    b.click(&format!(
        r#"tr.backup-row[data-backup-id="{}"] a.backup-link"#,
        rows[0]
    ))
    .await;
    b.wait_for("dl#backup-details").await;
    b.shot("backup-details").await;
    b.click("button#verify").await;
    b.wait_for_text("#verify-result", "Verified").await;
    b.scroll_to_bottom().await;
    b.shot("verified").await;

    // Restore into a new claim: plan first, then run, then the claim exists and is Bound.
    b.click("a#restore").await;
    b.type_into("input#target-namespace", "analytics").await;
    b.type_into("input#target-pvc", "events-restored").await;
    b.check("input#create").await;
    b.click("button#plan-restore").await;
    b.wait_for("#restore-plan").await;
    b.shot("restore-plan").await;
    b.click("button#run-restore").await;
    b.wait_for(
        r#".job-item[data-pvc="analytics/events-restored"] .item-state[data-status="succeeded"]"#,
    )
    .await;
    b.shot("restore-done").await;

    // A hidden Jobs tab gives its event stream (and so its connection) back, and opens a new
    // one when shown again, which brings the list up to date.
    let source = "var el = document.querySelector('[sse-connect]'); \
                  var d = el && el['htmx-internal-data']; \
                  return !!(d && d.sseEventSource && d.sseEventSource.readyState === 1);";
    b.wait_for_js("the Jobs tab's stream opens", source).await;
    b.js("window.nkvmFirstSource = document.querySelector('[sse-connect]')['htmx-internal-data'].sseEventSource; return true;").await;
    b.set_tab_visible(false).await;
    b.wait_for_js(
        "a hidden tab closes its stream",
        "return window.nkvmFirstSource.readyState === 2 \
             && !document.querySelector('[sse-connect]') \
             && !!document.querySelector('[data-sse-parked]');",
    )
    .await;
    b.wait_for(r#".job-item[data-pvc="analytics/events-restored"]"#)
        .await;
    b.set_tab_visible(true).await;
    b.wait_for_js("a shown tab opens a new stream", source)
        .await;
    b.wait_for(
        r#".job-item[data-pvc="analytics/events-restored"] .item-state[data-status="succeeded"]"#,
    )
    .await;

    let data = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = demo
        .nkvm(data.path(), &["pvcs", "-n", "analytics", "-o", "json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let pvcs: Vec<Value> = serde_json::from_str(&out).expect("json");
    let restored = pvcs
        .iter()
        .find(|p| p["name"] == "events-restored")
        .unwrap_or_else(|| panic!("the restored claim exists: {out}"));
    assert_eq!(restored["phase"], "Bound");
    // Bytes restored equal bytes backed up: a backup of the new claim reads as many.
    let (code, out, err) = demo
        .nkvm(
            data.path(),
            &["backup", "analytics/events-restored", "-o", "json"],
        )
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let again: Value = serde_json::from_str(&out).expect("json");
    let (code, out, err) = demo
        .nkvm_with_store(&demo.db, &demo.backup_dir, &["backups", "-o", "json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let history: Vec<Value> = serde_json::from_str(&out).expect("json");
    let original = history
        .iter()
        .find(|r| r["id"] == rows[0].as_str())
        .unwrap_or_else(|| panic!("backup {} in the demo's history: {out}", rows[0]));
    assert!(
        original["bytesRead"].as_u64().unwrap_or(0) > 12 * 1024 * 1024,
        "{original}"
    );
    assert_eq!(again[0]["bytesRead"], original["bytesRead"]);

    // Disconnect drops the connection from the UI (its form carries the CSRF token).
    b.click("nav a#nav-connection").await;
    b.wait_for_text("#connection-status", "Connected to").await;
    b.click("button#disconnect").await;
    b.wait_for_text("#connection-status", "Not connected").await;
    b.shot("disconnected").await;
    demo.stop().await;
}
