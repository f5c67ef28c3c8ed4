//! The protection dashboard (counts per state, each a list of those claims, next runs, the
//! last day's failures), a claim's page (backups across stores, the SVG chart, delete with
//! confirmation) and the Policies page (file policies read-only, UI policies created, edited
//! and deleted with the file's validation, errors next to their fields).

use crate::harness::{Ui, kubectl};
use http::StatusCode;
use nkvm_domain::{JobStatus, Stage, Trigger};
use nkvm_history::BackupRow;

fn claim(name: &str, tier: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: default, labels: {{tier: {tier}}}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    )
}

fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A finished backup row of `default/pvc` that ended `seconds` ago after running `took`.
fn row(id: &str, cluster: &str, pvc: (&str, &str), status: JobStatus, seconds: i64) -> BackupRow {
    let took = 20 + id.len() as i64;
    BackupRow {
        id: id.into(),
        cluster: cluster.into(),
        namespace: "default".into(),
        pvc: pvc.0.into(),
        pvc_uid: pvc.1.into(),
        trigger: Trigger::Schedule,
        actor: "policy:nightly".into(),
        status,
        stage: if status == JobStatus::Succeeded {
            Stage::Commit
        } else {
            Stage::HelperPod
        },
        error: if status == JobStatus::Succeeded {
            String::new()
        } else {
            "the helper pod could not be scheduled: disk on fire".into()
        },
        started_at: ago(seconds + took),
        finished_at: Some(ago(seconds)),
        bytes_read: 4096,
        bytes_stored: 1000 * (seconds as u64 % 7 + 1),
        compression: "zstd".into(),
        artifact: if status == JobStatus::Succeeded {
            format!("{cluster}/default/{}/{id}.tar.zst", pvc.0)
        } else {
            String::new()
        },
        store: "local".into(),
        ..Default::default()
    }
}

async fn uid(ui: &Ui, name: &str) -> String {
    kubectl(
        ui,
        &[
            "get",
            "pvc",
            name,
            "-n",
            "default",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )
    .await
}

/// The number a dashboard count shows.
fn count(body: &str, state: &str) -> usize {
    let marker = format!("id=\"count-{state}\"");
    let at = body.find(&marker).unwrap_or_else(|| panic!("no {marker}"));
    let rest = &body[at..];
    let n = rest.find("data-count=\"").expect("a count") + "data-count=\"".len();
    rest[n..n + rest[n..].find('"').unwrap()].parse().unwrap()
}

#[tokio::test]
async fn the_dashboard_counts_claims_by_state_and_lists_each_state_and_the_last_days_failures() {
    let ui = Ui::connected().await;
    for (name, tier) in [
        ("fresh", "db"),
        ("old", "db"),
        ("broken", "db"),
        ("new", "db"),
        ("loose", "cache"),
    ] {
        kubectl(&ui, &["apply", "-f", "-"], Some(&claim(name, tier))).await;
    }
    let client = ui.login().await;
    let created = client
        .post(
            "/policies",
            &[
                ("name", "nightly"),
                ("schedule", "0 2 * * *"),
                ("namespaces", "default"),
                ("selector", "tier=db"),
                ("notify_on", "failure"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let cluster = ui.state.session().app().unwrap().cluster().id.clone();
    let seeds = [
        ("f1", "fresh", JobStatus::Succeeded, 60),
        ("o1", "old", JobStatus::Succeeded, 3 * 86400),
        ("b1", "broken", JobStatus::Succeeded, 2 * 3600),
        ("b2", "broken", JobStatus::Failed, 3600),
    ];
    for (id, pvc, status, seconds) in seeds {
        let uid = uid(&ui, pvc).await;
        ui.history
            .record_backup(&row(id, &cluster, (pvc, &uid), status, seconds))
            .unwrap();
    }
    ui.state.refresh_inventory().await;

    let home = client.get("/").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    for (state, n) in [
        ("protected", 1),
        ("stale", 1),
        ("failing", 1),
        ("never", 1),
        ("uncovered", 1),
    ] {
        assert_eq!(count(&home.body, state), n, "{state}: {}", home.body);
    }
    assert!(home.body.contains("href=\"/claims?state=stale\""));
    assert!(home.body.contains("data-policy=\"nightly\""), "next runs");
    assert!(home.body.contains("data-backup-id=\"b2\""), "{}", home.body);
    assert!(home.body.contains("helper-pod"), "the stage");
    assert!(home.body.contains("disk on fire"), "the error");

    let stale = client.get("/claims?state=stale").await;
    assert!(
        stale.body.contains("data-pvc=\"default/old\""),
        "{}",
        stale.body
    );
    assert!(!stale.body.contains("data-pvc=\"default/fresh\""));
    let uncovered = client.get("/claims?state=uncovered").await;
    assert!(uncovered.body.contains("href=\"/claims/default/loose\""));
    let bad = client.get("/claims?state=sunny").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let volumes = client.get("/volumes").await;
    assert!(
        volumes.body.contains("href=\"/claims/default/fresh\""),
        "claim names link to their page"
    );
}

const A1: &str = "20260101T000000Z-000000a1";
const A2: &str = "20260101T000000Z-000000a2";
const A3: &str = "20260101T000000Z-000000a3";

#[tokio::test]
async fn a_claims_page_charts_its_backups_across_stores_and_deletes_one_after_confirmation() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    for (id, seconds) in [(A1, 3 * 86400), (A2, 2 * 86400), (A3, 86400)] {
        let mut r = row(id, "c1", ("data", "u1"), JobStatus::Succeeded, seconds);
        if id == A2 {
            r.store = "offsite".into();
        }
        ui.history.record_backup(&r).unwrap();
    }
    let history = client.get("/history").await;
    assert!(history.body.contains("href=\"/claims/default/data\""));

    let page = client.get("/claims/default/data").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<svg id=\"chart-size\" role=\"img\""));
    assert!(page.body.contains("<svg id=\"chart-duration\""));
    assert_eq!(
        page.body.matches("<circle").count(),
        6,
        "3 points per chart"
    );
    assert!(
        page.body
            .contains("<title id=\"chart-size-title\">Stored size of 3")
    );
    assert!(page.body.contains(": took 45s</title>"), "{}", page.body);
    assert!(page.body.contains("<td class=\"store\">offsite</td>"));
    assert!(
        page.body
            .contains(&format!("href=\"/history/{A3}/restore\""))
    );
    assert!(
        page.body
            .contains(&format!("href=\"/backups/{A3}/delete\""))
    );

    let confirm = client.get(&format!("/backups/{A3}/delete")).await;
    assert!(confirm.body.contains("id=\"confirm-delete\""));
    assert!(confirm.body.contains("cannot be restored afterwards"));
    let forged = client
        .post_raw(&format!("/backups/{A3}/delete"), "csrf=wrong", &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(ui.history.deleted(A3).unwrap().is_none());

    let deleted = client.post(&format!("/backups/{A3}/delete"), &[]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert_eq!(deleted.header("location"), "/claims/default/data");
    let mark = ui.history.deleted(A3).unwrap().expect("marked deleted");
    assert_eq!(mark.actor, "ui:admin");
    let audit = ui.history.recent_audit(3).unwrap();
    assert_eq!(audit[0].0, "backup.delete.succeeded");
    let page = client.get("/claims/default/data").await;
    assert!(!page.body.contains(&format!("data-backup-id=\"{A3}\"")));
    assert_eq!(page.body.matches("<circle").count(), 4);
    let again = client.post(&format!("/backups/{A3}/delete"), &[]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.body.contains("already deleted"), "{}", again.body);
}

/// A UI with a policy file holding policy `from-file`.
async fn with_file_policy() -> Ui {
    let ui = Ui::new().await;
    let file = ui.dir.path().join("policies.yaml");
    std::fs::write(
        &file,
        "policies:\n- name: from-file\n  schedule: \"0 2 * * *\"\n  namespaces: [shop]\n",
    )
    .unwrap();
    ui.state.policy_book().load_file(Some(&file)).unwrap();
    ui
}

#[tokio::test]
async fn a_policy_form_with_mistakes_shows_each_next_to_its_field_and_saves_nothing() {
    let ui = with_file_policy().await;
    let client = ui.login().await;
    let bad = client
        .post(
            "/policies",
            &[
                ("name", "from-file"),
                ("schedule", "0 0 2 * * *"),
                ("namespaces", "shop"),
                ("webhook", "ftp://hooks.example"),
                ("keepLast", "three"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("id=\"error-retention\""), "{}", bad.body);
    assert!(bad.body.contains("&quot;three&quot; is not a whole number"));
    let bad = client
        .post(
            "/policies",
            &[
                ("name", "from-file"),
                ("schedule", "0 0 2 * * *"),
                ("namespaces", "shop"),
                ("webhook", "ftp://hooks.example"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    for (id, text) in [
        ("error-name", "policy file"),
        ("error-schedule-timezone", "has 6 fields"),
        ("error-notify-webhook", "ftp://hooks.example"),
    ] {
        let at = bad
            .body
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id}: {}", bad.body));
        assert!(
            bad.body[at..at + 400].contains(text),
            "{id}: {}",
            &bad.body[at..]
        );
    }
    assert!(
        bad.body.contains("value=\"0 0 2 * * *\""),
        "what was typed stays"
    );

    assert_eq!(ui.state.policy_book().policies().len(), 1, "nothing saved");
}

#[tokio::test]
async fn ui_policies_are_created_edited_and_deleted_and_file_ones_stay_read_only() {
    let ui = with_file_policy().await;
    let client = ui.login().await;
    let made = client
        .post(
            "/policies",
            &[
                ("name", "often"),
                ("schedule", "*/15 * * * *"),
                ("namespaces", "shop, web"),
                ("keepLast", "3"),
                ("webhook", "https://hooks.example/nkvm"),
                ("notify_on", "always"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let shared = ui.state.policy_book().shared();
    assert_eq!(
        shared.read().unwrap().len(),
        2,
        "in force for the scheduler"
    );

    let list = client.get("/policies").await;
    assert!(list.body.contains("file (read-only)"));
    assert!(list.body.contains("href=\"/policies/often/edit\""));
    assert!(!list.body.contains("href=\"/policies/from-file/edit\""));
    assert!(list.body.contains("webhook always"));
    let edit = client.get("/policies/often/edit").await;
    assert!(edit.body.contains("value=\"*/15 * * * *\""));
    assert!(edit.body.contains("value=\"shop, web\""));
    let changed = client
        .post(
            "/policies",
            &[
                ("editing", "1"),
                ("name", "often"),
                ("schedule", "0 * * * *"),
                ("namespaces", "shop"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    let often = shared.read().unwrap()[1].clone();
    assert_eq!(often.schedule.expr(), "0 * * * *");
    assert_eq!(often.retention, None);
    let refused = client.post("/policies/from-file/delete", &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let gone = client.post("/policies/often/delete", &[]).await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert_eq!(shared.read().unwrap().len(), 1);
}
