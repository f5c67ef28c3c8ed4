//! Planning a restore: every check that can refuse it runs here, before anything changes in
//! the cluster. [`App::plan_restore`] gathers the facts (the backup's row, its manifest, a
//! full re-read of its archive, the target claim and who mounts it); [`decide`] turns them
//! into a [`RestorePlan`] without I/O, so the rules are unit-tested and the UI and
//! `--dry-run` show exactly what a run would do.

use crate::agent::DataPath;
use crate::archive_safety::Contents;
use crate::verify::{VerifyError, VerifyOptions};
use crate::{App, EngineError, Scope};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use nkvm_domain::{FailureKind, JobStatus, PvcRecord, PvcRef, quantity};
use nkvm_history::BackupRow;
use nkvm_store::Manifest;
use serde::Serialize;

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    /// The backup to restore.
    pub backup_id: String,
    /// The claim to write into.
    pub target: PvcRef,
    /// Create the target claim (it must not exist).
    pub create: bool,
    /// Storage class of a created claim (default: the source's).
    pub storage_class: Option<String>,
    /// Size of a created claim (default: the source's, never less than the data).
    pub size: Option<String>,
    /// Empty the target before extracting.
    pub clean: bool,
    /// Write into a claim that running pods mount.
    pub force: bool,
    /// Keep setuid/setgid bits and privileged extended attributes (file capabilities) when
    /// restoring into another namespace or cluster than the backup's.
    pub keep_privileged: bool,
}

/// The backup a plan restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// Cluster it was taken from.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
    /// Its claim.
    pub pvc: String,
    /// When it was taken.
    pub started_at: String,
    /// Archive path in the store.
    pub artifact: String,
    /// The store the archive is read from (the backup's own, or one holding a copy).
    pub store: String,
    /// sha256 of the compressed archive, as recorded and as re-read (when encrypted: of the
    /// compressed tar inside the age file, which is what reaches the helper).
    pub sha256: String,
    /// Whether the stored archive is an age file, decrypted by nkvm before it is sent.
    pub encrypted: bool,
    /// `zstd`, `gzip`, `none`.
    pub compression: String,
    /// Tar bytes the archive holds.
    pub tar_bytes: u64,
    /// Compressed bytes of the archive (what the agent path sends; inside the age file when
    /// encrypted).
    pub bytes_stored: u64,
    /// Files, directories and links in it.
    pub members: u64,
}

/// Where a restore writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// Namespace.
    pub namespace: String,
    /// Claim.
    pub pvc: String,
}

/// The claim a restore creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewClaim {
    /// Storage class ("" for the cluster's default).
    pub storage_class: String,
    /// Requested size.
    pub size: String,
    /// Access modes.
    pub access_modes: Vec<String>,
}

/// What a restore will do, shown before it runs; runnable only without refusals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    /// The backup.
    pub backup_id: String,
    /// The id of the cluster the plan was made against; it runs only there.
    pub cluster: String,
    /// What it holds.
    pub source: RestoreSource,
    /// Where it goes.
    pub target: RestoreTarget,
    /// Whether the target claim will be created.
    pub create: bool,
    /// The claim to create, when `create`.
    pub new_claim: Option<NewClaim>,
    /// Capacity of the existing target ("" when created).
    pub target_capacity: String,
    /// Node the helper must run on ("" lets the scheduler choose).
    pub node: String,
    /// Running pods that mount the target.
    pub in_use_by: Vec<String>,
    /// Empty the target first.
    pub clean: bool,
    /// How the bytes will move: `agent` (nkvm's own helper image) or `tar` (generic image).
    pub data_path: DataPath,
    /// Write although pods mount it.
    pub force: bool,
    /// Whether setuid/setgid bits and privileged extended attributes (file capabilities) are
    /// restored: only into the backup's own namespace and cluster, unless asked.
    pub privileged: bool,
    /// Things the operator should know; the restore still runs.
    pub warnings: Vec<String>,
    /// Why the restore cannot run; empty when it can.
    pub refusals: Vec<String>,
    /// The failure kind of the first refusal (exit code, HTTP status).
    #[serde(skip)]
    pub refusal_kind: Option<FailureKind>,
    /// A running pod that mounts the target, whose tolerations the helper copies.
    #[serde(skip)]
    pub consumer_pod: Option<String>,
    /// The uid of the existing target claim ("" when the plan creates it): a claim deleted
    /// and made again under the same name since the plan is another claim.
    #[serde(skip)]
    pub target_uid: String,
    /// The manifest's saved claim spec (the source of a created claim's spec).
    #[serde(skip)]
    pub source_spec: serde_json::Value,
}

impl RestorePlan {
    /// Whether nothing refuses the restore.
    pub fn runnable(&self) -> bool {
        self.refusals.is_empty()
    }

    fn refuse(&mut self, kind: FailureKind, message: String) {
        self.refusal_kind.get_or_insert(kind);
        self.refusals.push(message);
    }
}

/// Everything [`decide`] needs, gathered by [`App::plan_restore`].
#[derive(Debug, Clone)]
pub struct PlanFacts {
    /// The id of the cluster planned against.
    pub cluster: String,
    /// The request.
    pub request: RestoreRequest,
    /// The backup's history row, with the store, artifact, sha256 and size of the copy the
    /// restore reads (of the compressed tar inside, when the copy is an age file).
    pub row: BackupRow,
    /// Why an encrypted archive cannot be opened (no identity, or not a recipient's).
    pub identity_refusal: Option<String>,
    /// Its manifest, or why it could not be read.
    pub manifest: Result<Manifest, String>,
    /// The archive re-read: its contents, or why it is refused.
    pub contents: Result<Contents, String>,
    /// Whether the allowlist admits the target namespace.
    pub allowed: bool,
    /// Whether the target namespace exists (`None`: unknown, e.g. not readable).
    pub namespace_exists: Option<bool>,
    /// The target claim, if it exists.
    pub target: Option<PvcRecord>,
    /// Whether the requested storage class exists (`None`: none requested, or unknown).
    pub storage_class_exists: Option<bool>,
    /// The data path the configured helper image takes.
    pub data_path: DataPath,
}

fn claim_size(spec: &serde_json::Value) -> Option<String> {
    spec.pointer("/resources/requests/storage")
        .and_then(|v| v.as_str())
        .map(String::from)
}

fn access_modes(spec: &serde_json::Value) -> Vec<String> {
    let modes: Vec<String> = spec
        .get("accessModes")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if modes.is_empty() {
        vec!["ReadWriteOnce".into()]
    } else {
        modes
    }
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// What [`App::plan_restore`] read back of the archive.
struct ReadBack {
    row: BackupRow,
    identity_refusal: Option<String>,
    manifest: Result<Manifest, String>,
    contents: Result<Contents, String>,
}

/// The backup's row as the copy found describes it: its store, artifact and hash, and for an
/// age file the compressed tar inside (what the helper receives and checks).
fn located_row(mut row: BackupRow, located: &crate::located::Located) -> BackupRow {
    row.store = located.store_name.clone();
    row.artifact = located.artifact.clone();
    row.sha256 = located.sha256.clone();
    row.bytes_stored = located.manifest.bytes_stored;
    if let Some(e) = &located.manifest.encryption {
        row.sha256 = e.archive_sha256.clone();
        row.bytes_stored = e.archive_bytes;
    }
    row
}

/// Turns gathered facts into a plan: the restore rules, without I/O.
pub fn decide(f: PlanFacts) -> RestorePlan {
    let r = &f.request;
    let mut plan = blank_plan(&f);
    check_source(&f, &mut plan);
    if !f.allowed {
        plan.refuse(
            FailureKind::Forbidden,
            format!(
                "namespace {:?} is not in nkvm's allowlist; add it to --namespaces / NKVM_NAMESPACES to restore there",
                plan.target.namespace
            ),
        );
        return plan;
    }
    if f.namespace_exists == Some(false) {
        plan.refuse(
            FailureKind::NotFound,
            format!(
                "namespace {:?} does not exist; create it first (kubectl create namespace {})",
                plan.target.namespace, plan.target.namespace
            ),
        );
        return plan;
    }
    match (&f.target, r.create) {
        (Some(_), true) => plan.refuse(
            FailureKind::Conflict,
            format!(
                "{} already exists; restore into it without --create (in the UI: untick Create the PVC)",
                r.target
            ),
        ),
        (None, false) => plan.refuse(
            FailureKind::NotFound,
            format!(
                "{} does not exist; create it from the backup's saved spec with --create (in the UI: tick Create the PVC)",
                r.target
            ),
        ),
        (Some(existing), false) => check_existing(&f, existing, &mut plan),
        (None, true) => plan_new_claim(&f, &mut plan),
    }
    if r.clean {
        plan.warnings.push(format!(
            "--clean deletes everything in {} before extracting",
            r.target
        ));
    }
    decide_privileges(&f, &mut plan);
    plan
}

/// The plan before any rule ran: the source and target as requested.
fn blank_plan(f: &PlanFacts) -> RestorePlan {
    let r = &f.request;
    let contents = f.contents.clone().unwrap_or_default();
    RestorePlan {
        backup_id: f.row.id.clone(),
        cluster: f.cluster.clone(),
        source: RestoreSource {
            cluster: f.row.cluster.clone(),
            namespace: f.row.namespace.clone(),
            pvc: f.row.pvc.clone(),
            started_at: f.row.started_at.clone(),
            artifact: f.row.artifact.clone(),
            store: f.row.store.clone(),
            sha256: f.row.sha256.clone(),
            encrypted: f.manifest.as_ref().is_ok_and(|m| m.encryption.is_some()),
            compression: f.row.compression.clone(),
            tar_bytes: contents.tar_bytes,
            bytes_stored: f.row.bytes_stored,
            members: contents.members,
        },
        target: RestoreTarget {
            namespace: r.target.namespace.to_string(),
            pvc: r.target.name.to_string(),
        },
        create: r.create,
        new_claim: None,
        target_capacity: String::new(),
        node: String::new(),
        in_use_by: Vec::new(),
        clean: r.clean,
        data_path: f.data_path,
        force: r.force,
        privileged: false,
        warnings: Vec::new(),
        refusals: Vec::new(),
        refusal_kind: None,
        consumer_pod: None,
        target_uid: String::new(),
        source_spec: serde_json::Value::Null,
    }
}

fn check_source(f: &PlanFacts, plan: &mut RestorePlan) {
    if f.row.status != JobStatus::Succeeded || f.row.artifact.is_empty() {
        plan.refuse(
            FailureKind::Conflict,
            format!(
                "backup {} is {} and kept no archive; choose a succeeded backup (nkvm backups)",
                f.row.id, f.row.status
            ),
        );
        return;
    }
    match &f.manifest {
        Ok(m) => plan.source_spec = m.pvc_spec.clone(),
        Err(e) => plan.refuse(FailureKind::StorageUnavailable, e.clone()),
    }
    if let Some(why) = &f.identity_refusal {
        plan.refuse(FailureKind::InvalidInput, why.clone());
        return;
    }
    if let Err(e) = &f.contents {
        plan.refuse(FailureKind::CommandFailed, e.clone());
    }
}

fn check_existing(f: &PlanFacts, existing: &PvcRecord, plan: &mut RestorePlan) {
    let target = &f.request.target;
    plan.target_capacity = existing.capacity.clone();
    if existing.volume_mode == "Block" {
        plan.refuse(
            FailureKind::Conflict,
            format!("{target} is a Block volume; nkvm restores files into Filesystem volumes only"),
        );
    }
    if let Ok(capacity) = quantity::parse_bytes(&existing.capacity)
        && capacity < plan.source.tar_bytes
    {
        plan.refuse(
            FailureKind::Conflict,
            format!(
                "{target} holds {} but the backup has {} of data; restore into a larger claim (--create --size)",
                existing.capacity,
                human(plan.source.tar_bytes)
            ),
        );
    }
    let running: Vec<_> = existing
        .consumers
        .iter()
        .filter(|c| c.phase == "Running")
        .collect();
    plan.in_use_by = running.iter().map(|c| c.pod.clone()).collect();
    plan.target_uid = existing.uid.clone();
    if !running.is_empty() {
        let pods = plan.in_use_by.join(", ");
        if f.request.force {
            plan.warnings.push(format!(
                "running pods mount {target} ({pods}); they will see files change under them"
            ));
        } else {
            plan.refuse(
                FailureKind::Conflict,
                format!(
                    "running pods mount {target} ({pods}); stop them (scale the workload to 0), or write anyway with --force (in the UI: Write even though running pods mount it)"
                ),
            );
        }
    }
    // A ReadWriteOnce volume in use can only be mounted on its consumer's node.
    if existing.access_modes.iter().any(|m| m == "ReadWriteOnce")
        && let Some(c) = running.iter().find(|c| !c.node.is_empty())
    {
        plan.node = c.node.clone();
        plan.consumer_pod = Some(c.pod.clone());
    }
    if !f.request.clean {
        plan.warnings.push(format!(
            "{target} exists: files also in the backup are overwritten, other files stay; --clean (in the UI: Empty the target first) empties it first"
        ));
    }
}

fn plan_new_claim(f: &PlanFacts, plan: &mut RestorePlan) {
    let r = &f.request;
    let needed = plan.source.tar_bytes;
    let source_class = plan
        .source_spec
        .get("storageClassName")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let storage_class = r.storage_class.clone().unwrap_or(source_class);
    if f.storage_class_exists == Some(false) {
        plan.refuse(
            FailureKind::NotFound,
            format!("storage class {storage_class:?} does not exist; see kubectl get storageclass"),
        );
    }
    let size = match &r.size {
        Some(s) => match quantity::parse_bytes(s) {
            Ok(bytes) if bytes < needed => {
                plan.refuse(
                    FailureKind::InvalidInput,
                    format!(
                        "--size {s} is smaller than the backup's {} of data",
                        human(needed)
                    ),
                );
                s.clone()
            }
            Ok(_) => s.clone(),
            Err(e) => {
                plan.refuse(FailureKind::InvalidInput, format!("--size: {e}"));
                s.clone()
            }
        },
        None => match claim_size(&plan.source_spec) {
            Some(s) if quantity::parse_bytes(&s).is_ok_and(|b| b >= needed) => s,
            _ => quantity::format_binary(needed),
        },
    };
    plan.new_claim = Some(NewClaim {
        storage_class,
        size,
        access_modes: access_modes(&plan.source_spec),
    });
}

/// The claim a plan creates: the saved spec's access modes, with the plan's class and size,
/// never the source's volume binding (volumeName, selector, dataSource).
pub fn claim_to_create(plan: &RestorePlan) -> Option<PersistentVolumeClaim> {
    let new = plan.new_claim.as_ref()?;
    let spec = serde_json::json!({
        "accessModes": new.access_modes,
        "storageClassName": if new.storage_class.is_empty() { None } else { Some(&new.storage_class) },
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": new.size}},
    });
    let spec: PersistentVolumeClaimSpec = serde_json::from_value(spec).ok()?;
    Some(PersistentVolumeClaim {
        metadata: kube::api::ObjectMeta {
            name: Some(plan.target.pvc.clone()),
            namespace: Some(plan.target.namespace.clone()),
            annotations: Some(
                [("nkvm.io/restored-from".to_string(), plan.backup_id.clone())].into(),
            ),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    })
}

impl App {
    /// Plans restoring a backup: reads the archive back in full (sha256, tar structure, member
    /// paths) and the target's state, and says what a run would do or why it cannot. Changes
    /// nothing. Fails only when the backup is unknown or the cluster cannot be read.
    pub async fn plan_restore(&self, request: &RestoreRequest) -> Result<RestorePlan, EngineError> {
        let row = self
            .history
            .backup(&request.backup_id)?
            .ok_or_else(|| EngineError::NotFound(format!(
                "backup {} is not in the history; list backups with `nkvm backups` (or rebuild the index with `nkvm index rebuild`)",
                request.backup_id
            )))?;
        let back = self.read_back(row).await?;
        let namespace = request.target.namespace.as_str();
        let allowed = self.settings.allowlist.allows(namespace);
        let mut facts = PlanFacts {
            cluster: self.conn.info.id.clone(),
            request: request.clone(),
            row: back.row,
            identity_refusal: back.identity_refusal,
            manifest: back.manifest,
            contents: back.contents,
            allowed,
            namespace_exists: None,
            target: None,
            storage_class_exists: None,
            data_path: self.settings.data_path(),
        };
        if allowed {
            facts.namespace_exists = self.namespace_exists(namespace).await?;
            if facts.namespace_exists != Some(false) {
                facts.target = self
                    .inventory(&Scope::Namespace(request.target.namespace.clone()))
                    .await?
                    .into_iter()
                    .find(|r| r.name == request.target.name.as_str());
            }
            if let Some(class) = &request.storage_class {
                facts.storage_class_exists = self.storage_class_exists(class).await?;
            }
        }
        Ok(decide(facts))
    }

    /// Finds the backup's archive in whichever store holds it, reads its manifest and the
    /// whole archive (decrypted with the configured identity when it is an age file),
    /// checking sha256 against the manifest and the history, and the tar stream's structure
    /// and member paths.
    async fn read_back(&self, row: BackupRow) -> Result<ReadBack, EngineError> {
        if row.artifact.is_empty() {
            return Ok(ReadBack {
                row,
                identity_refusal: None,
                manifest: Err("no archive".into()),
                contents: Err("no archive".into()),
            });
        }
        let (stores, history) = (self.stores.clone(), self.history.clone());
        let identity_file = self.settings.age_identity_file.clone();
        let id: nkvm_domain::BackupId = row
            .id
            .parse()
            .map_err(|e: String| EngineError::Internal(format!("backup id {}: {e}", row.id)))?;
        tokio::task::spawn_blocking(move || {
            let opener = identity_file.as_deref();
            let located = match crate::located::locate(&stores, &history, &row, None, opener) {
                Ok(located) => located,
                Err(e) => {
                    let why = format!(
                        "the archive's manifest cannot be read ({e}); run `nkvm verify {id}`"
                    );
                    return ReadBack {
                        row,
                        identity_refusal: None,
                        manifest: Err(why.clone()),
                        contents: Err(why),
                    };
                }
            };
            let opts = VerifyOptions {
                deep: true,
                identity_file,
                store: Some(located.store_name.clone()),
            };
            let verified = crate::verify::verify(&stores, &history, &id, &opts);
            let identity_refusal = match &verified {
                Err(e @ VerifyError::Identity { .. }) => {
                    Some(format!("{e}; nothing was sent to the cluster"))
                }
                _ => None,
            };
            let contents = verified
                .map(|v| Contents {
                    tar_bytes: v.tar_bytes,
                    members: v.entries,
                })
                .map_err(|e| format!("{e}; nothing was sent to the cluster"));
            ReadBack {
                row: located_row(row, &located),
                identity_refusal,
                manifest: Ok(located.manifest),
                contents,
            }
        })
        .await
        .map_err(|e| EngineError::Internal(format!("reading the archive back panicked: {e}")))
    }

    async fn namespace_exists(&self, namespace: &str) -> Result<Option<bool>, EngineError> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.conn.client.clone());
        match api.get_opt(namespace).await {
            Ok(found) => Ok(Some(found.is_some())),
            // Namespaced credentials may not read namespaces; the claim lookup still tells.
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
            Err(e) => Err(EngineError::Cluster(e)),
        }
    }

    async fn storage_class_exists(&self, name: &str) -> Result<Option<bool>, EngineError> {
        let api: Api<StorageClass> = Api::all(self.conn.client.clone());
        match api.get_opt(name).await {
            Ok(found) => Ok(Some(found.is_some())),
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
            Err(e) => Err(EngineError::Cluster(e)),
        }
    }
}

/// Setuid/setgid bits and file capabilities come back only where they came from: one
/// tenant's backup restored into another's namespace must not plant a setuid-root binary
/// there. Owners stay as archived (an owner alone grants nothing).
fn decide_privileges(f: &PlanFacts, plan: &mut RestorePlan) {
    let home = plan.source.namespace == plan.target.namespace && plan.source.cluster == f.cluster;
    plan.privileged = home || f.request.keep_privileged;
    if !home && f.request.keep_privileged {
        plan.warnings.push(format!(
            "restoring from {}/{} into another namespace or cluster with setuid/setgid bits and file capabilities kept, as asked",
            plan.source.namespace, plan.source.pvc
        ));
    } else if !home {
        plan.warnings.push(
            "restoring into another namespace or cluster: setuid/setgid bits and privileged extended attributes (file capabilities) are not restored; --keep-privileged keeps them".into(),
        );
    }
}

/// Whether a plan still holds when it runs, against the claim as it is now (`None`: no claim
/// of that name): the same cluster, the same claim (or still none to create), and no pod that
/// mounts it that the plan did not know of unless the plan writes anyway. The reason when not.
pub fn recheck(plan: &RestorePlan, cluster: &str, now: Option<&PvcRecord>) -> Result<(), String> {
    let target = format!("{}/{}", plan.target.namespace, plan.target.pvc);
    let again = "plan the restore again";
    if plan.cluster != cluster {
        return Err(format!(
            "the plan was made against cluster {} but nkvm is now connected to {cluster}; {again} on this connection",
            plan.cluster
        ));
    }
    let existing = match (plan.create, now) {
        (true, None) => return Ok(()),
        (true, Some(_)) => {
            return Err(format!("{target} appeared since the plan; {again}"));
        }
        (false, None) => return Err(format!("{target} no longer exists; {again}")),
        (false, Some(existing)) => existing,
    };
    if existing.uid != plan.target_uid {
        return Err(format!(
            "{target} was deleted and made again since the plan; {again}"
        ));
    }
    let new_users: Vec<&str> = existing
        .consumers
        .iter()
        .filter(|c| c.phase == "Running" && !plan.in_use_by.contains(&c.pod))
        .map(|c| c.pod.as_str())
        .collect();
    if !new_users.is_empty() && !plan.force {
        return Err(format!(
            "running pods started mounting {target} since the plan ({}); stop them, or {again} and write anyway",
            new_users.join(", ")
        ));
    }
    let moved = existing.consumers.iter().any(|c| {
        c.phase == "Running" && !plan.node.is_empty() && !c.node.is_empty() && c.node != plan.node
    });
    if moved {
        return Err(format!(
            "the pods that mount {target} now run on another node than planned ({}); {again}",
            plan.node
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkvm_domain::{Consumer, Owner};

    fn facts(create: bool) -> PlanFacts {
        PlanFacts {
            cluster: "c".into(),
            request: RestoreRequest {
                backup_id: "20261126T000000Z-0000abcd".into(),
                target: PvcRef::parse("restored/data").unwrap(),
                create,
                storage_class: None,
                size: None,
                clean: false,
                force: false,
                keep_privileged: false,
            },
            data_path: DataPath::Agent,
            identity_refusal: None,
            row: BackupRow {
                id: "20261126T000000Z-0000abcd".into(),
                namespace: "shop".into(),
                pvc: "data".into(),
                status: JobStatus::Succeeded,
                artifact: "c/shop/data/x.tar.zst".into(),
                sha256: "ab".repeat(32),
                compression: "zstd".into(),
                ..Default::default()
            },
            manifest: Ok(Manifest {
                format_version: 1,
                backup_id: "20261126T000000Z-0000abcd".parse().unwrap(),
                cluster: "c".into(),
                namespace: "shop".into(),
                pvc: nkvm_store::PvcIdentity {
                    name: "data".into(),
                    uid: "u".into(),
                },
                pvc_spec: serde_json::json!({"accessModes": ["ReadWriteOnce"],
                    "storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}},
                    "volumeName": "pv-123"}),
                node: String::new(),
                started_at: String::new(),
                finished_at: String::new(),
                bytes_read: 0,
                bytes_stored: 0,
                sha256: String::new(),
                compression: nkvm_domain::Compression::Zstd,
                tool_version: String::new(),
                artifact: String::new(),
                encryption: None,
                data_path: String::new(),
            }),
            contents: Ok(Contents {
                tar_bytes: 300 << 20,
                members: 10,
            }),
            allowed: true,
            namespace_exists: Some(true),
            target: None,
            storage_class_exists: None,
        }
    }

    fn existing(capacity: &str, consumers: &[(&str, &str)]) -> PvcRecord {
        PvcRecord {
            namespace: "restored".into(),
            name: "data".into(),
            uid: "t".into(),
            phase: "Bound".into(),
            capacity: capacity.into(),
            storage_class: "fast".into(),
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: "Filesystem".into(),
            volume_name: "pv-9".into(),
            owner: Owner::unknown(),
            consumers: consumers
                .iter()
                .map(|(pod, node)| Consumer {
                    pod: pod.to_string(),
                    node: node.to_string(),
                    phase: "Running".into(),
                })
                .collect(),
            last_successful_backup: None,
            last_failed_backup: None,
            backupable: true,
            reason: String::new(),
            labels: Default::default(),
        }
    }

    #[test]
    fn a_new_claim_copies_the_saved_spec_without_its_volume_binding() {
        let plan = decide(facts(true));
        assert!(plan.runnable(), "{:?}", plan.refusals);
        let pvc = claim_to_create(&plan).unwrap();
        let spec = serde_json::to_value(pvc.spec.unwrap()).unwrap();
        assert_eq!(spec["storageClassName"], "fast");
        assert_eq!(spec["resources"]["requests"]["storage"], "1Gi");
        assert!(spec.get("volumeName").is_none());
        assert_eq!(
            pvc.metadata.annotations.unwrap()["nkvm.io/restored-from"],
            plan.backup_id
        );
    }

    #[test]
    fn a_created_claim_is_never_smaller_than_the_data() {
        let mut f = facts(true);
        f.contents = Ok(Contents {
            tar_bytes: 3 << 30,
            members: 1,
        });
        let plan = decide(f.clone());
        assert_eq!(
            plan.new_claim.unwrap().size,
            "3Gi",
            "the saved 1Gi is too small"
        );
        f.request.size = Some("2Gi".into());
        let plan = decide(f);
        assert!(
            plan.refusals[0].contains("--size 2Gi is smaller"),
            "{:?}",
            plan.refusals
        );
        assert_eq!(plan.refusal_kind, Some(FailureKind::InvalidInput));
    }

    #[test]
    fn a_target_outside_the_allowlist_is_refused() {
        let mut f = facts(true);
        f.allowed = false;
        let plan = decide(f);
        assert!(!plan.runnable());
        assert_eq!(plan.refusal_kind, Some(FailureKind::Forbidden));
        assert!(plan.refusals[0].contains("allowlist"));
    }

    #[test]
    fn a_target_in_use_is_refused_unless_forced_and_then_named() {
        let mut f = facts(false);
        f.target = Some(existing("5Gi", &[("db-0", "node-b")]));
        let plan = decide(f.clone());
        assert!(plan.refusals[0].contains("db-0"), "{:?}", plan.refusals);
        f.request.force = true;
        let plan = decide(f);
        assert!(plan.runnable());
        assert_eq!(plan.node, "node-b", "RWO: beside its consumer");
        assert!(plan.warnings.iter().any(|w| w.contains("db-0")));
        assert!(plan.warnings.iter().any(|w| w.contains("--clean")));
    }

    #[test]
    fn a_target_too_small_or_missing_or_already_there_is_refused() {
        let mut f = facts(false);
        f.target = Some(existing("100Mi", &[]));
        assert!(decide(f.clone()).refusals[0].contains("holds 100Mi"));
        f.target = None;
        assert!(decide(f.clone()).refusals[0].contains("with --create"));
        f.request.create = true;
        f.target = Some(existing("5Gi", &[]));
        assert!(decide(f).refusals[0].contains("without --create"));
    }

    #[test]
    fn a_damaged_or_failed_backup_is_refused() {
        let mut f = facts(true);
        f.contents = Err("backup x is damaged: its sha256 is 00".into());
        assert!(decide(f.clone()).refusals[0].contains("damaged"));
        f.row.status = JobStatus::Failed;
        f.row.artifact.clear();
        assert!(decide(f).refusals[0].contains("is failed"));
    }

    #[test]
    fn a_plan_runs_only_on_its_cluster_and_its_claim_as_planned() {
        let mut f = facts(false);
        f.request.force = true;
        f.target = Some(existing("1Gi", &[("app-0", "node-a")]));
        let plan = decide(f);
        assert!(plan.runnable(), "{:?}", plan.refusals);
        let same = existing("1Gi", &[("app-0", "node-a")]);
        assert_eq!(recheck(&plan, "c", Some(&same)), Ok(()));
        let other_cluster = recheck(&plan, "other", Some(&same)).unwrap_err();
        assert!(
            other_cluster.contains("now connected to other"),
            "{other_cluster}"
        );
        let mut remade = same.clone();
        remade.uid = "new".into();
        assert!(
            recheck(&plan, "c", Some(&remade))
                .unwrap_err()
                .contains("made again")
        );
        assert!(
            recheck(&plan, "c", None)
                .unwrap_err()
                .contains("no longer exists")
        );
        let moved = existing("1Gi", &[("app-0", "node-b")]);
        assert!(
            recheck(&plan, "c", Some(&moved))
                .unwrap_err()
                .contains("another node")
        );
    }

    #[test]
    fn a_pod_that_started_mounting_the_target_since_the_plan_stops_the_run() {
        let mut f = facts(false);
        f.target = Some(existing("1Gi", &[]));
        let plan = decide(f);
        assert!(plan.runnable(), "{:?}", plan.refusals);
        let busy = existing("1Gi", &[("late", "node-a")]);
        let why = recheck(&plan, "c", Some(&busy)).unwrap_err();
        assert!(
            why.contains("started mounting") && why.contains("late"),
            "{why}"
        );
        let created = decide(facts(true));
        assert!(
            recheck(&created, "c", Some(&busy))
                .unwrap_err()
                .contains("appeared")
        );
        assert_eq!(recheck(&created, "c", None), Ok(()));
    }

    #[test]
    fn privileged_bits_come_back_only_into_the_backups_own_namespace_unless_asked() {
        let mut home = facts(true);
        home.row.cluster = "c".into();
        home.request.target = PvcRef::parse("shop/copy").unwrap();
        assert!(decide(home).privileged);
        let away = decide(facts(true));
        assert!(!away.privileged);
        assert!(
            away.warnings
                .iter()
                .any(|w| w.contains("setuid/setgid bits")),
            "{:?}",
            away.warnings
        );
        let mut asked = facts(true);
        asked.request.keep_privileged = true;
        assert!(decide(asked).privileged);
    }
}
