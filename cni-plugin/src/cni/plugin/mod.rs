//! The `amesh-cni` plugin: a chained CNI plugin (spec 0.3.0 – 1.1.0) that
//! never configures networking itself. It asks the node agent, over the
//! agent's unix socket, to enroll (or un-enroll, check, GC) the pod, and
//! passes the previous plugin's result through unchanged.
//!
//! - [`env`]: the `CNI_*` environment and `CNI_ARGS`.
//! - [`netconf`]: the network config on stdin, version checks, the pod IPs
//!   in `prevResult`.
//! - [`agent`]: the socket client (one request line, one reply line).
//! - [`run`]: command dispatch: from stdin and the environment to stdout
//!   and the exit status.
//! - [`commands`]: what each command asks the agent and does with the reply.
//! - [`offline`]: deciding from the node state file when the agent is
//!   unreachable.
//! - [`error`]: the plugin's errors and their CNI error codes.
//!
//! When the agent is unreachable the plugin decides alone from the node
//! state file: ambient pods must not start uncaptured (ADD fails with code
//! 11 so the runtime retries), others must not be blocked.

pub mod agent;
pub mod commands;
pub mod env;
pub mod error;
pub mod netconf;
pub mod offline;
pub mod run;

pub use env::CniEnv;
pub use error::PluginError;
pub use run::{Outcome, run};
