//! The set of root certificates a workload trusts. Holds several roots at once
//! so that a root can be rotated without a flag day.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, TrustAnchor};

use super::CertError;

/// Trusted roots, with their parsed trust anchors precomputed for verification.
#[derive(Clone)]
pub struct TrustBundle {
    inner: Arc<BundleInner>,
}

struct BundleInner {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// Builds a bundle from DER roots; duplicates are kept once.
    pub fn new(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, CertError> {
        let mut unique: Vec<CertificateDer<'static>> = Vec::new();
        for root in roots {
            if !unique.iter().any(|r| r.as_ref() == root.as_ref()) {
                unique.push(root);
            }
        }
        if unique.is_empty() {
            return Err(CertError::EmptyTrustBundle);
        }
        let anchors = unique
            .iter()
            .enumerate()
            .map(|(index, der)| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|e| CertError::InvalidRoot {
                        index,
                        reason: format!("{e:?}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(BundleInner {
                roots: unique,
                anchors,
            }),
        })
    }

    /// Parses every `CERTIFICATE` block of a PEM document.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertError> {
        let roots = super::pem::parse_certificates(pem, "trust bundle")?;
        Self::new(roots)
    }

    /// A bundle holding this bundle's roots and `other`'s (for root rotation).
    pub fn merged(&self, other: &TrustBundle) -> Result<Self, CertError> {
        Self::new(self.roots().iter().chain(other.roots()).cloned())
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.inner.roots
    }

    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.inner.anchors
    }

    pub fn to_pem(&self) -> String {
        self.inner
            .roots
            .iter()
            .map(|der| super::pem::encode_certificate(der))
            .collect()
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.inner.roots.len())
            .finish()
    }
}
