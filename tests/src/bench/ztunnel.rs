//! Scenario `ztunnel`: pod → pod across two nodes through both ztunnels
//! (outbound capture, HBONE over mTLS, inbound to the app), against the same
//! topology without the mesh: non-mesh pods on the same two nodes, behind the
//! same veths and bridges. Mesh and baseline runs alternate so drift in the
//! machine's speed hits both alike.
//!
//! The bench process plays the apps: the client side creates its sockets
//! inside the client pod's netns (switching its thread in and out, as
//! ztunnel itself does, so the baseline pays the same cost) and the server
//! side accepts on listeners made inside the server pod's netns.
//!
//! With `--policy` ([`Options::policy`]) the config also carries an ALLOW
//! AuthorizationPolicy selecting the server with [`POLICY_RULES`] rules, of
//! which only the last admits the bench client: every mesh connection makes
//! the server's ztunnel evaluate all of them.
//!
//! [`Setup`] (one such mesh), [`Bench`] (the apps, measuring any number of
//! routes in turn) and [`figures`] are shared with the `redirect` scenario,
//! which compares meshes with different capture backends in one run.

use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use super::latency::LatencyRuns;
use super::sides::Sides;
use super::workload::{echo, gbps, one_request, rate, receive_bulk, send_bulk};
use super::{Figure, Report, Scale, median};
use crate::harness::{Capture, Mesh, MeshBuilder, PodSpec, cpu_seconds, netns, vm_rss_mib};

const MIB: u64 = 1024 * 1024;
const GIB: f64 = (1024 * 1024 * 1024) as f64;
const SINK_PORT: u16 = 9000;
const ECHO_PORT: u16 = 9001;
/// Mesh pods on the client's node in `rss_idle_20pods`, the client included.
const ENROLLED_PODS: usize = 20;
/// Rules of the `--policy` AuthorizationPolicy.
pub const POLICY_RULES: usize = 10;
/// Its name (in namespace `default`), checked in the server ztunnel's config dump.
const POLICY_NAME: &str = "bench-allow-client";
/// ztunnel's admin server, in the node netns.
const ADMIN_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 15000);
/// Longest one run of one route may take (a full run takes seconds): a
/// stalled connection fails the bench, naming the route, instead of
/// hanging it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// How the `ztunnel` scenario runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Run only the figures whose name starts with this.
    pub only: Option<String>,
    /// Passed to both ztunnels (e.g. `--worker-threads 1`).
    pub ztunnel_args: Vec<String>,
    /// Put [`policy_yaml`] in the config: [`POLICY_RULES`] ALLOW rules on the server.
    pub policy: bool,
    /// The node agents' capture backend.
    pub capture: Capture,
    /// Passed to both node agents (e.g. `--short-circuit false`).
    pub agent_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            only: None,
            ztunnel_args: Vec::new(),
            policy: false,
            // Explicit rather than the harness's `AMESH_TEST_CAPTURE`
            // default: a bench figure must say what it measured.
            capture: Capture::Nftables,
            agent_args: Vec::new(),
        }
    }
}

/// One ALLOW AuthorizationPolicy selecting `app: server` with
/// [`POLICY_RULES`] rules, each from a different identity on the bench
/// ports; only the last rule's identity is the client's, so admitting a
/// client connection evaluates every rule.
pub fn policy_yaml() -> String {
    let ports = format!("[\"{SINK_PORT}\", \"{ECHO_PORT}\"]");
    let mut out =
        String::from("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n");
    let _ = writeln!(out, "metadata: {{name: {POLICY_NAME}, namespace: default}}");
    out.push_str("spec:\n  selector: {matchLabels: {app: server}}\n  action: ALLOW\n  rules:\n");
    for i in 0..POLICY_RULES {
        let sa = if i + 1 == POLICY_RULES {
            "client".to_string()
        } else {
            format!("caller-{i}")
        };
        // writeln! into a String cannot fail.
        let _ = writeln!(
            out,
            "    - from: [{{source: {{principals: [cluster.local/ns/default/sa/{sa}]}}}}]"
        );
        let _ = writeln!(out, "      to: [{{operation: {{ports: {ports}}}}}]");
    }
    out
}

/// Byte counts reported by the sinks, one per bulk connection.
type Reports = mpsc::UnboundedReceiver<io::Result<u64>>;

/// Whether `only` (a figure-name prefix) selects the figures of `group`.
pub fn wanted(only: Option<&str>, group: &str) -> bool {
    only.is_none_or(|p| group.starts_with(p) || p.starts_with(group))
}

/// Makes sockets inside one netns from the calling thread.
#[derive(Debug)]
struct NetnsSockets {
    target: File,
    home: File,
}

impl NetnsSockets {
    fn new(name: &str) -> Result<Self> {
        Ok(Self {
            target: netns::open(name)?,
            home: File::open("/proc/thread-self/ns/net")?,
        })
    }

    fn socket(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        setns(self.target.as_fd(), CloneFlags::CLONE_NEWNET)?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        setns(self.home.as_fd(), CloneFlags::CLONE_NEWNET)?;
        socket
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = self.socket(addr)?.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// One way from a client pod to a server pod, and the ztunnels it passes
/// through (none between non-mesh pods).
#[derive(Debug)]
pub struct Route {
    /// Pods, backend and mesh dir (logs), for errors.
    label: String,
    client: Rc<NetnsSockets>,
    sink: SocketAddr,
    echo: SocketAddr,
    /// Both nodes' ztunnels, client's first; empty without the mesh.
    ztunnels: Vec<u32>,
    /// VmRSS (MiB) of the client node's ztunnel before any traffic.
    rss_idle: Option<f64>,
}

impl Route {
    /// Both ztunnels' CPU time in seconds (0 without the mesh).
    fn ztunnel_cpu(&self) -> Result<f64> {
        self.ztunnels.iter().map(|p| cpu_seconds(*p)).sum()
    }

    /// `run` (one run on this route), failing after `limit` with `what`.
    async fn bounded<T>(
        &self,
        what: &str,
        limit: Duration,
        run: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| anyhow!("{what} on {} stalled for {limit:?}", self.label))?
    }

    /// CPU time of the bench process (both apps, and the kernel work done
    /// in their context) plus the ztunnels.
    fn total_cpu(&self) -> Result<f64> {
        Ok(cpu_seconds(std::process::id())? + self.ztunnel_cpu()?)
    }
}

/// A two-node bench mesh: `client` → `server` across the nodes through
/// both ztunnels, and `client-plain` → `server-plain` on the same nodes
/// without the mesh, plus idle mesh pods on the client's node.
#[derive(Debug)]
pub struct Setup {
    mesh: Mesh,
    ztunnels: Vec<u32>,
    rss_idle: f64,
}

impl Setup {
    pub fn build(options: &Options) -> Result<Self> {
        let mut builder = MeshBuilder::new()
            .nodes(2)
            .capture(options.capture)
            .pod(PodSpec::new("client", 0).service_account("client"))
            .pod(
                PodSpec::new("server", 1)
                    .service_account("server")
                    .label("app", "server"),
            )
            .pod(PodSpec::new("client-plain", 0).mesh(false))
            .pod(PodSpec::new("server-plain", 1).mesh(false))
            // Access logs at info cost the mesh a little per connection, as
            // Istio's do; they stay on, as a user would run it.
            .daemon_env("RUST_LOG", "info");
        for arg in &options.ztunnel_args {
            builder = builder.ztunnel_arg(arg.clone());
        }
        for arg in &options.agent_args {
            builder = builder.agent_arg(arg.clone());
        }
        for i in 1..ENROLLED_PODS {
            builder = builder.pod(PodSpec::new(format!("idle-{i}"), 0).service_account("idle"));
        }
        let mut mesh = builder.build()?;
        if options.policy {
            mesh.write_config_text(&format!("{}{}", mesh.render_config(), policy_yaml()))?;
        }
        mesh.start()?;
        if options.policy {
            check_policy_loaded(&mesh)?;
        }
        let ztunnels: Vec<u32> = (0..2)
            .map(|n| mesh.ztunnel_pid(n).context("ztunnel not running"))
            .collect::<Result<_>>()?;
        // Idle: all pods enrolled, no traffic yet.
        let rss_idle = vm_rss_mib(ztunnels[0])?;
        Ok(Self {
            mesh,
            ztunnels,
            rss_idle,
        })
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// `client` → `server` through both ztunnels.
    pub fn meshed(&self) -> Result<Route> {
        let mut route = self.route("client", "server")?;
        route.ztunnels.clone_from(&self.ztunnels);
        route.rss_idle = Some(self.rss_idle);
        Ok(route)
    }

    /// `client-plain` → `server-plain`: the same nodes without the mesh.
    pub fn plain(&self) -> Result<Route> {
        self.route("client-plain", "server-plain")
    }

    fn route(&self, client: &str, server: &str) -> Result<Route> {
        Ok(Route {
            label: format!(
                "{client} → {server} ({} capture, mesh dir {})",
                self.mesh.capture().as_arg(),
                self.mesh.dir().display()
            ),
            client: Rc::new(NetnsSockets::new(&self.mesh.pod(client).netns)?),
            sink: self.mesh.pod(server).addr(SINK_PORT),
            echo: self.mesh.pod(server).addr(ECHO_PORT),
            ztunnels: Vec::new(),
            rss_idle: None,
        })
    }
}

/// The server's ztunnel holds the policy, enforced (not skipped), with
/// all its rules: otherwise `--policy` would measure nothing.
fn check_policy_loaded(mesh: &Mesh) -> Result<()> {
    let dump = mesh
        .node(1)
        .http_get(SocketAddr::from(ADMIN_ADDR), "/config_dump")?;
    ensure!(dump.status == 200, "config_dump: {}", dump.status);
    let dump: serde_json::Value = serde_json::from_str(&dump.body)?;
    let policies = dump["policies"]["authorizationPolicies"]
        .as_array()
        .context("config dump has no authorizationPolicies")?;
    let ours = policies
        .iter()
        .find(|p| p["name"] == POLICY_NAME)
        .context("the server's ztunnel did not load the bench policy")?;
    ensure!(
        ours.get("skipped").is_none_or(serde_json::Value::is_null),
        "the bench policy is skipped: {}",
        ours["skipped"]
    );
    let rules = ours["spec"]["rules"].as_array().map_or(0, Vec::len);
    ensure!(
        rules == POLICY_RULES,
        "the bench policy has {rules} rules, not {POLICY_RULES}"
    );
    Ok(())
}

/// VmHWM (peak resident set) of `pid` in MiB.
fn vm_hwm_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

/// Resets `pid`'s VmHWM to its current RSS (`clear_refs` 5), so the next
/// read is the peak of what ran in between.
fn reset_vm_hwm(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("reset the peak RSS of pid {pid}"))
}

/// What one route measured: one sample per run, each figure their median.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Gbit/s.
    throughput: Vec<f64>,
    /// ztunnel CPU s per GiB (empty without ztunnels).
    cpu_per_gib: Vec<f64>,
    latency: LatencyRuns,
    /// ztunnel CPU µs per round trip (empty without ztunnels).
    cpu_per_rr: Vec<f64>,
    /// Bench process + ztunnel CPU µs per round trip.
    total_cpu_per_rr: Vec<f64>,
    /// Connections per second.
    connect_rate: Vec<f64>,
    /// MiB, the server node's ztunnel over all connection-rate runs.
    peak_rss_connect: Option<f64>,
    rss_idle: Option<f64>,
}

impl Samples {
    fn for_route(route: &Route) -> Self {
        Self {
            rss_idle: route.rss_idle,
            ..Self::default()
        }
    }
}

/// The median of `samples`, or `None` if there are none (a baseline
/// without ztunnels has no ztunnel cost).
fn median_of(samples: &[f64]) -> Option<f64> {
    (!samples.is_empty()).then(|| median(samples.to_vec()))
}

/// The bench process's apps: the client side, and sink and echo servers in
/// the server pods of every mesh served.
#[derive(Debug)]
pub struct Bench {
    sides: Sides,
    done: mpsc::UnboundedSender<io::Result<u64>>,
    reports: Reports,
}

impl Bench {
    pub fn new() -> Result<Self> {
        let (done, reports) = mpsc::unbounded_channel();
        Ok(Self {
            sides: Sides::new()?,
            done,
            reports,
        })
    }

    /// Starts sink and echo servers in both server pods of `setup`. Bulk
    /// runs never overlap, so every sink reports on one channel.
    pub fn serve(&self, setup: &Setup) -> Result<()> {
        for pod in ["server", "server-plain"] {
            let pod = setup.mesh.pod(pod);
            let sink = pod.bind_std(SocketAddr::from(([0, 0, 0, 0], SINK_PORT)))?;
            let echo_listener = pod.bind_std(SocketAddr::from(([0, 0, 0, 0], ECHO_PORT)))?;
            sink.set_nonblocking(true)?;
            echo_listener.set_nonblocking(true)?;
            let tx = self.done.clone();
            self.sides.server().spawn(async move {
                let (Ok(sink), Ok(echo_listener)) = (
                    TcpListener::from_std(sink),
                    TcpListener::from_std(echo_listener),
                ) else {
                    return;
                };
                tokio::spawn(async move {
                    while let Ok((conn, _)) = sink.accept().await {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(receive_bulk(conn).await);
                        });
                    }
                });
                while let Ok((conn, _)) = echo_listener.accept().await {
                    let _ = conn.set_nodelay(true);
                    tokio::spawn(echo(conn));
                }
            });
        }
        Ok(())
    }

    /// Every wanted figure group on each of `routes` (served by this
    /// bench), `runs` times. Within each run the routes take turns, the
    /// first rotating, so drift in the machine's speed hits all alike.
    pub fn measure(
        &mut self,
        scale: Scale,
        runs: usize,
        only: Option<&str>,
        routes: &[Route],
    ) -> Result<Vec<Samples>> {
        let mut samples: Vec<Samples> = routes.iter().map(Samples::for_route).collect();
        let turns = |run: usize| (0..routes.len()).map(move |i| (run + i) % routes.len());

        if wanted(only, "throughput_1conn") || wanted(only, "cpu_s_per_gib") {
            let bytes = scale.pick(256, 2048) * MIB;
            for run in 0..runs {
                for i in turns(run) {
                    let route = &routes[i];
                    let before = route.ztunnel_cpu()?;
                    let transfer = bulk(route, &mut self.reports, bytes);
                    let gbps = self.sides.run_client(route.bounded(
                        "bulk transfer",
                        RUN_TIMEOUT,
                        transfer,
                    ))?;
                    samples[i].throughput.push(gbps);
                    if !route.ztunnels.is_empty() {
                        let spent = route.ztunnel_cpu()? - before;
                        samples[i].cpu_per_gib.push(spent / (bytes as f64 / GIB));
                    }
                }
            }
        }

        if wanted(only, "latency") {
            let iterations = scale.pick(3_000, 20_000);
            let warmup = 200;
            let round_trips = (warmup + iterations) as f64;
            self.sides.run_client(async {
                let mut conns = Vec::with_capacity(routes.len());
                for route in routes {
                    conns.push(route.client.connect(route.echo).await?);
                }
                for run in 0..runs {
                    for i in turns(run) {
                        let route = &routes[i];
                        let (ztunnel_before, total_before) =
                            (route.ztunnel_cpu()?, route.total_cpu()?);
                        let record = samples[i].latency.record(&mut conns[i], warmup, iterations);
                        route
                            .bounded("latency run", RUN_TIMEOUT, async { Ok(record.await?) })
                            .await?;
                        let s = &mut samples[i];
                        s.total_cpu_per_rr
                            .push((route.total_cpu()? - total_before) * 1e6 / round_trips);
                        if !route.ztunnels.is_empty() {
                            let spent = route.ztunnel_cpu()? - ztunnel_before;
                            s.cpu_per_rr.push(spent * 1e6 / round_trips);
                        }
                    }
                }
                anyhow::Ok(())
            })?;
        }

        if wanted(only, "connect_rate") || wanted(only, "peak_rss_connect") {
            let duration = Duration::from_millis(scale.pick(500, 2000));
            // The server node's ztunnel: it accepts, authorizes (with
            // `--policy`, every rule) and relays each new connection. Its
            // peak from here on is what the connection bursts cost.
            for pid in routes.iter().filter_map(|r| r.ztunnels.get(1)) {
                reset_vm_hwm(*pid)?;
            }
            for run in 0..runs {
                for i in turns(run) {
                    let route = &routes[i];
                    let (client, echo) = (route.client.clone(), route.echo);
                    let burst = rate(16, duration, move || {
                        let client = client.clone();
                        async move { one_request(client.connect(echo).await?).await }
                    });
                    let rate = self.sides.run_client(route.bounded(
                        "connection-rate run",
                        duration + RUN_TIMEOUT,
                        async { Ok(burst.await?) },
                    ))?;
                    samples[i].connect_rate.push(rate);
                }
            }
            for (route, s) in routes.iter().zip(samples.iter_mut()) {
                s.peak_rss_connect = route.ztunnels.get(1).map(|p| vm_hwm_mib(*p)).transpose()?;
            }
        }
        Ok(samples)
    }
}

/// One bulk transfer to the route's sink (bounded by the caller).
async fn bulk(route: &Route, reports: &mut Reports, bytes: u64) -> Result<f64> {
    let conn = route.client.connect(route.sink).await?;
    let start = Instant::now();
    send_bulk(conn, bytes).await?;
    let got = reports.recv().await.context("sink stopped")??;
    ensure!(got == bytes, "sink read {got} of {bytes} bytes");
    Ok(gbps(bytes, start.elapsed().as_secs_f64()))
}

/// The scenario's figures (those `only` selects), `mesh` against
/// `baseline`. ztunnel's own costs (CPU, memory) have a baseline only if
/// the baseline route has ztunnels too.
pub fn figures(only: Option<&str>, mesh: &Samples, baseline: &Samples) -> Vec<Figure> {
    let mut figures = Vec::new();
    let with = |name: &str, unit: &str, m: &[f64], b: &[f64], higher: bool| {
        median_of(m).map(|m| Figure::new(name, unit, m, median_of(b), higher))
    };
    if wanted(only, "throughput_1conn") {
        figures.extend(with(
            "throughput_1conn",
            "Gbit/s",
            &mesh.throughput,
            &baseline.throughput,
            true,
        ));
    }
    if wanted(only, "cpu_s_per_gib") {
        figures.extend(with(
            "cpu_s_per_gib",
            "s/GiB",
            &mesh.cpu_per_gib,
            &baseline.cpu_per_gib,
            false,
        ));
    }
    if wanted(only, "latency") {
        figures.extend(LatencyRuns::figures(
            mesh.latency.clone(),
            baseline.latency.clone(),
        ));
        // What the latency costs: with busy polling on, most of it is spin.
        figures.extend(with(
            "cpu_us_per_rr",
            "µs",
            &mesh.cpu_per_rr,
            &baseline.cpu_per_rr,
            false,
        ));
    }
    if wanted(only, "connect_rate") {
        figures.extend(with(
            "connect_rate",
            "conn/s",
            &mesh.connect_rate,
            &baseline.connect_rate,
            true,
        ));
    }
    if wanted(only, "peak_rss_connect") {
        let peak = |s: &Samples| s.peak_rss_connect.into_iter().collect::<Vec<_>>();
        figures.extend(with(
            "peak_rss_connect",
            "MiB",
            &peak(mesh),
            &peak(baseline),
            false,
        ));
    }
    if wanted(only, "rss_idle_20pods") {
        let idle = |s: &Samples| s.rss_idle.into_iter().collect::<Vec<_>>();
        figures.extend(with(
            "rss_idle_20pods",
            "MiB",
            &idle(mesh),
            &idle(baseline),
            false,
        ));
    }
    figures
}

/// `cpu_total_us_per_rr`: CPU µs per round trip of the bench apps and the
/// ztunnels together, kernel work in their context included, so capture
/// cost in the kernel counts wherever it lands (with the latency figures).
pub fn total_cpu_figure(only: Option<&str>, mesh: &Samples, baseline: &Samples) -> Option<Figure> {
    if !wanted(only, "latency") && !wanted(only, "cpu_total_us_per_rr") {
        return None;
    }
    Some(Figure::new(
        "cpu_total_us_per_rr",
        "µs",
        median_of(&mesh.total_cpu_per_rr)?,
        median_of(&baseline.total_cpu_per_rr),
        false,
    ))
}

pub fn run(scale: Scale, options: &Options) -> Result<Report> {
    let only = options.only.as_deref();
    let setup = Setup::build(options)?;
    let mut bench = Bench::new()?;
    bench.serve(&setup)?;
    let routes = [setup.meshed()?, setup.plain()?];
    let samples = bench.measure(scale, scale.runs(), only, &routes)?;
    let figures = match samples.as_slice() {
        [mesh, plain] => figures(only, mesh, plain),
        _ => anyhow::bail!("measured {} routes, not 2", samples.len()),
    };
    drop(bench);
    drop(setup);
    Ok(Report {
        scenario: "ztunnel".into(),
        figures,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use amesh_core::Identity;
    use amesh_core::policy::{Connection, Decision};

    use super::*;

    #[test]
    fn bench_policy_admits_only_listed_identities_on_the_bench_ports() {
        let text = format!(
            "workloads:\n  - uid: default/server\n    name: server\n    namespace: default\n    \
             serviceAccount: server\n    node: node-1\n    ips: [10.244.1.2]\n    \
             labels: {{app: server}}\n    protocol: HBONE\nservices: []\n{}",
            policy_yaml()
        );
        let snapshot = amesh_core::config::parse(&text, Path::new("bench.yaml"), "cluster.local")
            .expect("the bench policy parses");
        let server = snapshot.workload_by_uid("default/server").expect("server");
        let decide = |sa: &str, port: u16| {
            let identity = Identity::new("cluster.local", "default", sa).expect("identity");
            let conn = Connection {
                src_ip: "10.244.0.2".parse().expect("ip"),
                src_identity: Some(&identity),
                dst_ip: "10.244.1.2".parse().expect("ip"),
                dst_port: port,
            };
            matches!(
                snapshot.policies().authorize(&conn, server),
                Decision::Allow { .. }
            )
        };
        assert!(decide("client", SINK_PORT));
        assert!(decide("client", ECHO_PORT));
        assert!(!decide("client", 22), "other ports are not allowed");
        assert!(
            !decide("idle", ECHO_PORT),
            "other identities are not allowed"
        );
        assert_eq!(policy_yaml().matches("- from:").count(), POLICY_RULES);
    }
}
