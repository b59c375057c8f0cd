//! Delta xDS (`DeltaAggregatedResources`) over the derived resources:
//! nonces, ACK/NACK, resumption with `initial_resource_versions`, and
//! node-scoped resources only to their node.

pub mod diff;
pub mod metrics;
pub mod server;
pub mod state;

pub use metrics::XdsMetrics;
pub use server::XdsServer;
pub use state::MAX_RESPONSE_BYTES;
