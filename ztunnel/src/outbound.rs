//! Outbound: connections the pod's apps open, captured on port 15001.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use amesh_core::hbone::{DialFuture, Dialer, HbonePool, HboneRequest};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::accept::accept_loop;
use crate::access_log;
use crate::metered::{Faces, Metered};
use crate::pod::Pod;
use crate::proxy::Proxy;
use crate::relay;
use crate::route::{Route, route};
use crate::socket::{self, Reach, Upstream};
use crate::telemetry;

pub async fn serve(proxy: Arc<Proxy>, pod: Arc<Pod>, listener: TcpListener, pool: HbonePool) {
    accept_loop(&proxy, &pod, listener, |stream, peer| {
        handle(proxy.clone(), pod.clone(), pool.clone(), stream, peer)
    })
    .await;
}

async fn handle(
    proxy: Arc<Proxy>,
    pod: Arc<Pod>,
    pool: HbonePool,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let start = Instant::now();
    let dst = match socket::original_dst(&stream) {
        Ok(dst) => dst,
        Err(err) => {
            warn!(pod = %pod.name(), src.addr = %peer, %err, "outbound connection without an original destination: closed");
            return;
        }
    };
    if dst.port() == proxy.settings.ports.outbound && pod.owns_ip(&proxy, dst.ip(), dst.ip()) {
        warn!(pod = %pod.name(), src.addr = %peer, "connection addressed to ztunnel's own outbound port: closed");
        return;
    }
    let snapshot = proxy.snapshot();
    let decision = route(&snapshot, dst, proxy.settings.ports.inbound);
    match decision {
        Route::Hbone {
            hbone_addr,
            target,
            expected,
            service,
            via_waypoint,
        } => {
            let cached = pod.cert.current();
            let source = match cached {
                Some(cert) => Ok(cert),
                None => proxy.certs.get(&pod.identity).await,
            };
            let source = match source {
                Ok(cert) => cert,
                Err(err) => {
                    warn!(pod = %pod.name(), %err, "no certificate: connection reset");
                    socket::reset_on_close(&stream);
                    return;
                }
            };
            let request = HboneRequest {
                source,
                source_ip: peer.ip(),
                hbone_addr,
                expected: expected.clone(),
                target,
                dialer: Some(Arc::new(PodDialer {
                    pod: pod.clone(),
                    proxy: proxy.clone(),
                })),
            };
            match pool.connect(request).await {
                Ok(tunnel) => {
                    let labels = telemetry::outbound_labels(
                        &snapshot,
                        &pod,
                        target.ip(),
                        service.as_deref(),
                        true,
                    );
                    let counters = proxy.metrics.tcp().open_connection(&labels);
                    let client = Metered::new(stream, counters, Faces::Client);
                    let relayed = relay::tcp_to_tunnel(client, tunnel).await;
                    access_log::outbound(
                        access_log::Outbound {
                            pod: &pod,
                            peer,
                            dst: target,
                            dst_identity: Some(&expected),
                            dst_workload: telemetry::workload_name(&snapshot, target.ip()),
                            service: service.as_deref(),
                            via_waypoint,
                            start,
                        },
                        &relayed,
                    );
                }
                Err(err) => {
                    socket::reset_on_close(&stream);
                    warn!(
                        pod = %pod.name(), src.addr = %peer, dst.addr = %target, dst.hbone_addr = %hbone_addr,
                        dst.identity = %expected, dst.service = service.as_deref().unwrap_or(""), error = %err,
                        "outbound HBONE connection failed: client reset"
                    );
                }
            }
        }
        Route::Passthrough {
            dst: target,
            service,
        } => {
            let upstream = Upstream {
                dst: target,
                spoof_src: None,
                reach: Reach::Network,
                timeout: proxy.settings.connect_timeout,
            };
            match socket::connect(&pod.netns, upstream).await {
                Ok(upstream) => {
                    let labels = telemetry::outbound_labels(
                        &snapshot,
                        &pod,
                        target.ip(),
                        service.as_deref(),
                        false,
                    );
                    let counters = proxy.metrics.tcp().open_connection(&labels);
                    let client = Metered::new(stream, counters, Faces::Client);
                    let relayed = relay::tcp_to_tcp(client, upstream).await;
                    access_log::outbound(
                        access_log::Outbound {
                            pod: &pod,
                            peer,
                            dst: target,
                            dst_identity: None,
                            dst_workload: telemetry::workload_name(&snapshot, target.ip()),
                            service: service.as_deref(),
                            via_waypoint: false,
                            start,
                        },
                        &relayed,
                    );
                }
                Err(err) => {
                    socket::reset_on_close(&stream);
                    warn!(pod = %pod.name(), src.addr = %peer, dst.addr = %target, error = %err, "passthrough connect failed: client reset");
                }
            }
        }
        Route::Refuse(reason) => {
            socket::reset_on_close(&stream);
            warn!(pod = %pod.name(), src.addr = %peer, dst.addr = %dst, reason, "outbound connection refused");
        }
    }
}

/// Dials HBONE connections from inside the source pod's network namespace,
/// so tunnels leave from the pod's own IP.
#[derive(Debug)]
struct PodDialer {
    pod: Arc<Pod>,
    proxy: Arc<Proxy>,
}

impl Dialer for PodDialer {
    fn dial(&self, dst: SocketAddr) -> DialFuture<'_> {
        Box::pin(socket::connect(
            &self.pod.netns,
            Upstream {
                dst,
                spoof_src: None,
                reach: Reach::Network,
                timeout: self.proxy.settings.connect_timeout,
            },
        ))
    }
}
