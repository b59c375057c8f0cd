//! The accept loop shared by a pod's plain TCP listeners.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::pod::Pod;
use crate::proxy::Proxy;

/// Accepts until the pod stops accepting (drain) or leaves, running `handle`
/// for each connection in its own task, tracked for draining and ended when
/// the pod leaves. The listener closes on return.
pub async fn accept_loop<F, Fut>(proxy: &Proxy, pod: &Pod, listener: TcpListener, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = pod.stop_accepting.clone();
    let cancel = pod.cancel.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let conn = handle(stream, peer);
                let cancel = cancel.clone();
                proxy.connections.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
            Err(err) => {
                // Out of fds or similar: back off instead of spinning.
                warn!(%err, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}
