//! `nkvm pvcs` over a scenario with every owner chain and every reason a claim cannot be
//! backed up, and the last successful backup read from history.

use crate::harness::Env;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

fn claim(name: &str, class: &str, mode: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  accessModes: [{mode}]\n  storageClassName: {class}\n{extra}  resources:\n    requests:\n      storage: 1Gi\n---\n"
    )
}

fn pod(name: &str, claim: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n    volumeMounts: [{{name: d, mountPath: /data}}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {{claimName: {claim}}}\n---\n"
    )
}

const WORKLOADS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx, command: [sleep, '3600'], volumeMounts: [{name: d, mountPath: /data}]}
      volumes: [{name: d, persistentVolumeClaim: {claimName: web-data}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: postgres, command: [sleep, '3600'], volumeMounts: [{name: pgdata, mountPath: /var/lib/db}]}
  volumeClaimTemplates:
  - metadata: {name: pgdata}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache}
spec:
  serviceName: cache
  replicas: 1
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec:
      containers:
      - {name: c, image: redis, command: [sleep, '3600'], volumeMounts: [{name: data, mountPath: /data}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - {name: report, image: busybox, command: [sleep, '3600'], volumeMounts: [{name: d, mountPath: /out}]}
          volumes: [{name: d, persistentVolumeClaim: {claimName: reports}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: a, image: busybox, command: [sleep, '3600'], volumeMounts: [{name: d, mountPath: /logs}]}
      volumes: [{name: d, persistentVolumeClaim: {claimName: agent-logs}}]
"#;

async fn scenario(env: &Env, ns: &str) {
    env.kubectl(&["create", "namespace", ns], None).await.ok();
    let mut claims = String::new();
    for (name, class, mode, extra) in [
        ("web-data", "standard", "ReadWriteMany", ""),
        ("reports", "standard", "ReadWriteOnce", ""),
        ("agent-logs", "standard", "ReadWriteMany", ""),
        ("scratch", "standard", "ReadWriteOnce", ""),
        ("shared", "standard", "ReadWriteMany", ""),
        ("orphan", "standard", "ReadWriteOnce", ""),
        ("lazy", "wffc", "ReadWriteOnce", ""),
        ("raw", "standard", "ReadWriteOnce", "  volumeMode: Block\n"),
        ("solo", "standard", "ReadWriteOncePod", ""),
    ] {
        claims.push_str(&claim(name, class, mode, extra));
    }
    env.apply(Some(ns), &claims).await;
    let pods = [
        pod("debug", "scratch"),
        pod("reader-a", "shared"),
        pod("reader-b", "shared"),
        pod("solo-user", "solo"),
    ]
    .concat();
    env.apply(Some(ns), &pods).await;
    env.apply(Some(ns), WORKLOADS).await;
    env.kubectl(
        &["-n", ns, "create", "job", "run-1", "--from=cronjob/nightly"],
        None,
    )
    .await
    .ok();
    for target in [
        "deployment/web",
        "statefulset/db",
        "statefulset/cache",
        "daemonset/agent",
    ] {
        env.kubectl(
            &["-n", ns, "rollout", "status", target, "--timeout=60s"],
            None,
        )
        .await
        .ok();
    }
    env.kubectl(
        &[
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            "pod/debug",
            "pod/reader-a",
            "pod/reader-b",
            "pod/solo-user",
            "--timeout=60s",
        ],
        None,
    )
    .await
    .ok();
    env.kubectl(
        &[
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "job-name=run-1",
            "--timeout=60s",
        ],
        None,
    )
    .await
    .ok();
    // A StatefulSet scaled to zero leaves its claim with no pod naming it.
    env.kubectl(
        &["-n", ns, "scale", "statefulset/cache", "--replicas=0"],
        None,
    )
    .await
    .ok();
    env.kubectl(
        &[
            "-n",
            ns,
            "wait",
            "--for=delete",
            "pod/cache-0",
            "--timeout=60s",
        ],
        None,
    )
    .await
    .ok();
}

fn by_name(json: &str) -> HashMap<String, Value> {
    let list: Vec<Value> = serde_json::from_str(json).expect("nkvm prints a JSON array");
    list.into_iter()
        .map(|r| (r["name"].as_str().unwrap_or("").to_string(), r))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_resolves_every_owner_chain_and_explains_refusals() {
    let env = Env::start().await;
    scenario(&env, "inv").await;
    let out = env.nkvm(&["pvcs", "-n", "inv", "-o", "json"]).await.ok();
    let pvcs = by_name(&out.stdout);
    let owner = |name: &str| {
        let o = &pvcs[name]["owner"];
        format!(
            "{}/{}",
            o["kind"].as_str().unwrap_or(""),
            o["name"].as_str().unwrap_or("")
        )
    };
    assert_eq!(owner("web-data"), "Deployment/web");
    assert_eq!(owner("pgdata-db-0"), "StatefulSet/db");
    assert_eq!(owner("data-cache-0"), "StatefulSet/cache");
    assert_eq!(owner("reports"), "CronJob/nightly");
    assert_eq!(owner("agent-logs"), "DaemonSet/agent");
    assert_eq!(owner("scratch"), "Pod/debug");
    assert_eq!(owner("shared"), "Multiple/Pod/reader-a,Pod/reader-b");
    assert_eq!(owner("orphan"), "Unknown/");
    assert_eq!(
        pvcs["web-data"]["consumers"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        pvcs["agent-logs"]["consumers"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        pvcs["data-cache-0"]["consumers"].as_array().map(Vec::len),
        Some(0)
    );
    let debug = &pvcs["scratch"]["consumers"][0];
    assert_eq!(
        (debug["pod"].as_str(), debug["phase"].as_str()),
        (Some("debug"), Some("Running"))
    );
    assert!(
        debug["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("node-"))
    );

    for ok in ["web-data", "pgdata-db-0", "orphan", "shared"] {
        assert_eq!(pvcs[ok]["backupable"], true, "{ok}: {}", pvcs[ok]);
    }
    let reason = |name: &str| pvcs[name]["reason"].as_str().unwrap_or("").to_string();
    assert_eq!(pvcs["lazy"]["backupable"], false);
    assert!(
        reason("lazy").starts_with("not bound (phase Pending)"),
        "{}",
        reason("lazy")
    );
    assert!(
        reason("raw").starts_with("volumeMode Block"),
        "{}",
        reason("raw")
    );
    assert!(
        reason("solo").contains("in use by pod solo-user"),
        "{}",
        reason("solo")
    );
    let record = &pvcs["pgdata-db-0"];
    for key in [
        "uid",
        "phase",
        "capacity",
        "storageClass",
        "accessModes",
        "volumeMode",
        "volumeName",
        "lastSuccessfulBackup",
    ] {
        assert!(record.get(key).is_some(), "missing {key}: {record}");
    }
    assert_eq!(
        record["storageClass"], "standard",
        "the default class was applied"
    );

    let table = env.nkvm(&["pvcs", "-A"]).await.ok();
    assert!(table.stdout.starts_with("NAMESPACE"), "{}", table.stdout);
    assert!(
        table.stdout.contains("Multiple[Pod/reader-a,Pod/reader-b]"),
        "{}",
        table.stdout
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_successful_backup_comes_from_history_by_cluster_and_claim_uid() {
    let env = Env::start().await;
    env.kubectl(&["create", "namespace", "hist"], None)
        .await
        .ok();
    env.apply(
        Some("hist"),
        &claim("data", "standard", "ReadWriteOnce", ""),
    )
    .await;
    env.kubectl(
        &[
            "-n",
            "hist",
            "wait",
            "--for=jsonpath={.status.phase}=Bound",
            "pvc/data",
            "--timeout=30s",
        ],
        None,
    )
    .await
    .ok();
    let check: Value =
        serde_json::from_str(&env.nkvm(&["check", "-o", "json"]).await.ok().stdout).expect("json");
    let cluster = check["clusterId"].as_str().expect("cluster id").to_string();
    let uid = env
        .kubectl(
            &[
                "-n",
                "hist",
                "get",
                "pvc",
                "data",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
        .await
        .ok()
        .stdout;
    let history = nkvm_history::History::open(&env.db()).expect("history opens");
    let row = |id: &str, cluster: &str, status: &str, finished: &str| nkvm_history::BackupRow {
        id: id.into(),
        cluster: cluster.into(),
        namespace: "hist".into(),
        pvc: "data".into(),
        pvc_uid: uid.clone(),
        trigger: nkvm_domain::Trigger::Cli,
        actor: "test".into(),
        status: status.parse().expect("a job status"),
        started_at: "2026-11-25T23:00:00Z".into(),
        finished_at: Some(finished.into()),
        compression: "zstd".into(),
        ..Default::default()
    };
    history
        .record_backup(&row("b1", &cluster, "succeeded", "2026-11-25T23:05:00Z"))
        .expect("insert");
    history
        .record_backup(&row("b2", &cluster, "failed", "2026-11-25T23:59:00Z"))
        .expect("insert");
    history
        .record_backup(&row(
            "b3",
            "another-cluster",
            "succeeded",
            "2026-11-26T00:30:00Z",
        ))
        .expect("insert");
    drop(history);
    let out = env.nkvm(&["pvcs", "-n", "hist", "-o", "json"]).await.ok();
    let pvcs = by_name(&out.stdout);
    assert_eq!(pvcs["data"]["lastSuccessfulBackup"], "2026-11-25T23:05:00Z");
    tokio::time::sleep(Duration::from_millis(10)).await;
    env.stop().await;
}
