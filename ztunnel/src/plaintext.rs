//! Inbound plaintext (port 15006 in each pod): TCP from outside the mesh,
//! proxied to the app keeping the client's IP, unless the port's
//! PeerAuthentication is STRICT or an AuthorizationPolicy denies it (the
//! client then sees its connection closed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::accept::accept_loop;
use crate::access_log::InboundEnd;
use crate::metered::{Faces, Metered};
use crate::pod::Pod;
use crate::proxy::Proxy;
use crate::relay;
use crate::relay::Relayed;
use crate::socket::{self, Reach, Upstream};
use crate::{access_log, authz, telemetry};

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
    let snapshot = proxy.snapshot();
    let service =
        telemetry::service_for(&snapshot, &pod.info.uid, target.port()).map(|s| s.hostname.clone());
    let log_conn = || access_log::Inbound {
        pod: &pod,
        peer,
        peer_identity: None,
        peer_workload: telemetry::workload_name(&snapshot, peer.ip()),
        target,
        service: service.as_deref(),
        start,
    };
    // Refused: the client sees its connection closed.
    let Some(audited) = authz::admit_or_refuse(&proxy, &snapshot, &pod, log_conn()) else {
        return;
    };
    let live = proxy.live.register(&pod.info, peer.ip(), None, target);
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
    let labels = telemetry::inbound_labels(&snapshot, &pod, peer.ip(), None, target.port());
    let counters = proxy.metrics.tcp().open_connection(&labels);
    let client = Metered::new(stream, counters, Faces::Client);
    let (relayed, revoked) = tokio::select! {
        _ = live.revoked() => (Relayed::default(), true),
        relayed = relay::tcp_to_tcp(client, app) => (relayed, false),
    };
    access_log::inbound(log_conn(), &relayed, &audited, InboundEnd::relayed(revoked));
}
