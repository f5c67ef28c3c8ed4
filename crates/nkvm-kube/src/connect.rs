//! Connecting to a cluster. Three auth modes: the pod's ServiceAccount (in-cluster), a
//! kubeconfig file with a chosen context, and a kubeconfig pasted into the UI (vetted by
//! [`crate::kubeconfig::sanitize_pasted`], held in memory only). Connecting means real calls:
//! `/version`, then a permission probe; each way that can fail has its own error naming the
//! server and the auth mode, and saying what to do.

use crate::kubeconfig::{self, KubeconfigError};
use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nkvm_domain::FailureKind;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where the ServiceAccount token of a pod is mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How nkvm authenticates to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The pod's ServiceAccount token and CA (the default inside a pod).
    InCluster,
    /// A kubeconfig file and context.
    Kubeconfig,
    /// A kubeconfig pasted into the UI.
    Paste,
}

impl AuthMode {
    /// In-cluster when the pod environment is present, else kubeconfig.
    pub fn detect() -> AuthMode {
        let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            && std::path::Path::new(SERVICE_ACCOUNT_DIR)
                .join("token")
                .exists();
        if in_pod {
            AuthMode::InCluster
        } else {
            AuthMode::Kubeconfig
        }
    }
}

impl FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "in-cluster" => Ok(AuthMode::InCluster),
            "kubeconfig" => Ok(AuthMode::Kubeconfig),
            "paste" => Ok(AuthMode::Paste),
            other => Err(format!(
                "unknown auth mode {other:?}: use in-cluster, kubeconfig or paste"
            )),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::InCluster => "in-cluster",
            AuthMode::Kubeconfig => "kubeconfig",
            AuthMode::Paste => "paste",
        })
    }
}

/// What to connect with.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Auth mode.
    pub mode: AuthMode,
    /// Kubeconfig file for [`AuthMode::Kubeconfig`] (default: `$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Context for the kubeconfig modes (default: its current context).
    pub context: Option<String>,
    /// The pasted kubeconfig for [`AuthMode::Paste`].
    pub pasted: Option<String>,
    /// Whether a paste may turn TLS verification off or use an `http://` server
    /// (`NKVM_ALLOW_INSECURE_KUBECONFIG`); refused otherwise.
    pub allow_insecure_paste: bool,
    /// Limit for each connection step.
    pub timeout: Duration,
    /// Where the permission probe lists claims: the first of these namespaces, or across all
    /// namespaces when empty (the allowlist).
    pub probe_namespaces: Vec<String>,
}

impl ConnectOptions {
    /// Options for `mode` with defaults (20 s steps, no file, no context).
    pub fn new(mode: AuthMode) -> Self {
        ConnectOptions {
            mode,
            kubeconfig: None,
            context: None,
            pasted: None,
            allow_insecure_paste: false,
            timeout: Duration::from_secs(20),
            probe_namespaces: Vec::new(),
        }
    }
}

/// A connected cluster, identified stably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Stable id: the kube-system namespace's uid, or `server:<url>` when that cannot be read.
    pub id: String,
    /// API server URL.
    pub server: String,
    /// Server version (`v1.32.0`).
    pub version: String,
    /// Kubeconfig context used, if any.
    pub context: Option<String>,
    /// Auth mode used.
    pub mode: AuthMode,
}

/// A live connection.
#[derive(Clone)]
pub struct Connection {
    /// The kube client.
    pub client: Client,
    /// Which cluster it talks to.
    pub info: ClusterInfo,
}

/// What a request through [`Connection::none`]'s client fails with.
pub const NO_CLUSTER: &str =
    "this command runs without a cluster connection, so it cannot call the Kubernetes API";

impl Connection {
    /// No connection, for work on the stores and the history alone (`nkvm copy`): nothing
    /// is read or contacted, `info` is empty (no id, server or version), and every request
    /// through the client fails at once with [`NO_CLUSTER`] instead of reaching a server.
    /// Must be called inside a Tokio runtime (the client's request buffer is a task).
    pub fn none() -> Connection {
        let refuse = tower::service_fn(|_: http::Request<kube::client::Body>| async {
            Err::<http::Response<kube::client::Body>, _>(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                NO_CLUSTER,
            ))
        });
        Connection {
            client: Client::new(refuse, "default"),
            info: ClusterInfo {
                id: String::new(),
                server: String::new(),
                version: String::new(),
                context: None,
                // No mode was used; the command line's is the closest description.
                mode: AuthMode::Kubeconfig,
            },
        }
    }
}

/// Why connecting failed; each variant says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// In-cluster mode outside a pod.
    #[error(
        "in-cluster auth needs a pod environment (KUBERNETES_SERVICE_HOST/PORT and {SERVICE_ACCOUNT_DIR}/token): {0}; outside a cluster use --auth kubeconfig"
    )]
    NotInCluster(String),
    /// Kubeconfig problems (missing, unreadable, refused paste, unknown context).
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// Paste mode without a paste.
    #[error("paste mode needs a kubeconfig text (the UI's connect form)")]
    NothingPasted,
    /// The config could not become a client.
    #[error("preparing the connection to {server} ({mode}): {detail}")]
    Configure {
        /// Server URL.
        server: String,
        /// Auth mode.
        mode: AuthMode,
        /// Details.
        detail: String,
    },
    /// Network failure.
    #[error(
        "cannot reach the Kubernetes API at {server} ({mode}): {detail}; check the server address and that it is reachable from here"
    )]
    Unreachable {
        /// Server URL.
        server: String,
        /// Auth mode.
        mode: AuthMode,
        /// Details.
        detail: String,
    },
    /// TLS failure.
    #[error(
        "TLS with the Kubernetes API at {server} failed ({mode}): {detail}; check the cluster's certificate-authority data"
    )]
    Tls {
        /// Server URL.
        server: String,
        /// Auth mode.
        mode: AuthMode,
        /// Details.
        detail: String,
    },
    /// 401.
    #[error(
        "the Kubernetes API at {server} rejected the credentials ({mode}, 401 Unauthorized): the token or certificate is invalid or expired"
    )]
    Unauthorized {
        /// Server URL.
        server: String,
        /// Auth mode.
        mode: AuthMode,
    },
    /// 403 on the probe.
    #[error("connected to {server} ({mode}) but {detail}")]
    Forbidden {
        /// Server URL.
        server: String,
        /// Auth mode.
        mode: AuthMode,
        /// What is not allowed and what to grant.
        detail: String,
    },
    /// A step took longer than allowed.
    #[error("the Kubernetes API at {server} ({mode}) did not answer within {seconds} s")]
    Timeout {
        /// Server URL.
        server: String,
        /// Auth mode.
        mode: AuthMode,
        /// The limit.
        seconds: u64,
    },
}

impl nkvm_domain::UserError for ConnectError {
    /// The failure kind (exit code, HTTP status).
    fn kind(&self) -> FailureKind {
        match self {
            ConnectError::NotInCluster(_) | ConnectError::NothingPasted => {
                FailureKind::InvalidInput
            }
            ConnectError::Kubeconfig(
                KubeconfigError::Refused(_)
                | KubeconfigError::TooLarge { .. }
                | KubeconfigError::Invalid(_)
                | KubeconfigError::UnknownContext { .. },
            ) => FailureKind::InvalidInput,
            ConnectError::Kubeconfig(_) | ConnectError::Configure { .. } => {
                FailureKind::InvalidInput
            }
            ConnectError::Forbidden { .. } => FailureKind::Forbidden,
            ConnectError::Timeout { .. } => FailureKind::Timeout,
            _ => FailureKind::ClusterUnavailable,
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Classifies a failed API call during connection.
pub fn classify(e: kube::Error, server: &str, mode: AuthMode) -> ConnectError {
    let server = server.to_string();
    match e {
        kube::Error::Api(status) if status.code == 401 => {
            ConnectError::Unauthorized { server, mode }
        }
        kube::Error::Api(status) if status.code == 403 => ConnectError::Forbidden {
            server,
            mode,
            detail: status.message.clone(),
        },
        other => {
            let detail = chain(&other);
            let lower = detail.to_lowercase();
            if ["certificate", "tls", "handshake", "unknownissuer", "x509"]
                .iter()
                .any(|k| lower.contains(k))
            {
                ConnectError::Tls {
                    server,
                    mode,
                    detail,
                }
            } else {
                ConnectError::Unreachable {
                    server,
                    mode,
                    detail,
                }
            }
        }
    }
}

async fn config_for(opts: &ConnectOptions) -> Result<(Config, Option<String>), ConnectError> {
    let from_kubeconfig = |kc: Kubeconfig| async {
        kubeconfig::require_context(&kc, opts.context.as_deref())?;
        let context = opts.context.clone().or_else(|| kc.current_context.clone());
        let options = KubeConfigOptions {
            context: opts.context.clone(),
            cluster: None,
            user: None,
        };
        let config = Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| ConnectError::Configure {
                server: "(kubeconfig)".into(),
                mode: opts.mode,
                // A paste's text must not reach the page or the log.
                detail: if opts.mode == AuthMode::Paste {
                    kubeconfig::describe(&e)
                } else {
                    e.to_string()
                },
            })?;
        Ok::<_, ConnectError>((config, context))
    };
    match opts.mode {
        AuthMode::InCluster => Config::incluster()
            .map(|c| (c, None))
            .map_err(|e| ConnectError::NotInCluster(e.to_string())),
        AuthMode::Kubeconfig => {
            let (kc, _) = kubeconfig::read(opts.kubeconfig.as_deref())?;
            from_kubeconfig(kc).await
        }
        AuthMode::Paste => {
            let text = opts.pasted.as_deref().ok_or(ConnectError::NothingPasted)?;
            let kc = kubeconfig::sanitize_pasted(text, opts.allow_insecure_paste)?;
            if kubeconfig::is_insecure(&kc) {
                tracing::warn!(
                    "a pasted kubeconfig turns TLS verification off or uses http:// (allowed by NKVM_ALLOW_INSECURE_KUBECONFIG)"
                );
            }
            from_kubeconfig(kc).await
        }
    }
}

async fn within<T>(
    opts: &ConnectOptions,
    server: &str,
    f: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ConnectError> {
    match tokio::time::timeout(opts.timeout, f).await {
        Ok(r) => r.map_err(|e| classify(e, server, opts.mode)),
        Err(_) => Err(ConnectError::Timeout {
            server: server.into(),
            mode: opts.mode,
            seconds: opts.timeout.as_secs(),
        }),
    }
}

/// Connects: builds the client, asks `/version`, and identifies the cluster.
pub async fn connect(opts: &ConnectOptions) -> Result<Connection, ConnectError> {
    let (mut config, context) = config_for(opts).await?;
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    config.connect_timeout = Some(opts.timeout);
    let client = Client::try_from(config).map_err(|e| ConnectError::Configure {
        server: server.clone(),
        mode: opts.mode,
        detail: chain(&e),
    })?;
    let version = within(opts, &server, client.apiserver_version()).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let id = match within(opts, &server, namespaces.get("kube-system")).await {
        Ok(ns) => ns.metadata.uid.unwrap_or_default(),
        // Identification must not need more than discovery's permissions; fall back to the URL.
        Err(ConnectError::Forbidden { .. }) => String::new(),
        Err(e) => return Err(e),
    };
    let id = if id.is_empty() {
        format!("server:{server}")
    } else {
        id
    };
    probe(&client, opts, &server).await?;
    let info = ClusterInfo {
        id,
        server,
        version: version.git_version,
        context,
        mode: opts.mode,
    };
    Ok(Connection { client, info })
}

/// Lists one claim where nkvm will work, so missing permissions show at connect time.
async fn probe(client: &Client, opts: &ConnectOptions, server: &str) -> Result<(), ConnectError> {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let (api, scope): (Api<PersistentVolumeClaim>, String) = match opts.probe_namespaces.first() {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            format!("in namespace {ns}"),
        ),
        None => (Api::all(client.clone()), "across all namespaces".into()),
    };
    match within(
        opts,
        server,
        api.list(&kube::api::ListParams::default().limit(1)),
    )
    .await
    {
        Err(ConnectError::Forbidden {
            server,
            mode,
            detail,
        }) => Err(ConnectError::Forbidden {
            server,
            mode,
            detail: format!(
                "may not list PersistentVolumeClaims {scope} ({detail}); {}",
                if opts.probe_namespaces.is_empty() {
                    "bind the nkvm-cluster-discovery ClusterRole to this identity, or set --namespaces to the namespaces it may use"
                } else {
                    "grant this identity list on persistentvolumeclaims and pods there (a RoleBinding to nkvm's runtime role)"
                }
            ),
        }),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_modes_parse_and_print_their_flag_names() {
        for m in ["in-cluster", "kubeconfig", "paste"] {
            assert_eq!(m.parse::<AuthMode>().unwrap().to_string(), m);
        }
        assert!(
            "token"
                .parse::<AuthMode>()
                .unwrap_err()
                .contains("use in-cluster, kubeconfig or paste")
        );
    }

    #[tokio::test]
    async fn no_connection_refuses_every_request_at_once_saying_why() {
        let none = Connection::none();
        assert!(none.info.server.is_empty());
        let namespaces: Api<Namespace> = Api::all(none.client);
        let refused = tokio::time::timeout(Duration::from_secs(5), namespaces.get("kube-system"))
            .await
            .expect("refused at once, not after a network timeout")
            .expect_err("no server answers");
        assert!(format!("{refused:?}").contains(NO_CLUSTER), "{refused:?}");
        assert_eq!(
            crate::failure_kind(&refused),
            FailureKind::ClusterUnavailable
        );
    }
}
