//! A real SFTP server for tests: Debian's OpenSSH `sshd` run in the foreground as a child
//! process on a loopback port, with its own generated host key, a generated client key as the
//! only authorized key, and `internal-sftp`. `scripts/install-store-test-deps.sh` installs it;
//! the binary is found through `NKVM_SSHD_BIN` or at `/usr/sbin/sshd`.

use crate::SftpSettings;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running `sshd`; it and its per-connection processes are killed when dropped.
pub struct SshServer {
    child: Option<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its configuration, keys and log.
    pub etc: PathBuf,
    /// The directory stores on it use (`path`), created empty.
    pub data: PathBuf,
    /// The user tests log in as (the one running them).
    pub user: String,
}

/// The `sshd` binary, or a panic saying how to install it.
pub fn sshd_bin() -> PathBuf {
    let path = std::env::var_os("NKVM_SSHD_BIN")
        .map_or_else(|| PathBuf::from("/usr/sbin/sshd"), PathBuf::from);
    assert!(
        path.is_file(),
        "the SFTP test server {} is missing: run scripts/install-store-test-deps.sh (Debian's openssh-server), or set NKVM_SSHD_BIN",
        path.display()
    );
    path
}

/// Runs `ssh-keygen` to make an ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "nkvm-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen (openssh-client)");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("running id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl SshServer {
    /// Starts a server with fresh keys under `root` (created) on a free port.
    pub fn start(root: &Path) -> Self {
        Self::start_with(root, "internal-sftp".into())
    }

    /// Like [`start`](Self::start), but serving SFTP with OpenSSH's `sftp-server` logging
    /// every request to [`sftp_log`](Self::sftp_log) (`internal-sftp` can only log to syslog
    /// or the client).
    pub fn start_logging_sftp(root: &Path) -> Self {
        let log = root.join("etc").join("sftp.log");
        Self::start_with(
            root,
            format!(
                "/usr/lib/openssh/sftp-server -e -l DEBUG3 2>>{}",
                log.display()
            ),
        )
    }

    /// What `sftp-server` logged (see [`start_logging_sftp`](Self::start_logging_sftp)).
    pub fn sftp_log(&self) -> String {
        std::fs::read_to_string(self.etc.join("sftp.log")).unwrap_or_default()
    }

    fn start_with(root: &Path, subsystem: String) -> Self {
        let (etc, data) = (root.join("etc"), root.join("data"));
        std::fs::create_dir_all(&etc).expect("creating the server's directory");
        std::fs::create_dir_all(&data).expect("creating the data directory");
        keygen(&etc.join("host_key"));
        keygen(&etc.join("client_key"));
        std::fs::copy(etc.join("client_key.pub"), etc.join("authorized_keys"))
            .expect("authorizing the client key");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = SshServer {
            child: None,
            port,
            etc,
            data,
            user: current_user(),
        };
        server.write_config(&subsystem);
        server.write_known_hosts();
        server.restart();
        server
    }

    fn write_config(&self, subsystem: &str) {
        let etc = self.etc.display();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {etc}/host_key\n\
             PidFile none\n\
             AuthorizedKeysFile {etc}/authorized_keys\n\
             AuthenticationMethods publickey\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             StrictModes no\n\
             UsePAM no\n\
             AllowUsers {user}\n\
             Subsystem sftp {subsystem}\n\
             LogLevel VERBOSE\n",
            port = self.port,
            user = self.user,
        );
        std::fs::write(self.etc.join("sshd_config"), config).expect("writing sshd_config");
    }

    /// `known_hosts` for this server: `[127.0.0.1]:port` and its host key.
    fn write_known_hosts(&self) {
        let public = std::fs::read_to_string(self.etc.join("host_key.pub")).expect("host key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        let line = format!("[127.0.0.1]:{} {kind} {key}\n", self.port);
        std::fs::write(self.known_hosts(), line).expect("writing known_hosts");
    }

    /// Starts the server again (same port, keys and data) after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        // sshd needs its privilege-separation directory; as root the test can make it.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = std::fs::File::create(self.etc.join("sshd.log")).expect("the sshd log");
        let child = Command::new(sshd_bin())
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.etc.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sshd exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "sshd did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.etc.join("sshd.log")).unwrap_or_default()
    }

    /// Kills the server and every connection it serves (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let mut pids = descendants(child.id());
            pids.push(child.id());
            let _ = Command::new("kill")
                .arg("-9")
                .args(pids.iter().map(u32::to_string))
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }

    /// The client key's file.
    pub fn client_key(&self) -> PathBuf {
        self.etc.join("client_key")
    }

    /// The `known_hosts` file vouching for this server.
    pub fn known_hosts(&self) -> PathBuf {
        self.etc.join("known_hosts")
    }

    /// Settings of a store named `name` on this server, in its data directory.
    pub fn settings(&self, name: &str) -> SftpSettings {
        let key = crate::sftp::load_key(name, &self.client_key(), None).expect("the client key");
        SftpSettings {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            key: Arc::new(key),
            key_file: self.client_key(),
            known_hosts: self.known_hosts(),
            path: self.data.display().to_string(),
        }
    }

    /// The stores-file entry of a store named `name` on this server.
    pub fn stores_entry(&self, name: &str) -> String {
        format!(
            "- {{name: {name}, type: sftp, host: 127.0.0.1, port: {}, user: {}, privateKeyFile: {}, knownHostsFile: {}, path: {}}}\n",
            self.port,
            self.user,
            self.client_key().display(),
            self.known_hosts().display(),
            self.data.display()
        )
    }

    /// Every file under the data directory (relative paths, hidden ones included), sorted.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![self.data.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.data) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}

/// Every process below `pid`, from `/proc` (sshd's per-connection processes).
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces, so parse after its `)`.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((child, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill();
    }
}
