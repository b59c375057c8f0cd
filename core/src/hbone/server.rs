//! HBONE server: mTLS + HTTP/2, each CONNECT handed to a handler that accepts
//! it with a stream or refuses it with 401, 400 or 503, as Istio's ztunnel.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::drain::DrainWatch;
use super::headers::parse_forwarded_for;
use super::stream::{H2Stream, h2_to_io};
use super::tuning::H2Config;
use crate::identity::Identity;
use crate::tls::{self, peer};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub h2: H2Config,
    /// Connections served at once; more are closed right after accept.
    pub max_connections: usize,
    /// Streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS); the peer's
    /// excess streams are refused with REFUSED_STREAM.
    pub max_streams_per_conn: u32,
    /// Bound on the TLS + HTTP/2 handshake of a new connection.
    pub handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            h2: H2Config::default(),
            max_connections: 10_000,
            max_streams_per_conn: 1000,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A CONNECT request from an authenticated peer.
#[derive(Debug)]
pub struct InboundConnect {
    /// Identity from the peer's verified certificate.
    pub peer: Identity,
    /// Address of the peer's TCP connection.
    pub peer_addr: SocketAddr,
    /// Address the connection arrived on.
    pub local_addr: SocketAddr,
    /// The `:authority` target.
    pub target: SocketAddr,
    /// The original client's IP from `Forwarded: for=`, if sent.
    pub forwarded_for: Option<std::net::IpAddr>,
    pub headers: HeaderMap,
}

/// Why a CONNECT is refused; each maps to the status Istio's ztunnel sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 401: denied by policy.
    Denied,
    /// 400: not a valid target (not this pod, or a ztunnel port).
    BadTarget,
    /// 503: the target refused the connection.
    TargetRefused,
}

impl Rejection {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Denied => StatusCode::UNAUTHORIZED,
            Self::BadTarget => StatusCode::BAD_REQUEST,
            Self::TargetRefused => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Answers one CONNECT. Dropping it unanswered resets the stream.
pub struct Responder {
    respond: SendResponse<Bytes>,
    recv: RecvStream,
    max_write_chunk: usize,
    linger: Duration,
}

impl Responder {
    /// Sends 200 and returns the tunnel.
    pub fn accept(mut self) -> std::io::Result<H2Stream> {
        let send = self
            .respond
            .send_response(status_response(StatusCode::OK), false)
            .map_err(h2_to_io)?;
        Ok(H2Stream::new(
            send,
            self.recv,
            self.max_write_chunk,
            self.linger,
            None,
        ))
    }

    /// Sends the rejection's status and ends the stream.
    pub fn reject(mut self, rejection: Rejection) {
        let _ = self
            .respond
            .send_response(status_response(rejection.status()), true);
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

fn status_response(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}

/// Decides what happens to each CONNECT.
pub trait ConnectHandler: Send + Sync + 'static {
    fn handle(
        &self,
        request: InboundConnect,
        responder: Responder,
    ) -> impl Future<Output = ()> + Send;
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_accepted: AtomicU64,
    /// Closed at accept because `max_connections` were already served.
    pub connections_refused: AtomicU64,
    /// TLS or HTTP/2 handshakes that failed (bad or missing client cert, plaintext…).
    pub handshakes_failed: AtomicU64,
    pub streams: AtomicU64,
}

pub struct HboneServer<H> {
    config: ServerConfig,
    tls: Arc<rustls::ServerConfig>,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
}

impl<H: ConnectHandler> HboneServer<H> {
    pub fn new(config: ServerConfig, tls: Arc<rustls::ServerConfig>, handler: Arc<H>) -> Self {
        Self {
            config,
            tls,
            handler,
            stats: Arc::new(ServerStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Accepts until `drain` fires, then stops accepting, sends GOAWAY on every
    /// connection and returns once their streams have finished.
    pub async fn serve(self, listener: TcpListener, drain: DrainWatch) {
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let this = Arc::new(self);
        let mut stop = drain.clone();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.wait() => break,
            };
            let (tcp, peer_addr) = match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %err, "HBONE accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                this.stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                warn!(%peer_addr, max = this.config.max_connections, "HBONE connection refused: connection limit reached");
                drop(tcp);
                continue;
            };
            this.stats
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            let this = this.clone();
            let drain = drain.clone();
            tokio::spawn(async move {
                this.serve_connection(tcp, peer_addr, drain).await;
                drop(permit);
            });
        }
        drop(listener);
        // Wait for every connection task to finish draining.
        let _ = limit
            .acquire_many(u32::try_from(this.config.max_connections).unwrap_or(u32::MAX))
            .await;
    }

    async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer_addr: SocketAddr,
        mut drain: DrainWatch,
    ) {
        let local_addr = match tcp.local_addr() {
            Ok(addr) => addr,
            Err(_) => return,
        };
        let _ = tcp.set_nodelay(true);
        let handshake = async {
            let tls = tls::accept(self.tls.clone(), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let peer = tls
                .peer_certificates()
                .first()
                .ok_or_else(|| "TLS: no client certificate".to_string())
                .and_then(|leaf| peer::identity_from_der(leaf).map_err(|e| e.to_string()))?;
            let conn = self
                .config
                .h2
                .server_builder(self.config.max_streams_per_conn)
                .handshake::<_, Bytes>(tls)
                .await
                .map_err(|e| format!("HTTP/2: {e}"))?;
            Ok::<_, String>((peer, conn))
        };
        let (peer, mut conn) =
            match tokio::time::timeout(self.config.handshake_timeout, handshake).await {
                Ok(Ok(ok)) => ok,
                Ok(Err(reason)) => {
                    self.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    info!(%peer_addr, %reason, "HBONE handshake refused");
                    return;
                }
                Err(_) => {
                    self.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    info!(%peer_addr, "HBONE handshake timed out");
                    return;
                }
            };
        debug!(%peer_addr, %peer, "HBONE connection accepted");
        let mut draining = false;
        loop {
            let next = tokio::select! {
                next = conn.accept() => next,
                () = drain.wait(), if !draining => {
                    draining = true;
                    conn.graceful_shutdown();
                    continue;
                }
            };
            match next {
                Some(Ok((request, respond))) => {
                    self.stats.streams.fetch_add(1, Ordering::Relaxed);
                    self.dispatch(request, respond, &peer, peer_addr, local_addr);
                }
                Some(Err(err)) => {
                    debug!(%peer_addr, error = %err, "HBONE connection error");
                    break;
                }
                None => break,
            }
        }
    }

    fn dispatch(
        &self,
        request: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        peer: &Identity,
        peer_addr: SocketAddr,
        local_addr: SocketAddr,
    ) {
        if request.method() != Method::CONNECT {
            let _ = respond.send_response(status_response(StatusCode::METHOD_NOT_ALLOWED), true);
            return;
        }
        let target = request
            .uri()
            .authority()
            .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
        let Some(target) = target else {
            debug!(%peer, uri = %request.uri(), "CONNECT without an ip:port authority");
            let _ = respond.send_response(status_response(StatusCode::BAD_REQUEST), true);
            return;
        };
        let (parts, recv) = request.into_parts();
        let inbound = InboundConnect {
            peer: peer.clone(),
            peer_addr,
            local_addr,
            target,
            forwarded_for: parts
                .headers
                .get(http::header::FORWARDED)
                .and_then(parse_forwarded_for),
            headers: parts.headers,
        };
        let responder = Responder {
            respond,
            recv,
            max_write_chunk: self.config.h2.max_write_chunk,
            linger: self.config.h2.close_linger,
        };
        let handler = self.handler.clone();
        tokio::spawn(async move { handler.handle(inbound, responder).await });
    }
}

impl<H> fmt::Debug for HboneServer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HboneServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
