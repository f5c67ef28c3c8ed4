//! Whether each named store takes a write right now: the probe behind `nkvm stores --check`
//! and the web UI's Stores page. A probe writes a small object, reads it back and deletes it,
//! so it proves reachability, credentials and permissions together; each probe is bounded by
//! a timeout so one unreachable store cannot hold up the others' answers.

use nkvm_store::Stores;
use serde::Serialize;
use std::time::Duration;

/// What one store's probe found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreHealth {
    /// The store's name.
    pub name: String,
    /// Its kind (`local`, `s3`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where it is, without credentials.
    pub location: String,
    /// Whether its archives are age-encrypted (to recipients the stores file names).
    pub encrypted: bool,
    /// Whether helper pods of nkvm's own image upload archives to it themselves.
    pub direct_uploads: bool,
    /// Whether the probe succeeded.
    pub ok: bool,
    /// What the probe did, or why it failed.
    pub detail: String,
    /// When the probe finished (RFC 3339, UTC).
    pub checked_at: String,
}

/// Probes every store at once, each for at most `timeout`.
pub async fn check_all(stores: &Stores, timeout: Duration) -> Vec<StoreHealth> {
    let probes = stores.all().iter().map(|named| {
        let store = named.store.clone();
        async move {
            let probed =
                tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || store.probe()))
                    .await;
            let (ok, detail) = match probed {
                Ok(Ok(Ok(location))) => (
                    true,
                    format!("wrote, read back and deleted a probe in {location}"),
                ),
                Ok(Ok(Err(e))) => (false, e.to_string()),
                Ok(Err(e)) => (false, format!("the probe panicked: {e}")),
                // The blocking probe keeps running until its own I/O gives up; its answer no
                // longer matters.
                Err(_) => (
                    false,
                    format!(
                        "no answer within {} s: the store is unreachable or too slow",
                        timeout.as_secs()
                    ),
                ),
            };
            StoreHealth {
                name: named.name.clone(),
                kind: named.kind.as_str(),
                location: named.location.clone(),
                encrypted: !named.store.age_recipients().is_empty(),
                direct_uploads: named.store.direct_uploads(),
                ok,
                detail,
                checked_at: jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
            }
        }
    });
    futures_util::future::join_all(probes).await
}
