//! Fault injection: parsing the `--fault` specs (a contract, see `docs/sandbox.md`), the
//! registry of active faults with their remaining counts, and the questions the API server,
//! exec streams, scheduler and kubelet ask it ("does this request fail?", "where is this
//! stream cut?", "does this pod ever start?").
//!
//! A count is used up when the fault actually happens: an API request fails, or an exec
//! stream reaches its byte budget and is cut or stalled. A stream that ends before the budget
//! leaves the count alone, so `exec-cut-after=1024,count=1` cuts exactly one stream. A fault
//! whose count reaches zero is removed.

use crate::auth::Attributes;
use crate::error::{ApiError, ApiResult};
use crate::resources::RESOURCES;
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Every accepted form, for error messages and `--help`.
pub const VALID_FORMS: &str = "exec-cut-after=BYTES[,count=N], exec-stall-after=BYTES[,count=N], \
     exec-stdin-cut-after=BYTES[,count=N], \
     api-error=VERB:RESOURCE:STATUS[,count=N], pod-start-delay=SECONDS, \
     pod-never-ready=NAME_PREFIX, image-pull-fail=NAME_PREFIX";

/// RBAC verbs an `api-error` fault may name (`*` matches any).
const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "*",
];

/// Longest `pod-start-delay` accepted: a day is already far past any test's patience.
const MAX_DELAY_SECONDS: f64 = 86_400.0;

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Drop exec connections (no status, no close frame) after this many stdout bytes.
    ExecCutAfter {
        /// Stdout bytes sent before the cut.
        bytes: u64,
    },
    /// Stop sending on exec connections, leaving them open, after this many stdout bytes.
    ExecStallAfter {
        /// Stdout bytes sent before the stall.
        bytes: u64,
    },
    /// Drop exec connections (no status, no close frame, process killed) after this many
    /// stdin bytes arrived from the client: a restore's stream cut on its way in.
    ExecStdinCutAfter {
        /// Stdin bytes delivered to the process before the cut.
        bytes: u64,
    },
    /// Fail matching API requests with this HTTP status.
    ApiError {
        /// RBAC verb, or `*`.
        verb: String,
        /// Resource plural, or `*`.
        resource: String,
        /// `None` matches requests without a subresource only; `Some("*")` any subresource.
        subresource: Option<String>,
        /// HTTP status code (400–599).
        status: u16,
    },
    /// Wait this long after scheduling before starting a pod's containers.
    PodStartDelay {
        /// The wait.
        delay: Duration,
    },
    /// Never schedule pods whose name starts with this prefix.
    PodNeverReady {
        /// Pod name prefix.
        prefix: String,
    },
    /// Fail image pulls for pods whose name, or a container's image, starts with this prefix.
    ImagePullFail {
        /// Pod name or image prefix.
        prefix: String,
    },
}

/// One parsed fault spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// How many times it may happen; `None` for every time.
    pub count: Option<u64>,
    /// The spec as written (trimmed), quoted in messages that report the fault.
    pub spec: String,
}

impl Fault {
    /// Parses one spec, e.g. `exec-cut-after=1024,count=1`. The error names the spec and the
    /// part that is wrong.
    pub fn parse(spec: &str) -> Result<Fault, String> {
        let spec = spec.trim();
        let fail = |why: String| format!("{spec:?}: {why}");
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| fail("expected NAME=VALUE".into()))?;
        let mut parts = rest.split(',');
        let value = parts.next().unwrap_or("");
        let mut count = None;
        for option in parts {
            match option.split_once('=') {
                Some(("count", n)) if count.is_none() => {
                    count = Some(parse_count(n).map_err(&fail)?);
                }
                Some(("count", _)) => return Err(fail("count= is given twice".into())),
                _ => {
                    return Err(fail(format!(
                        "unknown option {option:?}; the only option is count=N"
                    )));
                }
            }
        }
        let kind = parse_kind(name, value).map_err(&fail)?;
        let countable = matches!(
            kind,
            FaultKind::ExecCutAfter { .. }
                | FaultKind::ExecStallAfter { .. }
                | FaultKind::ExecStdinCutAfter { .. }
                | FaultKind::ApiError { .. }
        );
        if count.is_some() && !countable {
            return Err(fail(format!(
                "count= applies only to exec-cut-after, exec-stall-after, exec-stdin-cut-after and api-error, not {name}"
            )));
        }
        Ok(Fault {
            kind,
            count,
            spec: spec.to_string(),
        })
    }
}

fn parse_count(n: &str) -> Result<u64, String> {
    match n.parse::<u64>() {
        Ok(0) => Err("count must be at least 1 (leave count= out for every time)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("count {n:?} is not a whole number")),
    }
}

fn parse_kind(name: &str, value: &str) -> Result<FaultKind, String> {
    match name {
        "exec-cut-after" => Ok(FaultKind::ExecCutAfter {
            bytes: parse_bytes(value)?,
        }),
        "exec-stall-after" => Ok(FaultKind::ExecStallAfter {
            bytes: parse_bytes(value)?,
        }),
        "exec-stdin-cut-after" => Ok(FaultKind::ExecStdinCutAfter {
            bytes: parse_bytes(value)?,
        }),
        "api-error" => parse_api_error(value),
        "pod-start-delay" => parse_delay(value).map(|delay| FaultKind::PodStartDelay { delay }),
        "pod-never-ready" => parse_prefix(value).map(|prefix| FaultKind::PodNeverReady { prefix }),
        "image-pull-fail" => parse_prefix(value).map(|prefix| FaultKind::ImagePullFail { prefix }),
        other => Err(format!("unknown fault {other:?}")),
    }
}

fn parse_bytes(value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("BYTES {value:?} is not a whole number of bytes"))
}

fn parse_delay(value: &str) -> Result<Duration, String> {
    let secs = value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (0.0..=MAX_DELAY_SECONDS).contains(s))
        .ok_or_else(|| {
            format!("SECONDS {value:?} is not a number of seconds from 0 to {MAX_DELAY_SECONDS}")
        })?;
    Ok(Duration::from_secs_f64(secs))
}

fn parse_prefix(value: &str) -> Result<String, String> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(format!(
            "NAME_PREFIX {value:?} must be non-empty and without spaces"
        ));
    }
    Ok(value.to_string())
}

fn parse_api_error(value: &str) -> Result<FaultKind, String> {
    let [verb, resource, status] = value.split(':').collect::<Vec<_>>()[..] else {
        return Err(format!("{value:?} is not VERB:RESOURCE:STATUS"));
    };
    if !VERBS.contains(&verb) {
        return Err(format!("VERB {verb:?} is not one of {}", VERBS.join(", ")));
    }
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    if resource != "*" && !RESOURCES.iter().any(|r| r.plural == resource) {
        return Err(format!(
            "RESOURCE {resource:?} is not a resource the sandbox serves; use the plural as \
             `kubectl api-resources` lists it (pods, persistentvolumeclaims, ...) or *"
        ));
    }
    if let Some(s) = subresource
        && (s.is_empty() || !s.chars().all(|c| c.is_ascii_lowercase() || c == '*'))
    {
        return Err(format!(
            "subresource {s:?} must be a lowercase name such as exec, log, status, or *"
        ));
    }
    let status = status
        .parse::<u16>()
        .ok()
        .filter(|s| (400..=599).contains(s))
        .ok_or_else(|| format!("STATUS {status:?} is not an HTTP error code from 400 to 599"))?;
    Ok(FaultKind::ApiError {
        verb: verb.to_string(),
        resource: resource.to_string(),
        subresource: subresource.map(String::from),
        status,
    })
}

impl FaultKind {
    /// The fault's name as written in a spec (`exec-cut-after`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::ExecCutAfter { .. } => "exec-cut-after",
            FaultKind::ExecStallAfter { .. } => "exec-stall-after",
            FaultKind::ExecStdinCutAfter { .. } => "exec-stdin-cut-after",
            FaultKind::ApiError { .. } => "api-error",
            FaultKind::PodStartDelay { .. } => "pod-start-delay",
            FaultKind::PodNeverReady { .. } => "pod-never-ready",
            FaultKind::ImagePullFail { .. } => "image-pull-fail",
        }
    }

    /// Whether an `api-error` fault covers a request with these RBAC attributes.
    fn matches_request(&self, attrs: &Attributes) -> bool {
        let FaultKind::ApiError {
            verb,
            resource,
            subresource,
            ..
        } = self
        else {
            return false;
        };
        let verb_ok = verb == "*" || *verb == attrs.verb;
        let resource_ok = resource == "*" || *resource == attrs.resource;
        // As in RBAC, `pods` does not cover `pods/exec`, but a bare `*` covers everything.
        let sub_ok = match subresource.as_deref() {
            None => resource == "*" || attrs.subresource.is_empty(),
            Some("*") => !attrs.subresource.is_empty(),
            Some(s) => s == attrs.subresource,
        };
        verb_ok && resource_ok && sub_ok
    }
}

/// What an exec fault does to a stream once its byte budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecAction {
    /// Drop the connection: no status frame, no close frame; kill the process.
    Cut,
    /// Send nothing more and stop reading the process, but keep the connection open.
    Stall,
}

/// One active fault as listed by `GET /sandbox/faults`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultEntry {
    /// Registry id (stable while the fault is active).
    pub id: u64,
    /// The fault's name (`exec-cut-after`, ...).
    pub fault: &'static str,
    /// The spec as written.
    pub spec: String,
    /// How many more times it happens; `null` for every time.
    pub remaining: Option<u64>,
}

#[derive(Debug)]
struct Active {
    id: u64,
    fault: Fault,
    remaining: Option<u64>,
}

impl Active {
    fn entry(&self) -> FaultEntry {
        FaultEntry {
            id: self.id,
            fault: self.fault.kind.name(),
            spec: self.fault.spec.clone(),
            remaining: self.remaining,
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    active: Vec<Active>,
}

impl Registry {
    /// Uses up one count of fault `index`, removing it when none are left.
    fn use_once(&mut self, index: usize) {
        let exhausted = match &mut self.active[index].remaining {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if exhausted {
            self.active.remove(index);
        }
    }
}

/// The active faults of one sandbox. Clones share the same registry (exec streams keep one).
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<Registry>>);

impl Faults {
    /// A registry holding `faults` (from `--fault` flags).
    pub fn new(faults: Vec<Fault>) -> Self {
        let registry = Faults::default();
        for f in faults {
            registry.add(f);
        }
        registry
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every operation leaves the registry consistent, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Activates a fault and returns its entry.
    pub fn add(&self, fault: Fault) -> FaultEntry {
        let mut reg = self.lock();
        reg.next_id += 1;
        let active = Active {
            id: reg.next_id,
            remaining: fault.count,
            fault,
        };
        let entry = active.entry();
        reg.active.push(active);
        entry
    }

    /// The active faults, in the order they were added.
    pub fn list(&self) -> Vec<FaultEntry> {
        self.lock().active.iter().map(Active::entry).collect()
    }

    /// Removes every fault; returns how many there were.
    pub fn clear(&self) -> usize {
        std::mem::take(&mut self.lock().active).len()
    }

    /// Fails the request when an `api-error` fault covers it (using up one count).
    pub fn api_error(&self, attrs: &Attributes) -> ApiResult<()> {
        let mut reg = self.lock();
        let Some(index) = reg
            .active
            .iter()
            .position(|a| a.fault.kind.matches_request(attrs))
        else {
            return Ok(());
        };
        let fault = &reg.active[index].fault;
        let FaultKind::ApiError { status, .. } = fault.kind else {
            return Ok(());
        };
        let err = ApiError::injected(status, &fault.spec);
        reg.use_once(index);
        Err(err)
    }

    /// The byte budget of a new exec stream, from the exec faults active now.
    pub fn exec_budget(&self) -> StdoutBudget {
        let mut triggers: Vec<Trigger> = self
            .lock()
            .active
            .iter()
            .filter_map(|a| match a.fault.kind {
                FaultKind::ExecCutAfter { bytes } => Some((a.id, bytes, ExecAction::Cut)),
                FaultKind::ExecStallAfter { bytes } => Some((a.id, bytes, ExecAction::Stall)),
                _ => None,
            })
            .map(|(id, after, action)| Trigger { id, after, action })
            .collect();
        triggers.sort_by_key(|t| t.after);
        StdoutBudget {
            faults: self.clone(),
            sent: 0,
            triggers,
        }
    }

    /// The stdin budget of a new exec stream: the lowest active `exec-stdin-cut-after`.
    pub fn stdin_budget(&self) -> StdinBudget {
        let cut = self
            .lock()
            .active
            .iter()
            .filter_map(|a| match a.fault.kind {
                FaultKind::ExecStdinCutAfter { bytes } => Some((a.id, bytes)),
                _ => None,
            })
            .min_by_key(|(_, bytes)| *bytes);
        StdinBudget {
            faults: self.clone(),
            received: 0,
            cut,
        }
    }

    /// Uses up one count of fault `id`; false when it is gone (cleared or used up).
    fn fire(&self, id: u64) -> bool {
        let mut reg = self.lock();
        match reg.active.iter().position(|a| a.id == id) {
            Some(index) => {
                reg.use_once(index);
                true
            }
            None => false,
        }
    }

    /// The longest active `pod-start-delay`, if any.
    pub fn pod_start_delay(&self) -> Option<Duration> {
        self.lock()
            .active
            .iter()
            .filter_map(|a| match a.fault.kind {
                FaultKind::PodStartDelay { delay } => Some(delay),
                _ => None,
            })
            .max()
    }

    /// The spec of the `pod-never-ready` fault that keeps pod `name` unscheduled, if any.
    pub fn pod_never_ready(&self, name: &str) -> Option<String> {
        self.find(|k| matches!(k, FaultKind::PodNeverReady { prefix } if name.starts_with(prefix.as_str())))
    }

    /// The spec of the `image-pull-fail` fault that fails pulling `image` for pod `pod_name`.
    pub fn image_pull_fail(&self, pod_name: &str, image: &str) -> Option<String> {
        self.find(|k| {
            matches!(k, FaultKind::ImagePullFail { prefix }
                if pod_name.starts_with(prefix.as_str()) || image.starts_with(prefix.as_str()))
        })
    }

    fn find(&self, pred: impl Fn(&FaultKind) -> bool) -> Option<String> {
        self.lock()
            .active
            .iter()
            .find(|a| pred(&a.fault.kind))
            .map(|a| a.fault.spec.clone())
    }
}

#[derive(Debug, Clone)]
struct Trigger {
    id: u64,
    after: u64,
    action: ExecAction,
}

/// One exec stream's stdin accounting against the `exec-stdin-cut-after` fault active when
/// it started.
#[derive(Debug)]
pub struct StdinBudget {
    faults: Faults,
    received: u64,
    cut: Option<(u64, u64)>,
}

impl StdinBudget {
    /// On receiving `len` more stdin bytes: how many to pass to the process, and whether to
    /// cut the stream after that.
    pub fn admit(&mut self, len: usize) -> (usize, bool) {
        let end = self.received + len as u64;
        if let Some((id, after)) = self.cut
            && after < end
        {
            self.cut = None;
            if self.faults.fire(id) {
                let keep = after.saturating_sub(self.received);
                self.received = after;
                return (usize::try_from(keep).unwrap_or(len).min(len), true);
            }
        }
        self.received = end;
        (len, false)
    }
}

/// One exec stream's stdout accounting against the exec faults active when it started.
#[derive(Debug)]
pub struct StdoutBudget {
    faults: Faults,
    sent: u64,
    triggers: Vec<Trigger>,
}

impl StdoutBudget {
    /// Before sending `len` more stdout bytes: how many of them to send, and the fault to act
    /// on after sending those. Call with 0 before the first frame (a budget of 0 bytes).
    pub fn admit(&mut self, len: usize) -> (usize, Option<ExecAction>) {
        let end = self.sent + len as u64;
        while self.triggers.first().is_some_and(|t| t.after <= end) {
            let t = self.triggers.remove(0);
            // Another stream may have used up the count, or the faults were cleared.
            if self.faults.fire(t.id) {
                let allowed = t.after.saturating_sub(self.sent);
                self.sent += allowed;
                return (
                    usize::try_from(allowed).unwrap_or(len).min(len),
                    Some(t.action),
                );
            }
        }
        self.sent = end;
        (len, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, resource: &str, sub: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: resource.into(),
            subresource: sub.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    #[test]
    fn every_documented_form_parses() {
        let f = Fault::parse(" exec-cut-after=1024,count=2 ").unwrap();
        assert_eq!(f.kind, FaultKind::ExecCutAfter { bytes: 1024 });
        assert_eq!(
            (f.count, f.spec.as_str()),
            (Some(2), "exec-cut-after=1024,count=2")
        );
        assert_eq!(
            Fault::parse("exec-stall-after=0").unwrap().kind,
            FaultKind::ExecStallAfter { bytes: 0 }
        );
        assert_eq!(
            Fault::parse("api-error=create:pods/exec:500,count=1")
                .unwrap()
                .kind,
            FaultKind::ApiError {
                verb: "create".into(),
                resource: "pods".into(),
                subresource: Some("exec".into()),
                status: 500
            }
        );
        assert!(Fault::parse("api-error=*:*:503").is_ok());
        assert!(Fault::parse("api-error=list:persistentvolumeclaims:503").is_ok());
        assert_eq!(
            Fault::parse("pod-start-delay=1.5").unwrap().kind,
            FaultKind::PodStartDelay {
                delay: Duration::from_millis(1500)
            }
        );
        assert_eq!(
            Fault::parse("pod-never-ready=nkvm-").unwrap().kind,
            FaultKind::PodNeverReady {
                prefix: "nkvm-".into()
            }
        );
        assert_eq!(
            Fault::parse("image-pull-fail=registry.invalid/")
                .unwrap()
                .kind,
            FaultKind::ImagePullFail {
                prefix: "registry.invalid/".into()
            }
        );
    }

    #[test]
    fn bad_specs_name_the_part_that_is_wrong() {
        let cases = [
            ("exec-cut-after", "NAME=VALUE"),
            ("exec-cut-after=1k", "BYTES \"1k\""),
            ("exec-cut-after=10,count=0", "at least 1"),
            ("exec-cut-after=10,count=x", "count \"x\""),
            ("exec-cut-after=10,count=1,count=2", "twice"),
            ("exec-cut-after=10,times=2", "unknown option \"times=2\""),
            ("exec-cut=10", "unknown fault \"exec-cut\""),
            ("api-error=create:pods", "VERB:RESOURCE:STATUS"),
            ("api-error=post:pods:500", "VERB \"post\""),
            ("api-error=create:pod:500", "RESOURCE \"pod\""),
            ("api-error=create:pods/:500", "subresource \"\""),
            ("api-error=create:pods:200", "STATUS \"200\""),
            ("pod-start-delay=soon", "SECONDS \"soon\""),
            ("pod-start-delay=-1", "SECONDS \"-1\""),
            ("pod-start-delay=5,count=1", "count= applies only"),
            ("pod-never-ready=", "NAME_PREFIX"),
            ("image-pull-fail=a b", "NAME_PREFIX"),
        ];
        for (spec, part) in cases {
            let err = Fault::parse(spec).expect_err(spec);
            assert!(err.contains(part), "{spec}: {err}");
            assert!(err.contains(&format!("{:?}", spec.trim())), "{spec}: {err}");
        }
    }

    #[test]
    fn api_errors_match_like_rbac_and_use_up_their_count() {
        let faults = Faults::new(vec![
            Fault::parse("api-error=create:pods:500,count=2").unwrap(),
        ]);
        assert!(faults.api_error(&attrs("create", "pods", "exec")).is_ok());
        assert!(faults.api_error(&attrs("delete", "pods", "")).is_ok());
        assert_eq!(faults.list()[0].remaining, Some(2));
        let err = faults.api_error(&attrs("create", "pods", "")).unwrap_err();
        assert_eq!((err.code, err.reason), (500, "InternalError"));
        assert!(
            err.message.contains("api-error=create:pods:500,count=2"),
            "{}",
            err.message
        );
        assert_eq!(faults.list()[0].remaining, Some(1));
        assert!(faults.api_error(&attrs("create", "pods", "")).is_err());
        assert!(faults.list().is_empty(), "a used-up fault is removed");
        assert!(faults.api_error(&attrs("create", "pods", "")).is_ok());
    }

    #[test]
    fn wildcards_cover_verbs_resources_and_subresources() {
        let faults = Faults::new(vec![Fault::parse("api-error=*:pods/*:403").unwrap()]);
        assert!(faults.api_error(&attrs("get", "pods", "log")).is_err());
        assert!(faults.api_error(&attrs("get", "pods", "")).is_ok());
        let all = Faults::new(vec![Fault::parse("api-error=*:*:503").unwrap()]);
        assert_eq!(
            all.api_error(&attrs("create", "pods", "exec"))
                .unwrap_err()
                .code,
            503
        );
        assert_eq!(
            all.api_error(&attrs("list", "nodes", "")).unwrap_err().code,
            503
        );
        assert_eq!(all.list()[0].remaining, None, "no count: every time");
    }

    #[test]
    fn a_stream_is_cut_exactly_at_its_budget_and_uses_up_the_count_once() {
        let faults = Faults::new(vec![Fault::parse("exec-cut-after=1000,count=1").unwrap()]);
        let mut first = faults.exec_budget();
        let mut second = faults.exec_budget();
        assert_eq!(first.admit(0), (0, None));
        assert_eq!(first.admit(600), (600, None));
        assert_eq!(first.admit(600), (400, Some(ExecAction::Cut)));
        assert!(faults.list().is_empty());
        // The other stream started while the fault was active, but its count is spent.
        assert_eq!(second.admit(5000), (5000, None));
        assert_eq!(faults.exec_budget().admit(5000), (5000, None));
    }

    #[test]
    fn stdin_is_cut_after_its_budget_once() {
        let faults = Faults::new(vec![
            Fault::parse("exec-stdin-cut-after=1000,count=1").unwrap(),
        ]);
        let mut first = faults.stdin_budget();
        assert_eq!(
            first.admit(1000),
            (1000, false),
            "exactly the budget passes"
        );
        assert_eq!(first.admit(10), (0, true));
        assert!(faults.list().is_empty());
        assert_eq!(faults.stdin_budget().admit(5000), (5000, false));
    }

    #[test]
    fn short_streams_leave_the_count_alone_and_zero_bytes_acts_at_once() {
        let faults = Faults::new(vec![Fault::parse("exec-stall-after=0,count=2").unwrap()]);
        assert_eq!(faults.exec_budget().admit(0), (0, Some(ExecAction::Stall)));
        let cut = Faults::new(vec![Fault::parse("exec-cut-after=100,count=1").unwrap()]);
        assert_eq!(cut.exec_budget().admit(99), (99, None));
        assert_eq!(cut.list()[0].remaining, Some(1));
        assert_eq!(faults.list()[0].remaining, Some(1));
    }

    #[test]
    fn the_smallest_budget_acts_first() {
        let faults = Faults::new(vec![
            Fault::parse("exec-cut-after=500").unwrap(),
            Fault::parse("exec-stall-after=100").unwrap(),
        ]);
        assert_eq!(
            faults.exec_budget().admit(1000),
            (100, Some(ExecAction::Stall))
        );
    }

    #[test]
    fn pod_faults_match_by_prefix_and_clear_removes_everything() {
        let faults = Faults::new(vec![
            Fault::parse("pod-never-ready=stuck-").unwrap(),
            Fault::parse("image-pull-fail=bad.registry/").unwrap(),
            Fault::parse("pod-start-delay=2").unwrap(),
            Fault::parse("pod-start-delay=0.5").unwrap(),
        ]);
        assert_eq!(
            faults.pod_never_ready("stuck-1").as_deref(),
            Some("pod-never-ready=stuck-")
        );
        assert_eq!(faults.pod_never_ready("fine"), None);
        assert!(faults.image_pull_fail("p", "bad.registry/app:1").is_some());
        assert!(faults.image_pull_fail("bad.registry/", "busybox").is_some());
        assert!(faults.image_pull_fail("p", "busybox").is_none());
        assert_eq!(faults.pod_start_delay(), Some(Duration::from_secs(2)));
        assert_eq!(faults.clear(), 4);
        assert_eq!(faults.pod_start_delay(), None);
    }
}
