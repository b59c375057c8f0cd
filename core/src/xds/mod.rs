//! Discovery: the delta xDS protocol types and the type URLs amesh serves.

pub mod client;
pub mod convert;
pub mod proto;
pub mod source;

/// Istio's workload API: workloads and services.
pub const ADDRESS_TYPE: &str = "type.googleapis.com/istio.workload.Address";
/// Istio's L4 authorization API.
pub const AUTHORIZATION_TYPE: &str = "type.googleapis.com/istio.security.Authorization";
/// Per-pod enrollment decisions, for node agents.
pub const POD_ENROLLMENT_TYPE: &str = "type.googleapis.com/amesh.v1.PodEnrollment";
/// Namespace enrollment, for node agents.
pub const NAMESPACE_ENROLLMENT_TYPE: &str = "type.googleapis.com/amesh.v1.NamespaceEnrollment";
/// A waypoint's L7 configuration.
pub const WAYPOINT_CONFIG_TYPE: &str = "type.googleapis.com/amesh.v1.WaypointConfig";

/// A change too large for one response goes out in several (each
/// acknowledged before the next); all but the last carry a
/// `system_version_info` ending in this. amesh's client applies and ACKs
/// those without handing the half-applied state to the data plane; other
/// clients (Istio's ztunnel) simply apply each as a delta.
pub const MORE_FOLLOWS_SUFFIX: &str = "+more";
