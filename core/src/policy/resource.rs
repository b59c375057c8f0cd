//! One YAML document holding an Istio resource → a typed [`Resource`].
//!
//! Read in two passes by `config::parse`: first a lenient [`Header`] of
//! every document (what is it?), then the document again with the typed
//! reader for its kind. Problems that span fields are found at the end of
//! the document's mapping and returned as a [`FieldFailure`], which names
//! the field and the YAML key whose line to report.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_yaml::Value;

use super::model::{AuthorizationPolicySpec, PeerAuthenticationSpec};

/// The apiVersions ztunnel reads. Istio serves both with the same schema.
pub(crate) const API_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

/// What pass one needs to know of a document. Unknown fields are ignored
/// here: pass two refuses them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, rename = "apiVersion")]
    api_version: Option<Value>,
    #[serde(default)]
    kind: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

impl Header {
    /// Documents with `apiVersion` or `kind` are resources; the one without
    /// both holds workloads and services.
    pub(crate) fn is_resource(&self) -> bool {
        self.api_version.is_some() || self.kind.is_some()
    }

    fn kind(&self) -> Option<&str> {
        self.kind.as_ref().and_then(Value::as_str)
    }

    fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }

    /// `AuthorizationPolicy production/no-sandbox`, for error fields.
    pub(crate) fn label(&self) -> String {
        let mut label = self.kind().unwrap_or("resource").to_owned();
        match (self.metadata("namespace"), self.metadata("name")) {
            (Some(ns), Some(name)) => label.push_str(&format!(" {ns}/{name}")),
            (None, Some(name)) => label.push_str(&format!(" {name}")),
            _ => {}
        }
        label
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PolicyKind {
    AuthorizationPolicy,
    PeerAuthentication,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Resource {
    AuthorizationPolicy {
        meta: Meta,
        spec: AuthorizationPolicySpec,
    },
    PeerAuthentication {
        meta: Meta,
        spec: PeerAuthenticationSpec,
    },
}

/// A problem found after the document was read: `field` (below the
/// resource), the YAML `key` to find its line by, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldFailure {
    pub field: String,
    pub key: &'static str,
    pub message: String,
}

#[derive(Debug)]
pub(crate) struct ReadError {
    /// Located at the offending value, or for a [`FieldFailure`] at the
    /// start of the document.
    pub yaml: serde_yaml::Error,
    pub failure: Option<FieldFailure>,
}

/// Reads resource documents, remembering names to refuse duplicates.
#[derive(Debug, Default)]
pub(crate) struct ResourceReader {
    seen: HashSet<(PolicyKind, String, String)>,
}

impl ResourceReader {
    pub(crate) fn read(
        &mut self,
        header: &Header,
        doc: serde_yaml::Deserializer<'_>,
    ) -> Result<Resource, ReadError> {
        let kind = match header.kind() {
            Some("AuthorizationPolicy") => Kind::Known(PolicyKind::AuthorizationPolicy),
            Some("PeerAuthentication") => Kind::Known(PolicyKind::PeerAuthentication),
            // Not a string: reading `kind` as one reports it in place.
            _ => Kind::Other,
        };
        let mut failure = None;
        let seed = DocSeed {
            kind,
            seen: &mut self.seen,
            failure: &mut failure,
        };
        seed.deserialize(doc)
            .map_err(|yaml| ReadError { yaml, failure })
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Known(PolicyKind),
    Other,
}

enum Spec {
    Authz(AuthorizationPolicySpec),
    PeerAuthn(PeerAuthenticationSpec),
    Ignored,
}

#[derive(Deserialize)]
struct RawMeta {
    // Kubernetes metadata has many more fields (labels, uid, ...): ignored.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

const FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

struct DocSeed<'a> {
    kind: Kind,
    seen: &'a mut HashSet<(PolicyKind, String, String)>,
    failure: &'a mut Option<FieldFailure>,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = Resource;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Resource, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = Resource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an Istio resource (apiVersion, kind, metadata, spec)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Resource, A::Error> {
        let mut api_version: Option<String> = None;
        let mut kind: Option<String> = None;
        let mut meta: Option<RawMeta> = None;
        let mut spec = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "apiVersion" => api_version = Some(map.next_value()?),
                "kind" => kind = Some(map.next_value()?),
                "metadata" => meta = Some(map.next_value()?),
                "spec" => {
                    spec = Some(match self.kind {
                        Kind::Known(PolicyKind::AuthorizationPolicy) => {
                            Spec::Authz(map.next_value()?)
                        }
                        Kind::Known(PolicyKind::PeerAuthentication) => {
                            Spec::PeerAuthn(map.next_value()?)
                        }
                        // Reported below as an unsupported kind.
                        Kind::Other => {
                            map.next_value::<IgnoredAny>()?;
                            Spec::Ignored
                        }
                    })
                }
                // Written by the API server; exported YAML carries it.
                "status" => {
                    map.next_value::<IgnoredAny>()?;
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        let checked = check(
            self.kind,
            api_version.as_deref(),
            kind.as_deref(),
            meta,
            spec,
            self.seen,
        );
        checked.map_err(|failure| {
            let err = de::Error::custom(&failure.message);
            *self.failure = Some(failure);
            err
        })
    }
}

fn fail(field: &str, key: &'static str, message: String) -> FieldFailure {
    FieldFailure {
        field: field.to_owned(),
        key,
        message,
    }
}

fn check(
    known: Kind,
    api_version: Option<&str>,
    kind: Option<&str>,
    meta: Option<RawMeta>,
    spec: Option<Spec>,
    seen: &mut HashSet<(PolicyKind, String, String)>,
) -> Result<Resource, FieldFailure> {
    let supported = "AuthorizationPolicy and PeerAuthentication (security.istio.io/v1 or v1beta1)";
    let Some(kind) = kind else {
        return Err(fail(
            "kind",
            "apiVersion",
            "`kind` is missing: a document with `apiVersion` is an Istio resource \
             (the document with workloads and services has neither)"
                .into(),
        ));
    };
    let Kind::Known(policy_kind) = known else {
        let version = api_version.map(|v| format!(" ({v})")).unwrap_or_default();
        return Err(fail(
            "kind",
            "kind",
            format!("unsupported kind {kind}{version} in ztunnel config: it reads {supported}"),
        ));
    };
    match api_version {
        Some(v) if API_VERSIONS.contains(&v) => {}
        Some(v) => {
            return Err(fail(
                "apiVersion",
                "apiVersion",
                format!(
                    "unsupported apiVersion {v} for kind {kind} in ztunnel config: it reads {supported}"
                ),
            ));
        }
        None => {
            return Err(fail(
                "apiVersion",
                "kind",
                format!("`apiVersion` is missing: ztunnel reads {supported}"),
            ));
        }
    }
    let Some(meta) = meta else {
        return Err(fail(
            "metadata",
            "kind",
            "`metadata` with `name` and `namespace` is required".into(),
        ));
    };
    let name = match meta.name {
        Some(name) if !name.is_empty() => name,
        _ => {
            return Err(fail(
                "metadata.name",
                "metadata",
                "`name` is required".into(),
            ));
        }
    };
    let namespace = match meta.namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => {
            return Err(fail(
                "metadata.namespace",
                "metadata",
                "`namespace` is required: it decides which workloads the policy applies to \
                 (in the root namespace: every workload of the mesh)"
                    .into(),
            ));
        }
    };
    if !seen.insert((policy_kind, namespace.clone(), name.clone())) {
        return Err(fail(
            "metadata.name",
            "name",
            format!("{kind} {namespace}/{name} is defined twice"),
        ));
    }
    let meta = Meta { namespace, name };
    // No `spec` is an empty spec, as in Kubernetes.
    match (policy_kind, spec) {
        (PolicyKind::AuthorizationPolicy, spec) => {
            let spec = match spec {
                Some(Spec::Authz(spec)) => spec,
                _ => AuthorizationPolicySpec::default(),
            };
            spec.validate()
                .map_err(|e| spec_failure(e.field, e.message))?;
            Ok(Resource::AuthorizationPolicy { meta, spec })
        }
        (PolicyKind::PeerAuthentication, spec) => {
            let spec = match spec {
                Some(Spec::PeerAuthn(spec)) => spec,
                _ => PeerAuthenticationSpec::default(),
            };
            spec.validate()
                .map_err(|e| spec_failure(e.field, e.message))?;
            Ok(Resource::PeerAuthentication { meta, spec })
        }
    }
}

fn spec_failure(field: &'static str, message: String) -> FieldFailure {
    FieldFailure {
        field: format!("spec.{field}"),
        key: field,
        message,
    }
}
