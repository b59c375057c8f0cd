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

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use super::latency::LatencyRuns;
use super::sides::Sides;
use super::workload::{echo, gbps, one_request, rate, receive_bulk, send_bulk};
use super::{Figure, Report, Scale, median};
use crate::harness::{Mesh, MeshBuilder, PodSpec, cpu_seconds, netns, vm_rss_mib};

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

/// How the `ztunnel` scenario runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Run only the figures whose name starts with this.
    pub only: Option<String>,
    /// Passed to both ztunnels (e.g. `--worker-threads 1`).
    pub ztunnel_args: Vec<String>,
    /// Put [`policy_yaml`] in the config: [`POLICY_RULES`] ALLOW rules on the server.
    pub policy: bool,
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

/// Makes sockets inside one netns from the calling thread.
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

/// One side of the comparison: a client pod and the server pod it talks to.
struct Path {
    client: NetnsSockets,
    sink: SocketAddr,
    echo: SocketAddr,
}

type Reports = mpsc::UnboundedReceiver<io::Result<u64>>;

fn build_mesh(ztunnel_args: &[String], policy: bool) -> Result<Mesh> {
    let mut builder = MeshBuilder::new()
        .nodes(2)
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
    for arg in ztunnel_args {
        builder = builder.ztunnel_arg(arg.clone());
    }
    for i in 1..ENROLLED_PODS {
        builder = builder.pod(PodSpec::new(format!("idle-{i}"), 0).service_account("idle"));
    }
    let mut mesh = builder.build()?;
    if policy {
        mesh.write_config_text(&format!("{}{}", mesh.render_config(), policy_yaml()))?;
    }
    mesh.start()?;
    if policy {
        check_policy_loaded(&mesh)?;
    }
    Ok(mesh)
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

/// Starts sink and echo servers in both server pods on the server side.
fn start_servers(sides: &Sides, mesh: &Mesh) -> Result<Reports> {
    let (tx, reports) = mpsc::unbounded_channel();
    for pod in ["server", "server-plain"] {
        let pod = mesh.pod(pod);
        let sink = pod.bind_std(SocketAddr::from(([0, 0, 0, 0], SINK_PORT)))?;
        let echo_listener = pod.bind_std(SocketAddr::from(([0, 0, 0, 0], ECHO_PORT)))?;
        sink.set_nonblocking(true)?;
        echo_listener.set_nonblocking(true)?;
        let tx = tx.clone();
        sides.server().spawn(async move {
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
    Ok(reports)
}

/// Both ztunnels' CPU time, in seconds.
fn ztunnel_cpu_seconds(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

async fn bulk(path: &Path, reports: &mut Reports, bytes: u64) -> Result<f64> {
    let conn = path.client.connect(path.sink).await?;
    let start = Instant::now();
    send_bulk(conn, bytes).await?;
    let got = tokio::time::timeout(Duration::from_secs(120), reports.recv())
        .await
        .context("sink did not finish")?
        .context("sink stopped")??;
    ensure!(got == bytes, "sink read {got} of {bytes} bytes");
    Ok(gbps(bytes, start.elapsed().as_secs_f64()))
}

pub fn run(scale: Scale, options: &Options) -> Result<Report> {
    let only = options.only.as_deref();
    let wanted = |group: &str| only.is_none_or(|p| group.starts_with(p) || p.starts_with(group));
    let mesh = build_mesh(&options.ztunnel_args, options.policy)?;
    let ztunnels: Vec<u32> = (0..2)
        .map(|n| mesh.ztunnel_pid(n).context("ztunnel not running"))
        .collect::<Result<_>>()?;
    let mut figures = Vec::new();

    // Idle: all pods enrolled, no traffic yet.
    let rss_idle = if wanted("rss_idle_20pods") {
        Some(vm_rss_mib(ztunnels[0])?)
    } else {
        None
    };

    let sides = Sides::new()?;
    let mut reports = start_servers(&sides, &mesh)?;
    let path = |client: &str, server: &str| -> Result<Path> {
        Ok(Path {
            client: NetnsSockets::new(&mesh.pod(client).netns)?,
            sink: mesh.pod(server).addr(SINK_PORT),
            echo: mesh.pod(server).addr(ECHO_PORT),
        })
    };
    let meshed = path("client", "server")?;
    let plain = path("client-plain", "server-plain")?;
    let runs = scale.runs();

    if wanted("throughput_1conn") || wanted("cpu_s_per_gib") {
        let bytes = scale.pick(256, 2048) * MIB;
        let (mut m, mut b, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let before = ztunnel_cpu_seconds(&ztunnels)?;
            m.push(sides.run_client(bulk(&meshed, &mut reports, bytes))?);
            let after = ztunnel_cpu_seconds(&ztunnels)?;
            cpu.push((after - before) / (bytes as f64 / GIB));
            b.push(sides.run_client(bulk(&plain, &mut reports, bytes))?);
        }
        if wanted("throughput_1conn") {
            figures.push(Figure::new(
                "throughput_1conn",
                "Gbit/s",
                median(m),
                Some(median(b)),
                true,
            ));
        }
        if wanted("cpu_s_per_gib") {
            figures.push(Figure::new(
                "cpu_s_per_gib",
                "s/GiB",
                median(cpu),
                None,
                false,
            ));
        }
    }

    if wanted("latency") {
        let iterations = scale.pick(3_000, 20_000);
        let warmup = 200;
        let (mut m, mut b) = (LatencyRuns::default(), LatencyRuns::default());
        let mut cpu = Vec::new();
        sides.run_client(async {
            let mut mesh_conn = meshed.client.connect(meshed.echo).await?;
            let mut plain_conn = plain.client.connect(plain.echo).await?;
            for _ in 0..runs {
                let before = ztunnel_cpu_seconds(&ztunnels)?;
                m.record(&mut mesh_conn, warmup, iterations).await?;
                let spent = ztunnel_cpu_seconds(&ztunnels)? - before;
                cpu.push(spent * 1e6 / (warmup + iterations) as f64);
                b.record(&mut plain_conn, warmup, iterations).await?;
            }
            anyhow::Ok(())
        })?;
        figures.extend(LatencyRuns::figures(m, b));
        // What the latency costs: with busy polling on, most of it is spin.
        figures.push(Figure::new("cpu_us_per_rr", "µs", median(cpu), None, false));
    }

    if wanted("connect_rate") || wanted("peak_rss_connect") {
        let duration = Duration::from_millis(scale.pick(500, 2000));
        let pairs = [("client", "server"), ("client-plain", "server-plain")];
        let mut rates = [Vec::new(), Vec::new()];
        // The server node's ztunnel: it accepts, authorizes (with
        // `--policy`, every rule) and relays each new connection. Its peak
        // from here on is what the connection bursts cost.
        reset_vm_hwm(ztunnels[1])?;
        for _ in 0..runs {
            for ((client, server), out) in pairs.iter().zip(rates.iter_mut()) {
                let p = Rc::new(path(client, server)?);
                out.push(sides.run_client(rate(16, duration, move || {
                    let p = p.clone();
                    async move { one_request(p.client.connect(p.echo).await?).await }
                }))?);
            }
        }
        let peak = vm_hwm_mib(ztunnels[1])?;
        let [m, b] = rates;
        if wanted("connect_rate") {
            figures.push(Figure::new(
                "connect_rate",
                "conn/s",
                median(m),
                Some(median(b)),
                true,
            ));
        }
        if wanted("peak_rss_connect") {
            figures.push(Figure::new("peak_rss_connect", "MiB", peak, None, false));
        }
    }

    if let Some(rss) = rss_idle {
        figures.push(Figure::new("rss_idle_20pods", "MiB", rss, None, false));
    }
    drop(sides);
    drop(mesh);
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
