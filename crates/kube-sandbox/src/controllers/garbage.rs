//! The garbage collector's level-triggered half: objects whose owners are all gone are
//! deleted, as Kubernetes' garbage collector does. Deletion already cascades at delete time
//! (`api::delete_object`); this catches dependents a controller pass created, from an older
//! view, just after their owner was deleted.

use super::{Scope, list_in};
use crate::cluster::Cluster;
use crate::meta;
use crate::resources::{RESOURCES, by_kind};
use serde_json::Value;

/// Whether the owner an ownerReference names still exists with that uid.
fn owner_exists(cluster: &Cluster, namespace: &str, owner: &Value) -> bool {
    let api_version = owner["apiVersion"].as_str().unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let Some(res) = by_kind(group, owner["kind"].as_str().unwrap_or("")) else {
        // An owner of a kind the sandbox does not serve cannot be checked: keep the object.
        return true;
    };
    let ns = if res.namespaced { namespace } else { "" };
    cluster
        .store
        .get(res, ns, owner["name"].as_str().unwrap_or(""))
        .is_some_and(|o| meta::uid(&o) == owner["uid"].as_str().unwrap_or(""))
}

/// Deletes, in the namespaces of `scope`, every object all of whose owners are gone.
pub fn reconcile_in(cluster: &Cluster, scope: &Scope) {
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        let (objs, _) = list_in(&cluster.store, res, scope);
        for o in objs.iter().filter(|o| !meta::is_deleting(o)) {
            let Some(owners) = o
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
            else {
                continue;
            };
            if owners.is_empty()
                || owners
                    .iter()
                    .any(|r| owner_exists(cluster, meta::namespace(o), r))
            {
                continue;
            }
            let _ = crate::api::delete_object(
                cluster,
                res,
                meta::namespace(o),
                meta::name(o),
                None,
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::resources::by_kind;

    #[test]
    fn owner_kinds_resolve_by_group() {
        assert!(by_kind("apps", "ReplicaSet").is_some());
        assert!(by_kind("batch", "Job").is_some());
        assert!(by_kind("", "Pod").is_some());
    }
}
