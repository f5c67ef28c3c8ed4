//! The command line (a contract: see docs/cli.md).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Kubernetes PVC backup manager.
#[derive(Debug, Parser)]
#[command(name = "nkvm", version, about)]
pub struct Cli {
    /// Connection, scope and storage settings shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every command shares; each flag has an environment variable. Listed after each
/// command's own flags, under their own heading.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and storage (every command)")]
pub struct GlobalArgs {
    /// Kubeconfig file [default: $KUBECONFIG, then ~/.kube/config].
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context [default: the current context].
    #[arg(long, global = true, env = "NKVM_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// How to authenticate: in-cluster or kubeconfig [default: in-cluster inside a pod,
    /// else kubeconfig].
    #[arg(
        long,
        global = true,
        env = "NKVM_DEFAULT_AUTH_MODE",
        value_name = "MODE"
    )]
    pub auth: Option<String>,
    /// Namespaces nkvm may use, comma-separated [default: all the credentials can see].
    #[arg(
        long,
        global = true,
        env = "NKVM_NAMESPACES",
        value_name = "NS,...",
        default_value = ""
    )]
    pub namespaces: String,
    /// Archive store directory.
    #[arg(
        long,
        global = true,
        env = "NKVM_BACKUP_DIR",
        default_value = "./backups",
        value_name = "DIR"
    )]
    pub backup_dir: PathBuf,
    /// Named stores beside `local` (YAML; see docs/stores.md).
    #[arg(long, global = true, env = "NKVM_STORES_FILE", value_name = "PATH")]
    pub stores: Option<PathBuf>,
    /// age identity file that opens encrypted archives (restore, verify --deep, copy).
    #[arg(
        long,
        global = true,
        env = "NKVM_AGE_IDENTITY_FILE",
        value_name = "FILE"
    )]
    pub identity: Option<PathBuf>,
    /// History database.
    #[arg(
        long,
        global = true,
        env = "NKVM_METADATA_DB_PATH",
        default_value = "./data/backups.db",
        value_name = "PATH"
    )]
    pub db: PathBuf,
    /// Limit for one inventory, in seconds.
    #[arg(
        long,
        global = true,
        env = "NKVM_DISCOVERY_TIMEOUT_SECONDS",
        default_value_t = 20,
        value_name = "SECONDS"
    )]
    pub discovery_timeout: u64,
    /// Image of helper pods [default: nkvm's own image (--image), which runs the nkvm agent;
    /// any other image needs `sh`, `sleep` and GNU tar or BusyBox tar].
    #[arg(long, global = true, env = "NKVM_HELPER_IMAGE", value_name = "IMAGE")]
    pub helper_image: Option<String>,
    /// The image nkvm itself runs from; helper pods of this image run `nkvm agent`.
    #[arg(long, global = true, env = "NKVM_IMAGE", default_value = nkvm_engine::DEFAULT_NKVM_IMAGE, value_name = "IMAGE")]
    pub image: String,
    /// Longest silence of an exec stream before a job counts it stalled, in seconds.
    #[arg(
        long,
        global = true,
        env = "NKVM_EXEC_IDLE_TIMEOUT_SECONDS",
        default_value_t = 300,
        value_name = "SECONDS",
        hide = true
    )]
    pub exec_idle_timeout: u64,
    /// A fault for the agent to inject (tests of the trailer checks only).
    #[arg(
        long,
        global = true,
        env = "NKVM_AGENT_FAULT",
        value_name = "FAULT",
        hide = true
    )]
    pub agent_fault: Option<String>,
    /// How long a helper pod may take to start running, in seconds.
    #[arg(
        long,
        global = true,
        env = "NKVM_HELPER_POD_TIMEOUT_SECONDS",
        default_value_t = 120,
        value_name = "SECONDS"
    )]
    pub helper_pod_timeout: u64,
    /// Backup policy file (YAML; see docs/policies.md).
    #[arg(
        long = "policies",
        global = true,
        env = "NKVM_POLICIES_FILE",
        value_name = "PATH"
    )]
    pub policies_file: Option<PathBuf>,
    /// Most objects (claims, pods, owners) one inventory may hold.
    #[arg(
        long,
        global = true,
        env = "NKVM_DISCOVERY_MAX_OBJECTS",
        default_value_t = 500_000,
        value_name = "N",
        hide = true
    )]
    pub discovery_max_objects: usize,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable columns.
    Table,
    /// JSON (kubectl's camelCase).
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the contexts of the kubeconfig (current one marked).
    Contexts(ContextsArgs),
    /// Connect for real: server version, identity, and what RBAC allows where nkvm works.
    Check(CheckArgs),
    /// PVC inventory: owners, consumers, last backup, whether each can be backed up.
    Pvcs(PvcsArgs),
    /// Back up PVCs (NS/NAME ...), wait, and print the results.
    Backup(BackupArgs),
    /// Backup history, newest first.
    Backups(BackupsArgs),
    /// Re-read a stored backup: sha256 and a complete tar stream.
    Verify(VerifyArgs),
    /// Copy a backup's archive and manifest to another store, checked by hash on arrival.
    Copy(CopyArgs),
    /// Restore a backup into a new or existing claim (plan first with --dry-run).
    Restore(RestoreArgs),
    /// List restores, newest first.
    Restores(RestoresArgs),
    /// Clean up after a crash: interrupted jobs, partial archives, helper pods. Not while
    /// another nkvm process backs up with the same database.
    Recover(RecoverArgs),
    /// The history index over the archive store.
    #[command(subcommand)]
    Index(IndexCommand),
    /// The archive stores: `local` and the stores file's (with --check: reachable, writable).
    Stores(StoresArgs),
    /// Run a sandbox Kubernetes API server (for tests, benchmarks and the demo).
    Sandbox(SandboxArgs),
    /// The agent nkvm runs inside helper pods of its own image (see docs/agent.md); not for
    /// interactive use: it writes nkvm's binary wire format to stdout.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Sandbox cluster + sample workloads + web UI.
    Demo(DemoArgs),
    /// Web UI + /healthz, /readyz and /metrics (login required; see docs/web-ui.md).
    Serve(ServeArgs),
    /// Backup policies in force (file and UI) with their next runs.
    Policies(PoliciesArgs),
    /// Act on one policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Apply the policies' retention: delete the backups it does not keep.
    Prune(PruneArgs),
    /// Delete one backup: its archive and manifest; the history row is kept, marked deleted.
    Delete(DeleteArgs),
}

/// `nkvm policies`.
#[derive(Debug, Args)]
pub struct PoliciesArgs {
    /// Next runs shown per policy.
    #[arg(long, default_value_t = 3)]
    pub next: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run a policy now, wait, and print each claim's result.
    Run(PolicyRunArgs),
}

/// `nkvm policy run`.
#[derive(Debug, Args)]
pub struct PolicyRunArgs {
    /// The policy's name.
    pub name: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this policy's backups.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// List every backup with its decision and rule; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Backup id (as `nkvm backups` lists it).
    pub id: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port (written into the kubeconfig).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Directory for volume data, container scratch space and logs.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Where to write the cluster-admin kubeconfig once the server is ready.
    #[arg(long)]
    pub kubeconfig_out: PathBuf,
    /// Taint node-b (`key=value:Effect`); repeatable.
    #[arg(long = "node-taint")]
    pub node_taints: Vec<String>,
    /// Cap ServiceAccount token lifetimes at this many seconds (as kube-apiserver's flag of
    /// the same name); short caps let tests watch tokens expire.
    #[arg(long = "service-account-max-token-expiration", value_name = "SECONDS")]
    pub max_token_seconds: Option<i64>,
    /// Inject a fault (repeatable): exec-cut-after=BYTES[,count=N],
    /// exec-stall-after=BYTES[,count=N], exec-stdin-cut-after=BYTES[,count=N],
    /// api-error=VERB:RESOURCE:STATUS[,count=N],
    /// pod-start-delay=SECONDS, pod-never-ready=NAME_PREFIX, image-pull-fail=NAME_PREFIX
    /// (see docs/sandbox.md; change them at run time through /sandbox/faults).
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// Run pods of this image as real podman containers of it, when it is in local podman
    /// storage (repeatable; e.g. `localhost/nkvm:dev` from scripts/build-image.sh). Pods of
    /// other images run the host's programs (see docs/image.md).
    #[arg(long = "podman-image", value_name = "IMAGE")]
    pub podman_images: Vec<String>,
    /// Seed a large settled cluster before serving, e.g.
    /// `namespaces=500,pvcs=10000,pods=20000` (namespaces `scale-0000`...; see docs/sandbox.md).
    #[arg(long, value_name = "namespaces=N,pvcs=N,pods=N")]
    pub seed_scale: Option<String>,
    /// Which control plane serves the cluster: `embedded` (nkvm's simulated API server, one
    /// process, starts in seconds) or `upstream` (etcd, kube-apiserver,
    /// kube-controller-manager and kube-scheduler from --upstream-bin, with nkvm's node agent;
    /// see docs/upstream-control-plane.md).
    #[arg(long, value_enum, default_value_t = ControlPlane::Embedded)]
    pub control_plane: ControlPlane,
    /// Directory of the upstream binaries (the last line of
    /// scripts/upstream-control-plane.sh); needed with `--control-plane upstream`.
    #[arg(long, env = "NKVM_UPSTREAM_BIN", value_name = "DIR")]
    pub upstream_bin: Option<PathBuf>,
}

/// The control planes `nkvm sandbox` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControlPlane {
    /// nkvm's simulated API server with its built-in controllers and kubelet.
    Embedded,
    /// The real Kubernetes control plane with nkvm's node agent.
    Upstream,
}

/// `nkvm serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for the web UI (the container image sets 0.0.0.0:8080).
    #[arg(long, env = "NKVM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// `nkvm demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address for the web UI; port 0 picks a free port (the printed URL shows it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// `nkvm contexts`.
#[derive(Debug, Args)]
pub struct ContextsArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm pvcs`.
#[derive(Debug, Args)]
pub struct PvcsArgs {
    /// Only this namespace.
    #[arg(short = 'n', long = "namespace", conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every allowed namespace (the default).
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Claims to back up, as NAMESPACE/NAME.
    #[arg(required = true, value_name = "NS/PVC")]
    pub claims: Vec<String>,
    /// Compression: zstd (default), gzip, none.
    #[arg(long, default_value = "zstd")]
    pub compression: String,
    /// Compression level (zstd 1-19, default 3; gzip 0-9, default 6).
    #[arg(long)]
    pub level: Option<i32>,
    /// Claims backed up at once.
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// The store the archives go to (`local`, or a name from the stores file).
    #[arg(long, default_value = "local", value_name = "NAME")]
    pub store: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore (an id from `nkvm backups`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Target claim, as NAMESPACE/NAME.
    #[arg(long = "to", value_name = "NS/PVC")]
    pub to: String,
    /// Create the target claim from the backup's saved spec (it must not exist).
    #[arg(long)]
    pub create: bool,
    /// Storage class of the created claim (default: the source's).
    #[arg(long, requires = "create", value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// Size of the created claim, e.g. 10Gi (default: the source's; never below the data).
    #[arg(long, requires = "create", value_name = "SIZE")]
    pub size: Option<String>,
    /// Delete everything in the target before extracting.
    #[arg(long)]
    pub clean: bool,
    /// Write into a claim that running pods mount.
    #[arg(long)]
    pub force: bool,
    /// Keep setuid/setgid bits and file capabilities when restoring into another namespace
    /// or cluster than the backup's (they are cleared there by default).
    #[arg(long)]
    pub keep_privileged: bool,
    /// Show the plan and stop; nothing changes.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm restores`.
#[derive(Debug, Args)]
pub struct RestoresArgs {
    /// Only this target namespace.
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,
    /// Only this target claim.
    #[arg(long)]
    pub pvc: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm backups`.
#[derive(Debug, Args)]
pub struct BackupsArgs {
    /// Only this namespace.
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,
    /// Only this claim.
    #[arg(long)]
    pub pvc: Option<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup id (as `nkvm backups` lists it).
    pub id: String,
    /// Decrypt an age-encrypted archive (with --identity) and check the tar inside too.
    #[arg(long)]
    pub deep: bool,
    /// Verify the copy in this store [default: the first store holding the backup].
    #[arg(long, value_name = "NAME")]
    pub store: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Backup id (as `nkvm backups` lists it).
    pub id: String,
    /// The store to copy it to (a name from `nkvm stores`).
    #[arg(long, value_name = "STORE")]
    pub to: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm index ...`.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Add a history row for every archive in the store the history does not list.
    Rebuild(IndexRebuildArgs),
}

/// `nkvm stores`.
#[derive(Debug, Args)]
pub struct StoresArgs {
    /// Prove each store usable: write, read back and delete a probe object.
    #[arg(long)]
    pub check: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// `nkvm index rebuild`.
#[derive(Debug, Args)]
pub struct IndexRebuildArgs {
    /// The store whose manifests are indexed.
    #[arg(long, default_value = "local", value_name = "NAME")]
    pub store: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(args: &[&str]) -> String {
        Cli::try_parse_from(args).unwrap_err().render().to_string()
    }

    #[test]
    fn a_commands_help_lists_its_own_flags_before_the_shared_ones() {
        let text = help(&["nkvm", "backup", "--help"]);
        let own = text.find("--compression").expect(&text);
        let heading = text
            .find("Connection and storage (every command):")
            .expect(&text);
        let shared = text.find("--kubeconfig").expect(&text);
        assert!(own < heading && heading < shared, "{text}");
    }
}

/// `nkvm agent` subcommands (run by nkvm over exec in a helper pod).
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Print the agent's protocol and version, and the image's tar version.
    Probe,
    /// Archive DIR: tar, check, hash and compress it, and write the agent stream to stdout.
    Backup(AgentBackupArgs),
    /// Extract the archive arriving on stdin into DIR once its sha256 matches.
    Restore(AgentRestoreArgs),
}

/// `nkvm agent backup`.
#[derive(Debug, Args)]
pub struct AgentBackupArgs {
    /// The mounted volume.
    #[arg(long, default_value = "/data")]
    pub dir: String,
    /// zstd, gzip or none.
    #[arg(long, default_value = "zstd")]
    pub compression: String,
    /// Compression level (zstd 1-19, gzip 0-9) [default: zstd 3, gzip 6].
    #[arg(long)]
    pub level: Option<i32>,
    /// zstd worker threads [default: one per core].
    #[arg(long)]
    pub workers: Option<u32>,
    /// Upload the archive straight to the bucket upload described by one JSON line on stdin
    /// (where, and the credentials for this job); nkvm then receives only the trailer.
    #[arg(long)]
    pub direct_upload: bool,
    /// With --direct-upload: seal the archive into an age file for the target's recipients
    /// (an encrypted store). An agent without this flag refuses such a target, and an older
    /// agent refuses the flag, so no archive reaches an encrypted store in the clear.
    #[arg(long, requires = "direct_upload")]
    pub encrypt: bool,
    /// A fault to inject (tests only).
    #[arg(long, hide = true)]
    pub fault: Option<String>,
}

/// `nkvm agent restore`.
#[derive(Debug, Args)]
pub struct AgentRestoreArgs {
    /// The mounted volume.
    #[arg(long, default_value = "/data")]
    pub dir: String,
    /// The archive's compression: zstd, gzip or none.
    #[arg(long, default_value = "zstd")]
    pub compression: String,
    /// The archive's compressed length in bytes (stdin holds exactly this many).
    #[arg(long)]
    pub bytes: u64,
    /// The archive's sha256 from its manifest.
    #[arg(long)]
    pub sha256: String,
    /// The helper runs as root: keep owners.
    #[arg(long)]
    pub as_root: bool,
    /// Restore privileged extended attributes (file capabilities).
    #[arg(long)]
    pub privileged: bool,
    /// Clear setuid and setgid bits of every member.
    #[arg(long)]
    pub strip_set_id: bool,
    /// A fault to inject (tests only).
    #[arg(long, hide = true)]
    pub fault: Option<String>,
}
