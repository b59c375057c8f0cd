//! amesh waypoint: the per-namespace L7 proxy.
//!
//! This crate holds the routing engine ([`route`]): it compiles the L7
//! resources the control plane sends for one waypoint into an immutable
//! [`route::RouteTable`] and answers, per request, where it goes.

pub mod route;
