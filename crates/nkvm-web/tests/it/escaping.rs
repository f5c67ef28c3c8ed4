//! Text from the cluster, the history and the operator's own input is rendered escaped: a
//! hostile name shows as text and never becomes markup.

use crate::harness::Ui;
use http::StatusCode;
use nkvm_domain::{Consumer, Owner, PvcRecord};
use nkvm_history::BackupRow;
use nkvm_web::{Snapshot, VolumeQuery};
use std::time::Duration;

const HOSTILE: &str = r#"<script>alert("pwned")</script>"><img src=x onerror=alert(1)>"#;

#[track_caller]
fn assert_escaped(body: &str) {
    assert!(
        !body.contains("<script>alert"),
        "raw script tag in:\n{body}"
    );
    assert!(!body.contains("<img src=x"), "raw img tag in:\n{body}");
    assert!(
        body.contains("&lt;script&gt;alert"),
        "the hostile text is shown escaped:\n{body}"
    );
}

#[tokio::test]
async fn a_refused_paste_names_its_hostile_user_by_position_only() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    let paste = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:1'}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: '{user}'}}\ncurrent-context: x\nusers:\n- name: '{user}'\n  user:\n    exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'touch /tmp/owned']}}\n",
        user = HOSTILE.replace('\'', "''")
    );
    let reply = client
        .post(
            "/connection/connect",
            &[("mode", "paste"), ("pasted", &paste)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let page = client.get("/connection").await;
    assert!(
        page.body.contains("exec credential plugin"),
        "the engine's refusal is shown: {}",
        page.body
    );
    assert!(page.body.contains("users[0]"), "{}", page.body);
    // Nothing of the paste is shown, not even escaped.
    assert!(!page.body.contains("pwned"), "{}", page.body);
    assert!(ui.state.session().app().is_none(), "nothing was connected");
}

#[tokio::test]
async fn a_hostile_kubeconfig_path_is_echoed_as_text() {
    let ui = Ui::new().await;
    let client = ui.login().await;
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("kubeconfig_path", &format!("/nonexistent/{HOSTILE}"))
        .finish();
    let reply = client.get(&format!("/connection/contexts?{q}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("contexts-error"));
    assert_escaped(&reply.body);
}

#[tokio::test]
async fn hostile_history_rows_render_as_text() {
    let ui = Ui::new().await;
    let id = "20261126T010203Z-00c0ffee";
    ui.history
        .record_backup(&BackupRow {
            id: id.into(),
            cluster: HOSTILE.into(),
            namespace: HOSTILE.into(),
            pvc: "data".into(),
            pvc_uid: HOSTILE.into(),
            trigger: nkvm_domain::Trigger::Cli,
            actor: HOSTILE.into(),
            status: nkvm_domain::JobStatus::Failed,
            stage: nkvm_domain::Stage::Stream,
            error: HOSTILE.into(),
            started_at: "2026-11-26T01:02:03Z".into(),
            compression: "zstd".into(),
            store: HOSTILE.into(),
            ..Default::default()
        })
        .unwrap();
    let client = ui.login().await;
    let list = client.get("/history").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains(id));
    assert_escaped(&list.body);
    let detail = client.get(&format!("/history/{id}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(
        detail.body.contains("id=\"detail-store\""),
        "the store is shown"
    );
    assert_escaped(&detail.body);
    let filtered = client
        .get(&format!(
            "/history?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("pvc", HOSTILE)
                .finish()
        ))
        .await;
    assert_escaped(&filtered.body);
}

fn hostile_record() -> PvcRecord {
    PvcRecord {
        namespace: "shop".into(),
        name: "data".into(),
        uid: "u1".into(),
        phase: HOSTILE.into(),
        capacity: HOSTILE.into(),
        storage_class: HOSTILE.into(),
        access_modes: vec![HOSTILE.into()],
        volume_mode: "Filesystem".into(),
        volume_name: String::new(),
        owner: Owner::new("Deployment", HOSTILE),
        consumers: vec![Consumer {
            pod: HOSTILE.into(),
            node: HOSTILE.into(),
            phase: "Running".into(),
        }],
        last_successful_backup: None,
        last_failed_backup: None,
        backupable: false,
        reason: HOSTILE.into(),
        labels: Default::default(),
    }
}

#[tokio::test]
async fn hostile_inventory_text_renders_as_text() {
    let ui = Ui::connected().await;
    let generation = ui.state.session().status().generation;
    ui.state.inventory().put(Snapshot::loaded(
        generation,
        vec![hostile_record()],
        Duration::ZERO,
    ));
    let client = ui.login().await;
    let page = client.get("/volumes").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("data-pvc=\"shop/data\""),
        "{}",
        page.body
    );
    assert_escaped(&page.body);
    let q = format!(
        "/volumes?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("q", HOSTILE)
            .finish()
    );
    assert_escaped(&client.get(&q).await.body);
    let _ = VolumeQuery::default();
}
