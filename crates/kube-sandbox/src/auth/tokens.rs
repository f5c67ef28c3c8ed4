//! ServiceAccount tokens: minted by the TokenRequest API (`kubectl create token`) and for pods'
//! projected `kube-api-access` volumes, checked on every request. A token stops working when it
//! expires, when its ServiceAccount is deleted (or recreated with another uid), or when the
//! object it is bound to goes away.
//!
//! Tokens are shaped like Kubernetes' JWTs (header.claims.signature, readable claims), but the
//! signature part is random and validity is decided by this in-memory table, never by parsing
//! what the client sent.

use super::Identity;
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::resources::{by_kind, known};
use base64::Engine;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// The audience tokens get when the request names none (the API server's own).
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// Shortest lifetime a TokenRequest may ask for, as Kubernetes enforces.
const MIN_SECONDS: i64 = 600;
/// Longest lifetime a TokenRequest may ask for.
const MAX_SECONDS: i64 = 1 << 32;

/// What a minted token stands for.
#[derive(Debug, Clone)]
struct Claims {
    namespace: String,
    service_account: String,
    service_account_uid: String,
    expires_at: i64,
    /// (resource kind, name, uid) of the object the token is bound to.
    bound: Option<(String, String, String)>,
}

/// The table of minted tokens.
#[derive(Default)]
pub struct TokenStore {
    tokens: Mutex<HashMap<String, Claims>>,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl TokenStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claims>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mint(
        &self,
        sa: &Value,
        audiences: &[String],
        lifetime: i64,
        bound: Option<(String, String, String)>,
    ) -> (String, i64) {
        let issued = now();
        let expires_at = issued + lifetime;
        let (ns, name, uid) = (meta::namespace(sa), meta::name(sa), meta::uid(sa));
        let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": name, "uid": uid}});
        if let Some((kind, bname, buid)) = &bound {
            k8s[kind.to_lowercase()] = json!({"name": bname, "uid": buid});
        }
        let claims = json!({
            "aud": audiences, "exp": expires_at, "iat": issued, "nbf": issued,
            "iss": DEFAULT_AUDIENCE, "jti": meta::new_uid(),
            "kubernetes.io": k8s, "sub": format!("system:serviceaccount:{ns}:{name}"),
        });
        let secret: [u8; 32] = rand::rng().random();
        let token = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","kid":"sandbox"}"#),
            b64(claims.to_string().as_bytes()),
            b64(&secret)
        );
        let entry = Claims {
            namespace: ns.into(),
            service_account: name.into(),
            service_account_uid: uid.into(),
            expires_at,
            bound,
        };
        let mut tokens = self.lock();
        // Forget expired tokens so the table does not grow without bound.
        let t = now();
        tokens.retain(|_, c| c.expires_at > t);
        tokens.insert(token.clone(), entry);
        (token, expires_at)
    }

    /// The identity behind a bearer token, if it is one of ours and still valid.
    pub fn authenticate(&self, cluster: &Cluster, token: &str) -> Option<Identity> {
        let claims = self.lock().get(token).cloned()?;
        if claims.expires_at <= now() {
            return None;
        }
        let sa = cluster.store.get(
            known::service_accounts(),
            &claims.namespace,
            &claims.service_account,
        )?;
        if meta::uid(&sa) != claims.service_account_uid || meta::is_deleting(&sa) {
            return None;
        }
        let mut identity = Identity::service_account(
            &claims.namespace,
            &claims.service_account,
            &claims.service_account_uid,
        );
        if let Some((kind, name, uid)) = &claims.bound {
            let res = by_kind("", kind)?;
            let obj = cluster.store.get(res, &claims.namespace, name)?;
            if meta::uid(&obj) != uid {
                return None;
            }
            if kind == "Pod" {
                identity.extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    vec![name.clone()],
                );
                identity.extra.insert(
                    "authentication.kubernetes.io/pod-uid".into(),
                    vec![uid.clone()],
                );
            }
        }
        Some(identity)
    }

    /// A token for a pod's projected `serviceAccountToken` volume source.
    pub fn mint_for_pod(&self, cluster: &Cluster, pod: &Value, lifetime: i64) -> Option<String> {
        let sa_name = match meta::str_at(pod, "/spec/serviceAccountName") {
            "" => "default",
            n => n,
        };
        let sa = cluster
            .store
            .get(known::service_accounts(), meta::namespace(pod), sa_name)?;
        let bound = (
            "Pod".to_string(),
            meta::name(pod).to_string(),
            meta::uid(pod).to_string(),
        );
        let lifetime = cluster
            .config
            .max_token_seconds
            .map_or(lifetime, |max| lifetime.min(max));
        Some(
            self.mint(&sa, &[DEFAULT_AUDIENCE.to_string()], lifetime, Some(bound))
                .0,
        )
    }
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token` (TokenRequest).
pub fn request(cluster: &Cluster, namespace: &str, name: &str, body: &Value) -> ApiResult<Value> {
    let sa = cluster
        .store
        .get(known::service_accounts(), namespace, name)
        .ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
    let spec = &body["spec"];
    let requested = spec["expirationSeconds"]
        .as_i64()
        .filter(|s| *s != 0)
        .unwrap_or(3600);
    let invalid = |msg: String| {
        ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            name,
            &[("spec.expirationSeconds".into(), msg)],
        )
    };
    if requested < MIN_SECONDS {
        return Err(invalid(format!(
            "Invalid value: {requested}: may not specify a duration less than 10 minutes"
        )));
    }
    if requested > MAX_SECONDS {
        return Err(invalid(format!(
            "Invalid value: {requested}: may not specify a duration larger than 2^32 seconds"
        )));
    }
    let lifetime = cluster
        .config
        .max_token_seconds
        .map_or(requested, |max| requested.min(max));
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    if audiences.is_empty() {
        audiences.push(DEFAULT_AUDIENCE.into());
    }
    let bound = match spec.get("boundObjectRef").filter(|b| b.is_object()) {
        None => None,
        Some(b) => Some(bound_object(cluster, namespace, name, b)?),
    };
    let (token, expires_at) = cluster.tokens.mint(&sa, &audiences, lifetime, bound);
    let expiration = jiff::Timestamp::from_second(expires_at)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut spec_out = json!({"audiences": audiences, "expirationSeconds": lifetime});
    if let Some(b) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        spec_out["boundObjectRef"] = b.clone();
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": meta::now()},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": expiration},
    }))
}

fn bound_object(
    cluster: &Cluster,
    namespace: &str,
    sa: &str,
    b: &Value,
) -> ApiResult<(String, String, String)> {
    let kind = b["kind"].as_str().unwrap_or("");
    let name = b["name"].as_str().unwrap_or("");
    let res = match kind {
        "Pod" | "Secret" => by_kind("", kind).expect("core kinds are served"),
        other => {
            return Err(ApiError::invalid(
                "TokenRequest",
                "authentication.k8s.io",
                sa,
                &[(
                    "spec.boundObjectRef.kind".into(),
                    format!("Unsupported value: {other:?}: supported values: \"Pod\", \"Secret\""),
                )],
            ));
        }
    };
    let obj = cluster
        .store
        .get(res, namespace, name)
        .ok_or_else(|| ApiError::not_found(res.plural, name))?;
    if let Some(uid) = b["uid"].as_str().filter(|u| !u.is_empty())
        && uid != meta::uid(&obj)
    {
        return Err(ApiError::conflict(res.plural, name));
    }
    Ok((
        kind.to_string(),
        name.to_string(),
        meta::uid(&obj).to_string(),
    ))
}
