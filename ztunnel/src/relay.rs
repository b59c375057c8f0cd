//! Copying bytes both ways between a client and its upstream, with TCP's
//! close semantics: EOF on one side half-closes the other; a reset on one
//! side resets the other.

use std::io;

use amesh_core::hbone::H2Stream;
use tokio::io::copy_bidirectional;
use tokio::net::TcpStream;

use crate::busy_poll::tracked;
use crate::metered::Metered;
use crate::socket::reset_on_close;

/// What one proxied connection moved, from its client's point of view.
#[derive(Debug, Default)]
pub struct Relayed {
    /// Bytes from the connection's client side to its upstream.
    pub sent: u64,
    /// Bytes from the upstream back to the client.
    pub received: u64,
    pub error: Option<io::Error>,
}

/// TCP (the client) ↔ HBONE tunnel, without user-space copies: outbound.
pub async fn tcp_to_tunnel(mut tcp: Metered, mut tunnel: H2Stream) -> Relayed {
    let outcome = tracked(amesh_core::hbone::relay(&mut tcp, &mut tunnel)).await;
    if outcome.error.as_ref().is_some_and(is_reset) {
        reset_on_close(tcp.tcp());
        tunnel.reset();
    }
    Relayed {
        sent: outcome.to_tunnel,
        received: outcome.from_tunnel,
        error: outcome.error,
    }
}

/// HBONE tunnel (the client) ↔ TCP to the app: inbound.
pub async fn tunnel_to_tcp(mut tunnel: H2Stream, mut app: Metered) -> Relayed {
    let outcome = tracked(amesh_core::hbone::relay(&mut app, &mut tunnel)).await;
    if outcome.error.as_ref().is_some_and(is_reset) {
        reset_on_close(app.tcp());
        tunnel.reset();
    }
    Relayed {
        sent: outcome.from_tunnel,
        received: outcome.to_tunnel,
        error: outcome.error,
    }
}

/// TCP (the client) ↔ TCP (passthrough, inbound plaintext).
pub async fn tcp_to_tcp(mut client: Metered, mut upstream: TcpStream) -> Relayed {
    match tracked(copy_bidirectional(&mut client, &mut upstream)).await {
        Ok((sent, received)) => Relayed {
            sent,
            received,
            error: None,
        },
        Err(err) => {
            if is_reset(&err) {
                reset_on_close(client.tcp());
                reset_on_close(&upstream);
            }
            // What reached each side before the error.
            Relayed {
                sent: client.read_bytes(),
                received: client.written_bytes(),
                error: Some(err),
            }
        }
    }
}

fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}
