//! Shaping a sandbox as an operator would (docs/runbooks/operations.md) and reading back what
//! the cluster holds: the applied Deployment as a container, claims' files, permissions.

use super::container::{Container, tree};
use super::{SERVICE_ACCOUNT_DIR, repo_path};
use crate::harness::{Env, Ran};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Runs a repository script, feeding nothing.
pub(super) async fn script(relative: &str, args: &[&str]) -> Ran {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(repo_path(relative))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("script in time")
        .expect("bash runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `kubectl apply -k DIR`, as an operator runs it; the app ships a NetworkPolicy (stored by
/// the sandbox, not enforced: see docs/sandbox.md).
pub(super) async fn apply_kustomization(env: &Env, dir: &str) {
    env.kubectl(&["apply", "-k", &repo_path(dir)], None)
        .await
        .ok();
    let policies = env
        .kubectl(&["get", "networkpolicies", "-A", "-o", "name"], None)
        .await
        .ok();
    assert!(
        policies
            .stdout
            .contains("networkpolicy.networking.k8s.io/nkvm"),
        "{dir} ships a NetworkPolicy: {}",
        policies.stdout
    );
}

/// What an operator does first (docs/runbooks/operations.md): the namespace and the admin
/// password Secret, then the application and the RBAC.
pub(super) async fn install(env: &Env, app: &str) {
    env.kubectl(&["create", "namespace", "nkvm"], None)
        .await
        .ok();
    env.kubectl(
        &[
            "-n",
            "nkvm",
            "create",
            "secret",
            "generic",
            "nkvm-admin",
            "--from-literal=password=correct-horse-battery",
        ],
        None,
    )
    .await
    .ok();
    apply_kustomization(env, app).await;
    env.kubectl(&["apply", "-k", &repo_path("deploy/k8s/rbac")], None)
        .await
        .ok();
}

/// Grants nkvm's runtime role in `namespaces` (they must exist), as the runbook does.
pub(super) async fn bind_runtime(env: &Env, namespaces: &[&str]) {
    let bindings = script("scripts/render-rolebindings.sh", namespaces)
        .await
        .ok();
    env.kubectl(&["apply", "-f", "-"], Some(&bindings.stdout))
        .await
        .ok();
}

/// A namespace `ns` with a claim `data` holding `hello.txt` = `content`, written by a pod.
pub(super) async fn claim_with_file(env: &Env, ns: &str, content: &str) {
    env.kubectl(&["create", "namespace", ns], None).await.ok();
    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";
    env.apply(Some(ns), claim).await;
    // The content travels in the env, so no quoting can break the script.
    let script = "printf %s \"$CONTENT\" > /data/hello.txt && touch /data/.written && sleep 3600";
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: app}}\nspec:\n  containers:\n  - name: app\n    image: busybox\n    command: [sh, -c, {script:?}]\n    env: [{{name: CONTENT, value: {content:?}}}]\n    volumeMounts: [{{name: d, mountPath: /data}}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {{claimName: data}}\n"
    );
    env.apply(Some(ns), &pod).await;
    env.wait_ready(ns, "app").await;
    env.kubectl(
        &[
            "-n",
            ns,
            "exec",
            "app",
            "--",
            "sh",
            "-c",
            "for i in $(seq 100); do [ -f /data/.written ] && exit 0; sleep 0.1; done; exit 1",
        ],
        None,
    )
    .await
    .ok();
}

/// The files of Secret `name` in nkvm's namespace, decoded, as a secret volume holds them
/// (only `items` when the volume names some).
pub(super) async fn secret_volume(env: &Env, name: &str, items: Option<&Value>, dir: &Path) {
    std::fs::create_dir_all(dir).expect("secret dir");
    let keys = env
        .kubectl(
            &[
                "-n",
                "nkvm",
                "get",
                "secret",
                name,
                "-o",
                "go-template={{range $k, $v := .data}}{{$k}}\n{{end}}",
            ],
            None,
        )
        .await
        .ok();
    for key in keys.stdout.lines() {
        let path = match items.and_then(Value::as_array) {
            Some(items) => match items.iter().find(|i| i["key"] == key) {
                Some(item) => item["path"].as_str().expect("item path").to_string(),
                None => continue,
            },
            None => key.to_string(),
        };
        let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
        let value = env
            .kubectl(
                &["-n", "nkvm", "get", "secret", name, "-o", &template],
                None,
            )
            .await
            .ok();
        std::fs::write(dir.join(path), value.stdout).expect("secret file");
    }
}

/// The files of ConfigMap `name` in nkvm's namespace, one per data key, as a configMap
/// volume holds them.
pub(super) async fn config_map_volume(env: &Env, name: &str, dir: &Path) {
    std::fs::create_dir_all(dir).expect("configMap dir");
    let map = env
        .kubectl(
            &["-n", "nkvm", "get", "configmap", name, "-o", "json"],
            None,
        )
        .await
        .ok();
    let map: Value = serde_json::from_str(&map.stdout).expect("configMap JSON");
    for (key, value) in map["data"].as_object().expect("configMap data") {
        std::fs::write(dir.join(key), value.as_str().expect("text data")).expect("configMap file");
    }
}

/// What the kubelet gives the pod at the ServiceAccount path: a token for `nkvm-runner`, the
/// cluster's CA (from the namespace's `kube-root-ca.crt`, as the projected volume takes it) and
/// the namespace.
pub(super) async fn service_account_volume(env: &Env, dir: &Path) {
    std::fs::create_dir_all(dir).expect("service account dir");
    let token = env
        .kubectl(&["-n", "nkvm", "create", "token", "nkvm-runner"], None)
        .await
        .ok();
    let ca = env
        .kubectl(
            &[
                "-n",
                "nkvm",
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-o",
                r"jsonpath={.data.ca\.crt}",
            ],
            None,
        )
        .await
        .ok();
    assert!(ca.stdout.contains("BEGIN CERTIFICATE"), "{}", ca.stdout);
    std::fs::write(dir.join("token"), token.stdout.trim()).expect("token");
    std::fs::write(dir.join("ca.crt"), ca.stdout).expect("ca.crt");
    std::fs::write(dir.join("namespace"), "nkvm").expect("namespace");
}

/// nkvm's container as the applied Deployment defines it: the image's env overlaid with the
/// container's env and the kubelet's `KUBERNETES_SERVICE_*`, each volume at its mount path
/// (claims as empty writable directories, Secrets decoded from the cluster), and the
/// ServiceAccount volume. Returns the container and the host directory of each claim.
pub(super) async fn container_of_deployment(
    env: &Env,
    scratch: &Path,
) -> (Container, Vec<(String, PathBuf)>) {
    let deployment = env
        .kubectl(
            &["-n", "nkvm", "get", "deployment", "nkvm", "-o", "json"],
            None,
        )
        .await
        .ok();
    let deployment: Value = serde_json::from_str(&deployment.stdout).expect("deployment JSON");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "nkvm-runner");
    let spec = &pod["containers"][0];
    let mut container = Container::from_image();
    for var in spec["env"].as_array().expect("env") {
        let value = var["value"]
            .as_str()
            .unwrap_or_else(|| panic!("this test knows literal env values only, not {var}"));
        container.set_env(var["name"].as_str().expect("name"), value);
    }
    let (host, port) = env
        .url()
        .trim_start_matches("https://")
        .rsplit_once(':')
        .expect("host:port");
    container.set_env("KUBERNETES_SERVICE_HOST", host);
    container.set_env("KUBERNETES_SERVICE_PORT", port);
    let sa = scratch.join("serviceaccount");
    service_account_volume(env, &sa).await;
    container = container.mount(&sa, SERVICE_ACCOUNT_DIR, false);
    let mut claims = Vec::new();
    for mount in spec["volumeMounts"].as_array().expect("volumeMounts") {
        let name = mount["name"].as_str().expect("mount name");
        let path = mount["mountPath"].as_str().expect("mountPath");
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .expect("the mount's volume");
        let dir = scratch.join(format!("volume-{name}"));
        if let Some(claim) = volume.get("persistentVolumeClaim") {
            std::fs::create_dir_all(&dir).expect("claim dir");
            claims.push((
                claim["claimName"].as_str().expect("claim").to_string(),
                dir.clone(),
            ));
        } else if let Some(secret) = volume.get("secret") {
            let secret_name = secret["secretName"].as_str().expect("secretName");
            secret_volume(env, secret_name, secret.get("items"), &dir).await;
        } else if let Some(config_map) = volume.get("configMap") {
            let name = config_map["name"].as_str().expect("configMap name");
            config_map_volume(env, name, &dir).await;
        } else {
            panic!("this test knows claim, secret and configMap volumes only, not {volume}");
        }
        let writable = !mount["readOnly"].as_bool().unwrap_or(false);
        container = container.mount(&dir, path, writable);
    }
    (container, claims)
}

/// `hello.txt` of claim `ns/claim`, read by a pod that mounts it.
pub(super) async fn read_claim_file(env: &Env, ns: &str, claim: &str) -> String {
    crate::restore::reader(env, ns, claim).await;
    env.kubectl(
        &["-n", ns, "exec", "reader", "--", "cat", "/data/hello.txt"],
        None,
    )
    .await
    .ok()
    .stdout
}

pub(super) fn json(out: &Ran) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {out:?}"))
}

/// Extracts the one archive under `store` for `namespace` and returns its `hello.txt`.
pub(super) fn archived_hello(store: &Path, namespace: &str) -> String {
    let archives: Vec<_> = tree(store)
        .into_iter()
        .filter(|p| p.contains(&format!("/{namespace}/data/")) && p.ends_with(".tar.zst"))
        .collect();
    assert_eq!(archives.len(), 1, "{:?}", tree(store));
    let into = tempfile::tempdir().expect("temp dir");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar -x --numeric-owner -C \"$2\"")
        .arg("sh")
        .arg(store.join(&archives[0]))
        .arg(into.path())
        .status()
        .expect("sh runs");
    assert!(status.success(), "extracting {}", archives[0]);
    std::fs::read_to_string(into.path().join("hello.txt")).expect("hello.txt in the archive")
}

/// `kubectl auth can-i --list` for `user` in `namespace`, as resource (or `url:PATH`) →
/// verbs, merging rows that name the same resource.
pub(super) async fn permissions(
    env: &Env,
    user: &str,
    namespace: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let out = env
        .kubectl(
            &["auth", "can-i", "--list", "--as", user, "-n", namespace],
            None,
        )
        .await
        .ok();
    let mut lines = out.stdout.lines();
    let header = lines.next().expect("header");
    let column = |name: &str| {
        header
            .find(name)
            .unwrap_or_else(|| panic!("{name} in {header}"))
    };
    let (urls, names, verbs) = (
        column("Non-Resource URLs"),
        column("Resource Names"),
        column("Verbs"),
    );
    let mut found: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> =
        Default::default();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let field =
            |from: usize, to: usize| line.get(from..to.min(line.len())).unwrap_or("").trim();
        let resource = field(0, urls);
        let url = field(urls, names).trim_matches(['[', ']']);
        assert_eq!(field(names, verbs), "[]", "no per-name rules: {line}");
        let key = if resource.is_empty() {
            format!("url:{url}")
        } else {
            resource.to_string()
        };
        let verbs = field(verbs, usize::MAX).trim_matches(['[', ']']);
        found
            .entry(key)
            .or_default()
            .extend(verbs.split_whitespace().map(String::from));
    }
    found
}

/// What `user` may do in `namespace` beyond what every ServiceAccount may (the cluster's
/// bootstrap discovery and self-review rules, read from the namespace's `default` one).
pub(super) async fn granted(env: &Env, user: &str, namespace: &str) -> Vec<String> {
    let baseline = permissions(env, "system:serviceaccount:nkvm:default", namespace).await;
    permissions(env, user, namespace)
        .await
        .into_iter()
        .filter_map(|(resource, verbs)| {
            let extra: Vec<_> = verbs
                .difference(baseline.get(&resource).unwrap_or(&Default::default()))
                .cloned()
                .collect();
            (!extra.is_empty()).then(|| format!("{resource}: {}", extra.join(" ")))
        })
        .collect()
}
