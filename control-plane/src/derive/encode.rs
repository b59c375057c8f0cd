//! Derived state → the resources discovery serves, one [`ResourceSet`],
//! changed in place from the last derivation's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use amesh_core::config::enrollment::Enrollment;
use amesh_core::xds::proto::amesh::{NamespaceEnrollment, PodEnrollment, WaypointConfig};
use amesh_core::xds::{
    ADDRESS_TYPE, AUTHORIZATION_TYPE, NAMESPACE_ENROLLMENT_TYPE, POD_ENROLLMENT_TYPE,
    WAYPOINT_CONFIG_TYPE,
};

use prost::Message;

use super::shard::Shard;
use super::workloads::PodWorkload;
use crate::resources::{ResourceSet, Resources, XdsResource};

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

/// What node agents need of one pod: whether to capture it, and why not.
pub fn encode_pod_enrollment(pod: &PodWorkload) -> XdsResource {
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

/// One namespace's enrollment for node agents.
pub fn namespace_enrollment(
    name: &str,
    labels: &BTreeMap<String, String>,
    ambient: bool,
) -> Arc<XdsResource> {
    let message = NamespaceEnrollment {
        name: name.to_owned(),
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ambient,
    };
    Arc::new(XdsResource::new(NAMESPACE_ENROLLMENT_TYPE, name, &message))
}

pub fn waypoint_config(config: &WaypointConfig) -> Arc<XdsResource> {
    let name = format!("{}/{}", config.namespace, config.name);
    Arc::new(XdsResource::new(WAYPOINT_CONFIG_TYPE, name, config))
}

/// Puts `resource` in `map` unless the same version is there: an
/// unchanged entry stays shared with the last derivation's map.
fn put(map: &mut Resources, resource: Arc<XdsResource>) {
    match map.get(&resource.name) {
        Some(old)
            if Arc::ptr_eq(old, &resource)
                || (old.version == resource.version && old.node == resource.node) => {}
        _ => {
            map.insert(resource.name.clone(), resource);
        }
    }
}

/// Makes `map` hold exactly `wanted`.
fn sync(map: &mut Resources, wanted: Vec<Arc<XdsResource>>) {
    let names: HashSet<&str> = wanted.iter().map(|r| r.name.as_str()).collect();
    let gone: Vec<String> = map
        .keys()
        .filter(|k| !names.contains(k.as_str()))
        .cloned()
        .collect();
    for name in gone {
        map.remove(&name);
    }
    for resource in wanted {
        put(map, resource);
    }
}

/// The shards' and the global resources, as a change to `previous`: only
/// namespaces whose shard is new are touched.
pub fn resource_set(
    previous: ResourceSet,
    old_shards: &HashMap<String, Arc<Shard>>,
    shards: &BTreeMap<String, Arc<Shard>>,
    global: GlobalResources,
) -> ResourceSet {
    let mut set = previous;
    // Every type is present, even empty, so subscribers learn "nothing".
    for type_url in [
        ADDRESS_TYPE,
        AUTHORIZATION_TYPE,
        POD_ENROLLMENT_TYPE,
        NAMESPACE_ENROLLMENT_TYPE,
        WAYPOINT_CONFIG_TYPE,
    ] {
        set.by_type.entry(type_url).or_default();
    }
    let mut per_shard: BTreeMap<&'static str, Resources> = BTreeMap::new();
    for type_url in [ADDRESS_TYPE, POD_ENROLLMENT_TYPE] {
        per_shard.insert(type_url, set.by_type.remove(type_url).unwrap_or_default());
    }
    let unchanged = |ns: &str, shard: &Arc<Shard>| {
        old_shards
            .get(ns)
            .is_some_and(|old| Arc::ptr_eq(old, shard))
    };
    // Namespaces gone, or derived again: take out what they had.
    for (ns, old) in old_shards {
        if shards.get(ns).is_some_and(|new| unchanged(ns, new)) {
            continue;
        }
        let now: HashSet<(&str, &str)> = shards
            .get(ns)
            .map(|s| s.resources().map(|(t, r)| (t, r.name.as_str())).collect())
            .unwrap_or_default();
        for (type_url, resource) in old.resources() {
            if !now.contains(&(type_url, resource.name.as_str()))
                && let Some(map) = per_shard.get_mut(type_url)
            {
                map.remove(&resource.name);
            }
        }
    }
    for (ns, shard) in shards {
        if unchanged(ns, shard) {
            continue;
        }
        for (type_url, resource) in shard.resources() {
            if let Some(map) = per_shard.get_mut(type_url) {
                put(map, resource.clone());
            }
        }
    }
    set.by_type.extend(per_shard);
    for (type_url, wanted) in [
        (AUTHORIZATION_TYPE, global.authorizations),
        (NAMESPACE_ENROLLMENT_TYPE, global.namespaces),
        (WAYPOINT_CONFIG_TYPE, global.waypoints),
    ] {
        if let Some(map) = set.by_type.get_mut(type_url) {
            sync(map, wanted);
        }
    }
    set
}

/// Resources not kept per namespace (few).
#[derive(Debug, Default)]
pub struct GlobalResources {
    pub authorizations: Vec<Arc<XdsResource>>,
    pub namespaces: Vec<Arc<XdsResource>>,
    pub waypoints: Vec<Arc<XdsResource>>,
}
