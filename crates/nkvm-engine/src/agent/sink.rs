//! The agent's restore, run inside the helper pod (`nkvm agent restore`): it reads exactly the
//! archive's compressed length from stdin, decompresses it, applies the archive safety rules
//! ([`release_safe_members`]) and feeds `tar -x`, holding the last MiB back until the whole
//! archive is hashed: a sha256 different from the manifest's kills tar before it sees the
//! end of the archive. The outcome goes to stdout as an agent stream holding only a trailer.

use super::wire::{FrameWriter, PROTOCOL, Trailer};
use super::{DEPTH, Fault, Outbox, Tail, probe_local_tar, write_out};
use crate::archive::decoder;
use crate::archive_safety::Contents;
use crate::archive_safety::release_safe_members;
use crate::verify::HashingReader;
use nkvm_domain::Compression;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::sync_channel;

/// What `nkvm agent restore` was asked to do.
#[derive(Debug, Clone)]
pub struct SinkArgs {
    /// The mounted volume.
    pub dir: String,
    /// The archive's compression.
    pub compression: Compression,
    /// The archive's compressed length (stdin holds exactly this many bytes).
    pub bytes: u64,
    /// Its sha256 from the manifest.
    pub sha256: String,
    /// Whether the helper runs as root (tar keeps owners).
    pub as_root: bool,
    /// Whether privileged extended attributes are restored.
    pub privileged: bool,
    /// Clear setuid/setgid bits of every member.
    pub strip_set_id: bool,
    /// A test-only fault (see [`Fault`]).
    pub fault: Option<Fault>,
}

/// Tar bytes sent into tar at a time; the last batch is held back.
const BATCH: usize = 1 << 20;

/// Writes into tar's stdin in batches, always holding the latest one back.
struct HoldLast<W: Write> {
    out: W,
    batch: Vec<u8>,
    held: Option<Vec<u8>>,
}

impl<W: Write> HoldLast<W> {
    fn push(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.batch.extend_from_slice(data);
        if self.batch.len() >= BATCH {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            if let Some(previous) = self.held.replace(batch) {
                self.out.write_all(&previous)?;
            }
        }
        Ok(())
    }

    /// Sends what was held, once the archive proved whole. A tar that stopped reading after
    /// its end-of-archive blocks may refuse the zero padding; it has all it needs.
    fn release(mut self) -> std::io::Result<()> {
        let mut last = self.held.take().unwrap_or_default();
        last.append(&mut self.batch);
        let end = last.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        self.out.write_all(&last[..end])?;
        self.out.flush()?;
        let _ = self.out.write_all(&last[end..]);
        let _ = self.out.flush();
        Ok(())
    }
}

/// Decompresses and checks the archive from `input` into `hold`, hashing all of it; returns
/// the check's result, the bytes read and their sha256.
fn read_archive(
    args: &SinkArgs,
    input: impl Read,
    hold: &mut HoldLast<Outbox>,
) -> (Result<Contents, String>, u64, String) {
    let mut hashing = HashingReader::new(input.take(args.bytes));
    let checked = decoder(&mut hashing, args.compression)
        .map_err(crate::archive_safety::UnsafeArchive::from)
        .and_then(|tar| release_safe_members(tar, args.strip_set_id, |b| hold.push(b)))
        .map_err(|e| format!("the archive was refused: {e}"));
    // The hash covers the whole archive, whatever the check left unread.
    let drained = std::io::copy(&mut hashing, &mut std::io::sink());
    let bytes = hashing.bytes_read();
    let mut sha256 = hashing.hex();
    if args.fault == Some(Fault::WrongSha256) {
        sha256 = "0".repeat(64);
    }
    let checked = match (checked, drained) {
        (Err(e), _) => Err(e),
        (_, Err(e)) => Err(format!("reading the archive from nkvm: {e}")),
        (Ok(c), Ok(_)) => Ok(c),
    };
    (checked, bytes, sha256)
}

/// Why the archive must not be finished, if it must not.
fn judge(
    args: &SinkArgs,
    checked: &Result<Contents, String>,
    bytes: u64,
    sha256: &str,
) -> Option<String> {
    match checked {
        Err(e) => Some(e.clone()),
        _ if bytes != args.bytes => Some(format!(
            "the archive ended after {bytes} of its {} bytes",
            args.bytes
        )),
        _ if sha256 != args.sha256 => Some(format!(
            "the archive's sha256 is {sha256}, the manifest says {}; tar was stopped before the archive's end",
            args.sha256
        )),
        _ => None,
    }
}

/// Runs the restore, reading the archive from `input` and writing the trailer to `out`.
/// Returns whether the archive was whole and tar exited 0.
pub fn restore(args: &SinkArgs, input: impl Read, out: impl Write) -> std::io::Result<bool> {
    let flavor = probe_local_tar()?;
    let argv = flavor.extract_command(&args.dir, args.as_root, args.privileged);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::other(format!("starting {}: {e}", argv[0])))?;
    let tail = Tail::spawn(child.stderr.take());
    let tar_in = child.stdin.take().expect("stdin was piped");
    let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
    // Its own thread writes into tar, so decompressing and checking go on while tar writes
    // files. Its error is tar's to explain: a tar that stopped early exits non-zero.
    let writer = std::thread::spawn(move || write_out(rx, tar_in));
    let mut hold = HoldLast {
        out: Outbox::new(tx),
        batch: Vec::with_capacity(BATCH),
        held: None,
    };
    let (checked, bytes, sha256) = read_archive(args, input, &mut hold);
    let error = judge(args, &checked, bytes, &sha256);
    if error.is_none() {
        // A tar that stopped taking input says why in its exit status.
        let _ = hold.release();
    } else {
        // tar must not see the end of an archive that is not the one planned.
        drop(hold);
        let _ = child.kill();
    }
    let _ = writer.join();
    let status = child.wait()?;
    let contents = checked.unwrap_or_default();
    let trailer = Trailer {
        protocol: PROTOCOL,
        tar_exit: status.code(),
        tar_stderr: tail.finish(),
        tar_bytes: contents.tar_bytes,
        tar_sha256: String::new(),
        bytes,
        sha256,
        entries: contents.members,
        devices: 0,
        tar_check: None,
        error,
        parts: Vec::new(),
        sealed: None,
    };
    let ok = trailer.error.is_none() && trailer.tar_exit == Some(0);
    FrameWriter::new(out)?.trailer(&trailer)?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::super::wire::FrameReader;
    use super::super::{source, wire::WireError};
    use super::*;
    use crate::archive::CompressionOptions;

    /// Backs `dir` up through the agent's source; returns the archive and the trailer.
    fn backed_up(dir: &std::path::Path) -> (Vec<u8>, Trailer) {
        let args = source::SourceArgs {
            dir: dir.to_string_lossy().into_owned(),
            compression: CompressionOptions {
                workers: 2,
                ..Default::default()
            },
            fault: None,
            direct: None,
        };
        let mut stream = Vec::new();
        assert_eq!(
            source::backup(&args, &mut stream).unwrap(),
            source::SourceEnd::Trailer(true)
        );
        let (mut reader, mut data) = (FrameReader::new(), Vec::new());
        reader
            .feed(&stream, &mut |d: &[u8]| {
                data.extend_from_slice(d);
                Ok::<(), WireError>(())
            })
            .unwrap();
        (data, reader.finish().unwrap())
    }

    fn restored(into: &std::path::Path, archive: &[u8], sha256: &str) -> (bool, Trailer) {
        let args = SinkArgs {
            dir: into.to_string_lossy().into_owned(),
            compression: Compression::Zstd,
            bytes: archive.len() as u64,
            sha256: sha256.into(),
            as_root: false,
            privileged: false,
            strip_set_id: true,
            fault: None,
        };
        let mut out = Vec::new();
        let ok = restore(&args, archive, &mut out).unwrap();
        let mut reader = FrameReader::new();
        reader
            .feed(&out, &mut |_: &[u8]| Ok::<(), WireError>(()))
            .unwrap();
        (ok, reader.finish().unwrap())
    }

    fn tree_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    tree_bytes(&e.path())
                } else {
                    meta.len()
                }
            })
            .sum()
    }

    #[test]
    fn the_agents_archive_round_trips_and_a_wrong_sha256_stops_tar_before_the_end() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/text"), "line\n".repeat(400_000)).unwrap();
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        std::fs::write(src.path().join("big"), &big).unwrap();
        let (archive, trailer) = backed_up(src.path());
        assert_eq!(
            (trailer.tar_exit, trailer.tar_check.clone()),
            (Some(0), None)
        );
        assert_eq!(trailer.bytes, archive.len() as u64);
        assert!(
            trailer.tar_bytes > 5_000_000 && trailer.entries >= 4,
            "{trailer:?}"
        );

        let good = tempfile::tempdir().unwrap();
        let (ok, t) = restored(good.path(), &archive, &trailer.sha256);
        assert!(ok, "{t:?}");
        assert_eq!(t.tar_bytes, trailer.tar_bytes);
        assert_eq!(std::fs::read(good.path().join("big")).unwrap(), big);

        let bad = tempfile::tempdir().unwrap();
        let (ok, t) = restored(bad.path(), &archive, &"0".repeat(64));
        assert!(!ok);
        assert!(t.error.unwrap().contains("tar was stopped"));
        assert!(
            tree_bytes(bad.path()) < tree_bytes(src.path()),
            "tar never saw the archive's last MiB"
        );
    }
}
