//! Real S3 servers for tests, run as child processes on a loopback port over a directory, both
//! checking SigV4 signatures: `s3s-fs` (the default, a small reference server) and Versity's
//! S3 gateway `versitygw` with its POSIX backend (a production gateway that also checks each
//! part's `x-amz-checksum-sha256`). `scripts/install-store-test-deps.sh`
//! installs both; the binaries are found through `NKVM_S3S_FS_BIN` / `NKVM_VERSITYGW_BIN` or in
//! `~/.cache/nkvm-tools/bin`. The SFTP test server, OpenSSH's `sshd`, is [`SshServer`].

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

/// Which S3 server program a [`S3Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Kind {
    /// `s3s-fs` from crates.io.
    S3sFs,
    /// Versity's `versitygw posix` (Go, from the Go module proxy).
    Versitygw,
}

impl S3Kind {
    /// The program's name, as the bench and test messages print it.
    pub fn name(self) -> &'static str {
        match self {
            S3Kind::S3sFs => "s3s-fs",
            S3Kind::Versitygw => "versitygw",
        }
    }

    /// The installed binary, or a panic saying how to install it.
    pub fn bin(self) -> PathBuf {
        let (var, file) = match self {
            S3Kind::S3sFs => ("NKVM_S3S_FS_BIN", "s3s-fs"),
            S3Kind::Versitygw => ("NKVM_VERSITYGW_BIN", "versitygw"),
        };
        let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/nkvm-tools/bin").join(file)
        });
        assert!(
            path.is_file(),
            "the S3 test server {} is missing: run scripts/install-store-test-deps.sh (or set {var})",
            path.display()
        );
        path
    }
}

/// A running S3 server; killed when dropped.
pub struct S3Server {
    kind: S3Kind,
    child: Option<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// The directory it serves (buckets are its subdirectories).
    pub root: PathBuf,
}

impl S3Server {
    /// Starts `s3s-fs` over `root` (created, with the bucket) on a free port.
    pub fn start(root: &Path) -> Self {
        Self::start_kind(S3Kind::S3sFs, root)
    }

    /// Starts a server of `kind` over `root` (created, with the bucket) on a free port.
    pub fn start_kind(kind: S3Kind, root: &Path) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).expect("creating the bucket directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = S3Server {
            kind,
            child: None,
            port,
            root: root.to_path_buf(),
        };
        server.restart();
        server
    }

    /// Starts the server again (same port and directory) after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        let mut command = Command::new(self.kind.bin());
        match self.kind {
            S3Kind::S3sFs => command
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]),
            // No IAM service: one root account, whose keys these are.
            S3Kind::Versitygw => command
                .args(["--access", ACCESS_KEY, "--secret", SECRET_KEY, "--quiet"])
                .args(["--port", &format!("127.0.0.1:{}", self.port), "posix"]),
        };
        let child = command
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.kind.name()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not start listening",
                self.kind.name()
            );
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

    /// The server program this runs.
    pub fn kind(&self) -> S3Kind {
        self.kind
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

    /// The multipart uploads the server holds open: s3s-fs's `.upload-<id>.json` files, or
    /// versitygw's upload directories (`<bucket>/.sgwtmp/multipart/<key hash>/<id>`).
    pub fn open_uploads(&self) -> Vec<String> {
        let names = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        };
        match self.kind {
            S3Kind::S3sFs => names(&self.root)
                .into_iter()
                .filter(|n| n.starts_with(".upload"))
                .collect(),
            S3Kind::Versitygw => {
                let multipart = self.root.join(BUCKET).join(VERSITYGW_TMP).join("multipart");
                names(&multipart)
                    .into_iter()
                    .flat_map(|key| names(&multipart.join(key)))
                    .collect()
            }
        }
    }

    /// The objects in the bucket (paths relative to it), sorted; the servers' own metadata
    /// and temporary files left out.
    pub fn objects(&self) -> Vec<String> {
        let bucket = self.root.join(BUCKET);
        let mut out = Vec::new();
        let mut dirs = vec![bucket.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path == bucket.join(VERSITYGW_TMP) {
                    continue;
                }
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

    /// Deletes every object, open upload and temporary file in the bucket; the bucket (and
    /// whatever the server keeps on its directory) stays.
    pub fn empty_bucket(&self) {
        let bucket = self.root.join(BUCKET);
        for entry in std::fs::read_dir(&bucket).into_iter().flatten().flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// versitygw's directory of multipart uploads and temporary files inside each bucket.
const VERSITYGW_TMP: &str = ".sgwtmp";

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
