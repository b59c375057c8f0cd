//! The CNI side of enrollment.
//!
//! - [`protocol`]: what the `amesh-cni` plugin and the node agent say to each
//!   other over the agent's unix socket.
//! - [`state`]: the node-local state file the plugin decides from when the
//!   agent is unreachable.
//! - [`install`]: the plugin binary and its entry in the node's CNI config
//!   chain, put in place and taken out by the agent.
//! - [`plugin`]: the `amesh-cni` binary's logic (the CNI exec protocol).

pub mod install;
pub mod plugin;
pub mod protocol;
pub mod server;
pub mod state;
