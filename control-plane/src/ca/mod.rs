//! The workload CA: Istio-compatible `CreateCertificate`, signing only
//! identities the caller may hold (a node's ztunnel: pods on its node).

pub mod auth;
pub mod authority;
pub mod files;
pub mod metrics;
pub mod service;

pub use auth::{AuthError, Authenticator, Caller, CallerRole, LocalTokens, TokenReviewer};
pub use authority::{Authority, AuthorityError, ServingCert};
pub use metrics::CaMetrics;
pub use service::CaService;
