//! The policies in force while `nkvm serve` runs, shared by the scheduler (which reads them
//! every tick, so a change made in the UI applies without a restart) and the web UI (which
//! shows them and adds, edits and deletes its own). File policies are read-only here. The book
//! also holds the scheduler's own cluster connections, one per cluster a policy names (the
//! default, `""`, is the one `nkvm serve` was started against): the dashboard reads those
//! clusters' claims, never the browser's connection.

use crate::App;
use crate::lifecycle::now_rfc3339;
use crate::scheduler::SharedPolicies;
use crate::workspace::Workspace;
use nkvm_history::UiPolicyRow;
use nkvm_kube::{AuthMode, ConnectOptions};
use nkvm_policy::file::{Context, PolicySource, PolicySpec, validate, validate_all};
use nkvm_policy::{Policy, PolicyError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A problem with a form's field: the field (`name`, `schedule/timezone`, `namespaces`,
/// `notify.webhook`, ...) and the message.
pub type FieldProblem = (String, String);

/// A context of a kubeconfig below the remote directory, that a policy may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteContext {
    /// Context name.
    pub name: String,
    /// The kubeconfig file holding it.
    pub kubeconfig: PathBuf,
    /// Its API server.
    pub server: String,
}

/// The contexts of the kubeconfig files directly below `dir` (a mounted Secret's files;
/// hidden entries such as Kubernetes' `..data` are skipped). Files that do not parse are left
/// out. The first file naming a context wins.
pub fn remote_contexts(dir: &Path) -> Vec<RemoteContext> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut out: Vec<RemoteContext> = Vec::new();
    for file in files {
        let Ok((kc, _)) = nkvm_kube::kubeconfig::read(Some(&file)) else {
            continue;
        };
        for c in nkvm_kube::kubeconfig::contexts(&kc) {
            if !out.iter().any(|o| o.name == c.name) {
                out.push(RemoteContext {
                    name: c.name,
                    kubeconfig: file.clone(),
                    server: c.server,
                });
            }
        }
    }
    out
}

/// The policies in force, and the scheduler's connections.
pub struct PolicyBook {
    workspace: Arc<Workspace>,
    remote_dir: PathBuf,
    file: RwLock<Option<PathBuf>>,
    file_policies: RwLock<Vec<Policy>>,
    shared: SharedPolicies,
    clusters: RwLock<BTreeMap<String, Arc<App>>>,
    /// Bumped whenever the policies in force change.
    changes: tokio::sync::watch::Sender<u64>,
}

fn history_error(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Syntax {
        path: "the history database".into(),
        detail: e.to_string(),
    }
}

impl PolicyBook {
    /// A book with the UI policies of `workspace`'s history (no file yet); `remote_dir` is
    /// where the kubeconfigs of the clusters policies may name are mounted.
    pub fn new(workspace: Arc<Workspace>, remote_dir: PathBuf) -> PolicyBook {
        let book = PolicyBook {
            workspace,
            remote_dir,
            file: RwLock::default(),
            file_policies: RwLock::default(),
            shared: SharedPolicies::default(),
            clusters: RwLock::default(),
            changes: tokio::sync::watch::channel(0).0,
        };
        if let Err(e) = book.reload() {
            tracing::error!("the UI-made policies could not be loaded: {e}");
        }
        book
    }

    /// Loads and validates the policy file (and, against it, the UI policies); on error
    /// nothing changes.
    pub fn load_file(&self, file: Option<&Path>) -> Result<(), PolicyError> {
        let loaded = crate::policy_set::load(
            file,
            self.workspace.history(),
            &self.workspace.settings().allowlist,
            &self.workspace.stores().names(),
        )?;
        self.check_clusters(&loaded)?;
        let file_policies: Vec<Policy> = loaded
            .iter()
            .filter(|p| p.source == PolicySource::File)
            .cloned()
            .collect();
        *self.file.write().unwrap_or_else(|e| e.into_inner()) = file.map(Path::to_path_buf);
        *self
            .file_policies
            .write()
            .unwrap_or_else(|e| e.into_inner()) = file_policies;
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The policy file, if one was loaded.
    pub fn file(&self) -> Option<PathBuf> {
        self.file.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The list the scheduler reads each tick.
    pub fn shared(&self) -> SharedPolicies {
        self.shared.clone()
    }

    /// Changes whenever the policies in force do (a cluster a new policy names is connected to
    /// without waiting).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every policy in force: the file's, then the UI's.
    pub fn policies(&self) -> Vec<Policy> {
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The contexts below the remote directory, which policies may name as their cluster.
    pub fn remote_contexts(&self) -> Vec<RemoteContext> {
        remote_contexts(&self.remote_dir)
    }

    /// The remote directory.
    pub fn remote_dir(&self) -> &Path {
        &self.remote_dir
    }

    /// Options to connect to the cluster of context `name` below the remote directory.
    pub fn connect_options(&self, name: &str) -> Option<ConnectOptions> {
        let found = self
            .remote_contexts()
            .into_iter()
            .find(|c| c.name == name)?;
        let mut opts = ConnectOptions::new(AuthMode::Kubeconfig);
        opts.kubeconfig = Some(found.kubeconfig);
        opts.context = Some(found.name);
        Some(opts)
    }

    fn check_clusters(&self, policies: &[Policy]) -> Result<(), PolicyError> {
        let named: Vec<&Policy> = policies.iter().filter(|p| p.cluster.is_some()).collect();
        if named.is_empty() {
            return Ok(());
        }
        let known: Vec<String> = self.remote_contexts().into_iter().map(|c| c.name).collect();
        let problems: Vec<String> = named
            .iter()
            .filter_map(|p| {
                let c = p.cluster.as_deref().unwrap_or_default();
                (!known.iter().any(|k| k == c))
                    .then(|| format!("policy {:?}: {}", p.name, self.unknown_cluster(c, &known)))
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Invalid {
                where_: "the policies (file and UI)".into(),
                problems,
            })
        }
    }

    fn unknown_cluster(&self, name: &str, known: &[String]) -> String {
        format!(
            "cluster: {name:?} is not a context of a kubeconfig below {} (found: {}); mount the \
             cluster's kubeconfig there, or omit cluster to use the one nkvm serve was started against",
            self.remote_dir.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    }

    /// Reads the UI policies from the history again, with the file policies kept.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let file = self
            .file_policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut specs: Vec<PolicySpec> = file.iter().map(|p| p.spec.clone()).collect();
        for row in self
            .workspace
            .history()
            .ui_policies()
            .map_err(history_error)?
        {
            specs.push(
                serde_json::from_str(&row.spec).map_err(|e| PolicyError::Syntax {
                    path: format!("UI policy {:?} in the history database", row.name),
                    detail: e.to_string(),
                })?,
            );
        }
        let stores = self.workspace.stores().names();
        let ctx = Context {
            allowlist: &self.workspace.settings().allowlist,
            stores: &stores,
        };
        let ui = validate_all(specs, PolicySource::Ui, "the policies (file and UI)", &ctx)?;
        let mut all = file.clone();
        all.extend(ui.into_iter().skip(file.len()));
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = all;
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The problems of `spec` as a UI policy, each with its field; empty when it is valid.
    pub fn problems(&self, spec: &PolicySpec) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        let file_name = self
            .file_policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|p| p.name == spec.name);
        if file_name {
            problems.push((
                "name".to_string(),
                format!(
                    "{:?} is a policy of the policy file, which the UI cannot change; choose another name",
                    spec.name
                ),
            ));
        }
        let stores = self.workspace.stores().names();
        let ctx = Context {
            allowlist: &self.workspace.settings().allowlist,
            stores: &stores,
        };
        match validate(spec.clone(), PolicySource::Ui, &ctx) {
            Ok(p) => {
                if let Some(c) = p.cluster.as_deref() {
                    let known: Vec<String> =
                        self.remote_contexts().into_iter().map(|c| c.name).collect();
                    if !known.iter().any(|k| k == c) {
                        let msg = self.unknown_cluster(c, &known);
                        let msg = msg.strip_prefix("cluster: ").unwrap_or(&msg).to_string();
                        problems.push(("cluster".into(), msg));
                    }
                }
            }
            Err(list) => problems.extend(list.into_iter().map(|m| split_field(&m))),
        }
        problems
    }

    /// Validates and saves a UI policy as `actor` (creating or replacing it), then puts it in
    /// force; `Err` lists the problems by field.
    pub fn save_ui(&self, spec: PolicySpec, actor: &str) -> Result<(), Vec<FieldProblem>> {
        let problems = self.problems(&spec);
        if !problems.is_empty() {
            return Err(problems);
        }
        let saved = serde_json::to_string(&spec)
            .map_err(history_error)
            .and_then(|json| {
                self.workspace
                    .history()
                    .save_ui_policy(&UiPolicyRow {
                        name: spec.name.clone(),
                        spec: json,
                        updated_at: now_rfc3339(),
                        updated_by: actor.into(),
                    })
                    .map_err(history_error)
            })
            .and_then(|()| self.reload());
        match saved {
            Ok(()) => {
                self.workspace
                    .audit(actor, "policy.save", &spec.name, &spec.schedule);
                Ok(())
            }
            Err(e) => Err(vec![("form".into(), e.to_string())]),
        }
    }

    /// Deletes UI policy `name` as `actor`; `Err` says why not (a file policy, or none).
    pub fn delete_ui(&self, name: &str, actor: &str) -> Result<(), String> {
        let file_name = self
            .file_policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|p| p.name == name);
        if file_name {
            return Err(format!(
                "{name:?} is a policy of the policy file; change the file to remove it"
            ));
        }
        match self.workspace.history().delete_ui_policy(name) {
            Ok(true) => {}
            Ok(false) => return Err(format!("there is no UI policy {name:?}")),
            Err(e) => return Err(e.to_string()),
        }
        self.reload().map_err(|e| e.to_string())?;
        self.workspace.audit(actor, "policy.delete", name, "");
        Ok(())
    }

    /// Records the scheduler's connection to `cluster` (`""`: the default cluster).
    pub fn set_cluster(&self, cluster: &str, app: Arc<App>) {
        self.clusters
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cluster.into(), app);
    }

    /// The scheduler's connections, by cluster name (`""` first: the default).
    pub fn clusters(&self) -> Vec<(String, Arc<App>)> {
        self.clusters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// `"field: message"` as its parts (`form` when there is no field).
fn split_field(problem: &str) -> FieldProblem {
    match problem.split_once(": ") {
        Some((field, msg)) if !field.contains(' ') => (field.into(), msg.into()),
        _ => ("form".into(), problem.into()),
    }
}

#[cfg(test)]
mod tests;
