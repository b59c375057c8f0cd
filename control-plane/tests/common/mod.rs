//! What the gRPC tests share: a control plane serving discovery and the CA
//! on loopback for two local nodes, and a TLS channel to it that trusts
//! only its root.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use amesh_control_plane::derive::Derived;
use amesh_control_plane::grpc::{GrpcArgs, GrpcMetrics, bind_and_run};
use prometheus_client::registry::Registry;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// A running gRPC server; `cancel` stops it.
pub struct Served {
    pub addr: SocketAddr,
    /// The gRPC metrics (each test binary compiles this module; not all
    /// read them).
    #[allow(dead_code)]
    pub registry: Registry,
    pub cancel: CancellationToken,
}

/// Serves `derived` on 127.0.0.1 (any port) for local nodes `node-a` and
/// `node-b`, with the CA in `ca_dir` and the nodes' tokens in `tokens`.
pub async fn serve(
    ca_dir: PathBuf,
    tokens: PathBuf,
    derived: watch::Receiver<Arc<Derived>>,
) -> Served {
    let args = GrpcArgs {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        ca_dir,
        ca_secret: "amesh-system/amesh-ca".into(),
        cert_ttl_hours: 24,
        local_nodes: vec!["node-a".into(), "node-b".into()],
        local_token_dir: Some(tokens),
        tls_san: Vec::new(),
        ztunnel_service_account: "amesh-system/ztunnel".into(),
        node_agent_service_account: "amesh-system/amesh-node-agent".into(),
        trust_domain: None,
    };
    let mut registry = Registry::default();
    let metrics = GrpcMetrics::register(&mut registry);
    let cancel = CancellationToken::new();
    let (addr, _task) = bind_and_run(args, derived, None, metrics, cancel.clone())
        .await
        .unwrap();
    Served {
        addr,
        registry,
        cancel,
    }
}

/// An HTTP/2 channel over TLS 1.3 to `addr`, trusting only `root_pem`.
pub async fn tls_channel(addr: SocketAddr, root_pem: &[u8]) -> Channel {
    let bundle = amesh_core::certs::TrustBundle::from_pem(root_pem).unwrap();
    let mut store = rustls::RootCertStore::empty();
    for der in bundle.roots() {
        store.add(der.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(amesh_core::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}
