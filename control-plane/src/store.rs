//! The typed store both sources fill: Kubernetes objects as k8s-openapi
//! types, Istio and Gateway API resources with their specs as JSON (checked
//! when derived, so both sources report bad specs the same way), and what
//! each source found wrong or unsupported.
//!
//! Writers: the folder source and the Kubernetes source. Readers take a
//! cheap [`StoreSnapshot`] (shared `Arc`s) after [`Store::subscribe`] says
//! something changed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use tokio::sync::watch;

/// The kinds the store holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    VirtualService,
    DestinationRule,
    Gateway,
    HTTPRoute,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::HTTPRoute,
    ];

    /// The kind named `kind` in `apiVersion` `api_version`, when the store
    /// holds it (every served version of the Istio kinds).
    pub fn from_api(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
        let found = match (group, kind) {
            ("", "Namespace") => Kind::Namespace,
            ("", "Pod") => Kind::Pod,
            ("", "Service") => Kind::Service,
            ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
            ("security.istio.io", "AuthorizationPolicy") => Kind::AuthorizationPolicy,
            ("security.istio.io", "PeerAuthentication") => Kind::PeerAuthentication,
            ("security.istio.io", "RequestAuthentication") => Kind::RequestAuthentication,
            ("networking.istio.io", "VirtualService") => Kind::VirtualService,
            ("networking.istio.io", "DestinationRule") => Kind::DestinationRule,
            ("gateway.networking.k8s.io", "Gateway") => Kind::Gateway,
            ("gateway.networking.k8s.io", "HTTPRoute") => Kind::HTTPRoute,
            _ => return None,
        };
        let served: &[&str] = match group {
            "" => &["v1"],
            "discovery.k8s.io" => &["v1"],
            "security.istio.io" => &["v1", "v1beta1"],
            "networking.istio.io" => &["v1", "v1beta1", "v1alpha3"],
            "gateway.networking.k8s.io" => &["v1", "v1beta1"],
            _ => &[],
        };
        served.contains(&version).then_some(found)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where an object came from, for error reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// Document `document` (0-based) of a file of the folder source.
    File {
        path: PathBuf,
        document: usize,
    },
    Kubernetes,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, document } => {
                write!(f, "{} (document {document})", path.display())
            }
            Origin::Kubernetes => f.write_str("kubernetes"),
        }
    }
}

/// An Istio or Gateway API resource: metadata plus its spec, unparsed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomObject {
    pub kind: Kind,
    pub api_version: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: serde_json::Value,
    pub origin: Origin,
}

#[derive(Clone, Debug)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Custom(Arc<CustomObject>),
}

/// The same object: the same allocation. Sources put a new `Arc` for every
/// update, so this is "unchanged since", without comparing contents.
impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Object::Namespace(a), Object::Namespace(b)) => Arc::ptr_eq(a, b),
            (Object::Pod(a), Object::Pod(b)) => Arc::ptr_eq(a, b),
            (Object::Service(a), Object::Service(b)) => Arc::ptr_eq(a, b),
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => Arc::ptr_eq(a, b),
            (Object::Custom(a), Object::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Namespace is empty for cluster-scoped kinds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How bad a [`Report`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object (or document) was skipped.
    Error,
    /// Applied, but this kind or field has no effect in amesh.
    Unsupported,
}

/// A problem a source or the derivation found, shown in the log and in
/// `/config_dump`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub severity: Severity,
    /// `path (document N)`, or `kubernetes`.
    pub origin: String,
    /// `AuthorizationPolicy prod/deny-all`, when known.
    pub object: String,
    /// Dotted field path below the object, e.g. `spec.rules[0].from`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if !self.object.is_empty() {
            write!(f, ": {}", self.object)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The objects, in (kind, namespace, name) order. A persistent map: a
/// snapshot is a pointer copy, and two snapshots' difference costs what
/// changed, not what they hold.
pub type Objects = imbl::OrdMap<ObjectKey, Object>;

/// One consistent view of the store. Cloning shares the objects.
#[derive(Clone, Debug, Default)]
pub struct StoreSnapshot {
    pub objects: Objects,
    /// By source name (e.g. `folder`, `kubernetes`).
    pub reports: BTreeMap<String, Vec<Report>>,
    /// Bumped on every change.
    pub generation: u64,
}

impl StoreSnapshot {
    /// Objects of one kind, in key order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (&ObjectKey, &Object)> {
        let start = ObjectKey::new(kind, "", "");
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
    }

    /// Objects of one kind in one namespace, in name order.
    pub fn in_namespace<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Object)> {
        let start = ObjectKey::new(kind, namespace, "");
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind && k.namespace == namespace)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }
}

/// The shared store. Every write bumps the generation that
/// [`Store::subscribe`] reports.
#[derive(Debug)]
pub struct Store {
    state: Mutex<StoreSnapshot>,
    changed: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(StoreSnapshot::default()),
            changed: watch::channel(0).0,
        }
    }

    /// Tells of every generation change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn snapshot(&self) -> StoreSnapshot {
        self.lock().clone()
    }

    /// Adds or replaces one object.
    pub fn apply(&self, key: ObjectKey, object: Object) {
        self.write(|s| {
            s.objects.insert(key, object);
        });
    }

    pub fn delete(&self, key: &ObjectKey) {
        self.write(|s| {
            s.objects.remove(key);
        });
    }

    /// Replaces every object of `kind` at once (a relist): objects not in
    /// `objects` are removed.
    pub fn replace_kind(&self, kind: Kind, objects: Vec<(ObjectKey, Object)>) {
        self.write(|s| {
            let fresh: std::collections::HashSet<&ObjectKey> =
                objects.iter().map(|(k, _)| k).collect();
            let gone: Vec<ObjectKey> = s
                .of_kind(kind)
                .map(|(k, _)| k)
                .filter(|k| !fresh.contains(k))
                .cloned()
                .collect();
            for key in gone {
                s.objects.remove(&key);
            }
            upsert(&mut s.objects, objects);
        });
    }

    /// Removes `removed` and adds or replaces `objects`, in one generation
    /// (the folder source applying one edit).
    pub fn apply_batch(&self, removed: Vec<ObjectKey>, objects: Vec<(ObjectKey, Object)>) {
        self.write(|s| {
            for key in &removed {
                s.objects.remove(key);
            }
            upsert(&mut s.objects, objects);
        });
    }

    /// Replaces the reports of `source`.
    pub fn set_reports(&self, source: &str, reports: Vec<Report>) {
        self.write(|s| {
            s.reports.insert(source.to_owned(), reports);
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreSnapshot> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, change: impl FnOnce(&mut StoreSnapshot)) {
        let generation = {
            let mut state = self.lock();
            change(&mut state);
            state.generation += 1;
            state.generation
        };
        self.changed.send_replace(generation);
    }
}

impl Object {
    /// Equal contents, whether or not the same allocation.
    pub fn same_content(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Namespace(a), Object::Namespace(b)) => a == b,
            (Object::Pod(a), Object::Pod(b)) => a == b,
            (Object::Service(a), Object::Service(b)) => a == b,
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => a == b,
            (Object::Custom(a), Object::Custom(b)) => a == b,
            _ => false,
        }
    }
}

/// Inserts what is not already there: an object equal to the stored one
/// (the same, or a file's other documents parsed again) is left as it is,
/// so that [`imbl::OrdMap::diff`] and the derivation see only what changed.
fn upsert(objects: &mut Objects, new: Vec<(ObjectKey, Object)>) {
    for (key, object) in new {
        let unchanged = objects
            .get(&key)
            .is_some_and(|old| *old == object || old.same_content(&object));
        if !unchanged {
            objects.insert(key, object);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_known_in_every_served_version() {
        for v in ["v1alpha3", "v1beta1", "v1"] {
            let api = format!("networking.istio.io/{v}");
            assert_eq!(
                Kind::from_api(&api, "VirtualService"),
                Some(Kind::VirtualService)
            );
        }
        assert_eq!(
            Kind::from_api("security.istio.io/v1beta1", "AuthorizationPolicy"),
            Some(Kind::AuthorizationPolicy)
        );
        assert_eq!(
            Kind::from_api("security.istio.io/v1alpha3", "AuthorizationPolicy"),
            None
        );
        assert_eq!(
            Kind::from_api("networking.istio.io/v1", "ServiceEntry"),
            None
        );
        assert_eq!(Kind::from_api("v1", "Pod"), Some(Kind::Pod));
    }

    #[test]
    fn replace_kind_removes_what_a_relist_no_longer_has() {
        let store = Store::new();
        let ns = |name: &str| {
            let mut n = Namespace::default();
            n.metadata.name = Some(name.to_owned());
            (
                ObjectKey::new(Kind::Namespace, "", name),
                Object::Namespace(Arc::new(n)),
            )
        };
        let (k, o) = ns("a");
        store.apply(k, o);
        let rx = store.subscribe();
        store.replace_kind(Kind::Namespace, vec![ns("b")]);
        let snap = store.snapshot();
        let names: Vec<_> = snap
            .of_kind(Kind::Namespace)
            .map(|(k, _)| &k.name)
            .collect();
        assert_eq!(names, ["b"]);
        assert_eq!(*rx.borrow(), snap.generation);
    }
}
