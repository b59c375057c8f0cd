//! Scenario `hbone`: one HBONE client/server pair in-process on loopback
//! against direct TCP. The mesh path is one mTLS + HTTP/2 connection: the
//! bench writes into the client's CONNECT stream and the server's handler
//! reads the stream it accepted. Client and server sides run on separate
//! threads (see [`Sides`]); the baseline's sockets are placed the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amesh_core::certs::WorkloadCertificate;
use amesh_core::hbone::{
    ConnectHandler, DrainSignal, HbonePool, HboneRequest, InboundConnect, PoolConfig, Responder,
    ServerConfig,
};
use amesh_core::identity::Identity;
use anyhow::{Context, Result, ensure};
use futures_util::future::join_all;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::latency::LatencyRuns;
use super::sides::Sides;
use super::workload::{echo, gbps, one_request, rate, receive_bulk, send_bulk};
use super::{Figure, Report, Scale, median};
use crate::fixtures::{EchoHandler, LOCALHOST, Pki, start_server};

const MIB: u64 = 1024 * 1024;
/// The CONNECT target; the bench's handlers accept any.
const TARGET: SocketAddr = SocketAddr::new(LOCALHOST, 9);

type Reports = mpsc::UnboundedReceiver<std::io::Result<u64>>;

/// Everything that runs on the server side, and how to reach it.
struct Servers {
    identity: Identity,
    mesh_sink: SocketAddr,
    mesh_echo: SocketAddr,
    tcp_sink: SocketAddr,
    tcp_echo: SocketAddr,
    /// Byte counts read by the sinks, one per finished connection.
    reports: Reports,
    _drains: Vec<DrainSignal>,
}

/// Reads each accepted stream to EOF and reports the byte count.
#[derive(Clone)]
struct SinkHandler(mpsc::UnboundedSender<std::io::Result<u64>>);

impl ConnectHandler for SinkHandler {
    async fn handle(&self, _request: InboundConnect, responder: Responder) {
        if let Ok(stream) = responder.accept() {
            let _ = self.0.send(receive_bulk(stream).await);
        }
    }
}

async fn start_servers(pki: Arc<Pki>) -> Result<Servers> {
    let cert = pki.cert("bench", "server").await;
    let (tx, reports) = mpsc::unbounded_channel();
    let sink = start_server(
        cert.clone(),
        SinkHandler(tx.clone()),
        ServerConfig::default(),
    )
    .await;
    let echo_server = start_server(cert.clone(), EchoHandler, ServerConfig::default()).await;

    let tcp_sink = TcpListener::bind((LOCALHOST, 0)).await?;
    let tcp_sink_addr = tcp_sink.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = tcp_sink.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(receive_bulk(conn).await);
            });
        }
    });
    let tcp_echo = TcpListener::bind((LOCALHOST, 0)).await?;
    let tcp_echo_addr = tcp_echo.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = tcp_echo.accept().await {
            let _ = conn.set_nodelay(true);
            tokio::spawn(echo(conn));
        }
    });
    Ok(Servers {
        identity: cert.identity().clone(),
        mesh_sink: sink.addr,
        mesh_echo: echo_server.addr,
        tcp_sink: tcp_sink_addr,
        tcp_echo: tcp_echo_addr,
        reports,
        _drains: vec![sink.drain, echo_server.drain],
    })
}

/// The client side's view: its certificate and requests to the servers.
struct Client {
    cert: Arc<WorkloadCertificate>,
    servers: Servers,
}

impl Client {
    fn request(&self, hbone_addr: SocketAddr) -> HboneRequest {
        HboneRequest {
            source: self.cert.clone(),
            source_ip: LOCALHOST,
            hbone_addr,
            expected: self.servers.identity.clone(),
            target: TARGET,
            dialer: None,
        }
    }

    async fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
        let conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        Ok(conn)
    }

    /// Sends `per_conn` bytes on each stream at once; Gbit/s from the first
    /// write until the server has read the last byte.
    async fn bulk<S>(&mut self, streams: Vec<S>, per_conn: u64) -> Result<f64>
    where
        S: tokio::io::AsyncWrite + Unpin,
    {
        let count = streams.len();
        let start = Instant::now();
        for sent in join_all(streams.into_iter().map(|s| send_bulk(s, per_conn))).await {
            sent?;
        }
        for _ in 0..count {
            let got = self
                .servers
                .reports
                .recv()
                .await
                .context("sink stopped")??;
            ensure!(got == per_conn, "sink read {got} of {per_conn} bytes");
        }
        Ok(gbps(per_conn * count as u64, start.elapsed().as_secs_f64()))
    }

    async fn mesh_streams(
        &self,
        pool: &HbonePool,
        n: usize,
    ) -> Result<Vec<amesh_core::hbone::H2Stream>> {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            streams.push(pool.connect(self.request(self.servers.mesh_sink)).await?);
        }
        Ok(streams)
    }

    async fn tcp_streams(&self, n: usize) -> Result<Vec<TcpStream>> {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            streams.push(Self::tcp(self.servers.tcp_sink).await?);
        }
        Ok(streams)
    }
}

fn eight_conn_pool() -> HbonePool {
    // One stream per connection: eight separate mTLS connections.
    HbonePool::new(PoolConfig {
        max_streams_per_conn: 1,
        ..PoolConfig::default()
    })
}

fn setup(sides: &Sides) -> Result<Client> {
    let pki = Arc::new(Pki::new());
    let servers = sides.run_client(sides.server().spawn(start_servers(pki.clone())))??;
    let cert = sides.run_client(pki.cert("bench", "client"));
    Ok(Client { cert, servers })
}

pub fn run(scale: Scale, only: Option<&str>) -> Result<Report> {
    let wanted = |group: &str| only.is_none_or(|p| group.starts_with(p) || p.starts_with(group));
    let sides = Sides::new()?;
    let mut client = setup(&sides)?;
    let runs = scale.runs();
    let mut figures = Vec::new();
    let pool = HbonePool::new(PoolConfig::default());

    if wanted("throughput_1conn") {
        let bytes = scale.pick(512, 2048) * MIB;
        let (mut m, mut b) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            sides.run_client(async {
                let streams = client.mesh_streams(&pool, 1).await?;
                m.push(client.bulk(streams, bytes).await?);
                let streams = client.tcp_streams(1).await?;
                b.push(client.bulk(streams, bytes).await?);
                anyhow::Ok(())
            })?;
        }
        figures.push(Figure::new(
            "throughput_1conn",
            "Gbit/s",
            median(m),
            Some(median(b)),
            true,
        ));
    }

    if wanted("throughput_8conn") {
        let per_conn = scale.pick(64, 256) * MIB;
        let (mut m, mut b) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            sides.run_client(async {
                let streams = client.mesh_streams(&eight_conn_pool(), 8).await?;
                m.push(client.bulk(streams, per_conn).await?);
                let streams = client.tcp_streams(8).await?;
                b.push(client.bulk(streams, per_conn).await?);
                anyhow::Ok(())
            })?;
        }
        figures.push(Figure::new(
            "throughput_8conn",
            "Gbit/s",
            median(m),
            Some(median(b)),
            true,
        ));
    }

    if wanted("latency") {
        let iterations = scale.pick(5_000, 20_000);
        let (mut m, mut b) = (LatencyRuns::default(), LatencyRuns::default());
        sides.run_client(async {
            let mut mesh = pool
                .connect(client.request(client.servers.mesh_echo))
                .await?;
            let mut tcp = Client::tcp(client.servers.tcp_echo).await?;
            for _ in 0..runs {
                m.record(&mut mesh, 500, iterations).await?;
                b.record(&mut tcp, 500, iterations).await?;
            }
            anyhow::Ok(())
        })?;
        figures.extend(LatencyRuns::figures(m, b));
    }

    if wanted("connect_rate") {
        let duration = Duration::from_millis(scale.pick(500, 2000));
        let (mut tcp_rates, mut pooled, mut handshake) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            sides.run_client(async {
                let addr = client.servers.tcp_echo;
                tcp_rates.push(
                    rate(16, duration, move || async move {
                        one_request(Client::tcp(addr).await?).await
                    })
                    .await?,
                );

                let request = client.request(client.servers.mesh_echo);
                let (p, r) = (pool.clone(), request.clone());
                pooled.push(
                    rate(16, duration, move || {
                        let (pool, request) = (p.clone(), r.clone());
                        async move {
                            one_request(pool.connect(request).await.map_err(std::io::Error::other)?)
                                .await
                        }
                    })
                    .await?,
                );
                handshake.push(
                    rate(16, duration, move || {
                        let request = request.clone();
                        async move {
                            // A fresh pool per connection: every one pays the mTLS handshake.
                            let pool = HbonePool::new(PoolConfig::default());
                            one_request(pool.connect(request).await.map_err(std::io::Error::other)?)
                                .await
                        }
                    })
                    .await?,
                );
                anyhow::Ok(())
            })?;
        }
        let tcp = median(tcp_rates);
        figures.push(Figure::new(
            "connect_rate_pooled",
            "conn/s",
            median(pooled),
            Some(tcp),
            true,
        ));
        figures.push(Figure::new(
            "connect_rate_handshake",
            "conn/s",
            median(handshake),
            Some(tcp),
            true,
        ));
    }

    if wanted("peak_rss") {
        let mesh_rss = child_rss("mesh", scale)?;
        let tcp_rss = child_rss("tcp", scale)?;
        figures.push(Figure::new(
            "peak_rss",
            "MiB",
            mesh_rss,
            Some(tcp_rss),
            false,
        ));
    }

    Ok(Report {
        scenario: "hbone".into(),
        figures,
    })
}

/// Runs `meshbench hbone --rss-child <kind>` and returns its VmHWM in MiB.
fn child_rss(kind: &str, scale: Scale) -> Result<f64> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["hbone", "--rss-child", kind]);
    if scale == Scale::Quick {
        cmd.arg("--quick");
    }
    let out = cmd.output()?;
    ensure!(
        out.status.success(),
        "RSS child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(kib / 1024.0)
}

/// Body of the RSS child: only the 8-connection run, then VmHWM in KiB.
pub fn rss_child(kind: &str, scale: Scale) -> Result<u64> {
    let per_conn = scale.pick(64, 256) * MIB;
    let sides = Sides::new()?;
    let mut client = setup(&sides)?;
    sides.run_client(async {
        match kind {
            "mesh" => {
                let streams = client.mesh_streams(&eight_conn_pool(), 8).await?;
                client.bulk(streams, per_conn).await?;
            }
            "tcp" => {
                let streams = client.tcp_streams(8).await?;
                client.bulk(streams, per_conn).await?;
            }
            other => anyhow::bail!("unknown RSS child kind {other:?}"),
        }
        anyhow::Ok(())
    })?;
    vm_hwm_kib()
}

fn vm_hwm_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmHWM line")?
        .parse()?;
    Ok(kib)
}
