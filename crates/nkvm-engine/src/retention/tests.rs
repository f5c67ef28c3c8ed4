use super::*;
use crate::Settings;
use nkvm_domain::{Allowlist, Trigger};
use nkvm_history::History;
use nkvm_policy::Retention;
use nkvm_policy::file::{Context, PolicySource, PolicySpec, validate};
use std::path::Path;
use std::sync::Arc;

const DAY1: &str = "20260101T020000Z-00000001";
const DAY2: &str = "20260102T020000Z-00000002";
const DAY3: &str = "20260103T020000Z-00000003";

fn policy(name: &str, retention: Option<Retention>) -> Policy {
    let allow = Allowlist::default();
    let stores = vec!["local".to_string()];
    validate(
        PolicySpec {
            name: name.into(),
            schedule: "0 2 * * *".into(),
            namespaces: vec!["shop".into()],
            retention,
            ..Default::default()
        },
        PolicySource::File,
        &Context {
            allowlist: &allow,
            stores: &stores,
        },
    )
    .unwrap()
}

fn row(id: &str, actor: &str, finished: &str) -> BackupRow {
    BackupRow {
        id: id.into(),
        cluster: "c".into(),
        namespace: "shop".into(),
        pvc: "data".into(),
        pvc_uid: "u".into(),
        trigger: Trigger::Schedule,
        actor: actor.into(),
        status: JobStatus::Succeeded,
        started_at: finished.into(),
        finished_at: Some(finished.into()),
        compression: "zstd".into(),
        artifact: format!("c/shop/data/{id}.tar.zst"),
        ..Default::default()
    }
}

fn keep_last(n: u32) -> Option<Retention> {
    Some(Retention {
        keep_last: n,
        ..Default::default()
    })
}

/// Writes an archive and its manifest where the store's layout puts them.
fn put_archive(root: &Path, id: &str) {
    let dir = root.join("c/shop/data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{id}.tar.zst")), b"archive").unwrap();
    std::fs::write(dir.join(format!("{id}.json")), b"{}").unwrap();
}

#[test]
fn a_plan_covers_only_the_policys_own_successful_backups() {
    let mut failed = row("f", "policy:nightly", "2026-01-04T02:00:00Z");
    failed.status = JobStatus::Failed;
    failed.artifact.clear();
    let rows = vec![
        row(DAY1, "policy:nightly", "2026-01-01T02:00:00Z"),
        row(DAY2, "policy:nightly", "2026-01-02T02:00:00Z"),
        row(DAY3, "cli:me", "2026-01-03T02:00:00Z"),
        failed,
    ];
    let plan = plan_prune(
        &[policy("nightly", keep_last(1)), policy("forever", None)],
        &rows,
    );
    let summary: Vec<(&str, &str, &str)> = plan
        .items
        .iter()
        .map(|i| (i.id.as_str(), i.decision.as_str(), i.rule.as_str()))
        .collect();
    assert_eq!(
        summary,
        [(DAY2, "keep", "keepLast"), (DAY1, "delete", "")],
        "the manual backup and the failed one are not the policy's to prune"
    );
    assert_eq!(plan.keeps_everything, ["forever"]);
}

#[tokio::test]
async fn prune_deletes_exactly_what_the_plan_announced_and_marks_rows_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let history = Arc::new(History::in_memory().unwrap());
    for (id, at) in [
        (DAY1, "2026-01-01T02:00:00Z"),
        (DAY2, "2026-01-02T02:00:00Z"),
        (DAY3, "2026-01-03T02:00:00Z"),
    ] {
        history
            .record_backup(&row(id, "policy:nightly", at))
            .unwrap();
        put_archive(dir.path(), id);
    }
    let ws = Workspace::new(
        history.clone(),
        Arc::new(nkvm_store::LocalStore::new(dir.path())),
        Settings::default(),
    );
    let policies = [policy("nightly", keep_last(1))];
    let plan = ws.plan_prune(&policies).unwrap();
    let announced: Vec<&str> = plan.deletions().map(|i| i.id.as_str()).collect();
    assert_eq!(announced, [DAY2, DAY1]);
    let report = ws.prune(&plan, "policy:nightly").await;
    assert_eq!(report.deleted, announced);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let left: Vec<String> = std::fs::read_dir(dir.path().join("c/shop/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, [format!("{DAY3}.json"), format!("{DAY3}.tar.zst")]);
    assert_eq!(
        history.deleted(DAY1).unwrap().unwrap().reason,
        "retention of policy nightly"
    );
    assert!(
        history.backup(DAY1).unwrap().is_some(),
        "the row stays for audit"
    );
    let again = ws.plan_prune(&policies).unwrap();
    assert_eq!(again.deletions().count(), 0, "a second prune finds nothing");
}

#[tokio::test]
async fn deleting_by_hand_is_audited_and_refuses_unknown_or_deleted_ids() {
    let dir = tempfile::tempdir().unwrap();
    let history = Arc::new(History::in_memory().unwrap());
    history
        .record_backup(&row(DAY1, "cli:me", "2026-01-01T02:00:00Z"))
        .unwrap();
    put_archive(dir.path(), DAY1);
    let ws = Workspace::new(
        history.clone(),
        Arc::new(nkvm_store::LocalStore::new(dir.path())),
        Settings::default(),
    );
    let d = ws.delete_backup(DAY1, "cli:me", "by hand").await.unwrap();
    assert!(!d.archive_was_missing);
    assert!(
        !dir.path()
            .join(format!("c/shop/data/{DAY1}.tar.zst"))
            .exists()
    );
    let again = ws
        .delete_backup(DAY1, "cli:me", "by hand")
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already deleted"), "{again}");
    let unknown = ws
        .delete_backup("nope", "cli:me", "by hand")
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("nkvm backups"), "{unknown}");
    let audit = history.recent_audit(10).unwrap();
    assert_eq!(
        audit[0],
        (
            "backup.delete.succeeded".to_string(),
            "shop/data".to_string(),
            format!("{DAY1} (by hand)")
        ),
        "{audit:?}"
    );
    assert_eq!(audit[1].0, "backup.delete.start");
}
