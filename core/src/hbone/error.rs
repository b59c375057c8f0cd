//! What can go wrong opening a tunnel, precisely enough for callers to act on.

use std::io;
use std::net::SocketAddr;

use http::StatusCode;

use crate::certs::CertError;
use crate::tls::IdentityMismatch;

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("connecting to HBONE endpoint {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {after:?} connecting to HBONE endpoint {addr}")]
    Timeout {
        addr: SocketAddr,
        after: std::time::Duration,
    },
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS with {addr} failed: {source}")]
    IdentityMismatch {
        addr: SocketAddr,
        #[source]
        source: IdentityMismatch,
    },
    #[error("HTTP/2 with {addr} failed: {source}")]
    Http2 {
        addr: SocketAddr,
        #[source]
        source: h2::Error,
    },
    #[error("{addr} refused the tunnel to {target}: 401 Unauthorized (denied by policy)")]
    Denied {
        addr: SocketAddr,
        target: SocketAddr,
    },
    #[error("{addr} refused the tunnel to {target}: 400 Bad Request (not a valid target)")]
    BadTarget {
        addr: SocketAddr,
        target: SocketAddr,
    },
    #[error(
        "{addr} refused the tunnel to {target}: 503 Service Unavailable (target refused the connection)"
    )]
    TargetRefused {
        addr: SocketAddr,
        target: SocketAddr,
    },
    #[error("{addr} answered the tunnel to {target} with unexpected status {status}")]
    Status {
        addr: SocketAddr,
        target: SocketAddr,
        status: StatusCode,
    },
    #[error("cannot build the CONNECT request: {0}")]
    InvalidRequest(String),
    #[error("no certificate to present: {0}")]
    Certificate(#[from] CertError),
}

impl HboneError {
    /// Classifies a failure of TLS or of I/O over TLS, finding the rustls
    /// error (and our identity check) inside the io::Error chain.
    pub(crate) fn from_tls_io(addr: SocketAddr, err: io::Error) -> Self {
        match find_rustls(&err) {
            Some(tls) => Self::from_rustls(addr, tls.clone()),
            None => Self::Connect { addr, source: err },
        }
    }

    pub(crate) fn from_h2(addr: SocketAddr, err: h2::Error) -> Self {
        if let Some(tls) = err.get_io().and_then(find_rustls) {
            return Self::from_rustls(addr, tls.clone());
        }
        Self::Http2 { addr, source: err }
    }

    fn from_rustls(addr: SocketAddr, err: rustls::Error) -> Self {
        if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = &err
            && let Some(mismatch) = other.0.downcast_ref::<IdentityMismatch>()
        {
            return Self::IdentityMismatch {
                addr,
                source: mismatch.clone(),
            };
        }
        Self::Tls { addr, source: err }
    }

    pub(crate) fn from_status(addr: SocketAddr, target: SocketAddr, status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Denied { addr, target },
            StatusCode::BAD_REQUEST => Self::BadTarget { addr, target },
            StatusCode::SERVICE_UNAVAILABLE => Self::TargetRefused { addr, target },
            status => Self::Status {
                addr,
                target,
                status,
            },
        }
    }

    /// The HTTP status the server answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Denied { .. } => Some(StatusCode::UNAUTHORIZED),
            Self::BadTarget { .. } => Some(StatusCode::BAD_REQUEST),
            Self::TargetRefused { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server turned the stream away before processing it (GOAWAY
    /// below its id, or REFUSED_STREAM): safe to send again elsewhere.
    pub(crate) fn is_refused_unprocessed(&self) -> bool {
        match self {
            Self::Http2 { source, .. } => {
                source.is_go_away() || source.reason() == Some(h2::Reason::REFUSED_STREAM)
            }
            _ => false,
        }
    }

    /// Whether the failure happened before any request reached the server, so
    /// retrying on a fresh connection is safe.
    pub(crate) fn is_connection_gone(&self) -> bool {
        match self {
            Self::Http2 { source, .. } => {
                source.is_go_away()
                    || source.is_io()
                    || source.reason() == Some(h2::Reason::REFUSED_STREAM)
            }
            _ => false,
        }
    }
}

fn find_rustls(err: &io::Error) -> Option<&rustls::Error> {
    let mut inner: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    while let Some(e) = inner {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        inner = e.source();
    }
    None
}
