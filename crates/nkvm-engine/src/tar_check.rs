//! Following a tar stream as it passes, without buffering it: header checksums are verified,
//! entry data is skipped by size, and the end-of-archive (two zero blocks where a header is
//! due) is noticed. A stream that stops anywhere else is incomplete, whatever the transport
//! said: this is the guard against silently truncated archives.

/// Tar's block size.
const BLOCK: usize = 512;

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A header block is due; `zeros` zero blocks have just been seen.
    Header { zeros: u8 },
    /// `blocks` data blocks of the current entry remain.
    Data { blocks: u64 },
    /// The end-of-archive marker was seen; only zero padding may follow.
    Ended,
}

/// What went wrong in a tar stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A header's checksum does not match its bytes.
    #[error("tar header at byte {offset} has a bad checksum: the stream is corrupt")]
    BadChecksum {
        /// Offset of the header.
        offset: u64,
    },
    /// A header's size field is not a number.
    #[error("tar header at byte {offset} has an unreadable size field")]
    BadSize {
        /// Offset of the header.
        offset: u64,
    },
    /// Non-zero bytes after the end-of-archive marker.
    #[error("data after the tar end-of-archive marker at byte {offset}")]
    TrailingData {
        /// Offset of the data.
        offset: u64,
    },
    /// The stream ended before the end-of-archive marker.
    #[error(
        "the tar stream ended at byte {offset} without its end-of-archive marker: the archive is truncated"
    )]
    Truncated {
        /// Where it ended.
        offset: u64,
    },
}

/// A tar stream follower; feed it every byte in order, then call [`TarStructureCheck::finish`].
#[derive(Debug, Clone)]
pub struct TarStructureCheck {
    state: State,
    partial: Vec<u8>,
    offset: u64,
    entries: u64,
    devices: u64,
}

impl Default for TarStructureCheck {
    fn default() -> Self {
        TarStructureCheck {
            state: State::Header { zeros: 0 },
            partial: Vec::with_capacity(BLOCK),
            offset: 0,
            entries: 0,
            devices: 0,
        }
    }
}

fn parse_size(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for sizes over 8 GiB: big-endian binary, top bit as the marker.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn checksum_ok(header: &[u8]) -> bool {
    let stored = parse_size(&header[148..156]);
    let computed: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    stored == Some(computed)
}

impl TarStructureCheck {
    /// A follower at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries (headers, including pax and long-name headers) seen so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Block and character device nodes seen so far (a restore refuses them).
    pub fn devices(&self) -> u64 {
        self.devices
    }

    /// Whether the end-of-archive marker has been seen.
    pub fn ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Follows the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), TarError> {
        while !data.is_empty() {
            // Whole data blocks can be skipped without copying.
            if let State::Data { blocks } = self.state
                && self.partial.is_empty()
            {
                let skip = (blocks as usize)
                    .saturating_mul(BLOCK)
                    .min(data.len() / BLOCK * BLOCK);
                if skip > 0 {
                    self.offset += skip as u64;
                    let left = blocks - (skip / BLOCK) as u64;
                    self.state = if left == 0 {
                        State::Header { zeros: 0 }
                    } else {
                        State::Data { blocks: left }
                    };
                    data = &data[skip..];
                    continue;
                }
            }
            let take = (BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == BLOCK {
                let block = std::mem::replace(&mut self.partial, Vec::with_capacity(BLOCK));
                self.block(&block)?;
                self.offset += BLOCK as u64;
            }
        }
        Ok(())
    }

    fn block(&mut self, block: &[u8]) -> Result<(), TarError> {
        let zero = block.iter().all(|b| *b == 0);
        self.state = match self.state {
            State::Ended if zero => State::Ended,
            State::Ended => {
                return Err(TarError::TrailingData {
                    offset: self.offset,
                });
            }
            State::Data { blocks } => {
                if blocks <= 1 {
                    State::Header { zeros: 0 }
                } else {
                    State::Data { blocks: blocks - 1 }
                }
            }
            State::Header { zeros } if zero => {
                if zeros == 1 {
                    State::Ended
                } else {
                    State::Header { zeros: 1 }
                }
            }
            State::Header { .. } => {
                if !checksum_ok(block) {
                    return Err(TarError::BadChecksum {
                        offset: self.offset,
                    });
                }
                let size = parse_size(&block[124..136]).ok_or(TarError::BadSize {
                    offset: self.offset,
                })?;
                self.entries += 1;
                if matches!(block[156], b'3' | b'4') {
                    self.devices += 1;
                }
                // Hard links, symlinks, devices and directories carry no data whatever
                // their size field says.
                let has_data = !matches!(block[156], b'1' | b'2' | b'3' | b'4' | b'5' | b'6');
                let blocks = if has_data {
                    size.div_ceil(BLOCK as u64)
                } else {
                    0
                };
                if blocks == 0 {
                    State::Header { zeros: 0 }
                } else {
                    State::Data { blocks }
                }
            }
        };
        Ok(())
    }

    /// Checks that the stream ended properly.
    pub fn finish(&self) -> Result<(), TarError> {
        if self.ended() && self.partial.iter().all(|b| *b == 0) {
            Ok(())
        } else {
            Err(TarError::Truncated {
                offset: self.offset + self.partial.len() as u64,
            })
        }
    }
}

impl nkvm_domain::UserError for TarError {
    /// A stream that is not a whole tar means the command that made it failed.
    fn kind(&self) -> nkvm_domain::FailureKind {
        nkvm_domain::FailureKind::CommandFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn real_tar(files: &[(&str, usize)]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in files {
            let data: Vec<u8> = (0..*size).map(|i| (i * 7 + 3) as u8).collect();
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        std::os::unix::fs::symlink("a", dir.path().join("link")).unwrap();
        let out = Command::new("tar")
            .args(["--create", "--file=-", "--numeric-owner", "--sparse", "-C"])
            .arg(dir.path())
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn a_complete_gnu_tar_stream_passes_in_any_chunking() {
        let long = format!("dir/{}", "n".repeat(150));
        let archive = real_tar(&[
            ("a", 0),
            ("b", 511),
            ("c", 512),
            ("d", 70_000),
            (long.as_str(), 3),
        ]);
        for chunk in [1, 7, 512, 4096, 1 << 20] {
            let mut t = TarStructureCheck::new();
            for part in archive.chunks(chunk) {
                t.feed(part).unwrap();
            }
            t.finish().unwrap();
            assert!(t.entries() >= 7, "entries {}", t.entries());
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let archive = real_tar(&[("a", 1000), ("b", 3000)]);
        // Everything before the two end blocks is incomplete (cutting in the padding after
        // them is not a loss).
        let end_marker = archive
            .windows(1024)
            .position(|w| w.iter().all(|b| *b == 0))
            .unwrap();
        for cut in (0..end_marker + 1024).step_by(97) {
            let mut t = TarStructureCheck::new();
            let fed = t.feed(&archive[..cut]);
            assert!(
                fed.is_err() || t.finish().is_err(),
                "a stream cut at {cut} passed"
            );
        }
    }

    #[test]
    fn corruption_is_caught() {
        let mut archive = real_tar(&[("a", 10)]);
        archive[100] ^= 0xff;
        let mut t = TarStructureCheck::new();
        assert!(matches!(
            t.feed(&archive),
            Err(TarError::BadChecksum { offset: 0 })
        ));
    }

    #[test]
    fn base256_sizes_parse() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 0x02;
        field[10] = 0x01;
        assert_eq!(parse_size(&field), Some(258));
        assert_eq!(parse_size(b"00000001750\0"), Some(1000));
    }

    #[test]
    fn device_nodes_are_counted() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind) in [
            ("null", tar::EntryType::Char),
            ("sda", tar::EntryType::Block),
            ("f", tar::EntryType::Regular),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut t = TarStructureCheck::new();
        t.feed(&tar).unwrap();
        t.finish().unwrap();
        assert_eq!((t.entries(), t.devices()), (3, 2));
    }
}
