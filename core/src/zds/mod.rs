//! ZDS ("ztunnel discovery service"): how the node agent hands enrolled pods
//! to ztunnel. Wire-compatible with Istio's `istio.workload.zds` so either
//! side can be swapped for Istio's.
//!
//! Transport: a unix `SOCK_SEQPACKET` socket, one protobuf message per packet
//! (at most [`MAX_MESSAGE_SIZE`] bytes, as Istio), an `AddWorkload` carrying
//! the pod's network namespace fd as `SCM_RIGHTS` ancillary data.
//!
//! Protocol: ztunnel connects and sends [`proto::ZdsHello`] (`V1`); the agent
//! sends one `AddWorkload` (+ fd) per enrolled pod, then `SnapshotSent`, then
//! `AddWorkload`/`DelWorkload` deltas. ztunnel answers every request with a
//! [`proto::WorkloadResponse`] holding an [`proto::Ack`] (empty `error` =
//! success) before the agent sends the next one.

mod conn;
mod error;
mod listener;
pub mod proto;

pub use conn::ZdsConnection;
pub use error::ZdsError;
pub use listener::ZdsListener;

/// Largest message either side sends or accepts (Istio's ztunnel reads into
/// a buffer of this size).
pub const MAX_MESSAGE_SIZE: usize = 1024;
