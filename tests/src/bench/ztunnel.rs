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

fn build_mesh(ztunnel_args: &[String]) -> Result<Mesh> {
    let mut builder = MeshBuilder::new()
        .nodes(2)
        .pod(PodSpec::new("client", 0).service_account("client"))
        .pod(PodSpec::new("server", 1).service_account("server"))
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
    mesh.start()?;
    Ok(mesh)
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

/// `ztunnel_args` are passed to both ztunnels (e.g. `--worker-threads 1`).
pub fn run(scale: Scale, only: Option<&str>, ztunnel_args: &[String]) -> Result<Report> {
    let wanted = |group: &str| only.is_none_or(|p| group.starts_with(p) || p.starts_with(group));
    let mesh = build_mesh(ztunnel_args)?;
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

    if wanted("connect_rate") {
        let duration = Duration::from_millis(scale.pick(500, 2000));
        let pairs = [("client", "server"), ("client-plain", "server-plain")];
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for ((client, server), out) in pairs.iter().zip(rates.iter_mut()) {
                let p = Rc::new(path(client, server)?);
                out.push(sides.run_client(rate(16, duration, move || {
                    let p = p.clone();
                    async move { one_request(p.client.connect(p.echo).await?).await }
                }))?);
            }
        }
        let [m, b] = rates;
        figures.push(Figure::new(
            "connect_rate",
            "conn/s",
            median(m),
            Some(median(b)),
            true,
        ));
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
