//! A CA reached over gRPC: Istio's `IstioCertificateService/CreateCertificate`,
//! as served by the amesh control plane (or istiod). The caller proves who
//! it is with a bearer token and names the workload it asks for in
//! `ImpersonatedIdentity`, as Istio's ztunnel does.

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use tonic::transport::Channel;

use super::{CertError, CertificateAuthority, IssuedCertificate, SignFuture, TrustBundle};
use crate::identity::Identity;
use crate::xds::client::channel::{Target, bearer};
use crate::xds::proto::istio::ca::IstioCertificateRequest;
use crate::xds::proto::istio::ca::istio_certificate_service_client::IstioCertificateServiceClient;

/// Bound on one signing call; the cert store retries failures.
const SIGN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the CA is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct RemoteCaConfig {
    /// `http://host:port` or `https://host:port` (needs `root_cert`).
    pub address: String,
    /// Bearer token file, re-read for every request (tokens are rotated).
    pub token_file: Option<PathBuf>,
    /// PEM roots that verify the CA server's certificate.
    pub root_cert: Option<PathBuf>,
    /// Name expected in the CA server's certificate (default: the host).
    pub server_name: Option<String>,
}

/// The control plane's CA, over gRPC.
#[derive(Debug)]
pub struct RemoteCa {
    address: String,
    token_file: Option<PathBuf>,
    client: IstioCertificateServiceClient<Channel>,
}

impl RemoteCa {
    /// Checks the config and prepares a channel; it connects on first use.
    /// Must be called within a tokio runtime.
    pub fn connect(config: RemoteCaConfig) -> Result<Self, CertError> {
        let channel = Target::parse(
            &config.address,
            config.root_cert.as_deref(),
            config.server_name.as_deref(),
        )
        .and_then(|target| target.connect_lazy())
        .map_err(|e| CertError::Unavailable(e.to_string()))?;
        Ok(Self {
            address: config.address,
            token_file: config.token_file,
            client: IstioCertificateServiceClient::new(channel),
        })
    }

    async fn request(
        &self,
        identity: &Identity,
        csr: &CertificateSigningRequestDer<'static>,
        ttl: Duration,
    ) -> Result<IssuedCertificate, CertError> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: super::pem::encode_block("CERTIFICATE REQUEST", csr.as_ref()),
            subject_id: identity.to_string(),
            validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        });
        request.set_timeout(SIGN_TIMEOUT);
        if let Some(path) = &self.token_file {
            let token = bearer(path).map_err(|e| CertError::Unavailable(e.to_string()))?;
            request.metadata_mut().insert("authorization", token);
        }
        let impersonated = identity.to_string().parse().map_err(|_| {
            CertError::Generate(format!("identity {identity} is not a valid header value"))
        })?;
        request
            .metadata_mut()
            .insert("impersonatedidentity", impersonated);
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(|status| status_error(&self.address, &status))?;
        split_chain(&response.into_inner().cert_chain)
    }
}

impl CertificateAuthority for RemoteCa {
    fn sign<'a>(
        &'a self,
        identity: &'a Identity,
        csr: &'a CertificateSigningRequestDer<'static>,
        ttl: Duration,
    ) -> SignFuture<'a> {
        Box::pin(self.request(identity, csr, ttl))
    }
}

/// Transient failures (retry later) become `Unavailable`; the CA's verdicts
/// on the request itself become `Refused` with its message.
fn status_error(address: &str, status: &tonic::Status) -> CertError {
    use tonic::Code;
    let code = code_words(status.code());
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Internal => {
            CertError::Unavailable(format!("CA at {address}: {code}: {}", status.message()))
        }
        _ => CertError::Refused {
            code,
            message: status.message().to_owned(),
        },
    }
}

/// `PermissionDenied` → "permission denied".
fn code_words(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut words = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    words
}

/// The response lists the leaf first and the roots last: trailing
/// self-signed certificates are the roots (several during a rotation), the
/// rest is the chain served to peers.
fn split_chain(pems: &[String]) -> Result<IssuedCertificate, CertError> {
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    for pem in pems {
        certs.extend(super::pem::parse_certificates(
            pem.as_bytes(),
            "CA response certificate chain",
        )?);
    }
    let bad = |reason: &str| CertError::Pem {
        what: "CA response certificate chain",
        reason: reason.to_owned(),
    };
    let mut roots = Vec::new();
    while certs.len() > 1 && certs.last().is_some_and(is_self_signed) {
        roots.extend(certs.pop());
    }
    if roots.is_empty() {
        return Err(bad(
            "no self-signed root after the leaf (expected leaf, intermediates, roots)",
        ));
    }
    roots.reverse();
    Ok(IssuedCertificate {
        chain: certs,
        roots: TrustBundle::new(roots)?,
    })
}

fn is_self_signed(der: &CertificateDer<'_>) -> bool {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert.subject().as_raw() == cert.issuer().as_raw(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::SystemTime;

    use rustls::pki_types::pem::PemObject;
    use tokio::net::TcpListener;
    use tonic::codegen::tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::certs::{CertificateRequest, LocalCa};
    use crate::xds::proto::istio::ca::IstioCertificateResponse;
    use crate::xds::proto::istio::ca::istio_certificate_service_server::{
        IstioCertificateService, IstioCertificateServiceServer,
    };

    const TOKEN: &str = "node-a-token";

    /// Signs what a node may ask for: a valid token, and an impersonated
    /// identity outside namespace `forbidden`.
    struct TestCa {
        ca: Arc<LocalCa>,
    }

    #[tonic::codegen::async_trait]
    impl IstioCertificateService for TestCa {
        async fn create_certificate(
            &self,
            request: Request<IstioCertificateRequest>,
        ) -> Result<Response<IstioCertificateResponse>, Status> {
            let header = |key: &str| {
                request
                    .metadata()
                    .get(key)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if header("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
                return Err(Status::unauthenticated("token rejected"));
            }
            let identity: Identity = header("impersonatedidentity")
                .ok_or_else(|| Status::invalid_argument("no ImpersonatedIdentity"))?
                .parse()
                .map_err(|e| Status::invalid_argument(format!("{e}")))?;
            if identity.namespace() == "forbidden" {
                return Err(Status::permission_denied(format!(
                    "node node-a runs no pod with identity {identity}"
                )));
            }
            let body = request.into_inner();
            let csr = CertificateSigningRequestDer::from_pem_slice(body.csr.as_bytes())
                .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
            let now = SystemTime::now();
            let validity = Duration::from_secs(body.validity_duration as u64);
            let issued = self
                .ca
                .issue(&identity, &csr, now, now + validity)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let cert_chain = issued
                .chain
                .iter()
                .chain(issued.roots.roots())
                .map(crate::certs::pem::encode_certificate)
                .collect();
            Ok(Response::new(IstioCertificateResponse { cert_chain }))
        }
    }

    async fn serve_ca(ca: Arc<LocalCa>) -> (String, tokio_util::sync::DropGuard) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(IstioCertificateServiceServer::new(TestCa { ca }))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    shutdown.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        (address, stop.drop_guard())
    }

    fn token_file(token: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "amesh-remote-ca-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, token).unwrap();
        path
    }

    fn remote(address: String, token: &str) -> RemoteCa {
        RemoteCa::connect(RemoteCaConfig {
            address,
            token_file: Some(token_file(token)),
            root_cert: None,
            server_name: None,
        })
        .unwrap()
    }

    async fn obtain(ca: &RemoteCa, identity: &Identity) -> Result<IssuedCertificate, CertError> {
        let request = CertificateRequest::new(identity).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            ca.sign(identity, request.csr(), Duration::from_secs(3600)),
        )
        .await
        .expect("CA call timed out")
    }

    #[tokio::test]
    async fn issues_the_impersonated_identity_with_the_ca_roots() {
        let local = Arc::new(LocalCa::generate("cluster.local").unwrap());
        let (address, _stop) = serve_ca(local.clone()).await;
        let ca = remote(address, TOKEN);
        let identity = Identity::new("cluster.local", "shop", "cart").unwrap();
        let request = CertificateRequest::new(&identity).unwrap();
        let issued = ca
            .sign(&identity, request.csr(), Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(issued.chain.len(), 1, "leaf only: the root is not served");
        assert_eq!(issued.roots.roots(), local.trust_bundle().roots());
        let cert = request.into_certificate(issued).unwrap();
        assert_eq!(cert.identity(), &identity);
        let lifetime = cert.not_after().duration_since(cert.not_before()).unwrap();
        assert_eq!(lifetime, Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn refusals_carry_the_ca_message() {
        let local = Arc::new(LocalCa::generate("cluster.local").unwrap());
        let (address, _stop) = serve_ca(local).await;
        let forbidden = Identity::new("cluster.local", "forbidden", "x").unwrap();
        let err = obtain(&remote(address.clone(), TOKEN), &forbidden)
            .await
            .unwrap_err();
        assert!(matches!(&err, CertError::Refused { code, .. } if code == "permission denied"));
        assert_eq!(
            err.to_string(),
            "CA refused the certificate request: permission denied: \
             node node-a runs no pod with identity spiffe://cluster.local/ns/forbidden/sa/x"
        );

        let allowed = Identity::new("cluster.local", "shop", "cart").unwrap();
        let err = obtain(&remote(address, "stolen"), &allowed)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CA refused the certificate request: unauthenticated: token rejected"
        );
    }

    #[tokio::test]
    async fn unreachable_ca_is_unavailable() {
        // A port nothing listens on: bind, note, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let identity = Identity::new("cluster.local", "shop", "cart").unwrap();
        let err = obtain(&remote(address.clone(), TOKEN), &identity)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CertError::Unavailable(m) if m.contains(&address)),
            "{err}"
        );
    }

    #[test]
    fn chain_without_root_is_refused() {
        let local = LocalCa::generate("cluster.local").unwrap();
        let identity = Identity::new("cluster.local", "shop", "cart").unwrap();
        let request = CertificateRequest::new(&identity).unwrap();
        let now = SystemTime::now();
        let issued = local
            .issue(&identity, request.csr(), now, now + Duration::from_secs(60))
            .unwrap();
        let leaf_only = vec![crate::certs::pem::encode_certificate(&issued.chain[0])];
        let err = split_chain(&leaf_only).unwrap_err();
        assert!(err.to_string().contains("no self-signed root"), "{err}");
    }
}
