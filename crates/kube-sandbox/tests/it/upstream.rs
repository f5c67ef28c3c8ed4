//! The upstream control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler
//! built by scripts/upstream-control-plane.sh) with nkvm's node agent: real kubectl and
//! kube-rs see an upstream server, the real scheduler and controllers place a Deployment's pod
//! on an agent's node, the hostPath provisioner serves a claim, and exec and logs go through
//! the API server to the agent.
//!
//! Needs `NKVM_UPSTREAM_BIN` (the directory the script prints). Without it the test is
//! skipped on a developer machine and fails under `CI=true`, where .ci/run sets it.

use crate::harness::{Run, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_sandbox::testing::start_upstream;
use kube_sandbox::upstream::{UpstreamCluster, UpstreamOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The binaries directory, `None` to skip; panics under CI without it.
fn bin_dir() -> Option<PathBuf> {
    kube_sandbox::testing::upstream_bin_dir()
}

async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    kube_sandbox::testing::kubectl(
        kubeconfig,
        args,
        stdin,
        kube_sandbox::testing::KUBECTL_TIMEOUT,
    )
    .await
}

const APP: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        image: busybox:1.36
        command: ["sh", "-c", "echo started-on-$(NODE) > /data/hello; echo hello from the pod; exec sleep 3600"]
        env:
        - name: NODE
          valueFrom:
            fieldRef: {fieldPath: spec.nodeName}
        volumeMounts:
        - {name: data, mountPath: /data}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: data}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_control_plane_runs_a_deployment_with_a_claim_and_exec() {
    let Some(bin_dir) = bin_dir() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (cluster, kubeconfig) = start_upstream(bin_dir, dir.path()).await;

    let version = kubectl(&kubeconfig, &["version", "-o", "json"], None)
        .await
        .ok();
    let version: Value = serde_json::from_str(&version.stdout).expect("version JSON");
    let server = &version["serverVersion"];
    let minor: u32 = server["minor"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('+')
        .parse()
        .expect("numeric minor");
    assert_eq!(server["major"], "1", "{server}");
    assert!(minor >= 34, "an upstream server 1.34+, got {server}");
    assert!(
        server["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with(&format!("v1.{minor}."))),
        "{server}"
    );

    kubectl(&kubeconfig, &["create", "namespace", "app"], None)
        .await
        .ok();
    kubectl(
        &kubeconfig,
        &["-n", "app", "apply", "-f", "-"],
        Some(APP.as_bytes()),
    )
    .await
    .ok();
    let pod = eventually(
        "the Deployment's pod Running",
        Duration::from_secs(120),
        || async {
            let run = kubectl(
                &kubeconfig,
                &["-n", "app", "get", "pods", "-l", "app=web", "-o", "json"],
                None,
            )
            .await;
            let list: Value = serde_json::from_str(&run.stdout).ok()?;
            let pod = list["items"].as_array()?.first()?.clone();
            (pod["status"]["phase"] == "Running").then_some(pod)
        },
    )
    .await;
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    let node = pod["spec"]["nodeName"]
        .as_str()
        .expect("scheduled")
        .to_string();
    assert!(node.starts_with("nkvm-node-"), "{node}");
    let managed_by = pod["metadata"]["ownerReferences"][0]["kind"].as_str();
    assert_eq!(
        managed_by,
        Some("ReplicaSet"),
        "made by the real Deployment controller"
    );

    let pvc = kubectl(
        &kubeconfig,
        &["-n", "app", "get", "pvc", "data", "-o", "json"],
        None,
    )
    .await
    .ok();
    let pvc: Value = serde_json::from_str(&pvc.stdout).expect("pvc JSON");
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    assert_eq!(
        pvc["spec"]["storageClassName"], "standard",
        "the default class"
    );
    let pv_name = pvc["spec"]["volumeName"]
        .as_str()
        .expect("volume")
        .to_string();
    let pv = kubectl(&kubeconfig, &["get", "pv", &pv_name, "-o", "json"], None)
        .await
        .ok();
    let pv: Value = serde_json::from_str(&pv.stdout).expect("pv JSON");
    let host_path = pv["spec"]["hostPath"]["path"]
        .as_str()
        .expect("a hostPath PV")
        .to_string();
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"], "kubernetes.io/host-path",
        "{pv}"
    );

    // Exec through the API server (WebSocket, proxied to the node agent) from kubectl.
    let hello = kubectl(
        &kubeconfig,
        &["-n", "app", "exec", &name, "--", "cat", "/data/hello"],
        None,
    )
    .await
    .ok();
    assert_eq!(hello.stdout, format!("started-on-{node}\n"));
    let on_host =
        std::fs::read_to_string(Path::new(&host_path).join("hello")).expect("the PV's directory");
    assert_eq!(
        on_host, hello.stdout,
        "the pod wrote into the provisioned hostPath volume"
    );
    kubectl(
        &kubeconfig,
        &[
            "-n",
            "app",
            "exec",
            "-i",
            &name,
            "--",
            "sh",
            "-c",
            "cat > /data/in",
        ],
        Some(b"stdin through the API server"),
    )
    .await
    .ok();
    let failed = kubectl(
        &kubeconfig,
        &["-n", "app", "exec", &name, "--", "sh", "-c", "exit 3"],
        None,
    )
    .await;
    assert_eq!(failed.code, 3, "the exit code comes back: {failed:?}");

    // The same from kube-rs.
    let pods: Api<Pod> = Api::namespaced(cluster.client().await.expect("client"), "app");
    let mut attached = pods
        .exec(
            &name,
            [
                "cat",
                "/data/in",
                "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
            ],
            &AttachParams::default().stderr(false),
        )
        .await
        .expect("kube-rs exec");
    let mut out = String::new();
    attached
        .stdout()
        .expect("stdout")
        .read_to_string(&mut out)
        .await
        .expect("read");
    attached.join().await.expect("exec ends");
    // Neither file ends in a newline.
    assert_eq!(out, "stdin through the API serverapp");

    let token = check_projected_token(&cluster, &pods, &name).await;
    // The admin's kubeconfig holds a bearer token, so --token replaces the identity.
    let can = kubectl(
        &kubeconfig,
        &[
            "--token", &token, "-n", "app", "auth", "can-i", "delete", "pods",
        ],
        None,
    )
    .await;
    assert_eq!(can.stdout.trim(), "no", "{can:?}");

    let logs = kubectl(&kubeconfig, &["-n", "app", "logs", &name], None)
        .await
        .ok();
    assert_eq!(logs.stdout, "hello from the pod\n");
    check_follow(&kubeconfig).await;
    cluster.shutdown().await;
    // The provisioner's directories outlive the cluster (they are the controller-manager's,
    // under /tmp): remove this test's.
    let _ = std::fs::remove_dir_all(&host_path);
}

/// The pod's ServiceAccount token came from the TokenRequest API: the API server
/// authenticates it as the pod's ServiceAccount, bound to the pod.
async fn check_projected_token(cluster: &UpstreamCluster, pods: &Api<Pod>, name: &str) -> String {
    let mut attached = pods
        .exec(
            name,
            ["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
            &AttachParams::default().stderr(false),
        )
        .await
        .expect("exec");
    let mut token = String::new();
    attached
        .stdout()
        .expect("stdout")
        .read_to_string(&mut token)
        .await
        .expect("read");
    attached.join().await.expect("exec ends");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("authentication.k8s.io", "v1", "TokenReview"),
        "tokenreviews",
    );
    let reviews: Api<DynamicObject> =
        Api::all_with(cluster.client().await.expect("client"), &resource);
    let review: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token},
    }))
    .expect("review");
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("TokenReview");
    let status = &answer.data["status"];
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["username"], "system:serviceaccount:app:default",
        "{status}"
    );
    let bound = status["user"]["extra"]["authentication.kubernetes.io/pod-name"][0].as_str();
    assert_eq!(bound, Some(name), "{status}");
    token
}

/// `kubectl logs -f` through the API server follows a container to its end: the node agent
/// judges "still running" from its own view of the container, not from a lagging list.
async fn check_follow(kubeconfig: &Path) {
    let ticker = r#"apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"]
"#;
    kubectl(
        kubeconfig,
        &["-n", "app", "apply", "-f", "-"],
        Some(ticker.as_bytes()),
    )
    .await
    .ok();
    kubectl(
        kubeconfig,
        &[
            "-n",
            "app",
            "wait",
            "--for=condition=Ready",
            "pod/ticker",
            "--timeout=60s",
        ],
        None,
    )
    .await
    .ok();
    let followed = kubectl(kubeconfig, &["-n", "app", "logs", "-f", "ticker"], None)
        .await
        .ok();
    assert_eq!(followed.stdout, "tick 1\ntick 2\ntick 3\n");
}

#[tokio::test]
async fn a_missing_binaries_directory_names_the_build_script() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = UpstreamCluster::start(UpstreamOptions {
        bin_dir: dir.path().join("nowhere"),
        state_dir: dir.path().join("state"),
        listen: "127.0.0.1:0".parse().expect("address"),
        nodes: 1,
        image_programs: Vec::new(),
    })
    .await
    .err()
    .expect("no binaries, no cluster");
    let message = err.to_string();
    assert!(message.contains("nowhere/etcd"), "{message}");
    assert!(
        message.contains("scripts/upstream-control-plane.sh"),
        "{message}"
    );
}

/// One request of the differential test: what it is, method, path, body.
type Case = (&'static str, &'static str, &'static str, Option<Value>);

fn differential_cases() -> Vec<Case> {
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    vec![
        (
            "create",
            "POST",
            "/api/v1/namespaces/diff/configmaps",
            Some(cm("dup")),
        ),
        (
            "create again",
            "POST",
            "/api/v1/namespaces/diff/configmaps",
            Some(cm("dup")),
        ),
        (
            "get missing",
            "GET",
            "/api/v1/namespaces/diff/configmaps/missing",
            None,
        ),
        (
            "get in a missing namespace",
            "GET",
            "/api/v1/namespaces/nowhere/configmaps/x",
            None,
        ),
        (
            "delete missing",
            "DELETE",
            "/api/v1/namespaces/diff/configmaps/missing",
            None,
        ),
        (
            "invalid name",
            "POST",
            "/api/v1/namespaces/diff/configmaps",
            Some(cm("Bad_Name")),
        ),
        (
            "wrong kind",
            "POST",
            "/api/v1/namespaces/diff/configmaps",
            Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})),
        ),
        (
            "unknown resource",
            "GET",
            "/api/v1/namespaces/diff/nothings",
            None,
        ),
    ]
}

/// (HTTP status, reason, message) of a request; the message only where both servers word
/// it the same by design.
async fn answer(client: &kube::Client, case: &Case) -> (u16, String, String) {
    let (_, method, path, body) = case;
    let body = body
        .as_ref()
        .map(|b| b.to_string().into_bytes())
        .unwrap_or_default();
    let request = http::Request::builder()
        .method(*method)
        .uri(*path)
        .header("Content-Type", "application/json")
        .body(body)
        .expect("request");
    match client.request_text(request).await {
        Ok(_) => (
            if *method == "POST" { 201 } else { 200 },
            String::new(),
            String::new(),
        ),
        Err(kube::Error::Api(status)) => {
            (status.code, status.reason.clone(), status.message.clone())
        }
        Err(e) => panic!("{path}: {e}"),
    }
}

/// The same requests to the embedded sandbox and to kube-apiserver get the same status codes
/// and reasons; kube-apiserver is the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_sandbox_answers_as_kube_apiserver_does() {
    let Some(bin_dir) = bin_dir() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = UpstreamCluster::start(UpstreamOptions {
        bin_dir,
        state_dir: dir.path().join("upstream"),
        listen: "127.0.0.1:0".parse().expect("address"),
        nodes: 1,
        image_programs: Vec::new(),
    })
    .await
    .expect("the upstream control plane starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let embedded = kube_sandbox::Sandbox::start(
        listener,
        kube_sandbox::SandboxOptions {
            state_dir: dir.path().join("embedded"),
            ..Default::default()
        },
    )
    .await
    .expect("the embedded sandbox starts");
    let clients = [
        upstream.client().await.expect("client"),
        kube_sandbox::upstream::client_from(embedded.kubeconfig())
            .await
            .expect("client"),
    ];
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "diff"}});
    let setup: Case = ("namespace", "POST", "/api/v1/namespaces", Some(namespace));
    let mut mismatches = Vec::new();
    for client in &clients {
        assert_eq!(answer(client, &setup).await.0, 201);
    }
    for case in differential_cases() {
        let reference = answer(&clients[0], &case).await;
        let sandbox = answer(&clients[1], &case).await;
        let same_message = case.0 != "wrong kind" || reference.2 == sandbox.2;
        if (reference.0, &reference.1) != (sandbox.0, &sandbox.1) || !same_message {
            mismatches.push(format!(
                "{}: kube-apiserver {reference:?}, sandbox {sandbox:?}",
                case.0
            ));
        }
    }
    embedded.shutdown().await;
    upstream.shutdown().await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
