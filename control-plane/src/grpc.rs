//! The control plane's gRPC listener: discovery and the CA on one TLS 1.3
//! port, with a serving certificate issued by our own CA.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amesh_core::xds::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use amesh_core::xds::proto::istio::ca::istio_certificate_service_server::IstioCertificateServiceServer;
use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::ca::auth::{RoleAccounts, parse_account};
use crate::ca::{Authenticator, Authority, CaMetrics, CaService, LocalTokens, TokenReviewer};
use crate::derive::Derived;
use crate::xds::{XdsMetrics, XdsServer};

/// SANs the serving certificate always carries.
const DEFAULT_SANS: [&str; 3] = [
    "amesh-control-plane.amesh-system.svc",
    "localhost",
    "127.0.0.1",
];
/// A client that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug, Clone)]
pub struct GrpcArgs {
    /// Discovery and CA listener.
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub grpc_addr: SocketAddr,
    /// CA files without Kubernetes: `root-cert.pem`/`root-key.pem` (created
    /// if absent) or Istio `cacerts` files (`ca-cert.pem`, `ca-key.pem`,
    /// `cert-chain.pem`, `root-cert.pem`) for a plug-in intermediate.
    #[arg(long, default_value = "/var/lib/amesh/ca")]
    pub ca_dir: PathBuf,
    /// With Kubernetes: `namespace/name` of the Secret holding the same
    /// keys as `--ca-dir` (created with a new root if absent).
    #[arg(long, default_value = "amesh-system/amesh-ca")]
    pub ca_secret: String,
    /// Longest workload certificate lifetime granted.
    #[arg(long, default_value_t = 24)]
    pub cert_ttl_hours: u64,
    /// Without Kubernetes: nodes to issue a token to (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub local_nodes: Vec<String>,
    /// Where `<node>.token` (0600) and `root-cert.pem` are written for
    /// local nodes; default `<ca-dir>/tokens`.
    #[arg(long)]
    pub local_token_dir: Option<PathBuf>,
    /// Extra SANs of the serving certificate (beside
    /// amesh-control-plane.amesh-system.svc, localhost, 127.0.0.1).
    #[arg(long, value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// `namespace/name` of the ztunnel service account (node proxies).
    #[arg(long, default_value = "amesh-system/ztunnel")]
    pub ztunnel_service_account: String,
    /// `namespace/name` of the node agent service account.
    #[arg(long, default_value = "amesh-system/amesh-node-agent")]
    pub node_agent_service_account: String,
    /// The mesh's trust domain (set by the binary from its settings;
    /// `cluster.local` when unset).
    #[arg(skip)]
    pub trust_domain: Option<String>,
}

impl GrpcArgs {
    fn trust_domain(&self) -> &str {
        self.trust_domain
            .as_deref()
            .unwrap_or(amesh_core::identity::DEFAULT_TRUST_DOMAIN)
    }

    fn token_dir(&self) -> PathBuf {
        self.local_token_dir
            .clone()
            .unwrap_or_else(|| self.ca_dir.join("tokens"))
    }
}

#[derive(Debug)]
pub struct GrpcMetrics {
    pub ca: Arc<CaMetrics>,
    pub xds: Arc<XdsMetrics>,
}

impl GrpcMetrics {
    pub fn register(registry: &mut Registry) -> Arc<GrpcMetrics> {
        let metrics = GrpcMetrics {
            ca: Arc::new(CaMetrics::default()),
            xds: Arc::new(XdsMetrics::default()),
        };
        metrics.ca.register(registry);
        metrics.xds.register(registry);
        Arc::new(metrics)
    }
}

/// Serves discovery and the CA until `cancel`.
pub async fn run(
    args: GrpcArgs,
    derived: watch::Receiver<Arc<Derived>>,
    kube: Option<kube::Client>,
    metrics: Arc<GrpcMetrics>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (_, task) = bind_and_run(args, derived, kube, metrics, cancel).await?;
    task.await.context("gRPC server task")?
}

/// Sets up the CA and authentication, binds `--grpc-addr` (port 0 picks
/// one) and serves in a task: the bound address and that task.
pub async fn bind_and_run(
    args: GrpcArgs,
    derived: watch::Receiver<Arc<Derived>>,
    kube: Option<kube::Client>,
    metrics: Arc<GrpcMetrics>,
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<anyhow::Result<()>>)> {
    let trust_domain = args.trust_domain().to_owned();
    let files = match &kube {
        Some(client) => {
            let (namespace, name) =
                parse_account(&args.ca_secret).map_err(|e| anyhow::anyhow!("--ca-secret: {e}"))?;
            crate::ca::files::load_secret(client.clone(), &namespace, &name, &trust_domain).await?
        }
        None => crate::ca::files::load_dir(&args.ca_dir, &trust_domain)?,
    };
    let authority = Arc::new(Authority::from_files(&files)?);
    tracing::info!(
        plugged = authority.is_plugged(),
        roots = authority.roots().roots().len(),
        "CA ready"
    );
    let auth: Arc<dyn Authenticator> = match kube {
        Some(client) => {
            let accounts = RoleAccounts {
                ztunnel: parse_account(&args.ztunnel_service_account)
                    .map_err(|e| anyhow::anyhow!("--ztunnel-service-account: {e}"))?,
                node_agent: parse_account(&args.node_agent_service_account)
                    .map_err(|e| anyhow::anyhow!("--node-agent-service-account: {e}"))?,
            };
            Arc::new(TokenReviewer::new(
                client,
                accounts,
                trust_domain,
                derived.clone(),
            ))
        }
        None => {
            let dir = args.token_dir();
            let tokens = LocalTokens::load_or_create(&dir, &args.local_nodes)
                .with_context(|| format!("writing node tokens to {}", dir.display()))?;
            let root_path = dir.join("root-cert.pem");
            std::fs::write(&root_path, authority.roots().to_pem())
                .with_context(|| format!("writing {}", root_path.display()))?;
            Arc::new(tokens)
        }
    };
    let listener = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", args.grpc_addr))?;
    let addr = listener.local_addr()?;
    let settings = ServeSettings {
        max_ttl: Duration::from_secs(args.cert_ttl_hours.saturating_mul(3600)),
        sans: DEFAULT_SANS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(args.tls_san.iter().cloned())
            .collect(),
    };
    tracing::info!(%addr, "discovery and CA listening");
    let task = tokio::spawn(serve(
        listener, authority, auth, derived, settings, metrics, cancel,
    ));
    Ok((addr, task))
}

/// What [`serve`] needs beside its parts.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub max_ttl: Duration,
    /// Serving certificate SANs (DNS names or IPs).
    pub sans: Vec<String>,
}

/// Serves both services on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    authority: Arc<Authority>,
    auth: Arc<dyn Authenticator>,
    derived: watch::Receiver<Arc<Derived>>,
    settings: ServeSettings,
    metrics: Arc<GrpcMetrics>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let serving = authority
        .serving_cert(&settings.sans)
        .context("issuing the control plane's serving certificate")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(amesh_core::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 unsupported by the crypto provider")?
        .with_no_client_auth()
        .with_single_cert(serving.chain, serving.key)
        .context("serving certificate")?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let ca = CaService::new(
        authority,
        auth.clone(),
        derived.clone(),
        settings.max_ttl,
        metrics.ca.clone(),
    );
    let xds = XdsServer::new(derived, auth, metrics.xds.clone(), cancel.clone());
    let (conns_tx, conns_rx) = mpsc::channel(64);
    tokio::spawn(accept(listener, acceptor, conns_tx, cancel.clone()));
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(AggregatedDiscoveryServiceServer::new(xds).max_decoding_message_size(64 << 20))
        .add_service(IstioCertificateServiceServer::new(ca))
        .serve_with_incoming_shutdown(ReceiverStream::new(conns_rx), cancel.cancelled_owned())
        .await
        .context("gRPC server")
}

/// Accepts TCP connections and hands completed TLS handshakes to tonic;
/// each handshake runs in its own task so a slow client delays no other.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<Result<tls::TlsConn, std::io::Error>>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer): (TcpStream, SocketAddr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a gRPC connection");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = conns.send(Ok(tls::TlsConn(stream))).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

mod tls {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;
    use tonic::transport::server::{Connected, TcpConnectInfo};

    /// A server-side TLS connection tonic can serve.
    #[derive(Debug)]
    pub struct TlsConn(pub tokio_rustls::server::TlsStream<TcpStream>);

    impl Connected for TlsConn {
        type ConnectInfo = TcpConnectInfo;

        fn connect_info(&self) -> TcpConnectInfo {
            self.0.get_ref().0.connect_info()
        }
    }

    impl AsyncRead for TlsConn {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for TlsConn {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.0.is_write_vectored()
        }
    }
}
