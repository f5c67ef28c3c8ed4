//! Kubeconfig files: reading them for `nkvm contexts`, and refusing pasted kubeconfigs that
//! could make the server run programs or read its own files.
//!
//! kube-rs runs `exec` credential plugins when a client is built and reads `tokenFile`,
//! `client-certificate`, `client-key` and `certificate-authority` paths from local disk; it has
//! no switch to disable either, so an untrusted kubeconfig is checked here before a `Config` is
//! ever made from it. The `*-data` forms and bearer tokens carry their secrets inline and are
//! accepted. A pasted kubeconfig is only ever held in memory.
//!
//! Errors never quote a kubeconfig: the YAML parser's messages carry a snippet of the input
//! (and serde's name the offending value), and a kubeconfig holds tokens and keys. A parse
//! error says only where (line and column); a refused entry is named by its position
//! (`users[0]`), not by text of the paste.

use kube::config::Kubeconfig;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Largest pasted kubeconfig accepted.
pub const MAX_PASTED_BYTES: usize = 1 << 20;
/// Largest kubeconfig file read (merged configs of many clusters stay far below this).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

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
    /// The pasted text is not a kubeconfig; the message says where, never what.
    #[error(
        "the pasted text is not a valid kubeconfig: {0} (the text is not shown, as it may hold credentials)"
    )]
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
/// A named file must be a regular file (a FIFO would block the reader) of at most
/// [`MAX_FILE_BYTES`] that looks like a kubeconfig; errors say where, never what, it holds.
pub fn read(path: Option<&Path>) -> Result<(Kubeconfig, String), KubeconfigError> {
    if let Some(p) = path {
        let failed = |detail: String| KubeconfigError::Read {
            path: p.to_path_buf(),
            detail,
        };
        vet_file(p).map_err(failed)?;
        let kc = Kubeconfig::read_from(p).map_err(|e| failed(describe(&e)))?;
        return Ok((kc, p.display().to_string()));
    }
    let source = std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into());
    match Kubeconfig::read() {
        Ok(kc) => Ok((kc, source)),
        Err(e) => {
            if std::env::var_os("KUBECONFIG").is_none() && !home_config_exists() {
                Err(KubeconfigError::Missing)
            } else {
                Err(KubeconfigError::Read {
                    path: source.into(),
                    detail: describe(&e),
                })
            }
        }
    }
}

/// Checks a kubeconfig file before kube reads it: a regular file, not too large, YAML that
/// parses into a kubeconfig with a cluster or `kind: Config`.
fn vet_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes; a kubeconfig is at most {MAX_FILE_BYTES} bytes",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        format!(
            "not a kubeconfig: not UTF-8 text (at byte {})",
            e.valid_up_to()
        )
    })?;
    let kc = parse(text).map_err(|where_| format!("not a kubeconfig: {where_}"))?;
    if looks_like_kubeconfig(&kc) {
        Ok(())
    } else {
        Err("not a kubeconfig: it has no `kind: Config` and no clusters".into())
    }
}

/// Whether parsed YAML is a kubeconfig rather than some other YAML that happens to parse.
fn looks_like_kubeconfig(kc: &Kubeconfig) -> bool {
    kc.kind.as_deref() == Some("Config") || !kc.clusters.is_empty()
}

/// Parses kubeconfig YAML; the error says only where the text is wrong.
fn parse(text: &str) -> Result<Kubeconfig, String> {
    Kubeconfig::from_yaml(text).map_err(|e| describe(&e))
}

/// A kube kubeconfig error without any text of the kubeconfig: parse errors become their
/// position, context lookups their kind (kube's messages quote the names).
pub(crate) fn describe(e: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as K;
    match e {
        K::Parse(err) => match err.location() {
            Some(at) => format!(
                "invalid YAML or kubeconfig structure at line {}, column {}",
                at.line(),
                at.column()
            ),
            None => "invalid YAML or kubeconfig structure".into(),
        },
        K::ReadConfig(io, _) => format!("cannot read it: {io}"),
        K::LoadContext(_) => "its current context is not among its contexts".into(),
        K::LoadClusterOfContext(_) => "the context's cluster is not among its clusters".into(),
        _ => e.to_string(),
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
/// TLS without verification (`insecure-skip-tls-verify`) or a plain `http://` server is
/// refused unless `allow_insecure`: either would hand the paste's token to whoever sits on
/// the path.
pub fn sanitize_pasted(text: &str, allow_insecure: bool) -> Result<Kubeconfig, KubeconfigError> {
    if text.len() > MAX_PASTED_BYTES {
        return Err(KubeconfigError::TooLarge {
            size: text.len(),
            limit: MAX_PASTED_BYTES,
        });
    }
    let kc = parse(text).map_err(KubeconfigError::Invalid)?;
    let mut problems = user_problems(&kc);
    problems.extend(cluster_problems(&kc, allow_insecure));
    if problems.is_empty() {
        Ok(kc)
    } else {
        Err(KubeconfigError::Refused(problems.join("; ")))
    }
}

/// What a paste's users ask of the server that it must not do; entries by position.
fn user_problems(kc: &Kubeconfig) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, user) in kc.auth_infos.iter().enumerate() {
        let Some(a) = &user.auth_info else { continue };
        let name = format!("users[{i}]");
        if a.exec.is_some() {
            problems.push(format!("{name} uses an exec credential plugin, which would run a program on the nkvm server; paste a kubeconfig with a token or client-certificate-data instead"));
        }
        if a.auth_provider.is_some() {
            problems.push(format!(
                "{name} uses an auth-provider plugin; paste a kubeconfig with a token instead"
            ));
        }
        for (field, set) in [
            ("tokenFile", a.token_file.is_some()),
            ("client-certificate", a.client_certificate.is_some()),
            ("client-key", a.client_key.is_some()),
        ] {
            if set {
                problems.push(format!("{name} names a local file ({field}), which would be read from the nkvm server's disk; use the inline form (token, client-certificate-data, client-key-data)"));
            }
        }
    }
    problems
}

/// What a paste's clusters ask of the server that it must not do; entries by position.
fn cluster_problems(kc: &Kubeconfig, allow_insecure: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, cluster) in kc.clusters.iter().enumerate() {
        let Some(c) = &cluster.cluster else { continue };
        let name = format!("clusters[{i}]");
        if c.certificate_authority.is_some() {
            problems.push(format!("{name} names a local file (certificate-authority), which would be read from the nkvm server's disk; use certificate-authority-data"));
        }
        if c.proxy_url.is_some() {
            problems.push(format!("{name} sets proxy-url, which would send nkvm's traffic through a proxy of the paster's choosing"));
        }
        if allow_insecure {
            continue;
        }
        if c.insecure_skip_tls_verify == Some(true) {
            problems.push(format!("{name} sets insecure-skip-tls-verify, so anyone between nkvm and the API server could read the credentials; use certificate-authority-data (or start nkvm with NKVM_ALLOW_INSECURE_KUBECONFIG=true)"));
        }
        let plain = c
            .server
            .as_deref()
            .is_some_and(|s| s.trim_start().to_ascii_lowercase().starts_with("http://"));
        if plain {
            problems.push(format!("{name} has an http:// server, which would send the credentials unencrypted; use https:// (or start nkvm with NKVM_ALLOW_INSECURE_KUBECONFIG=true)"));
        }
    }
    problems
}

/// Whether a kubeconfig (accepted with `allow_insecure`) talks to a cluster without verified
/// TLS, so the connection can be flagged.
pub(crate) fn is_insecure(kc: &Kubeconfig) -> bool {
    kc.clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref())
        .any(|c| {
            c.insecure_skip_tls_verify == Some(true)
                || c.server
                    .as_deref()
                    .is_some_and(|s| s.trim_start().to_ascii_lowercase().starts_with("http://"))
        })
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
        let kc = sanitize_pasted(GOOD, false).unwrap();
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
                "users[0] uses an exec credential plugin",
            ),
            (
                "    token: abc\n",
                "    auth-provider:\n      name: oidc\n",
                "users[0] uses an auth-provider",
            ),
            (
                "    token: abc\n",
                "    tokenFile: /etc/shadow\n",
                "users[0] names a local file (tokenFile)",
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
                "clusters[0] names a local file (certificate-authority)",
            ),
            (
                "    certificate-authority-data: Y2E=\n",
                "    certificate-authority-data: Y2E=\n    proxy-url: http://evil:3128\n",
                "clusters[0] sets proxy-url",
            ),
        ];
        for (from, to, want) in cases {
            let err = sanitize_pasted(&GOOD.replace(from, to), false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }

    #[test]
    fn oversized_and_malformed_pastes_get_clear_errors() {
        let big = "x".repeat(MAX_PASTED_BYTES + 1);
        assert!(matches!(
            sanitize_pasted(&big, false),
            Err(KubeconfigError::TooLarge { .. })
        ));
        let err = sanitize_pasted("clusters: [unterminated", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the pasted text is not a valid kubeconfig"),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_paste_is_located_by_line_and_column_and_never_quoted() {
        let secret = "sha256~TOKEN-THAT-MUST-NOT-LEAK";
        let pastes = [
            // A YAML syntax error right after the token: the parser's snippet would quote it.
            format!(
                "{}    token: {secret}\n  - [unterminated\n",
                GOOD.split("    token").next().unwrap()
            ),
            // A type error: serde's message would name the value.
            format!("clusters: {secret}\n"),
            // A user name carrying the secret, refused for its exec plugin.
            GOOD.replace(
                "- name: u\n  user:\n    token: abc\n",
                &format!("- name: {secret}\n  user:\n    exec:\n      command: /bin/true\n"),
            ),
        ];
        for paste in pastes {
            let err = sanitize_pasted(&paste, false).unwrap_err().to_string();
            assert!(!err.contains("TOKEN"), "the error quotes the paste: {err}");
            assert!(
                !err.contains("sha256~"),
                "the error quotes the paste: {err}"
            );
        }
        let err = sanitize_pasted(&format!("clusters: {secret}\n"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at line 1, column"), "{err}");
    }

    #[test]
    fn tls_without_verification_and_plain_http_are_refused_unless_allowed() {
        let skip = GOOD.replace(
            "    certificate-authority-data: Y2E=\n",
            "    insecure-skip-tls-verify: true\n",
        );
        let http = GOOD.replace("https://127.0.0.1:6443", "http://127.0.0.1:6443");
        for (paste, want) in [
            (&skip, "insecure-skip-tls-verify"),
            (&http, "http:// server"),
        ] {
            let err = sanitize_pasted(paste, false).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.contains("NKVM_ALLOW_INSECURE_KUBECONFIG"), "{err}");
            let kc = sanitize_pasted(paste, true).unwrap();
            assert!(is_insecure(&kc));
        }
        assert!(!is_insecure(&sanitize_pasted(GOOD, false).unwrap()));
    }

    #[test]
    fn a_file_that_is_not_a_kubeconfig_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "hunter2-secret\n").unwrap();
        let other_yaml = dir.path().join("values.yaml");
        std::fs::write(&other_yaml, "replicas: 3\npassword: hunter2-secret\n").unwrap();
        for path in [&password, &other_yaml] {
            let err = read(Some(path)).unwrap_err().to_string();
            assert!(err.contains("not a kubeconfig"), "{err}");
            assert!(!err.contains("hunter2"), "the error quotes the file: {err}");
        }
        let good = dir.path().join("config");
        std::fs::write(&good, GOOD).unwrap();
        assert_eq!(contexts(&read(Some(&good)).unwrap().0).len(), 1);
        let err = read(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn an_unknown_context_lists_the_ones_that_exist() {
        let kc = sanitize_pasted(GOOD, false).unwrap();
        let err = require_context(&kc, Some("prod")).unwrap_err().to_string();
        assert_eq!(
            err,
            "context \"prod\" is not in the kubeconfig; available contexts: ctx"
        );
    }
}
