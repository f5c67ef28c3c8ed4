//! The REST surface: routes every request to discovery, CRUD, list/watch, logs or exec, and
//! turns every failure into a `metav1.Status` body.

use crate::admission;
use crate::auth::{self, Attributes, Identity};
use crate::cluster::Cluster;
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::patch;
use crate::resources::{self, ResourceInfo, known};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, WatchEvent};
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted (the real API server's limit is about 3 MiB).
const MAX_BODY: usize = 4 << 20;

/// What a resource path names.
#[derive(Debug)]
pub struct Target {
    /// The kind.
    pub res: &'static ResourceInfo,
    /// Namespace from the path (`None` for cluster-scoped or all-namespaces).
    pub namespace: Option<String>,
    /// Object name, if the path names one.
    pub name: Option<String>,
    /// Subresource (`status`, `log`, `exec`, ...).
    pub sub: Option<String>,
}

/// Query parameters, keeping repeated keys (exec's `command`).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string (a malformed one reads as empty).
    pub fn parse(q: Option<&str>) -> Self {
        Query(serde_urlencoded::from_str(q.unwrap_or("")).unwrap_or_default())
    }
    /// First value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// All values of `key`.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
    /// Whether `key` is `true` or `1`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.to_status())
    }
}

fn ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

/// Paths anyone may read without credentials (as `system:public-info-viewer` grants).
const PUBLIC_PATHS: &[&str] = &["/version", "/version/", "/healthz", "/livez", "/readyz"];

/// The single entry point for every request: authenticate, authorize, then route.
pub async fn handle(State(cluster): State<Arc<Cluster>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let result = match auth::authenticate(
        &cluster,
        req.headers(),
        PUBLIC_PATHS.contains(&path.as_str()),
    ) {
        Ok(identity) => route(&cluster, &identity, &path, query, req).await,
        Err(e) => Err(e),
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(%path, status = response.status().as_u16(), "request");
    response
}

/// The Kubernetes authorization verb of a request on a resource path.
fn verb(method: &Method, t: &Target, query: &Query) -> &'static str {
    match *method {
        // Kubernetes 1.35+ checks `create` on pods/exec for WebSocket exec (a GET).
        Method::GET if t.sub.as_deref() == Some("exec") => "create",
        Method::GET | Method::HEAD if query.flag("watch") => "watch",
        Method::GET | Method::HEAD if t.name.is_none() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// What a resource request asks for, in RBAC terms.
pub fn resource_attributes(method: &Method, t: &Target, query: &Query) -> Attributes {
    Attributes {
        verb: verb(method, t, query).to_string(),
        api_group: t.res.group.to_string(),
        resource: t.res.plural.to_string(),
        subresource: t.sub.clone().unwrap_or_default(),
        namespace: t.namespace.clone().unwrap_or_default(),
        name: t.name.clone().unwrap_or_default(),
        path: String::new(),
        resource_request: true,
    }
}

async fn route(
    cluster: &Arc<Cluster>,
    identity: &Identity,
    path: &str,
    query: Query,
    req: Request,
) -> ApiResult<Response> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method().clone();
    if let Some(response) = non_resource(cluster, &segs) {
        auth::require(
            cluster,
            identity,
            &Attributes::non_resource(method.as_str(), path),
        )?;
        return response;
    }
    if let Some(kind) = auth::reviews::review_kind(&segs) {
        let attrs = auth::reviews::attributes(kind);
        auth::require(cluster, identity, &attrs)?;
        let (ct, bytes) = read_body(req).await?;
        let body = decode(&ct, &bytes)?;
        return auth::reviews::handle(cluster, identity, kind, body)
            .map(|v| json_response(StatusCode::CREATED, &v));
    }
    if segs == ["sandbox", "faults"] {
        return sandbox_faults(cluster, identity, &method, path, req).await;
    }
    let target = parse_target(&segs)?;
    let attrs = resource_attributes(&method, &target, &query);
    auth::require(cluster, identity, &attrs)?;
    cluster.faults.api_error(&attrs)?;
    dispatch(cluster, target, method, query, req).await
}

/// Discovery, OpenAPI and health endpoints; `None` for resource paths.
fn non_resource(cluster: &Cluster, segs: &[&str]) -> Option<ApiResult<Response>> {
    let found = |v: Option<Value>| Some(v.map(|v| ok(&v)).ok_or_else(ApiError::path_not_found));
    match segs {
        ["version"] => Some(Ok(ok(&discovery::version()))),
        ["healthz" | "livez" | "readyz"] => Some(Ok("ok".into_response())),
        ["api"] => Some(Ok(ok(&discovery::core_versions(
            &cluster.config.server_address,
        )))),
        ["apis"] => Some(Ok(ok(&discovery::group_list()))),
        ["apis", g] => found(discovery::group(g)),
        ["api", v] => found(discovery::resource_list("", v)),
        ["apis", g, v] => found(discovery::resource_list(g, v)),
        ["openapi", "v3"] => Some(Ok(ok(&discovery::openapi_v3_index()))),
        // An empty protobuf message is a valid, empty OpenAPI v2 document. kubectl reads it
        // only for kinds the v3 documents lack, and then says "no matches for kind", as it
        // does against a real server.
        ["openapi", "v2"] => Some(Ok((
            [(header::CONTENT_TYPE, discovery::OPENAPI_V2_PROTOBUF)],
            Bytes::new(),
        )
            .into_response())),
        ["openapi", "v3", rest @ ..] => found(discovery::openapi_v3_group(&rest.join("/"))),
        _ => None,
    }
}

/// Splits `/api/v1/...` or `/apis/g/v/...` into a [`Target`].
pub fn parse_target(segs: &[&str]) -> ApiResult<Target> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    let lookup = |plural: &str| {
        resources::by_plural(group, version, plural).ok_or_else(ApiError::path_not_found)
    };
    let (namespace, rest) = match rest {
        // `/api/v1/namespaces/{ns}/{plural}...` unless the path is about the namespace itself.
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::path_not_found()),
    };
    let res = lookup(plural)?;
    if namespace.is_some() && !res.namespaced {
        return Err(ApiError::path_not_found());
    }
    Ok(Target {
        res,
        namespace,
        name,
        sub,
    })
}

async fn dispatch(
    cluster: &Arc<Cluster>,
    t: Target,
    method: Method,
    query: Query,
    req: Request,
) -> ApiResult<Response> {
    let sub = t.sub.clone();
    match (method.clone(), t.name.is_some(), sub.as_deref()) {
        (Method::GET, true, Some("exec")) => {
            let ws = WebSocketUpgrade::from_request(req, &())
                .await
                .map_err(|_| ApiError::bad_request("Upgrade request required"))?;
            crate::exec::upgrade(cluster.clone(), t, query, ws)
        }
        (Method::POST, true, Some("exec")) => Err(ApiError::bad_request(
            "Upgrade request required: the sandbox serves exec over WebSocket only",
        )),
        (Method::GET, true, Some("log")) => {
            crate::kubelet::logs::handle(cluster.clone(), &t, &query).await
        }
        (Method::GET, false, None) if query.flag("watch") => watch(cluster, &t, &query),
        (Method::GET, false, None) => list(cluster, &t, &query),
        (Method::GET, true, None | Some("status")) => {
            let (ns, name) = object_key(&t);
            cluster
                .store
                .get(t.res, &ns, &name)
                .map(|o| ok(&o))
                .ok_or_else(|| ApiError::not_found(&t.res.qualified_plural(), &name))
        }
        (Method::GET, true, Some("scale")) => scale_get(cluster, &t),
        (Method::POST, false, None) => {
            let (ct, bytes) = read_body(req).await?;
            create(cluster, &t, &query, &ct, &bytes).map(|o| json_response(StatusCode::CREATED, &o))
        }
        (Method::POST, true, Some("token")) if t.res.plural == "serviceaccounts" => {
            let (ct, bytes) = read_body(req).await?;
            let (ns, name) = object_key(&t);
            auth::tokens::request(cluster, &ns, &name, &decode(&ct, &bytes)?)
                .map(|v| json_response(StatusCode::CREATED, &v))
        }
        (Method::POST, true, Some("binding")) => {
            let (ct, bytes) = read_body(req).await?;
            bind_pod(cluster, &t, &decode(&ct, &bytes)?)
                .map(|v| json_response(StatusCode::CREATED, &v))
        }
        (Method::PUT, true, None | Some("status")) => {
            let (ct, bytes) = read_body(req).await?;
            let obj = decode(&ct, &bytes)?;
            update(cluster, &t, obj).map(|o| ok(&o))
        }
        (Method::PATCH, true, None | Some("status")) => {
            let (ct, bytes) = read_body(req).await?;
            patch_object(cluster, &t, &ct, &bytes).map(|o| ok(&o))
        }
        (Method::PATCH | Method::PUT, true, Some("scale")) => {
            let (ct, bytes) = read_body(req).await?;
            scale_set(cluster, &t, &method, &ct, &bytes)
        }
        (Method::DELETE, true, None) => {
            let (ct, bytes) = read_body(req).await?;
            let opts = if bytes.is_empty() {
                json!({})
            } else {
                decode(&ct, &bytes)?
            };
            delete(cluster, &t, &query, &opts).map(|o| ok(&o))
        }
        (Method::DELETE, false, None) => delete_collection(cluster, &t, &query),
        _ => Err(ApiError::method_not_supported(
            &t.res.qualified_plural(),
            method.as_str(),
        )),
    }
}

/// Namespace and name of the object a target names.
fn object_key(t: &Target) -> (String, String) {
    (
        t.namespace.clone().unwrap_or_default(),
        t.name.clone().unwrap_or_default(),
    )
}

async fn read_body(req: Request) -> ApiResult<(String, Bytes)> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "request body too large or unreadable (limit {MAX_BODY} bytes): {e}"
            ))
        })?;
    Ok((ct, bytes))
}

/// Decodes a JSON or YAML body into an object.
fn decode(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let v: Value = match mime {
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?,
        ""
        | "application/json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json"
        | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        // kubectl 1.31+ sends its `create <generator>` bodies as Kubernetes protobuf.
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode_request(body)
            .map_err(|e| ApiError::bad_request(format!("decoding the protobuf body: {e}")))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(v)
}

/// Fills in and checks `apiVersion` and `kind` of a POST or PUT body against its endpoint.
///
/// kube-apiserver decodes these bodies with the endpoint's group/version/kind as the default
/// (`gvkWithDefaults` in apimachinery's JSON serializer): a missing `kind` is the endpoint's, a
/// missing `apiVersion` is the endpoint's group and version, and only a present value that
/// differs is refused (400). Clients rely on that: the official Python client leaves both out
/// of objects a program builds without them (`client.V1Pod(metadata=..., spec=...)`).
fn settle_type(res: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    };
    let kind = type_field(m, "kind")?.unwrap_or(res.kind).to_string();
    let api_version = match type_field(m, "apiVersion")? {
        None => res.api_version(),
        Some(v) => match v.split_once('/') {
            // A group without a version takes the endpoint's version when the group is the
            // endpoint's, as the upstream decoder does.
            Some((group, "")) if group == res.group => res.api_version(),
            _ => v.to_string(),
        },
    };
    if kind != res.kind {
        // kube-apiserver's words: it decodes the object, then fails to convert it to the
        // endpoint's internal type (named by the group's package, `core` for the legacy one).
        let version = api_version.rsplit('/').next().unwrap_or(&api_version);
        let package = match res.group {
            "" => "core",
            group => group.split('.').next().unwrap_or(group),
        };
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {expected}: converting ({version}.{kind}) to ({package}.{expected}): unknown conversion",
            expected = res.kind
        )));
    }
    if api_version != res.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    m.insert("kind".into(), json!(kind));
    m.insert("apiVersion".into(), json!(api_version));
    Ok(())
}

/// A type field of a body: `None` when absent, null or empty; an error when not a string.
fn type_field<'a>(
    m: &'a serde_json::Map<String, Value>,
    field: &str,
) -> ApiResult<Option<&'a str>> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {field} must be a string, not {}",
            truncate(&other.to_string())
        ))),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The namespace a write lands in: the URL's, which the body may repeat but not contradict.
fn settle_namespace(t: &Target, obj: &mut Value) -> ApiResult<()> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if !t.res.namespaced {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        return Ok(());
    }
    let url_ns = t.namespace.clone().ok_or_else(ApiError::path_not_found)?;
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != url_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            obj["metadata"]["namespace"] = json!(url_ns);
            Ok(())
        }
    }
}

fn require_namespace_open(cluster: &Cluster, ns: &str) -> ApiResult<()> {
    match cluster.store.get(known::namespaces(), "", ns) {
        None => Err(ApiError::not_found("namespaces", ns)),
        Some(n) if meta::is_deleting(&n) => Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        ))),
        Some(_) => Ok(()),
    }
}

/// The name of the default StorageClass, if one is marked.
pub fn default_storage_class(cluster: &Cluster) -> Option<String> {
    let (classes, _) = cluster.store.list(known::storage_classes(), None, None);
    classes
        .iter()
        .find(|c| {
            meta::str_at(
                c,
                "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
            ) == "true"
        })
        .map(|c| meta::name(c).to_string())
}

/// Creates an object as the API server would: type check, namespace, generateName, admission.
pub fn create(
    cluster: &Cluster,
    t: &Target,
    query: &Query,
    ct: &str,
    body: &[u8],
) -> ApiResult<Value> {
    if t.name.is_some() || t.sub.is_some() {
        return Err(ApiError::method_not_supported(
            &t.res.qualified_plural(),
            "create",
        ));
    }
    let obj = decode(ct, body)?;
    let created = create_object(
        cluster,
        t.res,
        t.namespace.as_deref(),
        obj,
        query.get("dryRun") == Some("All"),
    )?;
    Ok((*created).clone())
}

/// The create path shared by the REST handler and controllers.
pub fn create_object(
    cluster: &Cluster,
    res: &'static ResourceInfo,
    namespace: Option<&str>,
    mut obj: Value,
    dry_run: bool,
) -> ApiResult<Arc<Value>> {
    settle_type(res, &mut obj)?;
    let t = Target {
        res,
        namespace: namespace.map(String::from),
        name: None,
        sub: None,
    };
    settle_namespace(&t, &mut obj)?;
    // As Kubernetes' create strategies do: status is the controllers' to write, not the
    // creator's (admission sets the initial status where a kind has one).
    if res.has_status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for server_owned in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "managedFields",
        ] {
            m.remove(server_owned);
        }
    }
    if meta::name(&obj).is_empty()
        && let Some(prefix) = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
    {
        let name = format!("{prefix}{}", meta::random_suffix(5));
        obj["metadata"]["name"] = json!(name);
    }
    if res.namespaced {
        require_namespace_open(cluster, meta::namespace(&obj))?;
    }
    admission::validate(res, &obj)?;
    admission::normalize(res, &mut obj);
    let default_class = if res.plural == "persistentvolumeclaims" {
        default_storage_class(cluster)
    } else {
        None
    };
    admission::default_on_create(res, &mut obj, default_class.as_deref());
    if dry_run {
        if cluster
            .store
            .get(res, meta::namespace(&obj), meta::name(&obj))
            .is_some()
        {
            return Err(ApiError::already_exists(
                &res.qualified_plural(),
                meta::name(&obj),
            ));
        }
        return Ok(Arc::new(obj));
    }
    if res.plural == "pods" {
        service_account_admission(cluster, &mut obj)?;
    }
    let created = cluster.store.create(res, obj)?;
    if res.plural == "namespaces" {
        // Pods may follow their namespace at once; their ServiceAccount must already exist.
        crate::controllers::namespaces::populate(cluster, meta::name(&created));
    }
    Ok(created)
}

/// Where Kubernetes mounts a pod's ServiceAccount credentials.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the ServiceAccount admission plugin does: the pod's ServiceAccount must exist, and
/// unless automounting is off (pod or ServiceAccount), a projected `kube-api-access-*` volume
/// (token, CA, namespace) is mounted into every container.
fn service_account_admission(cluster: &Cluster, pod: &mut Value) -> ApiResult<()> {
    let ns = meta::namespace(pod).to_string();
    let sa_name = meta::str_at(pod, "/spec/serviceAccountName").to_string();
    let Some(sa) = cluster.store.get(known::service_accounts(), &ns, &sa_name) else {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found",
            meta::name(pod)
        )));
    };
    pod["spec"]["serviceAccount"] = json!(sa_name);
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    let containers = ["initContainers", "containers"];
    let already_mounted = containers.iter().any(|l| {
        pod["spec"][l].as_array().into_iter().flatten().any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == SERVICE_ACCOUNT_MOUNT)
        })
    });
    if !automount || already_mounted {
        return Ok(());
    }
    let volume = format!("kube-api-access-{}", meta::random_suffix(5));
    if !pod["spec"]["volumes"].is_array() {
        pod["spec"]["volumes"] = json!([]);
    }
    if let Some(v) = pod["spec"]["volumes"].as_array_mut() {
        v.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}}));
    }
    for list in containers {
        for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            if let Some(m) = c["volumeMounts"].as_array_mut() {
                m.push(
                    json!({"name": volume, "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": true}),
                );
            }
        }
    }
    Ok(())
}

fn update(cluster: &Cluster, t: &Target, mut obj: Value) -> ApiResult<Value> {
    settle_type(t.res, &mut obj)?;
    settle_namespace(t, &mut obj)?;
    let (ns, name) = object_key(t);
    if meta::name(&obj) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&obj)
        )));
    }
    let current = cluster
        .store
        .get(t.res, &ns, &name)
        .ok_or_else(|| ApiError::not_found(&t.res.qualified_plural(), &name))?;
    let expected = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(String::from);
    let mut merged = merge_subresource(t, &current, obj);
    admission::validate(t.res, &merged)?;
    admission::normalize(t.res, &mut merged);
    Ok((*cluster.store.update(t.res, merged, expected.as_deref())?).clone())
}

/// A write to `/status` changes only status; a write to the main resource keeps status.
fn merge_subresource(t: &Target, current: &Value, mut incoming: Value) -> Value {
    if !t.res.has_status {
        return incoming;
    }
    if t.sub.as_deref() == Some("status") {
        let mut out = current.clone();
        out["status"] = incoming["status"].take();
        if let Some(rv) = incoming.pointer("/metadata/resourceVersion") {
            out["metadata"]["resourceVersion"] = rv.clone();
        }
        out
    } else {
        match current.get("status") {
            Some(s) => incoming["status"] = s.clone(),
            None => {
                if let Some(m) = incoming.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        incoming
    }
}

fn patch_object(cluster: &Cluster, t: &Target, ct: &str, body: &[u8]) -> ApiResult<Value> {
    let (ns, name) = object_key(t);
    let current = cluster
        .store
        .get(t.res, &ns, &name)
        .ok_or_else(|| ApiError::not_found(&t.res.qualified_plural(), &name))?;
    let mime = ct.split(';').next().unwrap_or("").trim();
    let p = decode(ct, body)?;
    let mut next = (*current).clone();
    match mime {
        "application/merge-patch+json" => json_patch::merge(&mut next, &p),
        "application/strategic-merge-patch+json" => patch::strategic_merge(&mut next, &p),
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(p.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut next, &ops).map_err(|e| {
                ApiError::invalid(
                    t.res.kind,
                    t.res.group,
                    &name,
                    &[("patch".into(), e.to_string())],
                )
            })?;
        }
        "application/apply-patch+yaml" => patch::strategic_merge(&mut next, &p),
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    let expected = p
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(String::from);
    for field in ["name", "namespace", "uid"] {
        next["metadata"][field] = current["metadata"][field].clone();
    }
    if !t.res.namespaced
        && let Some(m) = next["metadata"].as_object_mut()
    {
        m.remove("namespace");
    }
    let mut merged = merge_subresource(t, &current, next);
    admission::validate(t.res, &merged)?;
    admission::normalize(t.res, &mut merged);
    Ok((*cluster.store.update(t.res, merged, expected.as_deref())?).clone())
}

fn scale_get(cluster: &Cluster, t: &Target) -> ApiResult<Response> {
    let (ns, name) = object_key(t);
    let obj = cluster
        .store
        .get(t.res, &ns, &name)
        .ok_or_else(|| ApiError::not_found(&t.res.qualified_plural(), &name))?;
    Ok(ok(&scale_of(&obj)))
}

fn scale_of(obj: &Value) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta::name(obj), "namespace": meta::namespace(obj), "uid": meta::uid(obj),
                     "resourceVersion": meta::str_at(obj, "/metadata/resourceVersion")},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0))},
    })
}

fn scale_set(
    cluster: &Cluster,
    t: &Target,
    method: &Method,
    ct: &str,
    body: &[u8],
) -> ApiResult<Response> {
    let (ns, name) = object_key(t);
    let p = decode(ct, body)?;
    let updated = cluster.store.modify(t.res, &ns, &name, |obj| {
        let mut scale = scale_of(obj);
        if method == Method::PUT {
            scale = p.clone();
        } else {
            json_patch::merge(&mut scale, &p);
        }
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        obj["spec"]["replicas"] = json!(replicas);
        Ok(())
    })?;
    Ok(ok(&scale_of(&updated)))
}

fn bind_pod(cluster: &Cluster, t: &Target, binding: &Value) -> ApiResult<Value> {
    let (ns, name) = object_key(t);
    let node = meta::str_at(binding, "/target/name").to_string();
    cluster.store.modify(known::pods(), &ns, &name, |pod| {
        if !meta::str_at(pod, "/spec/nodeName").is_empty() {
            return Err(ApiError::conflict("pods", &name));
        }
        pod["spec"]["nodeName"] = json!(node);
        Ok(())
    })?;
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

fn selectors(query: &Query) -> ApiResult<(LabelSelector, FieldSelector)> {
    Ok((
        LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))?,
    ))
}

fn list(cluster: &Cluster, t: &Target, query: &Query) -> ApiResult<Response> {
    let (labels, fields) = selectors(query)?;
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token)?),
        None => None,
    };
    let ns = t
        .namespace
        .as_deref()
        .or(fields.required("metadata.namespace"));
    let (all, rv) = cluster.store.list(t.res, ns, after.as_ref());
    let mut items = Vec::new();
    let mut next = None;
    let mut iter = all
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o));
    for o in iter.by_ref() {
        if items.len() == limit {
            next = Some(o);
            break;
        }
        items.push(o.clone());
    }
    let mut md = json!({"resourceVersion": rv.to_string()});
    if next.is_some() {
        let last = items.last().expect("limit is at least one");
        md["continue"] = json!(encode_continue(meta::namespace(last), meta::name(last)));
        md["remainingItemCount"] = json!(1 + iter.count());
    }
    // Serialized by reference: building a `Value` of the page would deep-copy every object.
    #[derive(serde::Serialize)]
    struct ListBody<'a> {
        kind: String,
        #[serde(rename = "apiVersion")]
        api_version: String,
        metadata: Value,
        items: Vec<&'a Value>,
    }
    let body = ListBody {
        kind: t.res.list_kind(),
        api_version: t.res.api_version(),
        metadata: md,
        items: items.iter().map(|o| o.as_ref()).collect(),
    };
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| ApiError::internal(format!("encoding the list: {e}")))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response())
}

fn encode_continue(ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([ns, name]).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(String, String)> {
    let bad = || {
        ApiError::bad_request(format!(
            "invalid continue token {token:?}; re-list without it"
        ))
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    serde_json::from_slice::<(String, String)>(&raw).map_err(|_| bad())
}

/// How a watch filter sees one event: the type to send, or nothing.
fn filtered_event_type(ev: &WatchEvent, matches: &dyn Fn(&Value) -> bool) -> Option<EventType> {
    let now = matches(&ev.object);
    let before = ev.previous.as_ref().map(|p| matches(p));
    match (ev.event_type, before, now) {
        (EventType::Modified, Some(false), true) => Some(EventType::Added),
        (EventType::Modified, Some(true), false) => Some(EventType::Deleted),
        (EventType::Modified, Some(false), false) => None,
        (t, _, true) => Some(t),
        _ => None,
    }
}

fn watch(cluster: &Arc<Cluster>, t: &Target, query: &Query) -> ApiResult<Response> {
    let (labels, fields) = selectors(query)?;
    let from_rv = match query.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = query.flag("allowWatchBookmarks");
    let ns = t.namespace.clone();
    let res = t.res;
    let mut sub = match cluster.store.subscribe(res, from_rv) {
        Ok(s) => s,
        Err(e) if e.code == 410 => {
            // A real server answers a too-old watch with 200 and one ERROR event.
            let line = json!({"type": "ERROR", "object": e.to_status()}).to_string() + "\n";
            return Ok(stream_response(futures_util::stream::once(async move {
                Ok(Bytes::from(line))
            })));
        }
        Err(e) => return Err(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let matches = move |o: &Value| {
            ns.as_deref().is_none_or(|n| meta::namespace(o) == n)
                && labels.matches(o)
                && fields.matches(o)
        };
        let line = |t: EventType, o: &Value| {
            Bytes::from(json!({"type": t.as_str(), "object": o}).to_string() + "\n")
        };
        let mut last_rv = 0;
        for ev in &sub.backlog {
            last_rv = last_rv.max(ev.rv);
            if let Some(et) = filtered_event_type(ev, &matches)
                && tx.send(line(et, &ev.object)).await.is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick =
            tokio::time::interval(Duration::from_secs(if bookmarks { 10 } else { 3600 }));
        tick.tick().await;
        loop {
            tokio::select! {
                ev = sub.live.recv() => match ev {
                    Ok(ev) if std::ptr::eq(ev.resource, res) && ev.rv > last_rv => {
                        last_rv = ev.rv;
                        if let Some(et) = filtered_event_type(&ev, &matches)
                            && tx.send(line(et, &ev.object)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    // Lagging or shutting down: end the watch; clients re-watch from their last rv.
                    Err(_) => return,
                },
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    let rv = cluster.store.resource_version().max(last_rv);
                    let obj = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(Bytes::from(json!({"type": "BOOKMARK", "object": obj}).to_string() + "\n")).await.is_err() { return; }
                }
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(stream_response(stream))
}

fn stream_response<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Transfer-Encoding", "chunked")
        .body(Body::from_stream(stream))
        .expect("static response parts are valid")
}

fn delete(cluster: &Cluster, t: &Target, query: &Query, opts: &Value) -> ApiResult<Value> {
    let (ns, name) = object_key(t);
    let obj = cluster
        .store
        .get(t.res, &ns, &name)
        .ok_or_else(|| ApiError::not_found(&t.res.qualified_plural(), &name))?;
    if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str)
        && uid != meta::uid(&obj)
    {
        return Err(ApiError::conflict(&t.res.qualified_plural(), &name));
    }
    if let Some(rv) = opts
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        && rv != meta::str_at(&obj, "/metadata/resourceVersion")
    {
        return Err(ApiError::conflict(&t.res.qualified_plural(), &name));
    }
    if query.get("dryRun") == Some("All")
        || opts["dryRun"].as_array().is_some_and(|a| !a.is_empty())
    {
        return Ok((*obj).clone());
    }
    let grace = query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse::<i64>().ok())
        .or_else(|| opts["gracePeriodSeconds"].as_i64());
    let orphan = query
        .get("propagationPolicy")
        .or(opts["propagationPolicy"].as_str())
        == Some("Orphan")
        || opts["orphanDependents"].as_bool() == Some(true);
    delete_object(cluster, t.res, &ns, &name, grace, orphan).map(|o| (*o).clone())
}

/// Deletes one object with Kubernetes' semantics: namespaces and finalized objects are marked
/// and finished by their controllers; running pods get a graceful stop by the kubelet unless
/// `grace` is 0; dependents are deleted (or orphaned) by owner reference.
pub fn delete_object(
    cluster: &Cluster,
    res: &'static ResourceInfo,
    ns: &str,
    name: &str,
    grace: Option<i64>,
    orphan: bool,
) -> ApiResult<Arc<Value>> {
    let obj = cluster
        .store
        .get(res, ns, name)
        .ok_or_else(|| ApiError::not_found(&res.qualified_plural(), name))?;
    let has_finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let graceful_pod = res.plural == "pods"
        && grace != Some(0)
        && !meta::str_at(&obj, "/spec/nodeName").is_empty()
        && !matches!(meta::str_at(&obj, "/status/phase"), "Succeeded" | "Failed");
    let result = if res.plural == "namespaces" || has_finalizers || graceful_pod {
        let grace_secs = grace
            .or(obj
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64))
            .unwrap_or(30);
        cluster.store.modify(res, ns, name, |o| {
            if !meta::is_deleting(o) {
                o["metadata"]["deletionTimestamp"] = json!(meta::now());
                if res.plural == "pods" {
                    o["metadata"]["deletionGracePeriodSeconds"] = json!(grace_secs);
                }
                if res.plural == "namespaces" {
                    o["status"]["phase"] = json!("Terminating");
                }
            }
            Ok(())
        })?
    } else {
        cluster
            .store
            .delete(res, ns, name)
            .ok_or_else(|| ApiError::not_found(&res.qualified_plural(), name))?
    };
    if res.namespaced {
        collect_dependents(cluster, ns, meta::uid(&obj), orphan);
    }
    Ok(result)
}

/// The garbage collector's work for one deleted owner, done at once (background propagation).
fn collect_dependents(cluster: &Cluster, ns: &str, owner_uid: &str, orphan: bool) {
    for res in resources::RESOURCES.iter().filter(|r| r.namespaced) {
        let (objs, _) = cluster.store.list(res, Some(ns), None);
        for o in objs.iter().filter(|o| meta::is_owned_by(o, owner_uid)) {
            if orphan {
                let _ = cluster.store.modify(res, ns, meta::name(o), |d| {
                    if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
                    }
                    Ok(())
                });
            } else {
                let _ = delete_object(cluster, res, ns, meta::name(o), None, false);
            }
        }
    }
}

fn delete_collection(cluster: &Cluster, t: &Target, query: &Query) -> ApiResult<Response> {
    let (labels, fields) = selectors(query)?;
    let (all, _) = cluster.store.list(t.res, t.namespace.as_deref(), None);
    let grace = query.get("gracePeriodSeconds").and_then(|g| g.parse().ok());
    let mut deleted = Vec::new();
    for o in all
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
    {
        if let Ok(d) = delete_object(
            cluster,
            t.res,
            meta::namespace(o),
            meta::name(o),
            grace,
            false,
        ) {
            deleted.push((*d).clone());
        }
    }
    let rv = cluster.store.resource_version();
    Ok(ok(
        &json!({"kind": t.res.list_kind(), "apiVersion": t.res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    ))
}

/// `/sandbox/faults`: lists (GET), adds (POST `{"spec": "..."}`) and clears (DELETE) injected
/// faults. Only the cluster admin (group `system:masters`) may, whatever RBAC grants, because
/// a fault breaks the cluster for every user.
async fn sandbox_faults(
    cluster: &Cluster,
    identity: &Identity,
    method: &Method,
    path: &str,
    req: Request,
) -> ApiResult<Response> {
    if !identity.groups.iter().any(|g| g == "system:masters") {
        // Read the body first: answering before it arrived closes the connection under a
        // client still writing, which then sees a broken pipe instead of the 403 (Go's HTTP
        // server, under kube-apiserver, drains unread bodies the same way).
        let _ = read_body(req).await;
        let attrs = Attributes::non_resource(method.as_str(), path);
        return Err(ApiError::forbidden_resource(
            "",
            "",
            "",
            format!(
                "User \"{}\" cannot {} path \"{path}\": only the cluster admin (group system:masters) may inject faults",
                identity.username, attrs.verb
            ),
        ));
    }
    let listing = |faults: &crate::faults::Faults| json!({"faults": faults.list()});
    match *method {
        Method::GET => Ok(ok(&listing(&cluster.faults))),
        Method::POST => {
            let (_, bytes) = read_body(req).await?;
            let spec = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["spec"].as_str().map(String::from))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "the body must be a JSON object with a \"spec\" string, e.g. {\"spec\": \"exec-cut-after=1024,count=1\"}",
                    )
                })?;
            let fault = crate::faults::Fault::parse(&spec).map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid fault {e}; valid forms: {}",
                    crate::faults::VALID_FORMS
                ))
            })?;
            tracing::info!(spec = %fault.spec, "fault injected");
            let entry = cluster.faults.add(fault);
            Ok(json_response(StatusCode::CREATED, &json!(entry)))
        }
        Method::DELETE => {
            let cleared = cluster.faults.clear();
            tracing::info!(cleared, "faults cleared");
            let mut body = listing(&cluster.faults);
            body["cleared"] = json!(cleared);
            Ok(ok(&body))
        }
        _ => Err(ApiError::method_not_supported(
            "sandbox/faults",
            method.as_str(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_kind_namespace_name_and_subresource() {
        let t = parse_target(&["api", "v1", "namespaces", "a", "pods", "p", "exec"]).unwrap();
        assert_eq!(
            (
                t.res.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("a"), Some("p"), Some("exec"))
        );
        let t = parse_target(&["api", "v1", "namespaces", "a"]).unwrap();
        assert_eq!((t.res.plural, t.name.as_deref()), ("namespaces", Some("a")));
        let t = parse_target(&["api", "v1", "namespaces", "a", "status"]).unwrap();
        assert_eq!(
            (t.res.plural, t.sub.as_deref()),
            ("namespaces", Some("status"))
        );
        let t = parse_target(&["apis", "apps", "v1", "deployments"]).unwrap();
        assert_eq!((t.res.plural, t.namespace), ("deployments", None));
        assert_eq!(
            parse_target(&["api", "v1", "widgets"]).unwrap_err().code,
            404
        );
        assert_eq!(
            parse_target(&["api", "v1", "namespaces", "a", "nodes"])
                .unwrap_err()
                .code,
            404
        );
    }

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_a_bad_request() {
        let tok = encode_continue("ns", "name");
        assert_eq!(decode_continue(&tok).unwrap(), ("ns".into(), "name".into()));
        assert_eq!(decode_continue("%%%").unwrap_err().code, 400);
    }

    #[test]
    fn missing_type_fields_default_from_the_endpoint_and_present_ones_must_match() {
        let mut obj = json!({"metadata": {"name": "p"}});
        settle_type(known::pods(), &mut obj).unwrap();
        assert_eq!(
            (&obj["apiVersion"], &obj["kind"]),
            (&json!("v1"), &json!("Pod"))
        );
        let mut obj = json!({"apiVersion": null, "kind": "", "metadata": {}});
        settle_type(known::pods(), &mut obj).unwrap();
        assert_eq!(
            (&obj["apiVersion"], &obj["kind"]),
            (&json!("v1"), &json!("Pod"))
        );
        // A group without a version takes the endpoint's version.
        let deployments = resources::by_kind("apps", "Deployment").unwrap();
        let mut obj = json!({"apiVersion": "apps/", "metadata": {}});
        settle_type(deployments, &mut obj).unwrap();
        assert_eq!(obj["apiVersion"], "apps/v1");

        let err = settle_type(known::pods(), &mut json!({"kind": "Secret"})).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message
                .contains("Secret in version \"v1\" cannot be handled as a Pod"),
            "{}",
            err.message
        );
        let err = settle_type(known::pods(), &mut json!({"apiVersion": "v2"})).unwrap_err();
        assert!(
            err.message.contains("the API version in the data (v2)"),
            "{}",
            err.message
        );
        let err = settle_type(known::pods(), &mut json!({"kind": 7})).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            settle_type(known::pods(), &mut json!([])).unwrap_err().code,
            400
        );
    }
}
