//! One structured log line per connection: when it ends, or when it is
//! refused (with the policy or reason). `--log-json` makes them JSON.

use std::net::SocketAddr;
use std::time::Instant;

use amesh_core::Identity;
use amesh_core::policy::PolicyRef;
use tracing::info;

use crate::pod::Pod;
use crate::relay::Relayed;

/// A connection into a pod (HBONE, or plaintext with no peer identity).
#[derive(Debug)]
pub struct Inbound<'a> {
    pub pod: &'a Pod,
    pub peer: SocketAddr,
    pub peer_identity: Option<&'a Identity>,
    /// The client's workload, when the config knows its IP.
    pub peer_workload: Option<String>,
    pub target: SocketAddr,
    /// The service that sends this port to the pod, if any.
    pub service: Option<&'a str>,
    pub start: Instant,
}

fn audited_list(audited: &[PolicyRef]) -> String {
    audited
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// How an inbound connection ended.
#[derive(Clone, Copy, Debug)]
pub enum InboundEnd<'a> {
    /// Relayed until either side closed.
    Complete,
    /// Relayed, then closed because a config change denies it.
    Revoked,
    /// Turned away before reaching the app, with the reason.
    Refused(&'a str),
}

impl InboundEnd<'_> {
    pub fn relayed(revoked: bool) -> Self {
        if revoked {
            InboundEnd::Revoked
        } else {
            InboundEnd::Complete
        }
    }
}

pub fn inbound(conn: Inbound<'_>, relayed: &Relayed, audited: &[PolicyRef], end: InboundEnd<'_>) {
    let (outcome, reason) = match end {
        InboundEnd::Complete => ("complete", ""),
        InboundEnd::Revoked => ("complete", "closed: a config change denies it"),
        InboundEnd::Refused(reason) => ("refused", reason),
    };
    info!(
        direction = "inbound",
        src.addr = %conn.peer,
        src.workload = conn.peer_workload.as_deref().unwrap_or(""),
        src.identity = %conn.peer_identity.map(ToString::to_string).unwrap_or_default(),
        dst.addr = %conn.target,
        dst.workload = %conn.pod.name(),
        dst.identity = %conn.pod.identity,
        dst.service = conn.service.unwrap_or(""),
        protocol = if conn.peer_identity.is_some() { "HBONE" } else { "TCP" },
        // The pod's view: what it sent and received.
        bytes_sent = relayed.received,
        bytes_recv = relayed.sent,
        duration_ms = conn.start.elapsed().as_millis() as u64,
        audited = %audited_list(audited),
        reason,
        error = relayed.error.as_ref().map(|e| e.to_string()).unwrap_or_default(),
        "connection {outcome}"
    );
}

/// A connection out of a pod, tunnelled (with the identity expected of the
/// destination) or passed through.
#[derive(Debug)]
pub struct Outbound<'a> {
    pub pod: &'a Pod,
    pub peer: SocketAddr,
    pub dst: SocketAddr,
    pub dst_identity: Option<&'a Identity>,
    pub dst_workload: Option<String>,
    pub service: Option<&'a str>,
    pub via_waypoint: bool,
    pub start: Instant,
}

pub fn outbound(conn: Outbound<'_>, relayed: &Relayed) {
    let dst_identity = conn.dst_identity.map(ToString::to_string);
    info!(
        direction = "outbound",
        src.addr = %conn.peer,
        src.workload = %conn.pod.name(),
        src.identity = %conn.pod.identity,
        dst.addr = %conn.dst,
        dst.workload = conn.dst_workload.as_deref().unwrap_or(""),
        dst.service = conn.service.unwrap_or(""),
        dst.identity = dst_identity.as_deref().unwrap_or(""),
        protocol = if dst_identity.is_some() { "HBONE" } else { "TCP" },
        via_waypoint = conn.via_waypoint,
        bytes_sent = relayed.sent,
        bytes_recv = relayed.received,
        duration_ms = conn.start.elapsed().as_millis() as u64,
        error = relayed.error.as_ref().map(|e| e.to_string()).unwrap_or_default(),
        "connection complete"
    );
}
