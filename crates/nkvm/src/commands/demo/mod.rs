//! `nkvm demo`: a sandbox cluster in a temporary directory, sample workloads with data in
//! their volumes ([`samples`]), and the web UI connected to it; the URL and the login go to
//! stdout. Ctrl-C or SIGTERM stops the UI, kills the sandbox's pods and removes the directory.

pub mod samples;
pub mod seed;

use super::invalid;
use super::serve::{ServeOptions, serve};
use crate::cli::{Cli, DemoArgs, GlobalArgs};
use anyhow::Context;
use clap::CommandFactory;
use kube_sandbox::{Sandbox, SandboxOptions};
use nkvm_engine::session::{AuthMode, ConnectOptions};
use nkvm_web::AdminPassword;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// How long the sample pods may take to start and fill their volumes.
const SEED_LIMIT: Duration = Duration::from_secs(120);

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(g: &GlobalArgs, args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Bound before anything starts, so a busy port fails at once.
    let ui = TcpListener::bind(args.listen).await.map_err(|e| {
        invalid(format!(
            "binding the web UI to {}: {e}; choose another --listen (port 0 picks a free one)",
            args.listen
        ))
    })?;
    let stop = stop_signal()?;
    let work = tempfile::Builder::new()
        .prefix("nkvm-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let api = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the sandbox API server")?;
    let sandbox = Sandbox::start(
        api,
        SandboxOptions {
            state_dir: work.path().join("cluster"),
            image_programs: super::sandbox::own_image_programs(&g.image),
            ..SandboxOptions::default()
        },
    )
    .await
    .context("starting the sandbox cluster")?;
    let result = seed_and_serve(g, ui, &sandbox, work.path(), stop).await;
    tracing::info!(
        "stopping: killing the sample pods and removing {}",
        work.path().display()
    );
    sandbox.shutdown().await;
    work.close()
        .context("removing the demo's temporary directory")?;
    result.map(|()| ExitCode::SUCCESS)
}

async fn seed_and_serve(
    g: &GlobalArgs,
    ui: TcpListener,
    sandbox: &Sandbox,
    work: &Path,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let kubeconfig = work.join("kubeconfig");
    sandbox
        .write_kubeconfig(&kubeconfig)
        .context("writing the sandbox's kubeconfig")?;
    let client = admin_client(sandbox.kubeconfig()).await?;
    tracing::info!(
        api = sandbox.url(),
        "sandbox cluster up; seeding sample workloads"
    );
    let seeded = tokio::select! {
        seeded = seed::seed(&client, SEED_LIMIT) => seeded.context("seeding the sample workloads")?,
        () = stopped(stop.clone()) => return Ok(()),
    };
    let listen = ui.local_addr().context("reading the web UI's address")?;
    let mut opts = serve_options(g, listen, &kubeconfig, work)?;
    let generated = opts.web.admin_password.is_generated();
    let password = if generated {
        opts.web.admin_password.reveal().to_string()
    } else {
        "(from NKVM_ADMIN_PASSWORD or NKVM_ADMIN_PASSWORD_FILE)".into()
    };
    print_welcome(&ui_url(listen), &password, &kubeconfig, &opts, &seeded);
    if generated {
        // Shown on stdout above; as a configured one `serve` does not log it again.
        opts.web.admin_password =
            AdminPassword::configured(&password).map_err(anyhow::Error::msg)?;
    }
    serve(ui, opts, stopped(stop)).await
}

/// `serve`'s options for the sandbox: connected with its admin kubeconfig, the store and
/// history in the temporary directory unless given.
fn serve_options(
    g: &GlobalArgs,
    listen: SocketAddr,
    kubeconfig: &Path,
    work: &Path,
) -> anyhow::Result<ServeOptions> {
    let mut opts = ServeOptions::from_global(g, listen)?;
    let mut connect = ConnectOptions::new(AuthMode::Kubeconfig);
    connect.kubeconfig = Some(kubeconfig.into());
    opts.connect = Some(connect);
    opts.web.default_kubeconfig = Some(kubeconfig.into());
    opts.web.default_context = None;
    if std::env::var_os("NKVM_COOKIE_SECURE").is_none() {
        // The demo serves plain HTTP; a browser would never send a Secure cookie back to a
        // non-loopback address, and logging in would silently fail.
        opts.web.cookie_secure = false;
    }
    let is_default = |id: &str, value: &Path| default_of(id).as_deref() == Some(value);
    if is_default("backup_dir", &g.backup_dir) {
        opts.backup_dir = work.join("backups");
    }
    if is_default("db", &g.db) {
        opts.db = work.join("backups.db");
    }
    Ok(opts)
}

/// A kube client with the sandbox's cluster-admin kubeconfig.
async fn admin_client(kubeconfig: &str) -> anyhow::Result<kube::Client> {
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .context("reading the sandbox's kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .context("loading the sandbox's kubeconfig")?;
    kube::Client::try_from(config).context("building a client for the sandbox")
}

/// Listens for Ctrl-C and SIGTERM from now on, so one that arrives while seeding or while
/// `serve` starts up is not lost; the receiver turns true when one came.
fn stop_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the Ctrl-C handler")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Resolves once [`stop_signal`] saw a signal.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the listener is gone, which only happens at exit: stop too.
    let _ = stop.wait_for(|&s| s).await;
}

/// A global flag's default as clap knows it. The store and history stay in the temporary
/// directory unless `--backup-dir` / `--db` (or their environment variables) differ from it.
fn default_of(id: &str) -> Option<PathBuf> {
    Cli::command()
        .get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_default_values().first().map(PathBuf::from))
}

fn ui_url(addr: SocketAddr) -> String {
    // 0.0.0.0 is where the server listens, not an address a browser can open.
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}/", addr.port())
}

fn print_welcome(
    url: &str,
    password: &str,
    kubeconfig: &Path,
    opts: &ServeOptions,
    seeded: &seed::Seeded,
) {
    let keep = |path: &Path, flag: &str| {
        if path.starts_with(kubeconfig.parent().unwrap_or(kubeconfig)) {
            format!(
                "{} (temporary, removed on exit; {flag} keeps it)",
                path.display()
            )
        } else {
            path.display().to_string()
        }
    };
    println!("nkvm demo is ready: a sandbox cluster with sample workloads, and the web UI.");
    println!("url: {url}");
    println!("user: admin");
    println!("password: {password}");
    println!(
        "kubeconfig: {} (kubectl against the sample cluster)",
        kubeconfig.display()
    );
    println!("backups: {}", keep(&opts.backup_dir, "--backup-dir"));
    println!("history: {}", keep(&opts.db, "--db"));
    println!(
        "namespaces: {} ({} pods running)",
        seeded.namespaces.join(", "),
        seeded.pods.len()
    );
    println!("changing: {}", samples::CHURN);
    println!("Stop with Ctrl-C.");
}
