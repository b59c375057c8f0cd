//! ztunnel's own HTTP endpoints, in its own network namespace (never a
//! pod's): metrics, readiness, and the admin server on loopback only.
//! All bind with SO_REUSEPORT so a new ztunnel can start beside the old
//! one during an upgrade.

use std::net::SocketAddr;
use std::sync::Arc;

use amesh_core::admin::{self, AdminHandler, Readiness};
use amesh_core::metrics::Metrics;
use anyhow::{Context, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub metrics: SocketAddr,
    pub readiness: SocketAddr,
    pub admin: SocketAddr,
}

fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = (|| {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(128)?;
        admin::listener_from_std(socket.into())
    })();
    listener.with_context(|| format!("binding the {what} server to {addr}"))
}

/// Binds all three (so a busy port fails startup) and serves them until
/// `cancel`. Must run inside the runtime that serves them.
pub fn start(
    addresses: Addresses,
    metrics: Metrics,
    ready: watch::Receiver<Readiness>,
    handler: Arc<dyn AdminHandler>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    // The admin server changes log levels and shows the config: never
    // reachable from the network (or from pods, which have their own netns).
    if !addresses.admin.ip().is_loopback() {
        bail!(
            "the admin server must bind a loopback address, not {}",
            addresses.admin
        );
    }
    let metrics_l = bind(addresses.metrics, "metrics")?;
    let ready_l = bind(addresses.readiness, "readiness")?;
    let admin_l = bind(addresses.admin, "admin")?;
    tokio::spawn(admin::serve_metrics(metrics_l, metrics, cancel.clone()));
    tokio::spawn(admin::serve_readiness(ready_l, ready, cancel.clone()));
    tokio::spawn(admin::serve_admin(admin_l, handler, cancel.clone()));
    Ok(())
}
