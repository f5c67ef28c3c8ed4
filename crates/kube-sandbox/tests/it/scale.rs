//! A seeded cluster (`SandboxOptions::seed`) as kubectl and kube-rs see it: the counts asked
//! for, owner chains that resolve, controllers that leave it alone, pagination that returns
//! every object once.

use crate::harness::TestCluster;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube_sandbox::SandboxOptions;
use kube_sandbox::scale::ScaleSpec;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const KINDS: &str = "pods,pvc,deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs";

async fn seeded(spec: &str) -> Option<TestCluster> {
    let c = TestCluster::start_with_options(SandboxOptions {
        seed: Some(ScaleSpec::parse(spec).expect("spec parses")),
        ..Default::default()
    })
    .await;
    // Seeding is the sandbox's; a real cluster has nothing seeded.
    c.is_sandbox().then_some(c)
}

/// Every object of `kinds` in the seeded namespaces.
async fn seeded_objects(c: &TestCluster, kinds: &str) -> Vec<Value> {
    let out = c
        .kubectl(&["get", kinds, "-A", "-o", "json"])
        .await
        .ok()
        .stdout;
    let list: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|o| str_at(o, "/metadata/namespace").starts_with("scale-"))
        .cloned()
        .collect()
}

fn str_at<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn key(o: &Value) -> (String, String, String) {
    (
        str_at(o, "/kind").to_string(),
        str_at(o, "/metadata/namespace").to_string(),
        str_at(o, "/metadata/name").to_string(),
    )
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_cluster_has_the_asked_counts_running_pods_and_bound_claims() {
    let Some(c) = seeded("namespaces=5,pvcs=40,pods=80").await else {
        return;
    };
    let pods = seeded_objects(&c, "pods").await;
    assert_eq!(pods.len(), 80);
    for p in &pods {
        assert_eq!(str_at(p, "/status/phase"), "Running", "{}", p["metadata"]);
        assert!(is_ready(p), "{}", p["metadata"]);
        assert!(
            ["node-a", "node-b"].contains(&str_at(p, "/spec/nodeName")),
            "{}",
            p["spec"]
        );
    }
    let namespaces: std::collections::BTreeSet<&str> = pods
        .iter()
        .map(|p| str_at(p, "/metadata/namespace"))
        .collect();
    assert_eq!(namespaces.len(), 5);
    let pvcs = seeded_objects(&c, "pvc").await;
    assert_eq!(pvcs.len(), 40);
    let pending = pvcs
        .iter()
        .filter(|p| str_at(p, "/status/phase") == "Pending")
        .count();
    assert!(
        pending > 0 && pending < 40,
        "some claims Pending: {pending}"
    );
    let pvs = c.kubectl(&["get", "pv", "-o", "json"]).await.ok().stdout;
    let pvs: Value = serde_json::from_str(&pvs).expect("JSON");
    let bound_to: HashMap<&str, &str> = pvs["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|pv| {
            (
                str_at(pv, "/metadata/name"),
                str_at(pv, "/spec/claimRef/uid"),
            )
        })
        .collect();
    for pvc in pvcs
        .iter()
        .filter(|p| str_at(p, "/status/phase") == "Bound")
    {
        let volume = str_at(pvc, "/spec/volumeName");
        assert_eq!(bound_to.get(volume), Some(&str_at(pvc, "/metadata/uid")));
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_owner_chains_resolve_and_controllers_leave_them_alone() {
    let Some(c) = seeded("namespaces=5,pvcs=40,pods=80").await else {
        return;
    };
    let before = seeded_objects(&c, KINDS).await;
    let by_uid: HashMap<&str, &Value> = before
        .iter()
        .map(|o| (str_at(o, "/metadata/uid"), o))
        .collect();
    let mut owner_kinds = BTreeMap::new();
    for o in &before {
        let Some(owner) = o["metadata"]["ownerReferences"].get(0) else {
            continue;
        };
        assert_eq!(owner["controller"], true, "{}", o["metadata"]);
        let target = by_uid
            .get(owner["uid"].as_str().unwrap_or(""))
            .unwrap_or_else(|| panic!("owner of {:?} exists", key(o)));
        assert_eq!(target["kind"], owner["kind"]);
        assert_eq!(target["metadata"]["name"], owner["name"]);
        *owner_kinds
            .entry((
                o["kind"].as_str().unwrap_or(""),
                target["kind"].as_str().unwrap_or(""),
            ))
            .or_insert(0) += 1;
    }
    for chain in [
        ("Pod", "ReplicaSet"),
        ("ReplicaSet", "Deployment"),
        ("Pod", "StatefulSet"),
        ("Pod", "Job"),
        ("Job", "CronJob"),
        ("Pod", "DaemonSet"),
    ] {
        assert!(
            owner_kinds.contains_key(&chain),
            "{chain:?} in {owner_kinds:?}"
        );
    }
    for rs in before.iter().filter(|o| o["kind"] == "ReplicaSet") {
        let owner = by_uid[rs["metadata"]["ownerReferences"][0]["uid"]
            .as_str()
            .unwrap_or("")];
        let hash = kube_sandbox::meta::short_hash(&owner["spec"]["template"]);
        assert_eq!(
            str_at(rs, "/metadata/name"),
            format!("{}-{hash}", str_at(owner, "/metadata/name"))
        );
    }
    // Passes run after every change and on a 500 ms tick: 2 s gives them every chance.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = seeded_objects(&c, KINDS).await;
    let versions = |objs: &[Value]| -> BTreeMap<(String, String, String), String> {
        objs.iter()
            .map(|o| (key(o), str_at(o, "/metadata/resourceVersion").to_string()))
            .collect()
    };
    assert_eq!(versions(&after), versions(&before));
    c.stop().await;
}

/// Every name of `api`, listed in pages of `limit`.
async fn names_in_pages<K>(api: &Api<K>, limit: u32) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(limit);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = tokio::time::timeout(Duration::from_secs(30), api.list(&params))
            .await
            .expect("a page within 30 s")
            .expect("list");
        assert!(limit == 0 || page.items.len() <= limit as usize);
        names.extend(page.items.iter().map(|o| {
            format!(
                "{}/{}",
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default()
            )
        }));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return names;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_returns_every_seeded_object_exactly_once() {
    let Some(c) = seeded("namespaces=5,pvcs=40,pods=80").await else {
        return;
    };
    let client = c.client().await;
    let pods: Api<Pod> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client);
    for (paged, whole) in [
        (
            names_in_pages(&pods, 7).await,
            names_in_pages(&pods, 0).await,
        ),
        (
            names_in_pages(&pvcs, 7).await,
            names_in_pages(&pvcs, 0).await,
        ),
    ] {
        let mut sorted = paged.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), paged.len(), "no object twice");
        assert_eq!(paged, whole, "pages add up to the whole list, in order");
    }
    let seeded = |names: &[String]| names.iter().filter(|n| n.starts_with("scale-")).count();
    assert_eq!(seeded(&names_in_pages(&pods, 7).await), 80);
    assert_eq!(seeded(&names_in_pages(&pvcs, 7).await), 40);
    c.stop().await;
}
