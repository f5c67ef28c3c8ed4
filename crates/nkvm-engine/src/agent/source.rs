//! The agent's backup, run inside the helper pod (`nkvm agent backup`): GNU tar of the mount
//! with the same flags as the generic path, the tar structure check, sha256 of the tar and
//! of the compressed bytes, and multithreaded zstd, all next to the volume. Only compressed
//! bytes leave the pod, framed by [`super::wire`] and followed by the trailer. With a direct
//! upload ([`DirectTarget`]) the compressed bytes go to the bucket as the upload's parts
//! instead, and nkvm receives only progress and the trailer, which lists the parts.

use super::wire::{FrameWriter, PROTOCOL, Trailer};
use super::{DEPTH, Fault, Outbox, READ, Tail, probe_local_tar, write_out};
use crate::archive::{CompressionOptions, Encoder};
use crate::tar_check::TarStructureCheck;
use bytes::Bytes;
use nkvm_store::{DirectSent, DirectTarget, DirectWriter};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What `nkvm agent backup` was asked to do.
#[derive(Debug, Clone)]
pub struct SourceArgs {
    /// The mounted volume.
    pub dir: String,
    /// Compression (zstd workers: 0 picks one per core).
    pub compression: CompressionOptions,
    /// A test-only fault (see [`Fault`]).
    pub fault: Option<Fault>,
    /// Upload the archive to this bucket upload instead of sending it to nkvm.
    pub direct: Option<DirectTarget>,
}

/// How the agent's backup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEnd {
    /// The trailer went out; `true` when it says everything proved whole.
    Trailer(bool),
    /// A direct upload failed (the store's error); no trailer went out.
    Store(String),
}

/// Where the compressed bytes go: nkvm (as data frames) or the bucket (as upload parts, sealed
/// into an age file for an encrypted store); progress and the trailer always go to nkvm.
struct Output {
    frames: FrameWriter<Outbox>,
    upload: Option<DirectWriter>,
    /// The upload's failure, kept for the exit: the compressor only passes on an I/O error.
    upload_failed: Arc<OnceLock<String>>,
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match &mut self.upload {
            None => self.frames.write(data),
            Some(upload) => upload.write(data).inspect_err(|e| {
                let _ = self.upload_failed.set(e.to_string());
            }),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.upload {
            None => self.frames.flush(),
            Some(_) => Ok(()),
        }
    }
}

/// The compressed bytes' count and sha256, with a direct upload's parts (ETags) and sealed
/// age file (no parts, no age file: the data went to nkvm).
type Sent = DirectSent;

impl Output {
    /// Ends the data: the frames' count and hash, or the finished upload's.
    fn sent(&mut self) -> std::io::Result<Sent> {
        match self.upload.take() {
            None => {
                let (bytes, sha256) = self.frames.sent()?;
                Ok(DirectSent {
                    parts: Vec::new(),
                    bytes,
                    sha256,
                    sealed: None,
                })
            }
            Some(upload) => upload.finish().map_err(|e| {
                let _ = self.upload_failed.set(e.to_string());
                std::io::Error::other(e)
            }),
        }
    }
}

/// How often a progress frame goes out while data flows.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Follows the tar bytes: structure check and sha256.
struct Follow {
    check: TarStructureCheck,
    broken: Option<String>,
    hasher: Sha256,
    bytes: u64,
}

impl Follow {
    fn feed(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        if self.broken.is_none()
            && let Err(e) = self.check.feed(data)
        {
            self.broken = Some(e.to_string());
        }
    }
}

/// Runs the backup, writing the agent stream to `out`. Returns whether everything proved
/// whole (tar exited 0 and the structure check passed); the trailer says why not. An error
/// means no trailer could be written (`out` failed, or tar could not start).
///
/// Four threads overlap the work: one reads tar's output, one hashes and checks it, one
/// feeds the compressor (whose workers compress), and one writes the framed output, so a
/// full pipe towards nkvm never stops tar or the compressor.
pub fn backup(args: &SourceArgs, out: impl Write + Send) -> std::io::Result<SourceEnd> {
    // The upload's requests run on their own threads; the compressor's thread blocks on them.
    // The runtime lives until the upload is done.
    let (_runtime, upload) = match &args.direct {
        None => (None, None),
        Some(target) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let writer = target
                .writer(rt.handle().clone())
                .map_err(std::io::Error::other)?;
            (Some(rt), Some(writer))
        }
    };
    let upload_failed = Arc::new(OnceLock::new());
    let ended = run_tar(args, out, upload, &upload_failed);
    match (ended, upload_failed.get()) {
        (Err(_), Some(e)) => Ok(SourceEnd::Store(e.clone())),
        (ended, _) => ended.map(SourceEnd::Trailer),
    }
}

/// Runs tar through the pipeline into `out` (and `upload`, for a direct upload).
fn run_tar(
    args: &SourceArgs,
    out: impl Write + Send,
    upload: Option<DirectWriter>,
    upload_failed: &Arc<OnceLock<String>>,
) -> std::io::Result<bool> {
    let flavor = probe_local_tar()?;
    let argv = flavor.archive_command(&args.dir);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::other(format!("starting {}: {e}", argv[0])))?;
    let tail = Tail::spawn(child.stderr.take());
    let tar_out = child.stdout.take().expect("stdout was piped");
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let writer = scope.spawn(move || write_out(rx, out));
        let output = Output {
            frames: FrameWriter::new(Outbox::new(tx))?,
            upload,
            upload_failed: upload_failed.clone(),
        };
        let streamed = stream(args, tar_out, output, scope);
        if streamed.is_err() {
            // nkvm went away (or our output failed): tar must not run on unobserved.
            let _ = child.kill();
        }
        let status = child.wait()?;
        let (follow, frames, sent) = streamed?;
        let ok = finish(args, follow, frames, sent, status.code(), tail.finish())?;
        writer
            .join()
            .map_err(|_| std::io::Error::other("the output thread panicked"))??;
        Ok(ok)
    })
}

type Streamed = (Follow, FrameWriter<Outbox>, Sent);

/// Reads tar's output on its own thread into `Bytes` chunks handed to both `to_hash` and
/// `to_compress`; stops when either side is gone.
fn read_tar(mut tar_out: impl Read, to_hash: SyncSender<Bytes>, to_compress: SyncSender<Bytes>) {
    // One buffer, copied out at the size read: a pipe gives 64 KiB at a time, and a fresh
    // zeroed MiB per read cost more CPU than the copy.
    let mut buf = vec![0u8; READ];
    loop {
        let n = match tar_out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        if to_hash.send(chunk.clone()).is_err() || to_compress.send(chunk).is_err() {
            return;
        }
    }
}

/// Follows every chunk (hash, structure check) until the reader is done.
fn hash_tar(chunks: Receiver<Bytes>) -> Follow {
    let mut follow = Follow {
        check: TarStructureCheck::new(),
        broken: None,
        hasher: Sha256::new(),
        bytes: 0,
    };
    for chunk in chunks {
        follow.feed(&chunk);
    }
    follow
}

/// Reads tar's output to its end through the check, the hashes and the compressor.
fn stream<'s, 'e>(
    args: &SourceArgs,
    tar_out: impl Read + Send + 's,
    out: Output,
    scope: &'s std::thread::Scope<'s, 'e>,
) -> std::io::Result<Streamed> {
    let (hash_tx, hash_rx) = sync_channel::<Bytes>(DEPTH);
    let (zip_tx, zip_rx) = sync_channel::<Bytes>(DEPTH);
    scope.spawn(move || read_tar(tar_out, hash_tx, zip_tx));
    let hasher = scope.spawn(move || hash_tar(hash_rx));
    let mut encoder = Encoder::new(out, &args.compression)?;
    let (mut bytes, mut last_progress) = (0u64, Instant::now());
    for chunk in &zip_rx {
        bytes += chunk.len() as u64;
        encoder.write_all(&chunk)?;
        if last_progress.elapsed() >= PROGRESS_EVERY {
            encoder.get_mut().frames.progress(bytes)?;
            last_progress = Instant::now();
        }
        if let Some(Fault::StallAfter(limit)) = args.fault
            && bytes >= limit
        {
            encoder.get_mut().frames.flush()?;
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let mut output = encoder.finish()?;
    // A direct upload's last part goes out here.
    let sent = output.sent()?;
    let follow = hasher
        .join()
        .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
    Ok((follow, output.frames, sent))
}

/// Writes the trailer (as the fault says, in tests).
fn finish(
    args: &SourceArgs,
    mut follow: Follow,
    mut frames: FrameWriter<Outbox>,
    DirectSent {
        parts,
        bytes,
        mut sha256,
        sealed,
    }: Sent,
    tar_exit: Option<i32>,
    tar_stderr: String,
) -> std::io::Result<bool> {
    if follow.broken.is_none()
        && let Err(e) = follow.check.finish()
    {
        follow.broken = Some(e.to_string());
    }
    if args.fault == Some(Fault::OmitTrailer) {
        frames.flush()?;
        return Ok(false);
    }
    if args.fault == Some(Fault::WrongSha256) {
        sha256 = "0".repeat(64);
    }
    let ok = tar_exit == Some(0) && follow.broken.is_none();
    let trailer = Trailer {
        protocol: PROTOCOL,
        tar_exit,
        tar_stderr,
        tar_bytes: follow.bytes,
        tar_sha256: super::wire::hex(follow.hasher),
        bytes,
        sha256,
        entries: follow.check.entries(),
        devices: follow.check.devices(),
        tar_check: follow.broken,
        error: None,
        parts,
        sealed,
    };
    frames.trailer(&trailer)?;
    Ok(ok)
}
