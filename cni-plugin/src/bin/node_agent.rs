//! amesh-node-agent: enrolls this node's ambient pods (capture in their
//! netns) and hands them to ztunnel over ZDS.
//!
//! `amesh-node-agent --node N --config PATH --zds-socket PATH` runs the agent
//! (`--xds-address URL` instead of `--config`: enrollment decisions come from
//! the control plane):
//! it serves the `amesh-cni` plugin on `--cni-socket`, keeps the node state
//! file the plugin falls back on, and, given `--cni-bin-dir` and
//! `--cni-conf-dir`, installs the plugin into the node's CNI chain.
//! SIGTERM/SIGINT stop it and leave capture and the plugin in place (an
//! agent restart must not open a window where pods' traffic bypasses
//! ztunnel, nor let ambient pods start uncaptured).
//! `amesh-node-agent uninstall ...` removes everything explicitly.

// A crate root: its modules live beside it, so name the directory.

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
use amesh_cni::cni::install::{self, InstallConfig};
use amesh_cni::cni::protocol::{DEFAULT_SOCKET, DEFAULT_STATE_FILE};
use amesh_cni::cni::server::CniServer;
use amesh_cni::cni::state::NodeState;
use amesh_cni::enroll::{EnrollConfig, Enroller, read_record};
use amesh_cni::node_netns::NetnsScanner;
use amesh_cni::uninstall::{Targets, uninstall};
use amesh_cni::zds_server::{ZdsRegistry, ZdsServer};
use amesh_core::config::{ConfigSnapshot, WatchConfig, load_file};
use amesh_core::xds::client::ClientConfig;
use amesh_core::xds::convert::ClientOptions;
use amesh_core::xds::source::ConfigSource;
use amesh_core::xds::{NAMESPACE_ENROLLMENT_TYPE, POD_ENROLLMENT_TYPE};
use amesh_core::zds::ZdsListener;
use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Bound on every ZDS wait (hello, each message, each ack).
const ZDS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often pods whose netns is missing (or whose capture failed) are
/// retried, and enrolled pods' netns are checked.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);
/// CNI requests waiting for the enroller.
const CNI_QUEUE: usize = 64;

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
    /// Remove everything the agent installed on this node: the plugin and
    /// its CNI config entry, capture from every pod it captured, the probe
    /// SNAT table, the eBPF pins and the agent's state.
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
#[command(group(ArgGroup::new("source").required(true).args(["config", "xds_address"])))]
struct RunArgs {
    /// This node's name (workloads' `node`).
    #[arg(long, required = true)]
    node: Option<String>,
    /// Workload config (YAML), watched for changes: standalone mode.
    /// Exactly one of --config and --xds-address.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The control plane (`http://host:port`, or `https://` with
    /// --xds-root-cert): pod and namespace enrollment come from it over
    /// delta xDS.
    #[arg(long)]
    xds_address: Option<String>,
    /// Bearer token presented to the control plane (re-read on every
    /// connection).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PEM roots that verify the control plane's TLS certificate.
    #[arg(long)]
    xds_root_cert: Option<PathBuf>,
    /// ZDS socket ztunnel connects to.
    #[arg(long, required = true)]
    zds_socket: Option<PathBuf>,
    #[arg(long, default_value = "/var/run/netns")]
    netns_dir: PathBuf,
    /// Also look for pods' netns among running processes' (runtimes that
    /// bind-mount none); the netns dir is always searched.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    scan_proc: bool,
    #[command(flatten)]
    cni: CniArgs,
    /// How long a CNI ADD for a pod of an ambient namespace waits for the
    /// pod to appear in the config.
    #[arg(long, default_value_t = 10)]
    cni_pod_wait_secs: u64,
    /// How long a CNI ADD waits for ztunnel to serve the pod.
    #[arg(long, default_value_t = 20)]
    cni_serve_timeout_secs: u64,
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

/// Where the plugin talks to the agent and what the agent installs.
#[derive(Debug, Args)]
struct CniArgs {
    /// The socket the plugin asks the agent on (root-only directory).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    cni_socket: PathBuf,
    /// The node state file the plugin decides from when the agent is down;
    /// the agent's other state lives next to it.
    #[arg(long, default_value = DEFAULT_STATE_FILE)]
    state_file: PathBuf,
    /// The host's CNI bin dir: `amesh-cni` is copied there. With
    /// `--cni-conf-dir`, turns plugin installation on.
    #[arg(long)]
    cni_bin_dir: Option<PathBuf>,
    /// The host's CNI config dir: `amesh-cni` is appended to the active
    /// chain there, and again whenever the primary CNI rewrites it.
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// The plugin binary to install (default: `amesh-cni` beside this one).
    #[arg(long)]
    cni_plugin_binary: Option<PathBuf>,
}

impl CniArgs {
    fn state_dir(&self) -> PathBuf {
        self.state_file
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    fn enrolled_file(&self) -> PathBuf {
        self.state_dir().join("enrolled.json")
    }
}

#[derive(Debug, Args)]
struct UninstallArgs {
    /// The mesh config the agent ran with, if it ran on one: its pods are
    /// looked for too. Without it (an agent on the control plane), the
    /// agent's record of enrolled pods says what to clean.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "/var/run/netns")]
    netns_dir: PathBuf,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    scan_proc: bool,
    #[command(flatten)]
    cni: CniArgs,
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
    let (Some(node), Some(zds_socket)) = (args.node, args.zds_socket) else {
        anyhow::bail!("--node and --zds-socket are required");
    };
    let capture_config = CaptureConfig {
        outbound_port: args.outbound_port,
        inbound_plaintext_port: args.inbound_plaintext_port,
        inbound_port: args.inbound_port,
        probe_snat_v4: args.probe_snat_ip,
        probe_snat_v6: args.probe_snat_ip6,
    };
    let scanner = NetnsScanner::new(vec![args.netns_dir.clone()], args.scan_proc);
    let ebpf_settings = EbpfSettings {
        pin_dir: args.bpf_pin_dir.clone(),
        short_circuit: args.short_circuit,
        scanner,
    };
    let capture = select_backend(args.capture, &capture_config, &ebpf_settings)?;
    let source = match (args.config, args.xds_address) {
        (Some(path), None) => ConfigSource::file(WatchConfig::new(&path, &args.trust_domain))
            .with_context(|| format!("loading {}", path.display()))?,
        (None, Some(address)) => {
            // Pod and namespace enrollment decisions.
            let mut client = ClientConfig::new(
                &address,
                &node,
                "node-agent",
                vec![POD_ENROLLMENT_TYPE, NAMESPACE_ENROLLMENT_TYPE],
            );
            client.token_file = args.token_file;
            client.root_cert = args.xds_root_cert;
            let options = ClientOptions {
                trust_domain: args.trust_domain.clone(),
                ..ClientOptions::default()
            };
            ConfigSource::xds(client, options, Box::new(|_| {}))
                .context("--xds-address / --xds-root-cert")?
        }
        _ => anyhow::bail!("exactly one of --config and --xds-address is required"),
    };
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    // Until the control plane's first push the CNI plugin decides from the
    // node state file, as when the agent is down.
    tokio::select! {
        loaded = source.loaded() => {
            loaded.with_context(|| format!("enrollment from {}", source.describe()))?;
        }
        _ = sigterm.recv() => return Ok(()),
        _ = sigint.recv() => return Ok(()),
    }
    let listener = ZdsListener::bind(&zds_socket)
        .with_context(|| format!("binding ZDS socket {}", zds_socket.display()))?;
    info!(%node, config = %source.describe(), zds = %zds_socket.display(), netns_dir = %args.netns_dir.display(), "node agent started");

    let (commands, command_rx) = mpsc::channel(CNI_QUEUE);
    let cni_server = CniServer::bind(
        &args.cni.cni_socket,
        commands,
        source.subscribe(),
        Duration::from_secs(args.cni_pod_wait_secs),
    )
    .with_context(|| format!("binding CNI socket {}", args.cni.cni_socket.display()))?;
    let registry = ZdsRegistry::new();
    let server = ZdsServer::new(listener, registry.clone(), ZDS_TIMEOUT);
    let enroller = Enroller::new(
        EnrollConfig {
            node,
            netns_dir: args.netns_dir,
            scan_proc: args.scan_proc,
            recheck_interval: RECHECK_INTERVAL,
            zds_sync_timeout: ZDS_TIMEOUT * 2,
            serve_timeout: Duration::from_secs(args.cni_serve_timeout_secs),
            state_file: Some(args.cni.state_file.clone()),
            enrolled_file: Some(args.cni.enrolled_file()),
        },
        capture,
        NodeProbeSnat::new(capture_config),
        registry,
    );
    let installer = plugin_installer(&args.cni)?;

    tokio::select! {
        () = server.run() => anyhow::bail!("ZDS server stopped"),
        () = cni_server.run() => anyhow::bail!("CNI server stopped"),
        () = enroller.run(source.subscribe(), command_rx) => anyhow::bail!("enrollment stopped"),
        () = keep_installed(installer) => anyhow::bail!("CNI plugin installer stopped"),
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
    let snapshot = match &args.config {
        Some(path) => load_file(path, &args.trust_domain)
            .with_context(|| format!("loading {}", path.display()))?,
        None => ConfigSnapshot::default(),
    };
    // The plugin first: from here on no new pod is sent to the agent.
    if let Some(installer) = plugin_installer(&args.cni)? {
        let report = install::uninstall(&installer)
            .context("removing amesh-cni from the node's CNI config")?;
        info!(?report, "amesh-cni removed from the CNI chain and bin dir");
    }
    // Removal does not depend on ports: defaults are fine here.
    let capture = NftablesCapture::new(CaptureConfig::default());
    let probe = NodeProbeSnat::new(CaptureConfig::default());
    let record = read_record(&args.cni.enrolled_file());
    let scanner = NetnsScanner::new(vec![args.netns_dir.clone()], args.scan_proc);
    let report = uninstall(
        &Targets {
            snapshot: &snapshot,
            node: args.node.as_deref(),
            netns_dir: &args.netns_dir,
            record: &record,
            scanner: &scanner,
        },
        &capture,
        &probe,
    );
    info!(
        cleaned = report.cleaned,
        missing = report.missing,
        failed = report.failed,
        "capture removed from pods"
    );
    // Pods first (their routes), then every program and map of the eBPF
    // backend (its links' pins are all that keep the programs attached).
    ebpf::uninstall(&args.bpf_pin_dir)
        .with_context(|| format!("removing {}", args.bpf_pin_dir.display()))?;
    info!(pins = %args.bpf_pin_dir.display(), "eBPF pins removed");
    anyhow::ensure!(report.failed == 0, "{} removals failed", report.failed);
    // Last, the agent's own state: what is left of it is only useful to
    // an agent that will not come back.
    remove_state(&args.cni)?;
    info!("uninstall finished");
    Ok(())
}

/// The state file, the enrolled record, the CNI socket and the plugin's
/// config backups; the state dir too when nothing else is in it.
fn remove_state(cni: &CniArgs) -> anyhow::Result<()> {
    NodeState::remove(&cni.state_file)?;
    for file in [cni.enrolled_file(), cni.cni_socket.clone()] {
        match std::fs::remove_file(&file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
    }
    let backups = backup_dir(cni);
    match std::fs::remove_dir_all(&backups) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("removing {}", backups.display()));
        }
        _ => {}
    }
    // Only if empty: the directory may be shared.
    let _ = std::fs::remove_dir(cni.state_dir());
    Ok(())
}

/// What installing the plugin on this node means, when both host dirs are
/// given.
fn plugin_installer(cni: &CniArgs) -> anyhow::Result<Option<InstallConfig>> {
    let (Some(bin_dir), Some(conf_dir)) = (&cni.cni_bin_dir, &cni.cni_conf_dir) else {
        if cni.cni_bin_dir.is_some() || cni.cni_conf_dir.is_some() {
            anyhow::bail!("--cni-bin-dir and --cni-conf-dir go together");
        }
        return Ok(None);
    };
    let plugin_binary = match &cni.cni_plugin_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this binary to find amesh-cni beside it")?
            .with_file_name(install::PLUGIN_TYPE),
    };
    let mut entry = serde_json::Map::new();
    entry.insert("type".into(), install::PLUGIN_TYPE.into());
    entry.insert("socket".into(), cni.cni_socket.display().to_string().into());
    entry.insert(
        "stateFile".into(),
        cni.state_file.display().to_string().into(),
    );
    Ok(Some(InstallConfig {
        bin_dir: bin_dir.clone(),
        conf_dir: conf_dir.clone(),
        plugin_binary,
        entry,
        backup_dir: backup_dir(cni),
    }))
}

/// Keeps the plugin in the chain for as long as the agent runs (without an
/// installer: forever idle).
async fn keep_installed(installer: Option<InstallConfig>) {
    match installer {
        Some(installer) => install::watch(installer).await,
        None => std::future::pending().await,
    }
}

fn backup_dir(cni: &CniArgs) -> PathBuf {
    cni.state_dir().join("cni-backup")
}
