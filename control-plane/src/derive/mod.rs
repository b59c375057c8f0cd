//! Store → what the mesh runs on: enrollment, identities, service
//! endpoints, waypoint binding and policies per workload, encoded as the
//! resources discovery serves.

use std::sync::Arc;

use amesh_core::config::ConfigSnapshot;

use crate::resources::ResourceSet;
use crate::store::Report;

/// Mesh-wide settings the derivation needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub trust_domain: String,
    /// The control plane's own namespace: the root namespace for
    /// mesh-wide policies; its pods are never enrolled.
    pub mesh_namespace: String,
    /// `cluster.local`: service hostnames are `<name>.<ns>.svc.<domain>`.
    pub cluster_domain: String,
}

/// One derivation of one store generation.
#[derive(Debug, Default)]
pub struct Derived {
    /// The store generation this was derived from.
    pub generation: u64,
    pub resources: ResourceSet,
    /// Workloads (with node and identity), services and policies: what the
    /// CA checks callers against and `/config_dump` shows.
    pub model: Arc<ConfigSnapshot>,
    /// Sources' reports plus what the derivation skipped or ignores.
    pub reports: Vec<Report>,
}
