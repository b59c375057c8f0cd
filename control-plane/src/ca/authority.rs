//! The signing side of the CA: a self-managed root or a plug-in intermediate
//! (Istio's `cacerts` layout), and the trust bundle it hands out.
//!
//! Files, in the CA directory or as keys of the CA Secret:
//! - own root: `root-cert.pem`, `root-key.pem` (created on first start);
//! - plug-in intermediate: `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`
//!   (from `ca-cert.pem` up to the root) and `root-cert.pem`.
//!
//! Root rotation: `root-cert.pem` may hold several roots; all are trusted
//! and sent to every caller. To rotate: (1) append the new root to
//! `root-cert.pem` beside the old one and restart, so every workload learns
//! it at its next renewal (at most one certificate lifetime); (2) replace the
//! signing key (`root-key.pem`, or `ca-cert.pem`/`ca-key.pem`/`cert-chain.pem`
//! for a plug-in) with the new one and restart: new leaves chain to the new
//! root, old ones still verify; (3) after one more certificate lifetime,
//! remove the old root from `root-cert.pem`. The signing certificate is the
//! root whose public key matches `root-key.pem`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use amesh_core::certs::{CertError, LocalCa, TrustBundle, pem as cert_pem};
use amesh_core::identity::Identity;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};

pub const ROOT_CERT: &str = "root-cert.pem";
pub const ROOT_KEY: &str = "root-key.pem";
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Certificates start this much in the past: tolerated clock skew.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The control plane's serving certificate is re-issued at every start.
const SERVING_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("CA material: {0}")]
    Cert(#[from] CertError),
    #[error("CA material: {file}: {reason}")]
    File { file: &'static str, reason: String },
    #[error("CA {what}: {reason}")]
    Io { what: String, reason: String },
    #[error("CA Secret {secret}: {reason}")]
    Secret { secret: String, reason: String },
}

/// A serving certificate for the control plane's own listener.
#[derive(Debug)]
pub struct ServingCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Signs workload certificates and the control plane's serving certificate.
pub struct Authority {
    ca: LocalCa,
    issuer: Issuer<'static, KeyPair>,
    /// Signing certificate then intermediates, without the root; empty
    /// when the root signs.
    chain: Vec<CertificateDer<'static>>,
    roots: TrustBundle,
    plugged: bool,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("plugged", &self.plugged)
            .field("chain", &self.chain.len())
            .field("roots", &self.roots.roots().len())
            .finish_non_exhaustive()
    }
}

/// Generates a new root certificate and key (PEM) for `trust_domain`.
pub fn generate_root(trust_domain: &str) -> Result<(String, String), AuthorityError> {
    let gen_err = |e: rcgen::Error| CertError::Generate(e.to_string());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::default();
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
    params.serial_number = Some(random_serial());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "amesh root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Authority {
    /// Builds the CA from its files (name → content), as in a CA
    /// directory or Secret. A plug-in intermediate wins over an own root.
    pub fn from_files(files: &BTreeMap<String, Vec<u8>>) -> Result<Self, AuthorityError> {
        let get = |name: &'static str| {
            files.get(name).ok_or_else(|| AuthorityError::File {
                file: name,
                reason: "missing".into(),
            })
        };
        let roots = TrustBundle::from_pem(get(ROOT_CERT)?).map_err(|e| file_err(ROOT_CERT, e))?;
        if files.contains_key(CA_CERT) || files.contains_key(CA_KEY) {
            let cert = first_cert(get(CA_CERT)?, CA_CERT)?;
            let key_pem = get(CA_KEY)?;
            // cert-chain.pem runs from ca-cert.pem up to the root; keep what
            // lies strictly between.
            let above: Vec<CertificateDer<'static>> = match files.get(CERT_CHAIN) {
                Some(pem) => cert_pem::parse_certificates(pem, "cert-chain.pem")
                    .map_err(|e| file_err(CERT_CHAIN, e))?
                    .into_iter()
                    .filter(|c| c.as_ref() != cert.as_ref())
                    .filter(|c| !roots.roots().iter().any(|r| r.as_ref() == c.as_ref()))
                    .collect(),
                None => Vec::new(),
            };
            Self::build(cert, key_pem, above, roots, true, CA_KEY)
        } else {
            let key_pem = get(ROOT_KEY)?;
            let key = parse_key(key_pem, ROOT_KEY)?;
            let public = rcgen::PublicKeyData::subject_public_key_info(&key);
            let cert = roots
                .roots()
                .iter()
                .find(|root| public_key_of(root).is_some_and(|p| p == public))
                .cloned()
                .ok_or_else(|| AuthorityError::File {
                    file: ROOT_KEY,
                    reason: "matches none of the certificates in root-cert.pem".into(),
                })?;
            Self::build(cert, key_pem, Vec::new(), roots, false, ROOT_KEY)
        }
    }

    fn build(
        cert: CertificateDer<'static>,
        key_pem: &[u8],
        above: Vec<CertificateDer<'static>>,
        roots: TrustBundle,
        plugged: bool,
        key_file: &'static str,
    ) -> Result<Self, AuthorityError> {
        let cert_text = cert_pem::encode_certificate(&cert);
        let chain_pem = plugged.then(|| {
            // LocalCa takes the last certificate of the chain as the root.
            let mut pem: String = above.iter().map(cert_pem::encode_certificate).collect();
            pem.push_str(&roots.to_pem());
            pem
        });
        let mut ca = LocalCa::from_pem(
            cert_text.as_bytes(),
            key_pem,
            chain_pem.as_deref().map(str::as_bytes),
        )?;
        ca.add_trusted_roots(&roots)?;
        let issuer =
            Issuer::from_ca_cert_der(&cert, parse_key(key_pem, key_file)?).map_err(|e| {
                AuthorityError::File {
                    file: if plugged { CA_CERT } else { ROOT_CERT },
                    reason: e.to_string(),
                }
            })?;
        let mut chain = Vec::new();
        if plugged {
            chain.push(cert);
            chain.extend(above);
        }
        Ok(Self {
            ca,
            issuer,
            chain,
            roots,
            plugged,
        })
    }

    /// Whether a user-provided intermediate signs (Istio's `cacerts`).
    pub fn is_plugged(&self) -> bool {
        self.plugged
    }

    /// The issuing chain above a leaf, leaf-side first, without roots.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Every trusted root (several during a rotation).
    pub fn roots(&self) -> &TrustBundle {
        &self.roots
    }

    /// Signs `csr` for `identity`, valid from now (backdated for skew) for `ttl`.
    /// Returns the leaf then the issuing chain, without roots.
    pub fn issue(
        &self,
        identity: &Identity,
        csr: &CertificateSigningRequestDer<'_>,
        ttl: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, CertError> {
        let now = SystemTime::now();
        let issued = self.ca.issue(identity, csr, now - BACKDATE, now + ttl)?;
        Ok(issued.chain)
    }

    /// A TLS server certificate for the control plane's listener.
    pub fn serving_cert(&self, sans: &[String]) -> Result<ServingCert, CertError> {
        let gen_err = |e: rcgen::Error| CertError::Generate(e.to_string());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + SERVING_TTL).into();
        params.serial_number = Some(random_serial());
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "amesh-control-plane");
        params.distinguished_name = dn;
        for san in sans {
            let entry = match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into().map_err(gen_err)?),
            };
            params.subject_alt_names.push(entry);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        let key =
            PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| CertError::Key(e.into()))?;
        Ok(ServingCert { chain, key })
    }

    /// Earliest expiry among the roots.
    pub fn root_expiry(&self) -> Option<SystemTime> {
        self.roots.roots().iter().filter_map(not_after).min()
    }

    /// Earliest expiry along the signing chain (the root when it signs).
    pub fn chain_expiry(&self) -> Option<SystemTime> {
        if self.chain.is_empty() {
            self.root_expiry()
        } else {
            self.chain.iter().filter_map(not_after).min()
        }
    }
}

fn file_err(file: &'static str, e: CertError) -> AuthorityError {
    AuthorityError::File {
        file,
        reason: e.to_string(),
    }
}

fn first_cert(pem: &[u8], file: &'static str) -> Result<CertificateDer<'static>, AuthorityError> {
    cert_pem::parse_certificates(pem, file)
        .map_err(|e| file_err(file, e))?
        .into_iter()
        .next()
        .ok_or(AuthorityError::File {
            file,
            reason: "empty".into(),
        })
}

fn parse_key(pem: &[u8], file: &'static str) -> Result<KeyPair, AuthorityError> {
    let text = std::str::from_utf8(pem).map_err(|_| AuthorityError::File {
        file,
        reason: "not UTF-8 text".into(),
    })?;
    KeyPair::from_pem(text).map_err(|e| AuthorityError::File {
        file,
        reason: e.to_string(),
    })
}

fn public_key_of(der: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// A certificate's notAfter.
pub fn not_after(der: &CertificateDer<'_>) -> Option<SystemTime> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    rcgen::SerialNumber::from_slice(&bytes)
}
