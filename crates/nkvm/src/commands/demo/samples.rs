//! The demo's sample cluster as data: two namespaces with one claim for every way a claim can
//! be owned (Deployment, StatefulSet template, CronJob-made Job, bare Pod, nobody) and for the
//! reasons nkvm refuses one (Block mode, WaitForFirstConsumer still Pending). Pure: building
//! the objects touches no cluster, so the unit tests below check every manifest parses.
//!
//! Pods in the sandbox run the host's programs, so every container is a POSIX `sh` script
//! using coreutils and sed; the images are ignored but named as a real cluster would name
//! them. Each script fills its volume once, prints a `ready:` line (what seeding waits for),
//! and then idles, except Postgres, which keeps appending to its log (see [`CHURN`]).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The online shop: Postgres, a storefront, a debug pod, an old export, a raw ledger device.
pub const SHOP: &str = "shop";
/// The analytics team: a 3-replica event store, a nightly report, a query spill volume.
pub const ANALYTICS: &str = "analytics";
/// The line every sample container prints once its volume is filled.
pub const READY_MARKER: &str = "ready:";
/// The one workload whose files keep changing, and how: Postgres appends a checkpoint line to
/// its server log every 10 seconds. Backing up its claim can therefore fail with "files
/// changed while tar read them", which is nkvm refusing an inconsistent copy, by design.
pub const CHURN: &str =
    "shop/postgres appends to log/postgresql.log on claim postgres-data every 10 s";
/// The StorageClass that binds only once a pod uses the claim.
pub const LAZY_CLASS: &str = "local-nvme";

/// Everything the demo creates, in the order it must be created.
#[derive(Debug, Clone)]
pub struct Samples {
    /// Sample namespaces.
    pub namespaces: Vec<Namespace>,
    /// Extra StorageClasses (the sandbox brings `standard` and `wffc`).
    pub storage_classes: Vec<StorageClass>,
    /// Claims made directly (StatefulSet claims come from its templates).
    pub claims: Vec<PersistentVolumeClaim>,
    /// Pods that fill a claim nobody uses any more, run to completion, then are deleted.
    pub writers: Vec<Pod>,
    /// Deployments.
    pub deployments: Vec<Deployment>,
    /// StatefulSets.
    pub stateful_sets: Vec<StatefulSet>,
    /// CronJobs; each gets one Job made from it, as `kubectl create job --from=cronjob/...`.
    pub cron_jobs: Vec<CronJob>,
    /// Pods with no controller.
    pub pods: Vec<Pod>,
}

impl Samples {
    /// How many long-running pods the samples start (the writers excluded).
    pub fn running_pods(&self) -> usize {
        let replicas = |r: Option<i32>| usize::try_from(r.unwrap_or(1)).unwrap_or(0);
        let deployments: usize = self
            .deployments
            .iter()
            .map(|d| replicas(d.spec.as_ref().and_then(|s| s.replicas)))
            .sum();
        let stateful: usize = self
            .stateful_sets
            .iter()
            .map(|s| replicas(s.spec.as_ref().and_then(|s| s.replicas)))
            .sum();
        deployments + stateful + self.cron_jobs.len() + self.pods.len()
    }
}

/// Parses a sample manifest into its type. The manifests are constants checked by the unit
/// tests, so a failure here is a bug in this file, not an input error.
fn typed<T: DeserializeOwned>(manifest: Value) -> T {
    serde_json::from_value(manifest).expect("sample manifests are well-formed (unit-tested)")
}

/// The sample cluster.
pub fn samples() -> Samples {
    Samples {
        namespaces: [SHOP, ANALYTICS]
            .into_iter()
            .map(|ns| typed(json!({"metadata": {"name": ns, "labels": {"team": ns}}})))
            .collect(),
        storage_classes: vec![typed(json!({
            "metadata": {"name": LAZY_CLASS},
            "provisioner": kube_sandbox::controllers::bootstrap::PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }))],
        claims: vec![
            claim(SHOP, "postgres-data", "ReadWriteOnce", "5Gi", json!({})),
            claim(SHOP, "media-uploads", "ReadWriteMany", "10Gi", json!({})),
            claim(SHOP, "debug-scratch", "ReadWriteOnce", "1Gi", json!({})),
            claim(SHOP, "exports-2025", "ReadWriteOnce", "2Gi", json!({})),
            claim(
                SHOP,
                "ledger-raw",
                "ReadWriteOnce",
                "1Gi",
                json!({"volumeMode": "Block"}),
            ),
            claim(ANALYTICS, "reports", "ReadWriteOnce", "2Gi", json!({})),
            claim(
                ANALYTICS,
                "query-spill",
                "ReadWriteOnce",
                "20Gi",
                json!({"storageClassName": LAZY_CLASS}),
            ),
        ],
        writers: vec![pod(
            SHOP,
            "export-writer",
            "busybox:1.36",
            EXPORT_WRITER,
            "exports-2025",
            "/exports",
            "Never",
        )],
        deployments: vec![
            deployment(
                SHOP,
                "postgres",
                1,
                "postgres:16.4",
                POSTGRES,
                "postgres-data",
                "/var/lib/postgresql/data",
            ),
            deployment(
                SHOP,
                "storefront",
                2,
                "nginx:1.27-alpine",
                STOREFRONT,
                "media-uploads",
                "/srv/uploads",
            ),
        ],
        stateful_sets: vec![events_db()],
        cron_jobs: vec![nightly_report()],
        pods: vec![pod(
            SHOP,
            "debug-toolbox",
            "busybox:1.36",
            DEBUG_TOOLBOX,
            "debug-scratch",
            "/scratch",
            "Always",
        )],
    }
}

fn claim(ns: &str, name: &str, mode: &str, size: &str, extra: Value) -> PersistentVolumeClaim {
    let mut spec = json!({"accessModes": [mode], "resources": {"requests": {"storage": size}}});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    typed(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
}

fn container(image: &str, script: &str, mount: &str) -> Value {
    json!({
        "name": "main", "image": image, "command": ["sh", "-c", script],
        "volumeMounts": [{"name": "data", "mountPath": mount}],
    })
}

fn claim_volume(claim: &str) -> Value {
    json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}])
}

fn pod(
    ns: &str,
    name: &str,
    image: &str,
    script: &str,
    claim: &str,
    mount: &str,
    restart: &str,
) -> Pod {
    typed(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "restartPolicy": restart,
            "containers": [container(image, script, mount)],
            "volumes": claim_volume(claim),
        },
    }))
}

fn deployment(
    ns: &str,
    name: &str,
    replicas: i32,
    image: &str,
    script: &str,
    claim: &str,
    mount: &str,
) -> Deployment {
    typed(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [container(image, script, mount)],
                    "volumes": claim_volume(claim),
                },
            },
        },
    }))
}

fn events_db() -> StatefulSet {
    typed(json!({
        "metadata": {"name": "events-db", "namespace": ANALYTICS, "labels": {"app": "events-db"}},
        "spec": {
            "serviceName": "events-db",
            "replicas": 3,
            "selector": {"matchLabels": {"app": "events-db"}},
            "template": {
                "metadata": {"labels": {"app": "events-db"}},
                "spec": {"containers": [
                    container("clickhouse/clickhouse-server:24.8", EVENTS_DB, "/var/lib/clickhouse")
                ]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Gi"}}},
            }],
        },
    }))
}

fn nightly_report() -> CronJob {
    typed(json!({
        "metadata": {"name": "nightly-report", "namespace": ANALYTICS},
        "spec": {
            "schedule": "30 2 * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {
                "backoffLimit": 0,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [container("python:3.12-slim", NIGHTLY_REPORT, "/reports")],
                    "volumes": claim_volume("reports"),
                }},
            }},
        },
    }))
}

/// The Job `kubectl create job NAME --from=cronjob/CRON` makes: the CronJob's job template,
/// the `cronjob.kubernetes.io/instantiate: manual` annotation, and the CronJob as controller
/// owner, so the inventory can follow Pod → Job → CronJob.
pub fn job_from_cron_job(cron: &CronJob, name: &str) -> Job {
    let template = cron.spec.as_ref().map(|s| s.job_template.clone());
    let owner = OwnerReference {
        api_version: "batch/v1".into(),
        kind: "CronJob".into(),
        name: cron.metadata.name.clone().unwrap_or_default(),
        uid: cron.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let mut job = Job {
        spec: template.as_ref().and_then(|t| t.spec.clone()),
        ..Job::default()
    };
    let labels = template.and_then(|t| t.metadata).and_then(|m| m.labels);
    job.metadata.name = Some(name.into());
    job.metadata.namespace = cron.metadata.namespace.clone();
    job.metadata.labels = labels;
    job.metadata.annotations = Some(
        [("cronjob.kubernetes.io/instantiate".into(), "manual".into())]
            .into_iter()
            .collect(),
    );
    job.metadata.owner_references = Some(vec![owner]);
    job
}

// The scripts. `/dev/urandom` stands in for data that does not compress (pages, media),
// `seq`/`yes` for text that does, so archives show a real compression ratio.

/// A Postgres data directory; afterwards one checkpoint line every 10 s ([`CHURN`]).
const POSTGRES: &str = r#"D=/var/lib/postgresql/data
if [ ! -f "$D/PG_VERSION" ]; then
  mkdir -p "$D/base/1" "$D/base/16384" "$D/global" "$D/pg_wal/archive_status" "$D/log"
  echo 16 > "$D/PG_VERSION"
  printf '%s\n' "listen_addresses = '*'" 'max_connections = 100' 'shared_buffers = 128MB' 'wal_level = replica' > "$D/postgresql.conf"
  for rel in 1247 1249 1259 2608 16385 16391 16402 16410; do
    { head -c 65536 /dev/urandom; yes "(4711,'order','paid',42.00,'2026-11-25')" | head -c 65536; } > "$D/base/16384/$rel"
  done
  head -c 65536 /dev/urandom > "$D/base/1/1259"
  head -c 8192 /dev/urandom > "$D/global/pg_control"
  head -c 1048576 /dev/urandom > "$D/pg_wal/000000010000000000000001"
  now=$(date -u '+%F %T')
  seq 1 400 | sed "s/^/$now UTC [1] LOG:  checkpoint complete: wrote /; s/$/ buffers/" > "$D/log/postgresql.log"
fi
echo "ready: postgres data directory in $D"
while true; do
  sleep 10
  echo "$(date -u '+%F %T') UTC [1] LOG:  checkpoint starting: time" >> "$D/log/postgresql.log"
done
"#;

/// Product images shared by the storefront replicas (ReadWriteMany), plus per-replica thumbs.
const STOREFRONT: &str = r#"U=/srv/uploads
mkdir -p "$U/products" "$U/thumbs/$HOSTNAME"
for n in 1 2 3 4 5 6 7 8; do
  f="$U/products/sku-10$n.jpg"
  [ -f "$f" ] || head -c 98304 /dev/urandom > "$f"
done
for n in 1 2 3; do head -c 8192 /dev/urandom > "$U/thumbs/$HOSTNAME/sku-10$n.webp"; done
echo "ready: uploads in $U"
exec sleep infinity
"#;

/// A debugging pod's scratch space: notes, a heap dump, nested captures.
const DEBUG_TOOLBOX: &str = r#"S=/scratch
if [ ! -f "$S/NOTES.md" ]; then
  mkdir -p "$S/captures/2026-11-24/checkout" "$S/dumps"
  printf '%s\n' '# checkout latency' '' '- p99 spikes at 02:00 UTC' '- see captures/2026-11-24' > "$S/NOTES.md"
  seq 1 3000 | sed 's/^/GET \/api\/cart 200 /; s/$/ms/' > "$S/captures/2026-11-24/checkout/trace.txt"
  head -c 524288 /dev/urandom > "$S/dumps/heap-2026-11-24.bin"
fi
echo "ready: scratch in $S"
exec sleep infinity
"#;

/// Last year's CSV exports, written once by a pod that then goes away.
const EXPORT_WRITER: &str = r#"E=/exports
for m in 01 02 03 04 05 06 07 08 09 10 11 12; do
  mkdir -p "$E/2025/$m"
  seq 1 500 | sed "s/^/2025-$m-15,order-/; s/$/,EUR,19.90/" > "$E/2025/$m/orders.csv"
done
echo "ready: exports in $E"
"#;

/// One replica of a columnar event store: table metadata and three data parts.
const EVENTS_DB: &str = r#"D=/var/lib/clickhouse
if [ ! -d "$D/store" ]; then
  mkdir -p "$D/metadata/events" "$D/store/events/page_views" "$D/logs"
  echo 'ATTACH TABLE page_views (ts DateTime, user_id UInt64, url String) ENGINE = MergeTree ORDER BY ts' > "$D/metadata/events/page_views.sql"
  for part in 202611_1_1_0 202611_2_2_0 202611_3_3_0; do
    p="$D/store/events/page_views/$part"
    mkdir -p "$p"
    head -c 4194304 /dev/urandom > "$p/data.bin"
    seq 1 4000 | sed "s|^|$HOSTNAME /products/sku-|" > "$p/primary.idx"
    echo 4000 > "$p/count.txt"
  done
  echo "$(date -u '+%F %T') $HOSTNAME: loaded 3 parts of events.page_views" > "$D/logs/clickhouse-server.log"
fi
echo "ready: $HOSTNAME data in $D"
exec sleep infinity
"#;

/// The nightly report: CSVs and a small SQLite-format summary, then it waits for its upload
/// window (so its pod stays Running and the claim shows the Job's CronJob as owner).
const NIGHTLY_REPORT: &str = r#"R=/reports/$(date -u +%F)
mkdir -p "$R/csv"
seq 1 2000 | sed 's/^/page_view,\/products\/sku-/; s/$/,1/' > "$R/csv/page_views.csv"
seq 1 300 | sed 's/^/checkout,order-/; s/$/,paid/' > "$R/csv/checkouts.csv"
{ printf 'SQLite format 3\000'; head -c 16368 /dev/urandom; } > "$R/summary.sqlite"
echo "nightly report for $(date -u +%F): 2000 page views, 300 checkouts" > "$R/README.txt"
echo "ready: report in $R"
exec sleep infinity
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_sample_parses_and_names_its_namespace() {
        let s = samples();
        assert_eq!(s.namespaces.len(), 2);
        let namespaced = s
            .claims
            .iter()
            .map(|c| &c.metadata)
            .chain(s.writers.iter().map(|p| &p.metadata))
            .chain(s.deployments.iter().map(|d| &d.metadata))
            .chain(s.stateful_sets.iter().map(|d| &d.metadata))
            .chain(s.cron_jobs.iter().map(|d| &d.metadata))
            .chain(s.pods.iter().map(|d| &d.metadata));
        for meta in namespaced {
            let ns = meta.namespace.as_deref().unwrap_or("");
            assert!([SHOP, ANALYTICS].contains(&ns), "{:?}", meta.name);
        }
    }

    #[test]
    fn the_samples_cover_every_owner_kind_and_refusal() {
        let s = samples();
        let claims: HashSet<_> = s
            .claims
            .iter()
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        let block = s
            .claims
            .iter()
            .find(|c| c.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block"));
        assert!(block.is_some(), "a Block claim");
        let lazy = s.claims.iter().find(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                == Some(LAZY_CLASS)
        });
        assert!(lazy.is_some(), "a WaitForFirstConsumer claim");
        assert_eq!(
            s.storage_classes[0].volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        let templates = s.stateful_sets[0]
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.as_ref())
            .map_or(0, Vec::len);
        assert_eq!(templates, 1, "a StatefulSet with a claim template");
        for used in ["postgres-data", "media-uploads", "debug-scratch", "reports"] {
            assert!(claims.contains(used), "{used}");
        }
        // 1 Postgres + 2 storefront + 3 event-store replicas + 1 report Job + 1 debug pod.
        assert_eq!(s.running_pods(), 8);
    }

    #[test]
    fn only_postgres_keeps_changing_its_files() {
        let looping: Vec<&str> = [
            ("postgres", POSTGRES),
            ("storefront", STOREFRONT),
            ("debug-toolbox", DEBUG_TOOLBOX),
            ("export-writer", EXPORT_WRITER),
            ("events-db", EVENTS_DB),
            ("nightly-report", NIGHTLY_REPORT),
        ]
        .into_iter()
        .filter(|(_, script)| script.contains("while true"))
        .map(|(name, _)| name)
        .collect();
        assert_eq!(looping, ["postgres"]);
        assert!(CHURN.starts_with("shop/postgres"));
    }

    #[test]
    fn a_job_made_from_a_cron_job_is_owned_by_it_like_kubectl_makes_it() {
        let mut cron = nightly_report();
        cron.metadata.uid = Some("uid-1".into());
        let job = job_from_cron_job(&cron, "nightly-report-manual");
        let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("CronJob", "nightly-report", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(job.metadata.namespace.as_deref(), Some(ANALYTICS));
        let annotations = job.metadata.annotations.expect("annotations");
        assert_eq!(annotations["cronjob.kubernetes.io/instantiate"], "manual");
        let template = job.spec.expect("spec").template;
        assert_eq!(
            template.spec.expect("pod spec").containers[0]
                .image
                .as_deref(),
            Some("python:3.12-slim")
        );
    }
}
