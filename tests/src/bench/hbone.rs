//! Scenario `hbone`: one HBONE client/server pair in-process on loopback
//! against direct TCP. The mesh path is one mTLS + HTTP/2 connection: the
//! bench writes into the client's CONNECT stream and reads from the stream
//! the server's handler accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amesh_core::hbone::{HbonePool, PoolConfig, ServerConfig};
use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::workload::{bulk_gbps, one_request, ping_pong, rate};
use super::{median, percentile, Figure, Report, Scale};
use crate::fixtures::{start_server, ChannelHandler, EchoHandler, Pki, TestServer, LOCALHOST};

const MIB: u64 = 1024 * 1024;

struct Mesh {
    pki: Pki,
    client: Arc<amesh_core::certs::WorkloadCertificate>,
    server_cert: Arc<amesh_core::certs::WorkloadCertificate>,
    sink: TestServer,
    accepted: mpsc::UnboundedReceiver<(amesh_core::hbone::InboundConnect, amesh_core::hbone::H2Stream)>,
    echo: TestServer,
    pool: HbonePool,
}

impl Mesh {
    async fn new() -> Result<Self> {
        let pki = Pki::new();
        let client = pki.cert("bench", "client").await;
        let server_cert = pki.cert("bench", "server").await;
        let (handler, accepted) = ChannelHandler::new();
        let sink = start_server(server_cert.clone(), handler, ServerConfig::default()).await;
        let echo = start_server(server_cert.clone(), EchoHandler, ServerConfig::default()).await;
        Ok(Self {
            pki,
            client,
            server_cert,
            sink,
            accepted,
            echo,
            pool: HbonePool::new(PoolConfig::default()),
        })
    }

    /// Opens a tunnel to the sink server; returns (client side, server side).
    async fn pair(&mut self, pool: &HbonePool) -> Result<(amesh_core::hbone::H2Stream, amesh_core::hbone::H2Stream)> {
        let target: SocketAddr = (LOCALHOST, 9).into();
        let client = pool.connect(self.sink.request(self.client.clone(), target)).await?;
        let (_, server) = self.accepted.recv().await.context("server saw no stream")?;
        Ok((client, server))
    }
}

struct Tcp {
    sink: TcpListener,
    echo_addr: SocketAddr,
}

impl Tcp {
    async fn new() -> Result<Self> {
        let sink = TcpListener::bind((LOCALHOST, 0)).await?;
        let echo = TcpListener::bind((LOCALHOST, 0)).await?;
        let echo_addr = echo.local_addr()?;
        tokio::spawn(async move {
            while let Ok((conn, _)) = echo.accept().await {
                let _ = conn.set_nodelay(true);
                tokio::spawn(async move {
                    let (mut rd, mut wr) = conn.into_split();
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
        Ok(Self { sink, echo_addr })
    }

    async fn pair(&self) -> Result<(TcpStream, TcpStream)> {
        let client = TcpStream::connect(self.sink.local_addr()?).await?;
        let (server, _) = self.sink.accept().await?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        Ok((client, server))
    }
}

pub async fn run(scale: Scale) -> Result<Report> {
    let mut mesh = Mesh::new().await?;
    let tcp = Tcp::new().await?;
    let runs = scale.runs();
    let mut figures = Vec::new();

    // Bulk throughput, one connection.
    let bytes = scale.pick(512, 2048) * MIB;
    let (mut m, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (client, server) = mesh.pair(&mesh.pool.clone()).await?;
        m.push(bulk_gbps(client, server, bytes).await?);
        let (client, server) = tcp.pair().await?;
        b.push(bulk_gbps(client, server, bytes).await?);
    }
    figures.push(Figure::new("throughput_1conn", "Gbit/s", median(m), Some(median(b)), true));

    // Bulk throughput, 8 connections at once.
    let (m, b) = eight_connections(&mut mesh, &tcp, scale).await?;
    figures.push(Figure::new("throughput_8conn", "Gbit/s", m, Some(b), true));

    // 1-byte request/response on a kept-open connection.
    let iterations = scale.pick(5_000, 20_000);
    let (mut m50, mut m99, mut b50, mut b99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let target: SocketAddr = (LOCALHOST, 7).into();
    let mut mesh_stream = mesh.pool.connect(mesh.echo.request(mesh.client.clone(), target)).await?;
    let mut tcp_stream = TcpStream::connect(tcp.echo_addr).await?;
    tcp_stream.set_nodelay(true)?;
    for _ in 0..runs {
        let mut s = ping_pong(&mut mesh_stream, 500, iterations).await?;
        s.sort_by(f64::total_cmp);
        m50.push(percentile(&s, 50.0));
        m99.push(percentile(&s, 99.0));
        let mut s = ping_pong(&mut tcp_stream, 500, iterations).await?;
        s.sort_by(f64::total_cmp);
        b50.push(percentile(&s, 50.0));
        b99.push(percentile(&s, 99.0));
    }
    drop(mesh_stream);
    figures.push(Figure::new("latency_p50", "µs", median(m50), Some(median(b50)), false));
    figures.push(Figure::new("latency_p99", "µs", median(m99), Some(median(b99)), false));

    // New connections per second.
    let duration = Duration::from_millis(scale.pick(500, 2000));
    let tcp_rate = {
        let addr = tcp.echo_addr;
        let mut rates = Vec::new();
        for _ in 0..runs {
            rates.push(
                rate(16, duration, move || async move {
                    let conn = TcpStream::connect(addr).await?;
                    conn.set_nodelay(true)?;
                    one_request(conn).await
                })
                .await?,
            );
        }
        median(rates)
    };
    let pooled = {
        let pool = mesh.pool.clone();
        let request = mesh.echo.request(mesh.client.clone(), target);
        let mut rates = Vec::new();
        for _ in 0..runs {
            let pool = pool.clone();
            let request = request.clone();
            rates.push(
                rate(16, duration, move || {
                    let pool = pool.clone();
                    let request = request.clone();
                    async move {
                        let stream = pool.connect(request).await.map_err(std::io::Error::other)?;
                        one_request(stream).await
                    }
                })
                .await?,
            );
        }
        median(rates)
    };
    figures.push(Figure::new("connect_rate_pooled", "conn/s", pooled, Some(tcp_rate), true));
    let handshake = {
        let request = mesh.echo.request(mesh.client.clone(), target);
        let mut rates = Vec::new();
        for _ in 0..runs {
            let request = request.clone();
            rates.push(
                rate(8, duration, move || {
                    let request = request.clone();
                    async move {
                        // A fresh pool per connection: every op pays the mTLS handshake.
                        let pool = HbonePool::new(PoolConfig::default());
                        let stream = pool.connect(request).await.map_err(std::io::Error::other)?;
                        one_request(stream).await
                    }
                })
                .await?,
            );
        }
        median(rates)
    };
    figures.push(Figure::new("connect_rate_handshake", "conn/s", handshake, Some(tcp_rate), true));

    // Peak RSS of a child doing only the 8-connection run.
    let mesh_rss = child_rss("mesh", scale).await?;
    let tcp_rss = child_rss("tcp", scale).await?;
    figures.push(Figure::new("peak_rss", "MiB", mesh_rss, Some(tcp_rss), false));

    drop(mesh.pki);
    let _ = mesh.server_cert;
    Ok(Report {
        scenario: "hbone".into(),
        figures,
    })
}

/// (mesh, baseline) aggregate Gbit/s over 8 parallel connections.
async fn eight_connections(mesh: &mut Mesh, tcp: &Tcp, scale: Scale) -> Result<(f64, f64)> {
    let per_conn = scale.pick(128, 256) * MIB;
    // One stream per connection: eight separate mTLS connections.
    let pool = HbonePool::new(PoolConfig {
        max_streams_per_conn: 1,
        ..PoolConfig::default()
    });
    let (mut m, mut b) = (Vec::new(), Vec::new());
    for _ in 0..scale.runs() {
        let mut pairs = Vec::new();
        for _ in 0..8 {
            pairs.push(mesh.pair(&pool).await?);
        }
        m.push(parallel_gbps(pairs, per_conn).await?);
        let mut pairs = Vec::new();
        for _ in 0..8 {
            pairs.push(tcp.pair().await?);
        }
        b.push(parallel_gbps(pairs, per_conn).await?);
    }
    Ok((median(m), median(b)))
}

async fn parallel_gbps<S>(pairs: Vec<(S, S)>, per_conn: u64) -> Result<f64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let start = std::time::Instant::now();
    let count = pairs.len() as u64;
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|(client, server)| tokio::spawn(bulk_gbps(client, server, per_conn)))
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(super::workload::gbps(per_conn * count, start.elapsed().as_secs_f64()))
}

/// Runs `meshbench hbone --rss-child <kind>` and returns its VmHWM in MiB.
async fn child_rss(kind: &str, scale: Scale) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["hbone", "--rss-child", kind]);
    if scale == Scale::Quick {
        cmd.arg("--quick");
    }
    let out = cmd.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "RSS child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(kib / 1024.0)
}

/// Body of the RSS child: only the 8-connection run, then VmHWM in KiB.
pub async fn rss_child(kind: &str, scale: Scale) -> Result<u64> {
    let per_conn = scale.pick(128, 256) * MIB;
    match kind {
        "mesh" => {
            let mut mesh = Mesh::new().await?;
            let pool = HbonePool::new(PoolConfig {
                max_streams_per_conn: 1,
                ..PoolConfig::default()
            });
            let mut pairs = Vec::new();
            for _ in 0..8 {
                pairs.push(mesh.pair(&pool).await?);
            }
            parallel_gbps(pairs, per_conn).await?;
        }
        "tcp" => {
            let tcp = Tcp::new().await?;
            let mut pairs = Vec::new();
            for _ in 0..8 {
                pairs.push(tcp.pair().await?);
            }
            parallel_gbps(pairs, per_conn).await?;
        }
        other => anyhow::bail!("unknown RSS child kind {other:?}"),
    }
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
