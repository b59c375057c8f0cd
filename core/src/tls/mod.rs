//! rustls configuration for HBONE: TLS 1.3 only, ALPN `h2`, no SNI, mutual
//! authentication with SPIFFE identities checked on both ends.

mod config;
pub mod peer;
mod record;
mod seal;
mod stream;
mod verifier;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use config::{CertSource, ServerConfigBuilder, client_config};
pub use seal::measure_seal_gbps;
pub use stream::{TlsStream, accept, connect};
pub use verifier::{ClientIdentityVerifier, IdentityMismatch, ServerIdentityVerifier};

/// ALPN protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// The process-wide crypto provider, restricted to what HBONE needs.
///
/// Cipher suites: AES-128-GCM first (fastest with AES-NI), then AES-256-GCM
/// and ChaCha20 for peers without AES hardware. Key exchange: X25519, then
/// P-256; the post-quantum hybrid group is left out because it roughly doubles
/// handshake cost and the ClientHello size (see README, "Crypto provider").
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(build_provider())).clone()
}

#[cfg(feature = "aws-lc")]
fn build_provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider, kx_group};
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..default_provider()
    }
}

#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
fn build_provider() -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, default_provider, kx_group};
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..default_provider()
    }
}

#[cfg(not(any(feature = "aws-lc", feature = "ring")))]
compile_error!("amesh-core needs a crypto provider: enable feature `aws-lc` or `ring`");

/// Name of the provider compiled in, for logs and benchmark output.
pub fn provider_name() -> &'static str {
    if cfg!(feature = "aws-lc") {
        "aws-lc-rs"
    } else {
        "ring"
    }
}
