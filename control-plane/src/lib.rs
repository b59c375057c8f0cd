//! amesh's control plane: one typed [`store`] filled by the Kubernetes or
//! the local folder [`source`], [`derive`]d into the resources discovery
//! serves ([`resources`], [`xds`]), and the workload CA ([`ca`]).

pub mod admin;
pub mod ca;
pub mod crd;
pub mod derive;
pub mod grpc;
pub mod resources;
pub mod source;
pub mod store;
pub mod xds;
