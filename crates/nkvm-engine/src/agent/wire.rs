//! The agent's wire format on the exec stdout: a magic line, then frames of `kind (1 byte) |
//! length (4 bytes, big-endian) | payload`. `D` frames carry compressed archive bytes, `P`
//! frames the tar bytes read so far (8 bytes, big-endian), and exactly one `T` frame, the
//! last, carries the [`Trailer`] as JSON. Nothing may follow the trailer. A stream that ends
//! anywhere else (inside a frame, or between frames without a trailer) is cut, whatever the
//! transport said. The format is described for operators in `docs/agent.md`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;

/// First bytes of every agent stream; the digit is the protocol version.
pub const MAGIC: &[u8; 8] = b"NKVMAG1\n";
/// The protocol version the trailer carries.
pub const PROTOCOL: u32 = 1;
/// Largest `D` payload.
pub const MAX_DATA: usize = 4 << 20;
/// Largest `T` payload.
pub const MAX_TRAILER: usize = 64 << 10;
/// Frame kind: compressed archive bytes.
pub const DATA: u8 = b'D';
/// Frame kind: tar bytes read so far.
pub const PROGRESS: u8 = b'P';
/// Frame kind: the trailer.
pub const TRAILER: u8 = b'T';
/// Bytes of a frame header.
const HEADER: usize = 5;

/// What the agent reports after the last data byte (backup) or after tar ended (restore).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trailer {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// tar's exit code; `None` when tar did not run to an exit (killed, never started).
    pub tar_exit: Option<i32>,
    /// The end of tar's stderr.
    pub tar_stderr: String,
    /// Tar bytes (read from tar on backup, fed to tar on restore).
    pub tar_bytes: u64,
    /// sha256 of those tar bytes (lower-case hex).
    pub tar_sha256: String,
    /// Compressed bytes (sent on backup, received on restore).
    pub bytes: u64,
    /// sha256 of the compressed bytes (lower-case hex).
    pub sha256: String,
    /// Tar headers seen.
    pub entries: u64,
    /// Device nodes among them.
    pub devices: u64,
    /// Why the tar structure check failed; `None` when the stream was a whole tar archive.
    pub tar_check: Option<String>,
    /// Why the agent itself failed; `None` when it did its part.
    pub error: Option<String>,
    /// A direct upload's parts (their ETags, in order); empty when the data went to nkvm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// The age file a direct upload to an encrypted store sealed: what the bucket holds
    /// (`bytes` and `sha256` above are the compressed tar inside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<nkvm_store::SealedBytes>,
}

/// Lower-case hex of a finished sha256.
pub fn hex(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes an agent stream: the magic on creation, then frames. Data is buffered into frames
/// of up to a MiB and hashed as it is framed, so [`FrameWriter::trailer`] can fill in the
/// compressed length and sha256 of exactly what was sent.
pub struct FrameWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
}

/// Data bytes batched into one `D` frame.
const BATCH: usize = 1 << 20;

impl<W: Write> FrameWriter<W> {
    /// Starts a stream on `out` (writes the magic).
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(MAGIC)?;
        Ok(FrameWriter {
            out,
            buf: Vec::with_capacity(BATCH),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
        let mut header = [kind, 0, 0, 0, 0];
        header[1..].copy_from_slice(&len.to_be_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(payload)
    }

    /// Sends the buffered data as a `D` frame.
    fn pass(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        self.hasher.update(&buf);
        self.bytes += buf.len() as u64;
        let sent = self.frame(DATA, &buf);
        self.buf = buf;
        self.buf.clear();
        sent
    }

    /// Sends a `P` frame (buffered data goes first, so progress never overtakes data).
    pub fn progress(&mut self, tar_bytes: u64) -> std::io::Result<()> {
        self.pass()?;
        self.frame(PROGRESS, &tar_bytes.to_be_bytes())?;
        self.out.flush()
    }

    /// Compressed bytes framed so far, and their sha256 (buffered data is sent first).
    pub fn sent(&mut self) -> std::io::Result<(u64, String)> {
        self.pass()?;
        Ok((self.bytes, hex(self.hasher.clone())))
    }

    /// The output with the data sent but no trailer: a cut stream, for tests.
    #[cfg(test)]
    pub(crate) fn trailer_free(mut self) -> W {
        self.pass().expect("data frames written");
        self.out
    }

    /// Ends the stream with `trailer` and returns the output.
    pub fn trailer(mut self, trailer: &Trailer) -> std::io::Result<W> {
        self.pass()?;
        let json = serde_json::to_vec(trailer).map_err(std::io::Error::other)?;
        self.frame(TRAILER, &json)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = BATCH - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= BATCH {
            self.pass()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.pass()?;
        self.out.flush()
    }
}

/// Why an agent stream was not whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The stream does not start with [`MAGIC`].
    #[error(
        "the helper did not answer in the nkvm agent's format (first bytes {0:?}); is the helper image nkvm's own image of the same version?"
    )]
    NotAgent(String),
    /// A frame of an unknown kind.
    #[error("the agent stream holds an unknown frame kind {kind:#04x} at byte {offset}")]
    UnknownFrame {
        /// The kind byte.
        kind: u8,
        /// Where.
        offset: u64,
    },
    /// A frame longer than its kind allows.
    #[error(
        "the agent stream holds a {kind} frame of {len} bytes at byte {offset}, more than allowed"
    )]
    Oversize {
        /// The kind, as a letter.
        kind: char,
        /// Its length field.
        len: u32,
        /// Where.
        offset: u64,
    },
    /// Bytes after the trailer.
    #[error("the agent stream goes on after its trailer (byte {offset})")]
    AfterTrailer {
        /// Where.
        offset: u64,
    },
    /// The stream ended inside a frame or without a trailer.
    #[error(
        "the agent stream was cut at byte {offset} ({detail}): no trailer proves the archive whole"
    )]
    Cut {
        /// Where it ended.
        offset: u64,
        /// Inside what.
        detail: &'static str,
    },
    /// The trailer is not valid JSON of the expected shape.
    #[error("the agent's trailer is unreadable: {0}")]
    BadTrailer(String),
}

/// Where the reader is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Magic,
    Header,
    Data { left: usize },
    Small { kind: u8, left: usize },
    Done,
}

/// Follows an agent stream fed in arbitrary chunks: data payloads go to a callback as they
/// pass, progress and the trailer are collected.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    small: Vec<u8>,
    offset: u64,
    tar_bytes: u64,
    trailer: Option<Trailer>,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            state: State::Magic,
            small: Vec::with_capacity(HEADER),
            offset: 0,
            tar_bytes: 0,
            trailer: None,
        }
    }
}

impl FrameReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tar bytes the last progress frame reported.
    pub fn tar_bytes(&self) -> u64 {
        self.tar_bytes
    }

    /// Takes as many bytes as `want` into the small buffer; true when it holds `want`.
    fn gather(&mut self, data: &mut &[u8], want: usize) -> bool {
        let n = (want - self.small.len()).min(data.len());
        self.small.extend_from_slice(&data[..n]);
        *data = &data[n..];
        self.offset += n as u64;
        self.small.len() == want
    }

    /// Follows `data`, handing data payloads to `on_data`.
    pub fn feed<E: From<WireError>>(
        &mut self,
        mut data: &[u8],
        on_data: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while !data.is_empty() {
            match self.state.clone() {
                State::Magic => {
                    if self.gather(&mut data, MAGIC.len()) {
                        if self.small != MAGIC {
                            let shown = String::from_utf8_lossy(&self.small).into_owned();
                            return Err(WireError::NotAgent(shown).into());
                        }
                        self.small.clear();
                        self.state = State::Header;
                    } else if !MAGIC.starts_with(&self.small) {
                        let shown = String::from_utf8_lossy(&self.small).into_owned();
                        return Err(WireError::NotAgent(shown).into());
                    }
                }
                State::Header => {
                    if self.gather(&mut data, HEADER) {
                        self.state = self.header()?;
                        self.small.clear();
                    }
                }
                State::Data { left } => {
                    let n = left.min(data.len());
                    on_data(&data[..n])?;
                    data = &data[n..];
                    self.offset += n as u64;
                    self.state = if n == left {
                        State::Header
                    } else {
                        State::Data { left: left - n }
                    };
                }
                State::Small { kind, left } => {
                    if self.gather(&mut data, left) {
                        self.small_frame(kind)?;
                        self.small.clear();
                    }
                }
                State::Done => {
                    return Err(WireError::AfterTrailer {
                        offset: self.offset,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The state after the frame header in `small`.
    fn header(&self) -> Result<State, WireError> {
        let kind = self.small[0];
        let len = u32::from_be_bytes([self.small[1], self.small[2], self.small[3], self.small[4]]);
        let at = self.offset - HEADER as u64;
        let (limit, state) = match kind {
            DATA => (MAX_DATA, State::Data { left: len as usize }),
            PROGRESS => (8, State::Small { kind, left: 8 }),
            TRAILER => (
                MAX_TRAILER,
                State::Small {
                    kind,
                    left: len as usize,
                },
            ),
            _ => return Err(WireError::UnknownFrame { kind, offset: at }),
        };
        if len as usize > limit || (kind == PROGRESS && len != 8) {
            return Err(WireError::Oversize {
                kind: kind as char,
                len,
                offset: at,
            });
        }
        Ok(match state {
            State::Data { left: 0 } | State::Small { left: 0, .. } if kind != TRAILER => {
                State::Header
            }
            s => s,
        })
    }

    fn small_frame(&mut self, kind: u8) -> Result<(), WireError> {
        if kind == PROGRESS {
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.small);
            self.tar_bytes = u64::from_be_bytes(b);
            self.state = State::Header;
            return Ok(());
        }
        let trailer: Trailer = serde_json::from_slice(&self.small)
            .map_err(|e| WireError::BadTrailer(e.to_string()))?;
        self.trailer = Some(trailer);
        self.state = State::Done;
        Ok(())
    }

    /// The trailer, once the stream ended; fails when it ended anywhere but after one.
    pub fn finish(self) -> Result<Trailer, WireError> {
        let detail = match self.state {
            State::Done => {
                return self
                    .trailer
                    .ok_or(WireError::BadTrailer("no trailer was kept".into()));
            }
            State::Magic => "before the agent's first bytes",
            State::Header if self.small.is_empty() => "between frames, before the trailer",
            State::Header => "inside a frame header",
            State::Data { .. } => "inside a data frame",
            State::Small { kind: TRAILER, .. } => "inside the trailer",
            State::Small { .. } => "inside a progress frame",
        };
        Err(WireError::Cut {
            offset: self.offset,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(data: &[u8], trailer: Option<&Trailer>) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        w.write_all(data).unwrap();
        w.progress(42).unwrap();
        w.write_all(data).unwrap();
        match trailer {
            Some(t) => w.trailer(t).unwrap(),
            None => {
                w.flush().unwrap();
                w.out
            }
        }
    }

    fn read(bytes: &[u8], chunk: usize) -> Result<(Vec<u8>, Trailer, u64), WireError> {
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for c in bytes.chunks(chunk) {
            r.feed(c, &mut |d: &[u8]| {
                got.extend_from_slice(d);
                Ok::<(), WireError>(())
            })?;
        }
        let progress = r.tar_bytes();
        Ok((got, r.finish()?, progress))
    }

    #[test]
    fn data_and_trailer_come_back_whatever_the_chunking() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let trailer = Trailer {
            protocol: PROTOCOL,
            tar_exit: Some(0),
            bytes: 6_000_000,
            ..Default::default()
        };
        let bytes = stream(&data, Some(&trailer));
        for chunk in [1, 7, 4096, 1 << 20, bytes.len()] {
            let (got, t, progress) = read(&bytes, chunk).unwrap();
            assert_eq!(got.len(), data.len() * 2, "chunk {chunk}");
            assert_eq!((t, progress), (trailer.clone(), 42));
        }
    }

    #[test]
    fn the_writer_counts_and_hashes_exactly_the_data_it_framed() {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        w.write_all(b"hello").unwrap();
        let (bytes, sha) = w.sent().unwrap();
        assert_eq!(bytes, 5);
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn a_cut_anywhere_or_a_missing_trailer_is_an_error() {
        let bytes = stream(b"abcdef", Some(&Trailer::default()));
        for cut in 0..bytes.len() {
            let e = read(&bytes[..cut], 3).unwrap_err();
            assert!(matches!(e, WireError::Cut { .. }), "cut at {cut}: {e}");
        }
        let no_trailer = stream(b"abcdef", None);
        let e = read(&no_trailer, 5).unwrap_err();
        assert!(e.to_string().contains("before the trailer"), "{e}");
    }

    #[test]
    fn garbage_before_after_or_inside_is_refused() {
        let tar_like = b"./\0\0\0\0\0\0\0\0\0\0";
        assert!(matches!(read(tar_like, 4), Err(WireError::NotAgent(_))));
        let mut after = stream(b"x", Some(&Trailer::default()));
        after.push(0);
        assert!(matches!(
            read(&after, 64),
            Err(WireError::AfterTrailer { .. })
        ));
        let mut unknown = MAGIC.to_vec();
        unknown.extend_from_slice(&[b'Z', 0, 0, 0, 1, 0]);
        assert!(matches!(
            read(&unknown, 64),
            Err(WireError::UnknownFrame { kind: b'Z', .. })
        ));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[b'D', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(read(&huge, 64), Err(WireError::Oversize { .. })));
        let mut bad_json = MAGIC.to_vec();
        bad_json.extend_from_slice(&[b'T', 0, 0, 0, 2, b'{', b'x']);
        assert!(matches!(read(&bad_json, 64), Err(WireError::BadTrailer(_))));
    }
}
