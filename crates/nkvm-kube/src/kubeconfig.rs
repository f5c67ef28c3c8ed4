//! Kubeconfig files: reading them for `nkvm contexts`, and refusing pasted kubeconfigs that
//! could make the server run programs or read its own files.
//!
//! kube-rs runs `exec` credential plugins when a client is built and reads `tokenFile`,
//! `client-certificate`, `client-key` and `certificate-authority` paths from local disk; it has
//! no switch to disable either, so an untrusted kubeconfig is checked here before a `Config` is
//! ever made from it. The `*-data` forms and bearer tokens carry their secrets inline and are
//! accepted. A pasted kubeconfig is only ever held in memory.

use kube::config::Kubeconfig;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Largest pasted kubeconfig accepted.
pub const MAX_PASTED_BYTES: usize = 1 << 20;

/// Why a kubeconfig was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The file could not be read or parsed.
    #[error("reading kubeconfig {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// No kubeconfig found where looked.
    #[error(
        "no kubeconfig found: pass --kubeconfig PATH, set KUBECONFIG, or create ~/.kube/config"
    )]
    Missing,
    /// The pasted text is not a kubeconfig.
    #[error("the pasted text is not a valid kubeconfig: {0}")]
    Invalid(String),
    /// The pasted text is larger than [`MAX_PASTED_BYTES`].
    #[error("the pasted kubeconfig is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Size of what was pasted.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The pasted kubeconfig asks for something a server must never do for a paste.
    #[error("refused the pasted kubeconfig: {0}")]
    Refused(String),
    /// The named context does not exist.
    #[error("context {name:?} is not in the kubeconfig; available contexts: {}", if available.is_empty() { "(none)".to_string() } else { available.join(", ") })]
    UnknownContext {
        /// The context asked for.
        name: String,
        /// Contexts that do exist.
        available: Vec<String>,
    },
}

/// Reads a kubeconfig: `path` if given, else `$KUBECONFIG` (merged), else `~/.kube/config`.
pub fn read(path: Option<&Path>) -> Result<(Kubeconfig, String), KubeconfigError> {
    if let Some(p) = path {
        let kc = Kubeconfig::read_from(p).map_err(|e| KubeconfigError::Read {
            path: p.to_path_buf(),
            detail: e.to_string(),
        })?;
        return Ok((kc, p.display().to_string()));
    }
    let source = std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into());
    match Kubeconfig::read() {
        Ok(kc) => Ok((kc, source)),
        Err(e) => {
            let detail = e.to_string();
            if std::env::var_os("KUBECONFIG").is_none() && !home_config_exists() {
                Err(KubeconfigError::Missing)
            } else {
                Err(KubeconfigError::Read {
                    path: source.into(),
                    detail,
                })
            }
        }
    }
}

fn home_config_exists() -> bool {
    std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".kube/config").exists())
}

/// Checks that `context` (if given) exists.
pub fn require_context(kc: &Kubeconfig, context: Option<&str>) -> Result<(), KubeconfigError> {
    let Some(name) = context else { return Ok(()) };
    if kc.contexts.iter().any(|c| c.name == name) {
        return Ok(());
    }
    Err(KubeconfigError::UnknownContext {
        name: name.into(),
        available: kc.contexts.iter().map(|c| c.name.clone()).collect(),
    })
}

/// Parses and vets a pasted kubeconfig (see the module docs for what is refused and why).
pub fn sanitize_pasted(text: &str) -> Result<Kubeconfig, KubeconfigError> {
    if text.len() > MAX_PASTED_BYTES {
        return Err(KubeconfigError::TooLarge {
            size: text.len(),
            limit: MAX_PASTED_BYTES,
        });
    }
    let kc = Kubeconfig::from_yaml(text).map_err(|e| KubeconfigError::Invalid(e.to_string()))?;
    let mut problems = Vec::new();
    for user in &kc.auth_infos {
        let Some(a) = &user.auth_info else { continue };
        let name = &user.name;
        if a.exec.is_some() {
            problems.push(format!("user {name:?} uses an exec credential plugin, which would run a program on the nkvm server; paste a kubeconfig with a token or client-certificate-data instead"));
        }
        if a.auth_provider.is_some() {
            problems.push(format!("user {name:?} uses an auth-provider plugin; paste a kubeconfig with a token instead"));
        }
        for (field, set) in [
            ("tokenFile", a.token_file.is_some()),
            ("client-certificate", a.client_certificate.is_some()),
            ("client-key", a.client_key.is_some()),
        ] {
            if set {
                problems.push(format!("user {name:?} names a local file ({field}), which would be read from the nkvm server's disk; use the inline form (token, client-certificate-data, client-key-data)"));
            }
        }
    }
    for cluster in &kc.clusters {
        let Some(c) = &cluster.cluster else { continue };
        let name = &cluster.name;
        if c.certificate_authority.is_some() {
            problems.push(format!("cluster {name:?} names a local file (certificate-authority), which would be read from the nkvm server's disk; use certificate-authority-data"));
        }
        if c.proxy_url.is_some() {
            problems.push(format!("cluster {name:?} sets proxy-url, which would send nkvm's traffic through a proxy of the paster's choosing"));
        }
    }
    if problems.is_empty() {
        Ok(kc)
    } else {
        Err(KubeconfigError::Refused(problems.join("; ")))
    }
}

/// One context, for `nkvm contexts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextSummary {
    /// Whether it is the current context.
    pub current: bool,
    /// Context name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// The cluster's server URL.
    pub server: String,
    /// User name.
    pub user: String,
    /// Default namespace ("" if none).
    pub namespace: String,
}

/// The contexts of a kubeconfig, in file order.
pub fn contexts(kc: &Kubeconfig) -> Vec<ContextSummary> {
    kc.contexts
        .iter()
        .map(|c| {
            let ctx = c.context.as_ref();
            let cluster = ctx.map(|x| x.cluster.clone()).unwrap_or_default();
            let server = kc
                .clusters
                .iter()
                .find(|k| k.name == cluster)
                .and_then(|k| k.cluster.as_ref())
                .and_then(|k| k.server.clone())
                .unwrap_or_default();
            ContextSummary {
                current: kc.current_context.as_deref() == Some(c.name.as_str()),
                name: c.name.clone(),
                cluster,
                server,
                user: ctx.and_then(|x| x.user.clone()).unwrap_or_default(),
                namespace: ctx.and_then(|x| x.namespace.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

impl nkvm_domain::UserError for KubeconfigError {
    fn kind(&self) -> nkvm_domain::FailureKind {
        use nkvm_domain::FailureKind;
        match self {
            KubeconfigError::Read { .. } | KubeconfigError::Missing => FailureKind::NotFound,
            KubeconfigError::UnknownContext { .. } => FailureKind::NotFound,
            KubeconfigError::Invalid(_)
            | KubeconfigError::TooLarge { .. }
            | KubeconfigError::Refused(_) => FailureKind::InvalidInput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Y2E=
users:
- name: u
  user:
    token: abc
contexts:
- name: ctx
  context: {cluster: c, user: u, namespace: shop}
current-context: ctx
";

    #[test]
    fn inline_credentials_are_accepted() {
        let kc = sanitize_pasted(GOOD).unwrap();
        let ctx = contexts(&kc);
        assert_eq!(ctx.len(), 1);
        assert!(ctx[0].current);
        assert_eq!(
            (ctx[0].server.as_str(), ctx[0].namespace.as_str()),
            ("https://127.0.0.1:6443", "shop")
        );
    }

    #[test]
    fn every_dangerous_field_is_refused_with_the_user_or_cluster_named() {
        let cases = [
            (
                "    token: abc\n",
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/touch\n      args: [/tmp/pwned]\n",
                "user \"u\" uses an exec credential plugin",
            ),
            (
                "    token: abc\n",
                "    auth-provider:\n      name: oidc\n",
                "user \"u\" uses an auth-provider",
            ),
            (
                "    token: abc\n",
                "    tokenFile: /etc/shadow\n",
                "user \"u\" names a local file (tokenFile)",
            ),
            (
                "    token: abc\n",
                "    client-certificate: /etc/cert\n",
                "(client-certificate)",
            ),
            (
                "    token: abc\n",
                "    client-key: /etc/key\n",
                "(client-key)",
            ),
            (
                "    certificate-authority-data: Y2E=\n",
                "    certificate-authority: /etc/ca\n",
                "cluster \"c\" names a local file (certificate-authority)",
            ),
            (
                "    certificate-authority-data: Y2E=\n",
                "    certificate-authority-data: Y2E=\n    proxy-url: http://evil:3128\n",
                "cluster \"c\" sets proxy-url",
            ),
        ];
        for (from, to, want) in cases {
            let err = sanitize_pasted(&GOOD.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }

    #[test]
    fn oversized_and_malformed_pastes_get_clear_errors() {
        let big = "x".repeat(MAX_PASTED_BYTES + 1);
        assert!(matches!(
            sanitize_pasted(&big),
            Err(KubeconfigError::TooLarge { .. })
        ));
        let err = sanitize_pasted("clusters: [unterminated")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the pasted text is not a valid kubeconfig"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_context_lists_the_ones_that_exist() {
        let kc = sanitize_pasted(GOOD).unwrap();
        let err = require_context(&kc, Some("prod")).unwrap_err().to_string();
        assert_eq!(
            err,
            "context \"prod\" is not in the kubeconfig; available contexts: ctx"
        );
    }
}
