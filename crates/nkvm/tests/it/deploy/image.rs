//! The built image itself (scripts/build-image.sh), run by podman: standalone against a
//! sandbox on the host, as `docker run` users run it, and as the Deployment of deploy/k8s/app
//! in a sandbox whose kubelet runs that image as real podman containers.
//!
//! The image is named by `NKVM_TEST_IMAGE` (the build script prints its tag). Without it a
//! developer machine skips these tests with a notice; under `CI=true` a missing image, or a
//! podman that cannot run containers here, fails them with the reason.

use super::cluster::{archived_hello, claim_with_file};
use super::container::{http_get, tree};
use crate::harness::{Env, Ran};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// podman's defaults that fail on these machines: crun ("cgroups in hybrid mode not
/// supported") and an RLIMIT_NOFILE above the hard limit.
const PODMAN_FLAGS: &[&str] = &["--runtime", "runc"];
const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
];

/// The image under test, checked to run; `None` (skip) on a developer machine without
/// `NKVM_TEST_IMAGE`, a failure under CI.
pub(super) async fn test_image() -> Option<String> {
    let Some(image) = std::env::var("NKVM_TEST_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
    else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "NKVM_TEST_IMAGE is not set under CI=true: .ci/run must run scripts/build-image.sh and export the tag it prints"
        );
        eprintln!("skipped: set NKVM_TEST_IMAGE (scripts/build-image.sh prints it)");
        return None;
    };
    let probe = podman(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--read-only",
        "--network",
        "host",
        "--entrypoint",
        "id",
        &image,
        "-u",
    ])
    .await;
    assert_eq!(
        probe.code, 0,
        "podman cannot run a container of {image} here (install podman and runc, run scripts/build-image.sh): {probe:?}"
    );
    assert_eq!(probe.stdout.trim(), "10001", "the image runs as UID 10001");
    Some(image)
}

/// Runs `podman` with the flags these machines need (`run` also gets the ulimits).
pub(super) async fn podman(args: &[&str]) -> Ran {
    let mut cmd = tokio::process::Command::new("podman");
    cmd.args(PODMAN_FLAGS);
    if let Some((first, rest)) = args.split_first() {
        cmd.arg(first);
        if *first == "run" {
            cmd.args(ULIMITS);
        }
        cmd.args(rest);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("podman in time");
    match out {
        Ok(out) => Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => Ran {
            code: -1,
            stdout: String::new(),
            stderr: format!("podman does not start: {e}"),
        },
    }
}

/// A detached container, removed (without the 10 s SIGTERM wait) when dropped.
pub(super) struct Detached {
    /// The container's name.
    pub name: String,
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A directory the container user (UID/GID 10001) owns, as a fresh volume is for it.
fn owned_by_nkvm(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("dir");
    std::os::unix::fs::chown(dir, Some(10001), Some(10001)).expect("chown (tests run as root)");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// One HTTP/1.1 exchange over a fresh connection (bounded to 30 s): status code,
/// `Set-Cookie` values, body.
async fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    tokio::time::timeout(
        Duration::from_secs(30),
        exchange(addr, method, path, headers, body),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path} answered within 30 s"))
}

async fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("nkvm listens");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let cookies = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie: "))
        .filter_map(|l| l["set-cookie: ".len()..].split(';').next())
        .map(String::from)
        .collect();
    Reply {
        status,
        cookies,
        body: body.to_string(),
    }
}

/// What [`http`] read.
struct Reply {
    status: u16,
    cookies: Vec<String>,
    body: String,
}

impl Reply {
    fn cookie(&self, name: &str) -> String {
        let prefix = format!("{name}=");
        self.cookies
            .iter()
            .find(|c| c.starts_with(&prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} cookie in {:?}", self.cookies))
    }

    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no hidden {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').expect("closing quote") + start;
        self.body[start..end].to_string()
    }
}

/// A urlencoded form body (every byte but ASCII letters and digits escaped).
fn form(fields: &[(&str, &str)]) -> String {
    let escape = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Logs in as the admin; returns the session cookie and the session's CSRF token.
async fn log_in(addr: &str, password: &str) -> (String, String) {
    let page = http(addr, "GET", "/login", &[], "").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = form(&[("csrf", &page.hidden("csrf")), ("password", password)]);
    let login_cookie = page.cookie("nkvm_login");
    let reply = http(
        addr,
        "POST",
        "/login",
        &[
            ("Cookie", &login_cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
    )
    .await;
    assert_eq!(reply.status, 303, "logging in: {}", reply.body);
    let session = reply.cookie("nkvm_session");
    let jobs = http(addr, "GET", "/jobs", &[("Cookie", &session)], "").await;
    assert_eq!(jobs.status, 200, "{}", jobs.body);
    let csrf = jobs.hidden("csrf");
    (session, csrf)
}

/// Waits until `nkvm serve` in container `name` answers `/healthz` on `addr`.
async fn wait_healthy(addr: &str, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match http_get(addr, "/healthz").await {
            Ok(answer) if answer.starts_with("HTTP/1.1 200") => return,
            _ if tokio::time::Instant::now() > deadline => {
                let logs = podman(&["logs", name]).await;
                panic!("nkvm serve in {name} did not answer on {addr}: {logs:?}");
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Starts the image detached as an operator runs it standalone: read-only root, UID 10001,
/// `data` at /var/lib/nkvm, `kubeconfig` mounted read-only under /etc/nkvm/remote, the host's
/// network; returns the container and the address `nkvm serve` answers on.
async fn run_standalone(image: &str, scratch: &Path, kubeconfig: &str) -> (Detached, String) {
    let data = scratch.join("data");
    owned_by_nkvm(&data, 0o750);
    // Readable by the container user only, as a Secret mounted with mode 0440 would be.
    let remote = scratch.join("remote");
    owned_by_nkvm(&remote, 0o750);
    std::fs::write(remote.join("config"), kubeconfig).expect("kubeconfig");
    std::os::unix::fs::chown(remote.join("config"), Some(10001), Some(10001)).expect("chown");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let container = Detached {
        name: format!("nkvm-it-standalone-{}-{port}", std::process::id()),
    };
    let volume = format!("{}:/var/lib/nkvm", data.display());
    let mounted = format!("{}:/etc/nkvm/remote:ro", remote.display());
    let listen = format!("NKVM_LISTEN={addr}");
    let admin = format!("NKVM_ADMIN_PASSWORD={PASSWORD}");
    // The image's own entrypoint and command (`nkvm serve`).
    podman(&[
        "run",
        "-d",
        "--name",
        &container.name,
        "--read-only",
        "--user",
        "10001:10001",
        "--network",
        "host",
        "-v",
        &volume,
        "-v",
        &mounted,
        "-e",
        "NKVM_DEFAULT_AUTH_MODE=kubeconfig",
        "-e",
        "KUBECONFIG=/etc/nkvm/remote/config",
        "-e",
        &listen,
        "-e",
        &admin,
        image,
    ])
    .await
    .ok();
    wait_healthy(&addr, &container.name).await;
    (container, addr)
}

/// The standalone server's admin password (a test value).
const PASSWORD: &str = "standalone-test-password";

/// Logs in, waits until the Volumes page lists `claim`, and starts its backup from the UI.
async fn back_up_from_the_ui(addr: &str, claim: &str) {
    let (session, csrf) = log_in(addr, PASSWORD).await;
    let listed = kube_sandbox::testing::eventually(
        "the Volumes page lists the claim",
        Duration::from_secs(60),
        async || {
            let page = http(addr, "GET", "/volumes", &[("Cookie", &session)], "").await;
            page.body
                .contains(&format!("value=\"{claim}\""))
                .then_some(page)
        },
    )
    .await;
    assert_eq!(listed.status, 200);
    let started = http(
        addr,
        "POST",
        "/backups",
        &[
            ("Cookie", &session),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form(&[("csrf", &csrf), ("pvc", claim)]),
    )
    .await;
    assert_eq!(started.status, 303, "starting the backup: {}", started.body);
}

/// The release in the image's `org.opencontainers.image.base.name` label.
async fn base_release(image: &str) -> String {
    let label = podman(&[
        "image",
        "inspect",
        "--format",
        "{{index .Labels \"org.opencontainers.image.base.name\"}}",
        image,
    ])
    .await
    .ok();
    label
        .stdout
        .trim()
        .strip_prefix("docker.io/library/debian:")
        .and_then(|r| r.strip_suffix("-slim"))
        .unwrap_or_else(|| panic!("a debian slim base: {label:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_standalone_with_a_mounted_kubeconfig_on_a_read_only_root() {
    let Some(image) = test_image().await else {
        return;
    };
    assert!(
        !base_release(&image).await.is_empty(),
        "the base label names the release"
    );
    let env = Env::start().await;
    claim_with_file(&env, "shop", "standalone records").await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let (container, addr) = run_standalone(&image, scratch.path(), env.kubeconfig_text()).await;
    back_up_from_the_ui(&addr, "shop/data").await;

    let data = scratch.path().join("data");
    let backups = data.join("backups");
    kube_sandbox::testing::eventually(
        "an archive of shop/data in the volume",
        Duration::from_secs(90),
        async || {
            (backups.exists()
                && tree(&backups)
                    .iter()
                    .any(|p| p.contains("/shop/data/") && p.ends_with(".tar.zst")))
            .then_some(())
        },
    )
    .await;
    assert_eq!(archived_hello(&backups, "shop"), "standalone records");
    assert!(
        tree(&data).contains(&"data/backups.db".to_string()),
        "the history lives in the volume too: {:?}",
        tree(&data)
    );
    // Nothing else is writable: the root is read-only.
    let write = podman(&["exec", &container.name, "touch", "/usr/local/bin/x"]).await;
    assert_ne!(write.code, 0, "{write:?}");
    assert!(write.stderr.contains("Read-only file system"), "{write:?}");
    drop(container);
    env.stop().await;
}

/// An overlay of `deploy/k8s/app` in `dir` that runs `image` (for nkvm and its helper pods)
/// and allows namespace `shop`, as an operator's overlay would; returns its directory.
fn overlay(dir: &Path, image: &str) -> std::path::PathBuf {
    let (name, tag) = image.rsplit_once(':').expect("IMAGE:TAG");
    // kustomize loads bases by relative path only: a copy of the app sits beside the overlay.
    let app = super::repo().join("deploy/k8s/app");
    std::fs::create_dir_all(dir.join("app")).expect("app dir");
    for entry in std::fs::read_dir(&app).expect("deploy/k8s/app").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dir.join("app").join(entry.file_name())).expect("copy");
        }
    }
    let overlay = dir.join("overlay");
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../app\nimages:\n- name: registry.example.invalid/nkvm\n  newName: {name}\n  newTag: {tag}\npatches:\n- path: helper.yaml\n"
    );
    let patch = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: nkvm, namespace: nkvm}}\nspec:\n  template:\n    spec:\n      containers:\n      - name: nkvm\n        env:\n        - {{name: NKVM_IMAGE, value: {image:?}}}\n        - {{name: NKVM_HELPER_IMAGE, value: {image:?}}}\n        - {{name: NKVM_NAMESPACES, value: shop}}\n"
    );
    std::fs::write(overlay.join("kustomization.yaml"), kustomization).expect("kustomization");
    std::fs::write(overlay.join("helper.yaml"), patch).expect("patch");
    overlay
}

/// What the runbook does, with the overlay: the admin Secret, the app, the RBAC, the runtime
/// role in `shop`; then waits until the Deployment is Available.
async fn install_image(env: &Env, image: &str, scratch: &Path) {
    env.kubectl(&["create", "namespace", "nkvm"], None)
        .await
        .ok();
    let secret = [
        "-n",
        "nkvm",
        "create",
        "secret",
        "generic",
        "nkvm-admin",
        "--from-literal=password=correct-horse-battery",
    ];
    env.kubectl(&secret, None).await.ok();
    let overlay = overlay(scratch, image).display().to_string();
    env.kubectl(&["apply", "-k", &overlay], None).await.ok();
    let rbac = super::repo_path("deploy/k8s/rbac");
    env.kubectl(&["apply", "-k", &rbac], None).await.ok();
    super::bind_runtime(env, &["shop"]).await;
    let wait = [
        "-n",
        "nkvm",
        "wait",
        "--for=condition=Available",
        "deployment/nkvm",
        "--timeout=120s",
    ];
    env.kubectl(&wait, None).await.ok();
}

/// Name and uid of the Deployment's pod.
async fn server_pod(env: &Env) -> (String, String) {
    let pod = env
        .kubectl(
            &[
                "-n",
                "nkvm",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/component=server",
                "-o",
                "jsonpath={.items[0].metadata.name} {.items[0].metadata.uid}",
            ],
            None,
        )
        .await
        .ok();
    let (name, uid) = pod.stdout.trim().split_once(' ').expect("name and uid");
    (name.to_string(), uid.to_string())
}

/// `kubectl exec` into pod `pod` of namespace nkvm.
async fn in_pod(env: &Env, pod: &str, command: &[&str]) -> Ran {
    let mut args = vec!["-n", "nkvm", "exec", pod, "--"];
    args.extend_from_slice(command);
    env.kubectl(&args, None).await
}

/// The `podman ps` filter for the containers of the pod with `uid`.
fn pod_filter(uid: &str) -> String {
    format!(
        "label={}={uid}",
        kube_sandbox::kubelet::podman::POD_UID_LABEL
    )
}

/// Names of the podman containers started since `since` for the sandbox's pods.
async fn sandbox_containers_started(since: &str) -> Vec<String> {
    let events = podman(&[
        "events",
        "--stream=false",
        "--since",
        since,
        "--filter",
        "event=start",
        "--format",
        "{{.Name}}",
    ])
    .await
    .ok();
    events
        .stdout
        .lines()
        .filter(|n| n.starts_with("nkvm-sandbox-"))
        .map(String::from)
        .collect()
}

/// `nkvm check --auth in-cluster` in the pod passes as nkvm's ServiceAccount.
async fn assert_in_cluster_check_passes(env: &Env, pod: &str) {
    let check = &["nkvm", "check", "--auth", "in-cluster", "-o", "json"];
    let check = super::json(&in_pod(env, pod, check).await.ok());
    assert_eq!(check["authMode"], "in-cluster", "{check}");
    assert_eq!(check["identity"], super::RUNNER, "{check}");
    assert!(
        check["grants"]
            .as_array()
            .is_some_and(|g| !g.is_empty() && g.iter().all(|g| g["allowed"] == true)),
        "{check}"
    );
}

/// A helper pod ran as a podman container since `since` and none is left.
async fn assert_helper_ran_in_podman(since: &str) {
    let started = sandbox_containers_started(since).await;
    assert!(
        started.iter().any(|n| n.ends_with("-helper")),
        "a helper container started in podman: {started:?}"
    );
    let label = format!("label={}", kube_sandbox::kubelet::podman::POD_UID_LABEL);
    let left = podman(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
        .await
        .ok();
    assert!(
        !left.stdout.lines().any(|n| n.ends_with("-helper")),
        "helper containers removed: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployment_runs_the_image_in_cluster_and_backs_up_with_it_as_helper() {
    let Some(image) = test_image().await else {
        return;
    };
    let started_at = utc_now();
    let env = Env::start_with(kube_sandbox::SandboxOptions {
        podman_images: vec![image.clone()],
        ..Default::default()
    })
    .await;
    claim_with_file(&env, "shop", "in-cluster records").await;
    let scratch = tempfile::tempdir().expect("temp dir");
    install_image(&env, &image, scratch.path()).await;
    let (pod, uid) = server_pod(&env).await;
    // It is a podman container of the image, not host programs.
    let running = podman(&[
        "ps",
        "--filter",
        &pod_filter(&uid),
        "--format",
        "{{.Image}}",
    ])
    .await
    .ok();
    assert_eq!(running.stdout.trim(), image, "{running:?}");
    let identity = in_pod(&env, &pod, &["id", "-u"]).await.ok();
    assert_eq!(identity.stdout.trim(), "10001");
    assert_in_cluster_check_passes(&env, &pod).await;

    let backup = &["nkvm", "backup", "shop/data", "-o", "json"];
    let result = &super::json(&in_pod(&env, &pod, backup).await.ok())[0];
    assert_eq!(result["status"], "succeeded", "{result}");
    // The helper ran the same image, so the agent in it did the compressing.
    assert_eq!(result["dataPath"], "agent", "{result}");
    let id = result["id"].as_str().expect("id");
    in_pod(&env, &pod, &["nkvm", "verify", id]).await.ok();
    assert_helper_ran_in_podman(&started_at).await;

    // Deleting the Deployment removes its container.
    let delete = ["-n", "nkvm", "delete", "deployment", "nkvm", "--wait=true"];
    env.kubectl(&delete, None).await.ok();
    kube_sandbox::testing::eventually(
        "the server's podman container is removed",
        Duration::from_secs(30),
        async || {
            let ps = podman(&["ps", "-a", "--filter", &pod_filter(&uid), "-q"])
                .await
                .ok();
            ps.stdout.trim().is_empty().then_some(())
        },
    )
    .await;
    env.stop().await;
}

/// Now, as podman's `--since` takes it (RFC 3339, UTC).
fn utc_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
