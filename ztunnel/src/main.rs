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
mod config_status;
mod inbound;
mod live;
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
use amesh_core::certs::{
    CertStore, CertStoreConfig, CertificateAuthority, LocalCa, RemoteCa, RemoteCaConfig,
};
use amesh_core::config::{ConfigSnapshot, WatchConfig};
use amesh_core::metrics::Metrics;
use amesh_core::xds::client::ClientConfig;
use amesh_core::xds::convert::ClientOptions;
use amesh_core::xds::source::ConfigSource;
use amesh_core::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};
use anyhow::Context;
use clap::{ArgGroup, Parser};
use config_status::ConfigStatus;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "amesh node proxy",
    group(ArgGroup::new("source").required(true).args(["config", "xds_address"]))
)]
struct Args {
    /// This node's name: the workloads it serves have `node: <name>`.
    #[arg(long)]
    node: String,
    /// Workload config (YAML), watched for changes: standalone mode.
    /// Exactly one of --config and --xds-address.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The control plane (`http://host:port`, or `https://` with
    /// --xds-root-cert): workloads, services and policies come from it over
    /// delta xDS, and certificates from its CA.
    #[arg(long)]
    xds_address: Option<String>,
    /// The CA (`IstioCertificateService`) when it is not the xDS address;
    /// also usable with --config instead of the local CA.
    #[arg(long)]
    ca_address: Option<String>,
    /// Bearer token presented to the control plane and CA (re-read on
    /// every connection and request).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PEM roots that verify the control plane's and CA's TLS certificates.
    #[arg(long)]
    xds_root_cert: Option<PathBuf>,
    /// The node agent's ZDS socket.
    #[arg(long, default_value = "/var/run/ztunnel/ztunnel.sock")]
    zds_socket: PathBuf,
    /// Local CA directory (root-cert.pem, root-key.pem), created if missing;
    /// used when no CA address is given.
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
    let log_control = amesh_core::logging::init(args.log_json);
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
    log_control: amesh_core::logging::LogControl,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let (source, config_status) = config_source(&args, &metrics)?;
    let certs = Arc::new(CertStore::new(
        certificate_authority(&args)?,
        CertStoreConfig::default(),
    ));
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
        config: source.subscribe(),
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
        source
            .pending()
            .unwrap_or("waiting for the node agent's snapshot"),
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
            config_status,
        }),
        &servers_cancel,
    )?;
    tokio::spawn(config_changes::follow(proxy.clone()));
    info!(node = %args.node, config = %source.describe(), zds = %args.zds_socket.display(), "ztunnel started");

    // Pods are taken from the node agent only once there is a config to
    // serve them with: an empty one would refuse all their traffic.
    tokio::select! {
        loaded = source.loaded() => {
            loaded.with_context(|| format!("configuration from {}", source.describe()))?;
        }
        _ = shutdown_signal() => {
            servers_cancel.cancel();
            return Ok(());
        }
    }
    ready_tx.send_replace(Readiness::not_ready(
        "waiting for the node agent's snapshot",
    ));
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
    drop(source);
    Ok(())
}

/// The config file, or the control plane when --xds-address is given
/// (clap makes them exclusive and requires one). Every reload or push
/// counts in the reload metric, applied or refused (NACKed).
fn config_source(
    args: &Args,
    metrics: &Metrics,
) -> anyhow::Result<(ConfigSource, Arc<ConfigStatus>)> {
    match (&args.config, &args.xds_address) {
        (Some(path), None) => {
            let status = Arc::new(ConfigStatus::file(path));
            let watch_config = WatchConfig::new(path, &args.trust_domain)
                .root_namespace(&args.root_namespace)
                .on_reload({
                    let metrics = metrics.clone();
                    let status = status.clone();
                    move |applied| {
                        metrics.config_reload(applied);
                        match applied {
                            true => status.applied(),
                            false => status.refused(""),
                        }
                    }
                });
            let source = ConfigSource::file(watch_config)
                .map_err(|err| anyhow::anyhow!("invalid config: {err}"))?;
            Ok((source, status))
        }
        (None, Some(address)) => {
            let mut client = ClientConfig::new(
                address,
                &args.node,
                "ztunnel",
                vec![ADDRESS_TYPE, AUTHORIZATION_TYPE],
            );
            client.token_file = args.token_file.clone();
            client.root_cert = args.xds_root_cert.clone();
            let options = ClientOptions {
                trust_domain: args.trust_domain.clone(),
                root_namespace: args.root_namespace.clone(),
            };
            let metrics = metrics.clone();
            let status = Arc::new(ConfigStatus::xds(address));
            let on_push_status = status.clone();
            let on_push = Box::new(move |snapshot: &Result<ConfigSnapshot, String>| {
                metrics.config_reload(snapshot.is_ok());
                match snapshot {
                    Ok(_) => on_push_status.applied(),
                    Err(reason) => on_push_status.refused(reason),
                }
                // The same lines as a file reload, for operators and tests.
                match snapshot {
                    Ok(s) => info!(
                        workloads = s.workloads().count(),
                        services = s.services().count(),
                        policies = s.policies().len(),
                        "config applied"
                    ),
                    Err(error) => warn!(%error, "config refused: the push was NACKed"),
                }
            });
            let source = ConfigSource::xds(client, options, on_push)
                .context("--xds-address / --xds-root-cert")?;
            Ok((source, status))
        }
        _ => anyhow::bail!("exactly one of --config and --xds-address is required"),
    }
}

/// The control plane's CA (--ca-address, else --xds-address), or the local
/// CA in --ca-dir for standalone use.
fn certificate_authority(args: &Args) -> anyhow::Result<Arc<dyn CertificateAuthority>> {
    match args.ca_address.as_ref().or(args.xds_address.as_ref()) {
        Some(address) => {
            let ca = RemoteCa::connect(RemoteCaConfig {
                address: address.clone(),
                token_file: args.token_file.clone(),
                root_cert: args.xds_root_cert.clone(),
                server_name: None,
            })
            .with_context(|| format!("CA address {address}"))?;
            Ok(Arc::new(ca))
        }
        None => {
            let ca = LocalCa::load_or_create(&args.ca_dir, &args.trust_domain)
                .with_context(|| format!("loading the CA from {}", args.ca_dir.display()))?;
            Ok(Arc::new(ca))
        }
    }
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
