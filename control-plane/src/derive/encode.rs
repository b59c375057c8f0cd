//! The model → the resources discovery serves, one [`ResourceSet`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use amesh_core::config::ConfigSnapshot;
use amesh_core::config::enrollment::Enrollment;
use amesh_core::xds::convert::{AuthorizationOutput, address_resources};
use amesh_core::xds::proto::amesh::{NamespaceEnrollment, PodEnrollment, WaypointConfig};
use amesh_core::xds::proto::istio::security::Authorization;
use amesh_core::xds::proto::istio::workload::Address;
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
#[derive(Debug)]
pub struct EncodeCaches {
    pub addresses: MessageCache<Address>,
    pub authorizations: MessageCache<Authorization>,
    pub pods: MessageCache<PodEnrollment>,
}

impl Default for EncodeCaches {
    fn default() -> Self {
        Self {
            addresses: MessageCache::new(ADDRESS_TYPE),
            authorizations: MessageCache::new(AUTHORIZATION_TYPE),
            pods: MessageCache::new(POD_ENROLLMENT_TYPE),
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
    cache: &mut MessageCache<PodEnrollment>,
    pod: &PodWorkload,
) -> Arc<XdsResource> {
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
    cache.resource(w.uid.clone(), message, Some(&w.node))
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
    for (name, address) in address_resources(model) {
        add(ADDRESS_TYPE, caches.addresses.resource(name, address, None));
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
