//! What a pod needs before it starts, fetched from the API server with the node's identity:
//! the ConfigMaps and Secrets it refers to, ServiceAccount tokens through the TokenRequest
//! API (bound to the pod), and its claims' PersistentVolumes (hostPath or local).

use super::Node;
use crate::kubelet::sources::Sources;
use crate::kubelet::volumes::{PreparedVolume, VolumeProblem, make_dir};
use crate::meta;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The objects one pod's start reads, fetched beforehand.
pub(super) struct Snapshot {
    node: Arc<Node>,
    config_maps: HashMap<String, Arc<Value>>,
    secrets: HashMap<String, Arc<Value>>,
    /// Tokens by their projection (serialized).
    tokens: HashMap<String, String>,
    /// Claim volumes by volume name.
    claims: HashMap<String, Result<PreparedVolume, VolumeProblem>>,
}

/// Names the pod refers to, by kind.
#[derive(Default)]
struct References {
    config_maps: Vec<String>,
    secrets: Vec<String>,
    token_projections: Vec<Value>,
    claims: Vec<(String, Value)>,
}

fn references(pod: &Value) -> References {
    let mut r = References::default();
    let name = |v: &Value, key: &str| v[key].as_str().map(String::from);
    let containers = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod["spec"][l].as_array().cloned().unwrap_or_default());
    for c in containers {
        for e in c["env"].as_array().into_iter().flatten() {
            r.config_maps
                .extend(name(&e["valueFrom"]["configMapKeyRef"], "name"));
            r.secrets
                .extend(name(&e["valueFrom"]["secretKeyRef"], "name"));
        }
        for f in c["envFrom"].as_array().into_iter().flatten() {
            r.config_maps.extend(name(&f["configMapRef"], "name"));
            r.secrets.extend(name(&f["secretRef"], "name"));
        }
    }
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        r.config_maps.extend(name(&v["configMap"], "name"));
        r.secrets.extend(name(&v["secret"], "secretName"));
        if v.get("persistentVolumeClaim").is_some() {
            let vol = v["name"].as_str().unwrap_or("").to_string();
            r.claims.push((vol, v["persistentVolumeClaim"].clone()));
        }
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            r.config_maps.extend(name(&s["configMap"], "name"));
            r.secrets.extend(name(&s["secret"], "name"));
            if let Some(t) = s.get("serviceAccountToken") {
                r.token_projections.push(t.clone());
            }
        }
    }
    r
}

fn api(node: &Node, ns: Option<&str>, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = super::resource("", "v1", kind, plural);
    match ns {
        Some(ns) => Api::namespaced_with(node.client.clone(), ns, &resource),
        None => Api::all_with(node.client.clone(), &resource),
    }
}

/// Gets an object; `None` when it does not exist, an error for anything else (the node
/// authorizer may not know of the pod yet: the start is retried).
async fn get(api: &Api<DynamicObject>, name: &str) -> Result<Option<Value>, String> {
    match api.get_opt(name).await {
        Ok(o) => Ok(o.and_then(|o| serde_json::to_value(o).ok())),
        Err(e) => Err(format!("reading {name}: {e}")),
    }
}

fn not_ready(message: String) -> VolumeProblem {
    VolumeProblem {
        reason: "FailedMount",
        message,
    }
}

impl Snapshot {
    /// Fetches everything `pod` refers to.
    pub async fn fetch(node: &Arc<Node>, pod: &Value) -> Result<Snapshot, String> {
        let ns = meta::namespace(pod);
        let refs = references(pod);
        let mut snapshot = Snapshot {
            node: node.clone(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
            tokens: HashMap::new(),
            claims: HashMap::new(),
        };
        let config_maps = api(node, Some(ns), "ConfigMap", "configmaps");
        for name in refs.config_maps {
            if let Some(o) = get(&config_maps, &name).await? {
                snapshot.config_maps.insert(name, Arc::new(o));
            }
        }
        let secrets = api(node, Some(ns), "Secret", "secrets");
        for name in refs.secrets {
            if let Some(o) = get(&secrets, &name).await? {
                snapshot.secrets.insert(name, Arc::new(o));
            }
        }
        for projection in refs.token_projections {
            let token = request_token(node, pod, &projection).await?;
            snapshot.tokens.insert(projection.to_string(), token);
        }
        for (volume, source) in refs.claims {
            let prepared = claim(node, ns, &source).await?;
            snapshot.claims.insert(volume, prepared);
        }
        Ok(snapshot)
    }
}

/// A token for the pod's ServiceAccount, bound to the pod, through the TokenRequest API.
async fn request_token(node: &Node, pod: &Value, projection: &Value) -> Result<String, String> {
    let sa = match meta::str_at(pod, "/spec/serviceAccountName") {
        "" => "default",
        sa => sa,
    };
    let mut spec = json!({
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta::name(pod), "uid": meta::uid(pod)},
        "expirationSeconds": projection["expirationSeconds"].as_i64().unwrap_or(3607),
    });
    if let Some(audience) = projection["audience"].as_str() {
        spec["audiences"] = json!([audience]);
    }
    let request =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let answer: Value = api(
        node,
        Some(meta::namespace(pod)),
        "ServiceAccount",
        "serviceaccounts",
    )
    .create_subresource("token", sa, &PostParams::default(), &request)
    .await
    .map_err(|e| format!("requesting a token for serviceaccount {sa}: {e}"))?;
    answer["status"]["token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("the TokenRequest for serviceaccount {sa} returned no token"))
}

/// The host directory of a bound claim's PersistentVolume (hostPath or local).
async fn claim(
    node: &Node,
    ns: &str,
    source: &Value,
) -> Result<Result<PreparedVolume, VolumeProblem>, String> {
    let name = source["claimName"].as_str().unwrap_or("");
    let pvcs = api(
        node,
        Some(ns),
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
    );
    let Some(pvc) = get(&pvcs, name).await? else {
        return Ok(Err(not_ready(format!(
            "persistentvolumeclaim \"{name}\" not found"
        ))));
    };
    let pv_name = meta::str_at(&pvc, "/spec/volumeName");
    if pv_name.is_empty() || meta::str_at(&pvc, "/status/phase") != "Bound" {
        return Ok(Err(not_ready(format!(
            "persistentvolumeclaim \"{name}\" is not bound"
        ))));
    }
    let pvs = api(node, None, "PersistentVolume", "persistentvolumes");
    let Some(pv) = get(&pvs, pv_name).await? else {
        return Ok(Err(not_ready(format!(
            "persistentvolume \"{pv_name}\" not found"
        ))));
    };
    let path = ["/spec/hostPath/path", "/spec/local/path"]
        .iter()
        .map(|p| meta::str_at(&pv, p))
        .find(|p| !p.is_empty());
    let Some(path) = path else {
        return Ok(Err(not_ready(format!(
            "persistentvolume \"{pv_name}\" is neither hostPath nor local: the node agent mounts only those"
        ))));
    };
    let path = PathBuf::from(path);
    Ok(make_dir(&path).map(|()| PreparedVolume {
        path,
        read_only: source["readOnly"].as_bool() == Some(true),
    }))
}

impl Sources for Snapshot {
    fn image_programs(&self) -> &[crate::kubelet::programs::ImageProgram] {
        &self.node.image_programs
    }
    fn config_map(&self, _ns: &str, name: &str) -> Option<Arc<Value>> {
        self.config_maps.get(name).cloned()
    }

    fn secret(&self, _ns: &str, name: &str) -> Option<Arc<Value>> {
        self.secrets.get(name).cloned()
    }

    fn api_server(&self) -> String {
        self.node.api_address.clone()
    }

    fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.node.pod_dir(pod_uid)
    }

    fn service_account_token(&self, _pod: &Value, projection: &Value) -> Option<String> {
        self.tokens.get(&projection.to_string()).cloned()
    }

    fn claim_volume(
        &self,
        _pod: &Value,
        volume: &str,
        _source: &Value,
    ) -> Result<PreparedVolume, VolumeProblem> {
        self.claims.get(volume).cloned().unwrap_or_else(|| {
            Err(not_ready(format!(
                "volume \"{volume}\" was not resolved before the start"
            )))
        })
    }
}
