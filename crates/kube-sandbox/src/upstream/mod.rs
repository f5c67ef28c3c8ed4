//! A real Kubernetes control plane for tests and the sandbox command: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler built from the official Go modules
//! (`scripts/upstream-control-plane.sh`), started as child processes with their own PKI, and
//! nkvm's node agent (the private `node` module) in place of the kubelet, running pods with
//! the same runtime as the embedded sandbox.
//!
//! Layout of the state directory: `pki/` (certificates, keys, component kubeconfigs),
//! `etcd/` (data, wiped at each start), `logs/<component>.log`, and per node
//! `nodes/<name>/pods/<uid>/` (scratch space, projected files and container logs).

mod node;
pub mod pki;
pub mod process;

use kube::api::{Api, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use pki::{Authority, CertPair, PkiFiles, Usage};
use process::{Component, ProcessError};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The ServiceAccount token issuer (and the API server's in-cluster name).
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// How long the API server gets to answer `/readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How to start an upstream control plane.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// The directory holding `etcd`, `kube-apiserver`, `kube-controller-manager` and
    /// `kube-scheduler` (the last line `scripts/upstream-control-plane.sh` prints).
    pub bin_dir: PathBuf,
    /// State directory (created if missing).
    pub state_dir: PathBuf,
    /// Address for the API server; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How many nodes the node agent registers (on 127.0.0.2, 127.0.0.3...).
    pub nodes: u8,
    /// Host programs that containers of given images find inside them
    /// ([`crate::kubelet::programs`]).
    pub image_programs: Vec<crate::kubelet::programs::ImageProgram>,
}

/// Errors starting the upstream control plane.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A binary is missing from the binaries directory.
    #[error(
        "{0} not found or not executable; build the control plane with scripts/upstream-control-plane.sh and pass the directory it prints as --upstream-bin"
    )]
    MissingBinary(PathBuf),
    /// A file or directory could not be written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Certificates could not be minted.
    #[error("minting the control plane's certificates: {0}")]
    Pki(#[from] rcgen::Error),
    /// A component failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A component did not become ready in time.
    #[error("{component} not ready after {seconds}s: {detail}; the end of its log {log}:\n{tail}")]
    NotReady {
        /// The component.
        component: String,
        /// How long nkvm waited.
        seconds: u64,
        /// The last error seen.
        detail: String,
        /// Its log.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A request to the API server failed while setting up the cluster.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// Why.
        source: kube::Error,
    },
    /// The node agent could not start.
    #[error("starting the node agent: {0}")]
    Node(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UpstreamError {
    let path = path.to_path_buf();
    move |source| UpstreamError::Io { what, path, source }
}

/// A running upstream control plane with its node agent.
pub struct UpstreamCluster {
    components: Vec<Component>,
    nodes: Vec<node::NodeAgent>,
    kubeconfig: String,
    url: String,
}

impl UpstreamCluster {
    /// Starts etcd, the API server, controller-manager, scheduler and the node agent, and
    /// returns once the API server is ready and the nodes are registered.
    pub async fn start(options: UpstreamOptions) -> Result<UpstreamCluster, UpstreamError> {
        let bins = Binaries::find(&options.bin_dir)?;
        let dirs = Dirs::create(&options.state_dir)?;
        let host = match options.listen.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let port = match options.listen.port() {
            0 => free_port(host)?,
            p => p,
        };
        let url = format!("https://{}", SocketAddr::new(host, port));
        let ca = Authority::new()?;
        let pki = PkiFiles {
            dir: dirs.pki.clone(),
        };
        // A bearer token, not a client certificate: `kubectl --token` then replaces the
        // admin's identity instead of adding to it (the API server would take the certificate).
        // The user is named as the embedded sandbox's admin, so both look alike to tests.
        let admin_token = format!("sandbox-admin-{}", crate::meta::new_uid().replace('-', ""));
        let kubeconfig = crate::tls::kubeconfig(&url, &ca.ca_pem, &admin_token);
        write_identities(&ca, &pki, &url, host)?;
        pki.write(
            "tokens.csv",
            &format!("{admin_token},sandbox-admin,sandbox-admin,\"system:masters\"\n"),
        )
        .map_err(io("writing", &pki.dir))?;

        let mut cluster = UpstreamCluster {
            components: Vec::new(),
            nodes: Vec::new(),
            kubeconfig,
            url,
        };
        let plan = Plan {
            bins,
            dirs,
            pki,
            ca,
            host,
            port,
            nodes: options.nodes,
            image_programs: options.image_programs,
        };
        // Stop what started if a later step fails (Drop cannot wait for processes).
        if let Err(e) = cluster.boot(&plan).await {
            cluster.shutdown().await;
            return Err(e);
        }
        Ok(cluster)
    }

    async fn boot(&mut self, plan: &Plan) -> Result<(), UpstreamError> {
        let Plan {
            bins,
            dirs,
            pki,
            ca,
            host,
            port,
            nodes,
            image_programs,
        } = plan;
        let (host, port) = (*host, *port);
        let etcd_port = free_port(host)?;
        let peer_port = free_port(host)?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_args = vec![
            format!("--data-dir={}", dirs.etcd.display()),
            format!("--listen-client-url={etcd_url}"),
            format!("--listen-peer-url=http://127.0.0.1:{peer_port}"),
            // A throwaway test cluster: durability is not worth the fsync latency.
            "--unsafe-no-fsync".into(),
        ];
        self.components.push(Component::start(
            "etcd", &bins.etcd, &etcd_args, &dirs.logs,
        )?);
        let args = apiserver_args(pki, &etcd_url, host, port);
        self.components.push(Component::start(
            "kube-apiserver",
            &bins.apiserver,
            &args,
            &dirs.logs,
        )?);
        let admin = self.client().await?;
        self.wait_ready(&admin).await?;
        for (name, binary, args) in [
            (
                "kube-controller-manager",
                &bins.controller_manager,
                controller_manager_args(pki),
            ),
            ("kube-scheduler", &bins.scheduler, scheduler_args(pki)),
        ] {
            self.components
                .push(Component::start(name, binary, &args, &dirs.logs)?);
        }
        create_default_storage_class(&admin).await?;
        for i in 0..(*nodes).max(1) {
            let agent = node::NodeAgent::start(node::NodeConfig {
                name: format!("nkvm-node-{}", i + 1),
                ip: Ipv4Addr::new(127, 0, 0, 2 + i),
                api_url: self.url.clone(),
                api_address: format!("{host}:{port}"),
                state_dir: dirs.root.join("nodes"),
                ca,
                image_programs: image_programs.clone(),
            })
            .await
            .map_err(UpstreamError::Node)?;
            self.nodes.push(agent);
        }
        Ok(())
    }

    /// A client with the admin identity.
    pub async fn client(&self) -> Result<kube::Client, UpstreamError> {
        client_from(&self.kubeconfig).await
    }

    async fn wait_ready(&mut self, client: &kube::Client) -> Result<(), UpstreamError> {
        let started = Instant::now();
        loop {
            for c in &mut self.components {
                c.check_running()?;
            }
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("static request");
            let last = match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if started.elapsed() > READY_TIMEOUT {
                let apiserver = self
                    .components
                    .iter()
                    .find(|c| c.name == "kube-apiserver")
                    .expect("started before waiting");
                return Err(UpstreamError::NotReady {
                    component: "kube-apiserver".into(),
                    seconds: READY_TIMEOUT.as_secs(),
                    detail: last,
                    log: apiserver.log.clone(),
                    tail: process::log_tail(&apiserver.log, 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// `https://host:port` of the API server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes the admin kubeconfig (mode 0600, atomically).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        crate::write_private_atomically(path, &self.kubeconfig)
    }

    /// Stops the node agents (killing pod processes), then the control plane in reverse
    /// start order.
    pub async fn shutdown(mut self) {
        for n in self.nodes.drain(..) {
            n.stop().await;
        }
        while let Some(c) = self.components.pop() {
            c.stop().await;
        }
    }
}

/// Everything decided before the first process starts.
struct Plan {
    bins: Binaries,
    dirs: Dirs,
    pki: PkiFiles,
    ca: Authority,
    host: IpAddr,
    port: u16,
    nodes: u8,
    image_programs: Vec<crate::kubelet::programs::ImageProgram>,
}

struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
    scheduler: PathBuf,
}

impl Binaries {
    fn find(dir: &Path) -> Result<Binaries, UpstreamError> {
        let find = |name: &str| {
            let p = dir.join(name);
            let executable = std::fs::metadata(&p).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            });
            if executable {
                Ok(p)
            } else {
                Err(UpstreamError::MissingBinary(p))
            }
        };
        Ok(Binaries {
            etcd: find("etcd")?,
            apiserver: find("kube-apiserver")?,
            controller_manager: find("kube-controller-manager")?,
            scheduler: find("kube-scheduler")?,
        })
    }
}

struct Dirs {
    root: PathBuf,
    pki: PathBuf,
    etcd: PathBuf,
    logs: PathBuf,
}

impl Dirs {
    fn create(state_dir: &Path) -> Result<Dirs, UpstreamError> {
        std::fs::create_dir_all(state_dir).map_err(io("creating", state_dir))?;
        let root = std::fs::canonicalize(state_dir).map_err(io("resolving", state_dir))?;
        let dirs = Dirs {
            pki: root.join("pki"),
            etcd: root.join("etcd"),
            logs: root.join("logs"),
            root,
        };
        // Each start is a fresh cluster (new CA, new keys): old etcd data would not match.
        if dirs.etcd.exists() {
            std::fs::remove_dir_all(&dirs.etcd).map_err(io("removing", &dirs.etcd))?;
        }
        for d in [&dirs.pki, &dirs.logs] {
            std::fs::create_dir_all(d).map_err(io("creating", d))?;
        }
        Ok(dirs)
    }
}

/// A free TCP port on `host` (bound and released; the component binds it right after).
fn free_port(host: IpAddr) -> Result<u16, UpstreamError> {
    let addr = SocketAddr::new(host, 0);
    let l = std::net::TcpListener::bind(addr).map_err(|source| UpstreamError::Io {
        what: "finding a free port on",
        path: PathBuf::from(host.to_string()),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io("finding a free port on", Path::new("127.0.0.1")))
}

/// Writes every certificate, key and kubeconfig the Go components read.
fn write_identities(
    ca: &Authority,
    pki: &PkiFiles,
    url: &str,
    host: IpAddr,
) -> Result<(), UpstreamError> {
    let w = |r: std::io::Result<()>| r.map_err(io("writing", &pki.dir));
    w(pki.write("ca.crt", &ca.ca_pem).map(|_| ()))?;
    let hosts = vec![
        host.to_string(),
        "127.0.0.1".into(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "10.96.0.1".into(),
    ];
    let serving = ca.sign(Usage::Server {
        name: "kube-apiserver",
        hosts: &hosts,
    })?;
    w(pki.write_pair("apiserver", &serving))?;
    let kubelet_client = ca.sign(Usage::Client {
        user: "kube-apiserver-kubelet-client",
        groups: &["system:masters"],
    })?;
    w(pki.write_pair("apiserver-kubelet-client", &kubelet_client))?;
    let (sa_private, sa_public) = pki::service_account_keys()?;
    w(pki.write("sa.key", &sa_private).map(|_| ()))?;
    w(pki.write("sa.pub", &sa_public).map(|_| ()))?;
    for user in ["system:kube-controller-manager", "system:kube-scheduler"] {
        let pair = ca.sign(Usage::Client { user, groups: &[] })?;
        let file = format!("{}.kubeconfig", user.trim_start_matches("system:"));
        w(pki
            .write(&file, &kubeconfig(url, &ca.ca_pem, &pair, user))
            .map(|_| ()))?;
    }
    Ok(())
}

fn apiserver_args(pki: &PkiFiles, etcd_url: &str, host: IpAddr, port: u16) -> Vec<String> {
    let p = |name: &str| pki.path(name).display().to_string();
    vec![
        format!("--etcd-servers={etcd_url}"),
        format!("--bind-address={host}"),
        format!("--advertise-address={host}"),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--client-ca-file={}", p("ca.crt")),
        format!("--token-auth-file={}", p("tokens.csv")),
        format!("--service-account-issuer={ISSUER}"),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--authorization-mode=Node,RBAC".into(),
        // PodSecurity is on by default; NodeRestriction keeps each node to its own objects.
        "--enable-admission-plugins=NodeRestriction".into(),
        format!(
            "--kubelet-client-certificate={}",
            p("apiserver-kubelet-client.crt")
        ),
        format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        format!("--kubelet-certificate-authority={}", p("ca.crt")),
        "--kubelet-preferred-address-types=InternalIP".into(),
        "--allow-privileged=true".into(),
        // The `kubernetes` Service's endpoints would be the loopback address, which the
        // Endpoints validation rejects: nothing routes Service IPs here anyway.
        "--endpoint-reconciler-type=none".into(),
        "--profiling=false".into(),
    ]
}

fn controller_manager_args(pki: &PkiFiles) -> Vec<String> {
    let p = |name: &str| pki.path(name).display().to_string();
    vec![
        format!("--kubeconfig={}", p("kube-controller-manager.kubeconfig")),
        format!("--service-account-private-key-file={}", p("sa.key")),
        format!("--root-ca-file={}", p("ca.crt")),
        "--use-service-account-credentials=true".into(),
        "--enable-hostpath-provisioner=true".into(),
        "--leader-elect=false".into(),
        // No serving port: several sandboxes may run side by side, and nothing scrapes it.
        "--secure-port=0".into(),
        "--profiling=false".into(),
    ]
}

fn scheduler_args(pki: &PkiFiles) -> Vec<String> {
    vec![
        format!(
            "--kubeconfig={}",
            pki.path("kube-scheduler.kubeconfig").display()
        ),
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
        "--profiling=false".into(),
    ]
}

/// A kubeconfig for `server` trusting `ca_pem`, authenticating with a client certificate.
pub fn kubeconfig(server: &str, ca_pem: &str, pair: &CertPair, user: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: upstream
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: upstream
  context:
    cluster: upstream
    user: {user}
    namespace: default
current-context: upstream
",
        ca = b64(ca_pem),
        cert = b64(&pair.cert_pem),
        key = b64(&pair.key_pem),
    )
}

/// A kube-rs client from kubeconfig text.
pub async fn client_from(kubeconfig: &str) -> Result<kube::Client, UpstreamError> {
    let api = |what: &str| {
        let what = what.to_string();
        move |source| UpstreamError::Api { what, source }
    };
    let parsed = Kubeconfig::from_yaml(kubeconfig).map_err(|e| UpstreamError::Api {
        what: "parsing the generated kubeconfig".into(),
        source: kube::Error::InferKubeconfig(e),
    })?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .map_err(|e| UpstreamError::Api {
            what: "loading the generated kubeconfig".into(),
            source: kube::Error::InferKubeconfig(e),
        })?;
    kube::Client::try_from(config).map_err(api("building a client"))
}

/// The default StorageClass, served by the controller-manager's hostPath provisioner.
async fn create_default_storage_class(client: &kube::Client) -> Result<(), UpstreamError> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("storage.k8s.io", "v1", "StorageClass"),
        "storageclasses",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let class: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))
    .expect("static object");
    api.create(&PostParams::default(), &class)
        .await
        .map(|_| ())
        .map_err(|source| UpstreamError::Api {
            what: "creating the default StorageClass".into(),
            source,
        })
}
