//! Policies from specs another source has already split out of their
//! objects (the control plane reads Kubernetes objects): validated exactly
//! as the config file's documents are, by the same reader.

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::model::{AuthorizationPolicySpec, PeerAuthenticationSpec};
use super::resource::{API_VERSIONS, Header, Meta, PolicyKind, Resource, ResourceReader};
use super::set::PolicySet;

/// A validated AuthorizationPolicy or PeerAuthentication.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyResource {
    AuthorizationPolicy {
        namespace: String,
        name: String,
        spec: AuthorizationPolicySpec,
    },
    PeerAuthentication {
        namespace: String,
        name: String,
        spec: PeerAuthenticationSpec,
    },
}

/// A spec that cannot be used: the field (`spec.rules[0].from[0].source.principals`
/// style) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicySpecError {
    pub field: String,
    pub message: String,
}

/// Validates `spec` (the object's `spec`, as JSON) of a `kind` policy named
/// `namespace/name`. Unknown fields are refused, naming them.
pub fn parse_policy(
    kind: PolicyKind,
    namespace: &str,
    name: &str,
    spec: &serde_json::Value,
) -> Result<PolicyResource, PolicySpecError> {
    let text = document(kind, namespace, name, spec)?;
    let Some(doc) = serde_yaml::Deserializer::from_str(&text).next() else {
        return Err(internal("no document".into()));
    };
    let header = Header::deserialize(doc).map_err(|e| from_yaml(&e))?;
    let Some(doc) = serde_yaml::Deserializer::from_str(&text).next() else {
        return Err(internal("no document".into()));
    };
    let resource = ResourceReader::default()
        .read(&header, doc)
        .map_err(|err| match err.failure {
            Some(failure) => PolicySpecError {
                field: failure.field,
                message: failure.message,
            },
            None => from_yaml(&err.yaml),
        })?;
    Ok(match resource {
        Resource::AuthorizationPolicy { meta, spec } => PolicyResource::AuthorizationPolicy {
            namespace: meta.namespace,
            name: meta.name,
            spec,
        },
        Resource::PeerAuthentication { meta, spec } => PolicyResource::PeerAuthentication {
            namespace: meta.namespace,
            name: meta.name,
            spec,
        },
    })
}

/// The YAML document the file reader would see for this object.
fn document(
    kind: PolicyKind,
    namespace: &str,
    name: &str,
    spec: &serde_json::Value,
) -> Result<String, PolicySpecError> {
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), name.into());
    metadata.insert("namespace".into(), namespace.into());
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), API_VERSIONS[0].into());
    doc.insert("kind".into(), kind.to_string().into());
    doc.insert("metadata".into(), Value::Mapping(metadata));
    // `spec: null` is no spec, as in Kubernetes.
    if !spec.is_null() {
        let spec = serde_yaml::to_value(spec).map_err(|e| internal(e.to_string()))?;
        doc.insert("spec".into(), spec);
    }
    serde_yaml::to_string(&Value::Mapping(doc)).map_err(|e| internal(e.to_string()))
}

fn internal(message: String) -> PolicySpecError {
    PolicySpecError {
        field: "spec".into(),
        message,
    }
}

/// serde_yaml renders "<field path>: <message> at line L column C"; the
/// line is of our own document, meaningless to the user.
fn from_yaml(err: &serde_yaml::Error) -> PolicySpecError {
    let rendered = err.to_string();
    let text = match rendered.rfind(" at line ") {
        Some(at) => &rendered[..at],
        None => rendered.as_str(),
    };
    match text.split_once(": ") {
        Some((field, message)) if !field.contains(' ') => PolicySpecError {
            field: field.to_owned(),
            message: message.to_owned(),
        },
        _ => PolicySpecError {
            field: "spec".into(),
            message: text.to_owned(),
        },
    }
}

impl PolicySet {
    /// The policies of `resources`, in order; those in `root_namespace` (or
    /// `istio-system`) apply mesh-wide.
    pub fn from_resources(resources: Vec<PolicyResource>, root_namespace: &str) -> PolicySet {
        let resources = resources
            .into_iter()
            .map(|r| match r {
                PolicyResource::AuthorizationPolicy {
                    namespace,
                    name,
                    spec,
                } => Resource::AuthorizationPolicy {
                    meta: Meta { namespace, name },
                    spec,
                },
                PolicyResource::PeerAuthentication {
                    namespace,
                    name,
                    spec,
                } => Resource::PeerAuthentication {
                    meta: Meta { namespace, name },
                    spec,
                },
            })
            .collect();
        Self::build(resources, root_namespace)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn valid_spec_parses() {
        let spec = json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["sandbox"]}}]}]});
        let parsed =
            parse_policy(PolicyKind::AuthorizationPolicy, "prod", "no-sandbox", &spec).unwrap();
        let PolicyResource::AuthorizationPolicy {
            namespace,
            name,
            spec,
        } = parsed
        else {
            panic!("not an AuthorizationPolicy");
        };
        assert_eq!((namespace.as_str(), name.as_str()), ("prod", "no-sandbox"));
        assert_eq!(spec.rules[0].from[0].source.namespaces, ["sandbox"]);
        let pa = parse_policy(PolicyKind::PeerAuthentication, "prod", "d", &json!(null)).unwrap();
        assert!(matches!(pa, PolicyResource::PeerAuthentication { .. }));
    }

    #[test]
    fn errors_name_the_field() {
        let spec = json!({"rules": [{"from": [{"source": {"principal": ["x"]}}]}]});
        let err = parse_policy(PolicyKind::AuthorizationPolicy, "prod", "p", &spec).unwrap_err();
        assert_eq!(err.field, "spec.rules[0].from[0].source", "{err}");
        assert!(err.message.contains("unknown field `principal`"), "{err}");
        assert!(!err.message.contains("line"), "{err}");

        let spec =
            json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8", "1.2.3.4/40"]}}]}]});
        let err = parse_policy(PolicyKind::AuthorizationPolicy, "prod", "p", &spec).unwrap_err();
        assert_eq!(
            err.field, "spec.rules[0].from[0].source.ipBlocks[1]",
            "{err}"
        );

        let spec = json!({"action": "CUSTOM"});
        let err = parse_policy(PolicyKind::AuthorizationPolicy, "prod", "p", &spec).unwrap_err();
        assert_eq!(err.field, "spec.action", "{err}");
        assert_eq!(
            err.to_string(),
            "spec.action: a CUSTOM policy needs `provider`"
        );

        let spec = json!({"portLevelMtls": {"80": {"mode": "STRICT"}}});
        let err = parse_policy(PolicyKind::PeerAuthentication, "prod", "p", &spec).unwrap_err();
        assert_eq!(err.field, "spec.portLevelMtls", "{err}");
    }
}
