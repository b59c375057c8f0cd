//! amesh-control-plane: fills the store from Kubernetes or a local folder,
//! derives what the mesh runs on, and serves it (delta xDS) with the CA over
//! gRPC, plus metrics, readiness and a localhost admin endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amesh_control_plane::admin::{ControlPlaneAdmin, readiness};
use amesh_control_plane::derive::{self, Settings};
use amesh_control_plane::grpc::{self, GrpcArgs, GrpcMetrics};
use amesh_control_plane::source;
use amesh_control_plane::store::Store;
use amesh_core::admin::{serve_admin, serve_metrics, serve_readiness};
use amesh_core::metrics::Metrics;
use anyhow::Context;
use clap::{Parser, ValueEnum};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SourceKind {
    /// A local folder of YAML (`--config-dir`), watched.
    Folder,
    /// The Kubernetes API (in-cluster, kubeconfig, or `--kube-api-url`).
    Kubernetes,
}

#[derive(Parser, Debug)]
#[command(name = "amesh-control-plane", version, about)]
struct Args {
    /// Where configuration comes from.
    #[arg(long, value_enum, default_value = "folder")]
    source: SourceKind,
    /// The folder source's directory (`*.yaml`, `*.yml`, multi-document).
    #[arg(long, default_value = "/etc/amesh/config")]
    config_dir: PathBuf,
    /// Talk to this API server URL without authentication instead of the
    /// in-cluster or kubeconfig settings (tests, `kubectl proxy`).
    #[arg(long)]
    kube_api_url: Option<String>,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The mesh's own namespace: root of mesh-wide policies, never enrolled.
    #[arg(long, default_value = "amesh-system")]
    mesh_namespace: String,
    /// Services are `<name>.<namespace>.svc.<cluster-domain>`.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Changes within this window are derived and pushed once.
    #[arg(long, default_value_t = 10)]
    debounce_ms: u64,
    #[arg(long, default_value = "0.0.0.0:15014")]
    metrics_addr: SocketAddr,
    /// Serves `/healthz/ready`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    readiness_addr: SocketAddr,
    /// `/config_dump`, `/logging`: keep it on localhost.
    #[arg(long, default_value = "127.0.0.1:9876")]
    admin_addr: SocketAddr,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(flatten)]
    grpc: GrpcArgs,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

async fn kube_client(url: Option<&str>) -> anyhow::Result<kube::Client> {
    match url {
        Some(url) => {
            let uri = url
                .parse()
                .with_context(|| format!("--kube-api-url {url:?} is not a URL"))?;
            kube::Client::try_from(kube::Config::new(uri))
                .with_context(|| format!("Kubernetes client for {url}"))
        }
        None => kube::Client::try_default()
            .await
            .context("no Kubernetes configuration (in-cluster or kubeconfig)"),
    }
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; ctrl-c only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let log = amesh_core::logging::init(args.log_json);
    let cancel = CancellationToken::new();
    let store = Arc::new(Store::new());
    let settings = Settings {
        trust_domain: args.trust_domain.clone(),
        mesh_namespace: args.mesh_namespace.clone(),
        cluster_domain: args.cluster_domain.clone(),
    };
    args.grpc.trust_domain = Some(args.trust_domain.clone());

    // Listeners first: a port in use fails the start, naming the flag.
    let metrics_listener = bind(args.metrics_addr, "--metrics-addr").await?;
    let readiness_listener = bind(args.readiness_addr, "--readiness-addr").await?;
    let admin_listener = bind(args.admin_addr, "--admin-addr").await?;

    let mut tasks = tokio::task::JoinSet::new();
    let kube = match args.source {
        SourceKind::Folder => {
            // Loaded before the first derivation, so it already holds the
            // folder; the task keeps it in step.
            let folder =
                source::folder::start(&args.config_dir, &store).context("the folder source")?;
            let (store, cancel) = (store.clone(), cancel.clone());
            tasks.spawn(async move {
                folder.run(store, cancel).await;
                Ok(())
            });
            None
        }
        SourceKind::Kubernetes => {
            let client = kube_client(args.kube_api_url.as_deref()).await?;
            let (c, store, cancel) = (client.clone(), store.clone(), cancel.clone());
            tasks.spawn(async move { source::kube::run(c, store, cancel).await });
            Some(client)
        }
    };

    let debounce = Duration::from_millis(args.debounce_ms);
    let derived = derive::run(store.clone(), settings, debounce, cancel.clone());

    let mut grpc_metrics = None;
    let metrics = Metrics::new_with(|registry| {
        grpc_metrics = Some(GrpcMetrics::register(registry));
    });
    let grpc_metrics = grpc_metrics.context("gRPC metrics were not registered")?;
    tasks.spawn(serve_metrics(metrics_listener, metrics, cancel.clone()).map_ok());
    tasks.spawn(
        serve_readiness(
            readiness_listener,
            readiness(derived.clone(), cancel.clone()),
            cancel.clone(),
        )
        .map_ok(),
    );
    let admin = Arc::new(ControlPlaneAdmin {
        store: store.clone(),
        derived: derived.clone(),
        log: Some(log),
    });
    tasks.spawn(serve_admin(admin_listener, admin, cancel.clone()).map_ok());
    {
        let cancel = cancel.clone();
        tasks.spawn(async move { grpc::run(args.grpc, derived, kube, grpc_metrics, cancel).await });
    }
    tracing::info!(source = ?args.source, "control plane started");

    let result = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
        // A task that ends before shutdown is an error (they run until
        // cancelled).
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Err(anyhow::anyhow!("a control plane task stopped unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a control plane task panicked: {e}")),
        },
    };
    cancel.cancel();
    // Let servers drain briefly; never hang the exit.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 5 s");
    }
    result
}

/// Servers that return `()` as tasks of the `anyhow::Result` set.
trait MapOk: std::future::Future<Output = ()> + Sized {
    fn map_ok(self) -> impl std::future::Future<Output = anyhow::Result<()>> {
        async move {
            self.await;
            Ok(())
        }
    }
}

impl<F: std::future::Future<Output = ()>> MapOk for F {}
