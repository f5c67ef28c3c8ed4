//! Web UI benchmarks (prints figures; run with `cargo bench -p nkvm-web --bench volumes`):
//!
//! 1. The Volumes page at 10,000 claims: an in-process sandbox seeded with
//!    `namespaces=500,pvcs=10000,pods=20000`, the inventory loaded once into the cache (timed:
//!    that is discovery), then the server time of page views through the whole router (login
//!    check included): the first page, a text filter, a size sort, the last page, 500 rows.
//! 2. Server-sent events with 16 concurrent backups: 16 claims with 32 MiB each, backed up 16
//!    at a time while one SSE subscriber reads `/jobs/events` over real HTTP; reports the
//!    events delivered and how long after the engine published each one it reached the
//!    subscriber.

use axum::body::Body;
use futures_util::StreamExt;
use http::{Request, StatusCode, header};
use kube_sandbox::SandboxOptions;
use kube_sandbox::scale::ScaleSpec;
use kube_sandbox::testing::TestSandbox;
use nkvm_engine::Settings;
use nkvm_engine::jobs::JobEvent;
use nkvm_engine::session::{AuthMode, ConnectOptions, Session, Workspace};
use nkvm_history::History;
use nkvm_web::{AdminPassword, WebConfig, WebState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const PASSWORD: &str = "bench-password";

struct Bench {
    state: Arc<WebState>,
    _dir: tempfile::TempDir,
    sandbox: TestSandbox,
}

async fn start(seed: Option<&str>) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let sandbox = TestSandbox::start_in(
        dir.path(),
        SandboxOptions {
            seed: seed.map(|s| ScaleSpec::parse(s).unwrap()),
            ..Default::default()
        },
    )
    .await;
    if let Some(s) = seed {
        println!(
            "sandbox seeded with {s} in {:.1} s (in process)",
            started.elapsed().as_secs_f64()
        );
    }
    let kubeconfig = sandbox.kubeconfig().to_path_buf();
    let history = Arc::new(History::open(&dir.path().join("backups.db")).unwrap());
    let store = Arc::new(nkvm_store::LocalStore::new(dir.path().join("backups")));
    let settings = Settings {
        discovery_timeout: Duration::from_secs(300),
        ..Settings::default()
    };
    let workspace = Arc::new(Workspace::new(history, store, settings));
    let session = Arc::new(Session::new(workspace));
    let mut opts = ConnectOptions::new(AuthMode::Kubeconfig);
    opts.kubeconfig = Some(kubeconfig);
    session.connect(opts).await.expect("connects");
    let mut config = WebConfig::new(AdminPassword::configured(PASSWORD).unwrap());
    config.cookie_secure = false;
    Bench {
        state: WebState::new(session, config),
        _dir: dir,
        sandbox,
    }
}

/// Logs in through the router; returns the session cookie and the CSRF token.
async fn login(router: &axum::Router) -> (String, String) {
    let page = router
        .clone()
        .oneshot(Request::get("/login").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookie = cookie_of(page.headers(), "nkvm_login");
    let html = body_text(page.into_body()).await;
    let token = hidden(&html, "csrf");
    let form = format!("csrf={token}&password={PASSWORD}");
    let reply = router
        .clone()
        .oneshot(
            Request::post("/login")
                .header(header::COOKIE, format!("nkvm_login={cookie}"))
                .body(Body::from(form))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let session = format!(
        "nkvm_session={}",
        cookie_of(reply.headers(), "nkvm_session")
    );
    let jobs = router
        .clone()
        .oneshot(
            Request::get("/jobs")
                .header(header::COOKIE, &session)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let csrf = hidden(&body_text(jobs.into_body()).await, "csrf");
    (session, csrf)
}

fn cookie_of(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

async fn body_text(body: Body) -> String {
    String::from_utf8(axum::body::to_bytes(body, 64 << 20).await.unwrap().to_vec()).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn volumes_page() {
    println!("== Volumes page at 10,000 claims ==");
    let bench = start(Some("namespaces=500,pvcs=10000,pods=20000")).await;
    let started = Instant::now();
    bench.state.refresh_inventory().await;
    let generation = bench.state.session().status().generation;
    let snapshot = bench.state.inventory().get(generation).unwrap();
    assert!(snapshot.error.is_none(), "{:?}", snapshot.error);
    println!(
        "inventory loaded into the cache: {} claims in {:.0} ms (discovery; done on connect and on Refresh)",
        snapshot.records.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    let router = nkvm_web::router(bench.state.clone());
    let (cookie, _) = login(&router).await;
    let views = [
        ("first page (50 rows)", "/volumes"),
        ("text filter", "/volumes?q=scale-0042"),
        ("sorted by size, descending", "/volumes?sort=size&dir=desc"),
        ("last page", "/volumes?page=200"),
        ("500 rows per page", "/volumes?per_page=500"),
    ];
    for (what, path) in views {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..30 {
            let t = Instant::now();
            let reply = router
                .clone()
                .oneshot(
                    Request::get(path)
                        .header(header::COOKIE, &cookie)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(reply.status(), StatusCode::OK);
            size = axum::body::to_bytes(reply.into_body(), 64 << 20)
                .await
                .unwrap()
                .len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{what:<28} {path:<32} median {:>6.1} ms, p95 {:>6.1} ms, {:>4} KiB",
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.95).as_secs_f64() * 1000.0,
            size / 1024
        );
    }
}

async fn sse_with_16_jobs() {
    println!("== SSE with 16 concurrent backups ==");
    let bench = start(None).await;
    let mut yaml = String::new();
    for i in 0..16 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data-{i}, namespace: default}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {{name: fill-{i}, namespace: default}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: fill\n    image: busybox\n    command: [sh, -c, 'head -c 33554432 /dev/urandom > /data/blob']\n    volumeMounts: [{{name: d, mountPath: /data}}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {{claimName: data-{i}}}\n"
        ));
    }
    bench
        .sandbox
        .kubectl(&["apply", "-f", "-"], Some(yaml.as_bytes()))
        .await
        .ok();
    // Let the fill pods finish writing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = nkvm_web::router(bench.state.clone());
    let (cookie, csrf) = login(&router).await;
    tokio::spawn(nkvm_web::serve(
        listener,
        bench.state.clone(),
        std::future::pending(),
    ));
    // The engine's own view: when each item's final event was published.
    let mut published = bench.state.jobs().subscribe();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        while let Ok(event) = published.recv().await {
            if let JobEvent::Item(item) = event
                && item.status.is_final()
            {
                let _ = done_tx.send((format!("item-{}-{}", item.job, item.index), Instant::now()));
            }
        }
    });
    let mut sse = sse_client(addr, &cookie).await;
    let form: String = (0..16)
        .map(|i| format!("pvc=default%2Fdata-{i}&"))
        .collect::<String>()
        + &format!("compression=zstd&parallel=16&csrf={csrf}");
    let started = Instant::now();
    let reply = router
        .clone()
        .oneshot(
            Request::post("/backups")
                .header(header::COOKIE, &cookie)
                .body(Body::from(form))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let mut events = 0usize;
    let mut finals: HashMap<String, Instant> = HashMap::new();
    let mut bytes = 0usize;
    let mut buffer = String::new();
    while finals.len() < 16 {
        let chunk = tokio::time::timeout(Duration::from_secs(300), sse.next())
            .await
            .expect("events keep coming")
            .expect("the stream stays open")
            .unwrap();
        let now = Instant::now();
        bytes += chunk.len();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(name) = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_string)
            else {
                continue;
            };
            events += 1;
            let is_final = ["succeeded", "failed", "cancelled"]
                .iter()
                .any(|s| event.contains(&format!("data-status=\"{s}\"")));
            if is_final {
                finals.entry(name).or_insert(now);
            }
        }
    }
    let all_done = started.elapsed();
    let mut lags = Vec::new();
    while let Ok((name, at)) = done_rx.try_recv() {
        if let Some(seen) = finals.get(&name) {
            lags.push(seen.saturating_duration_since(at));
        }
    }
    lags.sort();
    let job = bench.state.jobs().get(1).unwrap();
    let succeeded = job
        .items
        .iter()
        .filter(|i| i.status.as_str() == "succeeded")
        .count();
    let read: u64 = job.items.iter().map(|i| i.bytes).sum();
    println!(
        "16 backups of 32 MiB, 16 at a time: {succeeded}/16 succeeded, all done in {:.1} s ({:.0} MiB/s overall)",
        all_done.as_secs_f64(),
        read as f64 / 1048576.0 / all_done.as_secs_f64()
    );
    println!(
        "SSE subscriber: {events} events, {:.0} KiB; engine publish -> browser stream lag for the 16 final events: median {:.2} ms, max {:.2} ms",
        bytes as f64 / 1024.0,
        percentile(&lags, 0.5).as_secs_f64() * 1000.0,
        lags.last().unwrap().as_secs_f64() * 1000.0
    );
}

/// Opens `/jobs/events` over real HTTP/1.1 and returns the body's chunks (headers skipped).
async fn sse_client(
    addr: std::net::SocketAddr,
    cookie: &str,
) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /jobs/events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    Box::pin(futures_util::stream::unfold(tcp, |mut tcp| async move {
        let mut buf = vec![0u8; 16 * 1024];
        match tcp.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => Some((Ok(bytes::Bytes::copy_from_slice(&buf[..n])), tcp)),
            Err(e) => Some((Err(e), tcp)),
        }
    }))
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        volumes_page().await;
        sse_with_16_jobs().await;
    });
}
