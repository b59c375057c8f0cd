//! What ztunnel and the node agent received → a [`ConfigSnapshot`].

use std::collections::{BTreeMap, HashMap, HashSet};

use super::ConvertError;
use super::service::{At, service_from_proto, waypoint_from_proto};
use crate::config::{
    ConfigSnapshot, HealthStatus, ModelParts, Namespace, Protocol, Service, Workload,
};
use crate::identity::{DEFAULT_TRUST_DOMAIN, Identity};
use crate::policy::{DEFAULT_ROOT_NAMESPACE, PolicySet};
use crate::xds::proto::amesh::{NamespaceEnrollment, PodEnrollment};
use crate::xds::proto::istio::security::Authorization;
use crate::xds::proto::istio::workload::{
    self as proto, NetworkMode, TunnelProtocol, WorkloadStatus, address,
};

/// The resources a client holds, by type.
#[derive(Clone, Debug, Default)]
pub struct XdsInput<'a> {
    pub addresses: Vec<&'a proto::Address>,
    pub authorizations: Vec<&'a Authorization>,
    pub pods: Vec<&'a PodEnrollment>,
    pub namespaces: Vec<&'a NamespaceEnrollment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// For workloads whose trust domain is elided.
    pub trust_domain: String,
    /// Policies here (and in `istio-system`) may apply mesh-wide; its pods
    /// are never enrolled.
    pub root_namespace: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
        }
    }
}

/// Builds the snapshot: workloads from Address workloads (ztunnel) and
/// pod enrollments (node agent; an Address workload of the same uid wins),
/// services with the workloads naming them as endpoints (by uid), policies
/// from the Authorizations. Refuses bad input, naming resource and field.
pub fn snapshot_from_xds(
    input: XdsInput<'_>,
    opts: &ClientOptions,
) -> Result<ConfigSnapshot, ConvertError> {
    let mut workloads = Vec::new();
    let mut services = Vec::new();
    let mut uids = HashSet::new();
    for (i, addr) in input.addresses.iter().enumerate() {
        match &addr.r#type {
            Some(address::Type::Workload(w)) => {
                let w = workload_from_proto(w, opts)?;
                if !uids.insert(w.uid.clone()) {
                    let at = At("Address");
                    return Err(at.err("workload.uid", format!("uid {:?} is sent twice", w.uid)));
                }
                workloads.push((w, proto_services(addr)));
            }
            Some(address::Type::Service(s)) => services.push(service_from_proto(s)?),
            None => {
                let label = format!("Address #{i}");
                return Err(At(&label).err("type", "neither workload nor service"));
            }
        }
    }
    for pod in &input.pods {
        let w = pod_from_proto(pod, opts)?;
        if uids.insert(w.uid.clone()) {
            workloads.push((w, Vec::new()));
        }
    }
    // Endpoints by uid, for a deterministic order.
    workloads.sort_by(|a, b| a.0.uid.cmp(&b.0.uid));
    let mut endpoints: HashMap<&str, Vec<String>> = HashMap::new();
    for (w, names) in &workloads {
        for name in names {
            endpoints
                .entry(name.as_str())
                .or_default()
                .push(w.uid.clone());
        }
    }
    for s in &mut services {
        let key = format!("{}/{}", s.namespace, s.hostname);
        s.endpoints = endpoints.remove(key.as_str()).unwrap_or_default();
    }
    let namespaces = namespaces_from_proto(&input.namespaces)?;
    let auths: Vec<Authorization> = input.authorizations.into_iter().cloned().collect();
    let policies = PolicySet::from_authorizations(auths, &opts.root_namespace)?;
    Ok(ConfigSnapshot::from_parts(ModelParts {
        namespaces,
        workloads: workloads.into_iter().map(|(w, _)| w).collect(),
        services: services_sorted(services),
        policies,
        mesh_namespace: opts.root_namespace.clone(),
    }))
}

fn services_sorted(mut services: Vec<Service>) -> Vec<Service> {
    services.sort_by(|a, b| (&a.namespace, &a.hostname).cmp(&(&b.namespace, &b.hostname)));
    services
}

/// The `namespace/hostname` keys of a workload's services, sorted.
fn proto_services(addr: &proto::Address) -> Vec<String> {
    match &addr.r#type {
        Some(address::Type::Workload(w)) => {
            let mut names: Vec<String> = w.services.keys().cloned().collect();
            names.sort();
            names
        }
        _ => Vec::new(),
    }
}

fn namespaces_from_proto(list: &[&NamespaceEnrollment]) -> Result<Vec<Namespace>, ConvertError> {
    let mut seen = HashSet::new();
    list.iter()
        .map(|n| {
            let label = format!("NamespaceEnrollment {}", n.name);
            if n.name.is_empty() {
                return Err(At(&label).err("name", "must not be empty"));
            }
            if !seen.insert(n.name.as_str()) {
                return Err(At(&label).err("name", "sent twice"));
            }
            Ok(Namespace {
                name: n.name.clone(),
                labels: n
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
        })
        .collect()
}

fn ips(at: &At<'_>, addresses: &[Vec<u8>]) -> Result<Vec<std::net::IpAddr>, ConvertError> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, a)| super::ip_from_bytes(a).map_err(|m| at.err(format!("addresses[{i}]"), m)))
        .collect()
}

fn identity(
    at: &At<'_>,
    trust_domain: &str,
    namespace: &str,
    service_account: &str,
) -> Result<Identity, ConvertError> {
    Identity::new(trust_domain, namespace, service_account)
        .map_err(|e| at.err("service_account", e.to_string()))
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

pub(super) fn workload_from_proto(
    w: &proto::Workload,
    opts: &ClientOptions,
) -> Result<Workload, ConvertError> {
    let label = format!("Address {}", w.uid);
    let at = At(&label);
    if w.uid.is_empty() {
        let label = format!("Address {}/{}", w.namespace, w.name);
        return Err(At(&label).err("workload.uid", "missing: every workload needs a uid"));
    }
    if w.name.is_empty() || w.namespace.is_empty() {
        return Err(at.err("workload.name", "name and namespace must be set"));
    }
    let protocol = match TunnelProtocol::try_from(w.tunnel_protocol) {
        Ok(TunnelProtocol::Hbone) => Protocol::Hbone,
        Ok(TunnelProtocol::None) => Protocol::Tcp,
        Err(_) => {
            return Err(at.err(
                "workload.tunnel_protocol",
                format!("unknown value {}", w.tunnel_protocol),
            ));
        }
    };
    let status = match WorkloadStatus::try_from(w.status) {
        Ok(WorkloadStatus::Healthy) => HealthStatus::Healthy,
        Ok(WorkloadStatus::Unhealthy) => HealthStatus::Unhealthy,
        Err(_) => return Err(at.err("workload.status", format!("unknown value {}", w.status))),
    };
    let host_network = match NetworkMode::try_from(w.network_mode) {
        Ok(mode) => mode == NetworkMode::HostNetwork,
        Err(_) => {
            return Err(at.err(
                "workload.network_mode",
                format!("unknown value {}", w.network_mode),
            ));
        }
    };
    let ips = ips(&at, &w.addresses)?;
    let service_account = or_default(&w.service_account, "default");
    let trust_domain = or_default(&w.trust_domain, &opts.trust_domain);
    let identity = identity(&at, trust_domain, &w.namespace, service_account)?;
    let waypoint = w
        .waypoint
        .as_ref()
        .map(|gw| waypoint_from_proto(&at, gw))
        .transpose()?;
    Ok(Workload {
        uid: w.uid.clone(),
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: service_account.to_owned(),
        node: w.node.clone(),
        ips,
        // Istio's workload API carries no labels: policies are bound by name.
        labels: BTreeMap::new(),
        protocol,
        netns: None,
        host_network,
        status,
        waypoint,
        identity,
        authorization_policies: w.authorization_policies.clone(),
    })
}

fn pod_from_proto(p: &PodEnrollment, opts: &ClientOptions) -> Result<Workload, ConvertError> {
    let label = format!("PodEnrollment {}", p.uid);
    let at = At(&label);
    if p.uid.is_empty() {
        let label = format!("PodEnrollment {}/{}", p.namespace, p.name);
        return Err(At(&label).err("uid", "missing: every pod needs a uid"));
    }
    if p.name.is_empty() || p.namespace.is_empty() {
        return Err(at.err("name", "name and namespace must be set"));
    }
    let netns = match p.netns.as_str() {
        "" => None,
        bad if bad.contains('/') || bad == "." || bad == ".." => {
            return Err(at.err("netns", format!("{bad:?} is not a network namespace name")));
        }
        netns => Some(netns.to_owned()),
    };
    let ips = ips(&at, &p.addresses)?;
    let service_account = or_default(&p.service_account, "default");
    let identity = identity(&at, &opts.trust_domain, &p.namespace, service_account)?;
    Ok(Workload {
        uid: p.uid.clone(),
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        service_account: service_account.to_owned(),
        node: p.node.clone(),
        ips,
        labels: p
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        protocol: if p.ambient {
            Protocol::Hbone
        } else {
            Protocol::Tcp
        },
        netns,
        host_network: p.host_network,
        status: HealthStatus::Healthy,
        waypoint: None,
        identity,
        authorization_policies: Vec::new(),
    })
}
