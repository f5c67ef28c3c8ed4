//! Helper pod lifecycle: creating one, waiting until it runs (a watch with a deadline, and
//! when it does not run, the pod's own account of why: container waiting reasons and its
//! recent Events), deleting it, and the start-up sweep of helpers a crashed engine left.
//!
//! The spec itself comes from [`super::spec`].

use super::spec::{INSTANCE_LABEL, JOB_ID_LABEL, MANAGED_BY, MANAGED_BY_LABEL, label_value};
use futures_util::TryStreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use nkvm_domain::FailureKind;
use std::fmt;
use std::time::Duration;

/// Container waiting reasons that will not resolve by waiting: fail at once. (An image pull
/// is retried by the kubelet, but a helper image that failed once costs the whole timeout
/// far more often than a retry saves it.)
const HOPELESS_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];
/// Events shown in an error.
const MAX_EVENTS: usize = 8;
/// Limit for reading diagnostics after a failure (the failure is reported either way).
const DIAGNOSTICS_TIMEOUT: Duration = Duration::from_secs(10);
/// Server-side watch timeout; the watch is reopened from the last resourceVersion.
const WATCH_SECONDS: u32 = 290;
/// Pause before retrying after a transient API error while waiting.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A helper pod that is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its uid.
    pub uid: String,
}

/// Why a helper pod is not running (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitProblem {
    /// The deadline passed.
    Timeout {
        /// The deadline, in seconds.
        seconds: u64,
    },
    /// A container is waiting for a reason that does not pass by itself.
    CannotStart {
        /// Container.
        container: String,
        /// Waiting reason (`ErrImagePull`, ...).
        reason: String,
        /// Waiting message.
        message: String,
    },
    /// The pod finished (Failed or Succeeded) instead of running.
    Ended {
        /// Phase.
        phase: String,
        /// Status reason and message.
        message: String,
    },
    /// The pod was deleted while waiting.
    Deleted,
    /// The API refused to show the pod.
    Api {
        /// HTTP status.
        code: u16,
        /// Message.
        message: String,
    },
}

impl fmt::Display for WaitProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitProblem::Timeout { seconds } => write!(f, "not Running after {seconds} s"),
            WaitProblem::CannotStart {
                container,
                reason,
                message,
            } => write!(f, "container {container} cannot start: {reason}: {message}"),
            WaitProblem::Ended { phase, message } => {
                write!(f, "the pod ended ({phase}) before running: {message}")
            }
            WaitProblem::Deleted => f.write_str("the pod was deleted while nkvm waited for it"),
            WaitProblem::Api { code, message } => {
                write!(f, "reading the pod failed ({code}): {message}")
            }
        }
    }
}

/// An Event about the pod, as shown in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    /// `Normal` or `Warning`.
    pub type_: String,
    /// Reason (`FailedScheduling`, `FailedAttachVolume`, ...).
    pub reason: String,
    /// Message.
    pub message: String,
    /// How often it happened.
    pub count: i32,
}

/// What the cluster says about a pod that is not running.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDiagnostics {
    /// Phase, if the pod was seen.
    pub phase: Option<String>,
    /// Node, if scheduled.
    pub node: Option<String>,
    /// `PodScheduled=False` reason and message.
    pub unschedulable: Option<String>,
    /// Waiting containers: (name, reason, message).
    pub waiting: Vec<(String, String, String)>,
    /// Recent Events, oldest first.
    pub events: Vec<EventLine>,
    /// Why the Events could not be read, if they could not.
    pub events_error: Option<String>,
}

impl PodDiagnostics {
    /// What to do about it, from what the Events and statuses show.
    pub fn advice(&self) -> &'static str {
        let said = |needle: &str| {
            self.events
                .iter()
                .any(|e| e.reason.contains(needle) || e.message.contains(needle))
                || self
                    .waiting
                    .iter()
                    .any(|(_, r, m)| r.contains(needle) || m.contains(needle))
        };
        if said("Multi-Attach") {
            "the volume is attached to another node: a ReadWriteOnce claim can only be read on the node of the pod using it"
        } else if said("ImagePull") || said("ErrImage") || said("InvalidImageName") {
            "check the helper image (NKVM_HELPER_IMAGE): its name, that the nodes can pull it, and any pull secret"
        } else if said("FailedScheduling") || self.unschedulable.is_some() {
            "no node can take the pod: check node capacity, taints, and the claim's node affinity"
        } else if said("FailedMount") || said("FailedAttachVolume") {
            "the volume could not be mounted: check the storage driver and the claim"
        } else if said("CreateContainerConfigError") {
            "the pod's security settings do not fit the namespace or image: try the other helper profile"
        } else {
            "check `kubectl describe pod` for the pod, or raise NKVM_HELPER_POD_TIMEOUT_SECONDS if the cluster is just slow"
        }
    }
}

impl fmt::Display for PodDiagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.phase, &self.node) {
            (Some(p), Some(n)) => write!(f, "phase {p} on {n}")?,
            (Some(p), None) => write!(f, "phase {p}, no node")?,
            _ => f.write_str("pod not found")?,
        }
        // The scheduler's message is also its FailedScheduling event's; say it once.
        let scheduling_event = self.events.iter().any(|e| e.reason == "FailedScheduling");
        if let Some(u) = self.unschedulable.as_ref().filter(|_| !scheduling_event) {
            write!(f, "; unschedulable: {u}")?;
        }
        // Reasons only: the messages repeat the problem or the kubelet's events.
        for (name, reason, _) in &self.waiting {
            write!(f, "; container {name} waiting: {reason}")?;
        }
        if !self.events.is_empty() {
            f.write_str("; events:")?;
            for e in &self.events {
                write!(f, " [{} {}", e.type_, e.reason)?;
                if e.count > 1 {
                    write!(f, " x{}", e.count)?;
                }
                write!(f, ": {}]", e.message)?;
            }
        }
        if let Some(e) = &self.events_error {
            write!(f, "; events unavailable: {e}")?;
        }
        Ok(())
    }
}

/// Why a helper operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// Creating the pod was refused.
    #[error("creating helper pod {namespace}/{name}: {message}; {hint}")]
    CreateHelperPod {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// HTTP status, if the server answered.
        code: Option<u16>,
        /// The server's message.
        message: String,
        /// What to do.
        hint: &'static str,
    },
    /// The pod did not get to Running (it is not deleted: the caller deletes it).
    #[error(
        "helper pod {namespace}/{name} did not start: {problem} ({diagnostics}); {}",
        diagnostics.advice()
    )]
    AwaitPodRunning {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// What went wrong.
        problem: WaitProblem,
        /// What the cluster said about the pod.
        diagnostics: Box<PodDiagnostics>,
    },
    /// Deleting the pod failed.
    #[error(
        "deleting helper pod {namespace}/{name}: {message}; delete it by hand (kubectl -n {namespace} delete pod {name}) or let nkvm's next start-up sweep remove it"
    )]
    DeleteHelperPod {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// HTTP status, if the server answered.
        code: Option<u16>,
        /// Why.
        message: String,
    },
    /// Listing helper pods for the sweep failed.
    #[error(
        "listing nkvm helper pods {scope} for the start-up sweep: {message}; grant list and delete on pods there, or leftover helpers stay until deleted by hand"
    )]
    SweepHelperPods {
        /// `in namespace X` or `across all namespaces`.
        scope: String,
        /// HTTP status, if the server answered.
        code: Option<u16>,
        /// Why.
        message: String,
    },
}

impl nkvm_domain::UserError for HelperError {
    /// The failure kind.
    fn kind(&self) -> FailureKind {
        match self {
            HelperError::CreateHelperPod { code, .. }
            | HelperError::DeleteHelperPod { code, .. }
            | HelperError::SweepHelperPods { code, .. } => kind_of_status(*code),
            HelperError::AwaitPodRunning { problem, .. } => match problem {
                WaitProblem::Timeout { .. } => FailureKind::Timeout,
                WaitProblem::Api { code, .. } => kind_of_status(Some(*code)),
                WaitProblem::Deleted => FailureKind::Conflict,
                // The cluster could not run our pod (image, config, node).
                WaitProblem::CannotStart { .. } | WaitProblem::Ended { .. } => {
                    FailureKind::ClusterUnavailable
                }
            },
        }
    }
}

pub(crate) fn kind_of_status(code: Option<u16>) -> FailureKind {
    match code {
        Some(403) => FailureKind::Forbidden,
        Some(404) => FailureKind::NotFound,
        Some(409) => FailureKind::Conflict,
        Some(400) | Some(422) => FailureKind::InvalidInput,
        _ => FailureKind::ClusterUnavailable,
    }
}

/// (HTTP status, message) of a kube error.
fn describe(e: &kube::Error) -> (Option<u16>, String) {
    match e {
        kube::Error::Api(s) => (Some(s.code), s.message.clone()),
        other => (None, other.to_string()),
    }
}

/// Creates the helper pod (in its own namespace) and returns it as stored.
pub async fn create_helper(client: &Client, pod: &Pod) -> Result<Pod, HelperError> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    api.create(&PostParams::default(), pod).await.map_err(|e| {
        let (code, message) = describe(&e);
        let hint = match code {
            // PodSecurity admission answers 403 too, naming the violated profile.
            Some(403) if message.contains("PodSecurity") => {
                "the namespace's PodSecurity level refuses the root helper: use the run-as profile (the consumer's UID/GID)"
            }
            Some(403) => {
                "grant this identity create on pods in that namespace (a RoleBinding to nkvm's runtime role)"
            }
            Some(409) => "a helper with this name exists: another run of the same job is active",
            Some(404) => "the namespace does not exist (any more)",
            Some(400) | Some(422) => "the cluster rejected the helper spec; check the helper image and resources settings",
            _ => "check the API server and retry",
        };
        HelperError::CreateHelperPod {
            namespace: namespace.clone(),
            name: name.clone(),
            code,
            message,
            hint,
        }
    })
}

/// Waits until the pod runs, at most `timeout`. On failure the error carries the waiting
/// reasons and recent Events; the pod is not deleted (the caller always deletes it).
pub async fn wait_running(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<RunningPod, HelperError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut last_seen: Option<Pod> = None;
    let outcome = tokio::time::timeout(timeout, watch_until_running(&api, name, &mut last_seen))
        .await
        .unwrap_or(Err(WaitProblem::Timeout {
            seconds: timeout.as_secs(),
        }));
    let problem = match outcome {
        Ok(running) => return Ok(running),
        Err(p) => p,
    };
    let diagnostics = tokio::time::timeout(
        DIAGNOSTICS_TIMEOUT,
        pod_diagnostics(client, namespace, name, last_seen),
    )
    .await
    .unwrap_or_else(|_| PodDiagnostics {
        events_error: Some("reading them timed out".into()),
        ..Default::default()
    });
    Err(HelperError::AwaitPodRunning {
        namespace: namespace.into(),
        name: name.into(),
        problem,
        diagnostics: Box::new(diagnostics),
    })
}

/// Lists then watches the one pod, re-listing when the watch's version is too old (410).
async fn watch_until_running(
    api: &Api<Pod>,
    name: &str,
    last_seen: &mut Option<Pod>,
) -> Result<RunningPod, WaitProblem> {
    let fields = format!("metadata.name={name}");
    'relist: loop {
        let list = match api.list(&ListParams::default().fields(&fields)).await {
            Ok(l) => l,
            Err(e) => {
                transient(&e)?;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue 'relist;
            }
        };
        let Some(pod) = list.items.into_iter().next() else {
            return Err(WaitProblem::Deleted);
        };
        if let Some(running) = judge(&pod)? {
            return Ok(running);
        }
        *last_seen = Some(pod);
        let mut version = list.metadata.resource_version.unwrap_or_default();
        loop {
            let params = WatchParams::default()
                .fields(&fields)
                .timeout(WATCH_SECONDS);
            let stream = match api.watch(&params, &version).await {
                Ok(s) => s,
                Err(kube::Error::Api(s)) if s.code == 410 => continue 'relist,
                Err(e) => {
                    transient(&e)?;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = match stream.try_next().await {
                    Ok(Some(ev)) => ev,
                    // The server ended the watch (its timeout): reopen from `version`.
                    Ok(None) => break,
                    Err(e) => {
                        transient(&e)?;
                        break;
                    }
                };
                match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                        if let Some(running) = judge(&pod)? {
                            return Ok(running);
                        }
                        version = pod.resource_version().unwrap_or(version);
                        *last_seen = Some(pod);
                    }
                    WatchEvent::Deleted(_) => return Err(WaitProblem::Deleted),
                    WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                    WatchEvent::Error(s) if s.code == 410 => continue 'relist,
                    WatchEvent::Error(s) => {
                        transient(&kube::Error::Api(s))?;
                        break;
                    }
                }
            }
        }
    }
}

/// `Ok` when waiting may go on after this error (server trouble, throttling, network);
/// the refusal otherwise.
fn transient(e: &kube::Error) -> Result<(), WaitProblem> {
    match describe(e) {
        (Some(code), message) if (400..500).contains(&code) && code != 429 => {
            Err(WaitProblem::Api { code, message })
        }
        _ => {
            tracing::debug!(error = %e, "waiting for a helper pod: transient API error");
            Ok(())
        }
    }
}

/// `Some` once the pod runs; an error once it never will.
fn judge(pod: &Pod) -> Result<Option<RunningPod>, WaitProblem> {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_default();
    if phase == "Failed" || phase == "Succeeded" {
        let message = [status.reason, status.message]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return Err(WaitProblem::Ended { phase, message });
    }
    let containers = status.container_statuses.unwrap_or_default();
    for c in &containers {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.clone().unwrap_or_default();
        if HOPELESS_WAITING.contains(&reason.as_str()) {
            return Err(WaitProblem::CannotStart {
                container: c.name.clone(),
                reason,
                message: waiting.message.clone().unwrap_or_default(),
            });
        }
    }
    let all_running = !containers.is_empty()
        && containers
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    if phase != "Running" || !all_running {
        return Ok(None);
    }
    Ok(Some(RunningPod {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        uid: pod.uid().unwrap_or_default(),
    }))
}

/// What the cluster says about a pod: its status (re-read unless `seen` is given) and its
/// recent Events. Never fails: what cannot be read is said in the result.
pub async fn pod_diagnostics(
    client: &Client,
    namespace: &str,
    name: &str,
    seen: Option<Pod>,
) -> PodDiagnostics {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = match api.get_opt(name).await {
        Ok(p) => p.or(seen),
        Err(_) => seen,
    };
    let mut d = PodDiagnostics::default();
    let uid = pod.as_ref().and_then(|p| p.uid());
    if let Some(p) = &pod {
        let status = p.status.clone().unwrap_or_default();
        d.phase = status.phase.clone();
        d.node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        d.unschedulable = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .map(|c| {
                format!(
                    "{}: {}",
                    c.reason.unwrap_or_default(),
                    c.message.unwrap_or_default()
                )
            });
        d.waiting = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                let w = c.state?.waiting?;
                Some((
                    c.name,
                    w.reason.unwrap_or_default(),
                    w.message.unwrap_or_default(),
                ))
            })
            .collect();
    }
    match recent_events(client, namespace, name, uid.as_deref()).await {
        Ok(events) => d.events = events,
        Err(e) => d.events_error = Some(describe(&e).1),
    }
    d
}

/// The pod's latest Events (of this incarnation when its uid is known), oldest first.
async fn recent_events(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<Vec<EventLine>, kube::Error> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let fields = format!("involvedObject.kind=Pod,involvedObject.name={name}");
    let mut events: Vec<Event> = api
        .list(&ListParams::default().fields(&fields))
        .await?
        .items
        .into_iter()
        .filter(|e| uid.is_none() || e.involved_object.uid.as_deref() == uid)
        .collect();
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.first_timestamp.as_ref().map(|t| t.0))
    });
    let skip = events.len().saturating_sub(MAX_EVENTS);
    Ok(events
        .into_iter()
        .skip(skip)
        .map(|e| EventLine {
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
            count: e.count.unwrap_or(1),
        })
        .collect())
}

/// Deletes the pod at once (grace 0: it only idles). A pod already gone is fine.
pub async fn delete_helper(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), HelperError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => {
            let (code, message) = describe(&e);
            Err(HelperError::DeleteHelperPod {
                namespace: namespace.into(),
                name: name.into(),
                code,
                message,
            })
        }
    }
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Deleted pods (`namespace/name`).
    pub deleted: Vec<String>,
    /// Pods kept because their job runs (`namespace/name`).
    pub kept: Vec<String>,
    /// Listing or deleting failures; the sweep goes on past them.
    pub failures: Vec<HelperError>,
}

/// Deletes helper pods of nkvm instance `instance` (labelled `managed-by=nkvm` and with its
/// instance label, with a job id) whose job is not running by `keep`, in `namespaces` (all
/// namespaces when empty). Pods without a job id are never touched: they are not helpers; nor
/// are another instance's helpers (a workstation CLI's, a second deployment's).
pub async fn sweep_helpers(
    client: &Client,
    namespaces: &[String],
    instance: &str,
    keep: impl Fn(&str) -> bool,
) -> SweepReport {
    let mut report = SweepReport::default();
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for scope in scopes {
        let pods = match list_helpers(client, scope, instance).await {
            Ok(p) => p,
            Err(e) => {
                report.failures.push(e);
                continue;
            }
        };
        for pod in pods {
            let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
            let Some(job) = job_id(&pod) else { continue };
            let key = format!("{namespace}/{name}");
            if keep(&job) {
                report.kept.push(key);
                continue;
            }
            match delete_helper(client, &namespace, &name).await {
                Ok(()) => {
                    tracing::info!(pod = %key, job = %job, "swept a stale helper pod");
                    report.deleted.push(key);
                }
                Err(e) => report.failures.push(e),
            }
        }
    }
    report
}

/// The job id: the annotation (exact), else the label (possibly shortened).
fn job_id(pod: &Pod) -> Option<String> {
    pod.annotations()
        .get(JOB_ID_LABEL)
        .or_else(|| pod.labels().get(JOB_ID_LABEL))
        .filter(|j| !j.is_empty())
        .cloned()
}

async fn list_helpers(
    client: &Client,
    namespace: Option<&str>,
    instance: &str,
) -> Result<Vec<Pod>, HelperError> {
    let (api, scope): (Api<Pod>, String) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            format!("in namespace {ns}"),
        ),
        None => (Api::all(client.clone()), "across all namespaces".into()),
    };
    let selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={}",
        label_value(instance)
    );
    let mut params = ListParams::default().labels(&selector).limit(500);
    let mut pods = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(|e| {
            let (code, message) = describe(&e);
            HelperError::SweepHelperPods {
                scope: scope.clone(),
                code,
                message,
            }
        })?;
        pods.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(pods),
        }
    }
}

#[cfg(test)]
mod tests;
