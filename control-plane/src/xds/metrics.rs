//! Discovery metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
pub struct XdsMetrics {
    /// Open discovery streams, by caller role.
    pub connected_subscribers: Family<Labels, Gauge>,
    pub pushes: Family<Labels, Counter>,
    pub push_resources: Counter,
    pub nacks: Family<Labels, Counter>,
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), value.to_owned())]
}

impl XdsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "amesh_xds_connected_subscribers",
            "Open discovery streams, by caller role",
            self.connected_subscribers.clone(),
        );
        registry.register(
            "amesh_xds_pushes",
            "Discovery responses sent, by type",
            self.pushes.clone(),
        );
        registry.register(
            "amesh_xds_push_resources",
            "Resources carried by discovery responses",
            self.push_resources.clone(),
        );
        registry.register(
            "amesh_xds_nacks",
            "Discovery responses the client rejected, by type",
            self.nacks.clone(),
        );
    }

    pub fn subscriber(&self, role: &str) -> Gauge {
        self.connected_subscribers
            .get_or_create(&label("role", role))
            .clone()
    }

    pub fn pushed(&self, type_url: &str, resources: usize) {
        self.pushes.get_or_create(&label("type", type_url)).inc();
        self.push_resources.inc_by(resources as u64);
    }

    pub fn nacked(&self, type_url: &str) {
        self.nacks.get_or_create(&label("type", type_url)).inc();
    }
}
