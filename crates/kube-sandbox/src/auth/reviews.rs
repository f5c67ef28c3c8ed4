//! The review APIs: SelfSubjectAccessReview (`kubectl auth can-i`), SelfSubjectRulesReview
//! (`kubectl auth can-i --list`), SelfSubjectReview (`kubectl auth whoami`) and TokenReview.
//! They are created, answered and never stored.

use super::{Attributes, Identity, rbac};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use serde_json::{Value, json};

/// Which review a request creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewKind {
    /// `authorization.k8s.io/v1` SelfSubjectAccessReview.
    SelfSubjectAccess,
    /// `authorization.k8s.io/v1` SelfSubjectRulesReview.
    SelfSubjectRules,
    /// `authentication.k8s.io/v1` SelfSubjectReview.
    SelfSubject,
    /// `authentication.k8s.io/v1` TokenReview.
    Token,
}

impl ReviewKind {
    fn group(self) -> &'static str {
        match self {
            ReviewKind::SelfSubjectAccess | ReviewKind::SelfSubjectRules => "authorization.k8s.io",
            ReviewKind::SelfSubject | ReviewKind::Token => "authentication.k8s.io",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            ReviewKind::SelfSubjectAccess => "selfsubjectaccessreviews",
            ReviewKind::SelfSubjectRules => "selfsubjectrulesreviews",
            ReviewKind::SelfSubject => "selfsubjectreviews",
            ReviewKind::Token => "tokenreviews",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            ReviewKind::SelfSubjectAccess => "SelfSubjectAccessReview",
            ReviewKind::SelfSubjectRules => "SelfSubjectRulesReview",
            ReviewKind::SelfSubject => "SelfSubjectReview",
            ReviewKind::Token => "TokenReview",
        }
    }
}

/// The review a path creates (`/apis/authorization.k8s.io/v1/selfsubjectaccessreviews`).
pub fn review_kind(segs: &[&str]) -> Option<ReviewKind> {
    let ["apis", group, "v1", plural] = segs else {
        return None;
    };
    [
        ReviewKind::SelfSubjectAccess,
        ReviewKind::SelfSubjectRules,
        ReviewKind::SelfSubject,
        ReviewKind::Token,
    ]
    .into_iter()
    .find(|k| k.group() == *group && k.plural() == *plural)
}

/// The permission creating a review needs (`system:basic-user` grants the self reviews).
pub fn attributes(kind: ReviewKind) -> Attributes {
    Attributes {
        verb: "create".into(),
        api_group: kind.group().into(),
        resource: kind.plural().into(),
        resource_request: true,
        ..Default::default()
    }
}

fn user_info(who: &Identity) -> Value {
    let mut info = json!({"username": who.username, "groups": who.groups});
    if !who.uid.is_empty() {
        info["uid"] = json!(who.uid);
    }
    if !who.extra.is_empty() {
        info["extra"] = json!(who.extra);
    }
    info
}

/// Answers a review created by `who`.
pub fn handle(
    cluster: &Cluster,
    who: &Identity,
    kind: ReviewKind,
    mut body: Value,
) -> ApiResult<Value> {
    if body["kind"].as_str().is_some_and(|k| k != kind.kind()) {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({}) does not match the expected kind ({}) for this endpoint",
            body["kind"].as_str().unwrap_or(""),
            kind.kind()
        )));
    }
    let status = match kind {
        ReviewKind::SelfSubjectAccess => {
            let spec = &body["spec"];
            if spec.get("resourceAttributes").is_none()
                && spec.get("nonResourceAttributes").is_none()
            {
                return Err(ApiError::invalid(kind.kind(), kind.group(), "", &[(
                    "spec.resourceAttributes".into(),
                    "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
                )]));
            }
            match rbac::authorize(&cluster.store, who, &Attributes::from_review(spec)) {
                Some(reason) => json!({"allowed": true, "reason": reason}),
                None => json!({"allowed": false}),
            }
        }
        ReviewKind::SelfSubjectRules => {
            let ns = body
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let (resource_rules, non_resource_rules) = rbac::rules_for(&cluster.store, who, ns);
            json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
        }
        ReviewKind::SelfSubject => json!({"userInfo": user_info(who)}),
        ReviewKind::Token => {
            let token = body
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or("");
            let found = if token == cluster.config.admin_token {
                Some(Identity::admin())
            } else {
                cluster.tokens.authenticate(cluster, token)
            };
            match found {
                Some(id) => {
                    json!({"authenticated": true, "user": user_info(&id), "audiences": [super::tokens::DEFAULT_AUDIENCE]})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
    };
    body["apiVersion"] = json!(format!("{}/v1", kind.group()));
    body["kind"] = json!(kind.kind());
    if !body["metadata"].is_object() {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = json!(crate::meta::now());
    body["status"] = status;
    Ok(body)
}
