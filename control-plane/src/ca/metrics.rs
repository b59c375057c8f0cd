//! CA metrics, under Istio's names where Istio has one.

use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Default)]
pub struct CaMetrics {
    // Gauges only ever incremented: prometheus-client appends `_total` to
    // counters, and dashboards expect Istio's exact names.
    pub csr_count: Gauge,
    pub success_cert_issuance_count: Gauge,
    pub authentication_failure_count: Gauge,
    pub csr_parsing_err_count: Gauge,
    /// Unix seconds.
    pub root_cert_expiry_timestamp: Gauge,
    pub cert_chain_expiry_timestamp: Gauge,
    pub refusals: Family<Vec<(String, String)>, Counter>,
}

impl CaMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "citadel_server_csr_count",
            "CSRs received",
            self.csr_count.clone(),
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "Certificates issued",
            self.success_cert_issuance_count.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "CSRs refused for a missing or invalid token",
            self.authentication_failure_count.clone(),
        );
        registry.register(
            "citadel_server_csr_parsing_err_count",
            "CSRs that could not be parsed",
            self.csr_parsing_err_count.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_timestamp",
            "Unix time the earliest trusted root expires",
            self.root_cert_expiry_timestamp.clone(),
        );
        registry.register(
            "citadel_server_cert_chain_expiry_timestamp",
            "Unix time the earliest certificate of the signing chain expires",
            self.cert_chain_expiry_timestamp.clone(),
        );
        registry.register(
            "amesh_ca_refusals",
            "Certificate requests refused, by reason",
            self.refusals.clone(),
        );
    }

    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    pub fn set_expiries(&self, root: Option<SystemTime>, chain: Option<SystemTime>) {
        let secs = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok())
                .unwrap_or(0)
        };
        self.root_cert_expiry_timestamp.set(secs(root));
        self.cert_chain_expiry_timestamp.set(secs(chain));
    }
}
