//! Supervising the control plane's processes: each runs with its output in a log file under
//! the state directory, is stopped with SIGTERM (then SIGKILL after a grace period), and an
//! early exit is reported with the tail of its log.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a component gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// One running component.
pub struct Component {
    /// Its name (`etcd`, `kube-apiserver`...).
    pub name: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Child,
}

/// Errors starting or watching a component.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary could not be started.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary's path.
        binary: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The log file could not be opened.
    #[error("opening the log {path}: {source}")]
    Log {
        /// The log path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The component exited while the control plane was starting.
    #[error("{name} exited with {status} while starting; the end of {log}:\n{tail}")]
    Exited {
        /// The component.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
}

impl Component {
    /// Starts `binary` with `args`, output appended to `<log_dir>/<name>.log`.
    pub fn start(
        name: &str,
        binary: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Component, ProcessError> {
        let log = log_dir.join(format!("{name}.log"));
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
        };
        let (out, err) = open()
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|source| ProcessError::Log {
                path: log.clone(),
                source,
            })?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Its own process group: a terminal's Ctrl-C reaches nkvm, which then stops the
            // components in order instead of all of them dying at once.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        tracing::info!(component = name, log = %log.display(), "started");
        Ok(Component {
            name: name.to_string(),
            log,
            child,
        })
    }

    /// Fails if the component has already exited (called while waiting for readiness).
    pub fn check_running(&mut self) -> Result<(), ProcessError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status.to_string())),
            Err(e) => Err(self.exited(e.to_string())),
        }
    }

    fn exited(&self, status: String) -> ProcessError {
        ProcessError::Exited {
            name: self.name.clone(),
            status,
            log: self.log.clone(),
            tail: log_tail(&self.log, 20),
        }
    }

    /// Sends SIGTERM, waits up to the grace period, then kills.
    pub async fn stop(mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(GRACE, self.child.wait()).await {
            Ok(_) => tracing::info!(component = self.name, "stopped"),
            Err(_) => {
                tracing::warn!(component = self.name, "did not stop on SIGTERM; killing");
                let _ = self.child.kill().await;
            }
        }
    }
}

/// The last `lines` lines of a log file (for error messages).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
