//! Inbound HBONE (port 15008 in each pod): check the target, connect to the
//! app inside the pod keeping the client's IP, relay.

use std::sync::Arc;
use std::time::Instant;

use amesh_core::hbone::{ConnectHandler, InboundConnect, Rejection, Responder};
use tracing::warn;

use crate::access_log::InboundEnd;
use crate::metered::{Faces, Metered};
use crate::pod::Pod;
use crate::proxy::Proxy;
use crate::relay;
use crate::relay::Relayed;
use crate::socket::{self, Reach, Upstream};
use crate::{access_log, authz, telemetry};

#[derive(Debug)]
pub struct InboundHandler {
    proxy: Arc<Proxy>,
    pod: Arc<Pod>,
}

impl InboundHandler {
    pub fn new(proxy: Arc<Proxy>, pod: Arc<Pod>) -> Self {
        Self { proxy, pod }
    }
}

impl ConnectHandler for InboundHandler {
    async fn handle(&self, request: InboundConnect, responder: Responder) {
        let start = Instant::now();
        let (proxy, pod) = (&self.proxy, &self.pod);
        let target = request.target;
        let bad_target = if proxy.settings.ports.is_ztunnel_port(target.port()) {
            Some("the target is a ztunnel port")
        } else if !pod.owns_ip(proxy, target.ip(), request.local_addr.ip()) {
            Some("the target is not this pod")
        } else {
            None
        };
        if let Some(reason) = bad_target {
            responder.reject(Rejection::BadTarget);
            warn!(
                pod = %pod.name(), src.addr = %request.peer_addr, src.identity = %request.peer,
                dst.addr = %target, reason, "inbound HBONE refused: 400"
            );
            return;
        }
        let snapshot = proxy.snapshot();
        let src_ip = request.peer_addr.ip();
        let service = telemetry::service_for(&snapshot, &pod.info.uid, target.port())
            .map(|s| s.hostname.clone());
        let log_conn = || access_log::Inbound {
            pod,
            peer: request.peer_addr,
            peer_identity: Some(&request.peer),
            peer_workload: telemetry::workload_name(&snapshot, src_ip),
            target,
            service: service.as_deref(),
            start,
        };
        let Some(audited) = authz::admit_or_refuse(proxy, &snapshot, pod, log_conn()) else {
            responder.reject(Rejection::Denied);
            return;
        };
        // Registered before the app sees it: a policy change from here on
        // closes it.
        let live = proxy
            .live
            .register(&pod.info, src_ip, Some(&request.peer), target);
        // The tunnel's TCP source is the client pod's IP: the app sees it.
        let upstream = Upstream {
            dst: target,
            spoof_src: Some(request.peer_addr.ip()),
            reach: Reach::InPod,
            timeout: proxy.settings.connect_timeout,
        };
        let app = tokio::select! {
            _ = pod.cancel.cancelled() => return,
            app = socket::connect(&pod.netns, upstream) => app,
        };
        let app = match app {
            Ok(app) => app,
            Err(err) => {
                responder.reject(Rejection::TargetRefused);
                warn!(
                    pod = %pod.name(), src.addr = %request.peer_addr, src.identity = %request.peer,
                    dst.addr = %target, error = %err, "inbound HBONE: app refused: 503"
                );
                return;
            }
        };
        let tunnel = match responder.accept() {
            Ok(tunnel) => tunnel,
            Err(err) => {
                warn!(pod = %pod.name(), error = %err, "inbound HBONE: client went away");
                return;
            }
        };
        let labels =
            telemetry::inbound_labels(&snapshot, pod, src_ip, Some(&request.peer), target.port());
        let counters = proxy.metrics.tcp().open_connection(&labels);
        let app = Metered::new(app, counters, Faces::Server);
        let (relayed, revoked) = tokio::select! {
            _ = pod.cancel.cancelled() => return,
            _ = live.revoked() => (Relayed::default(), true),
            relayed = relay::tunnel_to_tcp(tunnel, app) => (relayed, false),
        };
        access_log::inbound(log_conn(), &relayed, &audited, InboundEnd::relayed(revoked));
    }
}
