//! nkvm's node agent: in place of the kubelet, a client of the real API server that
//! registers a node on its own loopback address, keeps its Lease and Ready condition fresh,
//! runs the pods bound to it with the sandbox's container runtime ([`crate::kubelet::pod`]),
//! and serves exec and logs over TLS for the API server.
//!
//! It authenticates as `system:node:<name>` (group `system:nodes`), so the API server's Node
//! authorizer and NodeRestriction admission limit it to its own node and pods, as a kubelet.

mod pods;
mod server;
mod sources;

use super::pki::{Authority, Usage};
use crate::kubelet::Kubelet;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The kubelet's usual port; a node whose address already has it taken (another sandbox on
/// this machine) takes a free port and advertises that one instead.
const KUBELET_PORT: u16 = 10250;
/// How often the node renews its Lease and Ready condition.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Settings of one node.
pub(in crate::upstream) struct NodeConfig<'a> {
    /// Node name.
    pub name: String,
    /// Its own loopback address (InternalIP, where the API server reaches its server).
    pub ip: Ipv4Addr,
    /// `https://host:port` of the API server.
    pub api_url: String,
    /// `host:port` of the API server, for pods' `KUBERNETES_SERVICE_*` variables.
    pub api_address: String,
    /// Parent of the node's state directory.
    pub state_dir: PathBuf,
    /// The cluster CA (signs the node's client and serving certificates).
    pub ca: &'a Authority,
    /// Host programs placed in containers of given images.
    pub image_programs: Vec<crate::kubelet::programs::ImageProgram>,
}

/// What the node's tasks share.
struct Node {
    name: String,
    ip: Ipv4Addr,
    api_address: String,
    dir: PathBuf,
    client: kube::Client,
    kubelet: Kubelet,
    /// When the node became Ready (its condition's lastTransitionTime).
    ready_since: String,
    /// The agent's own copy of each pod it runs, by uid: what it last posted as status
    /// (fresher than the last list).
    local: std::sync::Mutex<std::collections::HashMap<String, Value>>,
    /// The pods bound to this node at the last sync, by `namespace/name`.
    pods: std::sync::Mutex<std::collections::HashMap<String, Value>>,
    /// Host programs placed in containers of given images.
    image_programs: Vec<crate::kubelet::programs::ImageProgram>,
}

impl Node {
    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.dir.join("pods").join(uid)
    }

    /// The agent's copy of a pod it runs (container states as it last set them).
    fn local_pod(&self, uid: &str) -> Option<Value> {
        self.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{ns}/{name}"))
            .cloned()
    }
}

/// A running node agent.
pub(in crate::upstream) struct NodeAgent {
    node: Arc<Node>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeAgent {
    /// Mints the node's identities, starts its server, registers the node and starts syncing
    /// its pods.
    pub async fn start(config: NodeConfig<'_>) -> Result<NodeAgent, String> {
        let user = format!("system:node:{}", config.name);
        let identity = config
            .ca
            .sign(Usage::Client {
                user: &user,
                groups: &["system:nodes"],
            })
            .map_err(|e| format!("minting the node's client certificate: {e}"))?;
        let kubeconfig = super::kubeconfig(&config.api_url, &config.ca.ca_pem, &identity, &user);
        let client = super::client_from(&kubeconfig)
            .await
            .map_err(|e| e.to_string())?;
        let listener = bind(config.ip).await?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("reading the node server's address: {e}"))?
            .port();
        let tls = server::tls_config(config.ca, &config.name, config.ip)?;
        let node = Arc::new(Node {
            dir: config.state_dir.join(&config.name),
            name: config.name,
            ip: config.ip,
            api_address: config.api_address,
            client,
            kubelet: Kubelet::default(),
            ready_since: crate::meta::now(),
            local: Default::default(),
            pods: Default::default(),
            image_programs: config.image_programs,
        });
        register(&node, port).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(crate::server::serve(
                listener,
                tls,
                server::router(node.clone()),
                shutdown_rx.clone(),
            )),
            tokio::spawn(heartbeat(node.clone(), port, shutdown_rx.clone())),
            tokio::spawn(pods::sync_loop(node.clone(), shutdown_rx)),
        ];
        tracing::info!(node = node.name, address = %node.ip, port, "node registered");
        Ok(NodeAgent {
            node,
            shutdown,
            tasks,
        })
    }

    /// Stops syncing and serving, and kills the node's pod processes.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.node.kubelet.stop_all();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

async fn bind(ip: Ipv4Addr) -> Result<tokio::net::TcpListener, String> {
    let preferred = SocketAddr::from((ip, KUBELET_PORT));
    match tokio::net::TcpListener::bind(preferred).await {
        Ok(l) => Ok(l),
        Err(_) => tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
            .await
            .map_err(|e| format!("binding the node server on {ip}: {e}")),
    }
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn nodes(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("", "v1", "Node", "nodes"))
}

/// The node's status as a kubelet reports it; `ExtendWebSocketsToKubelet` among the declared
/// features makes the API server proxy WebSocket exec to the node unchanged (see
/// docs/upstream-control-plane.md).
fn node_status(node: &Node, port: u16) -> Value {
    let now = crate::meta::now();
    let resources =
        json!({"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "addresses": [
            {"type": "InternalIP", "address": node.ip.to_string()},
            {"type": "Hostname", "address": node.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "declaredFeatures": ["ExtendWebSocketsToKubelet"],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "nkvm node agent", "containerRuntimeVersion": "bubblewrap://",
            "kubeletVersion": "v1.37.2", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "nkvm node agent is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": node.ready_since,
        }],
    })
}

async fn register(node: &Node, port: u16) -> Result<(), String> {
    let api = nodes(&node.client);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
            },
        },
        "status": node_status(node, port),
    }))
    .map_err(|e| format!("building the Node object: {e}"))?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(format!("registering node {}: {e}", node.name)),
    }
    post_status(node, port).await
}

async fn post_status(node: &Node, port: u16) -> Result<(), String> {
    let patch = json!({"status": node_status(node, port)});
    nodes(&node.client)
        .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("posting the status of node {}: {e}", node.name))
}

async fn renew_lease(node: &Node) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        node.client.clone(),
        "kube-node-lease",
        &resource("coordination.k8s.io", "v1", "Lease", "leases"),
    );
    let renew = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node.name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node.name, "leaseDurationSeconds": 40, "renewTime": renew},
    });
    let params = PatchParams::apply("nkvm-node-agent").force();
    api.patch(&node.name, &params, &Patch::Apply(&lease))
        .await
        .map(|_| ())
        .map_err(|e| format!("renewing the lease of node {}: {e}", node.name))
}

async fn heartbeat(node: Arc<Node>, port: u16, mut shutdown: watch::Receiver<bool>) {
    loop {
        for result in [renew_lease(&node).await, post_status(&node, port).await] {
            if let Err(e) = result {
                tracing::warn!(node = node.name, error = %e, "heartbeat failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = shutdown.changed() => return,
        }
    }
}
