//! amesh-core: the library every amesh binary builds on.
//!
//! - [`identity`]: SPIFFE workload identities.
//! - [`certs`]: the CA interface, a local CA, renewing certificate store, trust bundles.
//! - [`tls`]: rustls configuration for HBONE's mutual TLS.
//! - [`hbone`]: HBONE (HTTP/2 CONNECT over mTLS) client, pool and server.
//! - [`config`]: the workload model (workloads, services) and its file watcher.
//! - [`zds`]: Istio-compatible ZDS, the node agent → ztunnel pod hand-off.

pub mod certs;
pub mod config;
pub mod hbone;
pub mod identity;
pub mod tls;
pub mod zds;

pub use identity::Identity;
