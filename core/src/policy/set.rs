//! The policies of one config version, indexed for per-connection lookups
//! and printable (`Serialize`) for `/config_dump`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::compile::{CompiledPolicy, compile};
use super::model::{Action, AuthorizationPolicySpec, PeerAuthenticationSpec, has_labels};
use super::resource::{PolicyKind, Resource};
use crate::config::Workload;

/// The root namespace when none is configured: the control plane's.
pub const DEFAULT_ROOT_NAMESPACE: &str = "amesh-system";
/// Always a root namespace too, so that users' mesh-wide Istio YAML works.
pub const ISTIO_ROOT_NAMESPACE: &str = "istio-system";

const TARGET_REF_SKIPPED: &str =
    "has targetRef/targetRefs: it applies at a waypoint or gateway, never at ztunnel";
const ROOT_SELECTOR_SKIPPED: &str = "a PeerAuthentication with a selector in the root namespace \
     is ignored (as in Istio): put it in the workload's namespace";

/// A policy by namespace and name; cheap to clone. Displays as `ns/name`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRef {
    namespace: Arc<str>,
    name: Arc<str>,
}

impl PolicyRef {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Debug for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyRef({self})")
    }
}

impl Serialize for PolicyRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which workloads an AuthorizationPolicy applies to, within the namespace
/// scope the index gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    /// Read from YAML: the spec's label selector (none: every workload).
    Labels,
    /// From xDS, NAMESPACE or GLOBAL scope: every workload in scope.
    All,
    /// From xDS, WORKLOAD_SELECTOR scope: the workloads the control plane
    /// bound it to (their `authorization_policies` name it).
    Bound,
}

#[derive(Debug)]
pub(crate) struct AuthzEntry {
    pub policy: PolicyRef,
    pub namespace: String,
    pub name: String,
    /// In a root namespace: applies to matching workloads of every namespace.
    pub mesh_wide: bool,
    pub skipped: Option<&'static str>,
    pub action: Action,
    pub selection: Selection,
    pub compiled: CompiledPolicy,
    /// As written; `None` when received over xDS (compiled form only).
    pub spec: Option<AuthorizationPolicySpec>,
    /// The xDS scope, for `/config_dump`, when received over xDS.
    pub scope: Option<&'static str>,
}

impl AuthzEntry {
    /// Bound to the workloads it selects by the control plane: Istio's
    /// WORKLOAD_SELECTOR scope.
    pub(crate) fn is_selector_scoped(&self) -> bool {
        match self.selection {
            Selection::Labels => has_labels(self.spec.as_ref().and_then(|s| s.selector.as_ref())),
            Selection::Bound => true,
            Selection::All => false,
        }
    }

    /// Namespace scope is the index's job; this checks the selection.
    pub fn selects(&self, dst: &Workload) -> bool {
        match self.selection {
            Selection::All => true,
            Selection::Labels => self
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_none_or(|s| s.matches(&dst.labels)),
            Selection::Bound => dst
                .authorization_policies
                .iter()
                .any(|n| names_policy(n, &self.namespace, &self.name)),
        }
    }
}

/// `full == "{namespace}/{name}"`, without allocating.
fn names_policy(full: &str, namespace: &str, name: &str) -> bool {
    full.len() == namespace.len() + 1 + name.len()
        && full.starts_with(namespace)
        && full.as_bytes().get(namespace.len()) == Some(&b'/')
        && full.ends_with(name)
}

impl Serialize for AuthzEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("namespace", &self.namespace)?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("meshWide", &self.mesh_wide)?;
        if let Some(skipped) = self.skipped {
            map.serialize_entry("skipped", skipped)?;
        }
        if !self.compiled.l7_attributes.is_empty() {
            map.serialize_entry("l7Attributes", &self.compiled.l7_attributes)?;
        }
        match &self.spec {
            Some(spec) => map.serialize_entry("spec", spec)?,
            // From xDS: the compiled rules are all there is to show.
            None => {
                if let Some(scope) = self.scope {
                    map.serialize_entry("scope", scope)?;
                }
                map.serialize_entry("action", &self.action)?;
                map.serialize_entry("rules", &self.compiled.rules)?;
            }
        }
        map.end()
    }
}

/// Which level of Istio's PeerAuthentication hierarchy a policy sits at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Level {
    Mesh,
    Namespace,
    Workload,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PeerAuthEntry {
    #[serde(skip)]
    pub policy: PolicyRef,
    pub namespace: String,
    pub name: String,
    pub level: Level,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'static str>,
    pub spec: PeerAuthenticationSpec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Inner {
    pub root_namespace: String,
    /// In file order, skipped ones included.
    pub authorization_policies: Vec<AuthzEntry>,
    pub peer_authentications: Vec<PeerAuthEntry>,
    /// Indexes into `authorization_policies` of those ztunnel enforces.
    #[serde(skip)]
    pub mesh_wide: Vec<usize>,
    #[serde(skip)]
    pub by_namespace: HashMap<String, Vec<usize>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
            authorization_policies: Vec::new(),
            peer_authentications: Vec::new(),
            mesh_wide: Vec::new(),
            by_namespace: HashMap::new(),
        }
    }
}

impl Inner {
    pub fn is_root(&self, namespace: &str) -> bool {
        namespace == self.root_namespace || namespace == ISTIO_ROOT_NAMESPACE
    }

    /// The AuthorizationPolicies that apply to `dst`: mesh-wide ones first,
    /// then its namespace's, each in file order.
    pub fn applicable<'a>(&'a self, dst: &'a Workload) -> impl Iterator<Item = &'a AuthzEntry> {
        self.applicable_with(self.local(dst), dst)
    }

    /// Indexes of the policies of `dst`'s namespace, looked up once per
    /// decision.
    pub fn local(&self, dst: &Workload) -> &[usize] {
        self.by_namespace
            .get(dst.namespace.as_str())
            .map_or(&[], Vec::as_slice)
    }

    /// As [`Inner::applicable`], with [`Inner::local`] already looked up.
    pub fn applicable_with<'a>(
        &'a self,
        local: &'a [usize],
        dst: &'a Workload,
    ) -> impl Iterator<Item = &'a AuthzEntry> {
        self.mesh_wide
            .iter()
            .chain(local)
            .filter_map(|&i| self.authorization_policies.get(i))
            .filter(move |p| p.selects(dst))
    }
}

/// The AuthorizationPolicies and PeerAuthentications of one config
/// version. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub(super) inner: Arc<Inner>,
}

impl Serialize for PolicySet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

/// A policy that is in the config but not enforced by ztunnel, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkippedPolicy<'a> {
    pub kind: PolicyKind,
    pub policy: &'a PolicyRef,
    pub reason: &'static str,
}

impl PolicySet {
    pub(crate) fn build(resources: Vec<Resource>, root_namespace: &str) -> Self {
        let mut inner = Inner {
            root_namespace: root_namespace.to_owned(),
            ..Inner::default()
        };
        for resource in resources {
            match resource {
                Resource::AuthorizationPolicy { meta, spec } => {
                    let mesh_wide = inner.is_root(&meta.namespace);
                    let skipped = (spec.target_ref.is_some() || !spec.target_refs.is_empty())
                        .then_some(TARGET_REF_SKIPPED);
                    let index = inner.authorization_policies.len();
                    if skipped.is_none() {
                        if mesh_wide {
                            inner.mesh_wide.push(index);
                        } else {
                            let local = inner.by_namespace.entry(meta.namespace.clone());
                            local.or_default().push(index);
                        }
                    }
                    inner.authorization_policies.push(AuthzEntry {
                        policy: PolicyRef::new(&meta.namespace, &meta.name),
                        compiled: compile(&spec, &meta.namespace),
                        namespace: meta.namespace,
                        name: meta.name,
                        mesh_wide,
                        skipped,
                        action: spec.action,
                        selection: Selection::Labels,
                        spec: Some(spec),
                        scope: None,
                    });
                }
                Resource::PeerAuthentication { meta, spec } => {
                    let root = inner.is_root(&meta.namespace);
                    let (level, skipped) = match (has_labels(spec.selector.as_ref()), root) {
                        (true, true) => (Level::Workload, Some(ROOT_SELECTOR_SKIPPED)),
                        (true, false) => (Level::Workload, None),
                        (false, true) => (Level::Mesh, None),
                        (false, false) => (Level::Namespace, None),
                    };
                    inner.peer_authentications.push(PeerAuthEntry {
                        policy: PolicyRef::new(&meta.namespace, &meta.name),
                        namespace: meta.namespace,
                        name: meta.name,
                        level,
                        skipped,
                        spec,
                    });
                }
            }
        }
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Every AuthorizationPolicy, skipped ones included, in order.
    pub(crate) fn authorization_entries(&self) -> &[AuthzEntry] {
        &self.inner.authorization_policies
    }

    /// The AuthorizationPolicies enforced for `dst` that the control plane
    /// binds to it by name (selector-scoped).
    pub(crate) fn selector_bound<'a>(
        &'a self,
        dst: &'a Workload,
    ) -> impl Iterator<Item = &'a AuthzEntry> {
        self.inner
            .applicable(dst)
            .filter(|p| p.is_selector_scoped())
    }

    /// AuthorizationPolicies plus PeerAuthentications, skipped ones included.
    pub fn len(&self) -> usize {
        self.inner.authorization_policies.len() + self.inner.peer_authentications.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured root namespace (`istio-system` is one as well).
    pub fn root_namespace(&self) -> &str {
        &self.inner.root_namespace
    }

    pub fn is_root_namespace(&self, namespace: &str) -> bool {
        self.inner.is_root(namespace)
    }

    /// The AuthorizationPolicies ztunnel enforces for `dst`.
    pub fn policies_for(&self, dst: &Workload) -> Vec<PolicyRef> {
        self.inner
            .applicable(dst)
            .map(|p| p.policy.clone())
            .collect()
    }

    /// Policies in the config that ztunnel does not enforce, and why.
    pub fn skipped(&self) -> impl Iterator<Item = SkippedPolicy<'_>> {
        let authz = self.inner.authorization_policies.iter().filter_map(|p| {
            p.skipped.map(|reason| SkippedPolicy {
                kind: PolicyKind::AuthorizationPolicy,
                policy: &p.policy,
                reason,
            })
        });
        let peer = self.inner.peer_authentications.iter().filter_map(|p| {
            p.skipped.map(|reason| SkippedPolicy {
                kind: PolicyKind::PeerAuthentication,
                policy: &p.policy,
                reason,
            })
        });
        authz.chain(peer)
    }

    /// AuthorizationPolicies whose rules use L7 attributes, with them: they
    /// need a waypoint to be enforced as written.
    pub fn needing_waypoint(&self) -> impl Iterator<Item = (&PolicyRef, Vec<&str>)> {
        self.inner
            .authorization_policies
            .iter()
            .filter(|p| p.skipped.is_none() && p.compiled.needs_waypoint())
            .map(|p| {
                let attributes = p.compiled.l7_attributes.iter().map(String::as_str);
                (&p.policy, attributes.collect())
            })
    }
}
