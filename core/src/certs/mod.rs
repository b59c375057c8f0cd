//! Certificates: the CA interface and a local CA, workload certificates with
//! their private keys, the trust bundle, and the renewing per-identity store.

mod bundle;
mod ca;
pub mod pem;
mod remote;
mod store;
mod workload;

pub use bundle::TrustBundle;
pub use ca::{CertificateAuthority, DEFAULT_CERT_TTL, IssuedCertificate, LocalCa, SignFuture};
pub use remote::{RemoteCa, RemoteCaConfig};
pub use store::{CertStore, CertStoreConfig, CertWatch};
pub use workload::{CertificateRequest, WorkloadCertificate};

use crate::identity::{Identity, IdentityError};

/// Certificate, CA and PEM errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("trust bundle holds no root certificate")]
    EmptyTrustBundle,
    #[error("root certificate #{index} of the trust bundle is not usable: {reason}")]
    InvalidRoot { index: usize, reason: String },
    #[error("certificate signing request rejected: {0}")]
    BadCsr(String),
    #[error("CSR asks for identity {requested}, but the caller may only obtain {allowed}")]
    IdentityNotAllowed {
        requested: String,
        allowed: Identity,
    },
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("certificate has no usable SPIFFE identity: {0}")]
    NoIdentity(String),
    #[error("certificate identity is malformed: {0}")]
    Identity(#[from] IdentityError),
    #[error("private key is not usable by the TLS provider: {0}")]
    Key(String),
    #[error("cannot access CA files in {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("CA unavailable: {0}")]
    Unavailable(String),
    #[error("CA refused the certificate request: {code}: {message}")]
    Refused { code: String, message: String },
}
