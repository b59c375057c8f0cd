//! Real components wired together in-process: a local CA, certificates for
//! test identities, HBONE servers with simple handlers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use amesh_core::certs::{CertStore, CertStoreConfig, LocalCa, WorkloadCertificate};
use amesh_core::hbone::{
    ConnectHandler, DrainSignal, H2Stream, HbonePool, HboneRequest, HboneServer, InboundConnect,
    PoolConfig, Rejection, Responder, ServerConfig, ServerStats, drain_channel,
};
use amesh_core::identity::Identity;
use amesh_core::tls::ServerConfigBuilder;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub const TRUST_DOMAIN: &str = "cluster.local";
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub fn identity(ns: &str, sa: &str) -> Identity {
    Identity::new(TRUST_DOMAIN, ns, sa).expect("test identity is valid")
}

/// A local CA and a renewing store in front of it.
#[derive(Debug)]
pub struct Pki {
    pub ca: Arc<LocalCa>,
    pub store: Arc<CertStore>,
}

impl Pki {
    pub fn new() -> Self {
        Self::with_config(CertStoreConfig::default())
    }

    pub fn with_config(config: CertStoreConfig) -> Self {
        let ca = Arc::new(LocalCa::generate(TRUST_DOMAIN).expect("generate CA"));
        let store = Arc::new(CertStore::new(ca.clone(), config));
        Self { ca, store }
    }

    pub async fn cert(&self, ns: &str, sa: &str) -> Arc<WorkloadCertificate> {
        self.store.get(&identity(ns, sa)).await.expect("issue cert")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A running HBONE server on an ephemeral loopback port.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub identity: Identity,
    pub stats: Arc<ServerStats>,
    pub drain: DrainSignal,
    pub task: tokio::task::JoinHandle<()>,
}

pub async fn start_server<H: ConnectHandler>(
    cert: Arc<WorkloadCertificate>,
    handler: H,
    config: ServerConfig,
) -> TestServer {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let identity = cert.identity().clone();
    let tls = ServerConfigBuilder::build(Arc::new(cert));
    let server = HboneServer::new(config, tls, Arc::new(handler));
    let stats = server.stats();
    let (drain, watch) = drain_channel();
    let task = tokio::spawn(server.serve(listener, watch));
    TestServer {
        addr,
        identity,
        stats,
        drain,
        task,
    }
}

impl TestServer {
    /// Waits (bounded) until the server has refused `n` handshakes.
    pub async fn refused_handshakes_reach(&self, n: u64) -> bool {
        eventually(std::time::Duration::from_secs(5), || {
            self.stats
                .handshakes_failed
                .load(std::sync::atomic::Ordering::Relaxed)
                == n
        })
        .await
    }

    /// CONNECT streams the server has received.
    pub fn streams(&self) -> u64 {
        self.stats
            .streams
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A request from `source` to this server, targeting `target`.
    pub fn request(&self, source: Arc<WorkloadCertificate>, target: SocketAddr) -> HboneRequest {
        HboneRequest {
            source,
            source_ip: LOCALHOST,
            hbone_addr: self.addr,
            expected: self.identity.clone(),
            target,
            dialer: None,
        }
    }
}

pub fn pool() -> HbonePool {
    HbonePool::new(PoolConfig::default())
}

/// Echoes every byte back, then closes its write side at EOF.
#[derive(Clone, Debug, Default)]
pub struct EchoHandler;

impl ConnectHandler for EchoHandler {
    async fn handle(&self, _request: InboundConnect, responder: Responder) {
        let Ok(stream) = responder.accept() else {
            return;
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        if tokio::io::copy(&mut rd, &mut wr).await.is_ok() {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
        }
    }
}

/// Refuses every CONNECT with the given rejection.
#[derive(Clone, Copy, Debug)]
pub struct RejectHandler(pub Rejection);

impl ConnectHandler for RejectHandler {
    async fn handle(&self, _request: InboundConnect, responder: Responder) {
        responder.reject(self.0);
    }
}

/// Accepts every CONNECT and hands the stream to the test.
#[derive(Clone, Debug)]
pub struct ChannelHandler(pub mpsc::UnboundedSender<(InboundConnect, H2Stream)>);

impl ChannelHandler {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<(InboundConnect, H2Stream)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), rx)
    }
}

impl ConnectHandler for ChannelHandler {
    async fn handle(&self, request: InboundConnect, responder: Responder) {
        if let Ok(stream) = responder.accept() {
            let _ = self.0.send((request, stream));
        }
    }
}

/// Polls `check` until it holds or `within` passes; returns whether it held.
/// For waiting on an event whose moment is not observable directly.
pub async fn eventually(within: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
