//! Connecting in each auth mode, and every way connecting can fail, each with its own message
//! and exit code; hostile pasted kubeconfigs are refused before anything in them runs.

use crate::harness::Env;
use nkvm_kube::{AuthMode, ConnectError, ConnectOptions};
use std::time::Duration;

const DISCOVERY_ROLE: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: inventory}
rules:
- apiGroups: [""]
  resources: [persistentvolumeclaims, pods]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [replicasets, statefulsets]
  verbs: [get, list, watch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: inventory}
subjects: [{kind: ServiceAccount, name: nkvm}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: inventory}
"#;

async fn service_account_token(env: &Env, ns: &str, sa: &str) -> String {
    env.kubectl(&["-n", ns, "create", "serviceaccount", sa], None)
        .await
        .ok();
    env.kubectl(&["-n", ns, "create", "token", sa], None)
        .await
        .ok()
        .stdout
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoped_rbac_is_enough_with_an_allowlist() {
    let env = Env::start().await;
    env.kubectl(&["create", "namespace", "team"], None)
        .await
        .ok();
    env.apply(Some("team"), DISCOVERY_ROLE).await;
    env.apply(Some("team"), "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n").await;
    let token = service_account_token(&env, "team", "nkvm").await;
    let kc = env.kubeconfig_with_token("team.kubeconfig", &token);
    let listed = env
        .nkvm_with(&kc, &["--namespaces", "team", "pvcs", "-o", "json"])
        .await
        .ok();
    assert!(
        listed.stdout.contains("\"name\": \"data\""),
        "{}",
        listed.stdout
    );
    let everything = env.nkvm_with(&kc, &["pvcs"]).await;
    assert_eq!(everything.code, 1);
    assert!(
        everything
            .stderr
            .contains("may not list PersistentVolumeClaims across all namespaces")
            && everything.stderr.contains("set --namespaces"),
        "{}",
        everything.stderr
    );
    let outside = env
        .nkvm_with(&kc, &["--namespaces", "team", "pvcs", "-n", "kube-system"])
        .await;
    assert_eq!(outside.code, 1);
    assert!(
        outside
            .stderr
            .contains("namespace \"kube-system\" is not in nkvm's allowlist (team)"),
        "{}",
        outside.stderr
    );
    let check = env.nkvm_with(&kc, &["--namespaces", "team", "check"]).await;
    assert_eq!(
        check.code, 1,
        "helper-pod permissions are missing: {}",
        check.stdout
    );
    assert!(
        check.stdout.contains("system:serviceaccount:team:nkvm"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("create pods/exec") && check.stdout.contains("NO"),
        "{}",
        check.stdout
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_failure_has_its_own_message_and_exit_code() {
    let env = Env::start().await;
    let other = Env::start().await;
    let port = env.url().rsplit(':').next().expect("port").to_string();
    let down = env.dir.path().join("down.kubeconfig");
    std::fs::write(
        &down,
        env.kubeconfig_text()
            .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:1"),
    )
    .expect("write");
    let wrong_ca = env.dir.path().join("wrong-ca.kubeconfig");
    let ca_line = |text: &str| {
        text.lines()
            .find(|l| l.contains("certificate-authority-data"))
            .expect("ca")
            .to_string()
    };
    std::fs::write(
        &wrong_ca,
        env.kubeconfig_text().replace(
            &ca_line(env.kubeconfig_text()),
            &ca_line(other.kubeconfig_text()),
        ),
    )
    .expect("write");
    let bad_token = env.kubeconfig_with_token("bad.kubeconfig", "not-a-token");
    env.kubectl(&["create", "namespace", "nobody"], None)
        .await
        .ok();
    let token = service_account_token(&env, "nobody", "powerless").await;
    let powerless = env.kubeconfig_with_token("powerless.kubeconfig", &token);

    let cases = [
        (
            down.as_path(),
            vec!["pvcs"],
            1,
            "cannot reach the Kubernetes API at https://127.0.0.1:1 (kubeconfig)",
        ),
        (
            wrong_ca.as_path(),
            vec!["pvcs"],
            1,
            "TLS with the Kubernetes API",
        ),
        (
            bad_token.as_path(),
            vec!["pvcs"],
            1,
            "rejected the credentials (kubeconfig, 401 Unauthorized)",
        ),
        (
            powerless.as_path(),
            vec!["pvcs"],
            1,
            "may not list PersistentVolumeClaims across all namespaces",
        ),
        (
            env.kubeconfig.as_path(),
            vec!["--context", "nope", "pvcs"],
            2,
            "context \"nope\" is not in the kubeconfig; available contexts: sandbox",
        ),
        (
            env.kubeconfig.as_path(),
            vec!["--namespaces", "Bad_NS", "pvcs"],
            2,
            "--namespaces / NKVM_NAMESPACES: namespace \"Bad_NS\" is not a valid Kubernetes name",
        ),
        (
            env.kubeconfig.as_path(),
            vec!["--auth", "token", "pvcs"],
            2,
            "unknown auth mode \"token\"",
        ),
        (
            env.kubeconfig.as_path(),
            vec!["--auth", "in-cluster", "pvcs"],
            2,
            "in-cluster auth needs a pod environment",
        ),
    ];
    for (kubeconfig, args, code, message) in cases {
        let out = env.nkvm_with(kubeconfig, &args).await;
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{args:?}: want {message:?} in {}",
            out.stderr
        );
        assert_eq!(
            out.stderr
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1,
            "one error, said once: {}",
            out.stderr
        );
    }
    let contexts = env.nkvm(&["contexts"]).await.ok();
    assert!(
        contexts
            .stdout
            .contains("*        sandbox  sandbox  https://127.0.0.1:"),
        "{}",
        contexts.stdout
    );
    other.stop().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_kubeconfig_connects_and_hostile_ones_run_and_read_nothing() {
    let env = Env::start().await;
    let mut ok = ConnectOptions::new(AuthMode::Paste);
    ok.pasted = Some(env.kubeconfig_text().to_string());
    ok.timeout = Duration::from_secs(10);
    let conn = nkvm_kube::connect(&ok)
        .await
        .expect("an inline-token kubeconfig connects");
    assert_eq!(conn.info.mode, AuthMode::Paste);
    assert!(conn.info.version.starts_with("v1."));

    let marker = env.dir.path().join("exec-plugin-ran");
    let user_block = env
        .kubeconfig_text()
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .expect("token line")
        .to_string();
    let exec = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /usr/bin/touch\n      args: [\"{}\"]\n      interactiveMode: Never",
        marker.display()
    );
    let hostile = [
        (exec.clone(), "exec credential plugin"),
        ("    tokenFile: /etc/hostname".to_string(), "(tokenFile)"),
        (
            format!(
                "{user_block}\n    client-certificate: /etc/ssl/certs/ca-certificates.crt\n    client-key: /etc/hostname"
            ),
            "(client-certificate)",
        ),
    ];
    for (replacement, want) in hostile {
        let mut opts = ok.clone();
        opts.pasted = Some(env.kubeconfig_text().replace(&user_block, &replacement));
        match nkvm_kube::connect(&opts).await {
            Err(e @ ConnectError::Kubeconfig(_)) => assert!(e.to_string().contains(want), "{e}"),
            Err(other) => panic!("expected a refusal naming {want}, got {other}"),
            Ok(_) => panic!("a kubeconfig with {want} was accepted"),
        }
    }
    assert!(
        !marker.exists(),
        "the exec plugin of a pasted kubeconfig ran"
    );
    let ca = env
        .kubeconfig_text()
        .lines()
        .find(|l| l.contains("certificate-authority-data"))
        .expect("ca")
        .to_string();
    for (replacement, want) in [
        (
            "    certificate-authority: /etc/ssl/certs/ca-certificates.crt",
            "(certificate-authority)",
        ),
        (
            "    certificate-authority-data: x\n    proxy-url: http://127.0.0.1:3128",
            "proxy-url",
        ),
    ] {
        let mut opts = ok.clone();
        opts.pasted = Some(env.kubeconfig_text().replace(&ca, replacement));
        let err = nkvm_kube::connect(&opts).await.err().expect("refused");
        assert!(err.to_string().contains(want), "{err}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_works_from_inside_a_pod_with_its_service_account() {
    let env = Env::start().await;
    env.kubectl(&["create", "namespace", "ops"], None)
        .await
        .ok();
    env.apply(Some("ops"), DISCOVERY_ROLE).await;
    env.kubectl(&["-n", "ops", "create", "serviceaccount", "nkvm"], None)
        .await
        .ok();
    env.apply(Some("ops"), "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n").await;
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_nkvm"))
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: nkvm}}\nspec:\n  serviceAccountName: nkvm\n  containers:\n  - name: nkvm\n    image: nkvm\n    command: [sleep, '3600']\n    volumeMounts: [{{name: bin, mountPath: /opt/nkvm, readOnly: true}}]\n  volumes:\n  - name: bin\n    hostPath: {{path: {bin_dir}}}\n"
    );
    env.apply(Some("ops"), &pod).await;
    env.kubectl(
        &[
            "-n",
            "ops",
            "wait",
            "--for=condition=Ready",
            "pod/nkvm",
            "--timeout=30s",
        ],
        None,
    )
    .await
    .ok();
    // No --auth: inside a pod, in-cluster is the default.
    let out = env
        .kubectl(
            &[
                "-n",
                "ops",
                "exec",
                "nkvm",
                "--",
                "/opt/nkvm/nkvm",
                "--db",
                "/tmp/nkvm.db",
                "--namespaces",
                "ops",
                "pvcs",
                "-o",
                "json",
            ],
            None,
        )
        .await
        .ok();
    assert!(out.stdout.contains("\"name\": \"data\""), "{}", out.stdout);
    let check = env
        .kubectl(
            &[
                "-n",
                "ops",
                "exec",
                "nkvm",
                "--",
                "/opt/nkvm/nkvm",
                "--db",
                "/tmp/nkvm.db",
                "--namespaces",
                "ops",
                "check",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    assert!(
        check.stdout.contains("\"authMode\": \"in-cluster\"")
            && check.stdout.contains("system:serviceaccount:ops:nkvm"),
        "{check:?}"
    );
    env.stop().await;
}
