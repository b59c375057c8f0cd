//! The waypoint's routing engine.
//!
//! [`RouteTable::build`] compiles, for one waypoint, the L7 resources the
//! control plane sends (`amesh.v1.WaypointConfig.resources`: Istio
//! VirtualService and DestinationRule, Gateway API HTTPRoute) and the bound
//! services into an immutable table. Building never fails: resources or
//! fields that cannot be used are skipped and listed as [`BuildProblem`]s.
//!
//! [`RouteTable::route`] evaluates one request against the table and returns
//! a [`Decision`]: forward to a destination (service, port, subset labels)
//! with header and path changes, redirect, answer directly, or 404.
//!
//! Semantics follow Istio/Envoy where the API mirrors them:
//! - VirtualService `http` rules apply in order, first match wins; the
//!   entries of `match` are ORed, the fields within one are ANDed; a host
//!   with a VirtualService but no matching rule gets 404.
//! - HTTPRoutes with a Service `parentRef` are ordered by Gateway API
//!   precedence (exact path, longest prefix, method, header count, query
//!   count) and win over VirtualServices for the same service, as in Istio.
//! - A bound service without routes forwards to itself.
//! - Regexes match the whole value (Envoy `safe_regex`).
//! - Weighted destinations are chosen at random in proportion to weight.

mod build;
mod decision;
mod header_ops;
mod hosts;
mod http_route;
mod input;
mod matcher;
mod path_rewrite;
mod problem;
mod query;
mod redirect;
mod round_robin;
mod string_match;
mod subsets;
mod table;
mod virtual_service;
mod weighted;

pub use decision::{
    Decision, Destination, DirectResponse, Forward, HeaderOpsChain, Redirect, RouteInfo,
    RouteSource, Subset,
};
pub use header_ops::HeaderOps;
pub use input::{BoundService, DEFAULT_CLUSTER_DOMAIN, L7Input, RouteInputs};
pub use problem::{BuildProblem, ProblemKind};
pub use round_robin::RoundRobin;
pub use table::RouteTable;
