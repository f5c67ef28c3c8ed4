//! The CPU half of a backup: the tar stream arriving from the helper pod is followed by
//! [`TarStructureCheck`](crate::tar_check::TarStructureCheck), compressed, and written into the store's partial
//! archive. It runs on a blocking thread fed by a bounded channel, so the async runtime never
//! compresses and memory stays flat whatever the volume's size.

use crate::archive_safety::{Contents, UnsafeArchive, check_member_safety};
use crate::tar_check::{TarError, TarStructureCheck};
use bytes::Bytes;
use nkvm_domain::Compression;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// zstd level used unless configured (fast, with a good ratio; see docs/adr).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// What the pipeline produced.
#[derive(Debug)]
pub struct Archived<W> {
    /// Bytes of tar stream read.
    pub bytes_read: u64,
    /// Tar entries seen.
    pub entries: u64,
    /// Device nodes among them (a restore refuses them).
    pub devices: u64,
    /// The writer, with every compressed byte written and flushed.
    pub writer: W,
}

impl<W> Archived<W> {
    /// The same archive's facts over the writer `f` makes of this one.
    pub fn map_writer<V>(self, f: impl FnOnce(W) -> V) -> Archived<V> {
        Archived {
            bytes_read: self.bytes_read,
            entries: self.entries,
            devices: self.devices,
            writer: f(self.writer),
        }
    }
}

/// Why the pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The tar stream was incomplete or corrupt.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// Compressing or writing failed.
    #[error("writing the archive: {0}")]
    Write(#[from] std::io::Error),
}

/// Compression settings.
#[derive(Debug, Clone, Copy)]
pub struct CompressionOptions {
    /// Algorithm.
    pub compression: Compression,
    /// zstd level (1–19), or gzip level (0–9).
    pub level: Option<i32>,
    /// zstd worker threads (0: single-threaded in the caller's thread).
    pub workers: u32,
}

impl Default for CompressionOptions {
    // One compression thread: zstd's multithreaded mode buffers several MiB per worker (peak
    // RSS 126 MiB in the backup benchmark against 23 MiB single-threaded) and bought no speed
    // on two cores that also carry tar, TLS and hashing.
    fn default() -> Self {
        CompressionOptions {
            compression: Compression::Zstd,
            level: None,
            workers: 0,
        }
    }
}

/// A compressor of the configured kind writing into `W` (the agent uses it too).
pub(crate) enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    Plain(W),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(w: W, o: &CompressionOptions) -> std::io::Result<Self> {
        Ok(match o.compression {
            Compression::Zstd => {
                let mut e =
                    zstd::stream::write::Encoder::new(w, o.level.unwrap_or(DEFAULT_ZSTD_LEVEL))?;
                // The frame checksum lets `zstd -t` and our verify catch bit rot on their own.
                e.include_checksum(true)?;
                if o.workers > 0 {
                    e.multithread(o.workers)?;
                }
                Encoder::Zstd(e)
            }
            Compression::Gzip => {
                let level = o.level.map_or(flate2::Compression::new(6), |l| {
                    flate2::Compression::new(l.clamp(0, 9) as u32)
                });
                Encoder::Gzip(flate2::write::GzEncoder::new(w, level))
            }
            Compression::None => Encoder::Plain(w),
        })
    }

    pub(crate) fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.write_all(data),
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Plain(w) => w.write_all(data),
        }
    }

    /// The output the compressed bytes go to.
    pub(crate) fn get_mut(&mut self) -> &mut W {
        match self {
            Encoder::Zstd(e) => e.get_mut(),
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Plain(w) => w,
        }
    }

    pub(crate) fn finish(self) -> std::io::Result<W> {
        let mut w = match self {
            Encoder::Zstd(e) => e.finish()?,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Plain(w) => w,
        };
        w.flush()?;
        Ok(w)
    }
}

/// Compressed bytes handed to the store's thread at a time.
const HANDOFF_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the compressing and the storing thread (bounds memory at
/// about 2 MiB).
const HANDOFF_DEPTH: usize = 8;

/// The compressor's output: batches bytes and passes them to the storing thread.
struct Handoff {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Handoff {
    fn pass(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(HANDOFF_CHUNK));
        self.tx
            .send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "store writer ended"))
    }
}

impl Write for Handoff {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= HANDOFF_CHUNK {
            self.pass()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.pass()
    }
}

/// Consumes the tar stream from `chunks` until the sender is dropped, writing the compressed
/// archive into `writer`. Call from a blocking thread. Fails if the stream is not a complete
/// tar archive; the caller then discards the writer's partial output.
///
/// Compression (with the tar check) and storing (the store hashes as it writes) run on two
/// threads, so sha256 and file I/O overlap with zstd instead of following it.
pub fn archive<W: Write + Send>(
    chunks: mpsc::Receiver<Bytes>,
    writer: W,
    opts: &CompressionOptions,
    read_so_far: &AtomicU64,
) -> Result<Archived<W>, ArchiveError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(HANDOFF_DEPTH);
        let storing = scope.spawn(move || -> std::io::Result<W> {
            let mut writer = writer;
            for chunk in rx {
                writer.write_all(&chunk)?;
            }
            writer.flush()?;
            Ok(writer)
        });
        let handoff = Handoff {
            tx,
            buf: Vec::with_capacity(HANDOFF_CHUNK),
        };
        let compressed = compress(chunks, handoff, opts, read_so_far);
        let stored = storing
            .join()
            .map_err(|_| std::io::Error::other("the store writer panicked"))?;
        // The store's own error explains a broken hand-off better than the hand-off does.
        match (compressed, stored) {
            (Ok((bytes_read, entries, devices)), Ok(writer)) => Ok(Archived {
                bytes_read,
                entries,
                devices,
                writer,
            }),
            (Err(ArchiveError::Write(_)), Err(e)) | (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e),
        }
    })
}

/// The compressing half of [`archive`]: returns tar bytes read, tar entries and device nodes.
fn compress(
    mut chunks: mpsc::Receiver<Bytes>,
    out: Handoff,
    opts: &CompressionOptions,
    read_so_far: &AtomicU64,
) -> Result<(u64, u64, u64), ArchiveError> {
    let mut encoder = Encoder::new(out, opts)?;
    let mut check = TarStructureCheck::new();
    let mut bytes_read = 0u64;
    while let Some(chunk) = chunks.blocking_recv() {
        check.feed(&chunk)?;
        bytes_read += chunk.len() as u64;
        read_so_far.store(bytes_read, Ordering::Relaxed);
        encoder.write_all(&chunk)?;
    }
    check.finish()?;
    // Flushed by `finish`; dropping it then ends the storing thread's input.
    drop(encoder.finish()?);
    Ok((bytes_read, check.entries(), check.devices()))
}

/// The decompressing reader for a stored archive.
pub fn decoder<'a>(
    reader: impl std::io::Read + 'a,
    compression: Compression,
) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::None => Box::new(reader),
    })
}

/// Reads an archive back, decompressing it, and checks that it is a complete tar stream whose
/// members all stay inside the directory it would be extracted to. Used by `verify` and
/// before every restore.
pub fn check_archive(
    reader: impl std::io::Read,
    compression: Compression,
) -> Result<Contents, UnsafeArchive> {
    check_member_safety(decoder(reader, compression)?)
}

impl nkvm_domain::UserError for ArchiveError {
    /// A broken tar stream is the helper's command failing; a write error is the store's.
    fn kind(&self) -> nkvm_domain::FailureKind {
        match self {
            ArchiveError::Tar(_) => nkvm_domain::FailureKind::CommandFailed,
            ArchiveError::Write(_) => nkvm_domain::FailureKind::StorageUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(dir: &std::path::Path) -> Vec<u8> {
        let out = std::process::Command::new("tar")
            .args(["--create", "--file=-", "-C"])
            .arg(dir)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn run(
        tar: &[u8],
        compression: Compression,
        chunk: usize,
    ) -> Result<Archived<Vec<u8>>, ArchiveError> {
        let (tx, rx) = mpsc::channel(4);
        let opts = CompressionOptions {
            compression,
            level: None,
            workers: 0,
        };
        let worker = std::thread::spawn(move || archive(rx, Vec::new(), &opts, &AtomicU64::new(0)));
        for c in tar.chunks(chunk) {
            tx.blocking_send(Bytes::copy_from_slice(c)).unwrap();
        }
        drop(tx);
        worker.join().unwrap()
    }

    #[test]
    fn each_compression_round_trips_to_the_same_tar() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("text"), "hello ".repeat(10_000)).unwrap();
        std::fs::write(
            dir.path().join("bytes"),
            (0..100_000u32).map(|i| (i * 31) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        let tar = tar_of(dir.path());
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let out = run(&tar, c, 5000).unwrap();
            assert_eq!(out.bytes_read, tar.len() as u64);
            let contents = check_archive(&out.writer[..], c).unwrap();
            assert_eq!(
                (contents.tar_bytes, contents.members >= 3),
                (tar.len() as u64, true),
                "{c:?}"
            );
            if c == Compression::Zstd {
                assert!(out.writer.len() < tar.len() / 3, "zstd compresses text");
            }
        }
    }

    /// A store that fills up after `room` bytes.
    struct FullDisk {
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            if data.len() > self.room {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
            self.room -= data.len();
            Ok(data.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_store_write_failure_fails_the_archive_with_the_store_error() {
        let dir = tempfile::tempdir().unwrap();
        let random: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.path().join("r"), random).unwrap();
        let tar = tar_of(dir.path());
        let (tx, rx) = mpsc::channel(4);
        let opts = CompressionOptions::default();
        let worker = std::thread::spawn(move || {
            archive(rx, FullDisk { room: 300_000 }, &opts, &AtomicU64::new(0)).map(|_| ())
        });
        for c in tar.chunks(64 * 1024) {
            if tx.blocking_send(Bytes::copy_from_slice(c)).is_err() {
                break;
            }
        }
        drop(tx);
        let err = worker.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("no space left on device"), "{err}");
    }

    #[test]
    fn a_truncated_stream_fails_the_archive_and_a_damaged_archive_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![7u8; 50_000]).unwrap();
        let tar = tar_of(dir.path());
        assert!(matches!(
            run(&tar[..20_000], Compression::Zstd, 4096),
            Err(ArchiveError::Tar(TarError::Truncated { .. }))
        ));
        let mut good = run(&tar, Compression::Zstd, 4096).unwrap().writer;
        let mid = good.len() / 2;
        good[mid] ^= 0x55;
        assert!(
            check_archive(&good[..], Compression::Zstd).is_err(),
            "the zstd checksum or tar checks catch a flipped byte"
        );
    }
}
