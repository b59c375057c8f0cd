//! What every proxied connection needs: settings, the current config,
//! and certificates.

use std::sync::Arc;
use std::time::Duration;

use amesh_core::certs::CertStore;
use amesh_core::config::ConfigSnapshot;
use amesh_core::metrics::Metrics;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::live::LiveConnections;

/// The ports ztunnel listens on inside every enrolled pod.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub outbound: u16,
    pub inbound_plaintext: u16,
    pub inbound: u16,
}

/// Istio's admin, metrics and readiness ports: never valid tunnel targets.
const RESERVED: [u16; 3] = [15000, 15020, 15021];

impl Ports {
    /// A tunnel may not target ztunnel itself (it would loop or expose it).
    pub fn is_ztunnel_port(&self, port: u16) -> bool {
        port == self.outbound
            || port == self.inbound_plaintext
            || port == self.inbound
            || RESERVED.contains(&port)
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub node: String,
    pub trust_domain: String,
    pub ports: Ports,
    /// Bound on connecting to an app or a passthrough destination.
    pub connect_timeout: Duration,
}

#[derive(Debug)]
pub struct Proxy {
    pub settings: Settings,
    pub config: watch::Receiver<Arc<ConfigSnapshot>>,
    pub certs: Arc<CertStore>,
    /// Every proxied connection's task (and each pod's HBONE server), so a
    /// shutdown can wait for them to finish.
    pub connections: TaskTracker,
    pub metrics: Metrics,
    /// Inbound connections, for closing those a policy change denies.
    pub live: Arc<LiveConnections>,
}

impl Proxy {
    /// The config new connections use.
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.config.borrow().clone()
    }
}
