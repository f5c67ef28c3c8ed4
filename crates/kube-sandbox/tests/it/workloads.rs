//! Owner chains and their status, as discovery and kubectl read them: Deployment → ReplicaSet
//! → Pod (with a PVC), StatefulSet → Pods + claims, DaemonSet, CronJob → Job → Pod, and
//! WaitForFirstConsumer binding.

use crate::harness::{TestCluster, claim, eventually};
use serde_json::Value;
use std::time::Duration;

async fn json(c: &TestCluster, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    serde_json::from_str(&c.kubectl(&full).await.ok().stdout).expect("kubectl prints JSON")
}

fn owner(obj: &Value) -> (String, String) {
    let o = &obj["metadata"]["ownerReferences"][0];
    assert_eq!(
        o["controller"], true,
        "owner reference is a controller reference: {o}"
    );
    (
        o["kind"].as_str().unwrap_or("").into(),
        o["name"].as_str().unwrap_or("").into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_writes_to_its_claim_rolls_out_and_updates() {
    let c = TestCluster::start().await;
    let ns = c.namespace("deploy").await;
    c.apply_in(&ns, &claim("shared", "standard", "ReadWriteMany"))
        .await;
    let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        command: ["sh", "-c", "echo $HOSTNAME >> /data/visitors; sleep 3600"]
        volumeMounts:
        - {name: data, mountPath: /data}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: shared}
"#;
    c.apply_in(&ns, deployment).await;
    let status = c
        .kubectl(&[
            "-n",
            &ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=60s",
        ])
        .await
        .ok();
    assert!(
        status.stdout.contains("successfully rolled out"),
        "{}",
        status.stdout
    );
    let pods = json(&c, &["-n", &ns, "get", "pods", "-l", "app=web"]).await;
    let pods = pods["items"].as_array().expect("items").clone();
    assert_eq!(pods.len(), 2);
    let (kind, rs_name) = owner(&pods[0]);
    assert_eq!(kind, "ReplicaSet");
    let rs = json(&c, &["-n", &ns, "get", "rs", &rs_name]).await;
    assert_eq!(owner(&rs), ("Deployment".to_string(), "web".to_string()));
    let visitors = c
        .kubectl(&[
            "-n",
            &ns,
            "exec",
            pods[0]["metadata"]["name"].as_str().expect("name"),
            "--",
            "cat",
            "/data/visitors",
        ])
        .await
        .ok();
    assert_eq!(
        visitors.stdout.lines().count(),
        2,
        "both replicas wrote to the shared claim: {}",
        visitors.stdout
    );

    c.kubectl(&[
        "-n",
        &ns,
        "set",
        "image",
        "deployment/web",
        "web=nginx:1.28",
    ])
    .await
    .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    ])
    .await
    .ok();
    let d = json(&c, &["-n", &ns, "get", "deployment", "web"]).await;
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    assert_eq!(d["status"]["updatedReplicas"], 2);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let images = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])
        .await
        .ok();
    eventually("old pods gone", Duration::from_secs(30), || async {
        let now = c
            .kubectl(&[
                "-n",
                &ns,
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}",
            ])
            .await
            .ok();
        (now.stdout == "nginx:1.28 nginx:1.28").then_some(())
    })
    .await;
    drop(images);
    c.kubectl(&[
        "-n",
        &ns,
        "delete",
        "deployment",
        "web",
        "--wait",
        "--timeout=30s",
    ])
    .await
    .ok();
    eventually("dependents collected", Duration::from_secs(30), || async {
        let left = c
            .kubectl(&["-n", &ns, "get", "rs,pods", "-o", "name"])
            .await
            .ok();
        left.stdout.trim().is_empty().then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_gets_one_claim_per_replica_from_its_template() {
    let c = TestCluster::start().await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("sts").await;
    c.apply_in(
        &ns,
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:17
        command: ["sh", "-c", "echo $HOSTNAME > /var/lib/db/whoami; sleep 3600"]
        volumeMounts:
        - {name: pgdata, mountPath: /var/lib/db}
  volumeClaimTemplates:
  - metadata: {name: pgdata}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: wffc
      resources: {requests: {storage: 2Gi}}
"#,
    )
    .await;
    c.kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "statefulset/db",
        "--timeout=60s",
    ])
    .await
    .ok();
    for i in 0..2 {
        let pvc = json(&c, &["-n", &ns, "get", "pvc", &format!("pgdata-db-{i}")]).await;
        assert_eq!(pvc["status"]["phase"], "Bound");
        assert_eq!(pvc["metadata"]["labels"]["app"], "db");
        let pod = json(&c, &["-n", &ns, "get", "pod", &format!("db-{i}")]).await;
        assert_eq!(owner(&pod), ("StatefulSet".to_string(), "db".to_string()));
        let who = c
            .kubectl(&[
                "-n",
                &ns,
                "exec",
                &format!("db-{i}"),
                "--",
                "cat",
                "/var/lib/db/whoami",
            ])
            .await
            .ok();
        assert_eq!(who.stdout.trim(), format!("db-{i}"));
    }
    c.kubectl(&["-n", &ns, "scale", "statefulset/db", "--replicas=1"])
        .await
        .ok();
    eventually(
        "db-1 removed on scale-down",
        Duration::from_secs(30),
        || async {
            let r = c.kubectl(&["-n", &ns, "get", "pod", "db-1"]).await;
            (r.code != 0).then_some(())
        },
    )
    .await;
    let kept = json(&c, &["-n", &ns, "get", "pvc", "pgdata-db-1"]).await;
    assert_eq!(
        kept["status"]["phase"], "Bound",
        "claims are retained on scale-down"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_first_consumer_claim_stays_pending_until_a_pod_uses_it() {
    let c = TestCluster::start().await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("wffc").await;
    c.apply_in(&ns, &claim("lazy", "wffc", "ReadWriteOnce"))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pvc = json(&c, &["-n", &ns, "get", "pvc", "lazy"]).await;
    assert_eq!(pvc["status"]["phase"], "Pending");
    c.apply_in(
        &ns,
        &crate::harness::pod_with_claim("user", "lazy", "sleep 3600"),
    )
    .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=jsonpath={.status.phase}=Bound",
        "pvc/lazy",
        "--timeout=30s",
    ])
    .await
    .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/user",
        "--timeout=30s",
    ])
    .await
    .ok();
    let pvc = json(&c, &["-n", &ns, "get", "pvc", "lazy"]).await;
    let pod = json(&c, &["-n", &ns, "get", "pod", "user"]).await;
    assert_eq!(
        pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        pod["spec"]["nodeName"]
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_from_a_cronjob_runs_to_completion() {
    let c = TestCluster::start().await;
    let ns = c.namespace("cron").await;
    c.apply_in(
        &ns,
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: job
            image: busybox
            command: ["sh", "-c", "echo job ran"]
"#,
    )
    .await;
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "job",
        "manual",
        "--from=cronjob/nightly",
    ])
    .await
    .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=complete",
        "job/manual",
        "--timeout=30s",
    ])
    .await
    .ok();
    let job = json(&c, &["-n", &ns, "get", "job", "manual"]).await;
    assert_eq!(owner(&job), ("CronJob".to_string(), "nightly".to_string()));
    assert_eq!(job["status"]["succeeded"], 1);
    let logs = c.kubectl(&["-n", &ns, "logs", "job/manual"]).await.ok();
    assert_eq!(logs.stdout, "job ran\n");
    let pods = json(&c, &["-n", &ns, "get", "pods", "-l", "job-name=manual"]).await;
    assert_eq!(
        owner(&pods["items"][0]),
        ("Job".to_string(), "manual".to_string())
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_runs_one_pod_per_node_it_tolerates() {
    let c = TestCluster::start_with(vec!["dedicated=backup:NoSchedule".into()]).await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("ds").await;
    let ds = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: busybox
"#;
    c.apply_in(&ns, ds).await;
    c.kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "daemonset/agent",
        "--timeout=30s",
    ])
    .await
    .ok();
    let nodes = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])
        .await
        .ok();
    assert_eq!(nodes.stdout, "node-a", "the tainted node-b gets no pod");
    let tolerant = ds.replace(
        "      containers:",
        "      tolerations:\n      - {key: dedicated, operator: Exists}\n      containers:",
    );
    c.apply_in(&ns, &tolerant).await;
    eventually("a pod on each node", Duration::from_secs(30), || async {
        let r = c
            .kubectl(&[
                "-n",
                &ns,
                "get",
                "pods",
                "-l",
                "app=agent",
                "-o",
                "jsonpath={.items[*].spec.nodeName}",
            ])
            .await
            .ok();
        let mut nodes: Vec<&str> = r.stdout.split_whitespace().collect();
        nodes.sort();
        (nodes == ["node-a", "node-b"]).then_some(())
    })
    .await;
    c.stop().await;
}
