//! Reading the SPIFFE identity and validity out of a certificate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certs::CertError;
use crate::identity::Identity;

/// What HBONE needs to know about a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    pub identity: Identity,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Parses the leaf's single SPIFFE URI SAN and its validity.
pub fn parse_leaf(der: &CertificateDer<'_>) -> Result<LeafInfo, CertError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| CertError::NoIdentity(format!("not an X.509 certificate: {e}")))?;
    let identity = identity_of(&cert)?;
    let validity = cert.validity();
    Ok(LeafInfo {
        identity,
        not_before: to_system_time(validity.not_before.timestamp()),
        not_after: to_system_time(validity.not_after.timestamp()),
    })
}

/// The identity of a DER leaf certificate.
pub fn identity_from_der(der: &CertificateDer<'_>) -> Result<Identity, CertError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| CertError::NoIdentity(format!("not an X.509 certificate: {e}")))?;
    identity_of(&cert)
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, CertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::NoIdentity(format!("bad subjectAltName: {e}")))?
        .ok_or_else(|| CertError::NoIdentity("no subjectAltName extension".into()))?;
    let mut uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        });
    let uri = uris
        .next()
        .ok_or_else(|| CertError::NoIdentity("no spiffe:// URI SAN".into()))?;
    if uris.next().is_some() {
        return Err(CertError::NoIdentity(
            "more than one spiffe:// URI SAN".into(),
        ));
    }
    Ok(uri.parse()?)
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}
