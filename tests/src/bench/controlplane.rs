//! Scenario `controlplane`: what `amesh-control-plane` needs at scale.
//!
//! The control plane runs on the folder source (loopback gRPC, its own
//! process) with 10,000 pods on 100 nodes, 1,000 services and 500
//! AuthorizationPolicies in 50 ambient namespaces (one file each). 100
//! subscribers (the xDS client ztunnel uses, one per node, each with its
//! node's token) subscribe to workloads/services and authorizations.
//! - `memory_mib`: the control plane's RSS once all 100 hold the full state;
//! - `full_push_ms`: a new subscriber connecting until it holds the full
//!   state (median of several);
//! - `delta_push_ms`: one pod's file edited until all 100 subscribers hold
//!   the changed workload (file watch, debounce, derivation and push
//!   included; median of several edits).
//!
//! There is no mesh-less baseline for a control plane: baselines are null.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amesh_core::xds::client::{ClientConfig, XdsHandler, XdsState};
use amesh_core::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};
use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Figure, Report, Scale, median};
use crate::harness::{CONTROL_PLANE_BIN, Process, ProcessSpec, binary, poll_until, vm_rss_mib};

const NAMESPACES: usize = 50;
const PUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster's size.
#[derive(Clone, Copy, Debug)]
struct Size {
    pods: usize,
    services: usize,
    policies: usize,
    subscribers: usize,
}

impl Size {
    fn per_namespace(self, total: usize) -> usize {
        total.div_ceil(NAMESPACES)
    }
}

pub fn run(scale: Scale) -> Result<Report> {
    let size = scale.pick(
        Size {
            pods: 1_000,
            services: 100,
            policies: 50,
            subscribers: 10,
        },
        Size {
            pods: 10_000,
            services: 1_000,
            policies: 500,
            subscribers: 100,
        },
    );
    let dir = tempfile::Builder::new()
        .prefix("amesh-cpbench")
        .tempdir()
        .context("bench temp dir")?;
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config)?;
    for ns in 0..NAMESPACES {
        write_namespace(&config, ns, size, 0)?;
    }
    let grpc = free_port()?;
    let mut cp = start_control_plane(dir.path(), &config, grpc, size.subscribers)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(dir.path(), &config, grpc, size, scale, &mut cp));
    if result.is_err() || std::env::var_os("MESHBENCH_CP_LOG").is_some() {
        eprintln!("--- control plane log ---\n{}", cp.log_tail(60));
    }
    result
}

async fn measure(
    dir: &Path,
    config: &Path,
    grpc: u16,
    size: Size,
    scale: Scale,
    cp: &mut Process,
) -> Result<Report> {
    let expected = size.pods + size.services;
    // The store and one derivation, before any subscriber.
    let idle_memory = vm_rss_mib(cp.pid().context("control plane not running")?)?;
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for node in 0..size.subscribers {
        spawn_subscriber(dir, grpc, node, tx.clone(), cancel.clone());
    }
    // Everyone holds the full state.
    let mut holding: HashMap<usize, Seen> = HashMap::new();
    wait_until(&mut rx, &mut holding, |h| {
        h.len() == size.subscribers && h.values().all(|s| s.addresses >= expected)
    })
    .await
    .context("subscribers to receive the full state")?;
    let pid = cp.pid().context("control plane not running")?;
    let memory = vm_rss_mib(pid)?;

    // A new subscriber: connect → full state.
    let mut full = Vec::new();
    for round in 0..scale.runs() {
        let node = round % size.subscribers;
        let id = 1_000 + round;
        let (one_tx, mut one_rx) = mpsc::unbounded_channel();
        let one_cancel = cancel.child_token();
        let start = Instant::now();
        spawn_subscriber_as(dir, grpc, node, id, one_tx, one_cancel.clone());
        let mut seen = HashMap::new();
        wait_until(&mut one_rx, &mut seen, |h| {
            h.get(&id).is_some_and(|s| s.addresses >= expected)
        })
        .await
        .context("a new subscriber to receive the full state")?;
        full.push(start.elapsed().as_secs_f64() * 1e3);
        one_cancel.cancel();
    }

    // One pod changes: file written → every subscriber holds the new version.
    let mut delta = Vec::new();
    for round in 1..=scale.pick(5, 9) {
        let before: Vec<Option<String>> = holding.values().map(|s| s.target.clone()).collect();
        let old = before.first().cloned().flatten();
        let start = Instant::now();
        write_namespace(config, 0, size, round)?;
        wait_until(&mut rx, &mut holding, |h| {
            h.values().all(|s| s.target.is_some() && s.target != old)
        })
        .await
        .with_context(|| format!("edit {round} to reach every subscriber"))?;
        delta.push(start.elapsed().as_secs_f64() * 1e3);
    }
    cancel.cancel();
    Ok(Report {
        scenario: "controlplane".into(),
        figures: vec![
            Figure::new("pods", "pods", size.pods as f64, None, true),
            Figure::new(
                "subscribers",
                "subscribers",
                size.subscribers as f64,
                None,
                true,
            ),
            Figure::new("memory_mib", "MiB", memory, None, false),
            Figure::new("memory_mib_no_subscribers", "MiB", idle_memory, None, false),
            Figure::new("full_push_ms", "ms", median(full), None, false),
            Figure::new("delta_push_ms", "ms", median(delta.clone()), None, false),
            Figure::new(
                "delta_push_ms_max",
                "ms",
                delta.iter().copied().fold(0.0, f64::max),
                None,
                false,
            ),
        ],
    })
}

/// What one subscriber holds after its latest push.
#[derive(Clone, Debug, Default)]
struct Seen {
    addresses: usize,
    /// Version of the workload the delta rounds edit.
    target: Option<String>,
}

const TARGET: &str = "ns-0/pod-0";

struct Probe {
    id: usize,
    tx: mpsc::UnboundedSender<(usize, Seen)>,
}

impl XdsHandler for Probe {
    fn apply(&mut self, state: &XdsState) -> Result<(), String> {
        let addresses = state.resources(ADDRESS_TYPE);
        let seen = Seen {
            addresses: addresses.len(),
            target: addresses.get(TARGET).map(|e| e.version.clone()),
        };
        // The bench may have stopped listening: nothing to do then.
        let _ = self.tx.send((self.id, seen));
        Ok(())
    }
}

fn spawn_subscriber(
    dir: &Path,
    grpc: u16,
    node: usize,
    tx: mpsc::UnboundedSender<(usize, Seen)>,
    cancel: CancellationToken,
) {
    spawn_subscriber_as(dir, grpc, node, node, tx, cancel);
}

fn spawn_subscriber_as(
    dir: &Path,
    grpc: u16,
    node: usize,
    id: usize,
    tx: mpsc::UnboundedSender<(usize, Seen)>,
    cancel: CancellationToken,
) {
    let tokens = dir.join("tokens");
    let config = ClientConfig {
        address: format!("https://127.0.0.1:{grpc}"),
        node: node_name(node),
        role: "ztunnel".into(),
        types: vec![ADDRESS_TYPE, AUTHORIZATION_TYPE],
        token_file: Some(tokens.join(format!("{}.token", node_name(node)))),
        root_cert: Some(tokens.join("root-cert.pem")),
        server_name: None,
        reconnect_max: Duration::from_secs(1),
    };
    tokio::spawn(async move {
        let _ = amesh_core::xds::client::run(config, Probe { id, tx }, cancel).await;
    });
}

async fn wait_until(
    rx: &mut mpsc::UnboundedReceiver<(usize, Seen)>,
    holding: &mut HashMap<usize, Seen>,
    done: impl Fn(&HashMap<usize, Seen>) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PUSH_TIMEOUT;
    while !done(holding) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((id, seen))) => {
                holding.insert(id, seen);
            }
            Ok(None) => bail!("every subscriber stopped"),
            Err(_) => bail!("timed out after {PUSH_TIMEOUT:?}"),
        }
    }
    Ok(())
}

fn node_name(node: usize) -> String {
    format!("node-{node}")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_control_plane(dir: &Path, config: &Path, grpc: u16, nodes: usize) -> Result<Process> {
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port)).to_string();
    let nodes: Vec<String> = (0..nodes).map(node_name).collect();
    let tokens = dir.join("tokens");
    let args: Vec<std::ffi::OsString> = vec![
        "--source".into(),
        "folder".into(),
        "--config-dir".into(),
        config.into(),
        "--grpc-addr".into(),
        loopback(grpc).into(),
        "--metrics-addr".into(),
        loopback(free_port()?).into(),
        "--readiness-addr".into(),
        loopback(free_port()?).into(),
        "--admin-addr".into(),
        loopback(free_port()?).into(),
        "--ca-dir".into(),
        dir.join("ca").into(),
        "--local-nodes".into(),
        nodes.join(",").into(),
        "--local-token-dir".into(),
        tokens.clone().into(),
    ];
    let process = Process::spawn(ProcessSpec {
        label: CONTROL_PLANE_BIN.into(),
        binary: binary(CONTROL_PLANE_BIN)?,
        args,
        // MESHBENCH_CP_LOG=debug shows each derivation's time (printed at the end).
        env: vec![(
            "RUST_LOG".into(),
            std::env::var("MESHBENCH_CP_LOG")
                .unwrap_or_else(|_| "warn".into())
                .into(),
        )],
        netns: String::new(),
        log: dir.join("control-plane.log"),
    })?;
    let root = tokens.join("root-cert.pem");
    poll_until(
        Duration::from_secs(60),
        "the control plane to start",
        || Ok(root.exists() && TcpListener::bind(("127.0.0.1", grpc)).is_err()),
    )?;
    Ok(process)
}

/// One namespace's file: the namespace, its pods, services and policies.
/// `revision` changes pod-0's version label (the delta rounds).
fn write_namespace(config: &Path, ns: usize, size: Size, revision: usize) -> Result<()> {
    let pods = size.per_namespace(size.pods);
    let services = size.per_namespace(size.services);
    let policies = size.per_namespace(size.policies);
    let apps = services.max(1);
    let mut out = String::with_capacity(pods * 400);
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{ns}, labels: {{istio.io/dataplane-mode: ambient}}}}\n"
    );
    for p in 0..pods {
        let k = ns * pods + p;
        let version = if p == 0 { revision } else { 0 };
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{p}, namespace: ns-{ns}, labels: {{app: app-{app}, version: v{version}}}}}\n\
             spec: {{nodeName: node-{node}, serviceAccountName: sa-{app}}}\nstatus: {{podIP: {ip}}}\n",
            app = p % apps,
            node = k % size.subscribers,
            ip = pod_ip(k),
        );
    }
    for s in 0..services {
        let k = ns * services + s;
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: ns-{ns}}}\n\
             spec: {{clusterIP: 10.96.{}.{}, ports: [{{port: 80, targetPort: 8080}}], selector: {{app: app-{s}}}}}\n",
            k / 250,
            k % 250 + 1,
        );
    }
    for a in 0..policies {
        let _ = write!(
            out,
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: allow-{a}, namespace: ns-{ns}}}\n\
             spec:\n  selector: {{matchLabels: {{app: app-{app}}}}}\n  action: ALLOW\n  rules:\n    - from: [{{source: {{principals: [cluster.local/ns/ns-{ns}/sa/sa-{from}]}}}}]\n      to: [{{operation: {{ports: [\"8080\"]}}}}]\n",
            app = a % apps,
            from = (a + 1) % apps,
        );
    }
    let path: PathBuf = config.join(format!("ns-{ns}.yaml"));
    crate::harness::write_atomic(&path, &out)
}

fn pod_ip(k: usize) -> String {
    let k = k + 1;
    format!("10.128.{}.{}", k / 250, k % 250 + 1)
}
