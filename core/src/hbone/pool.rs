//! HBONE client: CONNECT streams multiplexed over pooled mTLS connections.
//!
//! Connections are keyed by (source identity, source IP, destination address,
//! expected identity), so a tunnel never rides a connection authenticated as
//! someone else. A connection carries at most `max_streams_per_conn` streams;
//! more open another connection. Idle connections close after
//! `idle_timeout`; a GOAWAY from the server takes a connection out of the pool
//! while its live streams finish.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request};
use rustls::pki_types::ServerName;
use tokio::sync::Notify;
use tracing::debug;

use super::dial::{DefaultDialer, Dialer};
use super::error::HboneError;
use super::headers::{forwarded_for, traceparent};
use super::stream::{H2Stream, StreamGuard};
use super::tuning::H2Config;
use crate::certs::WorkloadCertificate;
use crate::identity::Identity;
use crate::tls;

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub h2: H2Config,
    /// Streams one connection may carry at once before another is opened.
    pub max_streams_per_conn: usize,
    /// A connection without streams for this long is closed.
    pub idle_timeout: Duration,
    /// Bound on TCP connect + TLS + HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// Bound on waiting for the CONNECT response.
    pub response_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            h2: H2Config::default(),
            max_streams_per_conn: 100,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// One tunnel to open.
#[derive(Clone, Debug)]
pub struct HboneRequest {
    /// Certificate (and identity) the client presents.
    pub source: Arc<WorkloadCertificate>,
    /// The original client's IP: sent as `Forwarded: for=` and part of the pool key.
    pub source_ip: IpAddr,
    /// Where the HBONE server listens, e.g. `<pod ip>:15008`.
    pub hbone_addr: SocketAddr,
    /// Identity the server must present.
    pub expected: Identity,
    /// The tunnel's target, sent as `:authority`.
    pub target: SocketAddr,
    /// Dialer for new connections (e.g. one that makes the socket in a pod's
    /// network namespace); the pool's default when `None`.
    pub dialer: Option<Arc<dyn Dialer>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub source: Identity,
    pub source_ip: IpAddr,
    pub dst: SocketAddr,
    pub expected: Identity,
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections currently in the pool.
    pub connections: usize,
    /// Connections ever opened.
    pub opened: u64,
}

#[derive(Clone)]
pub struct HbonePool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: PoolConfig,
    default_dialer: Arc<dyn Dialer>,
    state: Mutex<PoolState>,
    opened: AtomicU64,
    next_id: AtomicU64,
}

#[derive(Default)]
struct PoolState {
    conns: HashMap<PoolKey, KeyEntry>,
}

#[derive(Default)]
struct KeyEntry {
    conns: Vec<Arc<PooledConn>>,
    /// Serialises dials per key so a burst of requests opens one connection,
    /// not one each.
    dialing: Arc<tokio::sync::Mutex<()>>,
}

struct PooledConn {
    id: u64,
    send: SendRequest<Bytes>,
    shared: Arc<ConnShared>,
}

/// State shared between a connection's streams and its driver task.
struct ConnShared {
    active: AtomicUsize,
    /// Bumped on each new stream so the idle timer can tell it was used.
    generation: AtomicU64,
    /// Set when the server said GOAWAY or the connection failed.
    closed: AtomicBool,
    became_idle: Notify,
}

/// Held by each stream; counts it out of its connection on drop.
struct ActiveStream(Arc<ConnShared>);

impl StreamGuard for ActiveStream {}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.became_idle.notify_one();
        }
    }
}

impl HbonePool {
    pub fn new(config: PoolConfig) -> Self {
        Self::with_dialer(config, Arc::new(DefaultDialer::default()))
    }

    pub fn with_dialer(config: PoolConfig, dialer: Arc<dyn Dialer>) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                config,
                default_dialer: dialer,
                state: Mutex::new(PoolState::default()),
                opened: AtomicU64::new(0),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.inner.lock();
        PoolStats {
            connections: state.conns.values().map(|e| e.conns.len()).sum(),
            opened: self.inner.opened.load(Ordering::Relaxed),
        }
    }

    /// Opens a tunnel: reuses a pooled connection with room for another
    /// stream, or dials a new one.
    pub async fn connect(&self, req: HboneRequest) -> Result<H2Stream, HboneError> {
        let key = PoolKey {
            source: req.source.identity().clone(),
            source_ip: req.source_ip,
            dst: req.hbone_addr,
            expected: req.expected.clone(),
        };
        // A pooled connection can die between checkout and use (GOAWAY,
        // reset); such failures happen before the server saw the request, so
        // retry once. A freshly dialed connection's failure is final, unless
        // the server refused the stream unprocessed (it began draining right
        // after the handshake, e.g. a ztunnel upgrade).
        let mut last_err = None;
        for _ in 0..2 {
            let (conn, guard, fresh) = self.checkout(&key, &req).await?;
            match self.open_stream(&conn, guard, &req).await {
                Ok(stream) => return Ok(stream),
                Err(err)
                    if (!fresh && err.is_connection_gone()) || err.is_refused_unprocessed() =>
                {
                    debug!(conn = conn.id, error = %err, "pooled connection gone; retrying on a new one");
                    conn.shared.closed.store(true, Ordering::Release);
                    self.inner.remove(&key, conn.id);
                    last_err = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_err.unwrap_or(HboneError::Timeout {
            addr: req.hbone_addr,
            after: self.inner.config.connect_timeout,
        }))
    }

    async fn checkout(
        &self,
        key: &PoolKey,
        req: &HboneRequest,
    ) -> Result<(Arc<PooledConn>, ActiveStream, bool), HboneError> {
        let dialing = {
            let mut state = self.inner.lock();
            if let Some((conn, guard)) = self.inner.reserve(&mut state, key) {
                return Ok((conn, guard, false));
            }
            state.conns.entry(key.clone()).or_default().dialing.clone()
        };
        let _dial_turn = dialing.lock().await;
        // Someone else may have dialed while we waited.
        if let Some((conn, guard)) = self.inner.reserve(&mut self.inner.lock(), key) {
            return Ok((conn, guard, false));
        }
        let conn = self.dial(key, req).await?;
        let mut state = self.inner.lock();
        state
            .conns
            .entry(key.clone())
            .or_default()
            .conns
            .push(conn.clone());
        Ok((conn.clone(), reserve_on(&conn), true))
    }

    async fn dial(&self, key: &PoolKey, req: &HboneRequest) -> Result<Arc<PooledConn>, HboneError> {
        let config = &self.inner.config;
        let addr = req.hbone_addr;
        let dialer = req
            .dialer
            .as_ref()
            .unwrap_or(&self.inner.default_dialer)
            .clone();
        let handshake = async {
            let tcp = dialer
                .dial(addr)
                .await
                .map_err(|source| HboneError::Connect { addr, source })?;
            let tls_config = tls::client_config(&req.source, vec![req.expected.clone()]);
            let tls = tls::connect(tls_config, ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .map_err(|e| HboneError::from_tls_io(addr, e))?;
            config
                .h2
                .client_builder()
                .handshake::<_, Bytes>(tls)
                .await
                .map_err(|e| HboneError::from_h2(addr, e))
        };
        let (send, connection) = tokio::time::timeout(config.connect_timeout, handshake)
            .await
            .map_err(|_| HboneError::Timeout {
                addr,
                after: config.connect_timeout,
            })??;
        let shared = Arc::new(ConnShared {
            active: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            became_idle: Notify::new(),
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        debug!(conn = id, %addr, source = %key.source, expected = %key.expected, "HBONE connection established");
        tokio::spawn(drive_connection(
            Arc::downgrade(&self.inner),
            key.clone(),
            id,
            connection,
            shared.clone(),
            config.clone(),
        ));
        Ok(Arc::new(PooledConn { id, send, shared }))
    }

    async fn open_stream(
        &self,
        conn: &PooledConn,
        guard: ActiveStream,
        req: &HboneRequest,
    ) -> Result<H2Stream, HboneError> {
        let addr = req.hbone_addr;
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri(req.target.to_string())
            .header(http::header::FORWARDED, forwarded_for(req.source_ip))
            .header("traceparent", traceparent())
            .body(())
            .map_err(|e| HboneError::InvalidRequest(e.to_string()))?;
        let mut send = conn.send.clone();
        let exchange = async {
            send = send
                .ready()
                .await
                .map_err(|e| HboneError::from_h2(addr, e))?;
            let (response, send_stream) = send
                .send_request(request, false)
                .map_err(|e| HboneError::from_h2(addr, e))?;
            let response = response.await.map_err(|e| HboneError::from_h2(addr, e))?;
            Ok::<_, HboneError>((response, send_stream))
        };
        let timeout = self.inner.config.response_timeout;
        let (response, send_stream) =
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| HboneError::Timeout {
                    addr,
                    after: timeout,
                })??;
        if response.status() != http::StatusCode::OK {
            return Err(HboneError::from_status(addr, req.target, response.status()));
        }
        Ok(H2Stream::new(
            send_stream,
            response.into_body(),
            self.inner.config.h2.max_write_chunk,
            self.inner.config.h2.close_linger,
            Some(Arc::new(guard)),
        ))
    }
}

fn reserve_on(conn: &Arc<PooledConn>) -> ActiveStream {
    conn.shared.active.fetch_add(1, Ordering::AcqRel);
    conn.shared.generation.fetch_add(1, Ordering::Relaxed);
    ActiveStream(conn.shared.clone())
}

impl PoolInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A live connection under `key` with a free stream slot, reserved.
    fn reserve(
        &self,
        state: &mut PoolState,
        key: &PoolKey,
    ) -> Option<(Arc<PooledConn>, ActiveStream)> {
        let max = self.config.max_streams_per_conn;
        let entry = state.conns.get_mut(key)?;
        entry
            .conns
            .retain(|c| !c.shared.closed.load(Ordering::Acquire));
        let conn = entry
            .conns
            .iter()
            .find(|c| c.shared.active.load(Ordering::Acquire) < max)?
            .clone();
        let guard = reserve_on(&conn);
        Some((conn, guard))
    }

    fn remove(&self, key: &PoolKey, id: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.conns.get_mut(key) {
            entry.conns.retain(|c| c.id != id);
            if entry.conns.is_empty() && Arc::strong_count(&entry.dialing) == 1 {
                state.conns.remove(key);
            }
        }
    }

    /// Removes the connection if it has no streams; checked under the pool
    /// lock so no stream can be reserved on it concurrently.
    fn remove_if_idle(&self, key: &PoolKey, id: u64, shared: &ConnShared, generation: u64) -> bool {
        let mut state = self.lock();
        let idle = shared.active.load(Ordering::Acquire) == 0
            && shared.generation.load(Ordering::Relaxed) == generation;
        if idle {
            shared.closed.store(true, Ordering::Release);
            if let Some(entry) = state.conns.get_mut(key) {
                entry.conns.retain(|c| c.id != id);
                if entry.conns.is_empty() && Arc::strong_count(&entry.dialing) == 1 {
                    state.conns.remove(key);
                }
            }
        }
        idle
    }
}

/// Drives one HTTP/2 connection: closes it when idle too long or when
/// keepalive PINGs go unanswered, and takes it out of the pool when it ends.
async fn drive_connection<T>(
    pool: std::sync::Weak<PoolInner>,
    key: PoolKey,
    id: u64,
    mut connection: h2::client::Connection<T, Bytes>,
    shared: Arc<ConnShared>,
    config: PoolConfig,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ping_pong = connection.ping_pong();
    let keepalive = keepalive(
        ping_pong,
        config.h2.keepalive_interval,
        config.h2.keepalive_timeout,
    );
    tokio::pin!(keepalive);
    let reason = loop {
        let idle_since = (shared.active.load(Ordering::Acquire) == 0)
            .then(|| shared.generation.load(Ordering::Relaxed));
        tokio::select! {
            result = &mut connection => break match result {
                Ok(()) => "closed by peer".to_string(),
                Err(e) => format!("failed: {e}"),
            },
            () = &mut keepalive => break "keepalive PING unanswered".to_string(),
            () = shared.became_idle.notified() => continue,
            () = tokio::time::sleep(config.idle_timeout), if idle_since.is_some() => {
                let Some(pool) = pool.upgrade() else { break "pool dropped".to_string() };
                if pool.remove_if_idle(&key, id, &shared, idle_since.unwrap_or_default()) {
                    break format!("idle for {:?}", config.idle_timeout);
                }
            }
        }
    };
    shared.closed.store(true, Ordering::Release);
    if let Some(pool) = pool.upgrade() {
        pool.remove(&key, id);
    }
    debug!(conn = id, dst = %key.dst, %reason, "HBONE connection closed");
}

async fn keepalive(ping_pong: Option<h2::PingPong>, interval: Option<Duration>, timeout: Duration) {
    let (Some(mut ping_pong), Some(interval)) = (ping_pong, interval) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

impl fmt::Debug for HbonePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HbonePool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
