//! A sandbox cluster per test (in-process, optionally with faults), a kube client for it, and
//! fixtures: namespaces, claims filled with known files by a plain consumer pod, helpers.

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::PostParams;
use kube_sandbox::SandboxOptions;
use kube_sandbox::testing::TestSandbox;
use nkvm_domain::PvcRef;
use nkvm_kube::helper::{self, HelperMode, HelperPodOptions, RunningPod};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The helper image used in tests (the sandbox runs the host's programs whatever the image).
pub const IMAGE: &str = "nkvm-helper:test";

/// A sandbox and a client for it.
pub struct Env {
    sandbox: TestSandbox,
    /// Cluster-admin client.
    pub client: kube::Client,
}

impl Env {
    /// A fresh sandbox.
    pub async fn start() -> Env {
        Self::with_faults(&[]).await
    }

    /// A fresh sandbox with these `--fault` specs active from the start.
    pub async fn with_faults(faults: &[&str]) -> Env {
        let sandbox = TestSandbox::start_with(SandboxOptions {
            faults: faults.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })
        .await;
        let client = sandbox.client().await;
        Env { sandbox, client }
    }

    /// Creates namespace `name`.
    pub async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        within(api.create(&PostParams::default(), &ns))
            .await
            .expect("namespace created");
    }

    /// Creates a 1 GiB ReadWriteOnce claim (class `standard`, bound at once).
    pub async fn claim(&self, ns: &str, name: &str) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }))
        .expect("claim");
        within(api.create(&PostParams::default(), &pvc))
            .await
            .expect("claim created");
    }

    /// Creates a plain pod and waits until it runs.
    pub async fn pod(&self, ns: &str, spec: serde_json::Value) -> RunningPod {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod: Pod = serde_json::from_value(spec).expect("pod");
        let created = within(api.create(&PostParams::default(), &pod))
            .await
            .expect("pod created");
        let name = created.metadata.name.unwrap_or_default();
        helper::wait_running(&self.client, ns, &name, Duration::from_secs(30))
            .await
            .expect("pod runs")
    }

    /// A claim filled with [`expected_files`] by an init container, and its consumer (a pod
    /// that keeps the claim mounted, as an application would).
    pub async fn claim_with_files(&self, ns: &str, claim: &str) -> RunningPod {
        self.claim(ns, claim).await;
        self.pod(
            ns,
            json!({
                "metadata": {"name": format!("{claim}-app")},
                "spec": {
                    "initContainers": [{
                        "name": "writer",
                        "image": "busybox",
                        "command": ["sh", "-c", WRITE_FILES],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }],
                    "containers": [{
                        "name": "app",
                        "image": "busybox",
                        "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                },
            }),
        )
        .await
    }

    /// Creates a helper pod and waits until it runs.
    pub async fn helper(&self, opts: &HelperPodOptions) -> RunningPod {
        let pod = helper::pod_spec(opts);
        helper::create_helper(&self.client, &pod)
            .await
            .expect("helper created");
        let name = pod.metadata.name.unwrap_or_default();
        helper::wait_running(
            &self.client,
            opts.claim.namespace.as_str(),
            &name,
            Duration::from_secs(30),
        )
        .await
        .expect("helper runs")
    }

    /// Whether pod `name` exists in `ns`.
    pub async fn pod_exists(&self, ns: &str, name: &str) -> bool {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        within(api.get_opt(name)).await.expect("pod read").is_some()
    }

    /// Stops the sandbox and kills its pods.
    pub async fn stop(self) {
        self.sandbox.shutdown().await;
    }
}

/// Helper options for `ns/claim` with the test image.
pub fn helper_options(ns: &str, claim: &str, mode: HelperMode, job: &str) -> HelperPodOptions {
    let claim = PvcRef::parse(&format!("{ns}/{claim}")).expect("claim reference");
    let mut opts = HelperPodOptions::new(job, claim, mode, IMAGE);
    opts.active_deadline_seconds = 600;
    opts.instance = INSTANCE.into();
    opts
}

/// The nkvm instance the tests' helpers belong to.
pub const INSTANCE: &str = "test-instance";

/// Awaits `f` for at most 60 s (a hung call fails the test instead of hanging it).
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("finished within 60 s")
}

/// What the writer puts in the claim (`WRITE_FILES` and `expected_files` must agree).
const WRITE_FILES: &str = r#"set -e
mkdir -p /data/docs/deep
printf 'hello\n' > /data/hello.txt
yes 'nkvm backs up volumes' | head -c 3000000 > /data/docs/big.txt
head -c 100000 /dev/zero | tr '\000' '\377' > /data/docs/deep/ff.bin
: > /data/empty
ln -s hello.txt /data/link
chown 1234:5678 /data/hello.txt
chmod 640 /data/hello.txt
chmod 700 /data/docs/deep
"#;

/// One entry of an archive, as the tests compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with its permission bits.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Owner uid.
        uid: u64,
        /// Owner gid.
        gid: u64,
        /// Content.
        content: Vec<u8>,
    },
    /// A symlink.
    Link {
        /// Target.
        target: String,
    },
}

/// The files the writer makes, keyed by path as `tar` in `/data` names them.
pub fn expected_files() -> BTreeMap<String, Entry> {
    let file = |mode, uid, gid, content: Vec<u8>| Entry::File {
        mode,
        uid,
        gid,
        content,
    };
    let big: Vec<u8> = b"nkvm backs up volumes\n"
        .iter()
        .copied()
        .cycle()
        .take(3_000_000)
        .collect();
    BTreeMap::from([
        ("./docs".into(), Entry::Dir { mode: 0o755 }),
        ("./docs/deep".into(), Entry::Dir { mode: 0o700 }),
        (
            "./hello.txt".into(),
            file(0o640, 1234, 5678, b"hello\n".to_vec()),
        ),
        ("./docs/big.txt".into(), file(0o644, 0, 0, big)),
        (
            "./docs/deep/ff.bin".into(),
            file(0o644, 0, 0, vec![0xff; 100_000]),
        ),
        ("./empty".into(), file(0o644, 0, 0, Vec::new())),
        (
            "./link".into(),
            Entry::Link {
                target: "hello.txt".into(),
            },
        ),
    ])
}

/// Reads an archive with the `tar` crate into entries (the top directory `./` left out).
pub fn read_archive(bytes: &[u8]) -> BTreeMap<String, Entry> {
    use std::io::Read;
    let mut archive = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("archive entries") {
        let mut entry = entry.expect("archive entry");
        let path = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        if path == "." {
            continue;
        }
        let header = entry.header().clone();
        let mode = header.mode().expect("mode") & 0o7777;
        let kind = header.entry_type();
        let value = if kind.is_dir() {
            Entry::Dir { mode }
        } else if kind.is_symlink() {
            Entry::Link {
                target: entry
                    .link_name()
                    .expect("link name")
                    .expect("a symlink has a target")
                    .to_string_lossy()
                    .into_owned(),
            }
        } else {
            let mut content = Vec::new();
            entry.read_to_end(&mut content).expect("entry content");
            Entry::File {
                mode,
                uid: header.uid().expect("uid"),
                gid: header.gid().expect("gid"),
                content,
            }
        };
        out.insert(path, value);
    }
    out
}

/// Builds an archive of `entries` (as [`read_archive`] returns them) with the `tar` crate.
pub fn build_archive(entries: &BTreeMap<String, Entry>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        match entry {
            Entry::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .expect("append dir");
            }
            Entry::File {
                mode,
                uid,
                gid,
                content,
            } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*gid);
                header.set_size(content.len() as u64);
                builder
                    .append_data(&mut header, path, content.as_slice())
                    .expect("append file");
            }
            Entry::Link { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, path, target)
                    .expect("append link");
            }
        }
    }
    builder.into_inner().expect("archive")
}
