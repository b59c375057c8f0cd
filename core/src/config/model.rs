//! Validated workload and service records.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::identity::Identity;

/// How traffic reaches a workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum Protocol {
    /// Not in the mesh: plain TCP, never captured.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// In the mesh: captured by its node's ztunnel, reached over HBONE.
    #[serde(rename = "HBONE")]
    Hbone,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum HealthStatus {
    #[default]
    Healthy,
    Unhealthy,
}

/// Where a workload's or service's waypoint takes HBONE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointRef {
    pub address: IpAddr,
    #[serde(default = "hbone_port")]
    pub port: u16,
}

fn hbone_port() -> u16 {
    crate::hbone::HBONE_PORT
}

/// One pod (or VM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub node: String,
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// HBONE when the pod is enrolled ([`super::enrollment`]), or as the
    /// config states it explicitly.
    pub protocol: Protocol,
    /// Network namespace name under the node agent's netns directory, when
    /// the source knows it; otherwise the agent learns it from the CNI
    /// plugin or finds the netns that holds the pod's IP.
    pub netns: Option<String>,
    /// Runs in the node's netns: never captured.
    pub host_network: bool,
    pub status: HealthStatus,
    pub waypoint: Option<WaypointRef>,
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub identity: Identity,
    /// Selector-bound policies (`namespace/name`) as the control plane
    /// bound them (xDS); empty for file-sourced snapshots, where policies'
    /// label selectors apply instead.
    pub authorization_policies: Vec<String>,
}

impl Workload {
    pub fn in_mesh(&self) -> bool {
        self.protocol == Protocol::Hbone
    }

    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

/// A Kubernetes namespace: its labels decide enrollment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub port: u16,
    /// The port on the endpoints; `port` when unset.
    #[serde(default)]
    pub target_port: Option<u16>,
}

impl ServicePort {
    pub fn target(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

/// A Kubernetes Service: VIPs and ports in front of workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Workload uids.
    pub endpoints: Vec<String>,
    pub waypoint: Option<WaypointRef>,
}

impl Service {
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}
