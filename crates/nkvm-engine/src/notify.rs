//! Webhook notifications of scheduled runs: for a policy with `notify`, one JSON POST per
//! claim result of each run (`on: failure`, the default: only claims whose backup did not
//! succeed, and a run that failed as a whole; `on: always`: every claim, skips included):
//!
//! ```json
//! {"policy": "nightly", "cluster": "default", "namespace": "shop", "pvc": "data",
//!  "result": "failed", "stage": "helper-pod", "error": "...", "backupId": "...",
//!  "startedAt": "...", "finishedAt": "..."}
//! ```
//!
//! Delivery runs in its own task, so it never delays or fails the run: each POST is tried at
//! most [`Limits::attempts`] times, each within [`Limits::timeout`], with a growing pause
//! between; a 2xx answer is delivered. What could not be delivered is logged (naming the
//! webhook's host only: a URL may carry a token) and reported to the delivery callback, which
//! counts it in a metric. The payload holds only what the history shows.

use crate::EngineError;
use crate::policy_run::{ClaimOutcome, PolicyRunReport};
use nkvm_history::History;
use nkvm_policy::{NotifyOn, Policy};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// One claim's result, as posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Policy name.
    pub policy: String,
    /// The policy's cluster: its context name, or `default`.
    pub cluster: String,
    /// Namespace ("" when the run failed as a whole).
    pub namespace: String,
    /// Claim ("" when the run failed as a whole).
    pub pvc: String,
    /// `succeeded`, `failed`, `cancelled`, `interrupted`, `skipped`, or `error` for a run that
    /// failed as a whole.
    pub result: String,
    /// The stage it ended in.
    pub stage: String,
    /// Why it failed or was skipped.
    pub error: String,
    /// The backup's id, when one was made.
    pub backup_id: String,
    /// When the backup (or the run) began, RFC 3339.
    pub started_at: String,
    /// When it ended, RFC 3339.
    pub finished_at: String,
}

fn is_failure(result: &str) -> bool {
    result != "succeeded" && result != "skipped"
}

/// What to post about a run of `policy`, per its `notify.on`; `history` gives each backup's
/// times. Empty when the policy has no webhook or nothing qualifies.
pub fn notifications(
    policy: &Policy,
    report: Result<&PolicyRunReport, &EngineError>,
    history: &History,
) -> Vec<Notification> {
    let Some(notify) = &policy.notify else {
        return Vec::new();
    };
    let cluster = policy.cluster.clone().unwrap_or_else(|| "default".into());
    let base = |namespace: &str, pvc: &str, result: &str| Notification {
        policy: policy.name.clone(),
        cluster: cluster.clone(),
        namespace: namespace.into(),
        pvc: pvc.into(),
        result: result.into(),
        stage: String::new(),
        error: String::new(),
        backup_id: String::new(),
        started_at: String::new(),
        finished_at: String::new(),
    };
    let report = match report {
        Err(e) => {
            let now = crate::lifecycle::now_rfc3339();
            return vec![Notification {
                error: e.to_string(),
                started_at: now.clone(),
                finished_at: now,
                ..base("", "", "error")
            }];
        }
        Ok(r) => r,
    };
    report
        .claims
        .iter()
        .filter(|c| notify.on == NotifyOn::Always || is_failure(&c.result))
        .map(|c| claim_notification(base(&c.namespace, &c.pvc, &c.result), c, report, history))
        .collect()
}

fn claim_notification(
    mut n: Notification,
    c: &ClaimOutcome,
    report: &PolicyRunReport,
    history: &History,
) -> Notification {
    n.stage = c.stage.clone();
    n.error = c.error.clone();
    n.backup_id = c.backup_id.clone();
    let row = (!c.backup_id.is_empty())
        .then(|| history.backup(&c.backup_id).ok().flatten())
        .flatten();
    n.started_at = row
        .as_ref()
        .map_or_else(|| report.started_at.clone(), |r| r.started_at.clone());
    n.finished_at = row
        .and_then(|r| r.finished_at)
        .unwrap_or_else(|| report.finished_at.clone());
    n
}

/// How hard delivery tries.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Tries per notification.
    pub attempts: u32,
    /// Limit of each try (connect, send, answer).
    pub timeout: Duration,
    /// Pause after the first failed try; doubled after each further one.
    pub backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            attempts: 3,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_secs(1),
        }
    }
}

/// Told whether each notification of a policy was delivered.
pub type DeliveryCallback = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// Posts notifications to webhooks in the background.
#[derive(Clone)]
pub struct Notifier {
    client: reqwest::Client,
    limits: Limits,
    delivered: DeliveryCallback,
}

/// The scheme and host of `url`, the only part of it that is logged.
fn host_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}")
}

impl Notifier {
    /// A notifier with `limits`, telling `delivered` about each notification.
    pub fn new(limits: Limits, delivered: DeliveryCallback) -> Result<Notifier, String> {
        let client = reqwest::Client::builder()
            .timeout(limits.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the webhook client: {e}"))?;
        Ok(Notifier {
            client,
            limits,
            delivered,
        })
    }

    /// Posts what a run of `policy` calls for, in a task of its own; returns at once.
    pub fn notify(
        &self,
        policy: &Policy,
        report: Result<&PolicyRunReport, &EngineError>,
        history: &History,
    ) {
        let Some(url) = policy.notify.as_ref().map(|n| n.webhook.clone()) else {
            return;
        };
        let items = notifications(policy, report, history);
        if items.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            for n in items {
                let ok = me.deliver(&url, &n).await;
                (me.delivered)(&n.policy, ok);
            }
        });
    }

    /// Posts one notification, retrying; whether it was delivered.
    async fn deliver(&self, url: &str, n: &Notification) -> bool {
        let body = match serde_json::to_vec(n) {
            Ok(b) => b,
            Err(_) => return false,
        };
        let mut pause = self.limits.backoff;
        let mut last = String::new();
        for attempt in 1..=self.limits.attempts.max(1) {
            let sent = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => last = format!("answered {}", r.status()),
                Err(e) if e.is_timeout() => {
                    last = format!("no answer within {} s", self.limits.timeout.as_secs())
                }
                Err(e) if e.is_connect() => last = "could not connect".into(),
                Err(_) => last = "the request failed".into(),
            }
            if attempt < self.limits.attempts {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        tracing::warn!(
            policy = n.policy,
            webhook = host_of(url),
            claim = format!("{}/{}", n.namespace, n.pvc),
            "a webhook notification was not delivered after {} tries: {last}",
            self.limits.attempts
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_scheme_and_host_of_a_webhook_are_logged() {
        assert_eq!(
            host_of("https://user:secret@hooks.example:8443/t/abc?token=x"),
            "https://hooks.example:8443"
        );
        assert_eq!(host_of("http://127.0.0.1:9/x"), "http://127.0.0.1:9");
    }
}
