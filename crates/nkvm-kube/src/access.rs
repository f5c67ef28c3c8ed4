//! What the connected identity is and may do: SelfSubjectReview for the user name, and
//! SelfSubjectAccessReviews for the permissions nkvm's operations need in a namespace.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use serde::Serialize;

/// One permission nkvm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Verb.
    pub verb: &'static str,
    /// Resource plural.
    pub resource: &'static str,
    /// Subresource ("" for none).
    pub subresource: &'static str,
    /// What nkvm uses it for.
    pub purpose: &'static str,
}

/// What nkvm needs in each namespace it backs up or restores in.
pub const RUNTIME_NEEDS: &[Need] = &[
    Need {
        verb: "list",
        resource: "persistentvolumeclaims",
        subresource: "",
        purpose: "inventory",
    },
    Need {
        verb: "list",
        resource: "pods",
        subresource: "",
        purpose: "consumers and owners",
    },
    Need {
        verb: "create",
        resource: "pods",
        subresource: "",
        purpose: "helper pods",
    },
    Need {
        verb: "delete",
        resource: "pods",
        subresource: "",
        purpose: "helper pod cleanup",
    },
    Need {
        verb: "create",
        resource: "pods",
        subresource: "exec",
        purpose: "streaming archives (WebSocket exec)",
    },
    Need {
        verb: "create",
        resource: "persistentvolumeclaims",
        subresource: "",
        purpose: "restores into new claims",
    },
];

/// A checked permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Namespace ("" for cluster scope).
    pub namespace: String,
    /// `verb resource[/subresource]`.
    pub permission: String,
    /// What it is for.
    pub purpose: String,
    /// Whether RBAC allows it.
    pub allowed: bool,
}

/// The user name the cluster sees, if the server answers SelfSubjectReview.
pub async fn whoami(client: &Client) -> Option<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    review.status?.user_info?.username
}

/// Whether `need` is allowed in `namespace` ("" = cluster-wide).
pub async fn can_i(client: &Client, namespace: &str, need: &Need) -> Result<bool, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                verb: Some(need.verb.into()),
                resource: Some(need.resource.into()),
                subresource: (!need.subresource.is_empty()).then(|| need.subresource.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Checks every runtime need in `namespace`.
pub async fn check_namespace(client: &Client, namespace: &str) -> Result<Vec<Grant>, kube::Error> {
    let mut out = Vec::new();
    for need in RUNTIME_NEEDS {
        let permission = if need.subresource.is_empty() {
            format!("{} {}", need.verb, need.resource)
        } else {
            format!("{} {}/{}", need.verb, need.resource, need.subresource)
        };
        out.push(Grant {
            namespace: namespace.into(),
            permission,
            purpose: need.purpose.into(),
            allowed: can_i(client, namespace, need).await?,
        });
    }
    Ok(out)
}
