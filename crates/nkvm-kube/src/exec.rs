//! Running a command in a pod over the exec WebSocket, with our own frame loop (kube's
//! `AttachedProcess` buffers 1 KiB and hangs forever on a cut connection).
//!
//! It owns the protocol: offering `v5.channel.k8s.io, v4.channel.k8s.io`, demultiplexing
//! stdout (handed on as received, with backpressure), stderr (the last 64 KiB kept) and the
//! status on channel 3; sending stdin and, on v5, its end (`[255, 0]`); pinging; and deciding
//! what counts as finished. Only a status frame finishes a command: a stream that ends
//! without one is [`ExecError::StreamEndedWithoutStatus`], never a success, and a peer that
//! goes quiet for longer than the idle timeout is [`ExecError::Stalled`].
//!
//! Dropping the returned future drops the connection; the API server then kills the process.

mod frames;

use bytes::Bytes;
use frames::{
    Ended, Progress, StatusReading, Tail, parse_status, read_until_status, watchdog, write_frames,
};
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use kube::core::Request;
use kube::{Client, Resource};
use nkvm_domain::FailureKind;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How long to wait for the server's close frame once the status has arrived.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most stdout [`exec_capture`] keeps.
const CAPTURE_LIMIT: usize = 1 << 20;

/// The exec subprotocol the server chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecProtocol {
    /// `v5.channel.k8s.io`: stdin can be half-closed.
    V5,
    /// `v4.channel.k8s.io`: stdin ends only with the connection.
    V4,
}

impl fmt::Display for ExecProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecProtocol::V5 => "v5.channel.k8s.io",
            ExecProtocol::V4 => "v4.channel.k8s.io",
        })
    }
}

/// Which container to run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
}

impl ExecTarget {
    /// A target.
    pub fn new(namespace: &str, pod: &str, container: &str) -> Self {
        ExecTarget {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        }
    }
}

impl fmt::Display for ExecTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (container {})",
            self.namespace, self.pod, self.container
        )
    }
}

/// How to run the stream.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// WebSocket ping period, so idle proxies and load balancers keep the connection.
    pub ping_interval: Duration,
    /// Longest silence from the server (no output received, no stdin accepted) before the
    /// stream counts as stalled. Time spent waiting on our own side (the stdout consumer,
    /// the stdin source) does not count.
    pub idle_timeout: Duration,
    /// Most stderr kept (the last bytes).
    pub stderr_limit: usize,
    /// Send stdin over a v4 connection anyway, without an end-of-file: only for commands
    /// that stop reading on their own (`head -c N | tar -x`). Otherwise stdin over v4 is
    /// [`ExecError::StdinNeedsV5`].
    pub allow_stdin_without_eof: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            stderr_limit: 64 * 1024,
            allow_stdin_without_eof: false,
        }
    }
}

/// How a command ended (it ran to completion and reported its exit status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Exit code from the status frame (0 for `Success`).
    pub exit_code: i32,
    /// The end of stderr (lossy UTF-8), at most [`ExecOptions::stderr_limit`] bytes.
    pub stderr: String,
    /// Whether earlier stderr was dropped.
    pub stderr_truncated: bool,
    /// Stdout bytes handed to the sink.
    pub stdout_bytes: u64,
    /// Stdin bytes sent (the server may have stopped reading early, e.g. after tar's
    /// end-of-archive blocks).
    pub stdin_bytes: u64,
    /// The protocol used.
    pub protocol: ExecProtocol,
}

/// What [`exec_capture`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Exit code.
    pub exit_code: i32,
    /// Stdout (lossy UTF-8).
    pub stdout: String,
    /// Stderr (lossy UTF-8, the last 64 KiB).
    pub stderr: String,
}

/// Why a command did not run to a reported exit status.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The exec request could not be built (a bug or an invalid name).
    #[error("preparing `{command}` for pod {target}: {detail}")]
    BuildRequest {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// Why.
        detail: String,
    },
    /// The API server refused or never answered the upgrade.
    #[error("starting `{command}` in pod {target}: {detail}; {hint}")]
    StartExec {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// The failure kind (from the HTTP status, or a timeout).
        kind: FailureKind,
        /// What the server said.
        detail: String,
        /// What to do.
        hint: &'static str,
    },
    /// Stdin was given but the server speaks only v4, which cannot end it.
    #[error(
        "pod {target}: the API server speaks only exec protocol v4, which cannot signal the end of stdin, so `{command}` would never finish; use a command that reads an exact length (`head -c N | tar -x`) with allow_stdin_without_eof"
    )]
    StdinNeedsV5 {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
    },
    /// The connection ended before the exit status arrived: the output is incomplete.
    #[error(
        "the exec stream of `{command}` in pod {target} ended without an exit status after {stdout_bytes} bytes of output ({detail}); the output is incomplete: retry, and check the node and any proxy between here and the API server if it happens again"
    )]
    StreamEndedWithoutStatus {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// Stdout received before the end.
        stdout_bytes: u64,
        /// How it ended.
        detail: String,
    },
    /// The server sent nothing and accepted nothing for the idle timeout.
    #[error(
        "`{command}` in pod {target} made no progress for {} s after {stdout_bytes} bytes of output; the connection or the node is stuck: retry, or raise the idle timeout if the command is legitimately quiet that long", idle.as_secs()
    )]
    Stalled {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// The idle timeout that passed.
        idle: Duration,
        /// Stdout received before the stall.
        stdout_bytes: u64,
    },
    /// The status frame says the command could not run (not an exit code).
    #[error("`{command}` could not run in pod {target}: {reason}: {message}")]
    CommandNotRun {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// The status reason (`InternalError`, ...).
        reason: String,
        /// The status message.
        message: String,
    },
    /// The status frame could not be read.
    #[error("the exit status of `{command}` in pod {target} is unreadable: {detail}")]
    InvalidStatus {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// Why.
        detail: String,
    },
    /// Reading the stdin source failed.
    #[error("reading the input for `{command}` in pod {target}: {source}")]
    ReadStdin {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The stdout receiver was dropped before the command finished.
    #[error(
        "the reader of `{command}`'s output (pod {target}) stopped after {stdout_bytes} bytes; the command was abandoned"
    )]
    OutputDropped {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// Stdout handed on before that.
        stdout_bytes: u64,
    },
    /// [`exec_capture`] output over its limit.
    #[error(
        "`{command}` in pod {target} printed more than {limit} bytes; exec_capture is for small outputs, stream it instead"
    )]
    CaptureTooLarge {
        /// Where: `namespace/pod (container c)`.
        target: String,
        /// The command, shortened.
        command: String,
        /// The limit.
        limit: usize,
    },
}

impl nkvm_domain::UserError for ExecError {
    /// The failure kind.
    fn kind(&self) -> FailureKind {
        match self {
            ExecError::BuildRequest { .. } | ExecError::CaptureTooLarge { .. } => {
                FailureKind::Internal
            }
            ExecError::StartExec { kind, .. } => *kind,
            ExecError::StdinNeedsV5 { .. } => FailureKind::Conflict,
            ExecError::StreamEndedWithoutStatus { .. } | ExecError::InvalidStatus { .. } => {
                FailureKind::ClusterUnavailable
            }
            ExecError::Stalled { .. } => FailureKind::Timeout,
            ExecError::CommandNotRun { .. } => FailureKind::CommandFailed,
            ExecError::ReadStdin { .. } => FailureKind::StorageUnavailable,
            ExecError::OutputDropped { .. } => FailureKind::Cancelled,
        }
    }
}

/// Runs `argv` in `target`, handing stdout to `stdout` as it arrives (a bounded channel:
/// a slow consumer slows the pod down rather than filling memory), sending `stdin` if
/// given. A non-zero exit is an [`ExecOutcome`], not an error: the caller decides.
pub async fn exec_stream(
    client: &Client,
    target: &ExecTarget,
    argv: &[impl AsRef<str>],
    stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>,
    stdout: mpsc::Sender<Bytes>,
    options: &ExecOptions,
) -> Result<ExecOutcome, ExecError> {
    let run = Run {
        target,
        command: short_command(argv),
    };
    let request = run.request(argv, stdin.is_some())?;
    let connection = run.connect(client, request, options.idle_timeout).await?;
    let protocol = if connection.supports_stream_close() {
        ExecProtocol::V5
    } else {
        ExecProtocol::V4
    };
    if stdin.is_some() && protocol == ExecProtocol::V4 && !options.allow_stdin_without_eof {
        return Err(ExecError::StdinNeedsV5 {
            target: target.to_string(),
            command: run.command,
        });
    }
    tracing::debug!(target = %target, command = %run.command, %protocol, "exec started");
    let (mut sink, mut stream) = connection.into_stream().split();
    let progress = Progress::new();
    let mut stderr = Tail::new(options.stderr_limit);
    let ended = tokio::select! {
        biased;
        r = read_until_status(&mut stream, &stdout, &mut stderr, &progress) => r,
        w = write_frames(&mut sink, stdin, protocol, options.ping_interval, &progress) => {
            match w {
                Err(source) => Err(Ended::ReadStdin(source)),
                Ok(never) => match never {},
            }
        }
        () = watchdog(&progress, options.idle_timeout) => Err(Ended::Stalled),
    };
    drop(stdout);
    let status = ended.map_err(|e| run.ended(e, &progress, options.idle_timeout))?;
    // The server closes after the status; answering its close frame ends the exchange
    // cleanly. Nothing after the status changes the outcome.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        let _ = sink.close().await;
    })
    .await;
    let exit_code = run.exit_code(&status)?;
    let (stderr, stderr_truncated) = stderr.finish();
    tracing::debug!(target = %target, command = %run.command, exit_code, stdout_bytes = progress.stdout(), "exec finished");
    Ok(ExecOutcome {
        exit_code,
        stderr,
        stderr_truncated,
        stdout_bytes: progress.stdout(),
        stdin_bytes: progress.stdin.load(Ordering::Relaxed),
        protocol,
    })
}

/// Runs a small command and collects its output (at most 1 MiB of stdout), e.g.
/// `tar --version` to tell GNU tar from BusyBox.
pub async fn exec_capture(
    client: &Client,
    target: &ExecTarget,
    argv: &[impl AsRef<str>],
) -> Result<Captured, ExecError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let collect = async move {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            if out.len() + chunk.len() > CAPTURE_LIMIT {
                // Dropping the receiver abandons the command.
                return None;
            }
            out.extend_from_slice(&chunk);
        }
        Some(out)
    };
    let options = ExecOptions::default();
    let (outcome, out) = tokio::join!(
        exec_stream(client, target, argv, None, tx, &options),
        collect
    );
    let Some(out) = out else {
        return Err(ExecError::CaptureTooLarge {
            target: target.to_string(),
            command: short_command(argv),
            limit: CAPTURE_LIMIT,
        });
    };
    let outcome = outcome?;
    Ok(Captured {
        exit_code: outcome.exit_code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: outcome.stderr,
    })
}

/// One exec, for building requests and errors.
struct Run<'a> {
    target: &'a ExecTarget,
    command: String,
}

impl Run<'_> {
    fn request(
        &self,
        argv: &[impl AsRef<str>],
        stdin: bool,
    ) -> Result<http::Request<Vec<u8>>, ExecError> {
        let params = AttachParams::default()
            .container(self.target.container.clone())
            .stdin(stdin)
            .stdout(true)
            .stderr(true);
        Request::new(Pod::url_path(&(), Some(&self.target.namespace)))
            .exec(
                &self.target.pod,
                argv.iter().map(|a| a.as_ref().to_string()),
                &params,
            )
            .map_err(|e| ExecError::BuildRequest {
                target: self.target.to_string(),
                command: self.command.clone(),
                detail: e.to_string(),
            })
    }

    /// Upgrades to a WebSocket (kube offers v5 and v4 in one header), within `limit`.
    async fn connect(
        &self,
        client: &Client,
        request: http::Request<Vec<u8>>,
        limit: Duration,
    ) -> Result<kube::client::Connection, ExecError> {
        // `None`: no HTTP status (network or upgrade failure).
        let error = |status: Option<u16>, detail: String| {
            let (kind, hint) = match status {
                Some(403) => (
                    FailureKind::Forbidden,
                    "grant this identity create and get on pods/exec in that namespace (nkvm's runtime role)",
                ),
                Some(404) => (
                    FailureKind::NotFound,
                    "the pod is gone; it may have been deleted or evicted",
                ),
                // 400: the container is not running (or the upgrade was not understood).
                Some(400) => (
                    FailureKind::Conflict,
                    "the container is not running; check the pod's status and events",
                ),
                _ => (
                    FailureKind::ClusterUnavailable,
                    "check the API server and the network, then retry",
                ),
            };
            ExecError::StartExec {
                target: self.target.to_string(),
                command: self.command.clone(),
                kind,
                detail,
                hint,
            }
        };
        match tokio::time::timeout(limit, client.connect(request)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(kube::Error::Api(s))) => Err(error(Some(s.code), s.message.clone())),
            Ok(Err(e)) => Err(error(None, e.to_string())),
            Err(_) => Err(ExecError::StartExec {
                target: self.target.to_string(),
                command: self.command.clone(),
                kind: FailureKind::Timeout,
                detail: format!("no answer within {} s", limit.as_secs()),
                hint: "the API server did not answer; check its health and the network",
            }),
        }
    }

    fn ended(&self, e: Ended, progress: &Progress, idle: Duration) -> ExecError {
        let (target, command) = (self.target.to_string(), self.command.clone());
        let stdout_bytes = progress.stdout();
        match e {
            Ended::WithoutStatus(detail) => ExecError::StreamEndedWithoutStatus {
                target,
                command,
                stdout_bytes,
                detail,
            },
            Ended::OutputDropped => ExecError::OutputDropped {
                target,
                command,
                stdout_bytes,
            },
            Ended::ReadStdin(source) => ExecError::ReadStdin {
                target,
                command,
                source,
            },
            Ended::Stalled => ExecError::Stalled {
                target,
                command,
                idle,
                stdout_bytes,
            },
        }
    }

    fn exit_code(&self, status: &[u8]) -> Result<i32, ExecError> {
        match parse_status(status) {
            Ok(StatusReading::Exited(code)) => Ok(code),
            Ok(StatusReading::NotRun { reason, message }) => Err(ExecError::CommandNotRun {
                target: self.target.to_string(),
                command: self.command.clone(),
                reason,
                message,
            }),
            Err(detail) => Err(ExecError::InvalidStatus {
                target: self.target.to_string(),
                command: self.command.clone(),
                detail,
            }),
        }
    }
}

/// The command for messages: words joined, at most 80 characters.
fn short_command(argv: &[impl AsRef<str>]) -> String {
    let full = argv
        .iter()
        .map(|a| a.as_ref())
        .collect::<Vec<_>>()
        .join(" ");
    if full.chars().count() <= 80 {
        full
    } else {
        format!("{}…", full.chars().take(79).collect::<String>())
    }
}

#[cfg(test)]
mod tests;
