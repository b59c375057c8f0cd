//! testapp: the workload the end-to-end tests and benchmarks put in pods.
//!
//!     testapp --name NAME [--echo-port P] [--http-port P] [--whoami-port P]
//!
//! - echo: every byte back; after the client's FIN the rest is written, then
//!   our FIN (half-close aware, so tests can stream then read to EOF).
//! - whoami: one line `server=<NAME> peer=<ip>:<port>` then FIN. The peer is
//!   the address the app sees, which is what source-IP tests check.
//! - http: HTTP/1.1 and h2c (prior knowledge) on one port; every request gets
//!   200 with the same line as whoami as its body.
//!
//! Listens on 0.0.0.0 and [::], logs to stderr, prints nothing to stdout, exits on
//! SIGTERM or SIGINT.

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, warn};

/// Large enough that the echo path is not the bottleneck of throughput tests.
const ECHO_BUFFER: usize = 256 * 1024;
/// How long whoami waits for the client's FIN after sending its line.
const WHOAMI_LINGER: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(about = "amesh test workload: echo, whoami and HTTP servers")]
struct Args {
    /// Name reported in whoami lines and HTTP bodies.
    #[arg(long)]
    name: String,
    /// TCP echo port.
    #[arg(long)]
    echo_port: Option<u16>,
    /// HTTP/1.1 + h2c port.
    #[arg(long)]
    http_port: Option<u16>,
    /// whoami port.
    #[arg(long)]
    whoami_port: Option<u16>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // stderr goes to a log file that tests read and grep.
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.echo_port.is_none() && args.http_port.is_none() && args.whoami_port.is_none() {
        bail!("give at least one of --echo-port, --http-port, --whoami-port");
    }
    let name: Arc<str> = Arc::from(args.name.as_str());

    // Bind everything before serving so a port that is listening means the
    // app is fully up (the harness waits on that).
    if let Some(port) = args.echo_port {
        for listener in bind(port)? {
            tokio::spawn(accept_loop(listener, "echo", |stream, _peer| echo(stream)));
        }
    }
    if let Some(port) = args.whoami_port {
        for listener in bind(port)? {
            let name = name.clone();
            tokio::spawn(accept_loop(listener, "whoami", move |stream, peer| {
                whoami(stream, peer, name.clone())
            }));
        }
    }
    if let Some(port) = args.http_port {
        for listener in bind(port)? {
            let name = name.clone();
            tokio::spawn(accept_loop(listener, "http", move |stream, peer| {
                http(stream, peer, name.clone())
            }));
        }
    }
    info!(name = %name, echo = ?args.echo_port, http = ?args.http_port, whoami = ?args.whoami_port, "testapp listening");

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM, exiting"),
        _ = int.recv() => info!("SIGINT, exiting"),
    }
    Ok(())
}

/// `0.0.0.0:port`, and `[::]:port` (IPv6 only, so IPv4 peers keep their
/// plain addresses) where the netns has IPv6.
fn bind(port: u16) -> Result<Vec<TcpListener>> {
    let mut listeners = vec![listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?];
    if let Ok(v6) = listen(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        listeners.push(v6);
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .with_context(|| format!("socket for {addr}"))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("bind {addr}"))?;
    socket
        .listen(1024)
        .with_context(|| format!("listen {addr}"))?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// Accepts forever, one task per connection. Accept errors (e.g. EMFILE under
/// a connection-rate benchmark) are logged and retried after a short pause
/// rather than ending the server.
async fn accept_loop<F, Fut>(listener: TcpListener, kind: &'static str, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let conn = handle(stream, peer);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(kind, %peer, error = %e, "connection ended with error");
                    }
                });
            }
            Err(e) => {
                warn!(kind, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(stream: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(ECHO_BUFFER, read);
    tokio::io::copy_buf(&mut read, &mut write).await?;
    // Client sent FIN and everything it sent has been written back.
    write.shutdown().await
}

async fn whoami(mut stream: TcpStream, peer: SocketAddr, name: Arc<str>) -> std::io::Result<()> {
    stream
        .write_all(identity_line(&name, peer).as_bytes())
        .await?;
    stream.shutdown().await?;
    // Closing with unread client bytes would send RST and could destroy the
    // line in flight; wait (bounded) for the client's FIN instead.
    let mut sink = [0u8; 4096];
    let drain = async {
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(WHOAMI_LINGER, drain).await;
    Ok(())
}

async fn http(stream: TcpStream, peer: SocketAddr, name: Arc<str>) -> std::io::Result<()> {
    let service = service_fn(move |_req: Request<Incoming>| {
        let body = identity_line(&name, peer);
        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
    });
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(std::io::Error::other)
}

fn identity_line(name: &str, peer: SocketAddr) -> String {
    format!("server={name} peer={}:{}\n", peer.ip(), peer.port())
}
