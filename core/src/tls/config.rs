//! Building rustls client and server configs for HBONE.

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use super::verifier::{ClientIdentityVerifier, ServerIdentityVerifier};
use super::{ALPN_H2, provider};
use crate::certs::{CertWatch, WorkloadCertificate};
use crate::identity::Identity;

/// Where a server finds its current certificate (and trust bundle).
pub trait CertSource: Send + Sync + fmt::Debug {
    fn current(&self) -> Option<Arc<WorkloadCertificate>>;
}

impl CertSource for CertWatch {
    fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        CertWatch::current(self)
    }
}

/// A fixed certificate (tests, benchmarks).
impl CertSource for Arc<WorkloadCertificate> {
    fn current(&self) -> Option<Arc<WorkloadCertificate>> {
        Some(self.clone())
    }
}

/// A client config presenting `cert` and accepting only a server with one of
/// the `expected` identities. Built per connection: it is cheap and binds the
/// expected identity into the verifier.
pub fn client_config(cert: &WorkloadCertificate, expected: Vec<Identity>) -> Arc<ClientConfig> {
    let verifier = Arc::new(ServerIdentityVerifier::new(cert.roots().clone(), expected));
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|_| unreachable_tls13())
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(FixedClientCert(cert.certified_key().clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    // Our record layer takes over after the handshake (see `record.rs`).
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// Builds the server config of one HBONE listener; renewals of `source`'s
/// certificate apply to new handshakes without rebuilding it.
#[derive(Debug)]
pub struct ServerConfigBuilder;

impl ServerConfigBuilder {
    pub fn build(source: Arc<dyn CertSource>) -> Arc<ServerConfig> {
        let verifier = Arc::new(ClientIdentityVerifier::new(source.clone()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap_or_else(|_| unreachable_tls13())
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(LiveServerCert(source)));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // Tickets would cost an encryption per handshake and clients never
        // resume (their config is per connection).
        config.send_tls13_tickets = 0;
        config.enable_secret_extraction = true;
        Arc::new(config)
    }
}

/// The provider always supports TLS 1.3; failing here is a build bug.
fn unreachable_tls13() -> ! {
    panic!("crypto provider does not support TLS 1.3")
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct LiveServerCert(Arc<dyn CertSource>);

impl ResolvesServerCert for LiveServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|c| c.certified_key().clone())
    }
}
