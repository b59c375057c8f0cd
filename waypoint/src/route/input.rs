//! What the table is built from: one waypoint's bound services and L7
//! resources, in the shape the control plane sends them.

use amesh_core::xds::proto::amesh::{L7Resource, WaypointConfig};

/// Kubernetes' default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Everything one waypoint routes.
#[derive(Clone, Debug)]
pub struct RouteInputs {
    /// Cluster DNS domain used to expand short host names (`cluster.local`).
    pub cluster_domain: String,
    /// The services bound to the waypoint.
    pub services: Vec<BoundService>,
    /// The L7 resources that apply to it.
    pub resources: Vec<L7Input>,
}

impl Default for RouteInputs {
    fn default() -> Self {
        Self {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            services: Vec::new(),
            resources: Vec::new(),
        }
    }
}

impl RouteInputs {
    /// The inputs of a `WaypointConfig` (services `namespace/hostname`, any
    /// port). Entries without a `/` are taken as bare host names.
    pub fn from_waypoint_config(config: &WaypointConfig, cluster_domain: &str) -> Self {
        Self {
            cluster_domain: cluster_domain.to_owned(),
            services: config
                .services
                .iter()
                .map(|s| BoundService::from_config_entry(s))
                .collect(),
            resources: config.resources.iter().map(L7Input::from).collect(),
        }
    }
}

/// A service bound to the waypoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundService {
    /// FQDN, e.g. `reviews.shop.svc.cluster.local`.
    pub hostname: String,
    /// Service ports; empty means any port is served.
    pub ports: Vec<u16>,
}

impl BoundService {
    /// A service served on any port.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            ports: Vec::new(),
        }
    }

    /// A `WaypointConfig.services` entry, `namespace/hostname`.
    pub fn from_config_entry(entry: &str) -> Self {
        let host = entry.split_once('/').map_or(entry, |(_, host)| host);
        Self::new(host)
    }

    /// Whether requests on `port` belong to this service.
    pub(crate) fn serves_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }
}

/// One L7 resource: `amesh.v1.L7Resource` (kind as the Kubernetes `kind`,
/// spec as JSON text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L7Input {
    /// `VirtualService`, `DestinationRule`, `HTTPRoute`, ...
    pub kind: String,
    /// Namespace of the resource.
    pub namespace: String,
    /// Name of the resource.
    pub name: String,
    /// The `spec`, as JSON text.
    pub spec_json: String,
}

impl From<&L7Resource> for L7Input {
    fn from(r: &L7Resource) -> Self {
        Self {
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            spec_json: r.spec_json.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_waypoint_config() {
        let config = WaypointConfig {
            services: vec![
                "shop/reviews.shop.svc.cluster.local".into(),
                "bare.example".into(),
            ],
            resources: vec![L7Resource {
                kind: "VirtualService".into(),
                namespace: "shop".into(),
                name: "reviews".into(),
                spec_json: "{}".into(),
            }],
            ..WaypointConfig::default()
        };
        let inputs = RouteInputs::from_waypoint_config(&config, DEFAULT_CLUSTER_DOMAIN);
        assert_eq!(
            inputs.services,
            [
                BoundService::new("reviews.shop.svc.cluster.local"),
                BoundService::new("bare.example")
            ]
        );
        assert_eq!(inputs.resources[0].name, "reviews");
        assert!(inputs.services[0].serves_port(1));
    }
}
