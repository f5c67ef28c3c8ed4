//! Rules that keep an archive's members inside the directory it is extracted into, checked
//! before a restore sends a byte to the cluster and by `verify`: no absolute paths, no `..`,
//! no member reached through a symlink the archive itself created, no hard link pointing
//! outside, and no device nodes. Archives nkvm makes from a real volume always pass (tar never
//! stores a member below a symlink); an archive that fails was made or changed by someone else.
//!
//! The member list comes from the `tar` crate (it resolves pax and GNU long names); the
//! stream's structure (checksums, end-of-archive, truncation) is followed at the same time
//! by [`TarStructureCheck`], over the same bytes.
//!
//! A restore applies the rules to the stream it sends, not only to the archive it planned
//! with: [`release_safe_members`] hands bytes on only once every member header among them has
//! passed, so a file swapped in the store after planning cannot slip a hostile member in.

use crate::tar_check::{TarError, TarStructureCheck};
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Read;

/// Why an archive is refused.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeArchive {
    /// A member would land outside the target directory.
    #[error("member {member:?} {why}; nkvm refuses archives that could write outside the volume")]
    Escapes {
        /// The member's path, lossily printed.
        member: String,
        /// Which rule it breaks.
        why: String,
    },
    /// A device node.
    #[error(
        "member {member:?} is a device node; nkvm does not restore devices into volumes (extract it by hand if you really need it)"
    )]
    Device {
        /// The member's path.
        member: String,
    },
    /// The tar structure is broken.
    #[error(transparent)]
    Structure(#[from] TarError),
    /// Reading or decoding failed.
    #[error("reading the archive: {0}")]
    Read(#[from] std::io::Error),
}

/// What a checked archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Contents {
    /// Tar bytes (decompressed).
    pub tar_bytes: u64,
    /// Members, as the tar crate counts them (pax and long-name headers excluded).
    pub members: u64,
}

/// Bytes read but not yet known to be safe, and where they go once they are.
struct Gate<F> {
    pending: Vec<u8>,
    sink: F,
}

impl<F: FnMut(&[u8]) -> std::io::Result<()>> Gate<F> {
    /// Clears the setuid and setgid bits of the member header just read (`header`, found
    /// among the bytes held: extension blocks may follow it), fixing its checksum.
    fn strip_set_id(&mut self, header: &[u8; 512]) -> std::io::Result<()> {
        let Some(start) = self.pending.windows(512).rposition(|w| w == header) else {
            return Err(std::io::Error::other(
                "a member header was not where the archive reader found it",
            ));
        };
        let block = &mut self.pending[start..start + 512];
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(block);
        let mode = header.mode()?;
        if mode & 0o6000 != 0 {
            header.set_mode(mode & !0o6000);
            header.set_cksum();
            block.copy_from_slice(header.as_bytes());
        }
        Ok(())
    }

    /// Hands every byte held so far to the sink.
    fn release(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            (self.sink)(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

/// Feeds every byte read through it to a [`TarStructureCheck`], and (with a gate) holds it
/// there until the caller releases it.
struct FollowingReader<'g, R, F> {
    inner: R,
    check: TarStructureCheck,
    bytes: u64,
    broken: Option<TarError>,
    gate: Option<&'g RefCell<Gate<F>>>,
}

impl<R: Read, F> Read for FollowingReader<'_, R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.broken.is_none()
            && let Err(e) = self.check.feed(&buf[..n])
        {
            self.broken = Some(e);
        }
        if let Some(gate) = self.gate {
            gate.borrow_mut().pending.extend_from_slice(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Splits a member path into its components, dropping `.` and empty ones; fails on absolute
/// paths and `..`.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    if path.first() == Some(&b'/') {
        return Err("is an absolute path".into());
    }
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("contains a `..` component".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The member-by-member rules, independent of how the archive is read.
#[derive(Debug, Default)]
pub struct MemberRules {
    symlinks: HashSet<Vec<u8>>,
}

impl MemberRules {
    /// Rules at the start of an archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn below_symlink(&self, parts: &[&[u8]]) -> Option<String> {
        (1..parts.len()).find_map(|n| {
            let prefix = parts[..n].join(&b'/');
            self.symlinks
                .contains(&prefix)
                .then(|| String::from_utf8_lossy(&prefix).into_owned())
        })
    }

    /// Checks one member: its path, its kind, and (for links) its target.
    pub fn check(
        &mut self,
        path: &[u8],
        kind: tar::EntryType,
        link: Option<&[u8]>,
    ) -> Result<(), UnsafeArchive> {
        let shown = || String::from_utf8_lossy(path).into_owned();
        let escapes = |why: String| UnsafeArchive::Escapes {
            member: shown(),
            why,
        };
        let parts = components(path).map_err(escapes)?;
        if let Some(link) = self.below_symlink(&parts) {
            return Err(escapes(format!(
                "lies below {link:?}, a symlink the archive created"
            )));
        }
        if kind.is_block_special() || kind.is_character_special() {
            return Err(UnsafeArchive::Device { member: shown() });
        }
        let key = parts.join(&b'/');
        if kind.is_hard_link() {
            let target = link.unwrap_or_default();
            let target_parts = components(target)
                .map_err(|why| escapes(format!("is a hard link whose target {why}")))?;
            if let Some(via) = self.below_symlink(&target_parts) {
                return Err(escapes(format!(
                    "is a hard link to a path below the symlink {via:?}"
                )));
            }
        }
        // Once a symlink, always one: whether a later directory of the same name replaces the
        // link or is written through it depends on the tar implementation.
        if kind.is_symlink() {
            self.symlinks.insert(key);
        }
        Ok(())
    }
}

/// Reads a decompressed tar stream to its end, checking its structure and every member.
pub fn check_member_safety(reader: impl Read) -> Result<Contents, UnsafeArchive> {
    follow::<_, fn(&[u8]) -> std::io::Result<()>>(reader, None, false)
}

/// Like [`check_member_safety`], and hands the stream's bytes to `sink` as it goes, but never
/// a member header before it passed the rules: a hostile member fails the check before any
/// of its bytes reach the sink. A member's data is handed on as it is read, so memory stays
/// bounded by the read size, not by the member's size. With `strip_set_id`, every member's
/// setuid and setgid bits are cleared on the way.
pub fn release_safe_members(
    reader: impl Read,
    strip_set_id: bool,
    sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Contents, UnsafeArchive> {
    let gate = RefCell::new(Gate {
        pending: Vec::new(),
        sink,
    });
    follow(reader, Some(&gate), strip_set_id)
}

fn follow<R: Read, F: FnMut(&[u8]) -> std::io::Result<()>>(
    reader: R,
    gate: Option<&RefCell<Gate<F>>>,
    strip_set_id: bool,
) -> Result<Contents, UnsafeArchive> {
    let release = || gate.map_or(Ok(()), |g| g.borrow_mut().release());
    let mut following = FollowingReader {
        inner: reader,
        check: TarStructureCheck::new(),
        bytes: 0,
        broken: None,
        gate,
    };
    let mut rules = MemberRules::new();
    let mut members = 0u64;
    {
        let mut archive = tar::Archive::new(&mut following);
        let mut buf = vec![0u8; 1 << 16];
        for entry in archive.entries()? {
            let mut entry = entry?;
            let kind = entry.header().entry_type();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            rules.check(&entry.path_bytes(), kind, link.as_deref())?;
            members += 1;
            if let (Some(g), true) = (gate, strip_set_id) {
                g.borrow_mut().strip_set_id(entry.header().as_bytes())?;
            }
            release()?;
            // The member's data, passed on as it is read (its header has passed).
            while entry.read(&mut buf)? > 0 {
                release()?;
            }
        }
    }
    // The tar crate stops at the first zero block; the rest (the second zero block and the
    // padding) still has to be there and be zeros.
    std::io::copy(&mut following, &mut std::io::sink())?;
    if let Some(e) = following.broken.take() {
        return Err(e.into());
    }
    following.check.finish()?;
    release()?;
    Ok(Contents {
        tar_bytes: following.bytes,
        members,
    })
}

impl nkvm_domain::UserError for UnsafeArchive {
    /// A hostile or broken archive is bad content, as `verify` counts a damaged one; a read
    /// error is the store's.
    fn kind(&self) -> nkvm_domain::FailureKind {
        match self {
            UnsafeArchive::Read(_) => nkvm_domain::FailureKind::StorageUnavailable,
            _ => nkvm_domain::FailureKind::CommandFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::{Builder, EntryType, Header};

    fn header(path: &str, kind: EntryType, size: u64) -> Header {
        let mut h = Header::new_gnu();
        // Raw names: `set_path` itself refuses `..`, and hostile archives do not ask.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    fn archive(members: &[(&str, EntryType, Option<&str>)]) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        for (path, kind, link) in members {
            let mut h = header(path, *kind, if *kind == EntryType::Regular { 3 } else { 0 });
            if let Some(l) = link {
                let name = &mut h.as_old_mut().linkname;
                name[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            let data: &[u8] = if *kind == EntryType::Regular {
                b"abc"
            } else {
                b""
            };
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn refused(members: &[(&str, EntryType, Option<&str>)]) -> String {
        check_member_safety(&archive(members)[..])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_ordinary_tree_passes_with_its_links() {
        let tar = archive(&[
            ("./", EntryType::Directory, None),
            ("./etc/", EntryType::Directory, None),
            ("./etc/conf", EntryType::Regular, None),
            ("./current", EntryType::Symlink, Some("/srv/releases/v2")),
            ("./up", EntryType::Symlink, Some("../../elsewhere")),
            ("./etc/again", EntryType::Link, Some("./etc/conf")),
            ("./fifo", EntryType::Fifo, None),
        ]);
        let c = check_member_safety(&tar[..]).unwrap();
        assert_eq!((c.members, c.tar_bytes), (7, tar.len() as u64));
    }

    #[test]
    fn absolute_paths_and_dot_dot_are_refused() {
        assert!(refused(&[("/etc/passwd", EntryType::Regular, None)]).contains("absolute"));
        assert!(refused(&[("./a/../../x", EntryType::Regular, None)]).contains("`..`"));
    }

    #[test]
    fn a_member_below_an_archived_symlink_is_refused() {
        let e = refused(&[
            ("./escape", EntryType::Symlink, Some("/etc")),
            ("./escape/cron.d/evil", EntryType::Regular, None),
        ]);
        assert!(e.contains("below \"escape\""), "{e}");
    }

    #[test]
    fn hard_links_out_of_the_tree_and_devices_are_refused() {
        assert!(refused(&[("./h", EntryType::Link, Some("/etc/shadow"))]).contains("hard link"));
        assert!(
            refused(&[
                ("./s", EntryType::Symlink, Some("/")),
                ("./h", EntryType::Link, Some("s/etc/shadow")),
            ])
            .contains("below the symlink")
        );
        assert!(refused(&[("./sda", EntryType::Block, None)]).contains("device"));
    }

    #[test]
    fn a_directory_named_like_an_earlier_symlink_does_not_reopen_the_path() {
        let e = refused(&[
            ("./d", EntryType::Symlink, Some("/etc")),
            ("./d", EntryType::Directory, None),
            ("./d/f", EntryType::Regular, None),
        ]);
        assert!(e.contains("below \"d\""), "{e}");
    }

    #[test]
    fn a_truncated_stream_is_a_structure_error() {
        let tar = archive(&[("./f", EntryType::Regular, None)]);
        let e = check_member_safety(&tar[..700]).unwrap_err();
        assert!(
            matches!(e, UnsafeArchive::Structure(_) | UnsafeArchive::Read(_)),
            "{e}"
        );
    }

    #[test]
    fn a_hostile_member_is_refused_before_any_of_its_bytes_are_released() {
        let tar = archive(&[
            ("ok.txt", EntryType::Regular, None),
            ("../evil", EntryType::Regular, None),
        ]);
        let mut released = Vec::new();
        let e = release_safe_members(&tar[..], false, |b| {
            released.extend_from_slice(b);
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("`..`"), "{e}");
        // The first member (its header and data) went out; the hostile header did not, nor
        // the padding read with it.
        assert_eq!(released, tar[..515]);
    }

    #[test]
    fn a_safe_archive_is_released_whole() {
        let tar = archive(&[
            ("dir", EntryType::Directory, None),
            ("dir/a", EntryType::Regular, None),
            ("link", EntryType::Symlink, Some("dir/a")),
        ]);
        let mut released = Vec::new();
        let contents = release_safe_members(&tar[..], false, |b| {
            released.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(released, tar);
        assert_eq!(
            (contents.members, contents.tar_bytes),
            (3, tar.len() as u64)
        );
    }

    #[test]
    fn set_id_bits_are_cleared_on_the_way_when_asked() {
        let mut b = Builder::new(Vec::new());
        let mut h = header("suid", EntryType::Regular, 3);
        h.set_mode(0o6755);
        h.set_cksum();
        b.append(&h, &b"abc"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut released = Vec::new();
        release_safe_members(&tar[..], true, |b| {
            released.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        let mut archive = tar::Archive::new(&released[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().mode().unwrap(), 0o755);
        assert_eq!(released.len(), tar.len());
    }
}
