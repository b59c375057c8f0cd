//! The container-runtime side of CNI, as libcni (containerd, CRI-O, cnitool)
//! does it: pick the node's network config, run its plugin chain through the
//! CNI exec protocol, cache the result, and hand it back on CHECK and DEL.
//!
//! Tests use it to attach pods "the way a node does", with the real
//! reference plugins (Debian's `containernetworking-plugins`) and, once the
//! node agent has appended it to the conflist, our own chained `amesh-cni`.
//! Nothing here knows any particular plugin: it is driven by the conflist.
//!
//! Every plugin runs inside the "node" netns (its host side), given the
//! pod's netns by path in `CNI_NETNS`, with a bounded run time.

mod bridge;
mod cache;
mod config;
mod error;
mod exec;
mod result;
mod runtime;
mod testbed;

pub use bridge::{BridgeNetwork, write_conflist};
pub use config::{NetworkConfigList, active_config, conf_files};
pub use error::CniError;
pub use exec::{PLUGIN_TIMEOUT, PluginOutput, exec_plugin, find_plugin};
pub use result::{result_addresses, result_interfaces};
pub use runtime::{CniRuntime, DEFAULT_BIN_DIR, PodAttachment};
pub use testbed::CniTestbed;
