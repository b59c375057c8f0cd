//! Small HTTP/1 servers for operations: metrics scrape, readiness probe and
//! the operator's admin endpoint (Istio's 15020, 15021 and 15000).
//!
//! Each `serve_*` takes a listener the caller bound, so the caller picks the
//! address and the network namespace (ztunnel binds the admin port to
//! localhost only), and serves until its `CancellationToken` is cancelled;
//! then it stops accepting, lets in-flight responses finish briefly and
//! returns. Every response has a status with its reason phrase and a short
//! body; no request makes a server panic.

mod handler;
mod metrics;
mod query;
mod readiness;
mod server;

pub use handler::{AdminHandler, serve_admin};
pub use metrics::serve_metrics;
pub use readiness::{Readiness, serve_readiness};

/// Turns a bound `std` listener into a tokio one (sets it non-blocking).
/// Must be called within a tokio runtime.
pub fn listener_from_std(
    listener: std::net::TcpListener,
) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

#[cfg(test)]
mod tests;
