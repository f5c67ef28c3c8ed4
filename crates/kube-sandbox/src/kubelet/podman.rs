//! Real containers: pods whose image the sandbox was told to run in podman
//! ([`crate::SandboxOptions::podman_images`]) and that exist in local podman storage run as
//! `podman run` of that image instead of host programs. Everything else about the pod (volumes,
//! env, the ServiceAccount token, status, logs) is prepared as for any pod; this module only
//! turns a [`ProcessSpec`] into podman command lines:
//!
//! - the image's entrypoint and command, overridden by the container's `command` and `args`
//!   as Kubernetes does;
//! - the pod's volumes as bind mounts, env passed through podman's environment (`-e NAME`, so
//!   Secret values never appear on a command line), `runAsUser`/`runAsGroup`/supplementary
//!   groups, `readOnlyRootFilesystem`, capabilities;
//! - the host's network (the sandbox's pods share it), so `KUBERNETES_SERVICE_HOST` reaches
//!   the API server;
//! - `fsGroup` applied to writable directory volumes (group-owned, setgid, group-writable), as
//!   the kubelet does, so a non-root container can write its claim;
//! - exec as `podman exec`; a stopped pod's containers removed at once (`rm -f -t 0`).
//!
//! podman runs with runc and explicit ulimits: crun and podman's default RLIMIT_NOFILE fail on
//! the machines this is used on (docs/image.md).

use super::runtime::ProcessSpec;
use serde_json::Value;
use std::process::Stdio;

/// Flags every podman invocation gets.
const GLOBAL_FLAGS: &[&str] = &["--runtime", "runc"];
/// Limits every container gets (podman's defaults exceed common hard limits).
const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
];
/// The label naming the pod a container belongs to.
pub const POD_UID_LABEL: &str = "io.nkvm.sandbox.pod-uid";

/// How one container runs in podman, beside what its [`ProcessSpec`] says.
#[derive(Debug, Clone, PartialEq)]
pub struct PodmanContainer {
    /// The podman container's name (unique per pod and container).
    pub name: String,
    /// The image, as the pod names it.
    pub image: String,
    /// The pod's uid (a label on the container).
    pub pod_uid: String,
    /// The container's `command` (replaces the image's entrypoint when not empty).
    pub command: Vec<String>,
    /// The container's `args` (replace the image's command when `command` or they are set).
    pub args: Vec<String>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// The pod's `fsGroup`.
    pub fs_group: Option<u32>,
    /// Capabilities dropped, then added (`securityContext.capabilities`).
    pub cap_drop: Vec<String>,
    /// Capabilities added.
    pub cap_add: Vec<String>,
}

/// The podman container for container `c` of `pod`, when its image is one of `images` and
/// exists in local podman storage; `None` runs it as host programs. `expand` resolves
/// `$(VAR)` references in `command` and `args`.
pub fn container_for(
    images: &[String],
    pod: &Value,
    c: &Value,
    expand: impl Fn(&str) -> String,
) -> Option<PodmanContainer> {
    let image = c["image"].as_str()?;
    if !images.iter().any(|i| i == image) || !image_exists(image) {
        return None;
    }
    let list = |field: &str| -> Vec<String> {
        c[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(&expand)
            .collect()
    };
    let strings = |pointer: &str| -> Vec<String> {
        c.pointer(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    };
    let pod_uid = crate::meta::uid(pod).to_string();
    let cname = c["name"].as_str().unwrap_or("c");
    Some(PodmanContainer {
        name: format!("nkvm-sandbox-{pod_uid}-{cname}"),
        image: image.to_string(),
        pod_uid,
        command: list("command"),
        args: list("args"),
        read_only_root: c.pointer("/securityContext/readOnlyRootFilesystem")
            == Some(&Value::Bool(true)),
        fs_group: pod
            .pointer("/spec/securityContext/fsGroup")
            .and_then(Value::as_u64)
            .map(|g| g as u32),
        cap_drop: strings("/securityContext/capabilities/drop"),
        cap_add: strings("/securityContext/capabilities/add"),
    })
}

/// Whether `image` is in local podman storage (false when podman is missing).
fn image_exists(image: &str) -> bool {
    std::process::Command::new("podman")
        .args(["image", "exists", image])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The arguments of `podman run` for the container (after the global flags).
pub fn run_args(spec: &ProcessSpec, p: &PodmanContainer) -> Vec<String> {
    let mut a: Vec<String> = ["run", "--rm", "--replace", "--pull", "never", "--network"]
        .into_iter()
        .chain(["host", "--name", &p.name, "--hostname", &spec.hostname])
        .map(String::from)
        .collect();
    a.extend(ULIMITS.iter().map(|s| s.to_string()));
    a.extend(["--label".into(), format!("{POD_UID_LABEL}={}", p.pod_uid)]);
    if let Some(r) = &spec.run_as {
        a.extend(["--user".into(), format!("{}:{}", r.uid, r.gid)]);
        for g in &r.groups {
            a.extend(["--group-add".into(), g.to_string()]);
        }
    }
    if p.read_only_root {
        a.push("--read-only".into());
    }
    for cap in &p.cap_drop {
        a.extend(["--cap-drop".into(), cap.clone()]);
    }
    for cap in &p.cap_add {
        a.extend(["--cap-add".into(), cap.clone()]);
    }
    for b in &spec.binds {
        let ro = if b.read_only { ":ro" } else { "" };
        a.extend([
            "-v".into(),
            format!("{}:{}{ro}", b.source.display(), b.dest),
        ]);
    }
    for (k, _) in &spec.env {
        a.extend(["-e".into(), k.clone()]);
    }
    if let Some(dir) = &spec.workdir {
        a.extend(["-w".into(), dir.clone()]);
    }
    if !p.command.is_empty() {
        let entrypoint = serde_json::to_string(&p.command).expect("strings serialize");
        a.extend(["--entrypoint".into(), entrypoint]);
    }
    a.push(p.image.clone());
    a.extend(p.args.iter().cloned());
    a
}

/// Runs the container (attached: its output goes where the command's stdout/stderr go).
pub fn run_command(spec: &ProcessSpec, p: &PodmanContainer) -> tokio::process::Command {
    apply_fs_group(spec, p);
    let mut cmd = podman();
    cmd.args(run_args(spec, p));
    // `-e NAME` takes the value from podman's own environment.
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs `spec.argv` in the running container.
pub fn exec_command(spec: &ProcessSpec, p: &PodmanContainer) -> tokio::process::Command {
    let mut cmd = podman();
    cmd.args(["exec", "-i", &p.name]).args(&spec.argv);
    cmd
}

fn podman() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("podman");
    cmd.args(GLOBAL_FLAGS);
    cmd.process_group(0);
    cmd.kill_on_drop(true);
    cmd
}

/// Waits until the container started by `child` (`podman run`) runs, so that an exec right
/// after the pod turns Running finds it; returns early when `podman run` ends first.
pub async fn wait_running(p: &PodmanContainer, child: &mut tokio::process::Child) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let running = podman()
            .args([
                "container",
                "inspect",
                "--format",
                "{{.State.Running}}",
                &p.name,
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .await
            .is_ok_and(|o| o.stdout.starts_with(b"true"));
        if running {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tracing::warn!(container = %p.name, "podman container not running after 60 s");
}

/// Removes the container at once (no SIGTERM wait); one already gone is fine.
pub fn remove(p: &PodmanContainer) {
    let _ = std::process::Command::new("podman")
        .args(GLOBAL_FLAGS)
        .args(["rm", "-f", "-t", "0", &p.name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Gives writable directory volumes to the pod's `fsGroup` (group owner, setgid, group
/// rwx), as the kubelet does, so a container running as another user can write them.
fn apply_fs_group(spec: &ProcessSpec, p: &PodmanContainer) {
    use std::os::unix::fs::PermissionsExt;
    let Some(group) = p.fs_group else {
        return;
    };
    for b in spec.binds.iter().filter(|b| !b.read_only) {
        let Ok(meta) = std::fs::metadata(&b.source) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        if let Err(e) = std::os::unix::fs::chown(&b.source, None, Some(group)) {
            tracing::warn!(dir = %b.source.display(), error = %e, "applying fsGroup");
            continue;
        }
        let mode = meta.permissions().mode() | 0o2070;
        let _ = std::fs::set_permissions(&b.source, std::fs::Permissions::from_mode(mode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime::{Bind, RunAs};
    use serde_json::json;

    fn spec() -> ProcessSpec {
        ProcessSpec {
            argv: vec!["nkvm".into(), "serve".into()],
            env: vec![("SECRET".into(), "hunter2".into())],
            binds: vec![Bind {
                source: "/state/pv".into(),
                dest: "/var/lib/nkvm".into(),
                read_only: false,
            }],
            workdir: None,
            hostname: "nkvm-abc".into(),
            tmp_dir: "/state/tmp".into(),
            run_as: Some(RunAs {
                uid: 10001,
                gid: 10001,
                groups: vec![10001],
            }),
            programs: Vec::new(),
            podman: None,
        }
    }

    #[test]
    fn an_image_not_listed_runs_as_host_programs() {
        let pod = json!({"metadata": {"uid": "u1"}});
        let c = json!({"name": "c", "image": "busybox"});
        assert_eq!(
            container_for(&["localhost/nkvm:dev".into()], &pod, &c, |s| s.to_string()),
            None
        );
    }

    #[test]
    fn run_args_keep_the_entrypoint_for_args_only_and_never_carry_env_values() {
        let p = PodmanContainer {
            name: "nkvm-sandbox-u1-nkvm".into(),
            image: "localhost/nkvm:dev".into(),
            pod_uid: "u1".into(),
            command: vec![],
            args: vec!["serve".into()],
            read_only_root: true,
            fs_group: Some(10001),
            cap_drop: vec!["ALL".into()],
            cap_add: vec![],
        };
        let args = run_args(&spec(), &p).join(" ");
        for want in [
            "--user 10001:10001 --group-add 10001",
            "--read-only",
            "--cap-drop ALL",
            "-v /state/pv:/var/lib/nkvm ",
            "-e SECRET ",
            "--network host",
            "localhost/nkvm:dev serve",
        ] {
            assert!(args.contains(want), "{want:?} in {args}");
        }
        assert!(!args.contains("hunter2"), "{args}");
        assert!(!args.contains("--entrypoint"), "{args}");
        assert!(args.ends_with("localhost/nkvm:dev serve"), "{args}");
        let with_command = PodmanContainer {
            command: vec!["sh".into(), "-c".into()],
            args: vec!["sleep 1".into()],
            ..p
        };
        let args = run_args(&spec(), &with_command);
        let at = args
            .iter()
            .position(|a| a == "--entrypoint")
            .expect("entrypoint");
        assert_eq!(args[at + 1], r#"["sh","-c"]"#);
        assert_eq!(args[args.len() - 2..], ["localhost/nkvm:dev", "sleep 1"]);
    }
}
