//! Strategic merge patch, to the extent `kubectl apply`, `kubectl patch` and `kubectl label`
//! need it for built-in kinds.
//!
//! Kubernetes derives merge keys from Go struct tags; the sandbox keeps the same keys in a
//! table by field name (`containers` merge by `name`, `volumeMounts` by `mountPath`, ...).
//! Directives `$patch` (replace/delete), `$retainKeys`, `$deleteFromPrimitiveList/…` and
//! `$setElementOrder/…` are honoured; element order is not re-sorted.

use serde_json::{Map, Value};

/// The merge key of list fields that merge element-wise; other lists are replaced whole.
fn merge_key(field: &str, sample: &Value) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" if sample.get("containerPort").is_some() => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

/// Primitive lists Kubernetes merges as sets rather than replacing.
fn is_merged_primitive_list(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch to `target` in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => merge_map(t, p),
        _ => *target = strip_directives(patch),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        if let Value::Object(m) = strip_directives(&Value::Object(patch.clone())) {
            *target = m;
        }
        return;
    }
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (target.get_mut(field), v.as_array())
            {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(pm) if pm.get("$patch").and_then(Value::as_str) == Some("delete") => {
                target.remove(k);
            }
            Value::Object(pm) => match target.get_mut(k) {
                Some(Value::Object(tm)) => merge_map(tm, pm),
                _ => {
                    target.insert(k.clone(), strip_directives(v));
                }
            },
            Value::Array(pa) => {
                let merged = match target.remove(k) {
                    Some(Value::Array(ta)) => merge_list(k, ta, pa),
                    _ => merge_list(k, Vec::new(), pa),
                };
                target.insert(k.clone(), Value::Array(merged));
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        target.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
}

fn merge_list(field: &str, mut target: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .map(strip_directives)
            .collect();
    }
    if is_merged_primitive_list(field) {
        for p in patch {
            if !target.contains(p) {
                target.push(p.clone());
            }
        }
        return target;
    }
    let Some(key) = patch.first().and_then(|s| merge_key(field, s)) else {
        return patch.iter().map(strip_directives).collect();
    };
    for p in patch {
        let id = p.get(key);
        let pos = target.iter().position(|t| id.is_some() && t.get(key) == id);
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let (Some(t), Some(pm)) = (target[i].as_object_mut(), p.as_object()) {
                    merge_map(t, pm);
                }
            }
            (None, false) => target.push(strip_directives(p)),
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_other_lists_are_replaced() {
        let mut t = json!({"spec": {
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
            "tolerations": [{"key": "k"}],
        }});
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "z"}],
            "tolerations": [{"key": "j"}],
        }});
        strategic_merge(&mut t, &p);
        assert_eq!(t["spec"]["containers"][1]["image"], "z");
        assert_eq!(t["spec"]["containers"][0]["image"], "x");
        assert_eq!(t["spec"]["tolerations"], json!([{"key": "j"}]));
    }

    #[test]
    fn delete_directives_and_nulls_remove() {
        let mut t = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"volumes": [{"name": "v"}, {"name": "w"}]}});
        let p = json!({"metadata": {"labels": {"a": null}},
            "spec": {"volumes": [{"name": "v", "$patch": "delete"}]}});
        strategic_merge(&mut t, &p);
        assert_eq!(t["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(t["spec"]["volumes"], json!([{"name": "w"}]));
    }

    #[test]
    fn retain_keys_drops_fields_of_the_old_union_member() {
        let mut t =
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}});
        let p = json!({"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}});
        strategic_merge(&mut t, &p);
        assert_eq!(t, json!({"strategy": {"type": "Recreate"}}));
    }
}
