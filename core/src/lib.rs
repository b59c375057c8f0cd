//! amesh-core: the library every amesh binary builds on.
//!
//! - [`identity`]: SPIFFE workload identities.
//! - [`certs`]: the CA interface, a local CA, renewing certificate store, trust bundles.
//! - [`tls`]: rustls configuration for HBONE's mutual TLS.
//! - [`hbone`]: HBONE (HTTP/2 CONNECT over mTLS) client, pool and server.
//! - [`config`]: the workload model (workloads, services, policies) and its file watcher.
//! - [`policy`]: Istio AuthorizationPolicy (L4) and PeerAuthentication.
//! - [`zds`]: Istio-compatible ZDS, the node agent → ztunnel pod hand-off.
//! - [`metrics`]: Prometheus metrics with Istio's names and labels.
//! - [`admin`]: the metrics, readiness and admin HTTP servers.

pub mod admin;
pub mod certs;
pub mod config;
pub mod hbone;
pub mod identity;
pub mod l7;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod tls;
pub mod xds;
pub mod zds;

pub use identity::Identity;
