//! Which `tar` command lines to run in a helper pod: the flavor is told from the output of
//! `tar --version` (GNU, BusyBox or something else), and each flavor gets the archive and
//! extract commands that keep as much as it can. Pure: the exec happens elsewhere.
//!
//! What each flavor keeps:
//! - GNU tar ≥ 1.27: numeric owners, modes, times (sub-second, POSIX/pax format), symlinks,
//!   hard links, sparse files, POSIX ACLs and extended attributes (all namespaces when
//!   restoring as root, except `security.selinux`, which belongs to the new host).
//! - BusyBox tar: owners, modes, whole-second times, symlinks, hard links. It cannot keep
//!   ACLs, extended attributes or sparseness (sparse files are stored and restored full),
//!   and it cannot read GNU's pax sparse entries: restore a GNU-made archive with GNU tar.
//! - Other tars (bsdtar): the portable flags only, as BusyBox.

use std::fmt;

/// The probe to run in the helper: its output goes to [`TarFlavor::detect`].
pub const PROBE: [&str; 2] = ["tar", "--version"];

/// Oldest GNU tar with `--acls` and `--xattrs`.
const GNU_XATTRS_SINCE: (u32, u32) = (1, 27);

/// A `tar` implementation found in a helper image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarFlavor {
    /// GNU tar, with its version.
    Gnu {
        /// Major version.
        major: u32,
        /// Minor version.
        minor: u32,
    },
    /// BusyBox's tar applet.
    Busybox,
    /// Another tar (bsdtar, ...): only portable flags are used. Holds the first output line.
    Other(String),
}

/// Why no archive command can be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarProbeError {
    /// The image has no `tar` (or `sh` could not find it).
    #[error(
        "the helper image has no tar (`tar --version` exited {exit_code}: {output}); use an image with GNU tar or BusyBox (NKVM_HELPER_IMAGE)"
    )]
    NotFound {
        /// Exit code of the probe.
        exit_code: i32,
        /// What it printed.
        output: String,
    },
}

impl TarFlavor {
    /// Tells the flavor from the probe's exit code and output. BusyBox rejects `--version`
    /// (exit 1, its banner on stderr), so output is read whatever the exit code.
    pub fn detect(exit_code: i32, stdout: &str, stderr: &str) -> Result<TarFlavor, TarProbeError> {
        if let Some(version) = stdout
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("tar (GNU tar) "))
        {
            let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
            if let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) {
                return Ok(TarFlavor::Gnu { major, minor });
            }
        }
        if stdout.contains("BusyBox") || stderr.contains("BusyBox") {
            return Ok(TarFlavor::Busybox);
        }
        // 126/127: the shell could not run it; anything else without output is no tar either.
        let first = stdout.lines().next().unwrap_or("").trim();
        if exit_code == 0 && !first.is_empty() {
            return Ok(TarFlavor::Other(first.to_string()));
        }
        Err(TarProbeError::NotFound {
            exit_code,
            output: format!("{} {}", stdout.trim(), stderr.trim())
                .trim()
                .chars()
                .take(300)
                .collect(),
        })
    }

    /// Whether this is GNU tar new enough for ACLs and extended attributes.
    fn gnu_with_xattrs(&self) -> Option<bool> {
        match self {
            TarFlavor::Gnu { major, minor } => Some((*major, *minor) >= GNU_XATTRS_SINCE),
            _ => None,
        }
    }

    /// The command writing an archive of `dir` (its contents, as `./...`) to stdout.
    pub fn archive_command(&self, dir: &str) -> Vec<String> {
        let mut a = match self.gnu_with_xattrs() {
            Some(xattrs) => {
                let mut a = strings(&[
                    "tar",
                    "--create",
                    "--file=-",
                    // pax: exact times, any size, uid and name length; the format GNU picks
                    // anyway once extended attributes are stored, named so it never varies.
                    "--format=posix",
                    "--numeric-owner",
                    "--sparse",
                ]);
                if xattrs {
                    a.extend(strings(&["--acls", "--xattrs"]));
                }
                a.push(format!("--directory={dir}"));
                a
            }
            None => strings(&["tar", "-c", "-f", "-", "-C", dir]),
        };
        a.push(".".into());
        a
    }

    /// The command extracting an archive from stdin into `dir`. `as_root` says whether the
    /// helper runs as root (see [`crate::helper::SecurityProfile::is_root`]): only root
    /// can give files their archived owners and privileged extended attributes; `privileged`
    /// whether it should set the privileged ones (file capabilities, `trusted.*`) at all.
    pub fn extract_command(&self, dir: &str, as_root: bool, privileged: bool) -> Vec<String> {
        let Some(xattrs) = self.gnu_with_xattrs() else {
            // BusyBox restores owners when root and modes always; there is nothing to add.
            return strings(&["tar", "-x", "-f", "-", "-C", dir]);
        };
        let mut a = strings(&["tar", "--extract", "--file=-", "--numeric-owner"]);
        a.push(format!("--directory={dir}"));
        // Modes exactly as archived (no umask), and directory times and modes set after
        // their contents, so read-only directories can still be filled.
        a.extend(strings(&[
            "--same-permissions",
            "--delay-directory-restore",
        ]));
        if as_root {
            a.push("--same-owner".into());
        } else {
            // A non-root helper cannot chown, nor change the mount point it does not own.
            a.extend(strings(&["--no-same-owner", "--no-overwrite-dir"]));
        }
        if xattrs {
            a.extend(strings(&["--acls", "--xattrs"]));
            if as_root && privileged {
                // GNU restores only user.* by default; root may set the rest (file
                // capabilities, trusted.*), but SELinux labels belong to the new host.
                a.extend(strings(&[
                    "--xattrs-include=*",
                    "--xattrs-exclude=security.selinux",
                ]));
            }
        }
        a
    }

    /// The extract command for servers without stdin half-close (exec protocol v4): the
    /// archive's exact length is read with `head -c`, so the end of the archive does not
    /// depend on stdin's end-of-file, which v4 cannot send.
    pub fn extract_exact_length_command(
        &self,
        dir: &str,
        as_root: bool,
        privileged: bool,
        bytes: u64,
    ) -> Vec<String> {
        let tar = self
            .extract_command(dir, as_root, privileged)
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        vec![
            "sh".into(),
            "-c".into(),
            // pipefail is not in every sh; tar's status is what matters, and a short read
            // shows up as tar's "unexpected EOF".
            format!("head -c {bytes} | {tar}"),
        ]
    }

    /// How the archive command's exit code reads.
    pub fn archive_exit(&self, exit_code: i32) -> ArchiveExit {
        match (self, exit_code) {
            (_, 0) => ArchiveExit::Complete,
            // GNU tar: 1 = "file changed as we read it" (or shrank); the archive is whole, a
            // file in it may be inconsistent.
            (TarFlavor::Gnu { .. }, 1) => ArchiveExit::ChangedWhileReading,
            _ => ArchiveExit::Failed,
        }
    }
}

impl fmt::Display for TarFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TarFlavor::Gnu { major, minor } => write!(f, "GNU tar {major}.{minor}"),
            TarFlavor::Busybox => f.write_str("BusyBox tar"),
            TarFlavor::Other(line) => f.write_str(line),
        }
    }
}

/// What the archive command's exit code means for the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveExit {
    /// Every file was read.
    Complete,
    /// GNU tar finished but some file changed while it was read (a live volume).
    ChangedWhileReading,
    /// tar failed; the archive is not usable.
    Failed,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Single-quotes `s` for `sh` unless it is plainly safe.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_=./:,+@".contains(&c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl nkvm_domain::UserError for TarProbeError {
    /// The helper image has no usable tar: its command failed.
    fn kind(&self) -> nkvm_domain::FailureKind {
        nkvm_domain::FailureKind::CommandFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GNU_134: &str = "tar (GNU tar) 1.34\nCopyright (C) 2021 Free Software Foundation, Inc.\n";
    const BUSYBOX_STDERR: &str = "tar: unrecognized option '--version'\nBusyBox v1.36.1 (2023-05-18 22:34:17 UTC) multi-call binary.\n\nUsage: tar c|x|t [-ZzJjahmvokO] ...";

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn gnu_tar_is_told_by_its_version_line() {
        assert_eq!(
            TarFlavor::detect(0, GNU_134, ""),
            Ok(TarFlavor::Gnu {
                major: 1,
                minor: 34
            })
        );
        assert_eq!(
            TarFlavor::detect(0, "tar (GNU tar) 1.35.90\n", ""),
            Ok(TarFlavor::Gnu {
                major: 1,
                minor: 35
            })
        );
    }

    #[test]
    fn busybox_is_told_by_its_banner_even_though_it_rejects_the_flag() {
        assert_eq!(
            TarFlavor::detect(1, "", BUSYBOX_STDERR),
            Ok(TarFlavor::Busybox)
        );
    }

    #[test]
    fn other_tars_get_portable_flags_and_a_missing_tar_is_an_error() {
        let bsd = TarFlavor::detect(0, "bsdtar 3.7.2 - libarchive 3.7.2 zlib/1.2.13\n", "")
            .expect("a tar");
        assert_eq!(
            bsd,
            TarFlavor::Other("bsdtar 3.7.2 - libarchive 3.7.2 zlib/1.2.13".into())
        );
        assert_eq!(
            bsd.archive_command("/data"),
            argv(&["tar", "-c", "-f", "-", "-C", "/data", "."])
        );
        let missing = TarFlavor::detect(127, "", "sh: tar: not found\n").unwrap_err();
        assert!(missing.to_string().contains("has no tar"), "{missing}");
        assert!(
            missing.to_string().contains("sh: tar: not found"),
            "{missing}"
        );
    }

    #[test]
    fn gnu_archives_keep_owners_sparseness_acls_and_xattrs() {
        let gnu = TarFlavor::Gnu {
            major: 1,
            minor: 34,
        };
        assert_eq!(
            gnu.archive_command("/data"),
            argv(&[
                "tar",
                "--create",
                "--file=-",
                "--format=posix",
                "--numeric-owner",
                "--sparse",
                "--acls",
                "--xattrs",
                "--directory=/data",
                ".",
            ])
        );
        let old = TarFlavor::Gnu {
            major: 1,
            minor: 26,
        };
        assert!(
            !old.archive_command("/data")
                .contains(&"--xattrs".to_string())
        );
    }

    #[test]
    fn gnu_extracts_keep_owners_as_root_and_leave_the_mount_point_alone_otherwise() {
        let gnu = TarFlavor::Gnu {
            major: 1,
            minor: 34,
        };
        assert_eq!(
            gnu.extract_command("/data", true, true),
            argv(&[
                "tar",
                "--extract",
                "--file=-",
                "--numeric-owner",
                "--directory=/data",
                "--same-permissions",
                "--delay-directory-restore",
                "--same-owner",
                "--acls",
                "--xattrs",
                "--xattrs-include=*",
                "--xattrs-exclude=security.selinux",
            ])
        );
        assert_eq!(
            gnu.extract_command("/data", false, true),
            argv(&[
                "tar",
                "--extract",
                "--file=-",
                "--numeric-owner",
                "--directory=/data",
                "--same-permissions",
                "--delay-directory-restore",
                "--no-same-owner",
                "--no-overwrite-dir",
                "--acls",
                "--xattrs",
            ])
        );
    }

    #[test]
    fn an_unprivileged_restore_as_root_keeps_owners_but_only_user_xattrs() {
        let gnu = TarFlavor::Gnu {
            major: 1,
            minor: 34,
        };
        let cmd = gnu.extract_command("/data", true, false);
        assert!(cmd.contains(&"--same-owner".to_string()), "{cmd:?}");
        assert!(cmd.contains(&"--xattrs".to_string()), "{cmd:?}");
        assert!(
            !cmd.iter().any(|a| a.starts_with("--xattrs-include")),
            "{cmd:?}"
        );
    }

    #[test]
    fn busybox_gets_the_short_portable_commands() {
        assert_eq!(
            TarFlavor::Busybox.archive_command("/data"),
            argv(&["tar", "-c", "-f", "-", "-C", "/data", "."])
        );
        assert_eq!(
            TarFlavor::Busybox.extract_command("/data", true, true),
            argv(&["tar", "-x", "-f", "-", "-C", "/data"])
        );
    }

    #[test]
    fn the_v4_fallback_reads_exactly_the_archive_length() {
        let cmd = TarFlavor::Busybox.extract_exact_length_command("/data", true, true, 10240);
        assert_eq!(
            cmd,
            argv(&["sh", "-c", "head -c 10240 | tar -x -f - -C /data"])
        );
        let gnu = TarFlavor::Gnu {
            major: 1,
            minor: 34,
        }
        .extract_exact_length_command("/data", true, true, 7);
        assert!(gnu[2].contains("'--xattrs-include=*'"), "{}", gnu[2]);
    }

    #[test]
    fn gnu_exit_one_means_a_file_changed_while_read() {
        let gnu = TarFlavor::Gnu {
            major: 1,
            minor: 34,
        };
        assert_eq!(gnu.archive_exit(0), ArchiveExit::Complete);
        assert_eq!(gnu.archive_exit(1), ArchiveExit::ChangedWhileReading);
        assert_eq!(gnu.archive_exit(2), ArchiveExit::Failed);
        assert_eq!(TarFlavor::Busybox.archive_exit(1), ArchiveExit::Failed);
    }
}
