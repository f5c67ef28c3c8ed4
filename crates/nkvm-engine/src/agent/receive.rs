//! nkvm's side of an agent backup: the agent stream arriving over exec is unframed, its data
//! hashed and counted as it passes into the store's partial archive, and the archive is
//! accepted only when the trailer arrived and its length and sha256 equal what nkvm itself
//! counted, the tar structure check passed in the agent, and the agent reported no error.
//! Runs on a blocking thread fed by a bounded channel, like [`crate::archive::archive`].

use super::wire::{FrameReader, Trailer, WireError};
use crate::archive::Archived;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Why an agent's archive was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The stream was not a whole agent stream.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Writing into the store failed.
    #[error("writing the archive: {0}")]
    Write(#[from] std::io::Error),
    /// The agent failed.
    #[error("the nkvm agent in the helper pod failed: {0}")]
    Agent(String),
    /// The tar stream the agent read was not a whole archive.
    #[error("the tar stream in the helper pod was not a whole archive: {0}")]
    TarCheck(String),
    /// What arrived is not what the agent sent.
    #[error(
        "the archive that arrived ({bytes} bytes, sha256 {sha256}) is not the one the agent sent ({sent_bytes} bytes, sha256 {sent_sha256}): bytes were lost or changed on the way; retry"
    )]
    Mismatch {
        /// Bytes received.
        bytes: u64,
        /// Their sha256.
        sha256: String,
        /// Bytes the trailer names.
        sent_bytes: u64,
        /// The sha256 the trailer names.
        sent_sha256: String,
    },
}

impl nkvm_domain::UserError for ReceiveError {
    /// A store write failing is the store's; everything else is the transfer's.
    fn kind(&self) -> nkvm_domain::FailureKind {
        match self {
            ReceiveError::Write(_) => nkvm_domain::FailureKind::StorageUnavailable,
            _ => nkvm_domain::FailureKind::CommandFailed,
        }
    }
}

/// What arrived: the trailer and nkvm's own count and hash of the data.
#[derive(Debug)]
pub struct Arrived<W> {
    /// The agent's trailer.
    pub trailer: Trailer,
    /// Compressed bytes received.
    pub bytes: u64,
    /// Their sha256.
    pub sha256: String,
    /// The store's writer, every byte written and flushed.
    pub writer: W,
}

/// An arrived archive [`accept`] refused: why, and the writer, for the caller to abort.
pub struct Refused<W> {
    /// Why the archive was refused.
    pub error: ReceiveError,
    /// The store's writer holding the refused bytes.
    pub writer: W,
}

/// Consumes the agent stream from `chunks` until the sender is dropped, writing its data into
/// `writer`; `read_so_far` follows the agent's progress frames (tar bytes). Call from a
/// blocking thread. Fails on a stream that is not whole; the trailer is judged by
/// [`accept`].
pub fn receive<W: Write>(
    mut chunks: mpsc::Receiver<Bytes>,
    mut writer: W,
    read_so_far: &AtomicU64,
) -> Result<Arrived<W>, ReceiveError> {
    let mut reader = FrameReader::new();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = chunks.blocking_recv() {
        reader.feed(&chunk, &mut |data: &[u8]| {
            hasher.update(data);
            bytes += data.len() as u64;
            writer.write_all(data).map_err(ReceiveError::Write)
        })?;
        read_so_far.store(reader.tar_bytes(), Ordering::Relaxed);
    }
    let trailer = reader.finish()?;
    writer.flush()?;
    Ok(Arrived {
        trailer,
        bytes,
        sha256: super::wire::hex(hasher),
        writer,
    })
}

/// Accepts what arrived when the trailer proves it whole: no agent error, the tar check
/// passed, and nkvm's own length and sha256 equal the trailer's. tar's exit code is the
/// caller's to judge (it knows the tar flavor). Returns the archive with the trailer's counts.
pub fn accept<W>(arrived: Arrived<W>) -> Result<(Archived<W>, Trailer), Refused<W>> {
    let t = arrived.trailer;
    let error = if let Some(e) = &t.error {
        Some(ReceiveError::Agent(e.clone()))
    } else if arrived.bytes != t.bytes || arrived.sha256 != t.sha256 {
        Some(ReceiveError::Mismatch {
            bytes: arrived.bytes,
            sha256: arrived.sha256,
            sent_bytes: t.bytes,
            sent_sha256: t.sha256.clone(),
        })
    } else {
        tar_check_failed(&t)
    };
    if let Some(error) = error {
        return Err(Refused {
            error,
            writer: arrived.writer,
        });
    }
    Ok((archived(&t, arrived.writer), t))
}

/// Accepts a direct upload's trailer: the agent uploaded the data itself, so nothing but
/// progress may have arrived besides the trailer (a data frame fails [`receive`] through
/// [`NoData`]); no agent error, the tar check passed, and the parts are listed. The length
/// and sha256 are the agent's; the store checks the length against the bucket's object.
pub fn accept_direct(arrived: Arrived<NoData>) -> Result<(Archived<()>, Trailer), ReceiveError> {
    let t = arrived.trailer;
    if let Some(e) = &t.error {
        return Err(ReceiveError::Agent(e.clone()));
    }
    if t.parts.is_empty() {
        return Err(ReceiveError::Agent(
            "its trailer lists no uploaded parts; the agent in the helper image is not the one this nkvm expects".into(),
        ));
    }
    if let Some(e) = tar_check_failed(&t) {
        return Err(e);
    }
    Ok((archived(&t, ()), t))
}

/// The tar check's failure, when tar itself exited cleanly (a failed tar explains a broken
/// stream better; the caller reports it).
fn tar_check_failed(t: &Trailer) -> Option<ReceiveError> {
    match &t.tar_check {
        Some(e) if t.tar_exit == Some(0) => Some(ReceiveError::TarCheck(e.clone())),
        _ => None,
    }
}

fn archived<W>(t: &Trailer, writer: W) -> Archived<W> {
    Archived {
        bytes_read: t.tar_bytes,
        entries: t.entries,
        devices: t.devices,
        writer,
    }
}

/// The writer of a direct upload's receiving side: archive data must not arrive at all.
pub struct NoData;

impl Write for NoData {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(
            "the agent sent archive data to nkvm during a direct upload",
        ))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::{FrameWriter, PROTOCOL};
    use super::*;

    fn agent_stream(data: &[u8], tamper: impl FnOnce(&mut Trailer)) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        w.write_all(data).unwrap();
        let (bytes, sha256) = w.sent().unwrap();
        let mut t = Trailer {
            protocol: PROTOCOL,
            tar_exit: Some(0),
            tar_bytes: 10_240,
            bytes,
            sha256,
            entries: 3,
            ..Default::default()
        };
        tamper(&mut t);
        w.trailer(&t).unwrap()
    }

    fn run(stream: &[u8]) -> Result<(Archived<Vec<u8>>, Trailer), ReceiveError> {
        let (tx, rx) = mpsc::channel(4);
        let chunks: Vec<Bytes> = stream.chunks(1000).map(Bytes::copy_from_slice).collect();
        let feeder = std::thread::spawn(move || {
            for c in chunks {
                tx.blocking_send(c).unwrap();
            }
        });
        let arrived = receive(rx, Vec::new(), &AtomicU64::new(0));
        feeder.join().unwrap();
        accept(arrived?).map_err(|r| r.error)
    }

    #[test]
    fn a_whole_stream_is_accepted_with_the_trailers_counts() {
        let data = vec![9u8; 50_000];
        let (archived, trailer) = run(&agent_stream(&data, |_| {})).unwrap();
        assert_eq!(archived.writer, data);
        assert_eq!((archived.bytes_read, archived.entries), (10_240, 3));
        assert_eq!(trailer.tar_exit, Some(0));
    }

    #[test]
    fn a_mismatching_hash_or_length_is_refused() {
        let data = vec![9u8; 5_000];
        let e = run(&agent_stream(&data, |t| t.sha256 = "0".repeat(64))).unwrap_err();
        assert!(matches!(e, ReceiveError::Mismatch { .. }), "{e}");
        let e = run(&agent_stream(&data, |t| t.bytes += 1)).unwrap_err();
        assert!(e.to_string().contains("not the one the agent sent"), "{e}");
    }

    #[test]
    fn a_cut_stream_and_a_missing_trailer_are_refused() {
        let data = vec![9u8; 5_000];
        let whole = agent_stream(&data, |_| {});
        let e = run(&whole[..whole.len() - 10]).unwrap_err();
        assert!(e.to_string().contains("inside the trailer"), "{e}");
        let e = run(&whole[..3000]).unwrap_err();
        assert!(e.to_string().contains("was cut"), "{e}");
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        let (_, _) = w.sent().unwrap();
        let no_trailer = w.trailer_free();
        let e = run(&no_trailer).unwrap_err();
        assert!(e.to_string().contains("before the trailer"), "{e}");
    }

    #[test]
    fn an_agent_error_or_a_broken_tar_is_refused() {
        let e = run(&agent_stream(b"x", |t| t.error = Some("disk gone".into()))).unwrap_err();
        assert!(e.to_string().contains("disk gone"), "{e}");
        let e = run(&agent_stream(b"x", |t| {
            t.tar_check = Some("truncated".into())
        }))
        .unwrap_err();
        assert!(matches!(e, ReceiveError::TarCheck(_)), "{e}");
    }

    fn run_direct(stream: &[u8]) -> Result<(Archived<()>, Trailer), ReceiveError> {
        let (tx, rx) = mpsc::channel(4);
        let chunks: Vec<Bytes> = stream.chunks(1000).map(Bytes::copy_from_slice).collect();
        let feeder = std::thread::spawn(move || {
            for c in chunks {
                if tx.blocking_send(c).is_err() {
                    return;
                }
            }
        });
        let arrived = receive(rx, NoData, &AtomicU64::new(0));
        feeder.join().unwrap();
        accept_direct(arrived?)
    }

    /// A direct upload's stream: only the trailer, with `parts`.
    fn direct_stream(tamper: impl FnOnce(&mut Trailer)) -> Vec<u8> {
        let w = FrameWriter::new(Vec::new()).unwrap();
        let mut t = Trailer {
            protocol: PROTOCOL,
            tar_exit: Some(0),
            tar_bytes: 10_240,
            bytes: 777,
            sha256: "a".repeat(64),
            entries: 3,
            parts: vec!["\"etag-1\"".into()],
            ..Default::default()
        };
        tamper(&mut t);
        w.trailer(&t).unwrap()
    }

    #[test]
    fn a_direct_trailer_is_accepted_with_its_parts_and_nothing_else_is() {
        let (archived, t) = run_direct(&direct_stream(|_| {})).unwrap();
        assert_eq!((archived.bytes_read, t.bytes), (10_240, 777));
        assert_eq!(t.parts.len(), 1);
        let e = run_direct(&direct_stream(|t| t.parts.clear())).unwrap_err();
        assert!(e.to_string().contains("no uploaded parts"), "{e}");
        let e = run_direct(&direct_stream(|t| t.tar_check = Some("cut".into()))).unwrap_err();
        assert!(matches!(e, ReceiveError::TarCheck(_)), "{e}");
        // Archive data arriving during a direct upload is a broken agent, never stored.
        let e = run_direct(&agent_stream(b"data", |t| t.parts = vec!["e".into()])).unwrap_err();
        assert!(e.to_string().contains("during a direct upload"), "{e}");
    }
}
