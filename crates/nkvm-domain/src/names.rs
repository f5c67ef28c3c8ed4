//! Names as Kubernetes validates them, references to PVCs, and the namespace allowlist.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a user-supplied name or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not an RFC 1123 label/subdomain.
    #[error(
        "{what} {value:?} is not a valid Kubernetes name: use lower-case letters, digits and '-' (and '.' for object names), starting and ending with a letter or digit, at most {max} characters"
    )]
    Invalid {
        /// What was being named (namespace, PVC).
        what: &'static str,
        /// The rejected text.
        value: String,
        /// Length limit for this kind of name.
        max: usize,
    },
    /// `NS/PVC` expected.
    #[error("{0:?} is not a PVC reference: write NAMESPACE/NAME, e.g. shop/data")]
    NotAReference(String),
}

/// A validated Kubernetes object name (RFC 1123 subdomain; labels for namespaces).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceName(String);

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl ResourceName {
    /// A namespace name (an RFC 1123 label, at most 63 characters).
    pub fn namespace(s: &str) -> Result<Self, NameError> {
        if is_label(s) {
            Ok(ResourceName(s.to_string()))
        } else {
            Err(NameError::Invalid {
                what: "namespace",
                value: s.to_string(),
                max: 63,
            })
        }
    }

    /// An object name (an RFC 1123 subdomain, at most 253 characters).
    pub fn object(what: &'static str, s: &str) -> Result<Self, NameError> {
        if s.len() <= 253 && s.split('.').all(is_label) {
            Ok(ResourceName(s.to_string()))
        } else {
            Err(NameError::Invalid {
                what,
                value: s.to_string(),
                max: 253,
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PVC by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PvcRef {
    /// Namespace.
    pub namespace: ResourceName,
    /// Claim name.
    pub name: ResourceName,
}

impl PvcRef {
    /// Parses `NAMESPACE/NAME`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| NameError::NotAReference(s.to_string()))?;
        Ok(PvcRef {
            namespace: ResourceName::namespace(ns)?,
            name: ResourceName::object("PVC name", name)?,
        })
    }
}

impl fmt::Display for PvcRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The namespaces nkvm may touch. Empty means every namespace the credentials can see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<ResourceName>);

impl Allowlist {
    /// Parses a comma-separated list (`NKVM_NAMESPACES`); blanks are ignored.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let mut names: Vec<ResourceName> = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(ResourceName::namespace)
            .collect::<Result<_, _>>()?;
        names.sort();
        names.dedup();
        Ok(Allowlist(names))
    }

    /// Whether every namespace is allowed.
    pub fn is_everything(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `namespace` may be touched.
    pub fn allows(&self, namespace: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|n| n.as_str() == namespace)
    }

    /// The listed namespaces (empty when everything is allowed).
    pub fn namespaces(&self) -> &[ResourceName] {
        &self.0
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(all namespaces)");
        }
        let names: Vec<&str> = self.0.iter().map(ResourceName::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl crate::UserError for NameError {
    fn kind(&self) -> crate::FailureKind {
        crate::FailureKind::InvalidInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvc_references_parse_and_refuse_bad_names() {
        let r = PvcRef::parse("shop/data-0").unwrap();
        assert_eq!(r.to_string(), "shop/data-0");
        assert!(matches!(
            PvcRef::parse("data"),
            Err(NameError::NotAReference(_))
        ));
        let err = PvcRef::parse("Shop/data").unwrap_err().to_string();
        assert!(
            err.contains("namespace \"Shop\" is not a valid Kubernetes name"),
            "{err}"
        );
        assert!(PvcRef::parse("shop/a_b").is_err());
    }

    #[test]
    fn an_empty_allowlist_allows_everything_and_a_list_only_its_members() {
        assert!(Allowlist::parse("").unwrap().allows("anything"));
        let list = Allowlist::parse(" shop, billing,,shop").unwrap();
        assert_eq!(list.to_string(), "billing,shop");
        assert!(list.allows("shop") && !list.allows("kube-system"));
        assert!(Allowlist::parse("ok,Bad").is_err());
    }
}
