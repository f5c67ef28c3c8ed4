//! Prometheus metrics (`/metrics`, text format): jobs by kind and status, failures by kind
//! and failure kind, bytes moved, durations, jobs in flight, discovery duration, history
//! writes that failed, and the last successful backup of each claim. Names are listed in
//! docs/web-ui.md.

use nkvm_domain::JobStatus;
use nkvm_engine::jobs::{ItemState, JobKind};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

type Labels = Vec<(String, String)>;

fn job_duration_histogram() -> Histogram {
    // 1 s to about 9 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// nkvm's metrics.
pub struct Metrics {
    registry: Registry,
    jobs_finished: Family<Labels, Counter>,
    job_failures: Family<Labels, Counter>,
    history_write_failures: Gauge,
    bytes: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    discovery: Histogram,
    last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    pvc_last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    policy_runs: Family<Labels, Counter>,
    policy_bytes: Family<Labels, Gauge>,
    webhooks: Family<Labels, Counter>,
    connected: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let jobs_finished = registered(
            r,
            "nkvm_jobs_finished",
            "Backup and restore items that ended, by kind and status",
            Family::<Labels, Counter>::default(),
        );
        let job_failures = registered(
            r,
            "nkvm_job_failures",
            "Backup and restore items that failed or were cancelled, by kind and failure kind",
            Family::<Labels, Counter>::default(),
        );
        // A gauge read from the history at each scrape: the count lives with the database
        // handle, which outlives any one cluster connection.
        let history_write_failures = registered(
            r,
            "nkvm_history_write_failures",
            "History rows and audit entries that could not be written since start",
            Gauge::default(),
        );
        let bytes = registered(
            r,
            "nkvm_job_bytes",
            "Tar bytes read by backups and written by restores",
            Family::<Labels, Counter>::default(),
        );
        let durations = registered(
            r,
            "nkvm_job_duration_seconds",
            "How long backup and restore items ran, by kind and status",
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                job_duration_histogram,
            ),
        );
        let in_flight = registered(
            r,
            "nkvm_jobs_in_flight",
            "Backup and restore items queued or running",
            Gauge::default(),
        );
        let discovery = registered(
            r,
            "nkvm_discovery_duration_seconds",
            "How long loading the PVC inventory took",
            Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        );
        let last_success = registered(
            r,
            "nkvm_last_successful_backup_timestamp_seconds",
            "Unix time of the last successful backup of each claim (namespace, pvc)",
            Family::<Labels, Gauge<f64, AtomicU64>>::default(),
        );
        // The name the policy alerts use (docs/policies.md); same values as the one above.
        let pvc_last_success = registered(
            r,
            "nkvm_pvc_last_success_timestamp_seconds",
            "Unix time of the last successful backup of each claim (namespace, pvc)",
            Family::<Labels, Gauge<f64, AtomicU64>>::default(),
        );
        let policy_runs = registered(
            r,
            "nkvm_policy_runs",
            "Policy runs that ended, by policy and result (succeeded, failed, error)",
            Family::<Labels, Counter>::default(),
        );
        let policy_bytes = registered(
            r,
            "nkvm_backup_bytes_stored",
            "Bytes the backups each policy made (and retention kept) hold in the store",
            Family::<Labels, Gauge>::default(),
        );
        let webhooks = registered(
            r,
            "nkvm_webhook_deliveries",
            "Webhook notifications of policy runs, by policy and result (delivered, failed)",
            Family::<Labels, Counter>::default(),
        );
        let connected = registered(
            r,
            "nkvm_cluster_connected",
            "1 while nkvm has a cluster connection",
            Gauge::default(),
        );
        Metrics {
            registry,
            jobs_finished,
            job_failures,
            history_write_failures,
            bytes,
            durations,
            in_flight,
            discovery,
            last_success,
            pvc_last_success,
            policy_runs,
            policy_bytes,
            webhooks,
            connected,
        }
    }

    /// Counts a policy run that ended with `result`, and sets the bytes its backups hold.
    pub fn policy_run(&self, policy: &str, result: &str, bytes_stored: u64) {
        let labels: Labels = vec![
            ("policy".into(), policy.into()),
            ("result".into(), result.into()),
        ];
        self.policy_runs.get_or_create(&labels).inc();
        self.policy_bytes
            .get_or_create(&vec![("policy".into(), policy.into())])
            .set(i64::try_from(bytes_stored).unwrap_or(i64::MAX));
    }

    /// Counts a webhook notification of `policy`, delivered or not.
    pub fn webhook_delivery(&self, policy: &str, delivered: bool) {
        let labels: Labels = vec![
            ("policy".into(), policy.into()),
            (
                "result".into(),
                if delivered { "delivered" } else { "failed" }.into(),
            ),
        ];
        self.webhooks.get_or_create(&labels).inc();
    }

    /// Counts an ended item.
    pub fn item_finished(&self, kind: JobKind, item: &ItemState, elapsed: Duration) {
        let status = item.status.as_str().to_string();
        let by_status: Labels = vec![
            ("kind".into(), kind.as_str().into()),
            ("status".into(), status),
        ];
        self.jobs_finished.get_or_create(&by_status).inc();
        if let Some(failure) = item.failure_kind {
            let by_failure: Labels = vec![
                ("kind".into(), kind.as_str().into()),
                ("failure_kind".into(), failure.label().into()),
            ];
            self.job_failures.get_or_create(&by_failure).inc();
        }
        self.durations
            .get_or_create(&by_status)
            .observe(elapsed.as_secs_f64());
        self.bytes
            .get_or_create(&vec![("kind".into(), kind.as_str().into())])
            .inc_by(item.bytes);
        if kind == JobKind::Backup && item.status == JobStatus::Succeeded {
            self.set_last_success(&item.namespace, &item.pvc, &item.finished_at);
        }
    }

    /// Records a claim's last successful backup (RFC 3339).
    pub fn set_last_success(&self, namespace: &str, pvc: &str, at: &str) {
        if let Ok(t) = at.parse::<jiff::Timestamp>() {
            let labels: Labels = vec![
                ("namespace".into(), namespace.into()),
                ("pvc".into(), pvc.into()),
            ];
            let seconds = t.as_millisecond() as f64 / 1000.0;
            self.last_success.get_or_create(&labels).set(seconds);
            self.pvc_last_success.get_or_create(&labels).set(seconds);
        }
    }

    /// Records how long loading the inventory took.
    pub fn discovery_took(&self, took: Duration) {
        self.discovery.observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, in_flight: usize, connected: bool, history_write_failures: u64) -> String {
        self.in_flight.set(in_flight as i64);
        self.history_write_failures
            .set(i64::try_from(history_write_failures).unwrap_or(i64::MAX));
        self.connected.set(i64::from(connected));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Registers `metric` under `name` and hands it back (the registry keeps its own handle).
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkvm_domain::{FailureKind, Stage};

    #[test]
    fn finished_backups_are_counted_with_their_bytes_and_times() {
        let m = Metrics::new();
        let item = ItemState {
            job: 1,
            kind: JobKind::Backup,
            index: 0,
            namespace: "shop".into(),
            pvc: "data".into(),
            id: "x".into(),
            status: JobStatus::Succeeded,
            stage: Stage::Commit,
            failure_kind: None,
            bytes: 4096,
            rate: None,
            expected_bytes: None,
            eta_seconds: None,
            error: String::new(),
            hint: String::new(),
            artifact: String::new(),
            started_at: String::new(),
            finished_at: "2026-11-26T00:00:10Z".into(),
        };
        m.item_finished(JobKind::Backup, &item, Duration::from_secs(3));
        let failed = ItemState {
            status: JobStatus::Failed,
            failure_kind: Some(FailureKind::Timeout),
            bytes: 0,
            ..item.clone()
        };
        m.item_finished(JobKind::Backup, &failed, Duration::from_secs(1));
        let text = m.render(2, true, 3);
        assert!(
            text.contains(r#"nkvm_job_failures_total{kind="backup",failure_kind="timeout"} 1"#)
        );
        assert!(text.contains("nkvm_history_write_failures 3"), "{text}");
        assert!(text.contains(r#"nkvm_jobs_finished_total{kind="backup",status="succeeded"} 1"#));
        assert!(text.contains(r#"nkvm_job_bytes_total{kind="backup"} 4096"#));
        assert!(text.contains("nkvm_jobs_in_flight 2"));
        assert!(text.contains(
            r#"nkvm_last_successful_backup_timestamp_seconds{namespace="shop",pvc="data"} 1795651210"#
        ));
        assert!(text.contains(
            r#"nkvm_pvc_last_success_timestamp_seconds{namespace="shop",pvc="data"} 1795651210"#
        ));
    }

    #[test]
    fn the_example_alert_rules_use_only_metrics_nkvm_exports() {
        let m = Metrics::new();
        m.set_last_success("shop", "data", "2026-11-26T00:00:10Z");
        m.policy_run("nightly", "failed", 2048);
        let text = m.render(0, true, 0);
        assert!(
            text.contains(r#"nkvm_policy_runs_total{policy="nightly",result="failed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nkvm_backup_bytes_stored{policy="nightly"} 2048"#),
            "{text}"
        );
        let rule = include_str!("../../../deploy/monitoring/prometheus-rule.yaml");
        let mut names = Vec::new();
        for line in rule.lines().filter(|l| l.trim_start().starts_with("expr:")) {
            let mut rest = line;
            while let Some(at) = rest.find("nkvm_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.push(name);
            }
        }
        assert!(
            names.len() >= 2,
            "the rule's expressions name nkvm metrics: {names:?}"
        );
        for name in names {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "{name} is not a metric nkvm exports:\n{text}"
            );
        }
    }
}
