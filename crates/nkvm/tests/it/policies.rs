//! Policies against the sandbox: `nkvm policies`, `policy run` (skips with reasons, retention
//! after the run), `prune --dry-run` then `prune` deleting exactly what was announced,
//! `delete`, the Lease election with real resourceVersion conflicts, and a per-minute policy
//! firing by itself under two `nkvm serve` processes, each slot once, with a leader killed
//! in between.

use crate::harness::Env;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use nkvm_engine::leader::{Elector, LeaseOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CLAIMS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: shop, labels: {backup: nightly}}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: raw, namespace: shop, labels: {backup: nightly}}\nspec: {accessModes: [ReadWriteOnce], volumeMode: Block, resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: other, namespace: shop}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";

fn policy_file(env: &Env, name: &str, schedule: &str, keep_last: u32) -> PathBuf {
    let path = env.dir.path().join(format!("{name}-{keep_last}.yaml"));
    std::fs::write(
        &path,
        format!(
            "policies:\n- name: {name}\n  schedule: \"{schedule}\"\n  namespaces: [shop]\n  selector: {{matchLabels: {{backup: nightly}}}}\n  retention: {{keepLast: {keep_last}}}\n  startingDeadlineSeconds: 50\n"
        ),
    )
    .expect("policy file");
    path
}

async fn nkvm_with_policies(env: &Env, file: &Path, args: &[&str]) -> crate::harness::Ran {
    let mut all = vec!["--policies", file.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    env.nkvm(&all).await
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn policy_runs_skip_with_reasons_prune_deletes_what_it_announced_and_the_newest_survives() {
    let env = Env::start().await;
    env.apply(None, CLAIMS).await;
    let keep2 = policy_file(&env, "nightly", "0 2 * * *", 2);
    let listed = nkvm_with_policies(&env, &keep2, &["policies", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed[0]["name"], "nightly");
    assert_eq!(listed[0]["source"], "file");
    assert_eq!(listed[0]["nextRuns"].as_array().map(Vec::len), Some(3));
    let mut pruned_by_runs = Vec::new();
    for _ in 0..3 {
        let run = nkvm_with_policies(&env, &keep2, &["policy", "run", "nightly", "-o", "json"])
            .await
            .ok()
            .json();
        let claims = run["claims"].as_array().expect("claims");
        let by_pvc = |pvc: &str| claims.iter().find(|c| c["pvc"] == pvc).cloned();
        assert_eq!(
            by_pvc("data").expect("data")["result"],
            "succeeded",
            "{run}"
        );
        let raw = by_pvc("raw").expect("raw is covered");
        assert_eq!(raw["result"], "skipped", "{run}");
        assert!(!raw["error"].as_str().unwrap_or("").is_empty(), "{run}");
        assert!(
            by_pvc("other").is_none(),
            "the selector leaves it out: {run}"
        );
        pruned_by_runs.extend(ids(&run["pruned"]["deleted"]
            .as_array()
            .map_or(Value::Null, |d| {
                Value::Array(d.iter().map(|id| serde_json::json!({"id": id})).collect())
            })));
        // Backups a second apart, so their order never rests on the random part of the id.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(
        pruned_by_runs.len(),
        1,
        "the third run's retention deleted the oldest"
    );
    let backups = env.nkvm(&["backups", "-o", "json"]).await.ok().json();
    let kept = ids(&backups);
    assert_eq!(kept.len(), 2, "{backups}");
    assert!(!kept.contains(&pruned_by_runs[0]));

    let keep1 = policy_file(&env, "nightly", "0 2 * * *", 1);
    let plan = nkvm_with_policies(&env, &keep1, &["prune", "--dry-run", "-o", "json"])
        .await
        .ok()
        .json();
    let items = plan["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{plan}");
    assert_eq!(
        (items[0]["decision"].as_str(), items[0]["rule"].as_str()),
        (Some("keep"), Some("keepLast"))
    );
    assert_eq!(items[1]["decision"], "delete");
    let newest = items[0]["id"].as_str().unwrap().to_string();
    let announced = items[1]["id"].as_str().unwrap().to_string();
    let report = nkvm_with_policies(&env, &keep1, &["prune", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(report["deleted"], serde_json::json!([announced]));
    assert_eq!(
        ids(&env.nkvm(&["backups", "-o", "json"]).await.ok().json()),
        std::slice::from_ref(&newest)
    );

    let deleted = env
        .nkvm(&["delete", &newest, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(deleted["archiveWasMissing"], false);
    assert!(ids(&env.nkvm(&["backups", "-o", "json"]).await.ok().json()).is_empty());
    let again = env.nkvm(&["delete", &newest]).await;
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already deleted"), "{again:?}");
    let files: Vec<_> = walk(&env.backups());
    assert!(
        files.iter().all(|f| !f.contains(".tar")),
        "no archive left: {files:?}"
    );
    env.stop().await;
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

fn lease_options(identity: &str) -> LeaseOptions {
    LeaseOptions {
        namespace: "default".into(),
        name: "election-test".into(),
        identity: identity.into(),
        duration: Duration::from_secs(3),
        renew_every: Duration::from_secs(1),
    }
}

async fn client(env: &Env) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(env.kubeconfig_text()).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    kube::Client::try_from(config).expect("client")
}

#[tokio::test]
async fn a_lease_has_one_holder_stale_updates_conflict_and_a_silent_leader_is_replaced() {
    lease_election_holds(Env::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_and_a_silent_leader_is_replaced_on_upstream_kubernetes() {
    if let Some(env) = Env::start_upstream().await {
        lease_election_holds(env).await;
    }
}

/// One holder at a time; an update with a stale resourceVersion conflicts; a leader that
/// goes silent is replaced after about one lease duration; a released Lease is taken at once.
async fn lease_election_holds(env: Env) {
    let client = client(&env).await;
    let mut a = Elector::new(client.clone(), lease_options("a"));
    let mut b = Elector::new(client.clone(), lease_options("b"));
    assert!(a.step().await.expect("a steps"));
    assert!(!b.step().await.expect("b steps"), "a holds it");
    assert!(a.step().await.expect("a renews"));

    let api: Api<Lease> = Api::namespaced(client.clone(), "default");
    let read = api.get("election-test").await.expect("lease");
    // A real change (an unchanged object is a no-op that keeps its resourceVersion).
    let mut changed = read.clone();
    changed
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("touched".into(), "yes".into());
    api.replace("election-test", &PostParams::default(), &changed)
        .await
        .expect("an update with the current resourceVersion");
    let stale = api
        .replace("election-test", &PostParams::default(), &read)
        .await
        .expect_err("the same resourceVersion again is stale");
    assert!(
        matches!(stale, kube::Error::Api(ref s) if s.code == 409),
        "{stale:?}"
    );

    // a goes silent: b takes over once the record went unchanged for the lease duration.
    let silent_since = Instant::now();
    let took = loop {
        if b.step().await.expect("b steps") {
            break silent_since.elapsed();
        }
        assert!(
            silent_since.elapsed() < Duration::from_secs(10),
            "b never took over"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        took >= Duration::from_secs(3),
        "not before the lease expired: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "within about one lease duration: {took:?}"
    );
    assert!(
        !a.step().await.expect("a steps"),
        "a is no longer the holder"
    );
    let held = api.get("election-test").await.expect("lease");
    let spec = held.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    b.release().await.expect("release");
    assert!(
        a.step().await.expect("a steps"),
        "a released Lease is taken at once"
    );
    env.stop().await;
}

/// A `nkvm serve` process with its own database and store, sharing the cluster.
fn serve(env: &Env, file: &Path, name: &str) -> tokio::process::Child {
    serve_with(env, file, name, &[])
}

/// [`serve`] with more environment variables.
fn serve_with(env: &Env, file: &Path, name: &str, vars: &[(&str, &Path)]) -> tokio::process::Child {
    let dir = env.dir.path().join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_nkvm"))
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .arg("--db")
        .arg(dir.join("backups.db"))
        .arg("--backup-dir")
        .arg(dir.join("backups"))
        .arg("--policies")
        .arg(file)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NKVM_ADMIN_PASSWORD", "correct horse battery staple")
        .env("NKVM_LEASE_DURATION_SECONDS", "6")
        .env("NKVM_SCHEDULER_TICK_SECONDS", "1")
        .env_remove("KUBECONFIG")
        .env_remove("NKVM_NAMESPACES")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(vars.iter().map(|(k, v)| (*k, *v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nkvm serve starts")
}

/// The slots each process ran (`policy_runs` rows with outcome `ran`).
fn ran_slots(env: &Env, name: &str) -> Vec<String> {
    let path = env.dir.path().join(name).join("backups.db");
    let Ok(db) = rusqlite::Connection::open(path) else {
        return Vec::new();
    };
    let Ok(mut stmt) =
        db.prepare("SELECT slot FROM policy_runs WHERE outcome = 'ran' ORDER BY slot")
    else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_per_minute_policy_fires_by_itself_once_per_slot_under_two_serve_processes() {
    each_slot_runs_once_under_two_serve_processes(Env::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_minute_policy_fires_once_per_slot_under_two_serve_processes_on_upstream_kubernetes()
{
    if let Some(env) = Env::start_upstream().await {
        each_slot_runs_once_under_two_serve_processes(env).await;
    }
}

/// Two `nkvm serve` processes share a per-minute policy: one runs the first slot by itself;
/// killed uncleanly, the other takes over the Lease and runs a later slot; no slot runs twice.
async fn each_slot_runs_once_under_two_serve_processes(env: Env) {
    env.apply(None, CLAIMS).await;
    let file = policy_file(&env, "minutely", "* * * * *", 5);
    let mut one = serve(&env, &file, "one");
    let mut two = serve(&env, &file, "two");
    let deadline = Instant::now() + Duration::from_secs(200);
    // Wait for the first slot, then kill whichever process ran it, uncleanly.
    let first_runner = loop {
        assert!(Instant::now() < deadline, "no slot ran by itself");
        let (a, b) = (ran_slots(&env, "one"), ran_slots(&env, "two"));
        if !a.is_empty() {
            break "one";
        }
        if !b.is_empty() {
            break "two";
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let first_slot = ran_slots(&env, first_runner)[0].clone();
    if first_runner == "one" {
        one.kill().await.expect("kill");
    } else {
        two.kill().await.expect("kill");
    }
    let survivor = if first_runner == "one" { "two" } else { "one" };
    loop {
        assert!(Instant::now() < deadline, "the survivor never ran a slot");
        if !ran_slots(&env, survivor).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (a, b) = (ran_slots(&env, first_runner), ran_slots(&env, survivor));
    let mut all: Vec<&String> = a.iter().chain(&b).collect();
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "a slot ran twice: {a:?} {b:?}");
    assert!(
        b[0] > first_slot,
        "the survivor ran a later slot: {a:?} {b:?}"
    );
    let _ = one.kill().await;
    let _ = two.kill().await;
    env.stop().await;
}

/// The clusters (history `cluster` column) of the succeeded backups of a serve process.
fn backed_up_clusters(env: &Env, name: &str) -> Vec<String> {
    let path = env.dir.path().join(name).join("backups.db");
    let Ok(db) = rusqlite::Connection::open(path) else {
        return Vec::new();
    };
    let Ok(mut stmt) = db.prepare("SELECT cluster FROM backups WHERE status = 'succeeded'") else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_policy_naming_a_remote_context_backs_up_that_cluster_under_a_lease_there() {
    let home = Env::start().await;
    let far = Env::start().await;
    far.apply(None, CLAIMS).await;
    let remote = home.dir.path().join("remote");
    std::fs::create_dir_all(&remote).expect("remote dir");
    let far_config = far.kubeconfig_text().to_string();
    std::fs::write(remote.join("far.yaml"), &far_config).expect("copy");
    let context = far_config
        .lines()
        .find_map(|l| l.strip_prefix("current-context:"))
        .expect("a current context")
        .trim()
        .trim_matches('"')
        .to_string();
    let file = home.dir.path().join("far-policy.yaml");
    std::fs::write(
        &file,
        format!(
            "policies:\n- name: far\n  schedule: \"* * * * *\"\n  namespaces: [shop]\n  selector: {{matchLabels: {{backup: nightly}}}}\n  cluster: \"{context}\"\n  startingDeadlineSeconds: 50\n"
        ),
    )
    .expect("policy file");
    let mut one = serve_with(&home, &file, "one", &[("NKVM_KUBECONFIG_DIR", &remote)]);
    let deadline = Instant::now() + Duration::from_secs(200);
    let clusters = loop {
        assert!(
            Instant::now() < deadline,
            "the far cluster's claim was never backed up"
        );
        let c = backed_up_clusters(&home, "one");
        if !c.is_empty() {
            break c;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    async fn kube_system_uid(env: &Env) -> String {
        let ran = env
            .kubectl(
                &["get", "ns", "kube-system", "-o", "jsonpath={.metadata.uid}"],
                None,
            )
            .await;
        ran.stdout.trim().to_string()
    }
    let far_id = kube_system_uid(&far).await;
    assert!(
        clusters.iter().all(|c| *c == far_id),
        "backed up {clusters:?}, far is {far_id}"
    );
    assert_ne!(far_id, kube_system_uid(&home).await);
    let leases: Api<Lease> = Api::namespaced(client(&far).await, "default");
    let names: Vec<String> = leases
        .list(&Default::default())
        .await
        .expect("leases")
        .items
        .into_iter()
        .filter_map(|l| l.metadata.name)
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("nkvm-scheduler-")),
        "the far cluster's own Lease: {names:?}"
    );
    let _ = one.kill().await;
    far.stop().await;
    home.stop().await;
}
