//! Admission of connections into a pod: PeerAuthentication (may this port
//! take plaintext?) and L4 AuthorizationPolicy, as the destination ztunnel
//! enforces them.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use amesh_core::Identity;
use amesh_core::config::{ConfigSnapshot, HealthStatus, Protocol, Workload};
use amesh_core::metrics::DenyReason;
use amesh_core::policy::{Connection, Decision, EffectiveMtls, PolicyRef};

use crate::access_log;
use crate::pod::{Pod, PodInfo};
use crate::proxy::Proxy;
use crate::relay::Relayed;

/// Why a connection may not reach the app.
#[derive(Debug)]
pub enum Refusal {
    /// Plaintext on a port whose PeerAuthentication is STRICT.
    StrictMtls(EffectiveMtls),
    /// An AuthorizationPolicy decision.
    Policy(Decision),
}

impl Refusal {
    pub fn metric_reason(&self) -> DenyReason {
        match self {
            Refusal::StrictMtls(_) => DenyReason::StrictMtls,
            Refusal::Policy(_) => DenyReason::Policy,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::StrictMtls(mtls) => write!(f, "plaintext refused: mTLS mode {mtls}"),
            Refusal::Policy(decision) => write!(f, "{decision}"),
        }
    }
}

/// The destination as policies see it: from the config, or (a pod the
/// node agent sent that the config does not list) from what ZDS said, with
/// no labels, so only namespace- and mesh-wide policies select it.
pub fn dst_workload<'a>(
    snapshot: &'a ConfigSnapshot,
    pod: &PodInfo,
    identity: &Identity,
) -> Cow<'a, Workload> {
    match snapshot.workload_by_uid(&pod.uid) {
        Some(w) => Cow::Borrowed(w.as_ref()),
        None => Cow::Owned(Workload {
            uid: pod.uid.clone(),
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            node: String::new(),
            ips: Vec::new(),
            labels: Default::default(),
            protocol: Protocol::Hbone,
            netns: None,
            host_network: false,
            status: HealthStatus::Healthy,
            waypoint: None,
            identity: identity.clone(),
            authorization_policies: Vec::new(),
        }),
    }
}

/// [`admit`] for a connection into `pod`, with a refusal counted and
/// logged (the caller then tells the client). `Some` carries the AUDIT
/// policies that matched.
pub fn admit_or_refuse(
    proxy: &Proxy,
    snapshot: &ConfigSnapshot,
    pod: &Pod,
    log: access_log::Inbound<'_>,
) -> Option<Vec<PolicyRef>> {
    let dst = dst_workload(snapshot, &pod.info, &pod.identity);
    match admit(snapshot, &dst, log.peer.ip(), log.peer_identity, log.target) {
        Ok(audited) => Some(audited),
        Err(refusal) => {
            proxy.metrics.denied(refusal.metric_reason());
            let reason = refusal.to_string();
            access_log::inbound(
                log,
                &Relayed::default(),
                &[],
                access_log::InboundEnd::Refused(&reason),
            );
            None
        }
    }
}

/// Decides one connection into `dst`. `Ok` carries the AUDIT policies that
/// matched, for the access log.
pub fn admit(
    snapshot: &ConfigSnapshot,
    dst: &Workload,
    src_ip: IpAddr,
    src_identity: Option<&Identity>,
    target: SocketAddr,
) -> Result<Vec<PolicyRef>, Refusal> {
    let policies = snapshot.policies();
    if src_identity.is_none() {
        let mtls = policies.effective_mtls(dst, target.port());
        if !mtls.mode.allows_plaintext() {
            return Err(Refusal::StrictMtls(mtls));
        }
    }
    let decision = policies.authorize(
        &Connection {
            src_ip,
            src_identity,
            dst_ip: target.ip(),
            dst_port: target.port(),
        },
        dst,
    );
    if decision.is_allowed() {
        Ok(decision.audited().to_vec())
    } else {
        Err(Refusal::Policy(decision))
    }
}
