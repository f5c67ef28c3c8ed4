//! A container's environment: literal values, downward-API fields, ConfigMap and Secret
//! references, the in-cluster service variables, and `$(VAR)` expansion in command and args.

use super::sources::Sources;
use crate::meta;
use base64::Engine;
use serde_json::Value;

/// The value of a downward-API `fieldPath` for `pod`.
pub fn field_value(pod: &Value, field: &str) -> String {
    if let Some(key) = field
        .strip_prefix("metadata.labels['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return pod
            .pointer(&format!(
                "/metadata/labels/{}",
                key.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    if let Some(key) = field
        .strip_prefix("metadata.annotations['")
        .and_then(|r| r.strip_suffix("']"))
    {
        return pod
            .pointer(&format!(
                "/metadata/annotations/{}",
                key.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    let pointer = format!("/{}", field.replace('.', "/"));
    match pod.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => String::new(),
    }
}

fn key_ref(sources: &dyn Sources, ns: &str, r: &Value, secret: bool) -> Option<String> {
    let name = r["name"].as_str().unwrap_or("");
    let key = r["key"].as_str().unwrap_or("");
    if secret {
        let s = sources.secret(ns, name)?;
        let b64 = s.pointer(&format!("/data/{key}")).and_then(Value::as_str)?;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
    } else {
        let cm = sources.config_map(ns, name)?;
        cm.pointer(&format!("/data/{key}"))
            .and_then(Value::as_str)
            .map(String::from)
    }
}

/// The environment of `container` in `pod`, in Kubernetes' order (service variables, envFrom,
/// env). A missing non-optional reference is an error message for CreateContainerConfigError.
pub fn container_env(
    sources: &dyn Sources,
    pod: &Value,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    let ns = meta::namespace(pod);
    let server = sources.api_server();
    let (host, port) = server.rsplit_once(':').unwrap_or(("127.0.0.1", "443"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut env: Vec<(String, String)> = vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.into()),
        ("KUBERNETES_SERVICE_PORT".into(), port.into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.into()),
        ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
    ];
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        let (obj, secret) = if let Some(r) = from.get("configMapRef") {
            (
                sources.config_map(ns, r["name"].as_str().unwrap_or("")),
                false,
            )
        } else if let Some(r) = from.get("secretRef") {
            (sources.secret(ns, r["name"].as_str().unwrap_or("")), true)
        } else {
            continue;
        };
        let optional = from
            .pointer(if secret {
                "/secretRef/optional"
            } else {
                "/configMapRef/optional"
            })
            .and_then(Value::as_bool)
            == Some(true);
        let Some(obj) = obj else {
            if optional {
                continue;
            }
            return Err(format!(
                "{} not found",
                if secret { "secret" } else { "configmap" }
            ));
        };
        for (k, v) in obj["data"].as_object().into_iter().flatten() {
            let v = v.as_str().unwrap_or("");
            let v = if secret {
                String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .unwrap_or_default(),
                )
                .into_owned()
            } else {
                v.to_string()
            };
            env.push((format!("{prefix}{k}"), v));
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(f) = e
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            field_value(pod, f)
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            match key_ref(sources, ns, r, true) {
                Some(v) => v,
                None if r["optional"].as_bool() == Some(true) => continue,
                None => {
                    return Err(format!(
                        "secret \"{}\" not found or has no key \"{}\"",
                        r["name"].as_str().unwrap_or(""),
                        r["key"].as_str().unwrap_or("")
                    ));
                }
            }
        } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
            match key_ref(sources, ns, r, false) {
                Some(v) => v,
                None if r["optional"].as_bool() == Some(true) => continue,
                None => {
                    return Err(format!(
                        "configmap \"{}\" not found or has no key \"{}\"",
                        r["name"].as_str().unwrap_or(""),
                        r["key"].as_str().unwrap_or("")
                    ));
                }
            }
        } else {
            String::new()
        };
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    }
    Ok(env)
}

/// Expands `$(VAR)` references as Kubernetes does; `$$` escapes, unknown names stay as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        if let Some(t) = tail.strip_prefix('$') {
            out.push('$');
            rest = t;
        } else if let Some(close) = tail.strip_prefix('(').and_then(|t| t.find(')')) {
            let name = &tail[1..=close];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &tail[close + 2..];
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_replaces_known_names_and_keeps_unknown_ones() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
    }

    #[test]
    fn downward_fields_read_labels_and_paths() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app.kubernetes.io/name": "web"}}, "spec": {"nodeName": "node-a"}});
        assert_eq!(field_value(&pod, "metadata.name"), "p");
        assert_eq!(field_value(&pod, "spec.nodeName"), "node-a");
        assert_eq!(
            field_value(&pod, "metadata.labels['app.kubernetes.io/name']"),
            "web"
        );
    }
}
