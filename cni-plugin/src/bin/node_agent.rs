//! amesh-node-agent: enrolls this node's ambient pods (capture in their
//! netns) and hands them to ztunnel over ZDS.
//!
//! `amesh-node-agent --node N --config PATH --zds-socket PATH` runs the agent;
//! SIGTERM/SIGINT stop it and leave capture in place (an agent restart must
//! not open a window where pods' traffic bypasses ztunnel).
//! `amesh-node-agent uninstall --config PATH` removes capture explicitly.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amesh_cni::capture::ebpf::{self, DEFAULT_PIN_DIR};
use amesh_cni::capture::{
    Capture, CaptureConfig, DEFAULT_PROBE_SNAT_V4, DEFAULT_PROBE_SNAT_V6, EbpfCapture,
    EbpfSettings, NftablesCapture, NodeProbeSnat,
};
use amesh_cni::enroll::{EnrollConfig, Enroller};
use amesh_cni::uninstall::uninstall;
use amesh_cni::zds_server::{ZdsRegistry, ZdsServer};
use amesh_core::config::{ConfigWatcher, WatchConfig, load_file};
use amesh_core::zds::ZdsListener;
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Bound on every ZDS wait (hello, each message, each ack).
const ZDS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often pods whose netns is missing (or whose capture failed) are
/// retried, and enrolled pods' netns are checked.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "amesh-node-agent",
    about = "amesh node agent: pod capture and ZDS",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Remove capture from the pods the config names and the node's probe
    /// SNAT table.
    Uninstall(UninstallArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CaptureBackend {
    /// cgroup connect/sockopt/sockops and sk_lookup programs: no netfilter,
    /// no conntrack.
    Ebpf,
    /// nftables redirect rules and conntrack in each pod.
    Nftables,
    /// eBPF when the kernel has what it needs, else nftables.
    Auto,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// This node's name (workloads' `node`).
    #[arg(long, required = true)]
    node: Option<String>,
    /// Workload config (YAML), watched for changes.
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// ZDS socket ztunnel connects to.
    #[arg(long, required = true)]
    zds_socket: Option<PathBuf>,
    #[arg(long, default_value = "/var/run/netns")]
    netns_dir: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    capture: CaptureBackend,
    /// bpffs directory for the eBPF backend's programs, links and maps.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    bpf_pin_dir: PathBuf,
    /// eBPF backend: pass bytes between the app and ztunnel in one pod
    /// socket to socket (sockmap) instead of through loopback TCP. Off by
    /// default: the kernel gives such redirects no flow control, so a
    /// reader that falls behind lets its peer queue kernel memory without
    /// bound (README "Capture (eBPF)").
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    short_circuit: bool,
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    #[arg(long, default_value_t = 15006)]
    inbound_plaintext_port: u16,
    #[arg(long, default_value_t = 15008)]
    inbound_port: u16,
    #[arg(long, default_value_t = DEFAULT_PROBE_SNAT_V4)]
    probe_snat_ip: Ipv4Addr,
    #[arg(long, default_value_t = DEFAULT_PROBE_SNAT_V6)]
    probe_snat_ip6: Ipv6Addr,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

#[derive(Debug, Args)]
struct UninstallArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long, default_value = "/var/run/netns")]
    netns_dir: PathBuf,
    /// Only this node's workloads (default: every workload in the config).
    #[arg(long)]
    node: Option<String>,
    /// The eBPF backend's pins, removed entirely (detaching its programs).
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    bpf_pin_dir: PathBuf,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: log files stay greppable.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Uninstall(args)) => run_uninstall(args),
        None => run_agent(cli.run).await,
    }
}

async fn run_agent(args: RunArgs) -> anyhow::Result<()> {
    // clap enforces these without a subcommand.
    let (Some(node), Some(config_path), Some(zds_socket)) =
        (args.node, args.config, args.zds_socket)
    else {
        anyhow::bail!("--node, --config and --zds-socket are required");
    };
    let capture_config = CaptureConfig {
        outbound_port: args.outbound_port,
        inbound_plaintext_port: args.inbound_plaintext_port,
        inbound_port: args.inbound_port,
        probe_snat_v4: args.probe_snat_ip,
        probe_snat_v6: args.probe_snat_ip6,
    };
    let ebpf_settings = EbpfSettings {
        pin_dir: args.bpf_pin_dir.clone(),
        short_circuit: args.short_circuit,
        netns_dir: args.netns_dir.clone(),
    };
    let capture = select_backend(args.capture, &capture_config, &ebpf_settings)?;
    let watcher = ConfigWatcher::start(WatchConfig::new(&config_path, &args.trust_domain))
        .with_context(|| format!("loading {}", config_path.display()))?;
    let listener = ZdsListener::bind(&zds_socket)
        .with_context(|| format!("binding ZDS socket {}", zds_socket.display()))?;
    info!(%node, config = %config_path.display(), zds = %zds_socket.display(), netns_dir = %args.netns_dir.display(), "node agent started");

    let registry = ZdsRegistry::new();
    let server = ZdsServer::new(listener, registry.clone(), ZDS_TIMEOUT);
    let enroller = Enroller::new(
        EnrollConfig {
            node,
            netns_dir: args.netns_dir,
            recheck_interval: RECHECK_INTERVAL,
            zds_sync_timeout: ZDS_TIMEOUT * 2,
        },
        capture,
        NodeProbeSnat::new(capture_config),
        registry,
    );

    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        () = server.run() => anyhow::bail!("ZDS server stopped"),
        () = enroller.run(watcher.subscribe()) => anyhow::bail!("enrollment stopped"),
        _ = sigterm.recv() => info!("SIGTERM: exiting, capture stays in place"),
        _ = sigint.recv() => info!("SIGINT: exiting, capture stays in place"),
    }
    Ok(())
}

/// The capture backend `choice` names; `auto` falls back to nftables,
/// saying why, when the kernel cannot run the eBPF programs.
fn select_backend(
    choice: CaptureBackend,
    config: &CaptureConfig,
    settings: &EbpfSettings,
) -> anyhow::Result<Arc<dyn Capture>> {
    let nftables = || Arc::new(NftablesCapture::new(config.clone())) as Arc<dyn Capture>;
    match choice {
        CaptureBackend::Nftables => {
            info!(backend = "nftables", "capture backend chosen by flag");
            Ok(nftables())
        }
        CaptureBackend::Ebpf => {
            let capture = EbpfCapture::load(config, settings)
                .context("eBPF capture backend (--capture ebpf)")?;
            info!(backend = "ebpf", "capture backend chosen by flag");
            Ok(Arc::new(capture))
        }
        CaptureBackend::Auto => match EbpfCapture::load(config, settings) {
            Ok(capture) => {
                info!(
                    backend = "ebpf",
                    "capture backend: eBPF (auto: the kernel has every feature it needs)"
                );
                Ok(Arc::new(capture))
            }
            Err(err) => {
                warn!(backend = "nftables", reason = %err, "capture backend: nftables (auto: eBPF unavailable)");
                Ok(nftables())
            }
        },
    }
}

fn run_uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let snapshot = load_file(&args.config, &args.trust_domain)
        .with_context(|| format!("loading {}", args.config.display()))?;
    // Removal does not depend on ports: defaults are fine here.
    let capture = NftablesCapture::new(CaptureConfig::default());
    let probe = NodeProbeSnat::new(CaptureConfig::default());
    let report = uninstall(
        &snapshot,
        args.node.as_deref(),
        &args.netns_dir,
        &capture,
        &probe,
    );
    info!(
        cleaned = report.cleaned,
        missing = report.missing,
        failed = report.failed,
        "uninstall finished"
    );
    // Pods first (their routes), then every program and map of the eBPF
    // backend (its links' pins are all that keep the programs attached).
    ebpf::uninstall(&args.bpf_pin_dir)
        .with_context(|| format!("removing {}", args.bpf_pin_dir.display()))?;
    info!(pins = %args.bpf_pin_dir.display(), "eBPF pins removed");
    anyhow::ensure!(report.failed == 0, "{} removals failed", report.failed);
    Ok(())
}
