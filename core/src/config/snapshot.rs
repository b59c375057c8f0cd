//! An immutable, indexed view of one config version.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::model::{Namespace, Service, Workload};
use crate::policy::PolicySet;

/// A service with its endpoints resolved, and its load-balancing cursor.
#[derive(Debug)]
pub struct ServiceEntry {
    pub service: Service,
    /// In the order the config lists them.
    pub endpoints: Vec<Arc<Workload>>,
    next: AtomicUsize,
}

impl ServiceEntry {
    /// Round robin over healthy endpoints; `None` when there is none.
    pub fn pick_endpoint(&self) -> Option<&Arc<Workload>> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|w| w.is_healthy())
    }
}

/// The parts of a model built by another source than the config file (the
/// control plane from Kubernetes objects, ztunnel from xDS).
#[derive(Debug, Default)]
pub struct ModelParts {
    pub namespaces: Vec<Namespace>,
    pub workloads: Vec<Workload>,
    /// `endpoints` are workload uids.
    pub services: Vec<Service>,
    pub policies: PolicySet,
    /// The mesh's own namespace: its pods are never enrolled.
    pub mesh_namespace: String,
}

#[derive(Debug, Default)]
pub struct ConfigSnapshot {
    by_uid: HashMap<String, Arc<Workload>>,
    by_ip: HashMap<IpAddr, Arc<Workload>>,
    by_vip: HashMap<IpAddr, Arc<ServiceEntry>>,
    /// Workload uids in file order.
    order: Vec<String>,
    services: Vec<Arc<ServiceEntry>>,
    namespaces: BTreeMap<String, Namespace>,
    mesh_namespace: String,
    policies: PolicySet,
}

impl ConfigSnapshot {
    /// Builds the indexes; the caller has validated uniqueness and references.
    pub(super) fn new(workloads: Vec<Workload>, services: Vec<Service>) -> Self {
        let mut snap = Self::default();
        for workload in workloads {
            let workload = Arc::new(workload);
            for ip in &workload.ips {
                snap.by_ip.insert(*ip, workload.clone());
            }
            snap.order.push(workload.uid.clone());
            snap.by_uid.insert(workload.uid.clone(), workload);
        }
        for service in services {
            let endpoints = service
                .endpoints
                .iter()
                .filter_map(|uid| snap.by_uid.get(uid).cloned())
                .collect();
            let entry = Arc::new(ServiceEntry {
                service,
                endpoints,
                next: AtomicUsize::new(0),
            });
            for vip in &entry.service.vips {
                snap.by_vip.insert(*vip, entry.clone());
            }
            snap.services.push(entry);
        }
        snap
    }

    /// Indexes `parts`; the caller ensures workload uids are unique.
    /// Endpoints naming no workload are left out.
    pub fn from_parts(parts: ModelParts) -> Self {
        let namespaces = parts
            .namespaces
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        Self::new(parts.workloads, parts.services)
            .with_namespaces(namespaces, &parts.mesh_namespace)
            .with_policies(parts.policies)
    }

    pub(super) fn with_namespaces(
        mut self,
        namespaces: BTreeMap<String, Namespace>,
        mesh_namespace: &str,
    ) -> Self {
        self.namespaces = namespaces;
        mesh_namespace.clone_into(&mut self.mesh_namespace);
        self
    }

    /// Namespaces the config lists (with their labels), by name.
    pub fn namespaces(&self) -> &BTreeMap<String, Namespace> {
        &self.namespaces
    }

    /// Whether pods of `namespace` are in the mesh by default: it is
    /// labelled ambient and is not the mesh's own.
    pub fn namespace_is_ambient(&self, namespace: &str) -> bool {
        namespace != self.mesh_namespace
            && super::enrollment::namespace_is_ambient(
                self.namespaces.get(namespace).map(|n| &n.labels),
            )
    }

    /// The mesh's own namespace (its pods are never enrolled).
    pub fn mesh_namespace(&self) -> &str {
        &self.mesh_namespace
    }

    /// The workload named `name` in `namespace`.
    pub fn workload_by_name(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.workloads()
            .find(|w| w.namespace == namespace && w.name == name)
    }

    pub(super) fn with_policies(mut self, policies: PolicySet) -> Self {
        self.policies = policies;
        self
    }

    /// The AuthorizationPolicies and PeerAuthentications of this version.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    pub fn workload_by_uid(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.by_uid.get(uid)
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.by_ip.get(&ip)
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Arc<ServiceEntry>> {
        self.by_vip.get(&ip)
    }

    /// All workloads in file order.
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.order.iter().filter_map(|uid| self.by_uid.get(uid))
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceEntry>> {
        self.services.iter()
    }
}
