//! The model → the resources discovery serves, one [`ResourceSet`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use amesh_core::config::ConfigSnapshot;
use amesh_core::config::enrollment::Enrollment;
use amesh_core::config::{Service, ServicePort, Workload};
use amesh_core::xds::convert::{AuthorizationOutput, ServiceIndex, service_to_proto};
use amesh_core::xds::proto::amesh::{NamespaceEnrollment, PodEnrollment, WaypointConfig};
use amesh_core::xds::proto::istio::security::Authorization;
use amesh_core::xds::proto::istio::workload::{Address, address};
use amesh_core::xds::{
    ADDRESS_TYPE, AUTHORIZATION_TYPE, NAMESPACE_ENROLLMENT_TYPE, POD_ENROLLMENT_TYPE,
    WAYPOINT_CONFIG_TYPE,
};

use prost::Message;

use super::workloads::PodWorkload;
use crate::resources::{ResourceSet, XdsResource};

fn ip_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Encoded resources of one message type, kept across derivations: a
/// resource whose message is unchanged is reused as it was (no encoding,
/// no hashing), so a derivation after a small change mostly compares.
#[derive(Debug)]
pub struct MessageCache<M> {
    type_url: &'static str,
    last: HashMap<String, (M, Arc<XdsResource>)>,
    next: HashMap<String, (M, Arc<XdsResource>)>,
}

impl<M: Message + PartialEq> MessageCache<M> {
    pub fn new(type_url: &'static str) -> Self {
        Self {
            type_url,
            last: HashMap::new(),
            next: HashMap::new(),
        }
    }

    pub fn resource(&mut self, name: String, message: M, node: Option<&str>) -> Arc<XdsResource> {
        if let Some((old, resource)) = self.last.remove(&name)
            && old == message
            && resource.node.as_deref() == node
        {
            self.next.insert(name, (old, resource.clone()));
            return resource;
        }
        let mut resource = XdsResource::new(self.type_url, name.as_str(), &message);
        resource.node = node.map(str::to_owned);
        let resource = Arc::new(resource);
        self.next.insert(name, (message, resource.clone()));
        resource
    }

    /// Forgets what this derivation did not ask for.
    pub fn end_round(&mut self) {
        self.last = std::mem::take(&mut self.next);
    }
}

/// The caches of every type the derivation encodes.
/// Encoded resources by the inputs they are a pure function of: a
/// workload (with its bound policies) plus `K` (its services, or its
/// enrollment). Comparing inputs is much cheaper than building and
/// comparing the 10,000 messages of a large cluster on every change; only
/// changed workloads are converted and encoded again.
#[derive(Debug)]
pub struct WorkloadCache<K> {
    last: HashMap<String, (Workload, K, Arc<XdsResource>)>,
    next: HashMap<String, (Workload, K, Arc<XdsResource>)>,
}

impl<K> Default for WorkloadCache<K> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
            next: HashMap::new(),
        }
    }
}

impl<K> WorkloadCache<K> {
    /// The cached resource when `w` and `same(key)` hold, else `build()`'s.
    fn resource(
        &mut self,
        w: &Workload,
        same: impl FnOnce(&K) -> bool,
        build: impl FnOnce() -> (K, XdsResource),
    ) -> Arc<XdsResource> {
        if let Some(entry) = self.last.remove(&w.uid)
            && entry.0 == *w
            && same(&entry.1)
        {
            let resource = entry.2.clone();
            self.next.insert(w.uid.clone(), entry);
            return resource;
        }
        let (key, resource) = build();
        let resource = Arc::new(resource);
        self.next
            .insert(w.uid.clone(), (w.clone(), key, resource.clone()));
        resource
    }

    fn end_round(&mut self) {
        self.last = std::mem::take(&mut self.next);
    }
}

/// A service as a workload's Address shows it (`namespace/hostname` and
/// ports), to tell whether a cached Address is still right.
type ServiceKey = Vec<(String, String, Vec<ServicePort>)>;

fn same_services(key: &ServiceKey, services: &[&Service]) -> bool {
    key.len() == services.len()
        && key.iter().zip(services).all(|((ns, host, ports), s)| {
            *ns == s.namespace && *host == s.hostname && *ports == s.ports
        })
}

#[derive(Debug)]
pub struct EncodeCaches {
    pub addresses: WorkloadCache<ServiceKey>,
    pub authorizations: MessageCache<Authorization>,
    pub pods: WorkloadCache<Enrollment>,
}

impl Default for EncodeCaches {
    fn default() -> Self {
        Self {
            addresses: WorkloadCache::default(),
            authorizations: MessageCache::new(AUTHORIZATION_TYPE),
            pods: WorkloadCache::default(),
        }
    }
}

impl EncodeCaches {
    fn end_round(&mut self) {
        self.addresses.end_round();
        self.authorizations.end_round();
        self.pods.end_round();
    }
}

/// What node agents need of one pod: whether to capture it, and why not.
pub fn pod_enrollment(
    cache: &mut WorkloadCache<Enrollment>,
    pod: &PodWorkload,
) -> Arc<XdsResource> {
    cache.resource(
        &pod.workload,
        |enrollment| *enrollment == pod.enrollment,
        || (pod.enrollment, encode_pod_enrollment(pod)),
    )
}

fn encode_pod_enrollment(pod: &PodWorkload) -> XdsResource {
    let w = &pod.workload;
    let reason = match pod.enrollment {
        Enrollment::Ambient => String::new(),
        Enrollment::Out(reason) => reason.to_string(),
    };
    let message = PodEnrollment {
        uid: w.uid.clone(),
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        node: w.node.clone(),
        addresses: w.ips.iter().copied().map(ip_bytes).collect(),
        ambient: pod.enrollment.is_ambient(),
        reason,
        host_network: w.host_network,
        netns: String::new(),
        labels: w
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        service_account: w.service_account.clone(),
    };
    XdsResource::new(POD_ENROLLMENT_TYPE, w.uid.as_str(), &message).for_node(w.node.as_str())
}

pub fn namespace_enrollments(model: &ConfigSnapshot) -> Vec<XdsResource> {
    model
        .namespaces()
        .values()
        .map(|ns| {
            let message = NamespaceEnrollment {
                name: ns.name.clone(),
                labels: ns
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ambient: model.namespace_is_ambient(&ns.name),
            };
            XdsResource::new(NAMESPACE_ENROLLMENT_TYPE, &ns.name, &message)
        })
        .collect()
}

/// Every resource of every type.
pub fn resource_set(
    caches: &mut EncodeCaches,
    model: &ConfigSnapshot,
    pod_enrollments: Vec<Arc<XdsResource>>,
    authorizations: AuthorizationOutput,
    waypoints: Vec<WaypointConfig>,
) -> ResourceSet {
    let mut set = ResourceSet::default();
    // Every type is present, even empty, so subscribers learn "nothing".
    for type_url in [
        ADDRESS_TYPE,
        AUTHORIZATION_TYPE,
        POD_ENROLLMENT_TYPE,
        NAMESPACE_ENROLLMENT_TYPE,
        WAYPOINT_CONFIG_TYPE,
    ] {
        set.by_type.insert(type_url, BTreeMap::new());
    }
    let mut add = |type_url: &'static str, resource: Arc<XdsResource>| {
        if let Some(of_type) = set.by_type.get_mut(type_url) {
            of_type.insert(resource.name.clone(), resource);
        }
    };
    let index = ServiceIndex::new(model);
    for w in model.workloads() {
        let services = index.services_of(&w.uid);
        let resource = caches.addresses.resource(
            w,
            |key| same_services(key, services),
            || {
                let key = services
                    .iter()
                    .map(|s| (s.namespace.clone(), s.hostname.clone(), s.ports.clone()))
                    .collect();
                let address = Address {
                    r#type: Some(address::Type::Workload(index.workload_to_proto(w))),
                };
                (
                    key,
                    XdsResource::new(ADDRESS_TYPE, w.uid.as_str(), &address),
                )
            },
        );
        add(ADDRESS_TYPE, resource);
    }
    for entry in model.services() {
        let s = &entry.service;
        let address = Address {
            r#type: Some(address::Type::Service(service_to_proto(s))),
        };
        let name = format!("{}/{}", s.namespace, s.hostname);
        add(
            ADDRESS_TYPE,
            Arc::new(XdsResource::new(ADDRESS_TYPE, name, &address)),
        );
    }
    for (name, authorization) in authorizations.resources {
        let resource = caches.authorizations.resource(name, authorization, None);
        add(AUTHORIZATION_TYPE, resource);
    }
    for pod in pod_enrollments {
        add(POD_ENROLLMENT_TYPE, pod);
    }
    caches.end_round();
    for ns in namespace_enrollments(model) {
        set.insert(NAMESPACE_ENROLLMENT_TYPE, ns);
    }
    for config in waypoints {
        let name = format!("{}/{}", config.namespace, config.name);
        set.insert(
            WAYPOINT_CONFIG_TYPE,
            XdsResource::new(WAYPOINT_CONFIG_TYPE, name, &config),
        );
    }
    set
}
