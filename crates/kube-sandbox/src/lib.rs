//! A single-process, simulated Kubernetes API server for nkvm's tests, benchmarks and demo.
//!
//! Real `kubectl` (1.32) and kube-rs talk to it as to a cluster: HTTPS with its own CA, bearer
//! tokens, discovery and minimal OpenAPI v3 documents (so server-side field validation is
//! used and no `--validate=false` is needed), CRUD + patch + list/watch of the core, apps,
//! batch, storage and RBAC kinds, and a kubelet that runs containers as real processes in
//! private mount namespaces (bubblewrap) with the pod's volumes bound at their mount paths.
//!
//! What it emulates:
//! - Objects: uid, resourceVersion (one global counter), generation, creationTimestamp,
//!   ownerReferences with background (or orphan) garbage collection at delete time and of
//!   dependents whose owners are all gone,
//!   finalizers, namespace termination, label and field selectors (any field path, `=`,
//!   `==`, `!=`), `limit`/`continue`, watch with `resourceVersion` (410 when too old),
//!   `allowWatchBookmarks`, `timeoutSeconds`, `dryRun=All`, `metav1.Status` errors.
//! - Patches: JSON merge, JSON patch, and strategic merge with the merge keys of the
//!   built-in list fields (see [`patch`]).
//! - Controllers: PV provisioner (Immediate and WaitForFirstConsumer), Deployment →
//!   ReplicaSet → Pod, StatefulSet → Pods + PVCs, DaemonSet → a pod per node, Job → Pod
//!   (CronJob only as an owner for `kubectl create job --from=cronjob/x`), ServiceAccount
//!   `default` per namespace.
//! - Kubelet: scheduling by nodeName, nodeSelector, taints/tolerations; ReadWriteOnce
//!   Multi-Attach errors across nodes; ReadWriteOncePod exclusivity; Block claims refused in
//!   volumeMounts; volumes from PVCs, emptyDir, configMap, secret, downwardAPI, projected
//!   (configMap/secret/downwardAPI sources), hostPath; restartPolicy; exit codes; logs
//!   (`-f`, `-p`, `--tail`); `runAsUser`/`runAsGroup`/`fsGroup` as process identity.
//! - Exec over WebSocket `v5.channel.k8s.io` (with CLOSE) and `v4.channel.k8s.io`.
//! - Identities: the kubeconfig's cluster-admin token (`system:masters`), ServiceAccount
//!   tokens from the TokenRequest API and from pods' projected `kube-api-access` volumes
//!   (expiry, revocation when the ServiceAccount or bound pod goes), `Impersonate-*` headers.
//! - RBAC from Roles, ClusterRoles (with aggregation) and their bindings, 403s worded as the
//!   API server words them; SelfSubjectAccessReview, SelfSubjectRulesReview,
//!   SelfSubjectReview, TokenReview; the bootstrap roles (cluster-admin, view, edit, admin,
//!   system:discovery, system:basic-user, system:public-info-viewer).
//! - Fault injection ([`faults`], `--fault` and the admin-only `/sandbox/faults` endpoint):
//!   exec streams cut (no status, no close frame) or stalled after N stdout bytes, API
//!   requests failing with a chosen status by RBAC verb and resource, delayed pod starts,
//!   never-scheduled pods, and image pulls failing with `ErrImagePull`/`ImagePullBackOff`.
//!
//! What it does NOT emulate (tests must not rely on these):
//! - Images: nothing is pulled; containers run the host's programs (`/usr`, `/etc` read-only).
//!   A container without `command` idles instead of running the image's entrypoint. The
//!   exception: images listed in [`SandboxOptions::podman_images`] and present in local podman
//!   storage run as real podman containers ([`kubelet::podman`]).
//! - Networking: pods share the host network namespace; Services get a cluster IP but
//!   nothing routes to it; no DNS; pod and host IPs are 127.0.0.1.
//! - Only the root filesystem's `/tmp` survives between execs (as a container's writable
//!   layer would); other writes outside volumes vanish with the process.
//! - Resource requests/limits are stored, never enforced; no OOM kills; no probes (a
//!   running container is Ready at once); no graceful termination (SIGKILL at once).
//! - fsGroup does not chown volumes; PodSecurity admission is not enforced.
//! - SPDY exec, `attach`, `port-forward`, `tty` resize (tty requests run without a tty).
//! - Server-side apply field ownership (`apply-patch+yaml` is treated as a strategic merge),
//!   managedFields, unknown-field rejection (fieldValidation is accepted, fields are kept).
//! - Table responses for `kubectl get` (kubectl prints names and ages only).
//! - CronJob schedules (no clock), Job parallelism beyond one pod at a time, Deployment
//!   rolling-update pacing (old ReplicaSets scale to zero at once), HPA, PDBs, CRDs,
//!   aggregated APIs, admission webhooks, leases, endpoints controllers. NetworkPolicies are
//!   stored and served but not enforced (pods share the host's network).
//! - List `continue` tokens resume after a key on current data, not on a snapshot.
//! - Authentication other than bearer tokens (no client certificates, OIDC, webhooks);
//!   tokens look like JWTs but are validated by lookup, not by signature; anonymous
//!   requests are served only on `/version`, `/healthz`, `/livez`, `/readyz`. The
//!   bootstrap `view`/`edit`/`admin` rules are explicit lists, close to but not exactly
//!   Kubernetes' aggregated ones. Projected tokens are not rotated while a pod runs.
//! - Faults other than those in [`faults`]: no network latency or partitions, node loss,
//!   API server restarts, watch disconnects, or disk-full volumes. Image-pull back-off is
//!   2 s doubling to 10 s, not Kubernetes' 10 s to 5 min.
//! - Persistence: objects live in memory; a restarted sandbox starts empty (volume data
//!   stays under the state dir).
//!
//! [`upstream`] runs the real control plane instead (kube-apiserver, etcd, controller-manager,
//! scheduler) with a node agent built on this crate's kubelet: the reference the simulated
//! server is compared against (docs/upstream-control-plane.md).

pub mod admission;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod controllers;
pub mod discovery;
pub mod error;
pub mod events;
pub mod exec;
pub mod faults;
pub mod kubelet;
pub mod meta;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod resources;
pub mod scale;
pub mod selector;
pub mod server;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod upstream;

use cluster::{Cluster, ClusterConfig};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to start a sandbox. Start from `Default` and set what you need: fields get added.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Directory for volume data, container scratch space and logs (created if missing).
    pub state_dir: PathBuf,
    /// Taints for `node-b` (`key=value:Effect`).
    pub node_b_taints: Vec<String>,
    /// Cap on ServiceAccount token lifetimes, in seconds (tests use it to see expiry).
    pub max_token_seconds: Option<i64>,
    /// Faults to inject from the start (`--fault` specs, see [`faults`]); more can be added
    /// and all cleared at run time through `/sandbox/faults`.
    pub faults: Vec<String>,
    /// A large settled cluster to seed before serving (see [`scale`]).
    pub seed: Option<scale::ScaleSpec>,
    /// Images whose pods run as real podman containers of that image when it is in local
    /// podman storage (see [`kubelet::podman`]); every other image runs the host's programs.
    pub podman_images: Vec<String>,
    /// Host programs that containers of given images find inside them (e.g. nkvm's own
    /// image and the nkvm binary, see [`kubelet::programs`]).
    pub image_programs: Vec<kubelet::programs::ImageProgram>,
}

/// Errors starting a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory could not be prepared.
    #[error("preparing the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The listener has no usable address.
    #[error("reading the listener's address: {0}")]
    Listener(std::io::Error),
    /// Certificates could not be minted.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A `--node-taint` could not be parsed.
    #[error(
        "invalid taint {0:?}: expected key=value:Effect or key:Effect with Effect one of NoSchedule, PreferNoSchedule, NoExecute"
    )]
    Taint(String),
    /// A `--fault` spec could not be parsed.
    #[error("invalid --fault {0}; valid forms: {valid}", valid = faults::VALID_FORMS)]
    Fault(String),
    /// The `seed` cluster could not be stored.
    #[error(transparent)]
    Seed(#[from] scale::SeedError),
}

/// A running sandbox cluster.
pub struct Sandbox {
    cluster: Arc<Cluster>,
    kubeconfig: String,
    url: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sandbox {
    /// Starts a sandbox serving on `listener` (already bound; port 0 is fine).
    pub async fn start(
        listener: TcpListener,
        options: SandboxOptions,
    ) -> Result<Sandbox, StartError> {
        let addr = listener.local_addr().map_err(StartError::Listener)?;
        std::fs::create_dir_all(&options.state_dir).map_err(|source| StartError::StateDir {
            path: options.state_dir.clone(),
            source,
        })?;
        let state_dir =
            std::fs::canonicalize(&options.state_dir).map_err(|source| StartError::StateDir {
                path: options.state_dir.clone(),
                source,
            })?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let server_address = if addr.is_ipv6() {
            format!("[{host}]:{}", addr.port())
        } else {
            format!("{host}:{}", addr.port())
        };
        let url = format!("https://{server_address}");
        let identity = tls::mint(&[
            host.clone(),
            "127.0.0.1".into(),
            "localhost".into(),
            "kubernetes.default.svc".into(),
        ])?;
        let admin_token = format!("sandbox-admin-{}", meta::new_uid().replace('-', ""));
        let taints = options
            .node_b_taints
            .iter()
            .map(|t| {
                controllers::bootstrap::parse_taint(t).ok_or_else(|| StartError::Taint(t.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let faults = options
            .faults
            .iter()
            .map(|spec| faults::Fault::parse(spec).map_err(StartError::Fault))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = Arc::new(Cluster {
            store: store::Store::new(),
            config: ClusterConfig {
                state_dir,
                admin_token: admin_token.clone(),
                server_address,
                node_b_taints: options.node_b_taints,
                max_token_seconds: options.max_token_seconds,
                podman_images: options.podman_images,
                image_programs: options.image_programs,
            },
            kubelet: kubelet::Kubelet::default(),
            root_ca: std::sync::OnceLock::new(),
            event_index: Default::default(),
            tokens: Default::default(),
            faults: faults::Faults::new(faults),
        });
        controllers::bootstrap::seed(&cluster, &taints, &identity.ca_pem);
        if let Some(spec) = &options.seed {
            let report = scale::seed(&cluster, spec)?;
            tracing::info!(%spec, %report, "seeded the sandbox");
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let router = axum::Router::new()
            .fallback(api::handle)
            .with_state(cluster.clone());
        let mut tasks = vec![tokio::spawn(server::serve(
            listener,
            identity.server_config.clone(),
            router,
            shutdown_rx.clone(),
        ))];
        tasks.push(tokio::spawn(kubelet::run(
            cluster.clone(),
            shutdown_rx.clone(),
        )));
        tasks.extend(controllers::spawn_all(&cluster, &shutdown_rx));
        let kubeconfig = tls::kubeconfig(&url, &identity.ca_pem, &admin_token);
        Ok(Sandbox {
            cluster,
            kubeconfig,
            url,
            shutdown,
            tasks,
        })
    }

    /// The kubeconfig (cluster-admin token) for this sandbox.
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// `https://host:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes the kubeconfig atomically (a reader never sees half a file), mode 0600.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        write_private_atomically(path, &self.kubeconfig)
    }

    /// The cluster state (for in-process tests and seeding).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Stops serving and kills every pod process.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.cluster.kubelet.stop_all();
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }
}

/// Writes `content` to `path` atomically (a reader never sees half a file), mode 0600.
pub fn write_private_atomically(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kubeconfig")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
