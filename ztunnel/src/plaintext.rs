//! Inbound plaintext (port 15006 in each pod): TCP from outside the mesh,
//! proxied to the app keeping the client's IP. Policy on it comes with
//! PeerAuthentication.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::accept::accept_loop;
use crate::access_log;
use crate::pod::Pod;
use crate::proxy::Proxy;
use crate::relay;
use crate::socket::{self, Reach, Upstream};

pub async fn serve(proxy: Arc<Proxy>, pod: Arc<Pod>, listener: TcpListener) {
    accept_loop(&proxy, &pod, listener, |stream, peer| {
        handle(proxy.clone(), pod.clone(), stream, peer)
    })
    .await;
}

async fn handle(proxy: Arc<Proxy>, pod: Arc<Pod>, stream: TcpStream, peer: SocketAddr) {
    let start = Instant::now();
    let arrived_on = match stream.local_addr() {
        Ok(local) => local.ip(),
        Err(_) => return,
    };
    let target = match socket::original_dst(&stream) {
        Ok(dst) => dst,
        Err(err) => {
            warn!(pod = %pod.name(), src.addr = %peer, %err, "plaintext connection without an original destination: closed");
            return;
        }
    };
    if proxy.settings.ports.is_ztunnel_port(target.port())
        || !pod.owns_ip(&proxy, target.ip(), arrived_on)
    {
        warn!(pod = %pod.name(), src.addr = %peer, dst.addr = %target, "plaintext connection to a ztunnel port or another address: closed");
        return;
    }
    let upstream = Upstream {
        dst: target,
        spoof_src: Some(peer.ip()),
        reach: Reach::InPod,
        timeout: proxy.settings.connect_timeout,
    };
    let app = match socket::connect(&pod.netns, upstream).await {
        Ok(app) => app,
        Err(err) => {
            socket::reset_on_close(&stream);
            warn!(pod = %pod.name(), src.addr = %peer, dst.addr = %target, error = %err, "plaintext inbound: app refused: client reset");
            return;
        }
    };
    let relayed = relay::tcp_to_tcp(stream, app).await;
    access_log::inbound(
        access_log::Inbound {
            pod: &pod,
            peer,
            peer_identity: None,
            target,
            start,
        },
        &relayed,
    );
}
