//! HBONE: TCP tunnelled as HTTP/2 CONNECT streams over mutual TLS 1.3.
//!
//! - [`HbonePool`] opens CONNECT streams, multiplexed over pooled connections.
//! - [`HboneServer`] accepts them and hands each to a [`ConnectHandler`].
//! - [`H2Stream`] is one tunnel: `AsyncRead + AsyncWrite`, FIN ↔ END_STREAM,
//!   TCP RST ↔ RST_STREAM.

mod dial;
mod drain;
mod error;
mod headers;
mod pool;
mod relay;
mod server;
mod stream;
mod tuning;

pub use dial::{DefaultDialer, DialFuture, Dialer};
pub use drain::{DrainSignal, DrainWatch, drain_channel};
pub use error::HboneError;
pub use headers::{forwarded_for, parse_forwarded_for, traceparent};
pub use pool::{HbonePool, HboneRequest, PoolConfig, PoolKey, PoolStats};
pub use relay::{RelayOutcome, relay};
pub use server::{
    ConnectHandler, HboneServer, InboundConnect, Rejection, Responder, ServerConfig, ServerStats,
};
pub use stream::H2Stream;
pub use tuning::H2Config;

/// The port every HBONE endpoint listens on.
pub const HBONE_PORT: u16 = 15008;
