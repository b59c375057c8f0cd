//! amesh node agent library: enrollment, capture backends, ZDS server.
//!
//! - [`netns`]: open a network namespace, run commands or closures in it.
//! - [`capture`]: the [`capture::Capture`] trait, the nftables backend and the
//!   node-side kubelet probe SNAT.
//! - [`enroll`]: the reconcile loop from config to capture and ztunnel.
//! - [`zds_server`]: hands enrolled pods to ztunnel over ZDS.
//! - [`uninstall`]: explicit removal of everything the agent installed.

pub mod capture;
pub mod cni;
pub mod enroll;
pub mod netns;
pub mod node_netns;
pub mod uninstall;
pub mod zds_server;
