//! localmesh: the main job. A local two-node ambient mesh in network
//! namespaces with sample apps, real traffic every second, and the identities
//! that traffic carried; Ctrl-C removes everything it created.
//!
//!     localmesh [--once | --rounds N] [--interval-ms MS] [--capture auto|ebpf|nftables] [--pod-range OCTET]
//!
//! Topology (see `amesh_tests::harness`): `amesh-control-plane` on the
//! folder source in the fabric netns serves config (delta xDS) and
//! certificates (its CA) to every node's ztunnel and node agent.
//!
//! ```text
//! node-0: frontend  (mesh, sa frontend)   backend-0 (mesh, sa backend)
//! node-1: backend-1 (mesh, sa backend)    legacy    (not in the mesh)
//! service backend: 10.96.0.10:80 -> :8080 on backend-0, backend-1
//! ```
//!
//! Each round runs curl inside pods: frontend -> the service VIP (HBONE),
//! legacy -> a backend pod (plaintext captured on the backend's inbound
//! side), frontend -> legacy (passed through as plain TCP). What each line
//! prints (protocol, endpoint, identities) comes from what happened: the
//! ztunnel access-log lines the connection produced, matched to curl's own
//! source port, and the body the app answered with — not from the config.
//!
//! Exit status: with `--once`/`--rounds`, 0 only if every request succeeded
//! and at least one HBONE connection carried both identities; on
//! SIGINT/SIGTERM, 0 once everything is removed.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use amesh_tests::harness::{
    AppSpec, Capture, Mesh, MeshBuilder, NETNS_PREFIX, Pod, PodSpec, Service, ServiceSpec,
    leftovers,
};
use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

const SERVICE: &str = "backend";
const VIP: &str = "10.96.0.10";
const SERVICE_PORT: u16 = 80;
/// testapp's HTTP server (the service's target port) and whoami server.
const HTTP_PORT: u16 = 8080;
const WHOAMI_PORT: u16 = 9000;
/// Pods that run testapp; `frontend` only sends.
const APP_PODS: &[&str] = &["backend-0", "backend-1", "legacy"];
const TRUST_DOMAIN: &str = "cluster.local";
/// curl's own limit per request (`--max-time`).
const CURL_MAX_TIME: &str = "5";
/// ztunnel logs a connection when it closes, a moment after curl returns.
const LOG_WAIT: Duration = Duration::from_secs(3);
const LOG_POLL: Duration = Duration::from_millis(20);
/// Ctrl-C in a terminal reaches the daemons as well as us; if setup fails
/// because they exited, our own signal may land a moment later.
const SIGNAL_GRACE: Duration = Duration::from_millis(300);
/// A curl still running when a signal ends the loop must not hold up the
/// exit: it is killed with us (the harness sets PDEATHSIG on children).
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

#[derive(Parser, Debug)]
#[command(about = "A local two-node amesh mesh in network namespaces, with live traffic")]
struct Args {
    /// One round of requests, then clean up; exit 0 only if every request
    /// succeeded and HBONE carried both identities.
    #[arg(long, conflicts_with = "rounds")]
    once: bool,
    /// Stop after this many rounds (same exit rule as --once).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: Option<u64>,
    /// Pause between rounds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// The node agents' capture backend (`auto`: eBPF where the kernel
    /// can, else nftables — the agent's own default).
    #[arg(long, value_enum, default_value = "auto")]
    capture: CaptureArg,
    /// Second octet of the pods' addresses (`10.<octet>.<node>.x`). Node
    /// agents find running pods' netns by IP among all of the machine's
    /// namespaces, so local meshes running at once need different ones.
    #[arg(long, default_value_t = 244)]
    pod_range: u8,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CaptureArg {
    Auto,
    Ebpf,
    Nftables,
}

impl From<CaptureArg> for Capture {
    fn from(arg: CaptureArg) -> Self {
        match arg {
            CaptureArg::Auto => Capture::Auto,
            CaptureArg::Ebpf => Capture::Ebpf,
            CaptureArg::Nftables => Capture::Nftables,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("localmesh: error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("localmesh: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Some("SIGINT")` once a stop signal arrived.
type Stop = watch::Receiver<Option<&'static str>>;

/// Turns SIGINT/SIGTERM into a watch value. Installed before anything is
/// created, so a signal at any point leads to a clean teardown instead of
/// the default action (dying with namespaces left behind).
fn watch_signals() -> Result<Stop> {
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let first = tokio::select! {
            Some(()) = int.recv() => "SIGINT",
            Some(()) = term.recv() => "SIGTERM",
            else => return,
        };
        let _ = tx.send(Some(first));
        // Later signals must not kill us half-way through the teardown.
        loop {
            let again = tokio::select! {
                r = int.recv() => r,
                r = term.recv() => r,
            };
            if again.is_none() {
                return;
            }
            eprintln!("localmesh: still removing the mesh; exiting when that is done");
        }
    });
    Ok(rx)
}

fn stop_requested(stop: &Stop) -> Option<&'static str> {
    *stop.borrow()
}

/// Resolves when a stop signal has arrived (immediately if it already has).
async fn stopped(stop: &mut Stop) -> &'static str {
    match stop.wait_for(Option::is_some).await {
        Ok(sig) => sig.unwrap_or("signal"),
        // The signal task is gone (runtime shutting down): no signal can come.
        Err(_) => std::future::pending().await,
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    let mut stop = watch_signals()?;
    let rounds = if args.once { Some(1) } else { args.rounds };
    let interval = Duration::from_millis(args.interval_ms);

    println!("localmesh: creating a 2-node mesh in network namespaces (Ctrl-C removes everything)");
    let setup_stop = stop.clone();
    let capture = Capture::from(args.capture);
    let pod_range = args.pod_range;
    let mut setup = tokio::task::spawn_blocking(move || setup(&setup_stop, capture, pod_range));
    // Setup steps are blocking (namespaces, daemons, readiness waits); a
    // signal meanwhile is seen by the setup thread between steps.
    let mut announced = false;
    let joined = loop {
        tokio::select! {
            joined = &mut setup => break joined,
            sig = stopped(&mut stop), if !announced => {
                announced = true;
                println!("{sig}: finishing the current setup step, then removing everything");
            }
        }
    };
    let Setup { mesh, result } = match joined.context("setup thread")? {
        Ok(Some(setup)) => setup,
        Ok(None) => {
            println!("stopped before anything was created");
            return Ok(ExitCode::SUCCESS);
        }
        // `build()` has already removed what it created. A terminal's
        // Ctrl-C also kills the `ip` commands it runs, so a signal is the
        // likely cause: then this is a clean stop, not an error.
        Err(err) => match tokio::time::timeout(SIGNAL_GRACE, stopped(&mut stop)).await {
            Ok(sig) => {
                println!("{sig} while creating the mesh ({err:#})");
                return Ok(nothing_left_of_this_process());
            }
            Err(_) => return Err(err),
        },
    };
    if let Err(err) = result {
        let interrupted = tokio::time::timeout(SIGNAL_GRACE, stopped(&mut stop)).await;
        if let Ok(sig) = interrupted {
            println!("{sig} during setup: removing everything");
            return Ok(exit_after_teardown(mesh, true).await);
        }
        eprintln!("localmesh: setup failed: {err:#}");
        println!("setup failed: removing what was created");
        teardown_blocking(mesh).await;
        return Ok(ExitCode::FAILURE);
    }

    print_banner(&mesh, interval, rounds);
    let mut traffic = Traffic::new(&mesh)?;
    let mut tally = Tally::default();
    let mut round = 0u64;
    // The round checks for a signal itself; the select below owns `stop`.
    let round_stop = stop.clone();
    let signal = loop {
        if let Some(sig) = stop_requested(&stop) {
            break Some(sig);
        }
        round += 1;
        tokio::select! {
            biased;
            sig = stopped(&mut stop) => break Some(sig),
            () = traffic.round(round, &round_stop, &mut tally) => {}
        }
        if rounds.is_some_and(|n| round >= n) {
            break None;
        }
        tokio::select! {
            sig = stopped(&mut stop) => break Some(sig),
            () = tokio::time::sleep(interval) => {}
        }
    };
    drop(traffic);

    if let Some(sig) = signal {
        println!();
        println!("{sig}: removing the mesh");
        return Ok(exit_after_teardown(mesh, true).await);
    }
    println!();
    let verdict = tally.verdict();
    match &verdict {
        Ok(()) => println!(
            "all {} requests succeeded; {} HBONE connection(s) carried both identities",
            tally.requests, tally.hbone_with_identities
        ),
        Err(reason) => println!("FAILED: {reason}"),
    }
    println!("removing the mesh");
    Ok(exit_after_teardown(mesh, verdict.is_ok()).await)
}

struct Setup {
    mesh: Mesh,
    result: Result<()>,
}

/// `None`: a signal came before anything was created.
fn setup(stop: &Stop, capture: Capture, pod_range: u8) -> Result<Option<Setup>> {
    if stop_requested(stop).is_some() {
        return Ok(None);
    }
    // Pods are created the way a node creates them: each node's runtime
    // (the harness) runs the CNI chain, bridge + host-local + amesh-cni,
    // and the namespace's label decides who is in the mesh. Config and
    // certificates come from amesh-control-plane (folder source).
    let mut mesh = MeshBuilder::new()
        .capture(capture)
        .control_plane()
        .pod_range(pod_range)
        .namespace_labels("default", [("istio.io/dataplane-mode", "ambient")])
        .nodes(2)
        .pod(PodSpec::new("frontend", 0).service_account("frontend"))
        .pod(PodSpec::new("backend-0", 0).service_account("backend"))
        .pod(PodSpec::new("backend-1", 1).service_account("backend"))
        .pod(PodSpec::new("legacy", 1).mesh(false))
        .service(
            ServiceSpec::new(SERVICE)
                .vip(VIP)
                .port(SERVICE_PORT, HTTP_PORT)
                .endpoints(["backend-0", "backend-1"]),
        )
        .build()
        .context("create the mesh's namespaces and config")?;
    let result = bring_up(&mut mesh, stop);
    Ok(Some(Setup { mesh, result }))
}

fn bring_up(mesh: &mut Mesh, stop: &Stop) -> Result<()> {
    let check = || match stop_requested(stop) {
        Some(sig) => bail!("interrupted by {sig}"),
        None => Ok(()),
    };
    check()?;
    mesh.start()
        .context("start the control plane, node agents and ztunnels")?;
    for pod in APP_PODS {
        check()?;
        mesh.start_app(pod, AppSpec::default().http(HTTP_PORT).whoami(WHOAMI_PORT))
            .with_context(|| format!("start testapp in {pod}"))?;
    }
    check()
}

fn identity(pod: &Pod) -> String {
    format!(
        "spiffe://{TRUST_DOMAIN}/ns/{}/sa/{}",
        pod.namespace, pod.service_account
    )
}

/// The backend the node agent chose, from its log line.
fn capture_backend(mesh: &Mesh, node: usize) -> String {
    let log = mesh.agent_log(node);
    let Some(line) = log.lines().find(|l| l.contains("capture backend")) else {
        return "unknown (see the node agent log)".into();
    };
    let backend = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("backend="))
        .unwrap_or("?")
        .trim_matches('"');
    let why = line
        .split_once("capture backend")
        .map(|(_, rest)| rest.split(" backend=").next().unwrap_or(rest))
        .unwrap_or("")
        .trim_start_matches(':')
        .trim();
    format!("{backend} — {why}")
}

/// The node's CNI chain as the runtime ran it for every pod.
fn cni_chain(mesh: &Mesh, node: usize) -> String {
    match mesh.cni_runtime(node).active_config() {
        Ok(list) => {
            let plugins: Vec<String> = list
                .plugins
                .iter()
                .map(|p| {
                    let kind = p.get("type").and_then(|t| t.as_str()).unwrap_or("?");
                    match p
                        .get("ipam")
                        .and_then(|i| i.get("type"))
                        .and_then(|t| t.as_str())
                    {
                        Some(ipam) => format!("{kind} (ipam {ipam})"),
                        None => kind.to_owned(),
                    }
                })
                .collect();
            format!(
                "{}  [{}]",
                plugins.join(" -> "),
                list.source
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        }
        Err(err) => format!("unreadable: {err}"),
    }
}

fn print_banner(mesh: &Mesh, interval: Duration, rounds: Option<u64>) {
    println!();
    println!("amesh local mesh is up");
    println!("  netns prefix  {}", mesh.prefix());
    println!(
        "  control plane {}:15012 (xDS + CA), folder {}",
        amesh_tests::harness::CONTROL_PLANE_ADDR,
        mesh.control_plane_config_dir().display()
    );
    println!("  config        {}", mesh.config_path().display());
    println!(
        "  temp dir      {}  (CA, sockets, logs)",
        mesh.dir().display()
    );
    for node in mesh.nodes() {
        let pid = |p: Option<u32>| p.map_or("-".to_owned(), |p| p.to_string());
        println!(
            "  {}  underlay {}  ztunnel pid {}, node agent pid {}",
            node.name,
            node.underlay_ip,
            pid(mesh.ztunnel_pid(node.index)),
            pid(mesh.agent_pid(node.index)),
        );
        println!("          capture {}", capture_backend(mesh, node.index));
        println!("          CNI chain {}", cni_chain(mesh, node.index));
        println!(
            "          logs {}",
            mesh.ztunnel_log_path(node.index).display()
        );
        println!(
            "               {}",
            mesh.agent_log_path(node.index).display()
        );
    }
    println!("  pods");
    for pod in mesh.pods() {
        let app = if mesh.app(&pod.name).is_some() {
            format!("testapp http :{HTTP_PORT}, whoami :{WHOAMI_PORT}")
        } else {
            "curl client".to_owned()
        };
        let membership = if mesh.pod_in_mesh(pod) {
            format!("mesh     {}", identity(pod))
        } else {
            "no mesh  (plain TCP, no identity)".to_owned()
        };
        println!(
            "    {:<10} {:<11} {}  {membership:<55} [{app}]",
            pod.name, pod.ip, pod.node_name
        );
    }
    for service in mesh.services() {
        let vips: Vec<String> = service.vips.iter().map(ToString::to_string).collect();
        let ports: Vec<String> = service
            .ports
            .iter()
            .map(|(port, target)| format!("{port}->{target}"))
            .collect();
        let endpoints: Vec<&str> = service
            .endpoints
            .iter()
            .map(|uid| uid.rsplit('/').next().unwrap_or(uid))
            .collect();
        println!(
            "  service {}  VIP {}  port {}  endpoints {}",
            service.hostname,
            vips.join(","),
            ports.join(","),
            endpoints.join(", ")
        );
    }
    println!();
    match rounds {
        Some(n) => println!(
            "Traffic: {n} round(s), every {} ms (curl inside the pods; lines from the ztunnel access logs):",
            interval.as_millis()
        ),
        None => println!(
            "Traffic every {} ms (curl inside the pods; lines from the ztunnel access logs). Ctrl-C to stop and remove everything.",
            interval.as_millis()
        ),
    }
}

/// After a failed `build()`: checks that no namespace of any mesh this
/// process made remains (`amt<pid>x` starts all of them).
fn nothing_left_of_this_process() -> ExitCode {
    let prefix = format!("{NETNS_PREFIX}{}x", std::process::id());
    let left = leftovers(&prefix);
    if left.is_empty() {
        println!("  nothing left: no network namespace starts with {prefix}");
        ExitCode::SUCCESS
    } else {
        println!("  LEFT BEHIND: namespaces {left:?} (remove with `ip netns del NAME`)");
        ExitCode::FAILURE
    }
}

/// Runs the teardown and turns its result into the exit status: `success`
/// unless something was left behind.
async fn exit_after_teardown(mesh: Mesh, success: bool) -> ExitCode {
    if teardown_blocking(mesh).await && success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn teardown_blocking(mesh: Mesh) -> bool {
    // Dropping the mesh runs `ip netns del` and waits for processes.
    tokio::task::spawn_blocking(move || teardown(mesh))
        .await
        .unwrap_or(false)
}

/// Drops the mesh (kills its processes, deletes its namespaces and temp
/// dir), says what went, and checks that nothing is left. `true` if clean.
fn teardown(mesh: Mesh) -> bool {
    let prefix = mesh.prefix().to_owned();
    let dir = mesh.dir().to_path_buf();
    let mut processes: Vec<(String, u32)> = Vec::new();
    for node in mesh.nodes() {
        if let Some(pid) = mesh.ztunnel_pid(node.index) {
            processes.push((format!("ztunnel {}", node.name), pid));
        }
        if let Some(pid) = mesh.agent_pid(node.index) {
            processes.push((format!("amesh-node-agent {}", node.name), pid));
        }
    }
    for pod in mesh.pods() {
        if let Some(pid) = mesh.app(&pod.name).and_then(|app| app.pid()) {
            processes.push((format!("testapp {}", pod.name), pid));
        }
    }
    let namespaces = leftovers(&prefix);
    drop(mesh);

    let described: Vec<String> = processes
        .iter()
        .map(|(label, pid)| format!("{label} (pid {pid})"))
        .collect();
    println!(
        "  stopped {} processes: {}",
        processes.len(),
        described.join(", ")
    );
    println!(
        "  deleted {} network namespaces: {}",
        namespaces.len(),
        namespaces.join(" ")
    );
    println!(
        "    (with them the pods' veths, bridges, routes, nftables rules and eBPF sk_lookup links;"
    );
    println!("     the agents' eBPF pins under /sys/fs/bpf/amesh-test/ were removed too)");
    let left_ns = leftovers(&prefix);
    let alive: Vec<&(String, u32)> = processes
        .iter()
        .filter(|(_, pid)| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    if dir.exists() {
        println!("  kept {} (AMESH_KEEP_TMP is set)", dir.display());
    } else {
        println!("  deleted {} (config, CA, sockets, logs)", dir.display());
    }
    let clean = left_ns.is_empty() && alive.is_empty();
    if clean {
        println!("  nothing left: no network namespace starts with {prefix}");
    } else {
        println!(
            "  LEFT BEHIND: namespaces {left_ns:?}, processes {alive:?} (remove with `ip netns del NAME`, `kill PID`)"
        );
    }
    clean
}

/// One line of a ztunnel access log (`connection complete`).
#[derive(Debug, Clone)]
struct Access {
    node: usize,
    direction: String,
    protocol: String,
    src: SocketAddr,
    src_identity: String,
    dst: SocketAddr,
    dst_service: String,
    dst_identity: String,
    dst_workload: String,
    error: String,
}

impl Access {
    fn parse(node: usize, line: &str) -> Option<Self> {
        let (_, rest) = line.split_once(" connection complete ")?;
        let fields = parse_fields(rest);
        let get = |key: &str| fields.get(key).cloned().unwrap_or_default();
        Some(Self {
            node,
            direction: get("direction"),
            protocol: get("protocol"),
            src: get("src.addr").parse().ok()?,
            src_identity: get("src.identity"),
            dst: get("dst.addr").parse().ok()?,
            dst_service: get("dst.service"),
            dst_identity: get("dst.identity"),
            dst_workload: get("dst.workload"),
            error: get("error"),
        })
    }
}

/// `key=value key="quoted \"value\""` as tracing's plain formatter writes
/// fields (strings recorded with Debug are quoted and escaped).
fn parse_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = text.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut end = quoted.len();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        fields.insert(key, value);
        rest = next.trim_start();
    }
    fields
}

/// Follows a log file from where it was last read.
#[derive(Debug)]
struct LogTail {
    node: usize,
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    /// Starts at the current end: setup's lines are not traffic.
    fn new(node: usize, path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self {
            node,
            path,
            offset,
            partial: String::new(),
        }
    }

    /// Complete lines appended since the last call.
    fn read_new(&mut self) -> Vec<String> {
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        // A line still being written stays in `partial` until its newline.
        let Some(last_newline) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = self.partial.drain(..=last_newline).collect();
        complete.lines().map(str::to_owned).collect()
    }
}

#[derive(Debug, Clone)]
enum Target {
    Service,
    Pod(String),
}

#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    failures: Vec<String>,
    hbone_with_identities: u64,
}

impl Tally {
    fn verdict(&self) -> std::result::Result<(), String> {
        if let Some(first) = self.failures.first() {
            return Err(format!(
                "{} of {} requests failed; first: {first}",
                self.failures.len(),
                self.requests
            ));
        }
        if self.hbone_with_identities == 0 {
            return Err(
                "no HBONE connection with both client and server identity was observed".into(),
            );
        }
        Ok(())
    }
}

/// The sending side of the demo: pods, service, and the logs to match.
struct Traffic {
    pods: Vec<Pod>,
    service: Service,
    logs: Vec<LogTail>,
    /// Parsed access lines not matched to a request yet.
    pending: Vec<Access>,
}

/// What curl reported.
struct CurlResult {
    local: SocketAddr,
    server: String,
    peer_ip: Option<IpAddr>,
}

impl Traffic {
    fn new(mesh: &Mesh) -> Result<Self> {
        let service = mesh
            .service(SERVICE)
            .context("the mesh has no backend service")?
            .clone();
        Ok(Self {
            pods: mesh.pods().to_vec(),
            service,
            logs: mesh
                .nodes()
                .iter()
                .map(|n| LogTail::new(n.index, mesh.ztunnel_log_path(n.index)))
                .collect(),
            pending: Vec::new(),
        })
    }

    fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    async fn round(&mut self, round: u64, stop: &Stop, tally: &mut Tally) {
        // legacy alternates between the backends: same node, then across nodes.
        let backend = format!("backend-{}", round % 2);
        let calls = [
            ("frontend", Target::Service),
            ("legacy", Target::Pod(backend)),
            ("frontend", Target::Pod("legacy".into())),
        ];
        for (client, target) in calls {
            let result = self.call(client, &target).await;
            // A terminal's Ctrl-C also kills curl; that is not a failure.
            if stop_requested(stop).is_some() {
                return;
            }
            tally.requests += 1;
            match result {
                Ok((line, hbone)) => {
                    if hbone {
                        tally.hbone_with_identities += 1;
                    }
                    println!("[{round}] {line}");
                }
                Err(reason) => {
                    println!("[{round}] FAILED {reason}");
                    tally.failures.push(reason);
                }
            }
        }
        // Whatever was not matched (a late line of a failed request) must
        // not be taken for the next round's.
        self.pending.clear();
    }

    /// One request; `Ok((line, carried both identities over HBONE))`.
    async fn call(
        &mut self,
        client_name: &str,
        target: &Target,
    ) -> std::result::Result<(String, bool), String> {
        let client = self
            .pod(client_name)
            .cloned()
            .ok_or_else(|| format!("no pod {client_name}"))?;
        let (url, target_desc) = match target {
            Target::Service => (
                format!("http://{VIP}:{SERVICE_PORT}/"),
                format!("{} ({VIP}:{SERVICE_PORT})", self.service.hostname),
            ),
            Target::Pod(name) => {
                let pod = self.pod(name).ok_or_else(|| format!("no pod {name}"))?;
                (
                    format!("http://{}:{HTTP_PORT}/", pod.ip),
                    format!("{name} ({}:{HTTP_PORT})", pod.ip),
                )
            }
        };
        let from = format!("{} ({})", client.name, client.ip);
        let fail = |reason: String| format!("{from} -> {target_desc}: {reason}");

        let curl = curl(&client, &url).await.map_err(fail)?;
        let Some(server) = self.pod(&curl.server).cloned() else {
            return Err(fail(format!(
                "answered by unknown server {:?}",
                curl.server
            )));
        };
        if let Target::Pod(name) = target
            && *name != server.name
        {
            return Err(fail(format!("answered by {}, not {name}", server.name)));
        }

        if let Target::Service = target
            && !self.service.endpoints.contains(&server.uid)
        {
            return Err(fail(format!(
                "answered by {}, not a service endpoint",
                server.name
            )));
        }

        // The connection as each ztunnel saw it. Outbound lines carry the
        // client socket's address (curl's own source port); inbound HBONE
        // lines carry the tunnel's, which pooled connections share, so those
        // are matched by client IP and the endpoint. Requests run one after
        // another, so that is unambiguous.
        let is_outbound = |a: &Access| a.direction == "outbound" && a.src == curl.local;
        let is_inbound = |a: &Access| {
            a.direction == "inbound"
                && a.node == server.node
                && a.dst == server.addr(HTTP_PORT)
                && (a.src == curl.local
                    || (a.protocol == "HBONE" && a.src.ip() == IpAddr::V4(client.ip)))
        };
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            self.read_logs();
            let complete = (!client.mesh || self.find(is_outbound).is_some())
                && (!server.mesh || self.find(is_inbound).is_some());
            if complete || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(LOG_POLL).await;
        }
        let outbound = self.find(is_outbound).map(|i| self.pending.remove(i));
        let inbound = self.find(is_inbound).map(|i| self.pending.remove(i));
        describe(
            &client,
            &server,
            target,
            &curl,
            outbound.as_ref(),
            inbound.as_ref(),
        )
    }

    fn find(&self, matches: impl FnMut(&Access) -> bool) -> Option<usize> {
        self.pending.iter().position(matches)
    }

    fn read_logs(&mut self) {
        for log in &mut self.logs {
            let node = log.node;
            self.pending.extend(
                log.read_new()
                    .iter()
                    .filter_map(|line| Access::parse(node, line)),
            );
        }
    }
}

/// Runs curl in the client pod (blocking, so on tokio's blocking pool).
async fn curl(client: &Pod, url: &str) -> std::result::Result<CurlResult, String> {
    let pod = client.clone();
    let target = url.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        pod.run(
            "curl",
            &[
                "-sS",
                "--max-time",
                CURL_MAX_TIME,
                // The source port ties the request to ztunnel's access line.
                "-w",
                "\n%{http_code} %{local_ip}:%{local_port}",
                &target,
            ],
        )
    })
    .await
    .map_err(|e| format!("curl task: {e}"))?
    .map_err(|e| format!("curl: {e:#}"))?;
    if !output.status.success() {
        let why = match output.status.signal() {
            Some(sig) => format!("killed by signal {sig}"),
            None => format!("exit {}", output.status.code().unwrap_or(-1)),
        };
        return Err(format!(
            "curl {url}: {why}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (body, trailer) = stdout
        .rsplit_once('\n')
        .ok_or_else(|| format!("curl {url}: unexpected output {stdout:?}"))?;
    let (code, local) = trailer
        .split_once(' ')
        .ok_or_else(|| format!("curl {url}: unexpected output {stdout:?}"))?;
    if code != "200" {
        return Err(format!("curl {url}: HTTP {code}: {}", body.trim()));
    }
    let local: SocketAddr = local
        .parse()
        .map_err(|_| format!("curl {url}: unexpected local address {local:?}"))?;
    let field = |key: &str| {
        body.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .map(str::to_owned)
    };
    let server = field("server=").ok_or_else(|| format!("curl {url}: unexpected body {body:?}"))?;
    let peer_ip = field("peer=")
        .and_then(|p| p.parse::<SocketAddr>().ok())
        .map(|p| p.ip());
    Ok(CurlResult {
        local,
        server,
        peer_ip,
    })
}

/// The line for one request, from what the logs and the app reported, or
/// why it does not show what the mesh should have done.
fn describe(
    client: &Pod,
    server: &Pod,
    target: &Target,
    curl: &CurlResult,
    outbound: Option<&Access>,
    inbound: Option<&Access>,
) -> std::result::Result<(String, bool), String> {
    let mut problems = Vec::new();
    if curl.peer_ip != Some(IpAddr::V4(client.ip)) {
        problems.push(format!(
            "the app saw peer {:?}, not the client's IP {}",
            curl.peer_ip, client.ip
        ));
    }
    if client.mesh && outbound.is_none() {
        problems.push(format!(
            "no outbound access line from {} for {}",
            client.node_name, curl.local
        ));
    }
    if server.mesh && inbound.is_none() {
        problems.push(format!("no inbound access line from {}", server.node_name));
    }
    for access in outbound.iter().chain(inbound.iter()) {
        if !access.error.is_empty() {
            problems.push(format!("{} error: {}", access.direction, access.error));
        }
    }

    let via = match (target, outbound) {
        (Target::Service, Some(out)) if !out.dst_service.is_empty() => {
            format!(" -> {}", out.dst_service)
        }
        (Target::Service, _) => {
            problems.push("no ztunnel resolved the service VIP".into());
            format!(" -> {VIP}:{SERVICE_PORT}")
        }
        (Target::Pod(_), _) => String::new(),
    };
    let to = match inbound.filter(|i| !i.dst_workload.is_empty()) {
        Some(i) => {
            let name = i.dst_workload.rsplit('/').next().unwrap_or(&i.dst_workload);
            if name != server.name {
                problems.push(format!(
                    "ztunnel delivered to {name}, the app says {}",
                    server.name
                ));
            }
            format!("{name} ({})", i.dst.ip())
        }
        None => format!("{} ({})", server.name, server.ip),
    };
    let head = format!("{} ({}){via} -> {to}", client.name, client.ip);

    let mut hbone = false;
    let how = match (outbound, inbound) {
        (Some(out), Some(inb)) if out.protocol == "HBONE" && inb.protocol == "HBONE" => {
            let (client_id, server_id) = (&inb.src_identity, &out.dst_identity);
            // The server ztunnel verified the client's certificate; the
            // client ztunnel verified the server's against this identity.
            if *client_id != identity(client) {
                problems.push(format!(
                    "client identity {client_id}, expected {}",
                    identity(client)
                ));
            }
            if *server_id != identity(server) || inb.dst_identity != *server_id {
                problems.push(format!(
                    "server identity {server_id} (inbound side: {}), expected {}",
                    inb.dst_identity,
                    identity(server)
                ));
            }
            hbone = !client_id.is_empty() && !server_id.is_empty();
            format!("over HBONE: client {client_id}, server {server_id}")
        }
        (None, Some(inb)) if inb.protocol == "TCP" => format!(
            "plaintext, arrived on {}'s inbound as TCP: no client identity ({} is not in the mesh)",
            server.name, client.name
        ),
        (Some(out), None) if out.protocol == "TCP" && !server.mesh => format!(
            "over TCP, passed through by {}'s ztunnel: no identities ({} is not in the mesh)",
            client.node_name, server.name
        ),
        (out, inb) => {
            fn proto(a: Option<&Access>) -> &str {
                a.map_or("none", |a| a.protocol.as_str())
            }
            problems.push(format!(
                "unexpected protocols: outbound {}, inbound {}",
                proto(out),
                proto(inb)
            ));
            format!("outbound {}, inbound {}", proto(out), proto(inb))
        }
    };
    let line = format!("{head} {how}");
    if problems.is_empty() {
        Ok((line, hbone))
    } else {
        Err(format!("{line}: {}", problems.join("; ")))
    }
}
