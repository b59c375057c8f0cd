//! A workload's certificate with its private key, ready for rustls.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::pki_types::{CertificateSigningRequestDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::{CertError, IssuedCertificate, TrustBundle};
use crate::identity::Identity;
use crate::tls;

/// A fresh key pair and the CSR for it. The private key never leaves this value
/// except into the [`WorkloadCertificate`] built from it.
pub struct CertificateRequest {
    identity: Identity,
    csr: CertificateSigningRequestDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl CertificateRequest {
    /// Generates an ECDSA P-256 key and a CSR naming `identity` as URI SAN.
    pub fn new(identity: &Identity) -> Result<Self, CertError> {
        let gen_err = |e: rcgen::Error| CertError::Generate(e.to_string());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            identity.to_string().try_into().map_err(gen_err)?,
        )];
        let csr = params.serialize_request(&key).map_err(gen_err)?;
        Ok(Self {
            identity: identity.clone(),
            csr: csr.into(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    pub fn csr(&self) -> &CertificateSigningRequestDer<'static> {
        &self.csr
    }

    /// Combines the CA's answer with the private key, checking that the leaf
    /// names the identity that was asked for and matches the key.
    pub fn into_certificate(
        self,
        issued: IssuedCertificate,
    ) -> Result<WorkloadCertificate, CertError> {
        let leaf = issued
            .chain
            .first()
            .ok_or_else(|| CertError::NoIdentity("CA returned an empty chain".into()))?;
        let info = tls::peer::parse_leaf(leaf)?;
        if info.identity != self.identity {
            return Err(CertError::IdentityNotAllowed {
                requested: info.identity.to_string(),
                allowed: self.identity,
            });
        }
        let certified_key = CertifiedKey::from_der(issued.chain, self.key.into(), &tls::provider())
            .map_err(|e| CertError::Key(e.to_string()))?;
        Ok(WorkloadCertificate {
            identity: self.identity,
            certified_key: Arc::new(certified_key),
            roots: issued.roots,
            not_before: info.not_before,
            not_after: info.not_after,
            received_at: SystemTime::now(),
        })
    }
}

impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A certificate chain, its private key (inside rustls' signing key) and the
/// roots the workload trusts.
#[derive(Clone)]
pub struct WorkloadCertificate {
    identity: Identity,
    certified_key: Arc<CertifiedKey>,
    roots: TrustBundle,
    not_before: SystemTime,
    not_after: SystemTime,
    received_at: SystemTime,
}

impl WorkloadCertificate {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    pub fn roots(&self) -> &TrustBundle {
        &self.roots
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When renewal is due: half-way through the remaining lifetime counted
    /// from when we got it (CAs backdate `not_before` for clock skew, which
    /// must not pull renewal forward).
    pub fn refresh_at(&self) -> SystemTime {
        let start = self.not_before.max(self.received_at);
        let lifetime = self
            .not_after
            .duration_since(start)
            .unwrap_or(Duration::ZERO);
        start + lifetime / 2
    }

    /// The leaf's serial-independent fingerprint: its DER bytes.
    pub fn leaf_der(&self) -> &[u8] {
        self.certified_key
            .cert
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default()
    }
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}
