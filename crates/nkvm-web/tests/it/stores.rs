//! The Stores page and the store choice against a real S3 server (`s3s-fs`) beside the local
//! store: health from a real probe (and its failure once the server is gone), a backup sent
//! to the chosen store from the Volumes page, and the store shown in the History.

use crate::harness::{Ui, eventually, kubectl};
use http::StatusCode;
use nkvm_domain::JobStatus;
use nkvm_store::testing::S3Server;
use nkvm_store::{NamedStore, S3Store, StoreKind};
use std::sync::Arc;

const CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: default}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";

/// The `data-health` of store `name`'s row on the Stores page.
fn health_of(page: &str, name: &str) -> String {
    let row = format!("data-store=\"{name}\" data-health=\"");
    let at = page
        .find(&row)
        .unwrap_or_else(|| panic!("no row for {name}: {page}"))
        + row.len();
    page[at..].split('"').next().unwrap_or("").to_string()
}

#[tokio::test]
async fn stores_show_their_health_and_a_backup_goes_to_the_store_chosen_on_the_volumes_page() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scratch = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(&scratch.path().join("s3"));
    let settings = server.settings("offsite", "prod/");
    let s3 = S3Store::new(&settings, tokio::runtime::Handle::current()).expect("an S3 store");
    let ui = Ui::connected_with_stores(vec![NamedStore {
        name: "offsite".into(),
        kind: StoreKind::S3,
        location: format!("s3://nkvm/prod/ at {}", server.endpoint()),
        store: Arc::new(s3),
    }])
    .await;
    kubectl(&ui, &["apply", "-f", "-"], Some(CLAIM)).await;
    let client = ui.login().await;

    let stores = client.get("/stores").await;
    assert_eq!(stores.status, StatusCode::OK);
    assert_eq!(health_of(&stores.body, "local"), "ok", "{}", stores.body);
    assert_eq!(health_of(&stores.body, "offsite"), "ok", "{}", stores.body);
    assert!(
        !stores.body.contains(settings_secret()),
        "no credentials on the page"
    );

    ui.state.refresh_inventory().await;
    let volumes = client.get("/volumes").await;
    assert!(
        volumes
            .body
            .contains(r#"<option value="offsite">offsite</option>"#),
        "the store choice lists the S3 store: {}",
        volumes.body
    );
    let unknown = client
        .post("/backups", &[("pvc", "default/data"), ("store", "nowhere")])
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body.contains("nowhere"), "{}", unknown.body);

    let submitted = client
        .post("/backups", &[("pvc", "default/data"), ("store", "offsite")])
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::SEE_OTHER,
        "{}",
        submitted.body
    );
    eventually("the backup to offsite finishes", async || {
        ui.state.jobs().get(1).is_some_and(|j| {
            j.items[0].status != JobStatus::Running && j.items[0].status != JobStatus::Queued
        })
    })
    .await;
    let item = ui.state.jobs().get(1).unwrap().items[0].clone();
    assert_eq!(item.status, JobStatus::Succeeded, "{item:?}");
    let row = ui.history.backup(&item.id).unwrap().unwrap();
    assert_eq!(row.store, "offsite");
    assert!(
        server
            .objects()
            .iter()
            .any(|o| o.starts_with("prod/") && o.ends_with(&format!("{}.tar.zst", item.id))),
        "the archive is in the bucket: {:?}",
        server.objects()
    );
    let history = client.get("/history").await;
    assert!(
        history.body.contains(r#"<td class="store">offsite</td>"#),
        "{}",
        history.body
    );
    let details = client.get(&format!("/history/{}", item.id)).await;
    assert!(
        details
            .body
            .contains(r#"<dd id="detail-store">offsite</dd>"#),
        "{}",
        details.body
    );
    assert!(
        ["agent", "tar"].contains(&row.data_path.as_str()),
        "the row records the data path the backup took: {row:?}"
    );
    assert!(
        details.body.contains(&format!(
            r#"<dd id="detail-data-path">{}</dd>"#,
            row.data_path
        )),
        "{}",
        details.body
    );

    // Copied back to local from the backup's page, as a job; the page then lists the copy.
    assert!(
        details
            .body
            .contains(r#"<option value="local">local</option>"#),
        "local is offered as a copy target: {}",
        details.body
    );
    let copied = client
        .post(&format!("/history/{}/copy", item.id), &[("to", "local")])
        .await;
    assert_eq!(copied.status, StatusCode::SEE_OTHER, "{}", copied.body);
    eventually("the copy finishes", async || {
        ui.state
            .jobs()
            .get(2)
            .is_some_and(|j| j.items[0].status == JobStatus::Succeeded)
    })
    .await;
    let details = client.get(&format!("/history/{}", item.id)).await;
    assert!(
        details.body.contains(r#"data-store="local""#)
            && !details.body.contains("id=\"copy-form\""),
        "the copy is listed and no target is left: {}",
        details.body
    );
    let refused = client
        .post(&format!("/history/{}/copy", item.id), &[("to", "nowhere")])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    // Counted on the page (the last probe is still fresh), then probed again on request.
    let stores = client.get("/stores").await;
    assert!(
        stores.body.contains("<td class=\"num\">1</td>"),
        "{}",
        stores.body
    );
    server.kill();
    let checked = client.post("/stores/check", &[]).await;
    assert_eq!(checked.status, StatusCode::SEE_OTHER, "{}", checked.body);
    let stores = client.get("/stores").await;
    assert_eq!(
        health_of(&stores.body, "offsite"),
        "failed",
        "{}",
        stores.body
    );
    assert_eq!(health_of(&stores.body, "local"), "ok", "{}", stores.body);
}

/// The test server's secret key, which must never appear on a page.
fn settings_secret() -> &'static str {
    nkvm_store::testing::SECRET_KEY
}
