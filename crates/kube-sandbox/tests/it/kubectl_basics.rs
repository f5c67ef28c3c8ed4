//! kubectl's everyday verbs: get in every output format, watch, describe, create and apply of
//! multi-document YAML and kustomizations, delete, and the errors bad input gets.

use crate::harness::{TestCluster, claim, pod_with_claim};
use serde_json::Value;
use std::time::Duration;

const MULTI_DOC: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  password: hunter2
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_apply_of_multi_document_yaml_then_apply_again_is_a_no_op() {
    let c = TestCluster::start().await;
    let ns = c.namespace("multi").await;
    let created = c
        .kubectl_with(
            &["-n", &ns, "create", "-f", "-"],
            Some(MULTI_DOC.as_bytes()),
            Duration::from_secs(30),
        )
        .await
        .ok();
    assert!(
        created.stdout.contains("configmap/settings created"),
        "{}",
        created.stdout
    );
    assert!(
        created.stdout.contains("service/web created"),
        "{}",
        created.stdout
    );
    let again = c
        .kubectl_with(
            &["-n", &ns, "create", "-f", "-"],
            Some(MULTI_DOC.as_bytes()),
            Duration::from_secs(30),
        )
        .await;
    assert_ne!(again.code, 0);
    assert!(
        again
            .stderr
            .contains("configmaps \"settings\" already exists"),
        "{}",
        again.stderr
    );

    let ns2 = c.namespace("apply").await;
    let first = c.apply_in(&ns2, MULTI_DOC).await;
    assert!(
        first.stdout.contains("configmap/settings created"),
        "{}",
        first.stdout
    );
    let second = c.apply_in(&ns2, MULTI_DOC).await;
    // A live Secret never shows the write-only stringData, so kubectl's three-way patch
    // re-sends it and says "configured" on every apply, against real clusters too.
    for line in second.stdout.lines().filter(|l| !l.starts_with("secret/")) {
        assert!(
            line.ends_with("unchanged"),
            "second apply changed something: {}",
            second.stdout
        );
    }
    let changed = c
        .apply_in(&ns2, &MULTI_DOC.replace("mode: fast", "mode: safe"))
        .await;
    assert!(
        changed.stdout.contains("configmap/settings configured"),
        "{}",
        changed.stdout
    );
    let got = c
        .kubectl(&[
            "-n",
            &ns2,
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.mode}",
        ])
        .await
        .ok();
    assert_eq!(got.stdout, "safe");
    let secret = c
        .kubectl(&[
            "-n",
            &ns2,
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.data.password}",
        ])
        .await
        .ok();
    assert_eq!(
        secret.stdout, "aHVudGVyMg==",
        "stringData is stored base64-encoded in data"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_serves_json_yaml_wide_and_a_watch_that_sees_a_pod_go_running() {
    let c = TestCluster::start().await;
    let ns = c.namespace("get").await;
    c.apply_in(&ns, &claim("data", "standard", "ReadWriteOnce"))
        .await;
    let mut watch = tokio::process::Command::new(crate::harness::kubectl_bin());
    watch.arg("--kubeconfig").arg(&c.kubeconfig).args([
        "-n",
        &ns,
        "get",
        "pods",
        "-w",
        "-o",
        "jsonpath={.metadata.name} {.status.phase}{\"\\n\"}",
    ]);
    watch
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let watcher = watch.spawn().expect("kubectl get -w starts");
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.apply_in(&ns, &pod_with_claim("p", "data", "sleep 3600"))
        .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/p",
        "--timeout=30s",
    ])
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = watcher.id().expect("running") as i32;
    // SAFETY-free: ask kubectl to stop the way a user would (Ctrl-C).
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let out = tokio::time::timeout(Duration::from_secs(10), watcher.wait_with_output())
        .await
        .expect("watch stops")
        .expect("output");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.lines().any(|l| l == "p Pending"), "watch saw: {seen}");
    assert!(seen.lines().any(|l| l == "p Running"), "watch saw: {seen}");

    let json = c
        .kubectl(&["-n", &ns, "get", "pods", "-o", "json"])
        .await
        .ok();
    let list: Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["status"]["phase"], "Running");
    assert!(
        list["items"][0]["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    let yaml = c
        .kubectl(&["-n", &ns, "get", "pvc", "data", "-o", "yaml"])
        .await
        .ok();
    assert!(yaml.stdout.contains("phase: Bound"), "{}", yaml.stdout);
    let wide = c
        .kubectl(&["-n", &ns, "get", "pods", "-o", "wide"])
        .await
        .ok();
    assert!(
        wide.stdout.contains("NAME") && wide.stdout.contains('p'),
        "{}",
        wide.stdout
    );
    let all = c.kubectl(&["get", "pods", "-A", "-o", "name"]).await.ok();
    assert!(all.stdout.contains("pod/p"), "{}", all.stdout);
    let by_field = c
        .kubectl(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("status.phase=Running,metadata.name=p,metadata.namespace={ns}"),
            "-o",
            "name",
        ])
        .await
        .ok();
    assert_eq!(by_field.stdout.trim(), "pod/p");
    let chunked = c
        .kubectl(&["get", "configmaps", "-A", "--chunk-size=1", "-o", "name"])
        .await
        .ok();
    assert!(
        chunked.stdout.lines().count() >= 2,
        "pagination lost items: {}",
        chunked.stdout
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_status_volumes_and_events() {
    let c = TestCluster::start().await;
    let ns = c.namespace("describe").await;
    c.apply_in(&ns, &claim("data", "standard", "ReadWriteOnce"))
        .await;
    c.apply_in(&ns, &pod_with_claim("p", "data", "sleep 3600"))
        .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/p",
        "--timeout=30s",
    ])
    .await
    .ok();
    let d = c.kubectl(&["-n", &ns, "describe", "pod", "p"]).await.ok();
    // describe pads its columns to the widest label, so compare with whitespace squeezed.
    let squeezed = d.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "Status: Running",
        "ClaimName: data",
        "Started container main",
        "Successfully assigned",
    ] {
        assert!(
            squeezed.contains(want),
            "describe lacks {want:?}:\n{}",
            d.stdout
        );
    }
    let d = c
        .kubectl(&["-n", &ns, "describe", "pvc", "data"])
        .await
        .ok();
    assert!(d.stdout.contains("Bound"), "{}", d.stdout);
    let d = c.kubectl(&["describe", "node", "node-a"]).await;
    if c.is_sandbox() {
        assert!(d.ok().stdout.contains("Ready"));
    }
    c.kubectl(&["describe", "namespace", &ns]).await.ok();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_k_applies_a_kustomization() {
    let c = TestCluster::start().await;
    let ns = c.namespace("kustomize").await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("resources.yaml"), MULTI_DOC).expect("write");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!("namespace: {ns}\ncommonLabels:\n  team: storage\nresources:\n- resources.yaml\n"),
    )
    .expect("write");
    let out = c
        .kubectl(&["apply", "-k", dir.path().to_str().expect("utf-8")])
        .await
        .ok();
    assert!(out.stdout.contains("service/web created"), "{}", out.stdout);
    let labelled = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "cm,svc,secret",
            "-l",
            "team=storage",
            "-o",
            "name",
        ])
        .await
        .ok();
    assert_eq!(labelled.stdout.lines().count(), 3, "{}", labelled.stdout);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_and_without_wait_removes_objects_and_dependents() {
    let c = TestCluster::start().await;
    let ns = c.namespace("delete").await;
    c.apply_in(&ns, MULTI_DOC).await;
    c.kubectl(&["-n", &ns, "delete", "configmap", "settings", "--wait=false"])
        .await
        .ok();
    let gone = c
        .kubectl(&["-n", &ns, "get", "configmap", "settings"])
        .await;
    assert_ne!(gone.code, 0);
    assert!(
        gone.stderr.contains("NotFound")
            && gone.stderr.contains("configmaps \"settings\" not found"),
        "{}",
        gone.stderr
    );
    c.apply_in(&ns, &claim("data", "standard", "ReadWriteOnce"))
        .await;
    c.apply_in(&ns, &pod_with_claim("p", "data", "sleep 3600"))
        .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/p",
        "--timeout=30s",
    ])
    .await
    .ok();
    let out = c
        .kubectl(&["-n", &ns, "delete", "pod", "p", "--wait", "--timeout=30s"])
        .await
        .ok();
    assert!(out.stdout.contains("pod \"p\" deleted"), "{}", out.stdout);
    c.kubectl(&[
        "-n",
        &ns,
        "delete",
        "pvc",
        "data",
        "--wait",
        "--timeout=30s",
    ])
    .await
    .ok();
    c.kubectl(&["delete", "namespace", &ns, "--wait", "--timeout=60s"])
        .await
        .ok();
    let ns_gone = c.kubectl(&["get", "namespace", &ns]).await;
    assert!(ns_gone.stderr.contains("not found"), "{}", ns_gone.stderr);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_status_errors_a_real_api_server_returns() {
    let c = TestCluster::start().await;
    let ns = c.namespace("bad").await;
    let bad_name = c
        .kubectl_with(
            &["-n", &ns, "apply", "-f", "-"],
            Some(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n"),
            Duration::from_secs(30),
        )
        .await;
    assert_ne!(bad_name.code, 0);
    assert!(bad_name.stderr.contains("ConfigMap \"Not_Valid\" is invalid: metadata.name: Invalid value: \"Not_Valid\": a lowercase RFC 1123 subdomain"), "{}", bad_name.stderr);
    let no_ns = c
        .kubectl_with(
            &["-n", "no-such-namespace", "apply", "-f", "-"],
            Some(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"),
            Duration::from_secs(30),
        )
        .await;
    assert_ne!(no_ns.code, 0);
    assert!(
        no_ns
            .stderr
            .contains("namespaces \"no-such-namespace\" not found"),
        "{}",
        no_ns.stderr
    );
    let unknown = c
        .kubectl_with(
            &["-n", &ns, "apply", "-f", "-"],
            Some(b"apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: x\n"),
            Duration::from_secs(30),
        )
        .await;
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("no matches for kind \"Widget\""),
        "{}",
        unknown.stderr
    );
    let no_image = c.kubectl_with(&["-n", &ns, "apply", "-f", "-"], Some(b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n"), Duration::from_secs(30)).await;
    assert!(
        no_image
            .stderr
            .contains("spec.containers[0].image: Required value"),
        "{}",
        no_image.stderr
    );
    let dir = tempfile::tempdir().expect("dir");
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, b"{\"apiVersion\": \"v1\", \"kind\": ").expect("write");
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let raw = c
        .kubectl(&[
            "create",
            "--raw",
            &path,
            "-f",
            bad_json.to_str().expect("utf-8"),
        ])
        .await;
    assert_ne!(raw.code, 0);
    assert!(
        raw.stderr.contains("BadRequest") || raw.stderr.contains("json parse error"),
        "{}",
        raw.stderr
    );
    let wrong_kind = dir.path().join("kind.json");
    std::fs::write(
        &wrong_kind,
        br#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}"#,
    )
    .expect("write");
    let raw = c
        .kubectl(&[
            "create",
            "--raw",
            &path,
            "-f",
            wrong_kind.to_str().expect("utf-8"),
        ])
        .await;
    assert!(
        raw.stderr.contains(
            "Secret in version \"v1\" cannot be handled as a ConfigMap: converting (v1.Secret) to (core.ConfigMap): unknown conversion"
        ),
        "{}",
        raw.stderr
    );
    // The server keeps serving after all of that.
    c.kubectl(&["get", "namespaces"]).await.ok();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_send_protobuf_and_are_understood() {
    let c = TestCluster::start().await;
    let ns = format!("gen-{}", std::process::id());
    c.kubectl(&["create", "namespace", &ns]).await.ok();
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "configmap",
        "cfg",
        "--from-literal=mode=fast",
    ])
    .await
    .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ])
    .await
    .ok();
    c.kubectl(&["-n", &ns, "create", "serviceaccount", "robot"])
        .await
        .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
    ])
    .await
    .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "service",
        "nodeport",
        "web",
        "--tcp=80:8080",
    ])
    .await
    .ok();
    c.kubectl(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount",
        &format!("{ns}:robot"),
    ])
    .await
    .ok();
    let mode = c
        .kubectl(&["-n", &ns, "get", "cm", "cfg", "-o", "jsonpath={.data.mode}"])
        .await
        .ok();
    assert_eq!(mode.stdout, "fast");
    let password = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.data.password}",
        ])
        .await
        .ok();
    assert_eq!(password.stdout, "aHVudGVyMg==");
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
    let ports = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].targetPort} {.spec.ports[0].nodePort}",
        ])
        .await
        .ok();
    let (target, node_port) = ports.stdout.split_once(' ').expect("two fields");
    assert_eq!(target, "8080");
    assert!(
        node_port
            .parse::<u32>()
            .is_ok_and(|p| (30_000..32_768).contains(&p)),
        "{}",
        ports.stdout
    );
    let subject = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "rolebinding",
            "robot-view",
            "-o",
            "jsonpath={.subjects[0].kind}/{.subjects[0].name} {.roleRef.name}",
        ])
        .await
        .ok();
    assert_eq!(subject.stdout, "ServiceAccount/robot view");
    c.stop().await;
}
