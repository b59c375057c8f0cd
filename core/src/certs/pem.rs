//! PEM reading and writing for certificates and keys.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::CertError;

/// All certificates in a PEM document; `what` names the document in errors.
pub fn parse_certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            what,
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM document (PKCS#8, SEC1 or PKCS#1).
pub fn parse_private_key(
    pem: &[u8],
    what: &'static str,
) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| CertError::Pem {
        what,
        reason: e.to_string(),
    })
}

pub fn encode_certificate(der: &CertificateDer<'_>) -> String {
    encode_block("CERTIFICATE", der)
}

pub(crate) fn encode_block(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}
