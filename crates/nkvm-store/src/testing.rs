//! A real S3 server for tests: `s3s-fs` (which checks SigV4 signatures) run as a child process
//! on a loopback port, over a directory. `scripts/install-store-test-deps.sh` installs it; the
//! binary is found through `NKVM_S3S_FS_BIN` or in `~/.cache/nkvm-tools/bin`. The SFTP test
//! server, OpenSSH's `sshd`, is [`SshServer`].

mod sshd;

pub use sshd::{SshServer, keygen, sshd_bin};

use crate::S3Settings;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The access key the test server accepts.
pub const ACCESS_KEY: &str = "nkvm-test-access";
/// The secret key the test server accepts.
pub const SECRET_KEY: &str = "nkvm-test-secret-key-0123456789";
/// The bucket the test server holds.
pub const BUCKET: &str = "nkvm";

/// A running `s3s-fs`; killed when dropped.
pub struct S3Server {
    child: Option<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The directory it serves (buckets are its subdirectories).
    pub root: PathBuf,
}

/// The `s3s-fs` binary, or a panic saying how to install it.
pub fn s3s_fs_bin() -> PathBuf {
    let path = std::env::var_os("NKVM_S3S_FS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/nkvm-tools/bin/s3s-fs")
        });
    assert!(
        path.is_file(),
        "the S3 test server {} is missing: run scripts/install-store-test-deps.sh (or set NKVM_S3S_FS_BIN)",
        path.display()
    );
    path
}

impl S3Server {
    /// Starts a server over `root` (created, with the bucket) on a free port.
    pub fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).expect("creating the bucket directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = S3Server {
            child: None,
            port,
            root: root.to_path_buf(),
        };
        server.restart();
        server
    }

    /// Starts the server again (same port and directory) after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        let child = Command::new(s3s_fs_bin())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings of a store named `name` on this server under `prefix`, with the right keys.
    pub fn settings(&self, name: &str, prefix: &str) -> S3Settings {
        S3Settings {
            name: name.into(),
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            keys: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
            session_token: None,
            sse_kms_key_id: None,
            part_size: crate::s3::DEFAULT_PART_SIZE,
            parts_in_flight: crate::s3::DEFAULT_PARTS_IN_FLIGHT,
            direct_upload: true,
        }
    }

    /// The multipart uploads the server holds open (its `.upload-<id>.json` files).
    pub fn open_uploads(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .expect("reading the server's directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }

    /// The objects in the bucket (paths relative to it), sorted; s3s-fs's own metadata and
    /// temp files left out.
    pub fn objects(&self) -> Vec<String> {
        let bucket = self.root.join(BUCKET);
        let mut out = Vec::new();
        let mut dirs = vec![bucket.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(rel) = path.strip_prefix(&bucket) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
