//! Certificate verifiers: the chain against the trust bundle (webpki), then
//! the SPIFFE identity: the client checks the server is who it expects, the
//! server checks the client belongs to its trust domain.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::config::CertSource;
use super::peer;
use crate::certs::TrustBundle;
use crate::identity::Identity;

/// The server presented a valid certificate for the wrong identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server identity mismatch: expected {expected}, server presented {actual}")]
pub struct IdentityMismatch {
    pub expected: String,
    pub actual: Identity,
}

/// The client presented a valid certificate from another trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client identity {actual} is outside trust domain {expected}")]
pub struct TrustDomainMismatch {
    pub expected: String,
    pub actual: Identity,
}

fn other(err: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

fn pki_error(error: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let err = match error {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        E::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        E::InvalidCertValidity => CertificateError::Expired,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::CertRevoked => CertificateError::Revoked,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(err)
}

fn verify_chain(
    roots: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<(), rustls::Error> {
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
    cert.verify_for_usage(
        super::provider().signature_verification_algorithms.all,
        roots.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(pki_error)?;
    Ok(())
}

fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &super::provider().signature_verification_algorithms,
    )
}

fn schemes() -> Vec<SignatureScheme> {
    super::provider()
        .signature_verification_algorithms
        .supported_schemes()
}

/// Client side: accepts only a server whose chain verifies against `roots`
/// and whose identity is one of `expected`.
pub struct ServerIdentityVerifier {
    roots: TrustBundle,
    expected: Vec<Identity>,
}

impl ServerIdentityVerifier {
    pub fn new(roots: TrustBundle, expected: Vec<Identity>) -> Self {
        Self { roots, expected }
    }
}

impl fmt::Debug for ServerIdentityVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentityVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(
            &self.roots,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        let actual = peer::identity_from_der(end_entity).map_err(other)?;
        if self.expected.contains(&actual) {
            Ok(ServerCertVerified::assertion())
        } else {
            let expected = self
                .expected
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" or ");
            Err(other(IdentityMismatch { expected, actual }))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}

/// Server side: requires a client certificate whose chain verifies against
/// the server's current trust bundle and whose identity is in the server's
/// trust domain. Reads the bundle on every handshake, so root rotations apply
/// without rebuilding the config.
pub struct ClientIdentityVerifier {
    source: Arc<dyn CertSource>,
}

impl ClientIdentityVerifier {
    pub fn new(source: Arc<dyn CertSource>) -> Self {
        Self { source }
    }
}

impl fmt::Debug for ClientIdentityVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentityVerifier")
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientIdentityVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let own = self.source.current().ok_or_else(|| {
            rustls::Error::General("server has no certificate to verify clients with".into())
        })?;
        verify_chain(
            own.roots(),
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        let actual = peer::identity_from_der(end_entity).map_err(other)?;
        let domain = own.identity().trust_domain();
        if actual.trust_domain() == domain {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(other(TrustDomainMismatch {
                expected: domain.to_owned(),
                actual,
            }))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }
}
