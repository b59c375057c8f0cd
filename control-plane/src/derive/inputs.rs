//! The store's objects, indexed so that every rule below is a lookup, not
//! a scan. Two views: [`Inputs::global`] (namespaces' labels, custom
//! objects by kind) and [`Inputs::namespace`] (one namespace's pods, by
//! label too, its services, and EndpointSlices by service).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::source::folder::ORIGIN_ANNOTATION;
use crate::store::{CustomObject, Kind, Object, ObjectKey, StoreSnapshot};

/// EndpointSlices name their Service with this label.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// One running pod.
#[derive(Debug)]
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl PodView<'_> {
    pub fn uid(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug)]
pub struct ServiceView<'a> {
    pub service: &'a Service,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Inputs<'a> {
    /// For lookups outside this view (another namespace's pod or service).
    pub snapshot: &'a StoreSnapshot,
    /// Namespace objects' labels, by name.
    pub namespaces: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    /// Pods not yet finished, in (namespace, name) order.
    pub pods: Vec<PodView<'a>>,
    /// (namespace, label key, label value) → indexes into `pods`.
    pub pods_by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
    pub services: Vec<ServiceView<'a>>,
    /// (namespace, service name) → its slices.
    pub slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    pub custom: BTreeMap<Kind, Vec<&'a Arc<CustomObject>>>,
}

fn name_of(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

pub fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.labels.as_ref().unwrap_or(&NO_LABELS)
}

/// Where an object came from, for reports: the folder source's file and
/// document, else Kubernetes.
pub fn origin_of(meta: &ObjectMeta) -> String {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ORIGIN_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| "kubernetes".to_owned())
}

/// Succeeded and Failed pods hold no IPs that matter any more.
fn is_finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

impl<'a> Inputs<'a> {
    fn empty(snapshot: &'a StoreSnapshot) -> Self {
        Inputs {
            snapshot,
            namespaces: BTreeMap::new(),
            pods: Vec::new(),
            pods_by_label: HashMap::new(),
            services: Vec::new(),
            slices: HashMap::new(),
            custom: BTreeMap::new(),
        }
    }

    /// Every Namespace's labels and every custom object; no pods, services
    /// or slices.
    pub fn global(snapshot: &'a StoreSnapshot) -> Self {
        let mut inputs = Inputs::empty(snapshot);
        for (key, object) in snapshot.of_kind(Kind::Namespace) {
            if let Object::Namespace(ns) = object {
                inputs
                    .namespaces
                    .insert(key.name.as_str(), labels_of(&ns.metadata));
            }
        }
        let first_custom = ObjectKey::new(Kind::AuthorizationPolicy, "", "");
        for (_, object) in snapshot.objects.range(first_custom..) {
            if let Object::Custom(c) = object {
                inputs.custom.entry(c.kind).or_default().push(c);
            }
        }
        inputs
    }

    /// The pods, services and EndpointSlices of `namespace`, and its labels.
    pub fn namespace(snapshot: &'a StoreSnapshot, namespace: &'a str) -> Self {
        let mut inputs = Inputs::empty(snapshot);
        let ns_key = ObjectKey::new(Kind::Namespace, "", namespace);
        if let Some(Object::Namespace(ns)) = snapshot.get(&ns_key) {
            inputs.namespaces.insert(namespace, labels_of(&ns.metadata));
        }
        for (_, object) in snapshot.in_namespace(Kind::Pod, namespace) {
            if let Object::Pod(pod) = object
                && !is_finished(pod)
            {
                inputs.pods.push(PodView {
                    pod,
                    namespace: namespace_of(&pod.metadata),
                    name: name_of(&pod.metadata),
                    labels: labels_of(&pod.metadata),
                });
            }
        }
        for (_, object) in snapshot.in_namespace(Kind::Service, namespace) {
            if let Object::Service(svc) = object {
                inputs.services.push(ServiceView {
                    service: svc,
                    namespace: namespace_of(&svc.metadata),
                    name: name_of(&svc.metadata),
                    labels: labels_of(&svc.metadata),
                });
            }
        }
        for (_, object) in snapshot.in_namespace(Kind::EndpointSlice, namespace) {
            if let Object::EndpointSlice(slice) = object
                && let Some(svc) = labels_of(&slice.metadata).get(SERVICE_NAME_LABEL)
            {
                let ns = namespace_of(&slice.metadata);
                inputs
                    .slices
                    .entry((ns, svc.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        for (i, pod) in inputs.pods.iter().enumerate() {
            for (k, v) in pod.labels {
                inputs
                    .pods_by_label
                    .entry((pod.namespace, k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        inputs
    }

    /// Service `namespace/name`, from any namespace.
    pub fn service_object(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        match self
            .snapshot
            .get(&ObjectKey::new(Kind::Service, namespace, name))
        {
            Some(Object::Service(svc)) => Some(svc),
            _ => None,
        }
    }

    /// Pod `namespace/name`, from any namespace.
    pub fn pod_object(&self, namespace: &str, name: &str) -> Option<&'a Pod> {
        match self
            .snapshot
            .get(&ObjectKey::new(Kind::Pod, namespace, name))
        {
            Some(Object::Pod(pod)) => Some(pod),
            _ => None,
        }
    }

    /// Labels of namespace `ns`, when a Namespace object says.
    pub fn namespace_labels(&self, ns: &str) -> Option<&'a BTreeMap<String, String>> {
        self.namespaces.get(ns).copied()
    }

    /// Pods of `namespace` whose labels hold every pair of `selector`
    /// (indexes into `pods`, ascending). An empty selector selects nothing,
    /// as for Services.
    pub fn select(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<usize> {
        // Start from the rarest pair, check the others on its pods only.
        let mut postings = Vec::with_capacity(selector.len());
        for (k, v) in selector {
            match self.pods_by_label.get(&(namespace, k.as_str(), v.as_str())) {
                Some(list) => postings.push(list),
                None => return Vec::new(),
            }
        }
        let Some(rarest) = postings.iter().min_by_key(|l| l.len()) else {
            return Vec::new();
        };
        rarest
            .iter()
            .copied()
            .filter(|&i| {
                let labels = self.pods[i].labels;
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect()
    }

    pub fn custom(&self, kind: Kind) -> &[&'a Arc<CustomObject>] {
        self.custom.get(&kind).map_or(&[], Vec::as_slice)
    }
}
