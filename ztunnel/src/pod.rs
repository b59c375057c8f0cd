//! Enrolled pods: each gets its listeners (outbound capture, inbound
//! plaintext, inbound HBONE) inside its own network namespace.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amesh_core::Identity;
use amesh_core::certs::CertWatch;
use amesh_core::hbone::{DrainSignal, HboneServer, ServerConfig, drain_channel};
use amesh_core::metrics::Metrics;
use amesh_core::tls::ServerConfigBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::inbound::InboundHandler;
use crate::netns::Netns;
use crate::proxy::Proxy;
use crate::socket::Reach;
use crate::workers::Worker;
use crate::{outbound, plaintext, socket};

/// Bound on obtaining a pod's certificate before its listeners open.
const CERT_TIMEOUT: Duration = Duration::from_secs(10);

/// What ZDS tells us about a pod.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug)]
pub struct Pod {
    pub info: PodInfo,
    qualified_name: String,
    pub identity: Identity,
    pub netns: Netns,
    /// The pod's certificate as renewals replace it (no lock per connection).
    pub cert: CertWatch,
    /// Cancelled when the pod leaves: ends its listeners and connections.
    pub cancel: CancellationToken,
    /// Cancelled to close the pod's listeners but let its connections
    /// finish (shutdown drain); a child of `cancel`.
    pub stop_accepting: CancellationToken,
}

impl Pod {
    /// Whether `ip` is this pod's: it is in the config, or it is the address
    /// a connection to this pod's namespace arrived on.
    pub fn owns_ip(&self, proxy: &Proxy, ip: IpAddr, arrived_on: IpAddr) -> bool {
        ip == arrived_on
            || proxy
                .snapshot()
                .workload_by_uid(&self.info.uid)
                .is_some_and(|w| w.ips.contains(&ip))
    }

    /// `<namespace>/<name>`, for logs.
    pub fn name(&self) -> &str {
        &self.qualified_name
    }
}

struct Entry {
    pod: Arc<Pod>,
    drain: DrainSignal,
}

/// The pods this ztunnel serves, keyed by uid.
pub struct PodRegistry {
    proxy: Arc<Proxy>,
    workers: Vec<Worker>,
    pods: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for PodRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRegistry")
            .field("pods", &self.uids())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("invalid identity: {0}")]
    Identity(#[from] amesh_core::identity::IdentityError),
    #[error("no certificate for {identity}: {reason}")]
    Certificate { identity: Identity, reason: String },
    #[error("cannot listen on port {port} in the pod's network namespace: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error("bad network namespace fd: {0}")]
    Netns(std::io::Error),
}

impl PodRegistry {
    pub fn new(proxy: Arc<Proxy>, workers: Vec<Worker>) -> Self {
        Self {
            proxy,
            workers,
            pods: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every pod served now, for the admin dump.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.lock().values().map(|e| e.pod.clone()).collect()
    }

    pub fn uids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// Starts serving a pod. Re-adding a pod already served from the same
    /// namespace (the node agent re-sends its snapshot) changes nothing.
    pub async fn add(&self, info: PodInfo, netns: std::os::fd::OwnedFd) -> Result<(), AddError> {
        let netns = Netns::new(netns).map_err(AddError::Netns)?;
        if let Some(existing) = self.lock().get(&info.uid)
            && existing.pod.netns.same_namespace(&netns)
        {
            return Ok(());
        }
        // Same uid, new namespace (the pod was recreated): start over.
        self.remove(&info.uid);

        let settings = &self.proxy.settings;
        if let Some(w) = self.proxy.snapshot().workload_by_uid(&info.uid)
            && !w.node.is_empty()
            && w.node != settings.node
        {
            warn!(uid = %info.uid, config_node = %w.node, node = %settings.node,
                "the node agent sent a pod the config places on another node; serving it");
        }
        let identity = Identity::new(
            &settings.trust_domain,
            &info.namespace,
            &info.service_account,
        )?;
        match tokio::time::timeout(CERT_TIMEOUT, self.proxy.certs.get(&identity)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Err(AddError::Certificate {
                    identity,
                    reason: err.to_string(),
                });
            }
            Err(_) => {
                return Err(AddError::Certificate {
                    identity,
                    reason: format!("not issued within {CERT_TIMEOUT:?}"),
                });
            }
        }

        let ports = settings.ports;
        let cancel = CancellationToken::new();
        let pod = Arc::new(Pod {
            qualified_name: format!("{}/{}", info.namespace, info.name),
            info: info.clone(),
            identity: identity.clone(),
            netns,
            cert: self.proxy.certs.watch(&identity),
            stop_accepting: cancel.child_token(),
            cancel,
        });
        let tls = ServerConfigBuilder::build(Arc::new(pod.cert.clone()));
        let handler = Arc::new(InboundHandler::new(self.proxy.clone(), pod.clone()));
        let (drain, drain_watch) = drain_channel();
        if let Err(err) = socket::enable_listener_handover(&pod.netns) {
            warn!(pod = %pod.name(), %err, "cannot enable listener handover: an upgrade may reset connections queued on this ztunnel's listeners");
        }
        // Each worker gets its own listeners (one SO_REUSEPORT group per
        // port): a connection is served where it was accepted. Bind them all
        // before starting any, so a failure leaves nothing half-served.
        let mut bound = Vec::with_capacity(self.workers.len());
        for _ in &self.workers {
            let listen = |port, reach| {
                socket::listen(&pod.netns, port, reach)
                    .map_err(|source| AddError::Listen { port, source })
            };
            bound.push((
                listen(ports.outbound, Reach::InPod)?,
                // Plaintext arrives from other pods.
                listen(ports.inbound_plaintext, Reach::Network)?,
                listen(ports.inbound, Reach::Network)?,
            ));
        }
        for (worker, (outbound_l, plaintext_l, hbone_l)) in self.workers.iter().zip(bound) {
            for listener in outbound_l {
                let (proxy, pod, pool) = (self.proxy.clone(), pod.clone(), worker.pool.clone());
                worker.handle.spawn(async move {
                    if let Some(listener) = register(listener) {
                        outbound::serve(proxy, pod, listener, pool).await;
                    }
                });
            }
            for listener in plaintext_l {
                let (proxy, pod) = (self.proxy.clone(), pod.clone());
                worker.handle.spawn(async move {
                    if let Some(listener) = register(listener) {
                        plaintext::serve(proxy, pod, listener).await;
                    }
                });
            }
            for listener in hbone_l {
                let server =
                    HboneServer::new(ServerConfig::default(), tls.clone(), handler.clone());
                let drain_watch = drain_watch.clone();
                // Tracked: a shutdown waits for its GOAWAY'd connections.
                worker
                    .handle
                    .spawn(self.proxy.connections.track_future(async move {
                        if let Some(listener) = register(listener) {
                            server.serve(listener, drain_watch).await;
                        }
                    }));
            }
        }

        tokio::spawn(report_cert_expiry(
            pod.cert.clone(),
            self.proxy.metrics.clone(),
            pod.cancel.clone(),
        ));
        info!(pod = %pod.name(), uid = %info.uid, %identity, "pod enrolled: listening on {}, {}, {}",
            ports.outbound, ports.inbound_plaintext, ports.inbound);
        self.lock().insert(info.uid, Entry { pod, drain });
        Ok(())
    }

    /// Stops serving a pod: closes its listeners and its connections.
    pub fn remove(&self, uid: &str) {
        let Some(entry) = self.lock().remove(uid) else {
            return;
        };
        entry.pod.cancel.cancel();
        entry.drain.drain();
        info!(pod = %entry.pod.name(), uid, "pod removed: listeners and connections closed");
        let identity = &entry.pod.identity;
        if !self.lock().values().any(|e| &e.pod.identity == identity) {
            self.proxy.certs.forget(identity);
            self.proxy.metrics.forget_cert(&identity.to_string());
        }
    }

    /// Removes every pod not in `keep` (after a ZDS snapshot).
    pub fn retain(&self, keep: &HashSet<String>) {
        let stale: Vec<String> = self
            .lock()
            .keys()
            .filter(|uid| !keep.contains(*uid))
            .cloned()
            .collect();
        for uid in stale {
            warn!(uid, "pod not in the node agent's snapshot: removing");
            self.remove(&uid);
        }
    }

    /// Shutdown, first step: every pod's listeners close (connections queued
    /// on them move to a new ztunnel's listeners in the same SO_REUSEPORT
    /// group, see [`socket::enable_listener_handover`]) and its HBONE
    /// connections get GOAWAY; open connections carry on.
    pub fn stop_accepting_all(&self) {
        for entry in self.lock().values() {
            entry.pod.stop_accepting.cancel();
            entry.drain.drain();
        }
    }

    pub fn remove_all(&self) {
        for uid in self.uids() {
            self.remove(&uid);
        }
    }
}

/// Keeps the certificate-expiry gauge current as renewals replace the
/// pod's certificate, until the pod leaves.
async fn report_cert_expiry(mut cert: CertWatch, metrics: Metrics, gone: CancellationToken) {
    loop {
        if let Some(current) = cert.current() {
            let not_after = current
                .not_after()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            metrics.set_cert_expiry(&current.identity().to_string(), not_after);
        }
        tokio::select! {
            _ = gone.cancelled() => return,
            changed = cert.changed() => if !changed { return },
        }
    }
}

/// Hands a listener to the worker runtime this runs on.
fn register(listener: std::net::TcpListener) -> Option<tokio::net::TcpListener> {
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => Some(listener),
        Err(err) => {
            warn!(%err, "cannot register a pod listener with its worker");
            None
        }
    }
}
