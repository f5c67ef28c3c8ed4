//! The deployment artifacts proven against sandboxes: the Dockerfile's settings run as UID
//! 10001 on a read-only root; `deploy/k8s` applied with kubectl; nkvm run the way the
//! Deployment's pod runs it (its env, its mounts, the ServiceAccount token and CA at the
//! in-cluster path); the ServiceAccount allowed exactly what the RBAC tables say; the
//! mounted remote kubeconfig against a second cluster; every manifest validated offline.
//!
//! A container is emulated with bubblewrap: a user namespace mapping UID/GID 10001, a root
//! that is read-only and holds only the host's `/usr` (standing in for the image's programs)
//! with nkvm at `/usr/local/bin/nkvm`, the env given and nothing else, and the pod's volumes
//! bound at their mount paths. No Docker engine is needed.

mod cluster;
mod container;
mod image;

use crate::harness::Env;
use cluster::{
    archived_hello, bind_runtime, claim_with_file, container_of_deployment, granted, install, json,
    read_claim_file, script,
};
use container::{Container, final_stage, http_get, image_command, image_env, tree};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The ServiceAccount the Deployment runs as, as RBAC names it.
const RUNNER: &str = "system:serviceaccount:nkvm:nkvm-runner";
/// Where a pod finds its ServiceAccount token, CA and namespace.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn repo_path(relative: &str) -> String {
    repo().join(relative).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_nkvm_as_uid_10001_writing_only_its_data_dir() {
    let stage = final_stage();
    assert!(
        stage[0].starts_with("FROM docker.io/library/debian:"),
        "a Debian runtime base has GNU tar for the helper role: {}",
        stage[0]
    );
    for want in [
        "USER 10001:10001",
        r#"ENTRYPOINT ["/usr/local/bin/nkvm"]"#,
        r#"CMD ["serve"]"#,
    ] {
        assert!(stage.iter().any(|i| i == want), "{want} in {stage:#?}");
    }
    assert!(
        !stage.iter().any(|i| i.contains("kubectl")),
        "no kubectl in the image"
    );
    let env: std::collections::BTreeMap<_, _> = image_env().into_iter().collect();
    assert_eq!(env["NKVM_DEFAULT_AUTH_MODE"], "in-cluster");
    assert_eq!(env["NKVM_BACKUP_DIR"], "/var/lib/nkvm/backups");
    assert_eq!(
        env["NKVM_METADATA_DB_PATH"],
        "/var/lib/nkvm/data/backups.db"
    );
    assert_eq!(env["NKVM_LISTEN"], "0.0.0.0:8080");

    let scratch = tempfile::tempdir().expect("temp dir");
    let data = scratch.path().join("var-lib-nkvm");
    std::fs::create_dir(&data).expect("data dir");
    let container = Container::from_image().mount(&data, "/var/lib/nkvm", true);
    let identity = container.run("id", &[]).await.ok();
    assert!(
        identity.stdout.starts_with("uid=10001 gid=10001"),
        "{}",
        identity.stdout
    );

    // An empty volume over /var/lib/nkvm, as a fresh PVC is: nkvm makes what it needs.
    let listed = container.nkvm(&["backups", "-o", "json"]).await.ok();
    assert_eq!(listed.stdout.trim(), "[]", "{listed:?}");
    container.nkvm(&["index", "rebuild"]).await.ok();
    let written = tree(&data);
    assert!(
        written.contains(&"data/backups.db".to_string()),
        "the history is at NKVM_METADATA_DB_PATH: {written:?}"
    );
    assert!(
        written
            .iter()
            .all(|p| p == "data" || p.starts_with("data/backups.db") || p.starts_with("backups")),
        "nothing but the history and the store: {written:?}"
    );
    // The entrypoint: `nkvm serve` with the image's settings (only the port moved, so tests
    // can run side by side) and the admin password file the Deployment mounts. It must serve
    // health on a read-only root without a cluster (in-cluster auth fails outside a pod, and
    // the UI shows that instead of the process dying).
    let secret = scratch.path().join("nkvm-admin");
    std::fs::create_dir(&secret).expect("secret dir");
    std::fs::write(secret.join("password"), "image-test-password").expect("password");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server_container = Container::from_image()
        .mount(&data, "/var/lib/nkvm", true)
        .mount(&secret, "/etc/nkvm/admin", false);
    server_container.set_env("NKVM_LISTEN", &addr);
    server_container.set_env("NKVM_ADMIN_PASSWORD_FILE", "/etc/nkvm/admin/password");
    let mut server = tokio::process::Command::new("bwrap")
        .args(server_container.bwrap_args())
        .args(image_command())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bwrap runs");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let health = loop {
        match http_get(&addr, "/healthz").await {
            Ok(answer) => break answer,
            Err(e) if tokio::time::Instant::now() > deadline => {
                let _ = server.start_kill();
                let out = server.wait_with_output().await.expect("server output");
                panic!(
                    "nkvm serve did not answer on {addr}: {e}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = http_get(&addr, "/readyz").await.expect("readyz answers");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let _ = server.start_kill();
    let _ = server.wait().await;
    let written = tree(&data);
    assert!(
        written
            .iter()
            .all(|p| p == "data" || p.starts_with("data/backups.db") || p.starts_with("backups")),
        "the server too writes nothing but the history and the store: {written:?}"
    );

    // The image defaults to in-cluster auth; outside a pod that says so and exits 2.
    let outside = container.nkvm(&["pvcs"]).await;
    assert_eq!(outside.code, 2, "{outside:?}");
    assert!(
        outside
            .stderr
            .contains("in-cluster auth needs a pod environment"),
        "{}",
        outside.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_nkvm_backs_up_where_its_role_is_bound_and_is_forbidden_elsewhere() {
    let env = Env::start().await;
    install(&env, "deploy/k8s/app").await;
    claim_with_file(&env, "shop", "the shop's records").await;
    claim_with_file(&env, "other", "not for nkvm").await;
    bind_runtime(&env, &["shop"]).await;
    // The manifests make a pod the cluster runs (image aside): claim bound, Secret mounted.
    env.kubectl(
        &[
            "-n",
            "nkvm",
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "app.kubernetes.io/component=server",
            "--timeout=60s",
        ],
        None,
    )
    .await
    .ok();

    let scratch = tempfile::tempdir().expect("temp dir");
    let (pod, claims) = container_of_deployment(&env, scratch.path()).await;
    assert_eq!(claims.len(), 1, "{claims:?}");
    let (claim, data) = &claims[0];
    assert_eq!(claim, "nkvm-data");

    // No --auth: the Deployment's env says in-cluster, and the ServiceAccount is who acts.
    // `check` agrees with the RBAC: everything where the role is bound, no writes elsewhere.
    let bound = json(
        &pod.nkvm(&["--namespaces", "shop", "check", "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(bound["authMode"], "in-cluster", "{bound}");
    assert_eq!(bound["identity"], RUNNER, "{bound}");
    let grants = bound["grants"].as_array().expect("grants");
    assert!(
        !grants.is_empty() && grants.iter().all(|g| g["allowed"] == true),
        "{bound}"
    );
    let unbound = pod
        .nkvm(&["--namespaces", "other", "check", "-o", "json"])
        .await;
    assert_eq!(unbound.code, 1, "{unbound:?}");
    let unbound_report = json(&unbound);
    let missing: Vec<&str> = unbound_report["grants"]
        .as_array()
        .expect("grants")
        .iter()
        .filter(|g| g["allowed"] == false)
        .map(|g| g["permission"].as_str().expect("permission"))
        .collect();
    assert_eq!(
        missing,
        [
            "create pods",
            "delete pods",
            "create pods/exec",
            "create persistentvolumeclaims"
        ],
        "{unbound:?}"
    );

    let inventory = json(&pod.nkvm(&["pvcs", "-A", "-o", "json"]).await.ok());
    let listed: Vec<String> = inventory
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["namespace"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in ["shop/data", "other/data", "nkvm/nkvm-data"] {
        assert!(listed.contains(&want.to_string()), "{want} in {listed:?}");
    }

    // The helper runs the Deployment's own image (kustomize copies it into NKVM_IMAGE), so
    // the backup goes through the agent.
    let image = env
        .kubectl(
            &[
                "-n",
                "nkvm",
                "get",
                "deployment",
                "nkvm",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[?(@.name==\"NKVM_IMAGE\")].value}",
            ],
            None,
        )
        .await
        .ok()
        .stdout;
    assert_eq!(
        image,
        format!("{0} {0}", crate::harness::SHIPPED_IMAGE),
        "container image, then NKVM_IMAGE"
    );
    let backed_up = pod.nkvm(&["backup", "shop/data", "-o", "json"]).await.ok();
    let result = &json(&backed_up)[0];
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["dataPath"], "agent", "{result}");
    assert_eq!(
        archived_hello(&data.join("backups"), "shop"),
        "the shop's records"
    );
    let id = result["id"].as_str().expect("id");
    pod.nkvm(&["verify", id]).await.ok();

    // Restore into a new claim in the same namespace, then read it back through a pod.
    let restored = pod
        .nkvm(&[
            "restore",
            id,
            "--to",
            "shop/restored",
            "--create",
            "-o",
            "json",
        ])
        .await
        .ok();
    assert_eq!(json(&restored)["status"], "succeeded", "{restored:?}");
    assert_eq!(
        read_claim_file(&env, "shop", "restored").await,
        "the shop's records"
    );

    let denied = pod.nkvm(&["backup", "other/data", "-o", "json"]).await;
    assert_eq!(denied.code, 1, "{denied:?}");
    let failure = &json(&denied)[0];
    assert_eq!(failure["status"], "failed", "{failure}");
    let error = failure["error"].as_str().expect("error");
    for want in [
        "forbidden",
        RUNNER,
        "cannot create resource \"pods\"",
        "in the namespace \"other\"",
        "grant this identity create on pods in that namespace",
    ] {
        assert!(error.contains(want), "{want:?} in {error}");
    }
    assert!(
        !tree(&data.join("backups"))
            .iter()
            .any(|p| p.contains("/other/")),
        "nothing stored for the refused claim"
    );
    // Restoring there is refused by the API server too, naming what is missing.
    let refused = pod
        .nkvm(&[
            "restore",
            id,
            "--to",
            "other/restored",
            "--create",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    let refusal = json(&refused);
    assert_eq!(refusal["stage"], "create-pvc", "{refusal}");
    let error = refusal["error"].as_str().expect("error");
    for want in [
        "forbidden",
        RUNNER,
        "cannot create resource \"persistentvolumeclaims\"",
        "in the namespace \"other\"",
    ] {
        assert!(error.contains(want), "{want:?} in {error}");
    }
    let helpers = env
        .kubectl(
            &[
                "get",
                "pods",
                "-A",
                "-l",
                "app.kubernetes.io/managed-by=nkvm",
                "-o",
                "name",
            ],
            None,
        )
        .await
        .ok();
    assert_eq!(helpers.stdout.trim(), "", "no helper pod left behind");
    let top: Vec<String> = tree(data)
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(
        top,
        ["backups", "data"],
        "the data volume holds the store and the history"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_may_do_exactly_what_the_rbac_tables_list() {
    the_rbac_tables_hold(Env::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_may_do_exactly_what_the_rbac_tables_list_on_upstream_kubernetes() {
    if let Some(env) = Env::start_upstream().await {
        the_rbac_tables_hold(env).await;
    }
}

/// The shipped manifests and role bindings grant nkvm's ServiceAccount exactly the tables of
/// deploy/k8s/README.md, as the cluster's authorizer answers `kubectl auth can-i --list`.
async fn the_rbac_tables_hold(env: Env) {
    install(&env, "deploy/k8s/app").await;
    for ns in ["shop", "other"] {
        env.kubectl(&["create", "namespace", ns], None).await.ok();
    }
    bind_runtime(&env, &["shop"]).await;
    let discovery = [
        "jobs.batch: get list watch",
        "namespaces: get list watch",
        "persistentvolumeclaims: get list watch",
        "pods: get list watch",
        "replicasets.apps: get list watch",
        "statefulsets.apps: get list watch",
        "storageclasses.storage.k8s.io: get list watch",
    ];
    assert_eq!(granted(&env, RUNNER, "other").await, discovery);
    let in_bound_namespace = [
        "events: list",
        "jobs.batch: get list watch",
        "namespaces: get list watch",
        "persistentvolumeclaims: create get list watch",
        "pods: create delete get list watch",
        "pods/exec: create get",
        "replicasets.apps: get list watch",
        "statefulsets.apps: get list watch",
        "storageclasses.storage.k8s.io: get list watch",
    ];
    assert_eq!(granted(&env, RUNNER, "shop").await, in_bound_namespace);
    // In nkvm's own namespace it holds only the scheduler's Lease more: not even its Secrets.
    let mut own_namespace = discovery.to_vec();
    own_namespace.insert(1, "leases.coordination.k8s.io: create get update");
    assert_eq!(granted(&env, RUNNER, "nkvm").await, own_namespace);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mounted_remote_kubeconfig_reaches_a_second_cluster() {
    let local = Env::start().await;
    let remote = Env::start().await;
    // The remote cluster: nkvm's ServiceAccount and RBAC there, a claim to back up, and a
    // kubeconfig holding a token of that ServiceAccount (docs/operations/authentication-methods.md).
    remote
        .kubectl(&["create", "namespace", "nkvm"], None)
        .await
        .ok();
    remote
        .kubectl(
            &["-n", "nkvm", "create", "serviceaccount", "nkvm-runner"],
            None,
        )
        .await
        .ok();
    remote
        .kubectl(&["apply", "-k", &repo_path("deploy/k8s/rbac")], None)
        .await
        .ok();
    claim_with_file(&remote, "apps", "remote data").await;
    bind_runtime(&remote, &["apps"]).await;
    let token = remote
        .kubectl(&["-n", "nkvm", "create", "token", "nkvm-runner"], None)
        .await
        .ok();
    let remote_kubeconfig = remote.kubeconfig_with_token("remote.kubeconfig", token.stdout.trim());

    install(&local, "deploy/k8s/overlays/remote-kubeconfig").await;
    local
        .kubectl(
            &[
                "-n",
                "nkvm",
                "create",
                "secret",
                "generic",
                "nkvm-remote-kubeconfig",
                &format!("--from-file=config={}", remote_kubeconfig.display()),
            ],
            None,
        )
        .await
        .ok();
    let scratch = tempfile::tempdir().expect("temp dir");
    let (pod, claims) = container_of_deployment(&local, scratch.path()).await;
    let data = &claims[0].1;

    // KUBECONFIG points at the mounted file, so `--auth kubeconfig` is all it takes.
    let inventory = json(
        &pod.nkvm(&["--auth", "kubeconfig", "pvcs", "-n", "apps", "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(inventory[0]["name"], "data", "{inventory}");
    let backed_up = pod
        .nkvm(&[
            "--auth",
            "kubeconfig",
            "--kubeconfig",
            "/etc/nkvm/remote/config",
            "backup",
            "apps/data",
            "-o",
            "json",
        ])
        .await
        .ok();
    let result = &json(&backed_up)[0];
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(archived_hello(&data.join("backups"), "apps"), "remote data");
    // The archive is filed under the remote cluster's id, and without --auth nkvm still
    // talks to its own cluster, in-cluster.
    let remote_id = remote
        .kubectl(
            &[
                "get",
                "namespace",
                "kube-system",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )
        .await
        .ok();
    assert_eq!(result["cluster"], remote_id.stdout.trim(), "{result}");
    let local_check = json(&pod.nkvm(&["check", "-o", "json"]).await);
    assert_eq!(local_check["authMode"], "in-cluster", "{local_check}");
    assert_eq!(local_check["server"], local.url(), "{local_check}");
    remote.stop().await;
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_component_mounts_the_stores_file_and_credentials_and_backs_up_off_site() {
    use nkvm_store::testing::{ACCESS_KEY, S3Server, SECRET_KEY};
    let env = Env::start().await;
    let server = S3Server::start(&env.dir.path().join("s3"));
    claim_with_file(&env, "apps", "off-site data").await;
    bind_runtime(&env, &["apps"]).await;
    install(&env, "deploy/k8s/overlays/stores").await;
    // The operator's part: the credentials Secret from files, and the overlay's stores file
    // pointed at their server (here the test's S3 server, in the generated ConfigMap).
    let scratch = tempfile::tempdir().expect("temp dir");
    let (access, secret) = (scratch.path().join("id"), scratch.path().join("secret"));
    std::fs::write(&access, ACCESS_KEY).expect("key file");
    std::fs::write(&secret, SECRET_KEY).expect("key file");
    env.kubectl(
        &[
            "-n",
            "nkvm",
            "create",
            "secret",
            "generic",
            "nkvm-store-credentials",
            &format!("--from-file=s3-access-key-id={}", access.display()),
            &format!("--from-file=s3-secret-access-key={}", secret.display()),
        ],
        None,
    )
    .await
    .ok();
    let shipped = std::fs::read_to_string(repo().join("deploy/k8s/overlays/stores/stores.yaml"))
        .expect("the overlay's stores file");
    let ours = shipped
        .replace("https://s3.example.invalid", &server.endpoint())
        .replace("eu-west-1", "us-east-1");
    assert_ne!(ours, shipped, "the example names an endpoint and a region");
    let map_name = env
        .kubectl(
            &[
                "-n",
                "nkvm",
                "get",
                "deployment",
                "nkvm",
                "-o",
                "jsonpath={.spec.template.spec.volumes[?(@.name==\"stores-file\")].configMap.name}",
            ],
            None,
        )
        .await
        .ok()
        .stdout;
    assert!(
        map_name.starts_with("nkvm-stores-"),
        "generated: {map_name}"
    );
    let patch = serde_json::json!({"data": {"stores.yaml": ours}}).to_string();
    env.kubectl(
        &[
            "-n",
            "nkvm",
            "patch",
            "configmap",
            &map_name,
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    )
    .await
    .ok();

    let (pod, _claims) = container_of_deployment(&env, scratch.path()).await;
    let stores = json(&pod.nkvm(&["stores", "--check", "-o", "json"]).await.ok());
    let offsite = stores
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["name"] == "offsite")
        .unwrap_or_else(|| panic!("offsite listed: {stores}"));
    assert_eq!(offsite["health"], "ok", "{offsite}");
    let backed_up = pod
        .nkvm(&["backup", "apps/data", "--store", "offsite", "-o", "json"])
        .await
        .ok();
    let result = &json(&backed_up)[0];
    assert_eq!(
        (&result["status"], &result["dataPath"]),
        (&"succeeded".into(), &"direct".into()),
        "the helper of the shipped image uploads with the Secret's keys itself: {result}"
    );
    let id = result["id"].as_str().expect("id");
    assert!(
        server
            .objects()
            .iter()
            .any(|o| o.starts_with("prod/") && o.ends_with(&format!("{id}.tar.zst"))),
        "the archive is in the bucket: {:?}",
        server.objects()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_manifest_validates_offline_against_kubernetes_1_32() {
    let out = script("scripts/validate-manifests.sh", &[]).await;
    assert!(
        out.code != 2,
        "the validator is missing; run scripts/install-test-deps.sh: {}",
        out.stderr
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("all manifests valid against Kubernetes 1.32.0"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolebindings_render_one_per_namespace_and_refuse_invalid_names() {
    let out = script("scripts/render-rolebindings.sh", &["shop,billing", "media"])
        .await
        .ok();
    let documents: Vec<&str> = out.stdout.split("\n---\n").collect();
    assert_eq!(documents.len(), 3, "{}", out.stdout);
    for (document, ns) in documents.iter().zip(["shop", "billing", "media"]) {
        for want in [
            "kind: RoleBinding\n".to_string(),
            format!("  name: nkvm-runtime\n  namespace: {ns}\n"),
            "  kind: ClusterRole\n  name: nkvm-runtime\n".into(),
            "- kind: ServiceAccount\n  name: nkvm-runner\n  namespace: nkvm".into(),
        ] {
            assert!(document.contains(&want), "{want:?} in {document}");
        }
    }
    let refused = script("scripts/render-rolebindings.sh", &["shop,Bad_NS"]).await;
    assert_eq!(refused.code, 2);
    assert!(
        refused.stdout.is_empty()
            && refused
                .stderr
                .contains("\"Bad_NS\" is not a valid namespace name"),
        "{refused:?}"
    );
}
