//! ztunnel: amesh's node proxy. Serves every enrolled pod of its node from
//! inside the pod's network namespace: captured outbound traffic goes over
//! HBONE (mutual TLS with workload identities) or passes through; inbound
//! HBONE and plaintext reach the app with the client's IP.

mod accept;
mod access_log;
mod admin;
mod authz;
mod busy_poll;
mod config_changes;
mod inbound;
mod live;
mod logging;
mod metered;
mod netns;
mod outbound;
mod plaintext;
mod pod;
mod proxy;
mod relay;
mod route;
mod servers;
mod socket;
mod telemetry;
mod workers;
mod zds_client;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amesh_core::admin::Readiness;
use amesh_core::certs::{CertStore, CertStoreConfig, LocalCa};
use amesh_core::config::{ConfigWatcher, WatchConfig};
use amesh_core::metrics::Metrics;
use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(version, about = "amesh node proxy")]
struct Args {
    /// This node's name: the workloads it serves have `node: <name>`.
    #[arg(long)]
    node: String,
    /// Workload config (YAML), watched for changes.
    #[arg(long)]
    config: PathBuf,
    /// The node agent's ZDS socket.
    #[arg(long, default_value = "/var/run/ztunnel/ztunnel.sock")]
    zds_socket: PathBuf,
    /// Local CA directory (root-cert.pem, root-key.pem); created if missing.
    #[arg(long, default_value = "/var/lib/amesh/ca")]
    ca_dir: PathBuf,
    #[arg(long, default_value = amesh_core::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    #[arg(long, default_value_t = 15006)]
    inbound_plaintext_port: u16,
    #[arg(long, default_value_t = 15008)]
    inbound_port: u16,
    /// Bound on connecting to apps and passthrough destinations, in ms.
    #[arg(long, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    /// Worker threads, each serving its share of every pod's connections.
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
    /// Keep each worker polling for this many µs after it last did work
    /// before it sleeps: lower latency for more CPU. 0 (default) is off.
    #[arg(long, default_value_t = 0)]
    busy_poll_us: u64,
    /// On SIGTERM, how long open connections may take to finish after the
    /// listeners close; the rest are then closed.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Prometheus metrics (`/metrics`).
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
    /// Readiness (`/healthz/ready`): ready once the node agent's snapshot
    /// is applied.
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_addr: SocketAddr,
    /// Admin (`/config_dump`, `/logging`): loopback addresses only.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Namespace whose policies apply mesh-wide (`istio-system` is always
    /// accepted too).
    #[arg(long, default_value = "amesh-system")]
    root_namespace: String,
    /// Log lines as JSON instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_control = logging::init(args.log_json);
    // Before any thread exists: every later thread starts in this namespace.
    netns::init_home().context("reading ztunnel's own network namespace")?;
    let busy_poll = busy_poll::BusyPoll::new(Duration::from_micros(args.busy_poll_us));
    let workers =
        workers::Workers::start(args.worker_threads, busy_poll).context("starting workers")?;
    // The control side (ZDS, config, certificates) runs on this thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(args, &workers, log_control))
}

async fn run(
    args: Args,
    workers: &workers::Workers,
    log_control: logging::LogControl,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let watch_config = WatchConfig::new(&args.config, &args.trust_domain)
        .root_namespace(&args.root_namespace)
        .on_reload({
            let metrics = metrics.clone();
            move |applied| metrics.config_reload(applied)
        });
    let watcher = ConfigWatcher::start(watch_config)
        .map_err(|err| anyhow::anyhow!("invalid config: {err}"))?;
    let ca = LocalCa::load_or_create(&args.ca_dir, &args.trust_domain)
        .with_context(|| format!("loading the CA from {}", args.ca_dir.display()))?;
    let certs = Arc::new(CertStore::new(Arc::new(ca), CertStoreConfig::default()));
    let proxy = Arc::new(proxy::Proxy {
        settings: proxy::Settings {
            node: args.node.clone(),
            trust_domain: args.trust_domain.clone(),
            ports: proxy::Ports {
                outbound: args.outbound_port,
                inbound_plaintext: args.inbound_plaintext_port,
                inbound: args.inbound_port,
            },
            connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        },
        config: watcher.subscribe(),
        certs,
        connections: TaskTracker::new(),
        metrics: metrics.clone(),
        live: Arc::default(),
    });
    let registry = Arc::new(pod::PodRegistry::new(
        proxy.clone(),
        workers.iter().cloned().collect(),
    ));
    let (ready_tx, ready) = watch::channel(Readiness::not_ready(
        "waiting for the node agent's snapshot",
    ));
    let servers_cancel = CancellationToken::new();
    servers::start(
        servers::Addresses {
            metrics: args.metrics_addr,
            readiness: args.readiness_addr,
            admin: args.admin_addr,
        },
        metrics.clone(),
        ready,
        Arc::new(admin::ZtunnelAdmin {
            proxy: proxy.clone(),
            pods: registry.clone(),
            log: log_control,
        }),
        &servers_cancel,
    )?;
    tokio::spawn(config_changes::follow(proxy.clone()));
    info!(node = %args.node, config = %args.config.display(), zds = %args.zds_socket.display(), "ztunnel started");

    let zds = zds_client::run(
        &args.zds_socket,
        registry.clone(),
        zds_client::Observers {
            metrics,
            ready: ready_tx,
        },
    );
    tokio::select! {
        _ = zds => {}
        _ = shutdown_signal() => {}
    }
    // Leaving the select dropped the ZDS connection: the node agent keeps
    // serving any other ztunnel (the new one, in an upgrade).
    drain(
        &proxy,
        &registry,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await;
    servers_cancel.cancel();
    drop(watcher);
    Ok(())
}

/// Graceful shutdown: stop accepting, let open connections finish within
/// `deadline`, then close what is left.
async fn drain(proxy: &proxy::Proxy, registry: &pod::PodRegistry, deadline: Duration) {
    registry.stop_accepting_all();
    proxy.connections.close();
    info!(
        open = proxy.connections.len(),
        ?deadline,
        "draining: listeners closed, waiting for open connections"
    );
    match tokio::time::timeout(deadline, proxy.connections.wait()).await {
        Ok(()) => info!("drained: every connection finished"),
        Err(_) => warn!(
            open = proxy.connections.len(),
            "drain deadline passed: closing the remaining connections"
        ),
    }
    registry.remove_all();
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
