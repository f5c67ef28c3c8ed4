//! Streams through kubectl: exec (exit codes, stdin, a gigabyte byte-exact), cp both ways, and
//! logs.

use crate::harness::{TestCluster, claim, pod_with_claim};
use std::path::Path;
use std::time::Duration;

async fn running_pod(c: &TestCluster, prefix: &str, script: &str) -> String {
    let ns = c.namespace(prefix).await;
    c.apply_in(&ns, &claim("data", "standard", "ReadWriteOnce"))
        .await;
    c.apply_in(&ns, &pod_with_claim("p", "data", script)).await;
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
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_propagates_exit_codes_and_feeds_stdin() {
    let c = TestCluster::start().await;
    let ns = running_pod(&c, "exec", "sleep 3600").await;
    let ok = c
        .kubectl(&[
            "-n",
            &ns,
            "exec",
            "p",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2",
        ])
        .await
        .ok();
    assert_eq!(ok.stdout, "out\n");
    assert_eq!(ok.stderr, "err\n");
    let failed = c
        .kubectl(&["-n", &ns, "exec", "p", "--", "sh", "-c", "exit 42"])
        .await;
    assert_eq!(failed.code, 42, "{failed:?}");
    let input = b"line one\nline two\n";
    let fed = c
        .kubectl_with(
            &[
                "-n",
                &ns,
                "exec",
                "-i",
                "p",
                "--",
                "sh",
                "-c",
                "cat > /data/in.txt && wc -l < /data/in.txt",
            ],
            Some(input),
            Duration::from_secs(30),
        )
        .await
        .ok();
    assert_eq!(fed.stdout.trim(), "2");
    let back = c
        .kubectl(&["-n", &ns, "exec", "p", "--", "cat", "/data/in.txt"])
        .await
        .ok();
    assert_eq!(back.stdout.as_bytes(), input);
    // A container keeps its /tmp between execs, as its writable layer would.
    c.kubectl(&[
        "-n",
        &ns,
        "exec",
        "p",
        "--",
        "sh",
        "-c",
        "echo kept > /tmp/state",
    ])
    .await
    .ok();
    let kept = c
        .kubectl(&["-n", &ns, "exec", "p", "--", "cat", "/tmp/state"])
        .await
        .ok();
    assert_eq!(kept.stdout, "kept\n");
    let missing = c
        .kubectl(&["-n", &ns, "exec", "p", "--", "no-such-program"])
        .await;
    assert_ne!(missing.code, 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_through_exec_stdout_arrives_byte_exact() {
    let c = TestCluster::start().await;
    let ns = running_pod(&c, "gig", "sleep 3600").await;
    c.kubectl(&[
        "-n",
        &ns,
        "exec",
        "p",
        "--",
        "sh",
        "-c",
        "head -c 67108864 /dev/urandom > /data/r",
    ])
    .await
    .ok();
    let producer = "for i in $(seq 16); do cat /data/r; done";
    let expected = c
        .kubectl(&[
            "-n",
            &ns,
            "exec",
            "p",
            "--",
            "sh",
            "-c",
            &format!("{producer} | sha256sum"),
        ])
        .await
        .ok();
    let script = format!(
        "{} --kubeconfig {} -n {ns} exec p -- sh -c '{producer}' | tee >(wc -c >&2) | sha256sum",
        crate::harness::kubectl_bin(),
        c.kubeconfig.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output(),
    )
    .await
    .expect("a gigabyte within 4 minutes")
    .expect("bash runs");
    let got = String::from_utf8_lossy(&out.stdout);
    let count = String::from_utf8_lossy(&out.stderr);
    assert_eq!(count.trim(), (1u64 << 30).to_string(), "byte count");
    assert_eq!(
        got.split_whitespace().next(),
        expected.stdout.split_whitespace().next(),
        "sha256 of 1 GiB"
    );
    c.stop().await;
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("big.bin"), big).expect("write");
    std::fs::write(root.join("sub/a.txt"), "hello\n").expect("write");
    std::fs::write(
        root.join("sub/deeper").join("n".repeat(150) + ".txt"),
        "long name\n",
    )
    .expect("write");
    std::fs::write(root.join("empty"), "").expect("write");
}

fn assert_same_tree(a: &Path, b: &Path) {
    let out = std::process::Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .expect("diff runs");
    assert!(
        out.status.success(),
        "trees differ:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(b.join("empty-dir").is_dir(), "empty directory lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_copies_a_directory_tree_in_and_out_identically() {
    let c = TestCluster::start().await;
    let ns = running_pod(&c, "cp", "sleep 3600").await;
    let dir = tempfile::tempdir().expect("dir");
    let src = dir.path().join("tree");
    write_tree(&src);
    c.kubectl(&[
        "-n",
        &ns,
        "cp",
        src.to_str().expect("utf-8"),
        "p:/data/tree",
    ])
    .await
    .ok();
    let listed = c
        .kubectl(&[
            "-n",
            &ns,
            "exec",
            "p",
            "--",
            "find",
            "/data/tree",
            "-type",
            "f",
        ])
        .await
        .ok();
    assert_eq!(listed.stdout.lines().count(), 4, "{}", listed.stdout);
    let back = dir.path().join("back");
    c.kubectl(&[
        "-n",
        &ns,
        "cp",
        "p:/data/tree",
        back.to_str().expect("utf-8"),
    ])
    .await
    .ok();
    assert_same_tree(&src, &back);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_tail_and_previous() {
    let c = TestCluster::start().await;
    let ns = c.namespace("logs").await;
    c.apply_in(
        &ns,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: chatty
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3; do echo line $i; done; echo oops >&2; exit 3"]
"#,
    )
    .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        "pod/chatty",
        "--timeout=30s",
    ])
    .await
    .ok();
    let logs = c.kubectl(&["-n", &ns, "logs", "chatty"]).await.ok();
    assert_eq!(logs.stdout, "line 1\nline 2\nline 3\noops\n");
    let tail = c
        .kubectl(&["-n", &ns, "logs", "chatty", "--tail=1"])
        .await
        .ok();
    assert_eq!(tail.stdout, "oops\n");
    let code = c
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "pod",
            "chatty",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
        ])
        .await
        .ok();
    assert_eq!(code.stdout, "3");

    c.apply_in(
        &ns,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: restarts
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo run at $(date +%s%N); sleep 0.2; exit 1"]
"#,
    )
    .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=jsonpath={.status.containerStatuses[0].restartCount}=2",
        "pod/restarts",
        "--timeout=30s",
    ])
    .await
    .ok();
    let previous = c
        .kubectl(&["-n", &ns, "logs", "restarts", "--previous"])
        .await
        .ok();
    assert!(
        previous.stdout.starts_with("run at "),
        "{}",
        previous.stdout
    );

    c.apply_in(
        &ns,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"]
"#,
    )
    .await;
    c.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "pod/ticker",
        "--timeout=30s",
    ])
    .await;
    let followed = c.kubectl(&["-n", &ns, "logs", "-f", "ticker"]).await.ok();
    assert_eq!(followed.stdout, "tick 1\ntick 2\ntick 3\n");
    c.stop().await;
}

/// An image program (how nkvm's own image carries the nkvm binary) is at its path in containers
/// of that image only, read-only, and the directory it joins keeps the host's other entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_program_is_found_only_in_containers_of_its_image() {
    let c = TestCluster::start_with_options(kube_sandbox::SandboxOptions {
        image_programs: vec![kube_sandbox::kubelet::programs::ImageProgram {
            image: "example.invalid/marked:1".into(),
            program: "/usr/bin/basename".into(),
            at: "/usr/local/bin/marked-tool".into(),
        }],
        ..Default::default()
    })
    .await;
    if !c.is_sandbox() {
        return;
    }
    let ns = c.namespace("programs").await;
    for (name, image) in [("marked", "example.invalid/marked:1"), ("plain", "busybox")] {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: {image}, command: [sleep, \"3600\"]}}]\n"
        );
        c.apply_in(&ns, &pod).await;
        c.kubectl(&[
            "-n",
            &ns,
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=30s",
        ])
        .await
        .ok();
    }
    let host_entries = std::fs::read_dir("/usr/local/bin").map_or(0, |d| d.count());
    let script = "marked-tool /a/b/c && ls /usr/local/bin | wc -l && ! touch /usr/local/bin/marked-tool 2>/dev/null";
    let marked = c
        .kubectl(&["-n", &ns, "exec", "marked", "--", "sh", "-c", script])
        .await
        .ok();
    assert_eq!(
        marked.stdout,
        format!("c\n{}\n", host_entries + 1),
        "the program runs, beside the host's entries, and cannot be written"
    );
    let plain = c
        .kubectl(&[
            "-n",
            &ns,
            "exec",
            "plain",
            "--",
            "sh",
            "-c",
            "command -v marked-tool",
        ])
        .await;
    assert_ne!(plain.code, 0, "{plain:?}");
    c.stop().await;
}
