//! gRPC channels to the control plane (xDS and CA): plaintext, or TLS over
//! rustls with the roots from a PEM file, and the bearer token metadata.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::codegen::Service;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::XdsError;
use crate::tls::{ALPN_H2, provider};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a control plane that vanished without closing the
/// connection (node lost, NAT entry dropped).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed control plane address with its TLS settings.
#[derive(Debug)]
pub(crate) struct Target {
    address: String,
    /// `host:port`, as dialled.
    authority: String,
    tls: Option<TlsSettings>,
}

#[derive(Clone)]
struct TlsSettings {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// `http://host:port` needs no root; `https://host:port` needs one.
    pub(crate) fn parse(
        address: &str,
        root_cert: Option<&Path>,
        server_name: Option<&str>,
    ) -> Result<Self, XdsError> {
        let bad = |reason: &str| XdsError::Address {
            address: address.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = address
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host (expected http://host:port or https://host:port)"))?;
        let tls = match (uri.scheme_str(), root_cert) {
            (Some("http"), None) => false,
            (Some("https"), Some(_)) => true,
            (Some("http"), Some(_)) => {
                return Err(bad(
                    "a root certificate is configured but the address is plaintext http://; use https://",
                ));
            }
            (Some("https"), None) => {
                return Err(bad(
                    "https:// needs a root certificate to verify the control plane",
                ));
            }
            _ => return Err(bad("scheme must be http:// or https://")),
        };
        let port = uri
            .port_u16()
            .ok_or_else(|| bad("no port (expected host:port)"))?;
        let authority = format!("{host}:{port}");
        let tls = match root_cert {
            Some(path) if tls => {
                // IPv6 hosts come bracketed out of a URI; certificates name them bare.
                let name = server_name
                    .unwrap_or_else(|| host.trim_start_matches('[').trim_end_matches(']'));
                let server_name = ServerName::try_from(name.to_owned())
                    .map_err(|e| bad(&format!("server name {name:?}: {e}")))?;
                Some(TlsSettings {
                    config: client_config(path)?,
                    server_name,
                })
            }
            _ => None,
        };
        Ok(Self {
            address: address.to_owned(),
            authority,
            tls,
        })
    }

    /// A channel that connects on first use and reconnects on later calls
    /// after a failure. Must be called within a tokio runtime.
    pub(crate) fn connect_lazy(&self) -> Result<Channel, XdsError> {
        // The URI only labels requests: the connector dials `authority` and
        // does TLS itself, so tonic needs no TLS feature of its own.
        let endpoint = Endpoint::from_shared(format!("http://{}", self.authority))
            .map_err(|e| XdsError::Address {
                address: self.address.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_with_connector_lazy(Connector {
            authority: self.authority.clone(),
            tls: self.tls.clone(),
        }))
    }
}

fn client_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, XdsError> {
    let bad = |reason: String| XdsError::RootCert {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = crate::certs::pem::parse_certificates(&pem, "control plane root certificate")
        .map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Dials the control plane, adding TLS when configured.
#[derive(Clone)]
struct Connector {
    authority: String,
    tls: Option<TlsSettings>,
}

type BoxedIo = Pin<Box<dyn IoStream>>;

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send> IoStream for T {}

impl Service<Uri> for Connector {
    type Response = TokioIo<BoxedIo>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let authority = self.authority.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let io: BoxedIo = match tls {
                None => Box::pin(tcp),
                Some(tls) => {
                    let connector = tokio_rustls::TlsConnector::from(tls.config);
                    Box::pin(connector.connect(tls.server_name, tcp).await?)
                }
            };
            Ok(TokioIo::new(io))
        })
    }
}

/// The `authorization: Bearer <token>` value from `path`, read now: tokens
/// are rotated on disk and every connect must use the current one.
pub(crate) fn bearer(path: &Path) -> Result<MetadataValue<Ascii>, XdsError> {
    let bad = |reason: String| XdsError::Token {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|_| bad("the token holds characters not allowed in a header".into()))
}
