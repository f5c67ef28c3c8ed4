//! Running container processes: the bubblewrap command line that gives each container (and
//! each exec) a private mount namespace with the pod's volumes bound at their mount paths.
//!
//! The host's root is not visible: the sandbox root is a tmpfs holding read-only binds of
//! `/usr` and `/etc`, a private `/tmp` per container (kept across execs, as a container's
//! writable layer is), `/proc`, `/dev`, and the volumes.
//!
//! Containers of images the sandbox runs in podman carry a [`super::podman::PodmanContainer`]
//! in their spec; [`command`] and [`exec_command`] hand those to podman instead.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The search path inside containers, as container images usually set it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One bind mount into the container.
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    /// Host directory or file.
    pub source: PathBuf,
    /// Path inside the container.
    pub dest: String,
    /// Bound read-only (writes fail with EROFS).
    pub read_only: bool,
}

/// Everything needed to start one process in a container's filesystem view.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment (besides PATH/HOME/HOSTNAME defaults, which these override).
    pub env: Vec<(String, String)>,
    /// Volume binds.
    pub binds: Vec<Bind>,
    /// Files the image provides (see [`super::programs`]), bound read-only.
    pub programs: Vec<Bind>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    /// Hostname (the pod name).
    pub hostname: String,
    /// Host directory bound at `/tmp`.
    pub tmp_dir: PathBuf,
    /// `runAsUser`/`runAsGroup` and supplementary groups (fsGroup), if set.
    pub run_as: Option<RunAs>,
    /// Set when the container runs as a real podman container of its image.
    pub podman: Option<super::podman::PodmanContainer>,
}

/// Identity a container process runs as.
#[derive(Debug, Clone, PartialEq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{dir}/"))
}

/// The full `bwrap` argument list for `spec`.
pub fn bwrap_args(spec: &ProcessSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(OsString::from));
    push(&["--ro-bind", "/usr", "/usr"]);
    for (link, target) in [
        ("/bin", "usr/bin"),
        ("/sbin", "usr/sbin"),
        ("/lib", "usr/lib"),
        ("/lib64", "usr/lib64"),
    ] {
        if Path::new(link).is_symlink() {
            push(&["--symlink", target, link]);
        } else if Path::new(link).exists() {
            push(&["--ro-bind", link, link]);
        }
    }
    // A volume under /etc needs a writable /etc to create its mount point: bind /etc's entries
    // one by one over a tmpfs instead of /etc whole (bwrap 0.8 has no overlays).
    if spec.binds.iter().any(|b| under(&b.dest, "/etc")) {
        push(&["--tmpfs", "/etc"]);
        if let Ok(entries) = std::fs::read_dir("/etc") {
            for e in entries.flatten() {
                let p = e.path();
                let p = p.to_string_lossy();
                if spec.binds.iter().any(|b| b.dest == p) {
                    continue;
                }
                push(&["--ro-bind-try", &p, &p]);
            }
        }
    } else {
        push(&["--ro-bind", "/etc", "/etc"]);
    }
    push(&[
        "--proc", "/proc", "--dev", "/dev", "--dir", "/root", "--dir", "/var/tmp",
    ]);
    program_binds(&mut a, &spec.programs);
    a.extend([
        "--bind".into(),
        spec.tmp_dir.clone().into_os_string(),
        "/tmp".into(),
    ]);
    for b in &spec.binds {
        let flag = if b.read_only { "--ro-bind" } else { "--bind" };
        a.extend([
            flag.into(),
            b.source.clone().into_os_string(),
            OsString::from(&b.dest),
        ]);
    }
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(OsString::from));
    push(&[
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-ipc",
        "--hostname",
        &spec.hostname,
    ]);
    push(&["--die-with-parent", "--clearenv"]);
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), spec.hostname.clone()),
    ];
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    for (k, v) in &env {
        push(&["--setenv", k, v]);
    }
    if let Some(dir) = &spec.workdir {
        push(&["--chdir", dir]);
    }
    push(&["--"]);
    if let Some(r) = &spec.run_as {
        // bwrap cannot switch uid without a user namespace; setpriv (util-linux) can, as root.
        let groups: Vec<String> = r.groups.iter().map(u32::to_string).collect();
        push(&[
            "setpriv",
            &format!("--reuid={}", r.uid),
            &format!("--regid={}", r.gid),
        ]);
        if groups.is_empty() {
            push(&["--clear-groups"]);
        } else {
            push(&[&format!("--groups={}", groups.join(","))]);
        }
        push(&["--"]);
    }
    for arg in &spec.argv {
        push(&[arg]);
    }
    a
}

/// Binds the image's programs. A destination missing on the host (the read-only `/usr` bind
/// cannot grow a mount point) gets a tmpfs over its directory, refilled with the host's
/// entries, as `/etc` is for volumes below it.
fn program_binds(a: &mut Vec<OsString>, programs: &[Bind]) {
    let mut push = |parts: &[&OsStr]| a.extend(parts.iter().map(OsString::from));
    let mut refilled: Vec<&Path> = Vec::new();
    for p in programs {
        let dest = Path::new(&p.dest);
        if let Some(dir) = dest.parent()
            && !dest.exists()
            && !refilled.contains(&dir)
        {
            refilled.push(dir);
            push(&["--tmpfs".as_ref(), dir.as_os_str()]);
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let entry = e.path();
                if programs.iter().all(|q| Path::new(&q.dest) != entry) {
                    push(&[
                        "--ro-bind-try".as_ref(),
                        entry.as_os_str(),
                        entry.as_os_str(),
                    ]);
                }
            }
        }
        push(&["--ro-bind".as_ref(), p.source.as_os_str(), dest.as_os_str()]);
    }
}

/// A `tokio` command running `spec` under bubblewrap (or its podman container), in its own
/// process group so that the whole tree can be killed at once.
pub fn command(spec: &ProcessSpec) -> tokio::process::Command {
    if let Some(p) = &spec.podman {
        return super::podman::run_command(spec, p);
    }
    let mut cmd = tokio::process::Command::new("bwrap");
    cmd.args(bwrap_args(spec));
    cmd.process_group(0);
    cmd.kill_on_drop(true);
    cmd
}

/// The program that starts the container's processes, as error messages name it.
pub fn launcher(spec: &ProcessSpec) -> &'static str {
    if spec.podman.is_some() {
        "podman"
    } else {
        "bwrap (bubblewrap)"
    }
}

/// A `tokio` command running `spec.argv` in the running container: `podman exec` for a podman
/// container, otherwise a new process in the same filesystem view, as [`command`].
pub fn exec_command(spec: &ProcessSpec) -> tokio::process::Command {
    match &spec.podman {
        Some(p) => super::podman::exec_command(spec, p),
        None => command(spec),
    }
}

/// Kills a process group started by [`command`]; a group already gone is fine.
pub fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(binds: Vec<Bind>) -> ProcessSpec {
        ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![("PATH".into(), "/custom".into())],
            binds,
            programs: Vec::new(),
            workdir: None,
            hostname: "p".into(),
            tmp_dir: "/state/tmp".into(),
            run_as: None,
            podman: None,
        }
    }

    fn joined(s: &ProcessSpec) -> String {
        bwrap_args(s)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn read_only_volumes_use_ro_bind_and_env_overrides_defaults() {
        let s = spec(vec![Bind {
            source: "/pv".into(),
            dest: "/data".into(),
            read_only: true,
        }]);
        let args = joined(&s);
        assert!(args.contains("--ro-bind /pv /data"), "{args}");
        assert!(args.contains("--setenv PATH /custom"), "{args}");
        assert!(!args.contains(DEFAULT_PATH), "{args}");
        assert!(args.ends_with("-- sh -c true"), "{args}");
        assert!(args.contains("--ro-bind /etc /etc"));
    }

    #[test]
    fn a_volume_under_etc_gets_a_tmpfs_etc() {
        let s = spec(vec![Bind {
            source: "/secret".into(),
            dest: "/etc/nkvm/remote".into(),
            read_only: true,
        }]);
        let args = joined(&s);
        assert!(args.contains("--tmpfs /etc"), "{args}");
        assert!(!args.contains("--ro-bind /etc /etc"), "{args}");
    }
}
