//! Owner and consumer resolution over hand-built snapshots, one owner chain per test.

use super::*;

fn meta(ns: &str, name: &str, owner: Option<(&str, &str)>) -> Meta {
    Meta {
        name: name.into(),
        namespace: ns.into(),
        uid: format!("uid-{name}"),
        owner_references: owner
            .into_iter()
            .map(|(k, n)| OwnerRef {
                kind: k.into(),
                name: n.into(),
                controller: Some(true),
            })
            .collect(),
        labels: Default::default(),
    }
}

fn claim(ns: &str, name: &str) -> Claim {
    Claim {
        metadata: meta(ns, name, None),
        ..Default::default()
    }
}

fn pod(ns: &str, name: &str, owner: Option<(&str, &str)>, claims: &[&str]) -> PodSlim {
    PodSlim {
        metadata: meta(ns, name, owner),
        spec: PodSpecSlim {
            node_name: Some("node-a".into()),
            volumes: claims
                .iter()
                .map(|c| VolumeSlim {
                    name: format!("v-{c}"),
                    persistent_volume_claim: Some(ClaimSource {
                        claim_name: c.to_string(),
                    }),
                    ephemeral: None,
                })
                .collect(),
        },
        status: PodStatusSlim {
            phase: Some("Running".into()),
        },
    }
}

fn owner_obj(ns: &str, name: &str, owner: Option<(&str, &str)>) -> OwnerObject {
    OwnerObject {
        metadata: meta(ns, name, owner),
    }
}

fn owners(s: Snapshot) -> Vec<(String, String)> {
    resolve(s)
        .into_iter()
        .map(|r| (r.claim.metadata.name, r.owner.display()))
        .collect()
}

#[test]
fn deployment_pods_resolve_through_their_replica_set() {
    let s = Snapshot {
        claims: vec![claim("a", "data")],
        pods: vec![pod(
            "a",
            "web-1",
            Some(("ReplicaSet", "web-abc")),
            &["data"],
        )],
        replica_sets: vec![owner_obj("a", "web-abc", Some(("Deployment", "web")))],
        ..Default::default()
    };
    let r = resolve(s);
    assert_eq!(r[0].owner, Owner::new("Deployment", "web"));
    assert_eq!(
        r[0].consumers,
        vec![Consumer {
            pod: "web-1".into(),
            node: "node-a".into(),
            phase: "Running".into()
        }]
    );
}

#[test]
fn a_bare_replica_set_a_job_a_cronjob_a_daemonset_and_a_bare_pod_are_their_own_owners() {
    let s = Snapshot {
        claims: ["rs", "job", "cron", "ds", "bare"]
            .iter()
            .map(|c| claim("a", c))
            .collect(),
        pods: vec![
            pod("a", "rs-1", Some(("ReplicaSet", "lonely")), &["rs"]),
            pod("a", "job-1", Some(("Job", "once")), &["job"]),
            pod("a", "cron-1", Some(("Job", "nightly-123")), &["cron"]),
            pod("a", "ds-1", Some(("DaemonSet", "agent")), &["ds"]),
            pod("a", "bare", None, &["bare"]),
        ],
        replica_sets: vec![owner_obj("a", "lonely", None)],
        jobs: vec![
            owner_obj("a", "once", None),
            owner_obj("a", "nightly-123", Some(("CronJob", "nightly"))),
        ],
        ..Default::default()
    };
    assert_eq!(
        owners(s),
        [
            ("rs".to_string(), "ReplicaSet/lonely".to_string()),
            ("job".into(), "Job/once".into()),
            ("cron".into(), "CronJob/nightly".into()),
            ("ds".into(), "DaemonSet/agent".into()),
            ("bare".into(), "Pod/bare".into()),
        ]
    );
}

#[test]
fn statefulset_claims_resolve_with_and_without_running_pods() {
    let s = Snapshot {
        claims: vec![
            claim("a", "pgdata-db-0"),
            claim("a", "pgdata-db-1"),
            claim("a", "pgdata-dbx-0"),
        ],
        pods: vec![pod(
            "a",
            "db-0",
            Some(("StatefulSet", "db")),
            &["pgdata-db-0"],
        )],
        stateful_sets: vec![StatefulSetSlim {
            metadata: meta("a", "db", None),
            spec: StatefulSetSpecSlim {
                volume_claim_templates: vec![owner_obj("a", "pgdata", None)],
            },
        }],
        ..Default::default()
    };
    assert_eq!(
        owners(s),
        [
            ("pgdata-db-0".to_string(), "StatefulSet/db".to_string()),
            ("pgdata-db-1".into(), "StatefulSet/db".into()),
            ("pgdata-dbx-0".into(), "Unknown".into()),
        ]
    );
}

#[test]
fn shared_claims_are_multiple_and_unused_claims_unknown() {
    let s = Snapshot {
        claims: vec![
            claim("a", "shared"),
            claim("a", "idle"),
            claim("b", "shared"),
        ],
        pods: vec![
            pod("a", "x", None, &["shared"]),
            pod("a", "web-1", Some(("ReplicaSet", "web-1a")), &["shared"]),
            pod("a", "web-2", Some(("ReplicaSet", "web-1a")), &["shared"]),
        ],
        replica_sets: vec![owner_obj("a", "web-1a", Some(("Deployment", "web")))],
        ..Default::default()
    };
    let r = resolve(s);
    assert_eq!(r[0].owner.display(), "Multiple[Deployment/web,Pod/x]");
    assert_eq!(r[0].consumers.len(), 3);
    assert_eq!(r[1].owner.display(), "Unknown");
    assert_eq!(
        r[2].owner.display(),
        "Unknown",
        "a claim of the same name in another namespace is not shared"
    );
}

#[test]
fn generic_ephemeral_claims_resolve_through_their_pod() {
    let mut p = pod("a", "worker-1", Some(("ReplicaSet", "worker-9")), &[]);
    p.spec.volumes.push(VolumeSlim {
        name: "scratch".into(),
        persistent_volume_claim: None,
        ephemeral: Some(serde_json::json!({})),
    });
    let mut c = claim("a", "worker-1-scratch");
    c.metadata.owner_references = vec![OwnerRef {
        kind: "Pod".into(),
        name: "worker-1".into(),
        controller: Some(true),
    }];
    let s = Snapshot {
        claims: vec![c],
        pods: vec![p],
        replica_sets: vec![owner_obj("a", "worker-9", Some(("Deployment", "worker")))],
        ..Default::default()
    };
    assert_eq!(
        owners(s),
        [(
            "worker-1-scratch".to_string(),
            "Deployment/worker".to_string()
        )]
    );
}
