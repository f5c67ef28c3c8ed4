//! The helper pod spec: a pure function from [`HelperPodOptions`] to the `Pod` nkvm creates to
//! read (backup) or write (restore) a claim. It owns the pod's name, labels, placement,
//! security profile and idle command; creating and watching it is [`super::lifecycle`]'s job.
//!
//! The pod only idles: the engine execs `tar` into it, so a helper never runs work of its own
//! and a crashed engine leaves nothing half-written by the pod itself.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use nkvm_domain::PvcRef;
use std::collections::BTreeMap;
use std::fmt;

/// Label every nkvm-made object carries (the sweep selects on it).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "nkvm";
/// Label (and annotation, unabridged) naming the job that owns the pod.
pub const JOB_ID_LABEL: &str = "nkvm.io/job-id";
/// Label naming the claim (label-safe form; the annotation holds `namespace/name`).
pub const PVC_LABEL: &str = "nkvm.io/pvc";
/// Label naming the mode (`backup` or `restore`).
pub const MODE_LABEL: &str = "nkvm.io/mode";
/// Label naming the nkvm instance (its history database) that made a helper: a start-up sweep
/// deletes only its own instance's helpers, never those of another nkvm on the same cluster.
pub const INSTANCE_LABEL: &str = "nkvm.io/instance";
/// The helper's only container.
pub const CONTAINER: &str = "helper";
/// Where the claim is mounted in the helper.
pub const DATA_DIR: &str = "/data";
/// The pod volume holding the claim.
const VOLUME: &str = "data";
/// Longest pod name we make: pod names become hostnames, which are DNS labels.
const MAX_NAME: usize = 63;
/// Hex digits of the identity hash kept at the end of names and shortened labels.
const HASH_LEN: usize = 12;

/// Whether the helper reads or writes the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperMode {
    /// Read-only mount; the engine runs `tar` creating to stdout.
    Backup,
    /// Read-write mount; the engine runs `tar -x` from stdin.
    Restore,
}

impl HelperMode {
    /// `backup` or `restore` (in names and labels).
    pub fn as_str(self) -> &'static str {
        match self {
            HelperMode::Backup => "backup",
            HelperMode::Restore => "restore",
        }
    }
}

impl fmt::Display for HelperMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity the helper's process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProfile {
    /// Root with only the capabilities the mode needs (PodSecurity "baseline"): reads every
    /// file whatever its mode; restores keep owners, modes and file capabilities.
    RootReadAll,
    /// A non-root identity (the consumer's), meeting PodSecurity "restricted": reads only
    /// what that user may read; restores cannot set other owners.
    RunAs {
        /// `runAsUser`.
        uid: i64,
        /// `runAsGroup`.
        gid: i64,
        /// `fsGroup`, when the consumer has one.
        fs_group: Option<i64>,
    },
}

impl SecurityProfile {
    /// Whether the process runs as root (decides the `tar` extract flags).
    pub fn is_root(self) -> bool {
        matches!(self, SecurityProfile::RootReadAll)
    }
}

/// Everything the helper pod spec depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct HelperPodOptions {
    /// The job this helper serves (label, annotation and part of the name's hash).
    pub job_id: String,
    /// The claim to mount; the pod is created in its namespace.
    pub claim: PvcRef,
    /// Read or write.
    pub mode: HelperMode,
    /// `nodeName` of a running consumer: a ReadWriteOnce volume can only be mounted there.
    pub node: Option<String>,
    /// Tolerations copied from that consumer, so node taints do not evict the helper.
    pub tolerations: Vec<Toleration>,
    /// Container image (needs `sh`, `sleep` and `tar`).
    pub image: String,
    /// Identity of the process.
    pub profile: SecurityProfile,
    /// Requests and limits.
    pub resources: ResourceRequirements,
    /// The pod's lifetime cap; also how long the idle command sleeps.
    pub active_deadline_seconds: i64,
    /// The instance that makes it ([`INSTANCE_LABEL`]); `""` for none.
    pub instance: String,
}

impl HelperPodOptions {
    /// Options with the defaults: no placement, root profile, [`default_resources`], 6 h.
    pub fn new(job_id: &str, claim: PvcRef, mode: HelperMode, image: &str) -> Self {
        HelperPodOptions {
            job_id: job_id.to_string(),
            claim,
            mode,
            node: None,
            tolerations: Vec::new(),
            image: image.to_string(),
            profile: SecurityProfile::RootReadAll,
            resources: default_resources(),
            active_deadline_seconds: 6 * 3600,
            instance: String::new(),
        }
    }
}

/// Small requests so helpers schedule beside busy workloads; a memory limit but no CPU limit,
/// because throttling only slows `tar` down without protecting anyone.
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("100m")),
            ("memory".to_string(), q("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q("256Mi"))])),
        ..Default::default()
    }
}

/// Builds the helper pod.
pub fn pod_spec(opts: &HelperPodOptions) -> Pod {
    let namespace = opts.claim.namespace.as_str();
    let claim = opts.claim.name.as_str();
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (JOB_ID_LABEL.to_string(), label_value(&opts.job_id)),
        (PVC_LABEL.to_string(), label_value(claim)),
        (MODE_LABEL.to_string(), opts.mode.as_str().to_string()),
        (INSTANCE_LABEL.to_string(), label_value(&opts.instance)),
    ]);
    // Labels may have been shortened; the annotations keep the exact values for the sweep
    // and for humans.
    let annotations = BTreeMap::from([
        (JOB_ID_LABEL.to_string(), opts.job_id.clone()),
        (PVC_LABEL.to_string(), format!("{namespace}/{claim}")),
    ]);
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(opts.mode, &opts.job_id, &opts.claim)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            active_deadline_seconds: Some(opts.active_deadline_seconds.max(1)),
            // The idle command exits on TERM at once; nothing needs a grace period.
            termination_grace_period_seconds: Some(1),
            node_name: opts.node.clone(),
            tolerations: (!opts.tolerations.is_empty()).then(|| opts.tolerations.clone()),
            security_context: Some(pod_security(opts.profile)),
            containers: vec![container(opts)],
            volumes: Some(vec![Volume {
                name: VOLUME.into(),
                // Read-only only at the mount: a read-only volume source would ask the
                // attacher for a read-only attachment, which a RWO volume already attached
                // read-write for its consumer on that node cannot be.
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.to_string(),
                    read_only: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn container(opts: &HelperPodOptions) -> Container {
    let deadline = opts.active_deadline_seconds.max(1);
    Container {
        name: CONTAINER.into(),
        image: Some(opts.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        // `sleep` as PID 1 ignores TERM; the trap makes deletion immediate, and the sleep
        // ends the pod even where activeDeadlineSeconds is not enforced.
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            format!("trap 'exit 0' TERM INT; sleep {deadline} & wait"),
        ]),
        resources: Some(opts.resources.clone()),
        security_context: Some(container_security(opts.mode, opts.profile)),
        volume_mounts: Some(vec![VolumeMount {
            name: VOLUME.into(),
            mount_path: DATA_DIR.into(),
            read_only: Some(opts.mode == HelperMode::Backup),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn pod_security(profile: SecurityProfile) -> PodSecurityContext {
    let seccomp = Some(SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    });
    match profile {
        SecurityProfile::RootReadAll => PodSecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            seccomp_profile: seccomp,
            ..Default::default()
        },
        SecurityProfile::RunAs { uid, gid, fs_group } => PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(gid),
            fs_group,
            // Without this the kubelet re-chowns the whole volume on every helper start.
            fs_group_change_policy: fs_group.map(|_| "OnRootMismatch".into()),
            seccomp_profile: seccomp,
            ..Default::default()
        },
    }
}

/// Capabilities are dropped and the few a mode needs added back; all of them are allowed by
/// PodSecurity "baseline" (DAC_READ_SEARCH is not, DAC_OVERRIDE covers reading).
fn capabilities(mode: HelperMode, profile: SecurityProfile) -> Option<Vec<String>> {
    if !profile.is_root() {
        return None;
    }
    let add: &[&str] = match mode {
        HelperMode::Backup => &["DAC_OVERRIDE"],
        HelperMode::Restore => &[
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "FSETID",
            "MKNOD",
            "SETFCAP",
        ],
    };
    Some(add.iter().map(|c| c.to_string()).collect())
}

fn container_security(mode: HelperMode, profile: SecurityProfile) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: (!profile.is_root()).then_some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: capabilities(mode, profile),
        }),
        ..Default::default()
    }
}

/// `nkvm-<mode>-<claim, shortened>-<hash of job, namespace, claim, mode>`: at most 63
/// characters, and the hash at the end keeps names of different jobs apart however much
/// of the claim name had to go.
pub fn pod_name(mode: HelperMode, job_id: &str, claim: &PvcRef) -> String {
    let identity = format!(
        "{}\0{}\0{}\0{}",
        mode.as_str(),
        job_id,
        claim.namespace.as_str(),
        claim.name.as_str()
    );
    let hash = hash_hex(&identity);
    let prefix = format!("nkvm-{}-", mode.as_str());
    let room = MAX_NAME - prefix.len() - 1 - HASH_LEN;
    let middle = dns_label_part(claim.name.as_str(), room);
    if middle.is_empty() {
        format!("{prefix}{hash}")
    } else {
        format!("{prefix}{middle}-{hash}")
    }
}

/// Lower-case letters, digits and inner dashes, at most `max` characters.
fn dns_label_part(s: &str, max: usize) -> String {
    let mapped: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(max)
        .collect();
    mapped.trim_matches('-').to_string()
}

/// A valid label value for `value`: itself when it already is one, else a cleaned, shortened
/// form ending in a hash of the original (so distinct values stay distinct).
pub fn label_value(value: &str) -> String {
    if is_label_value(value) {
        return value.to_string();
    }
    let hash = hash_hex(value);
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME - 1 - HASH_LEN)
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if cleaned.is_empty() {
        hash
    } else {
        format!("{cleaned}-{hash}")
    }
}

/// Kubernetes' label value rule: empty, or ≤ 63 of `[A-Za-z0-9_.-]` starting and ending
/// alphanumeric.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= MAX_NAME
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// FNV-1a 64: stable across builds and platforms (unlike `DefaultHasher`); collisions only
/// need to be unlikely between concurrent jobs, not resistant to an attacker.
fn hash_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")[..HASH_LEN].to_string()
}

#[cfg(test)]
mod tests;
