//! The nkvm agent: nkvm's own binary running in the helper pod (`nkvm agent ...`) so that tar,
//! the tar check, hashing and compression happen next to the volume and only compressed bytes
//! cross the exec stream. It owns the agent's wire format ([`wire`]), both agent programs
//! ([`source`] for backup, [`sink`] for restore), nkvm's receiving side of a backup
//! ([`receive`]), the probe that tells nkvm the agent is there, and the choice of data path
//! ([`DataPath`]): the agent when the helper image is nkvm's own image, else the generic
//! tar-over-exec path that any image with tar supports.

pub mod receive;
pub mod sink;
pub mod source;
pub mod wire;

use nkvm_kube::tar_command::{TarFlavor, TarProbeError};
use serde::Serialize;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::mpsc::{Receiver, SyncSender};

/// Where nkvm's binary is in its own image (the Dockerfile installs it there).
pub const AGENT_PATH: &str = "/usr/local/bin/nkvm";
/// First word of the probe's first line.
const PROBE_WORD: &str = "nkvm-agent";

/// How a job moves a volume's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPath {
    /// `nkvm agent` in the helper pod: compressed, hashed and checked at the source.
    Agent,
    /// The agent as above, uploading the archive straight to an S3 store; nkvm receives only
    /// the trailer and completes the upload.
    Direct,
    /// tar over exec from any image; nkvm checks, compresses and hashes.
    Tar,
}

impl DataPath {
    /// The path a helper image takes: the agent for nkvm's own image, tar for any other.
    pub fn for_image(helper_image: &str, own_image: &str) -> DataPath {
        if helper_image == own_image {
            DataPath::Agent
        } else {
            DataPath::Tar
        }
    }

    /// `agent`, `direct` or `tar`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataPath::Agent => "agent",
            DataPath::Direct => "direct",
            DataPath::Tar => "tar",
        }
    }
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault the agent injects when asked (`--fault`, which nkvm passes on only from its own
/// test-only `NKVM_AGENT_FAULT` variable): how the tests make a trailer go missing or lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// End the stream after the data, without a trailer.
    OmitTrailer,
    /// Put a wrong sha256 in the trailer (backup) or compute one (restore).
    WrongSha256,
    /// Stop sending after this many tar bytes, for an hour.
    StallAfter(u64),
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "omit-trailer" => Ok(Fault::OmitTrailer),
            "wrong-sha256" => Ok(Fault::WrongSha256),
            _ => s
                .strip_prefix("stall-after=")
                .and_then(|n| n.parse().ok())
                .map(Fault::StallAfter)
                .ok_or_else(|| {
                    format!(
                        "unknown agent fault {s:?}: use omit-trailer, wrong-sha256 or stall-after=BYTES"
                    )
                }),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::OmitTrailer => f.write_str("omit-trailer"),
            Fault::WrongSha256 => f.write_str("wrong-sha256"),
            Fault::StallAfter(n) => write!(f, "stall-after={n}"),
        }
    }
}

/// Read and batch size of the agent's pipes.
pub(crate) const READ: usize = 1 << 20;

/// Chunks in flight between threads (each about a MiB).
pub(crate) const DEPTH: usize = 8;

/// Writes the framed output's batches to `out` until the sender goes.
pub(crate) fn write_out(rx: Receiver<Vec<u8>>, mut out: impl Write) -> std::io::Result<()> {
    for batch in rx {
        out.write_all(&batch)?;
        out.flush()?;
    }
    Ok(())
}

/// Batches writes and hands them to the output thread (on flush, or once a MiB is held).
pub(crate) struct Outbox {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Outbox {
    pub(crate) fn new(tx: SyncSender<Vec<u8>>) -> Self {
        Outbox {
            tx,
            buf: Vec::with_capacity(READ + 64),
        }
    }
}

impl Write for Outbox {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= READ {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(READ + 64));
        self.tx.send(full).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reader of the agent's output went away",
            )
        })
    }
}

/// The end of a child's stderr, collected on its own thread so the child never blocks on it.
pub(crate) struct Tail(Option<std::thread::JoinHandle<String>>);

/// Most stderr kept.
const TAIL: usize = 16 * 1024;

impl Tail {
    pub(crate) fn spawn(stderr: Option<impl Read + Send + 'static>) -> Tail {
        Tail(stderr.map(|mut r| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * TAIL {
                        kept.drain(..kept.len() - TAIL);
                    }
                }
                let start = kept.len().saturating_sub(TAIL);
                String::from_utf8_lossy(&kept[start..]).trim().to_string()
            })
        }))
    }

    pub(crate) fn finish(self) -> String {
        self.0.and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

/// The tar in the agent's own container.
pub(crate) fn probe_local_tar() -> std::io::Result<TarFlavor> {
    let out = Command::new("tar")
        .arg("--version")
        .output()
        .map_err(|e| std::io::Error::other(format!("running tar --version: {e}")))?;
    TarFlavor::detect(
        out.status.code().unwrap_or(-1),
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
    .map_err(std::io::Error::other)
}

/// What `nkvm agent probe` prints: its protocol and version, then `tar --version`'s output.
pub fn probe_output() -> String {
    let tar = Command::new("tar")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    format!(
        "{PROBE_WORD} {} {}\n{tar}",
        wire::PROTOCOL,
        env!("CARGO_PKG_VERSION")
    )
}

/// Why the agent probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The image has no agent, or it did not answer.
    #[error(
        "the helper image is nkvm's own image, but `{AGENT_PATH} agent probe` did not answer (exit code {exit_code}: {output}); build the helper image from nkvm's Dockerfile, or set NKVM_HELPER_IMAGE to another image to use the generic tar path"
    )]
    NoAgent {
        /// The probe's exit code.
        exit_code: i32,
        /// What it printed.
        output: String,
    },
    /// The agent speaks another protocol version.
    #[error(
        "the nkvm agent in the helper image speaks protocol {found} (nkvm {version}), this nkvm speaks {}; use the same nkvm version for the helper image (NKVM_IMAGE / NKVM_HELPER_IMAGE)",
        wire::PROTOCOL
    )]
    Protocol {
        /// The agent's protocol.
        found: String,
        /// The agent's nkvm version.
        version: String,
    },
    /// The image has no usable tar.
    #[error(transparent)]
    Tar(#[from] TarProbeError),
}

/// Reads the probe's output: the agent speaks [`wire::PROTOCOL`], and its image's tar.
pub fn read_probe(exit_code: i32, stdout: &str, stderr: &str) -> Result<TarFlavor, ProbeError> {
    let mut lines = stdout.splitn(2, '\n');
    let first = lines.next().unwrap_or("");
    let mut words = first.split_whitespace();
    if exit_code != 0 || words.next() != Some(PROBE_WORD) {
        let output = format!("{} {}", stdout.trim(), stderr.trim());
        return Err(ProbeError::NoAgent {
            exit_code,
            output: output.trim().chars().take(300).collect(),
        });
    }
    let (found, version) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if found != wire::PROTOCOL.to_string() {
        return Err(ProbeError::Protocol {
            found: found.into(),
            version: version.into(),
        });
    }
    Ok(TarFlavor::detect(0, lines.next().unwrap_or(""), "")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_image_takes_the_agent_path_any_other_the_tar_path() {
        assert_eq!(DataPath::for_image("nkvm:1", "nkvm:1"), DataPath::Agent);
        assert_eq!(DataPath::for_image("debian:12", "nkvm:1"), DataPath::Tar);
    }

    #[test]
    fn the_probe_is_read_for_protocol_and_tar() {
        let ok = read_probe(0, &probe_output(), "").unwrap();
        assert!(matches!(ok, TarFlavor::Gnu { .. }), "{ok:?}");
        let missing = read_probe(127, "", "sh: nkvm: not found").unwrap_err();
        assert!(missing.to_string().contains("not found"), "{missing}");
        let old = read_probe(0, "nkvm-agent 0 0.0.1\ntar (GNU tar) 1.34\n", "").unwrap_err();
        assert!(matches!(old, ProbeError::Protocol { .. }), "{old}");
    }

    #[test]
    fn faults_parse_and_print_alike() {
        for f in ["omit-trailer", "wrong-sha256", "stall-after=100"] {
            assert_eq!(f.parse::<Fault>().unwrap().to_string(), f);
        }
        assert!(
            "cut"
                .parse::<Fault>()
                .unwrap_err()
                .contains("unknown agent fault")
        );
    }
}
