//! The CA interface and a local CA that signs workload CSRs with a root (or
//! intermediate) key held in this process.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

use super::{CertError, TrustBundle};
use crate::identity::Identity;

/// Lifetime of workload certificates unless configured otherwise (as Istio).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Validity of a generated root.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Tolerated clock skew between nodes: certificates start this much in the past.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// What a CA returns: the leaf first, then any intermediates, plus the roots
/// that verify it (and possibly other roots during a rotation).
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub roots: TrustBundle,
}

pub type SignFuture<'a> =
    Pin<Box<dyn Future<Output = Result<IssuedCertificate, CertError>> + Send + 'a>>;

/// Anything that turns a CSR for an identity into a certificate chain: the
/// local CA here, the control plane's CA over gRPC later.
pub trait CertificateAuthority: Send + Sync + fmt::Debug + 'static {
    fn sign<'a>(
        &'a self,
        identity: &'a Identity,
        csr: &'a CertificateSigningRequestDer<'static>,
        ttl: Duration,
    ) -> SignFuture<'a>;
}

/// A CA whose signing key lives in this process.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// Intermediates between the signing certificate and the root, signing cert first.
    chain: Vec<CertificateDer<'static>>,
    roots: TrustBundle,
}

impl LocalCa {
    /// Creates a new self-signed root for `trust_domain`.
    pub fn generate(trust_domain: &str) -> Result<Self, CertError> {
        let (cert_pem, key_pem) = generate_root(trust_domain)?;
        Self::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), None)
    }

    /// Loads the signing certificate and key from PEM. `chain_pem` carries the
    /// certificates above the signing certificate up to and including the root
    /// (for a plug-in intermediate CA); without it the signing cert is the root.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        chain_pem: Option<&[u8]>,
    ) -> Result<Self, CertError> {
        let cert = super::pem::parse_certificates(cert_pem, "CA certificate")?
            .into_iter()
            .next()
            .ok_or(CertError::Pem {
                what: "CA certificate",
                reason: "empty".into(),
            })?;
        let key_text = std::str::from_utf8(key_pem).map_err(|_| CertError::Pem {
            what: "CA key",
            reason: "not UTF-8 text".into(),
        })?;
        let key = KeyPair::from_pem(key_text).map_err(|e| CertError::Pem {
            what: "CA key",
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| CertError::Pem {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        let (chain, roots) = match chain_pem {
            None => (Vec::new(), TrustBundle::new([cert])?),
            Some(pem) => {
                let mut above = super::pem::parse_certificates(pem, "CA chain")?;
                let root = above.pop().ok_or(CertError::Pem {
                    what: "CA chain",
                    reason: "empty".into(),
                })?;
                let mut chain = vec![cert];
                chain.extend(above);
                (chain, TrustBundle::new([root])?)
            }
        };
        Ok(Self {
            issuer,
            chain,
            roots,
        })
    }

    /// Loads `root-cert.pem` and `root-key.pem` from `dir`, creating them on
    /// first use (key readable by the owner only).
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, CertError> {
        let cert_path = dir.join("root-cert.pem");
        let key_path = dir.join("root-key.pem");
        let io_err = |path: &Path, e: std::io::Error| CertError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        // Every ztunnel of a local mesh may start at once with the same dir:
        // the first creates the root, the others wait and load it.
        let lock_path = dir.join("ca.lock");
        let lock_file = std::fs::File::create(&lock_path).map_err(|e| io_err(&lock_path, e))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err(&lock_path, errno.into()))?;
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(|e| io_err(&cert_path, e))?;
            let key = std::fs::read(&key_path).map_err(|e| io_err(&key_path, e))?;
            return Self::from_pem(&cert, &key, None);
        }
        let (cert_pem, key_pem) = generate_root(trust_domain)?;
        write_private(&key_path, key_pem.as_bytes()).map_err(|e| io_err(&key_path, e))?;
        std::fs::write(&cert_path, cert_pem.as_bytes()).map_err(|e| io_err(&cert_path, e))?;
        Self::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), None)
    }

    /// The roots that verify what this CA issues.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.roots
    }

    /// Adds roots that peers may present during a root rotation.
    pub fn add_trusted_roots(&mut self, other: &TrustBundle) -> Result<(), CertError> {
        self.roots = self.roots.merged(other)?;
        Ok(())
    }

    /// Signs `csr` for `identity` with an explicit validity window. The
    /// certificate carries exactly the identity as URI SAN, whatever else the
    /// CSR asked for; a CSR naming a different identity is refused.
    pub fn issue(
        &self,
        identity: &Identity,
        csr: &CertificateSigningRequestDer<'_>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCertificate, CertError> {
        let request = CertificateSigningRequestParams::from_der(csr)
            .map_err(|e| CertError::BadCsr(e.to_string()))?;
        let wanted = identity.to_string();
        for san in &request.params.subject_alt_names {
            let matches = matches!(san, SanType::URI(uri) if uri.as_str() == wanted);
            if !matches {
                return Err(CertError::IdentityNotAllowed {
                    requested: format!("{san:?}"),
                    allowed: identity.clone(),
                });
            }
        }
        let mut params = CertificateParams::default();
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(wanted.try_into().map_err(
                |e: rcgen::Error| CertError::Generate(e.to_string()),
            )?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(|e| CertError::Generate(e.to_string()))?;
        let mut chain = Vec::with_capacity(1 + self.chain.len());
        chain.push(leaf.der().clone());
        chain.extend(self.chain.iter().cloned());
        Ok(IssuedCertificate {
            chain,
            roots: self.roots.clone(),
        })
    }
}

impl CertificateAuthority for LocalCa {
    fn sign<'a>(
        &'a self,
        identity: &'a Identity,
        csr: &'a CertificateSigningRequestDer<'static>,
        ttl: Duration,
    ) -> SignFuture<'a> {
        let now = SystemTime::now();
        let result = self.issue(identity, csr, now - BACKDATE, now + ttl);
        Box::pin(std::future::ready(result))
    }
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa")
            .field("intermediates", &self.chain.len())
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

fn generate_root(trust_domain: &str) -> Result<(String, String), CertError> {
    let gen_err = |e: rcgen::Error| CertError::Generate(e.to_string());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::default();
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ROOT_TTL).into();
    params.serial_number = Some(random_serial());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "amesh root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    SerialNumber::from_slice(&bytes)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(data)
}
