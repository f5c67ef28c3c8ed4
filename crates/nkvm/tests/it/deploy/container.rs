//! The image without a container engine: the Dockerfile's final stage read as data, and a
//! container emulated with bubblewrap (see the parent module's doc).

use super::repo;
use crate::harness::Ran;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The PATH of the image's base (Debian), which the Dockerfile keeps.
pub(super) const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The Dockerfile's instructions of its final stage, continuation lines joined.
pub(super) fn final_stage() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || (current.is_empty() && line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("a FROM");
    instructions.split_off(last_from)
}

/// The `ENV` settings of the image.
pub(super) fn image_env() -> Vec<(String, String)> {
    final_stage()
        .iter()
        .filter_map(|i| i.strip_prefix("ENV "))
        .flat_map(|pairs| {
            pairs
                .split_whitespace()
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
                    (k.to_string(), v.to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The image's `ENTRYPOINT` followed by its `CMD` (both in exec form).
pub(super) fn image_command() -> Vec<String> {
    let stage = final_stage();
    let exec_form = |instruction: &str| -> Vec<String> {
        let json = stage
            .iter()
            .find_map(|i| i.strip_prefix(instruction))
            .unwrap_or_else(|| panic!("{instruction} in the Dockerfile"));
        serde_json::from_str(json).expect("exec form: a JSON array")
    };
    [exec_form("ENTRYPOINT "), exec_form("CMD ")].concat()
}

/// A directory bound into the container.
pub(super) struct Mount {
    host: PathBuf,
    path: String,
    writable: bool,
}

/// One container of nkvm's pod, emulated (see the module doc).
pub(super) struct Container {
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
}

impl Container {
    /// A container with only the image's env and no volumes.
    pub(super) fn from_image() -> Self {
        let mut c = Container {
            env: vec![("PATH".into(), IMAGE_PATH.into())],
            mounts: Vec::new(),
        };
        for (k, v) in image_env() {
            c.set_env(&k, &v);
        }
        c
    }

    pub(super) fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    pub(super) fn mount(mut self, host: &Path, path: &str, writable: bool) -> Self {
        self.mounts.push(Mount {
            host: host.to_path_buf(),
            path: path.into(),
            writable,
        });
        self
    }

    pub(super) fn bwrap_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "--unshare-user",
            "--uid",
            "10001",
            "--gid",
            "10001",
            "--unshare-pid",
            "--die-with-parent",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        .map(String::from)
        .into();
        for (link, target) in [
            ("/bin", "usr/bin"),
            ("/sbin", "usr/sbin"),
            ("/lib", "usr/lib"),
            ("/lib64", "usr/lib64"),
        ] {
            if Path::new(link).is_symlink() {
                a.extend(["--symlink".into(), target.into(), link.into()]);
            } else if Path::new(link).exists() {
                a.extend(["--ro-bind".into(), link.into(), link.into()]);
            }
        }
        a.extend(
            [
                "--ro-bind-try",
                "/etc/ssl",
                "/etc/ssl",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--tmpfs",
                "/usr/local/bin",
                "--ro-bind",
                env!("CARGO_BIN_EXE_nkvm"),
                "/usr/local/bin/nkvm",
                "--remount-ro",
                "/usr/local/bin",
            ]
            .map(String::from),
        );
        for m in &self.mounts {
            let flag = if m.writable { "--bind" } else { "--ro-bind" };
            a.extend([flag.into(), m.host.display().to_string(), m.path.clone()]);
        }
        // Last, once every mount point exists: the root itself becomes read-only, as
        // readOnlyRootFilesystem makes it; the volumes keep their own flags.
        a.extend(["--remount-ro".into(), "/".into(), "--clearenv".into()]);
        for (k, v) in &self.env {
            a.extend(["--setenv".into(), k.clone(), v.clone()]);
        }
        a.extend(["--chdir".into(), "/".into(), "--".into()]);
        a
    }

    /// Runs `nkvm ARGS` in the container.
    pub(super) async fn nkvm(&self, args: &[&str]) -> Ran {
        self.run("nkvm", args).await
    }

    /// Runs `PROGRAM ARGS` in the container.
    pub(super) async fn run(&self, program: &str, args: &[&str]) -> Ran {
        let mut cmd = tokio::process::Command::new("bwrap");
        cmd.args(self.bwrap_args())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .expect("nkvm in time")
            .expect("bwrap runs");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `GET path` over plain HTTP/1.1; the status line and body, or why it failed.
pub(super) async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

/// Every file and directory under `dir`, relative, sorted.
pub(super) fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            found.push(
                path.strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string(),
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}
