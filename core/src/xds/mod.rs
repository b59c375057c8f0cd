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
