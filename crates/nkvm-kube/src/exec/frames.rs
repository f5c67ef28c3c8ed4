//! The exec frame loop: reading frames until the status (stdout handed on, stderr's tail
//! kept), writing stdin and pings, the idle watchdog, and reading the status frame. The
//! connection and the errors are [`super`]'s.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::ExecProtocol;

pub(super) const STDIN: u8 = 0;
pub(super) const STDOUT: u8 = 1;
pub(super) const STDERR: u8 = 2;
pub(super) const STATUS: u8 = 3;
/// v5: `[CLOSE, channel]` half-closes that channel.
pub(super) const CLOSE: u8 = 255;
/// Stdin frame payload size: large frames keep per-frame overhead low.
pub(super) const STDIN_CHUNK: usize = 256 * 1024;

/// How the frame loop stopped without a status.
pub(super) enum Ended {
    WithoutStatus(String),
    OutputDropped,
    ReadStdin(std::io::Error),
    Stalled,
}

/// Counters shared by the reader, the writer and the watchdog (one task; atomics only so
/// the future stays `Send`).
pub(super) struct Progress {
    start: Instant,
    /// Milliseconds since `start` of the last sign of life from the server.
    last_ms: AtomicU64,
    /// Waits on our own side in progress (they pause the watchdog).
    local_waits: AtomicUsize,
    /// Stdout bytes handed to the consumer.
    pub(super) stdout: AtomicU64,
    /// Stdin bytes sent.
    pub(super) stdin: AtomicU64,
}

impl Progress {
    pub(super) fn new() -> Self {
        Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            local_waits: AtomicUsize::new(0),
            stdout: AtomicU64::new(0),
            stdin: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    pub(super) fn stdout(&self) -> u64 {
        self.stdout.load(Ordering::Relaxed)
    }

    /// Marks a wait on our side until the guard drops.
    pub(super) fn local_wait(&self) -> LocalWait<'_> {
        self.local_waits.fetch_add(1, Ordering::Relaxed);
        LocalWait(self)
    }
}

pub(super) struct LocalWait<'a>(&'a Progress);

impl Drop for LocalWait<'_> {
    fn drop(&mut self) {
        self.0.local_waits.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Returns once the server has been silent for `idle` while we were not busy ourselves.
pub(super) async fn watchdog(progress: &Progress, idle: Duration) {
    loop {
        tokio::time::sleep_until(progress.last() + idle).await;
        if progress.local_waits.load(Ordering::Relaxed) > 0 {
            // Our side is the slow one; start counting again from now.
            progress.touch();
            continue;
        }
        if progress.last().elapsed() >= idle {
            return;
        }
    }
}

/// Reads frames until the status arrives, handing stdout on and keeping stderr's tail.
pub(super) async fn read_until_status<S>(
    stream: &mut S,
    stdout: &mpsc::Sender<Bytes>,
    stderr: &mut Tail,
    progress: &Progress,
) -> Result<Bytes, Ended>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let data = match stream.next().await {
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map_or("no close code".to_string(), |f| {
                    format!(
                        "close code {}{}",
                        u16::from(f.code),
                        reason_suffix(&f.reason)
                    )
                });
                return Err(Ended::WithoutStatus(format!(
                    "the server closed the connection: {why}"
                )));
            }
            // Pongs are no sign of progress: a stalled exec still answers pings.
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Ended::WithoutStatus(e.to_string())),
            None => return Err(Ended::WithoutStatus("the connection closed".into())),
        };
        progress.touch();
        let Some(&channel) = data.first() else {
            continue;
        };
        let payload = data.slice(1..);
        match channel {
            STDOUT if !payload.is_empty() => {
                let n = payload.len() as u64;
                let sent = {
                    let _wait = progress.local_wait();
                    stdout.send(payload).await
                };
                sent.map_err(|_| Ended::OutputDropped)?;
                progress.stdout.fetch_add(n, Ordering::Relaxed);
            }
            STDERR => stderr.push(&payload),
            STATUS => return Ok(payload),
            // Empty frames, resize echoes, a server's CLOSE of its own channels.
            _ => {}
        }
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// Sends stdin (then its end on v5) and pings. Returns only when reading stdin fails; a
/// failed send parks it, because the reader tells best what happened to the connection
/// (the command may also have finished without needing the rest of stdin).
pub(super) async fn write_frames<S>(
    sink: &mut S,
    mut stdin: Option<&mut (dyn AsyncRead + Unpin + Send)>,
    protocol: ExecProtocol,
    ping_interval: Duration,
    progress: &Progress,
) -> Result<Infallible, std::io::Error>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = stdin_buffer();
    loop {
        let reading = stdin.is_some();
        let sent = tokio::select! {
            _ = ping.tick() => sink.send(Message::Ping(Bytes::new())).await,
            read = async {
                let _wait = progress.local_wait();
                match stdin.as_mut() {
                    Some(s) => s.read_buf(&mut buf).await,
                    None => Ok(0),
                }
            }, if reading => {
                if read? > 0 {
                    let frame = std::mem::replace(&mut buf, stdin_buffer()).freeze();
                    let n = frame.len() as u64 - 1;
                    let sent = sink.send(Message::Binary(frame)).await;
                    if sent.is_ok() {
                        progress.stdin.fetch_add(n, Ordering::Relaxed);
                        progress.touch();
                    }
                    sent
                } else {
                    stdin = None;
                    match protocol {
                        ExecProtocol::V5 => {
                            sink.send(Message::Binary(Bytes::from_static(&[CLOSE, STDIN])))
                                .await
                        }
                        // v4 has no end-of-file; the caller opted into commands that
                        // stop reading by themselves.
                        ExecProtocol::V4 => Ok(()),
                    }
                }
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "exec: sending failed; waiting for the reader");
            std::future::pending::<()>().await;
        }
    }
}

/// A stdin frame buffer: the channel byte, then room for one chunk.
fn stdin_buffer() -> BytesMut {
    let mut buf = BytesMut::with_capacity(STDIN_CHUNK + 1);
    buf.put_u8(STDIN);
    buf
}

/// The last `limit` bytes of a stream.
pub(super) struct Tail {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Tail {
    pub(super) fn new(limit: usize) -> Self {
        Tail {
            buf: Vec::new(),
            limit,
            truncated: false,
        }
    }

    pub(super) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // Trim only past twice the limit, so trimming costs O(1) per byte on average.
        if self.buf.len() > self.limit.saturating_mul(2) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.limit {
            let excess = self.buf.len() - self.limit;
            self.buf.drain(..excess);
            self.truncated = true;
        }
    }

    pub(super) fn finish(mut self) -> (String, bool) {
        self.trim();
        (
            String::from_utf8_lossy(&self.buf).into_owned(),
            self.truncated,
        )
    }
}

/// A `metav1.Status` as sent on channel 3 (only the fields read).
#[derive(Debug, Deserialize)]
struct ExecStatus {
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Option<StatusDetails>,
}

#[derive(Debug, Deserialize)]
struct StatusDetails {
    #[serde(default)]
    causes: Vec<StatusCause>,
}

#[derive(Debug, Deserialize)]
struct StatusCause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// What a status frame says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StatusReading {
    /// The command ran and exited with this code.
    Exited(i32),
    /// It did not run (or its end is unknown).
    NotRun { reason: String, message: String },
}

/// Reads a status frame: an exit code, or why the command did not run.
pub(super) fn parse_status(raw: &[u8]) -> Result<StatusReading, String> {
    let s: ExecStatus = serde_json::from_slice(raw).map_err(|e| {
        format!(
            "{e} in {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })?;
    match (s.status.as_str(), s.reason.as_str()) {
        ("Success", _) => Ok(StatusReading::Exited(0)),
        ("Failure", "NonZeroExitCode") => s
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .find(|c| c.reason == "ExitCode")
            .and_then(|c| c.message.trim().parse::<i32>().ok())
            .map(StatusReading::Exited)
            .ok_or_else(|| format!("NonZeroExitCode without an exit code: {}", s.message)),
        ("Failure", _) => Ok(StatusReading::NotRun {
            reason: if s.reason.is_empty() {
                "Failure".into()
            } else {
                s.reason
            },
            message: s.message,
        }),
        (other, _) => Err(format!("unknown status {other:?}: {}", s.message)),
    }
}
