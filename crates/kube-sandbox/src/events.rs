//! Recording core/v1 Events the way kubelet and controllers do (deduplicated by reason and
//! message, with a count), so `kubectl describe` shows what happened.

use crate::cluster::Cluster;
use crate::meta;
use crate::resources::known;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// Which Event already stands for an (object uid, reason, message), so repeats bump a count.
#[derive(Default)]
pub struct EventIndex(Mutex<HashMap<(String, String, String), String>>);

/// Records (or bumps the count of) an Event about `involved`.
pub fn record(
    cluster: &Cluster,
    involved: &Value,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let store = &cluster.store;
    let ns = match meta::namespace(involved) {
        "" => "default",
        ns => ns,
    };
    let key = (
        meta::uid(involved).to_string(),
        reason.to_string(),
        message.to_string(),
    );
    let name = {
        let mut index = cluster
            .event_index
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Kubernetes names events `<object>.<hex nanoseconds>`, so names sort by time.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        index
            .entry(key)
            .or_insert_with(|| format!("{}.{nanos:x}", meta::name(involved)))
            .clone()
    };
    let now = meta::now();
    let bumped = store.modify(known::events(), ns, &name, |ev| {
        let count = ev["count"].as_i64().unwrap_or(1);
        ev["count"] = json!(count + 1);
        ev["lastTimestamp"] = json!(now);
        Ok(())
    });
    if bumped.is_ok() {
        return;
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta::name(involved),
            "namespace": meta::namespace(involved),
            "uid": meta::uid(involved),
            "resourceVersion": meta::str_at(involved, "/metadata/resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    // Losing a race with an identical event is harmless.
    let _ = store.create(known::events(), event);
}
