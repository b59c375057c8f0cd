//! Workload → `istio.workload.Workload`, and the control plane's bulk
//! conversion of a snapshot into Address resources.

use std::collections::{BTreeMap, HashMap};

use super::authorization::bound_policies;
use super::ip_bytes;
use super::service::{ports_to_proto, service_to_proto, waypoint_to_proto};
use crate::config::{ConfigSnapshot, HealthStatus, Service, Workload};
use crate::policy::PolicySet;
use crate::xds::proto::istio::workload::{
    self as proto, NetworkMode, PortList, TunnelProtocol, WorkloadStatus, address,
};

/// Which services each workload is an endpoint of: built once per snapshot
/// so that converting every workload is linear.
#[derive(Debug)]
pub struct ServiceIndex<'a> {
    snapshot: &'a ConfigSnapshot,
    by_uid: HashMap<&'a str, Vec<&'a Service>>,
    /// A lone mesh-wide STRICT PeerAuthentication: GLOBAL, bound to no one.
    global_strict: bool,
}

impl<'a> ServiceIndex<'a> {
    pub fn new(snapshot: &'a ConfigSnapshot) -> Self {
        let mut by_uid: HashMap<&str, Vec<&Service>> = HashMap::new();
        for entry in snapshot.services() {
            for uid in &entry.service.endpoints {
                by_uid.entry(uid.as_str()).or_default().push(&entry.service);
            }
        }
        Self {
            snapshot,
            by_uid,
            global_strict: snapshot.policies().mesh_only_strict().is_some(),
        }
    }

    /// The services listing `uid` as an endpoint.
    pub fn services_of(&self, uid: &str) -> &[&'a Service] {
        self.by_uid.get(uid).map_or(&[], Vec::as_slice)
    }

    /// As [`workload_to_proto`], with the index.
    pub fn workload_to_proto(&self, w: &Workload) -> proto::Workload {
        let services = self.services_of(&w.uid).iter().copied();
        convert(self.snapshot.policies(), w, services, self.global_strict)
    }
}

/// `w` as Istio's ztunnel expects it, given the services it is an
/// endpoint of (the control plane knows them per namespace).
pub fn workload_proto<'s>(
    policies: &PolicySet,
    w: &Workload,
    services: impl Iterator<Item = &'s Service>,
) -> proto::Workload {
    let global_strict = policies.mesh_only_strict().is_some();
    convert(policies, w, services, global_strict)
}

/// `w` as Istio's ztunnel expects it. For many workloads, use
/// [`ServiceIndex::workload_to_proto`]: this scans every service.
pub fn workload_to_proto(snapshot: &ConfigSnapshot, w: &Workload) -> proto::Workload {
    let services = snapshot
        .services()
        .map(|e| &e.service)
        .filter(|s| s.endpoints.contains(&w.uid));
    let global_strict = snapshot.policies().mesh_only_strict().is_some();
    convert(snapshot.policies(), w, services, global_strict)
}

/// Every workload (named by uid) and service (`namespace/hostname`) of
/// `snapshot`, in snapshot order.
pub fn address_resources(snapshot: &ConfigSnapshot) -> Vec<(String, proto::Address)> {
    let index = ServiceIndex::new(snapshot);
    let workloads = snapshot.workloads().map(|w| {
        let address = proto::Address {
            r#type: Some(address::Type::Workload(index.workload_to_proto(w))),
        };
        (w.uid.clone(), address)
    });
    let services = snapshot.services().map(|e| {
        let s = &e.service;
        let address = proto::Address {
            r#type: Some(address::Type::Service(service_to_proto(s))),
        };
        (format!("{}/{}", s.namespace, s.hostname), address)
    });
    workloads.chain(services).collect()
}

fn convert<'s>(
    policies: &PolicySet,
    w: &Workload,
    services: impl Iterator<Item = &'s Service>,
    global_strict: bool,
) -> proto::Workload {
    let services: BTreeMap<String, PortList> = services
        .map(|s| {
            let ports = PortList {
                ports: ports_to_proto(&s.ports),
            };
            (format!("{}/{}", s.namespace, s.hostname), ports)
        })
        .collect();
    let (canonical_name, canonical_revision) = canonical(w);
    proto::Workload {
        uid: w.uid.clone(),
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        addresses: w.ips.iter().map(|&ip| ip_bytes(ip)).collect(),
        tunnel_protocol: if w.in_mesh() {
            TunnelProtocol::Hbone
        } else {
            TunnelProtocol::None
        }
        .into(),
        trust_domain: w.identity.trust_domain().to_owned(),
        service_account: w.service_account.clone(),
        waypoint: w.waypoint.as_ref().map(waypoint_to_proto),
        node: w.node.clone(),
        canonical_name: canonical_name.to_owned(),
        canonical_revision: canonical_revision.to_owned(),
        workload_name: w.name.clone(),
        services,
        authorization_policies: bound_policies(policies, w, global_strict),
        status: match w.status {
            HealthStatus::Healthy => WorkloadStatus::Healthy,
            HealthStatus::Unhealthy => WorkloadStatus::Unhealthy,
        }
        .into(),
        network_mode: if w.host_network {
            NetworkMode::HostNetwork
        } else {
            NetworkMode::Standard
        }
        .into(),
        ..proto::Workload::default()
    }
}

/// Istio's canonical service name and revision, from the labels.
fn canonical(w: &Workload) -> (&str, &str) {
    let name = first(
        &w.labels,
        &[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ],
    )
    .unwrap_or(&w.name);
    let revision = first(
        &w.labels,
        &[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ],
    )
    .unwrap_or("latest");
    (name, revision)
}

fn first<'a>(labels: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .filter_map(|k| labels.get(*k))
        .find(|v| !v.is_empty())
        .map(String::as_str)
}
