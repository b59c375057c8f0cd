//! amesh waypoint: the per-namespace L7 proxy.
//!
//! So far this crate holds what the proxy is built from:
//! - the routing engine ([`route`]): it compiles the L7 resources the
//!   control plane sends for one waypoint into an immutable
//!   [`route::RouteTable`] and answers, per request, where it goes;
//! - protocol selection ([`protocol`]): declared by the service port, or
//!   detected from the client's first bytes;
//! - request identity ([`trace`]): `x-request-id` and W3C trace context;
//! - request telemetry ([`telemetry`]): Istio's request metrics and the
//!   JSON access log.

pub mod protocol;
pub mod route;
pub mod telemetry;
pub mod trace;
